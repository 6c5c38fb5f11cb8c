"""Token counts that follow from the config alone: visual tokens per image and vLLM's context length.

Standard library only (config resolvers use it while Hydra composes, before anything heavy is imported).
"""

from __future__ import annotations

import math

PATCH, MERGE = 14, 2  # Qwen2-VL / Qwen2.5-VL vision patch and spatial merge


def image_tokens(image_size: int, min_pixels: int, max_pixels: int) -> int:
    """Visual tokens of one image_size x image_size image after Qwen's smart-resize (patch 14, merge 2).

    >>> image_tokens(384, 3136, 401408), image_tokens(56, 3136, 3136)
    (196, 4)
    """
    factor = PATCH * MERGE
    h = w = max(factor, round(image_size / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(image_size * image_size / max_pixels)
        h = w = max(factor, math.floor(image_size / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (image_size * image_size))
        h = w = math.ceil(image_size * beta / factor) * factor
    return (h // factor) * (w // factor)


def vllm_max_model_length(image_size: int, max_pixels: int, text_tokens: int, completion: int) -> int:
    """Image tokens at `image_size` + a text budget for the longest prompt + the completion length.

    >>> vllm_max_model_length(384, 401408, 1024, 1024)
    2244
    """
    return image_tokens(image_size, 0, max_pixels) + text_tokens + completion
