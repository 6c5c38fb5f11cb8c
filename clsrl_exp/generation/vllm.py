"""The vLLM backends (GPU only, `pip install -e .[vllm]`): offline evaluation and GRPO rollouts (colocate / server).

**Evaluation** (`eval.backend=vllm`): each prompt is the chat-template string (`clsrl_exp.prompts.render_chat`) with
ONE unexpanded `<|image_pad|>` plus its PIL image; vLLM runs the Qwen2-VL processor itself and expands the
placeholder (passing processor-expanded ids would expand them twice, T4). The pixel bounds are the model config's
(`mm_processor_kwargs`), so the image-token count equals the trainer's and the HF evaluator's. Greedy decoding
(`temperature=0`), as the official eval scripts.

**Rollouts**: the colocate fix (trl_notes T4, trl #6294): TRL 1.16 hands vLLM the processor-expanded prompt ids (N
`<|image_pad|>` per image) plus the raw image, and vLLM expands the first pad again (2N-1 pads): rollouts are
silently corrupted. `ColocateImageFixMixin` collapses each run of image pads to one token for the vLLM call only;
the trainer keeps its own expanded ids for the loss. Server mode needs no fix (`_place_features` expects expanded
ids).

Length budget: TRL never truncates prompts (T2), so vLLM's `max_model_len` must hold the longest real prompt (image
tokens included) plus the completion. `rollout.max_model_length` is derived (`clsrl_exp.lengths`);
`check_prompt_budget` measures the real prompts against it at start.

Nothing here has run against a real vLLM engine (T11); tests/test_vllm.py drives TRL's own code with a fake one.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from clsrl_exp.errors import ConfigError
from clsrl_exp.generation import Generator, Rollout, register_backend, register_rollout
from clsrl_exp.lengths import image_tokens, vllm_max_model_length

log = logging.getLogger(__name__)

GPU_MEMORY_UTILIZATION = 0.85  # evaluation owns the card (the trainer has been freed by then)
INSTALL = "`pip install -e .[vllm]` (vllm 0.31 + torch 2.13; README 'Troubleshooting: vLLM')"


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def missing_pieces(device) -> str | None:
    """'no CUDA GPU is visible and/or vllm is not installed', or None when vLLM can run here."""
    missing = [m for m, ok in (("no CUDA GPU is visible", device.cuda), ("vllm is not installed", vllm_available()))
               if not ok]
    return " and ".join(missing) or None


# ----------------------------------------------------------------------------------------------------- evaluation
def eval_max_model_length(run) -> int:
    """vLLM `max_model_len` for evaluation: the rollout's limit, widened to hold the eval completion budget.

    Derived like `rollout.max_model_length` (image tokens + `rollout.max_prompt_text_tokens`) but with
    `eval.max_new_tokens` as the completion, so `rollout=hf` (no rollout limit) gets a bound too.
    """
    m = run.model
    derived = vllm_max_model_length(m.image_size, m.max_pixels, run.rollout.max_prompt_text_tokens,
                                    run.eval.max_new_tokens)
    return max(run.rollout.max_model_length or 0, derived)


def engine_kwargs(model_path: str, run) -> dict:
    """Arguments of `vllm.LLM` for evaluation (one image per prompt, the model config's pixel bounds)."""
    return dict(model=model_path, max_model_len=eval_max_model_length(run), limit_mm_per_prompt={"image": 1},
                mm_processor_kwargs={"min_pixels": run.model.min_pixels, "max_pixels": run.model.max_pixels},
                dtype=run.model.dtype, gpu_memory_utilization=GPU_MEMORY_UTILIZATION, seed=0)


def _load(ex, image_size):
    from clsrl_exp.data import load_image

    try:
        return load_image(ex.image_path, image_size)
    except Exception as e:  # unreadable file: skipped and reported, not scored (as HFGenerator)
        return e


@register_backend("vllm")
class VLLMGenerator(Generator):
    """Greedy batched generation with vLLM; `batches` yields `(examples, prompt dicts, bad)` like `HFGenerator`."""

    needs_model = False  # vLLM loads the weights from model_path; the trainer's copy is released first

    @classmethod
    def unavailable(cls, device) -> str | None:
        why = missing_pieces(device)
        return f"needs a CUDA GPU and {INSTALL}, but {why}; use eval.backend=hf" if why else None

    def __init__(self, run, *, model=None, processor, model_path: str | None, device=None, llm=None,
                 num_workers: int = 8):
        if llm is None and not model_path:
            raise ConfigError("eval.backend=vllm needs a model path (vLLM loads the weights from disk)")
        self.run, self.processor = run, processor
        self.max_new_tokens = run.eval.max_new_tokens
        self.max_model_len = eval_max_model_length(run)
        self.placeholder = processor.image_token  # "<|image_pad|>"
        self.num_workers = num_workers
        if llm is None:
            import vllm  # lazy: only GPU machines with `pip install -e .[vllm]` have it

            kwargs = engine_kwargs(model_path, run)
            log.info("vLLM eval engine: %s", kwargs)
            llm = vllm.LLM(**kwargs)
        self.llm = llm
        self.sampling_params = self._sampling_params()

    def _sampling_params(self):
        from vllm import SamplingParams

        if self.run.eval.greedy:
            return SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens)
        params = self.llm.get_default_sampling_params()  # the checkpoint's generation_config, as HF generate
        params.max_tokens = self.max_new_tokens
        return params

    def _check(self, texts: list[str]) -> None:
        """One placeholder per prompt, and prompt + max_new_tokens within max_model_len (else vLLM rejects it)."""
        m = self.run.model
        n_image = image_tokens(m.image_size, m.min_pixels, m.max_pixels)
        for text, ids in zip(texts, self.processor.tokenizer(texts)["input_ids"], strict=True):
            if text.count(self.placeholder) != 1:
                raise ValueError(f"a vLLM prompt must hold exactly one {self.placeholder} (vLLM expands it), got "
                                 f"{text.count(self.placeholder)}: {text[:200]!r}")
            total = len(ids) - 1 + n_image + self.max_new_tokens
            if total > self.max_model_len:
                raise ConfigError(
                    f"an eval prompt needs {len(ids) - 1 + n_image} tokens + eval.max_new_tokens "
                    f"{self.max_new_tokens} = {total} > vLLM max_model_len {self.max_model_len}: raise "
                    "rollout.max_prompt_text_tokens or lower eval.max_new_tokens")

    def _prompts(self, chunk, images):
        ok = [(ex, t, im) for (ex, t), im in zip(chunk, images, strict=True) if not isinstance(im, Exception)]
        bad = [(ex, im) for (ex, _), im in zip(chunk, images, strict=True) if isinstance(im, Exception)]
        if ok:
            self._check([t for _, t, _ in ok])
        inputs = [{"prompt": t, "multi_modal_data": {"image": im}} for _, t, im in ok]
        return [ex for ex, _, _ in ok], inputs, bad

    def batches(self, items, image_size: int, batch_size: int):
        """Yield `(examples, vLLM prompt dicts, [(example, error)])`; the next batch's images decode meanwhile."""
        chunks = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
        if not chunks:
            return
        with ThreadPoolExecutor(max_workers=max(1, self.num_workers)) as pool:
            load = lambda chunk: [pool.submit(_load, ex, image_size) for ex, _ in chunk]
            pending = load(chunks[0])
            for i, chunk in enumerate(chunks):
                images = [f.result() for f in pending]
                pending = load(chunks[i + 1]) if i + 1 < len(chunks) else []
                yield self._prompts(chunk, images)

    def generate(self, inputs) -> tuple[list[str], list[int]]:
        """(decoded texts, generated token counts incl. EOS), in input order."""
        outs = self.llm.generate(inputs, sampling_params=self.sampling_params, use_tqdm=False)
        return [o.outputs[0].text for o in outs], [len(o.outputs[0].token_ids) for o in outs]


# ----------------------------------------------------------------------------------------------------- rollouts
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


class _VLLMRollout(Rollout):
    mode = "?"

    @classmethod
    def unavailable(cls, device) -> str | None:
        why = missing_pieces(device)
        return (f"needs a CUDA GPU and vLLM, but {why}; use rollout=hf on this machine, or on a GPU machine "
                f"{INSTALL}") if why else None

    @classmethod
    def grpo_kwargs(cls, rollout) -> dict:
        return {"use_vllm": True, "vllm_mode": cls.mode,
                "vllm_importance_sampling_correction": rollout.importance_sampling_correction,
                "vllm_importance_sampling_mode": rollout.importance_sampling_mode,
                "vllm_importance_sampling_clip_max": rollout.importance_sampling_clip_max}

    @classmethod
    def check_inputs(cls, run, model_path, processor, texts, images) -> None:
        check_pixel_bounds(model_path, run)
        check_prompt_budget(processor, texts, images, run)


@register_rollout("vllm-colocate")
class VLLMColocate(_VLLMRollout):
    """vLLM inside the trainer on the same GPU (TRL vllm_mode=colocate), with the image-placeholder fix."""

    mode = "colocate"

    @classmethod
    def grpo_kwargs(cls, rollout) -> dict:
        return {**super().grpo_kwargs(rollout), "vllm_gpu_memory_utilization": rollout.gpu_memory_utilization,
                "vllm_max_model_length": rollout.max_model_length,
                "vllm_enable_sleep_mode": rollout.enable_sleep_mode}

    @classmethod
    def trainer_mixins(cls) -> tuple[type, ...]:
        return (ColocateImageFixMixin,)


@register_rollout("vllm-server")
class VLLMServer(_VLLMRollout):
    """A separate vLLM server (TRL vllm_mode=server); its memory, length and parallelism are its own flags."""

    mode = "server"

    @classmethod
    def grpo_kwargs(cls, rollout) -> dict:
        return {**super().grpo_kwargs(rollout), "vllm_server_base_url": rollout.server_base_url}


# ----------------------------------------------------------------------------------------------------- checks
def check_pixel_bounds(model_path: str, run) -> None:
    """vLLM colocate builds its processor from the files at `model_path` (TRL passes no `mm_processor_kwargs`), the
    trainer from `model.min_pixels`/`max_pixels`: both must give the same image-token count at `model.image_size`,
    or vLLM samples from another resolution than the trainer scores (trl #6401; seen only as IS-masked sequences).
    """
    from transformers import AutoImageProcessor

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


def check_prompt_budget(processor, texts: Sequence, images: Sequence, run) -> int:
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
