"""vLLM paths (rollout=vllm-colocate / vllm-server, eval.backend=vllm) tested with a FAKE engine.

Plainly: these tests use a fake engine (tests/fake_vllm.py). A real vLLM engine was never run in this project's CI
or development machines (no vLLM wheel can be installed there, trl_notes T11). What is real here: TRL 1.16's own
GRPOTrainer (`_tokenize_prompts`, `_generate_single_turn`, `_generate`, `_generate_and_score_completions`) and its
own `VLLMGeneration.generate` / `sync_weights` / `_place_features`, built on the tiny Qwen2-VL with its real
processor and real synthetic images; only `vllm.LLM`, `SamplingParams` and the server client are stand-ins that
record what they are given and emulate vLLM's placeholder expansion (one `<|image_pad|>` per image -> N).

What a first GPU run with `rollout=vllm-colocate` must check (trl_notes §1.9), in the first logged steps:
- `sampling/sampling_logp_difference/mean` small (< ~0.05 in bf16; large values mean vLLM saw other prompts than
  the trainer scores: the T4 double expansion this fix removes). If it is not small, rerun once with
  `train.top_k=0` to tell a top-k renormalisation offset in vLLM's processed logprobs from a prompt mismatch;
- `sampling/importance_sampling_ratio/min` not ~0 (~0 = sequences masked by the IS correction);
- `frac_reward_zero_std` not stuck at 1 (every group identical: no learning signal);
- no "Image features and image tokens do not match" error: unlike HF generate, TRL does not suppress
  `<|image_pad|>` in vLLM sampling, so a sampled image token would break the trainer's forward.
"""

from __future__ import annotations

import re
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import fields, replace
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import fake_vllm
import pytest
from helpers import TINY, cli, run_config

from clsrl_exp import generation
from clsrl_exp.errors import ConfigError
from clsrl_exp.evaluate import EvalTask, PredictionLog, evaluate_set
from clsrl_exp.generation.hf import HFGenerator, HFRollout
from clsrl_exp.generation.vllm import (
    ColocateImageFixMixin,
    VLLMColocate,
    VLLMGenerator,
    check_pixel_bounds,
    check_prompt_budget,
    collapse_image_runs,
    engine_kwargs,
)
from clsrl_exp.prompts import eval_prompt
from clsrl_exp.runtime import Device

G = 4  # num_generations of conf/train/grpo.yaml
NOTHINK = [*TINY, "method=nothink"]  # rollout=hf
BASE = [o for o in NOTHINK if not o.startswith("rollout=")]
QWEN = ["model=qwen2vl-2b", "dataset=synthetic-colors", "method=nothink", "logger=none"]
WORDS = ["red", "green", "blue", "yellow"]
CLI_CASES = {
    "rollout=vllm-colocate": ["rollout=vllm-colocate"],
    "rollout=vllm-server": ["rollout=vllm-server"],
    "eval.backend=vllm": ["rollout=hf", "eval.backend=vllm"],
}


# ----------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def cli_runs(tmp_path_factory):
    """The CLI runs of the error tests, started when the module starts (each is a fresh interpreter importing
    torch): they run while the in-process tests do. Futures of `subprocess.CompletedProcess` by case."""
    base = ["model=tiny-qwen2vl", "dataset=synthetic-colors", "method=nothink", "logger=none"]
    root = tmp_path_factory.mktemp("cli")
    pool = ThreadPoolExecutor(len(CLI_CASES))
    yield {k: pool.submit(cli, [*base, *v], root / k.replace("=", "_"), timeout=300) for k, v in CLI_CASES.items()}
    pool.shutdown(wait=True)


@cache
def _composed(overrides: tuple[str, ...], root):
    return run_config(list(overrides), root)


def config(overrides: list[str], root):
    """(RunConfig, container) composed from the real conf/ tree; cached (composing takes ~0.5 s), copied per call."""
    return deepcopy(_composed(tuple(overrides), root))


@pytest.fixture(scope="module")
def env(session_root, tiny_path):
    """The tiny model's real processor, real synthetic training rows and eval set (built once per session)."""
    from clsrl_exp.data import eval_sets, train_examples
    from clsrl_exp.models import load_processor
    from clsrl_exp.train.rows import grpo_dataset

    run, _ = config([*NOTHINK, "eval.max_new_tokens=8"], session_root)
    processor = load_processor(tiny_path, run.model)
    examples = train_examples(run, run.dataset)
    dataset = grpo_dataset(examples, run.method, run.dataset.question, run.model.image_size)
    return SimpleNamespace(run=run, path=tiny_path, processor=processor, examples=examples, dataset=dataset,
                           eval_set=eval_sets(run, run.dataset)[0], pad=processor.image_token_id)


class ColocateOnCPU(HFRollout):
    """The vllm-colocate rollout's trainer mixins on a trainer built without vLLM (the tests switch it into TRL's
    vLLM mode around a fake engine)."""

    trainer_mixins = VLLMColocate.trainer_mixins


def _trainer(env, out, patched: bool):
    from trl import GRPOTrainer

    from clsrl_exp.train.grpo import grpo_config, make_grpo_trainer, reward_functions

    if patched:  # the production factory with the colocate rollout's mixins: Trainer(ColocateImageFixMixin, ...)
        return make_grpo_trainer(env.run, env.path, env.processor, env.dataset, Device(cuda=False), str(out),
                                 ColocateOnCPU, ["none"])
    args, _ = grpo_config(env.run, Device(cuda=False), str(out), "hf", ["none"])
    return GRPOTrainer(model=env.path, reward_funcs=reward_functions(env.run), args=args, train_dataset=env.dataset,
                       processing_class=env.processor)


@pytest.fixture(scope="module")
def patched(env, tmp_path_factory):
    return _trainer(env, tmp_path_factory.mktemp("patched"), patched=True)


@pytest.fixture(scope="module")
def plain(env, tmp_path_factory):
    return _trainer(env, tmp_path_factory.mktemp("plain"), patched=False)


@pytest.fixture(scope="module")
def rows(env):
    """Two real training rows with different labels, each repeated G times as TRL's sampler repeats them."""
    picked = [env.dataset[0], next(env.dataset[i] for i in range(1, len(env.dataset))
                                   if env.dataset[i]["label"] != env.dataset[0]["label"])]
    return [r for r in picked for _ in range(G)]


def tokenized(trainer, rows):
    """Exactly what `_generate_and_score_completions` hands `_generate`: image blocks inserted, then TRL tokenizes."""
    from trl.data_utils import prepare_multimodal_messages

    prompts = [prepare_multimodal_messages(r["prompt"], images=[r["image"]]) for r in rows]
    return (prompts, *trainer._tokenize_prompts(prompts))


@contextmanager
def fake_vllm_mode(trainer, llm, mode="colocate", client=None, last_loaded_step=None):
    """Switch a trainer built with use_vllm=False into TRL's vLLM mode around a fake engine; undone on exit.

    The `VLLMGeneration` is TRL's own class built by its own `__init__` (so every attribute `generate()` reads is
    set as TRL sets it); only `_init_vllm` (which starts `vllm.LLM` / connects to a server) is skipped.
    """
    import trl.generation.vllm_generation as vg

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vg, "SamplingParams", fake_vllm.SamplingParams, raising=False)  # absent without vllm
        mp.setattr(vg.VLLMGeneration, "_init_vllm", lambda self: None)
        gen = vg.VLLMGeneration(
            model=trainer.model, accelerator=trainer.accelerator, processing_class=trainer.processing_class, mode=mode,
            temperature=trainer.temperature, top_p=trainer.top_p, top_k=trainer.top_k, min_p=trainer.min_p,
            repetition_penalty=trainer.repetition_penalty, max_completion_length=trainer.max_completion_length,
            logprobs=0, generation_kwargs=trainer.args.generation_kwargs)
        gen.llm, gen.vllm_client, gen._llm_weights_sleeping = llm, client, False
        mp.setattr(trainer, "use_vllm", True)
        mp.setattr(trainer, "vllm_mode", mode)
        mp.setattr(trainer, "vllm_generation", gen, raising=False)
        step = trainer.state.global_step if last_loaded_step is None else last_loaded_step  # equal: no weight sync
        mp.setattr(trainer, "_last_loaded_step", step, raising=False)
        yield gen


def per_image(env, mm) -> int:
    """N: pads the processor expands one image into (4 for the tiny 56 px processor)."""
    merge = env.processor.image_processor.merge_size
    counts = {int(t.prod()) // (merge * merge) for t in mm["image_grid_thw"]}
    assert len(counts) == 1
    return counts.pop()


# ----------------------------------------------------------------------------------------------------- collapse
@pytest.mark.parametrize("ids, out", [
    ([], []),
    ([1, 2, 3], [1, 2, 3]),
    ([9], [9]),
    ([9, 9, 9, 9], [9]),
    ([9, 9, 1, 2], [9, 1, 2]),
    ([1, 2, 9, 9], [1, 2, 9]),
    ([1, 9, 9, 2, 9, 9, 9, 3], [1, 9, 2, 9, 3]),  # two images: two runs, two placeholders
    ([1, 9, 2, 9, 3], [1, 9, 2, 9, 3]),  # already collapsed: unchanged
    ([5, 5, 5, 9, 9], [5, 5, 5, 9]),  # runs of other tokens are never touched
])
def test_collapse_image_runs(ids, out):
    assert collapse_image_runs(ids, 9) == out
    assert collapse_image_runs(out, 9) == out  # idempotent
    assert collapse_image_runs(tuple(ids), 9) == out


# ----------------------------------------------------------------------------------------------------- colocate
def test_trainers_under_test(plain, patched):
    assert isinstance(patched, ColocateImageFixMixin) and not isinstance(plain, ColocateImageFixMixin)
    assert plain.use_vllm is False and patched.use_vllm is False  # built without vllm; switched per test


def test_unpatched_trl_sends_expanded_pads_to_vllm(plain, env, rows):
    """(a) TRL 1.16 as shipped: N pads per image reach vLLM, which expands the first again -> 2N-1 (trl #6294)."""
    _, ids, images, mm = tokenized(plain, rows)
    n = per_image(env, mm)
    assert n == 4
    llm = fake_vllm.LLM(model=env.path)
    with fake_vllm_mode(plain, llm):
        plain._generate_single_turn(ids, images, mm, G)
    sent = [p["prompt_token_ids"] for p in llm.calls[0]["prompts"]]
    assert sent == [list(x) for x in ids]  # the processor-expanded ids, untouched
    assert [c.pads_in for c in llm.checks] == [n] * len(rows)
    assert [c.pads_after for c in llm.checks] == [2 * n - 1] * len(rows)  # 7 image tokens for 4 image features
    assert not any(c.ok for c in llm.checks)


@pytest.mark.parametrize("which", ["patched", pytest.param("plain", marks=pytest.mark.xfail(
    strict=True, reason="TRL 1.16 as shipped sends N pads per image (trl #6294); an XPASS means TRL fixed it"))])
def test_mixin_sends_one_pad_per_image(which, request, env, rows):
    """(b) ours: one pad per image; every other id identical; vLLM's own expansion rebuilds the trainer's ids."""
    trainer = request.getfixturevalue(which)
    _, ids, images, mm = tokenized(trainer, rows)
    n, pad = per_image(env, mm), env.pad
    llm = fake_vllm.LLM(model=env.path)
    with fake_vllm_mode(trainer, llm):
        trainer._generate_single_turn(ids, images, mm, G)
    sent = [p["prompt_token_ids"] for p in llm.calls[0]["prompts"]]
    assert [p["multi_modal_data"]["image"] for p in llm.calls[0]["prompts"]] == [im[0] for im in images]
    for s, full, chk in zip(sent, ids, llm.checks, strict=True):
        full = list(full)
        assert s.count(pad) == 1 and full.count(pad) == n
        assert s == collapse_image_runs(full, pad)
        i = full.index(pad)
        assert s[:i] == full[:i] and s[i] == pad and s[i + 1:] == full[i + n:]  # token by token outside the run
        assert chk.ok and chk.pads_after == n
        assert chk.expanded_ids == full  # what vLLM computes on == what the trainer scores


def test_completions_come_back_to_the_trainer(patched, env, rows):
    """(c) completion ids and logprobs from the engine are what `_generate_single_turn` / `_generate` return."""
    prompts, ids, images, mm = tokenized(patched, rows)
    llm = fake_vllm.LLM(model=env.path, responder=lambda i, p: WORDS[i % 4])
    tok = env.processor.tokenizer
    expected = [tok(WORDS[i % 4], add_special_tokens=False)["input_ids"] + [llm.eos_id] for i in range(len(rows))]
    with fake_vllm_mode(patched, llm):
        completion_ids, logprobs = patched._generate_single_turn(ids, images, mm, G)
        assert completion_ids == expected
        assert logprobs == [[-1.0] * len(c) for c in expected]
        prompt_ids, completion_ids, _, completions, logprobs, *_ = patched._generate(prompts)
    assert [list(p) for p in prompt_ids] == [list(x) for x in ids]  # the trainer keeps its expanded ids
    assert len(llm.checks) == 2 * len(rows) and all(c.pads_in == 1 for c in llm.checks)
    assert completion_ids == expected  # the responder's words again (indices 8..15 cycle like 0..7)
    assert [c[0]["content"] for c in completions] == [WORDS[i % 4] for i in range(len(rows))]


def test_generate_and_score_with_fake_colocate(patched, env, rows):
    """TRL's whole rollout step on the fake engine: weight sync, generation, rewards, IS correction metrics.

    The fake scores each completion with the trainer's own model on the ids vLLM would compute on (after its own
    placeholder expansion), so with the fix vLLM's and the trainer's logprobs must agree: the metric a GPU run
    watches, `sampling/sampling_logp_difference/mean`, is ~0 and no sequence is masked.
    """
    import torch

    model, proc = patched.model, env.processor

    def scorer(ids, image, completion):
        px = proc.image_processor(images=[image], return_tensors="pt")
        x = torch.tensor([ids + completion])
        with torch.no_grad():
            logits = model(input_ids=x, attention_mask=torch.ones_like(x), pixel_values=px["pixel_values"],
                           image_grid_thw=px["image_grid_thw"], mm_token_type_ids=(x == env.pad).long()).logits
        logp = torch.log_softmax(logits[0, len(ids) - 1:-1].float() / patched.temperature, -1)
        return logp.gather(-1, torch.tensor(completion)[:, None])[:, 0].tolist()

    llm = fake_vllm.LLM(model=env.path, responder=lambda i, p: WORDS[i % 4], scorer=scorer)
    patched._metrics["train"].clear()
    was_training = model.training
    model.train()
    try:
        with fake_vllm_mode(patched, llm, last_loaded_step=-1):  # step changed -> TRL pushes the weights first
            out = patched._generate_and_score_completions(rows)
    finally:
        model.train(was_training)
    assert set(llm.loaded) == {name for name, _ in model.named_parameters()} and llm.prefix_cache_resets == 1
    assert all(c.ok for c in llm.checks) and len(llm.checks) == len(rows)
    assert (out["prompt_ids"] == env.pad).sum(1).tolist() == [4] * len(rows)  # trainer side: expanded
    m = patched._metrics["train"]
    assert m["sampling/sampling_logp_difference/mean"][-1] < 1e-4
    assert m["sampling/importance_sampling_ratio/min"][-1] == pytest.approx(1.0, abs=1e-3)
    assert "frac_reward_zero_std" in m


@pytest.mark.parametrize("which", ["plain", "patched"])
def test_server_mode_is_not_altered(which, request, env, rows):
    """(d) server mode: expanded ids reach the server with or without the mixin (`_place_features` needs them)."""
    trainer = request.getfixturevalue(which)
    _, ids, images, mm = tokenized(trainer, rows)
    n = per_image(env, mm)
    client = fake_vllm.FakeServerClient(fake_vllm.LLM(model=env.path))
    with fake_vllm_mode(trainer, None, mode="server", client=client):
        completion_ids, logprobs = trainer._generate_single_turn(ids, images, mm, G)
    assert client.prompts == [list(x) for x in ids[::G]]  # one per group, processor-expanded
    for p, f in zip(client.prompts, client.features, strict=True):
        assert p.count(env.pad) == n
        assert f["mm_placeholders"]["image"] == [{"offset": p.index(env.pad), "length": n}]
    assert len(completion_ids) == len(rows) and len(logprobs) == len(rows)


# ----------------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("rollout, backend", [("vllm-colocate", "vllm-colocate"), ("vllm-server", "vllm-server"),
                                              ("auto", "vllm-colocate"), ("hf", "hf")])
def test_vllm_settings_map_to_grpo_config(rollout, backend, session_root, tmp_path):
    from trl import GRPOConfig

    from clsrl_exp.train.grpo import grpo_config

    run, _ = config([*QWEN, f"rollout={rollout}"], session_root)
    kw = generation.get_rollout(backend).grpo_kwargs(run.rollout)
    common = {"vllm_importance_sampling_correction": True, "vllm_importance_sampling_mode": "sequence_mask",
              "vllm_importance_sampling_clip_max": 3.0}
    expected = {
        "vllm-colocate": {"use_vllm": True, "vllm_mode": "colocate", **common, "vllm_gpu_memory_utilization": 0.3,
                          "vllm_max_model_length": 196 + 1024 + 1024, "vllm_enable_sleep_mode": False},
        "vllm-server": {"use_vllm": True, "vllm_mode": "server", **common,
                        "vllm_server_base_url": "http://localhost:8000"},
        "hf": {"use_vllm": False},
    }[backend]
    assert kw == expected
    assert set(kw) <= {f.name for f in fields(GRPOConfig)}
    # use_vllm=True needs no vllm to build the config (only the trainer starts the engine)
    direct = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, gradient_checkpointing=False,
                        report_to="none", per_device_train_batch_size=4, num_generations=4, **kw)
    production, _ = grpo_config(run, Device(cuda=False), str(tmp_path), backend, ["none"])
    for args in (direct, production):
        assert {k: getattr(args, k) for k in kw} == kw


@pytest.mark.parametrize("overrides, length", [
    ([], 196 + 1024 + 1024),
    (["train.max_completion_length=64"], 196 + 1024 + 64),
    (["model.image_size=448"], 256 + 1024 + 1024),
    (["rollout.max_prompt_text_tokens=300"], 196 + 300 + 1024),
    (["rollout.max_model_length=4096"], 4096),
])
def test_max_model_length_is_derived(overrides, length, session_root):
    run, _ = config([*QWEN, "rollout=vllm-colocate", *overrides], session_root)
    assert run.rollout.max_model_length == length


def test_resolve_rollout(monkeypatch, session_root):
    import clsrl_exp.generation.vllm as vllm_backend

    name = lambda cls: cls.name
    resolve = lambda n, cuda: name(generation.resolve_rollout(n, cuda=cuda, world_size=1))
    for vllm_ok in (False, True):
        monkeypatch.setattr(vllm_backend, "vllm_available", lambda ok=vllm_ok: ok)
        assert resolve("auto", cuda=False) == "hf"  # no CUDA: hf, whatever is installed
        assert resolve("hf", cuda=True) == "hf"
        assert resolve("auto", cuda=True) == ("vllm-colocate" if vllm_ok else "hf")
    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: False)
    for n in ("vllm-colocate", "vllm-server"):  # CUDA but no vllm: the message names only vllm
        with pytest.raises(ConfigError, match=rf"^rollout={n} needs a CUDA GPU and vLLM, but vllm is not inst"):
            resolve(n, cuda=True)
        with pytest.raises(ConfigError, match="no CUDA GPU is visible and vllm is not installed"):
            resolve(n, cuda=False)
    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: True)
    with pytest.raises(ConfigError, match=r"but no CUDA GPU is visible; use rollout=hf"):
        resolve("vllm-colocate", cuda=False)
    assert resolve("vllm-server", cuda=True) == "vllm-server"
    assert name(generation.resolve_rollout("auto", cuda=True, world_size=2)) == "hf"  # 2 processes


# ----------------------------------------------------------------------------------------------------- budget
def _grpo_prompts(env, examples):
    from clsrl_exp.prompts import grpo_messages, prompt_text

    m, q = env.run.method, env.run.dataset.question
    return [grpo_messages(prompt_text(m.train_template, q, ex.options), m) for ex in examples]


def test_check_prompt_budget(env, session_root):
    prompts, paths = _grpo_prompts(env, env.examples), [ex.image_path for ex in env.examples]
    total = check_prompt_budget(env.processor, prompts, paths, env.run)  # rollout=hf: no limit, just measured
    texts = [env.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p[-1]["content"]}]}],
        tokenize=False, add_generation_prompt=True) for p in prompts]
    assert check_prompt_budget(env.processor, texts, paths, env.run) == total  # strings == conversational prompts
    ok, _ = config([*BASE, "rollout=vllm-colocate"], session_root)
    assert check_prompt_budget(env.processor, prompts, paths, ok) == total

    small, _ = config([*BASE, "rollout=vllm-colocate",
                           "rollout.max_prompt_text_tokens=20"], session_root)
    with pytest.raises(ConfigError, match=r"rollout\.max_prompt_text_tokens \(now 20\) to at least (\d+)") as e:
        check_prompt_budget(env.processor, prompts, paths, small)
    need = int(re.search(r"at least (\d+)", str(e.value)).group(1))
    assert f"({4} image + {total - 4} text)" in str(e.value)
    fits = replace(small, rollout=replace(small.rollout, max_prompt_text_tokens=need,
                                          max_model_length=small.rollout.max_model_length - 20 + need))
    assert check_prompt_budget(env.processor, prompts, paths, fits) == total  # the suggested budget is enough
    tight = replace(fits, rollout=replace(fits.rollout, max_model_length=fits.rollout.max_model_length - 1))
    with pytest.raises(ConfigError):
        check_prompt_budget(env.processor, prompts, paths, tight)


def test_check_pixel_bounds(env):
    """vLLM colocate reads the processor saved with the model; the trainer's bounds must give the same count."""
    check_pixel_bounds(env.path, env.run)  # the tiny build saves the config's bounds
    bigger = replace(env.run, model=replace(env.run.model, image_size=112, max_pixels=112 * 112))
    with pytest.raises(ConfigError, match=r"4 image tokens at model\.image_size 112") as e:
        check_pixel_bounds(env.path, bigger)
    assert "(16 tokens)" in str(e.value) and "model.max_pixels >= 12544" in str(e.value)


# ----------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("case", list(CLI_CASES))
def test_no_cuda_cli_stops_with_one_message(case, cli_runs):
    p = cli_runs[case].result()
    assert p.returncode == 2, p.stderr[-2000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {case} needs a CUDA GPU"), p.stderr[-2000:]
    assert "Traceback" not in p.stderr


def test_cuda_without_vllm_stops_at_start(monkeypatch, session_root):
    """The run path on a CUDA machine without vllm (device and vllm_available patched): stops before any work."""
    import clsrl_exp.generation.vllm as vllm_backend
    import clsrl_exp.runtime as runtime
    from clsrl_exp.run import run_cell

    monkeypatch.setattr(runtime, "setup_device", lambda: Device(cuda=True))
    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: False)
    for extra, message in ((["rollout=vllm-colocate"], "rollout=vllm-colocate needs a CUDA GPU and vLLM, but vllm is"),
                           (["rollout=hf", "eval.backend=vllm"], "eval.backend=vllm needs a CUDA GPU and `pip")):
        run, container = config([*BASE, *extra], session_root)
        with pytest.raises(ConfigError, match=re.escape(message)):
            run_cell(run, container)
        assert not (Path(run.run_dir) / "result.json").exists()  # stopped before writing anything


# ----------------------------------------------------------------------------------------------------- eval
@pytest.fixture
def vllm_module(monkeypatch):
    """`import vllm` gives the fake module for the duration of a test."""
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    return fake_vllm


def test_eval_prompts_have_one_unexpanded_placeholder(env):
    from clsrl_exp.data import load_image
    from clsrl_exp.evaluate import chat_texts

    exs = env.eval_set.examples[:6]
    texts = chat_texts(env.processor, exs, eval_prompt(env.run.method, env.eval_set.split, "eval"),
                       env.eval_set.question)
    for text, ex in zip(texts, exs, strict=True):
        assert text.count("<|image_pad|>") == 1 and "<|vision_start|><|image_pad|><|vision_end|>" in text
        enc = env.processor(text=[text], images=[load_image(ex.image_path, env.run.model.image_size)])
        assert enc["input_ids"][0].count(env.pad) == 4  # what vLLM's own processor makes of it


def vllm_gen(env, run=None, path="default"):
    return VLLMGenerator(run or env.run, processor=env.processor, model_path=env.path if path == "default" else path)


def task(eval_set, method) -> EvalTask:
    return EvalTask(eval_set, "eval", eval_prompt(method, eval_set.split, "eval"), eval_hash="h")


def test_vllm_engine_arguments(vllm_module, env, session_root):
    gen = vllm_gen(env)
    m = env.run.model
    assert isinstance(gen.llm, fake_vllm.LLM) and gen.llm.model == env.path
    assert gen.llm.kwargs == {"max_model_len": 4 + 1024 + 8, "limit_mm_per_prompt": {"image": 1},
                              "mm_processor_kwargs": {"min_pixels": m.min_pixels, "max_pixels": m.max_pixels},
                              "dtype": m.dtype, "gpu_memory_utilization": 0.85, "seed": 0}
    assert gen.sampling_params.kwargs == {"temperature": 0.0, "max_tokens": 8}  # greedy
    qwen, _ = config([*QWEN, "rollout=vllm-colocate"], session_root)
    kw = engine_kwargs("/ckpt", qwen)
    assert kw["max_model_len"] == 2244 and kw["dtype"] == "bfloat16"
    assert kw["mm_processor_kwargs"] == {"min_pixels": 3136, "max_pixels": 401408}
    sampled, _ = config([*NOTHINK, "eval.greedy=false", "eval.max_new_tokens=8"], session_root)
    assert vllm_gen(env, sampled).sampling_params.max_tokens == 8
    with pytest.raises(ConfigError, match="needs a model path"):
        vllm_gen(env, path=None)


def test_evaluate_set_with_vllm_backend(vllm_module, env, tmp_path):
    gen = vllm_gen(env)
    log_ = PredictionLog(tmp_path / "predictions.jsonl")
    res = evaluate_set(gen, env.processor, task(env.eval_set, env.run.method), log_,
                       image_size=env.run.model.image_size, batch_size=5, limit=12)
    rows = list(log_.done("h").values())
    assert res.n == 12 == len(rows) and res.skipped == 0
    assert res.correct == sum(r["label"] == "red" for r in rows) == res.correct_strict  # the fake always says red
    assert 0 < res.correct < 12 and {r["output"] for r in rows} == {"red"}
    assert {r["output_tokens"] for r in rows} == {len(env.processor.tokenizer("red")["input_ids"]) + 1}
    llm = gen.llm
    assert [len(c["prompts"]) for c in llm.calls] == [5, 5, 2]
    for call in llm.calls:
        assert call["sampling_params"].kwargs == {"temperature": 0.0, "max_tokens": 8}
        for p in call["prompts"]:
            assert set(p) == {"prompt", "multi_modal_data"} and p["prompt"].count("<|image_pad|>") == 1
            assert p["multi_modal_data"]["image"].size == (56, 56)
    assert all(c.ok and c.pads_in == 1 and c.pads_after == 4 for c in llm.checks)
    assert llm.kwargs["mm_processor_kwargs"] == {"min_pixels": env.run.model.min_pixels,
                                                 "max_pixels": env.run.model.max_pixels}
    again = evaluate_set(gen, env.processor, task(env.eval_set, env.run.method), log_,
                         image_size=env.run.model.image_size, batch_size=5, limit=12)
    assert len(llm.calls) == 3 and again.n == 12  # resumed: nothing generated twice


def test_unreadable_images_skipped_like_hf(vllm_module, env, tmp_path):
    from clsrl_exp.models import load_model

    (tmp_path / "broken.png").write_bytes(b"not an image")
    exs = list(env.eval_set.examples[:4])
    exs[1] = replace(exs[1], image_path=str(tmp_path / "broken.png"))
    exs[3] = replace(exs[3], image_path=str(tmp_path / "gone.png"))
    eval_set = replace(env.eval_set, examples=exs, missing=[])
    results, vgen = {}, vllm_gen(env)
    hf = HFGenerator(model=load_model(env.path, env.run.model, cuda=False), processor=env.processor,
                     max_new_tokens=4, greedy=True, num_workers=0)
    for name, gen in (("vllm", vgen), ("hf", hf)):
        results[name] = evaluate_set(gen, env.processor, task(eval_set, env.run.method),
                                     PredictionLog(tmp_path / f"{name}.jsonl"), image_size=env.run.model.image_size,
                                     batch_size=4)
    v, h = results["vllm"], results["hf"]
    assert (v.n, v.skipped) == (h.n, h.skipped) == (2, 2)
    assert v.skipped_examples == h.skipped_examples and exs[1].id in v.skipped_examples[0]
    assert [len(c["prompts"]) for c in vgen.llm.calls] == [2]  # the unreadable ones never reach the engine


def test_eval_prompt_longer_than_engine_limit(vllm_module, env, session_root):
    run, _ = config([*NOTHINK, "eval.max_new_tokens=8", "++rollout.max_prompt_text_tokens=10"], session_root)
    gen = vllm_gen(env, run)
    with pytest.raises(ConfigError, match="rollout.max_prompt_text_tokens"):
        evaluate_set(gen, env.processor, task(env.eval_set, run.method), PredictionLog(session_root / "long.jsonl"),
                     image_size=run.model.image_size, batch_size=4, limit=4)
    assert gen.llm.calls == []
