"""vLLM evaluation backend (`eval.backend=vllm`): offline `LLM.generate` with the same interface as `HFGenerator`.

Each prompt is the chat-template string from `clsrl_exp.evaluate.chat_texts`, with ONE unexpanded
`<|image_pad|>` placeholder, plus its PIL image; vLLM runs the Qwen2-VL processor itself and expands the
placeholder (trl_notes §5.1: passing processor-expanded ids would expand them twice, T4). The pixel bounds are the
model config's (`mm_processor_kwargs`), so the image-token count equals the trainer's and the HF evaluator's.
Decoding is greedy (`temperature=0`), as the official eval scripts.

Unreadable images are skipped and reported exactly as in the HF path. `llm=` injects an engine (tests use a fake:
a real vLLM engine has never run in this project's CI or development machines).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from clsrl_exp.config import RunConfig
from clsrl_exp.errors import ConfigError

log = logging.getLogger(__name__)

GPU_MEMORY_UTILIZATION = 0.85  # evaluation owns the card (the trainer has been freed by then)


def eval_max_model_length(run: RunConfig) -> int:
    """vLLM `max_model_len` for evaluation: the rollout's limit, widened to hold the eval completion budget.

    Derived like `rollout.max_model_length` (image tokens + `rollout.max_prompt_text_tokens`) but with
    `eval.max_new_tokens` as the completion, so `rollout=hf` (no rollout limit) gets a bound too.
    """
    from clsrl_exp.train.rollout import vllm_max_model_length

    m = run.model
    derived = vllm_max_model_length(m.image_size, m.max_pixels, run.rollout.max_prompt_text_tokens,
                                    run.eval.max_new_tokens)
    return max(run.rollout.max_model_length or 0, derived)


def engine_kwargs(model_path: str, run: RunConfig) -> dict:
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


class VLLMGenerator:
    """Greedy batched generation with vLLM; `batches` yields `(examples, prompt dicts, bad)` like `HFGenerator`."""

    def __init__(self, model_path: str | None, run: RunConfig, processor, llm=None, num_workers: int = 8):
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
        from clsrl_exp.models import image_tokens

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
