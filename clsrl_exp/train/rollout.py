"""Rollout backends for GRPO: HF generate, or vLLM (colocate / server) mapped onto TRL's arguments.

The colocate fix (trl_notes.md T4, trl #6294): TRL 1.16 hands vLLM the processor-expanded prompt ids (N
`<|image_pad|>` per image) plus the raw image, and vLLM expands the first pad again (2N-1 pads): rollouts are
silently corrupted. `ColocateImageFixMixin` collapses each run of image pads to one token for the vLLM call only;
the trainer keeps its own expanded ids for the loss (`_generate` discards the prompt ids vLLM returns).
Server mode needs no fix: its `_place_features` path expects expanded ids.

Length budget: TRL never truncates prompts (T2), so vLLM's `max_model_len` must hold the longest real prompt (image
tokens included) plus `max_completion_length`. `rollout.max_model_length` is derived from `model.image_size`,
`model.max_pixels`, `rollout.max_prompt_text_tokens` and `train.max_completion_length`; `check_prompt_budget`
measures the real prompts against it at start.

Nothing here has run against a real vLLM engine (T11); tests/test_vllm.py drives TRL's own code with a fake one.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence

from clsrl_exp.config import RolloutConfig, RunConfig
from clsrl_exp.errors import ConfigError

log = logging.getLogger(__name__)


def collapse_image_runs(ids: Sequence[int], image_token_id: int) -> list[int]:
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
    """Mix into a GRPOTrainer: vLLM colocate receives one image placeholder per image (and expands it itself).

    Only the ids handed to `_generate_single_turn` for vLLM colocate change; HF generate, server mode and the
    trainer's own prompt ids (used for the loss, the reference model and the importance-sampling logps) don't.
    """

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if getattr(self, "use_vllm", False) and getattr(self, "vllm_mode", None) == "colocate" and images is not None:
            pad = self.processing_class.image_token_id
            prompt_ids = [collapse_image_runs(list(ids), pad) for ids in prompt_ids]
        return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_rollout(run: RunConfig, cuda: bool, world_size: int) -> str:
    """The backend this run uses: 'hf', 'vllm-colocate' or 'vllm-server'; one error names every missing piece."""
    name = run.rollout.name
    if name == "auto":
        if cuda and world_size == 1 and vllm_available() and run.train.kind == "grpo":
            log.info("rollout=auto: vllm installed and one CUDA GPU -> vllm-colocate")
            return "vllm-colocate"
        log.info("rollout=auto -> hf (%s)", "no CUDA GPU" if not cuda else
                 "vllm not installed" if not vllm_available() else f"{world_size} processes")
        return "hf"
    if name.startswith("vllm"):
        missing = [m for m, ok in (("no CUDA GPU is visible", cuda), ("vllm is not installed", vllm_available()))
                   if not ok]
        if missing:
            raise ConfigError(
                f"rollout={name} needs a CUDA GPU and vLLM, but {' and '.join(missing)}; use rollout=hf on this "
                "machine, or on a GPU machine `pip install -e .[vllm]` (vllm 0.31 + torch 2.13; README "
                "'Troubleshooting: vLLM')")
    return name


def grpo_vllm_kwargs(rollout: RolloutConfig, backend: str) -> dict:
    """TRL GRPOConfig arguments for the chosen backend ('hf', 'vllm-colocate' or 'vllm-server')."""
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
    else:  # the server's memory, length and parallelism are its own command-line flags
        kw.update(vllm_server_base_url=rollout.server_base_url)
    return kw


def vllm_max_model_length(image_size: int, max_pixels: int, text_tokens: int, completion: int) -> int:
    """Image tokens at `image_size` + a text budget for the longest prompt + the completion length.

    >>> vllm_max_model_length(384, 401408, 1024, 1024)
    2244
    """
    from clsrl_exp.models import image_tokens

    return image_tokens(image_size, 0, max_pixels) + text_tokens + completion


def check_pixel_bounds(model_path: str, run: RunConfig) -> None:
    """vLLM colocate builds its processor from the files at `model_path` (TRL passes no `mm_processor_kwargs`), the
    trainer from `model.min_pixels`/`max_pixels`: both must give the same image-token count at `model.image_size`,
    or vLLM samples from another resolution than the trainer scores (trl #6401; seen only as IS-masked sequences).
    """
    from transformers import AutoImageProcessor

    from clsrl_exp.models import image_tokens

    try:
        saved = AutoImageProcessor.from_pretrained(model_path)
    except Exception as e:  # noqa: BLE001 - no local files: vLLM will fail on its own, with its own message
        log.warning("could not read the image processor at %s to compare pixel bounds: %s", model_path, e)
        return
    size = getattr(saved, "size", None) or {}
    edge = lambda k: size.get(k) if isinstance(size, dict) else getattr(size, k, None)
    lo = edge("shortest_edge") or getattr(saved, "min_pixels", None)
    hi = edge("longest_edge") or getattr(saved, "max_pixels", None)
    if lo is None or hi is None:
        return
    m = run.model
    ours, theirs = image_tokens(m.image_size, m.min_pixels, m.max_pixels), image_tokens(m.image_size, lo, hi)
    if ours != theirs:
        raise ConfigError(
            f"vLLM reads the processor saved at {model_path} (min_pixels {lo}, max_pixels {hi}: {theirs} image tokens "
            f"at model.image_size {m.image_size}) but the trainer uses model.min_pixels {m.min_pixels} / "
            f"model.max_pixels {m.max_pixels} ({ours} tokens); make them agree (e.g. model.max_pixels >= "
            f"{m.image_size * m.image_size}) or use rollout=hf")


# ----------------------------------------------------------------------------------------------------- budget
def _as_text(processor, prompt) -> str:
    """A chat-template string with one image placeholder: strings pass through, conversational prompts (GRPO rows)
    are rendered as TRL renders them (image block inserted before the first user text)."""
    if isinstance(prompt, str):
        return prompt
    from trl.data_utils import prepare_multimodal_messages

    return processor.apply_chat_template(prepare_multimodal_messages(prompt, images=[None]), tokenize=False,
                                         add_generation_prompt=True)


def prompt_token_count(processor, text: str, image) -> tuple[int, int]:
    """(total, image) tokens of one prompt after the processor expands its image placeholder."""
    enc = processor(text=[text], images=[image], return_tensors="pt")
    pad = processor.image_token_id
    ids = enc["input_ids"][0].tolist()
    return len(ids), sum(t == pad for t in ids)


def check_prompt_budget(processor, texts: Sequence, images: Sequence, run: RunConfig) -> int:
    """Tokenize the longest real prompt (image tokens included) and check it fits vLLM's `max_model_len`.

    `texts` are chat-template strings (one image placeholder each) or conversational prompts; `images` the matching
    PIL images or image paths (loaded at `model.image_size`). Returns the longest prompt's token count; raises a
    `ConfigError` naming `rollout.max_prompt_text_tokens` when prompt + `train.max_completion_length` does not fit
    `rollout.max_model_length`. No limit set (None) means vLLM uses the model's own context: nothing to check.
    """
    if not texts:
        return 0
    if len(texts) != len(images):
        raise ValueError(f"{len(texts)} prompts but {len(images)} images")
    strings = [_as_text(processor, t) for t in texts]
    lengths = [len(ids) for ids in processor.tokenizer(strings)["input_ids"]]
    i = max(range(len(strings)), key=lengths.__getitem__)
    image = images[i]
    if isinstance(image, str) or hasattr(image, "__fspath__"):
        from clsrl_exp.data import load_image

        image = load_image(image, run.model.image_size)
    total, n_image = prompt_token_count(processor, strings[i], image)
    limit, completion = run.rollout.max_model_length, run.train.max_completion_length
    log.info("longest prompt: %d tokens (%d image + %d text); + %d completion; vLLM max_model_len %s", total,
             n_image, total - n_image, completion, limit)
    if limit is not None and total + completion > limit:
        budget = run.rollout.max_prompt_text_tokens
        raise ConfigError(
            f"the longest prompt has {total} tokens ({n_image} image + {total - n_image} text) + "
            f"train.max_completion_length {completion} = {total + completion}, more than rollout.max_model_length "
            f"{limit}: raise rollout.max_prompt_text_tokens (now {budget}) to at least "
            f"{budget + total + completion - limit}, or set rollout.max_model_length={total + completion}")
    return total
