"""Rollout backends for GRPO: HF generate, or vLLM (colocate / server) mapped onto TRL's arguments.

The colocate fix (trl_notes.md T4, trl #6294): TRL 1.16 hands vLLM the processor-expanded prompt ids (N
`<|image_pad|>` per image) plus the raw image, and vLLM expands the first pad again (2N-1 pads): rollouts are
silently corrupted. `ColocateImageFixMixin` collapses each run of image pads to one token for the vLLM call only;
the trainer keeps its own expanded ids for the loss (`_generate` discards the prompt ids vLLM returns).
Server mode needs no fix: its `_place_features` path expects expanded ids.
"""

from __future__ import annotations

import importlib.util
import logging

from clsrl_exp.config import RolloutConfig, RunConfig
from clsrl_exp.errors import ConfigError

log = logging.getLogger(__name__)


def collapse_image_runs(ids: list[int], image_token_id: int) -> list[int]:
    """Replace every run of consecutive image tokens by a single one; other ids are unchanged.

    >>> collapse_image_runs([1, 9, 9, 9, 2, 9, 9, 3], 9)
    [1, 9, 2, 9, 3]
    """
    out: list[int] = []
    for t in ids:
        if t == image_token_id and out and out[-1] == image_token_id:
            continue
        out.append(t)
    return out


class ColocateImageFixMixin:
    """Mix into a GRPOTrainer: vLLM colocate receives one image placeholder per image."""

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if getattr(self, "use_vllm", False) and getattr(self, "vllm_mode", None) == "colocate" and images is not None:
            pad = self.processing_class.image_token_id
            prompt_ids = [collapse_image_runs(list(ids), pad) for ids in prompt_ids]
        return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_rollout(run: RunConfig, cuda: bool, world_size: int) -> str:
    """The backend this run uses: 'hf', 'vllm-colocate' or 'vllm-server'; errors name the missing piece."""
    name = run.rollout.name
    if name == "auto":
        if cuda and world_size == 1 and vllm_available() and run.train.kind == "grpo":
            log.info("rollout=auto: vllm installed and one CUDA GPU -> vllm-colocate")
            return "vllm-colocate"
        return "hf"
    if name.startswith("vllm"):
        if not cuda:
            raise ConfigError(f"rollout={name} needs a CUDA GPU and none is visible; use rollout=hf on this machine")
        if not vllm_available():
            raise ConfigError(
                f"rollout={name} needs vLLM, which is not installed; `pip install -e .[vllm]` on the GPU machine "
                "(vllm 0.31 with torch 2.13, README 'GPU install') or use rollout=hf")
    return name


def grpo_vllm_kwargs(rollout: RolloutConfig, backend: str) -> dict:
    """TRL GRPOConfig arguments for the chosen backend."""
    if not backend.startswith("vllm"):
        return {"use_vllm": False}
    kw = {
        "use_vllm": True,
        "vllm_mode": "colocate" if backend == "vllm-colocate" else "server",
        "vllm_importance_sampling_correction": rollout.importance_sampling_correction,
        "vllm_importance_sampling_mode": rollout.importance_sampling_mode,
        "vllm_importance_sampling_clip_max": rollout.importance_sampling_clip_max,
    }
    if backend == "vllm-colocate":
        kw.update(vllm_gpu_memory_utilization=rollout.gpu_memory_utilization,
                  vllm_max_model_length=rollout.max_model_length,
                  vllm_enable_sleep_mode=rollout.enable_sleep_mode)
    else:
        kw.update(vllm_server_base_url=rollout.server_base_url)
    return kw


def vllm_max_model_length(image_size: int, max_pixels: int, text_tokens: int, completion: int) -> int:
    """Image tokens at `image_size` + a text budget for the longest prompt + the completion length.

    >>> vllm_max_model_length(384, 401408, 1024, 1024)
    2244
    """
    from clsrl_exp.models import image_tokens

    return image_tokens(image_size, 0, max_pixels) + text_tokens + completion
