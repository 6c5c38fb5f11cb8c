"""A fake `vllm` module for tests: `LLM`, `SamplingParams` and output objects shaped like vLLM 0.31-0.33's.

It never runs a model. `LLM.generate` takes the call TRL's colocate path and our eval backend make
(`generate(prompts, sampling_params=..., use_tqdm=False)`), records every prompt dict, and checks it the way vLLM's
multimodal prompt update treats it: vLLM replaces ONE `<|image_pad|>` per image with that image's N feature tokens
(N from the model's own processor at the engine's pixel bounds). A prompt carrying N pads per image therefore
ends with 2N-1 pads in vLLM (trl #6294, trl_notes T4): no error, silently wrong features. Each `PromptCheck`
records the pads received, the pads after vLLM's expansion and whether that matches the image features.

`FakeServerClient` plays `trl.generation.vllm_client.VLLMClient` for server mode (`image_features`, `generate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace


class SamplingParams:
    """Stores its keyword arguments as attributes (vLLM's class validates them; this one only keeps them)."""

    def __init__(self, **kwargs):
        self.kwargs = dict(kwargs)
        self.n = kwargs.get("n", 1)
        self.max_tokens = kwargs.get("max_tokens", 16)
        self.temperature = kwargs.get("temperature", 1.0)
        self.logprobs = kwargs.get("logprobs")


@dataclass
class Logprob:
    logprob: float
    rank: int | None = 1
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: list[dict[int, Logprob]] | None = None
    finish_reason: str | None = "stop"


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = True


@dataclass
class PromptCheck:
    """What vLLM makes of one prompt: pads received, images, pads after its own expansion, features expected."""

    pads_in: int
    images: int
    pads_after: int
    features: int
    expanded_ids: list[int] = field(repr=False, default_factory=list)

    @property
    def ok(self) -> bool:
        return self.pads_in == self.images and self.pads_after == self.features


def _responder(i: int, prompt: dict) -> str:
    return "red"


class LLM:
    """Fake engine. Loads the processor from `model` like vLLM does, honouring `mm_processor_kwargs`."""

    def __init__(self, model: str, responder=_responder, strict: bool = False, scorer=None, **kwargs):
        from transformers import AutoProcessor

        self.model, self.kwargs, self.responder, self.strict = model, kwargs, responder, strict
        self.scorer = scorer  # (ids vLLM sees, image, completion ids) -> logprobs; None: -1.0 for every token
        mm = kwargs.get("mm_processor_kwargs") or {}
        size = {"shortest_edge": mm["min_pixels"], "longest_edge": mm["max_pixels"]} if mm else None
        self.processor = AutoProcessor.from_pretrained(model, **({"size": size} if size else {}))
        tok = self.processor.tokenizer
        self.pad_id = self.processor.image_token_id
        self.eos_id = tok.convert_tokens_to_ids("<|im_end|>")
        self.calls: list[dict] = []  # {"prompts": [...], "sampling_params": ...}
        self.checks: list[PromptCheck] = []
        self.loaded: list[str] = []  # parameter names pushed by TRL's sync_weights
        self.prefix_cache_resets = 0
        model_obj = SimpleNamespace(load_weights=lambda weights: self.loaded.extend(n for n, _ in weights))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(
            driver_worker=SimpleNamespace(model_runner=SimpleNamespace(model=model_obj))))

    # -- what vLLM's processor does with one prompt -------------------------------------------------------------
    def features_per_image(self, image) -> int:
        grid = self.processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0]
        merge = self.processor.image_processor.merge_size
        return int(grid.prod()) // (merge * merge)

    def check(self, prompt: dict) -> PromptCheck:
        if "prompt_token_ids" in prompt:
            ids = list(prompt["prompt_token_ids"])
        else:
            ids = self.processor.tokenizer(prompt["prompt"])["input_ids"]
        images = (prompt.get("multi_modal_data") or {}).get("image")
        images = [] if images is None else images if isinstance(images, list) else [images]
        counts = [self.features_per_image(im) for im in images]
        out, cursor = list(ids), 0
        for n in counts:  # one match of the single-token target per image, replaced by its n features
            try:
                at = out.index(self.pad_id, cursor)
            except ValueError:
                break
            out[at:at + 1] = [self.pad_id] * n
            cursor = at + n
        chk = PromptCheck(ids.count(self.pad_id), len(images), out.count(self.pad_id), sum(counts), out)
        if self.strict and not chk.ok:
            raise ValueError(f"vLLM would see {chk.pads_after} image tokens for {chk.features} image features")
        return chk

    # -- the API TRL and clsrl_exp call ---------------------------------------------------------------------------
    def generate(self, prompts, sampling_params=None, use_tqdm=True, **kwargs):
        prompts = prompts if isinstance(prompts, list) else [prompts]
        sp = sampling_params or SamplingParams()
        self.calls.append({"prompts": prompts, "sampling_params": sp, "kwargs": kwargs})
        tok = self.processor.tokenizer
        outs = []
        for p in prompts:
            chk = self.check(p)
            self.checks.append(chk)
            completions = []
            for j in range(getattr(sp, "n", 1)):
                text = self.responder(len(self.checks) - 1, p)
                ids = (tok(text, add_special_tokens=False)["input_ids"] + [self.eos_id])[: sp.max_tokens]
                lps = self._logprobs(p, chk, ids) if getattr(sp, "logprobs", None) is not None else None
                completions.append(CompletionOutput(j, text, ids, logprobs=lps))
            outs.append(RequestOutput(str(len(self.checks)), p.get("prompt"), chk.expanded_ids, completions))
        return outs

    def _logprobs(self, prompt: dict, chk: PromptCheck, ids: list[int]) -> list[dict[int, Logprob]]:
        values = [-1.0] * len(ids)
        if self.scorer is not None:
            values = self.scorer(chk.expanded_ids, prompt["multi_modal_data"]["image"], ids)
        return [{t: Logprob(v)} for t, v in zip(ids, values, strict=True)]

    def get_default_sampling_params(self) -> SamplingParams:
        return SamplingParams(temperature=0.01, top_k=1, top_p=0.001)

    def reset_prefix_cache(self) -> bool:
        self.prefix_cache_resets += 1
        return True


class FakeServerClient:
    """Server-mode stand-in for `VLLMClient`: image features per prompt, then generation from token ids."""

    def __init__(self, llm: LLM):
        self.llm = llm
        self.features: list[dict] = []
        self.prompts: list[list[int]] = []

    def image_features(self, images):
        out = []
        for imgs in images:  # where the server saw them: irrelevant, TRL recomputes offsets (`_place_features`)
            ns = [self.llm.features_per_image(im) for im in imgs]
            out.append({"mm_placeholders": {"image": [{"offset": 0, "length": n} for n in ns]}})
        return out

    def generate(self, prompts, features=None, n=1, max_tokens=16, logprobs=0, **kwargs):
        self.prompts.extend(prompts)
        self.features.extend(features or [])
        ids = self.llm.processor.tokenizer("red", add_special_tokens=False)["input_ids"] + [self.llm.eos_id]
        completions = [ids[:max_tokens] for _ in prompts for _ in range(n)]
        return {"prompt_ids": prompts, "completion_ids": completions,
                "logprobs": [[[-1.0] for _ in c] for c in completions],
                "logprob_token_ids": [[[t] for t in c] for c in completions]}

    def reset_prefix_cache(self):
        return True
