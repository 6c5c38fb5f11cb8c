"""Training wiring on the tiny model (CPU, world size 1), read back from the trainers TRL actually built:

- GRPO for clsrl / nothink / adaptive: 2 steps with the paper's values (beta 0.04, loss grpo, G = 4, temperature 1,
  top_k 50, 16 prompts x 4 completions per optimizer step), fp32 on CPU with the standard AdamW;
- learning is wired: a reward that varies across completions moves the parameters, the rule rewards of a random
  model (always 0, so zero advantages) do not;
- the G completions of one prompt differ under the configured sampling even when the model ships Qwen's greedy-like
  generation config (and top_k=1 would make them identical);
- SFT: 2 steps, loss on the whole sequence by default (prompt included, pads and image pads excluded), on the answer
  only with train.completion_only_loss=true;
- bf16 weights get the fp32-master AdamW, which keeps lr-1e-6 updates that plain bf16 AdamW rounds away;
- the image cache (train.image_cache) leaves a 2-step GRPO run's losses and parameters exactly as TRL's own
  processing does.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from helpers import TINY, run_config

from clsrl_exp.runtime import Device
from clsrl_exp.train.grpo import make_grpo_trainer
from clsrl_exp.train.optim import MasterWeightAdamW

RL_METHODS = ["clsrl", "nothink", "adaptive"]
GRPO = ["train.max_steps=2", "train.max_completion_length=8"]
CPU = Device(cuda=False)
# Qwen2-VL-2B-Instruct's bundled generation_config.json: effectively greedy
QWEN_GENERATION = {"do_sample": True, "top_k": 1, "top_p": 0.001, "temperature": 0.01}


@pytest.fixture(scope="module", autouse=True)
def _one_thread_here():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(session_root, tiny_path):
    """(processor, training examples) for synthetic-colors with the run config's shots and seed."""
    from clsrl_exp.data import ensure_dataset, train_examples
    from clsrl_exp.models import load_processor

    run, _ = run_config([*TINY, "method=nothink", *GRPO], session_root)
    ensure_dataset(run.dataset, run.data.root)
    examples = train_examples(run, run.dataset)
    assert len(examples) == 4 * 4  # 4 shots x 4 colours
    return load_processor(tiny_path, run.model), examples


def _rl_run(method: str, session_root: Path, extra: tuple = ()):
    run, _ = run_config([*TINY, f"method={method}", *GRPO, *extra], session_root)
    return run


def _grpo_trainer(method, session_root, tiny_path, setup, out_dir, extra=(), reward_funcs=None):
    from clsrl_exp.train.rows import grpo_dataset

    processor, examples = setup
    run = _rl_run(method, session_root, extra)
    dataset = grpo_dataset(examples, run.method, run.dataset.question, run.model.image_size)
    return make_grpo_trainer(run, tiny_path, processor, dataset, CPU, str(out_dir), "hf", ["none"],
                             reward_funcs=reward_funcs), dataset


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before: dict, model) -> list[str]:
    return [k for k, v in model.state_dict().items() if not torch.equal(before[k], v)]


_TRAINED: dict[str, tuple] = {}


@pytest.fixture(scope="module")
def trained(session_root, tiny_path, setup, tmp_path_factory):
    """method -> (trainer after 2 GRPO steps with the method's own rewards, parameters before training)."""

    def get(method):
        if method not in _TRAINED:
            trainer, _ = _grpo_trainer(method, session_root, tiny_path, setup, tmp_path_factory.mktemp(method))
            before = _snapshot(trainer.model)
            trainer.train()
            _TRAINED[method] = trainer, before
        return _TRAINED[method]

    return get


# ------------------------------------------------------------------------------------------------- GRPO config
@pytest.mark.parametrize("method", RL_METHODS)
def test_grpo_runs_two_steps_with_the_papers_values(method, trained):
    trainer, before = trained(method)
    a = trainer.args
    assert trainer.state.global_step == 2
    assert a.beta == trainer.beta == 0.04
    assert a.loss_type == trainer.loss_type == "grpo"
    assert a.scale_rewards == "group" and a.num_iterations == 1
    assert a.num_generations == trainer.num_generations == 4
    assert a.temperature == trainer.temperature == 1.0
    assert a.top_k == trainer.top_k == 50 and a.top_p == 1.0
    assert a.learning_rate == 1e-6 and a.lr_scheduler_type == "linear" and a.weight_decay == 0.0
    assert a.get_warmup_steps(1000) == 0 and a.max_grad_norm == 1.0
    assert a.world_size == 1
    assert a.per_device_train_batch_size * a.gradient_accumulation_steps * a.world_size == 64
    assert a.generation_batch_size == 64 and a.generation_batch_size // a.num_generations == 16  # 16 prompts
    assert a.use_cpu is True and a.bf16 is False and a.gradient_checkpointing is False
    assert a.use_vllm is False
    g = trainer.generation_config  # what generate() receives
    assert g.do_sample is True and g.top_k == 50 and g.top_p == 1.0 and g.temperature == 1.0
    assert g.max_new_tokens == 8
    # the method's own rewards, weights 1
    expected = {"clsrl": ["accuracy", "format"], "nothink": ["equality"], "adaptive": ["accuracy", "adaptive_format"]}
    assert len(trainer.reward_funcs) == len(expected[method]) and list(a.reward_weights) == [1.0] * len(
        expected[method])
    # fp32 on CPU: the Trainer's own AdamW, not the master-weight one
    opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert type(opt) is torch.optim.AdamW and not isinstance(opt, MasterWeightAdamW)
    assert next(trainer.model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("method", RL_METHODS)
def test_rule_rewards_of_a_random_model_give_no_update(method, trained):
    """A random tiny model never earns a rule reward: zero advantages, zero KL at the start -> parameters unchanged.
    (The counterpart of the dense-reward test below: shows the parameter comparison can tell.)"""
    trainer, before = trained(method)
    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logs) == 2 and all(h["reward"] == 0 and h["reward_std"] == 0 for h in logs), logs
    assert _changed(before, trainer.model) == []


def dense_reward(prompts, completions, **kwargs) -> list[float]:
    """Fraction of ASCII letters in the completion: varies across completions of one prompt."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isascii() and ch.isalpha() for ch in t) / max(len(t), 1) for t in texts]


_DENSE: dict[bool, tuple] = {}


@pytest.fixture(scope="module")
def dense(session_root, tiny_path, setup, tmp_path_factory):
    """image cache on/off -> (trainer after 2 GRPO steps with the dense reward, parameters before training)."""

    def get(image_cache: bool):
        if image_cache not in _DENSE:
            trainer, _ = _grpo_trainer("nothink", session_root, tiny_path, setup, tmp_path_factory.mktemp("dense"),
                                       extra=(f"train.image_cache={str(image_cache).lower()}",),
                                       reward_funcs=[dense_reward])
            before = _snapshot(trainer.model)
            trainer.train()
            _DENSE[image_cache] = trainer, before
        return _DENSE[image_cache]

    return get


def test_a_varying_reward_moves_the_parameters(dense):
    trainer, before = dense(True)
    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logs) == 2 and all(h["reward_std"] > 0 for h in logs), logs
    changed = _changed(before, trainer.model)
    assert len(changed) >= 0.8 * len(before), f"only {len(changed)} of {len(before)} tensors changed"
    # lm_head / embeddings and the vision tower both learn (the image reaches the loss)
    assert any("visual" in k for k in changed) and any("layers" in k for k in changed)


def test_the_image_cache_leaves_the_two_step_losses_identical(dense):
    """Same seed, same data: TRL's own processing twice per step and the image cache give the same log history
    (losses, rewards, KL, gradient norms) and the same parameters; the cache did process each image once."""
    cached, _ = dense(True)
    plain, _ = dense(False)
    cache = cached.processing_class._process_images
    assert cache.computed == 16 and cache.reused == 2 * 2 * 64 - 16  # 16 images, 2 steps x 2 calls x 64 slots
    assert "_process_images" not in vars(plain.processing_class)  # off: TRL's own method
    timing = ("time", "runtime", "per_second")
    strip = [{k: v for k, v in h.items() if not any(t in k for t in timing)} for h in cached.state.log_history]
    ref = [{k: v for k, v in h.items() if not any(t in k for t in timing)} for h in plain.state.log_history]
    losses = [h["loss"] for h in ref if "loss" in h]
    assert len(losses) == 2 and any(x != 0 for x in losses)  # a loss that can differ
    assert strip == ref
    assert _changed(_snapshot(plain.model), cached.model) == []


def test_g_completions_of_one_prompt_differ(trained):
    from trl.data_utils import prepare_multimodal_messages

    trainer, _ = trained("nothink")
    row = trainer.train_dataset[0]
    prompts = [prepare_multimodal_messages(row["prompt"], images=[row["image"]]) for _ in range(4)]

    def sample():
        ids, images, fields = trainer._tokenize_prompts(prompts)
        completions, _ = trainer._generate_single_turn(ids, images, fields, 4)  # TRL's own rollout path
        assert len(completions) == 4 and all(completions)
        return [tuple(c) for c in completions]

    saved = (trainer.model.generation_config, trainer.generation_config, trainer.generation_kwargs)
    try:
        # the checkpoint's own (Qwen-like, greedy) generation config must not leak into the rollouts
        trainer.model.generation_config = copy.deepcopy(trainer.model.generation_config)
        for k, v in QWEN_GENERATION.items():
            setattr(trainer.model.generation_config, k, v)
        torch.manual_seed(0)
        assert len(set(sample())) > 1, "all G completions identical under the configured sampling"

        # control: with top_k=1 (Qwen's bundled value) the same call gives G identical completions
        trainer.generation_config = copy.deepcopy(trainer.generation_config)
        trainer.generation_config.top_k = 1
        trainer.generation_kwargs = {**trainer.generation_kwargs, "top_k": 1}
        torch.manual_seed(0)
        assert len(set(sample())) == 1
    finally:
        trainer.model.generation_config, trainer.generation_config, trainer.generation_kwargs = saved


# ------------------------------------------------------------------------------------------------- SFT
@pytest.fixture(scope="module")
def sft_parts(session_root, tiny_path, setup):
    from clsrl_exp.train.rows import sft_dataset, sft_rows

    processor, examples = setup

    def build(out_dir, extra=()):
        from clsrl_exp.train.sft import make_sft_trainer

        run, _ = run_config([*TINY, "method=sft", "train.max_steps=2", *extra], session_root)
        assert run.train.kind == "sft"
        dataset = sft_dataset(sft_rows(examples, run.method, run.dataset.question), run.model.image_size)
        return make_sft_trainer(run, tiny_path, processor, dataset, CPU, str(out_dir), ["none"]), dataset

    return processor, build


def _labelled(batch, row: int) -> list[int]:
    labels = batch["labels"][row]
    return labels[labels != -100].tolist()


def test_sft_two_steps_whole_sequence_loss(sft_parts, tmp_path):
    processor, build = sft_parts
    trainer, dataset = build(tmp_path)
    assert trainer.args.completion_only_loss is False
    assert (trainer.args.learning_rate, trainer.args.lr_scheduler_type) == (2e-5, "cosine")
    assert trainer.args.get_warmup_steps(1000) == 100  # warmup ratio 0.1
    assert trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps == 16
    batch = trainer.data_collator([dataset[0], dataset[1]])
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    image = processor.image_token_id
    assert int((ids == image).sum()) == 2 * 4  # 4 visual tokens per image
    assert bool((labels[ids == image] == -100).all())  # image pads never labelled
    assert bool((labels[mask == 0] == -100).all())  # padding never labelled
    keep = (mask == 1) & (ids != image)
    assert torch.equal(labels[keep], ids[keep])  # everything else is: system, question, options, answer
    tok = processor.tokenizer
    for r in range(2):
        text = tok.decode(_labelled(batch, r))
        assert text.startswith("<|im_start|>system\nOutput the thinking process in <think> </think>")
        assert "Please choose one from list [" in text
        assert text.endswith(f"<answer>{dataset[r]['label']}</answer><|im_end|>\n")

    trainer.train()
    assert trainer.state.global_step == 2
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(math.isfinite(x) and x > 0 for x in losses)


def test_sft_completion_only_loss_labels_the_answer_only(sft_parts, tmp_path):
    processor, build = sft_parts
    trainer, dataset = build(tmp_path, ["train.completion_only_loss=true"])
    assert trainer.args.completion_only_loss is True
    batch = trainer.data_collator([dataset[0], dataset[1]])
    tok = processor.tokenizer
    for r in range(2):
        assert tok.decode(_labelled(batch, r)) == f"<answer>{dataset[r]['label']}</answer><|im_end|>\n"


# ------------------------------------------------------------------------------------------------- master weights
def test_bf16_weights_get_fp32_master_adamw(session_root, tiny_path, setup, tmp_path):
    extra = ("+train.extra.model_init_kwargs.dtype=bfloat16",)
    trainer, _ = _grpo_trainer("nothink", session_root, tiny_path, setup, tmp_path, extra=extra)
    assert trainer.args.bf16 is False and trainer.args.use_cpu is True
    assert next(trainer.model.parameters()).dtype == torch.bfloat16
    opt = trainer.create_optimizer()
    assert isinstance(opt, MasterWeightAdamW)
    assert opt.param_groups[0]["lr"] == 1e-6

    params = [p for p in trainer.model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    plain_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    plain = torch.optim.AdamW(plain_params, lr=1e-6, weight_decay=0.0)
    for p, q in zip(params, plain_params, strict=True):
        p.grad = torch.ones_like(p)
        q.grad = torch.ones_like(q)
    opt.step()
    plain.step()

    n = sum(p.numel() for p in params)
    master_moved = sum(int((opt.state[p]["master"] != p0.float()).sum()) for p, p0 in zip(params, start, strict=True))
    assert master_moved == n  # every fp32 master copy took the 1e-6 step
    for p, p0 in zip(params, start, strict=True):
        assert opt.state[p]["master"].dtype == torch.float32
        assert torch.allclose(opt.state[p]["master"], p0.float() - 1e-6, atol=1e-8, rtol=2e-7)
    # plain AdamW on the same bf16 weights: every update of a weight larger than ~1e-3 rounds away
    for q, p0 in zip(plain_params, start, strict=True):
        big = p0.abs() > 1e-3
        assert torch.equal(q.detach()[big], p0[big])
    plain_moved = sum(int((q.detach() != p0).sum()) for q, p0 in zip(plain_params, start, strict=True))
    assert plain_moved < 0.2 * n


def test_extra_trl_arguments_merge_into_model_init_kwargs(session_root):
    """`train.extra.model_init_kwargs` adds to ours instead of dropping dtype and attention."""
    from helpers import TINY, run_config

    from clsrl_exp.runtime import Device
    from clsrl_exp.train.grpo import grpo_config

    run, _ = run_config([*TINY, "method=nothink", "+train.extra.model_init_kwargs.low_cpu_mem_usage=true"],
                        session_root)
    args, _ = grpo_config(run, Device(cuda=False), str(session_root / "x"), "hf", ["none"])
    assert args.model_init_kwargs == {"dtype": "float32", "attn_implementation": "sdpa", "low_cpu_mem_usage": True}


# ------------------------------------------------------------------------------------------------- curve
def test_an_accuracy_curve_does_not_change_what_is_trained(session_root, tiny_path, setup, tmp_path):
    """Held-out accuracy measured during training (eval.curve_every) leaves every random generator as it found it:
    the same two GRPO steps (rewards, losses) with and without it."""
    from clsrl_exp.data import eval_sets
    from clsrl_exp.evaluate import EvalTask
    from clsrl_exp.prompts import eval_prompt
    from clsrl_exp.train.callbacks import accuracy_curve

    def length_reward(completions, **kw):  # varies within a group, so the steps change the weights
        return [float(len(c[0]["content"]) % 3) for c in completions]

    history = {}
    for curve in (False, True):
        torch.manual_seed(0)
        trainer, _ = _grpo_trainer("nothink", session_root, tiny_path, setup, tmp_path / str(curve),
                                   reward_funcs=[length_reward])
        if curve:
            run = _rl_run("nothink", session_root)
            (es,) = eval_sets(run, run.dataset)
            task = EvalTask(es, "eval", eval_prompt(run.method, "test", "eval"), "h")
            cb = accuracy_curve([task], setup[0], every=1, limit=4, image_size=56, batch_size=4, max_new_tokens=2,
                                scratch=tmp_path / "curve.jsonl")
            trainer.add_callback(cb)
        trainer.train()
        history[curve] = [(h.get("loss"), h.get("reward")) for h in trainer.state.log_history if "loss" in h]
        if curve:
            assert [p["step"] for p in cb.points] == [0, 1, 2]
    assert history[True] == history[False] and len(history[False]) == 2
