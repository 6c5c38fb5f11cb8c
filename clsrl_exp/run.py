"""One cell, top to bottom: skip if complete -> data -> train (unless zero-shot) -> evaluate -> result.json.

Data flows one way: config -> dataset rows -> trainer -> checkpoint -> predictions -> result record. A killed cell
resumes: training from the last checkpoint in `<run_dir>/trainer/`, evaluation from `predictions.jsonl`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path

from clsrl_exp.config import RunConfig, dataset_config, identity, identity_hash
from clsrl_exp.errors import ConfigError
from clsrl_exp.results import RESULT, atomic_write_json, is_complete, make_record, read_record

log = logging.getLogger(__name__)


def eval_dataset_names(run: RunConfig) -> list[str]:
    d = run.eval.datasets
    if d is None:
        return [run.dataset.name]
    if d == "all":
        return list(run.eval.all_datasets)
    if isinstance(d, str):
        return [d]
    return list(d)


def last_checkpoint(trainer_dir: Path) -> str | None:
    ckpts = sorted(trainer_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


def run_cell(run: RunConfig, container: dict) -> dict:
    run_dir = Path(run.run_dir)
    ident, ihash = identity(container), identity_hash(container)
    if is_complete(run_dir, ihash):
        log.info("skipped: %s already holds a complete result for this config", run_dir)
        return {**read_record(run_dir), "cell": "skipped"}

    from clsrl_exp import models, runtime
    from clsrl_exp.data import ensure_dataset, eval_sets, load_splits, train_examples
    from clsrl_exp.train.rollout import resolve_rollout, vllm_available

    device = runtime.setup_device()
    backend = resolve_rollout(run, device.cuda, device.world_size) if run.train.kind == "grpo" else "hf"
    if run.eval.backend == "vllm" and not (device.cuda and vllm_available()):
        raise ConfigError("eval.backend=vllm needs a CUDA GPU and `pip install -e .[vllm]`; use eval.backend=hf")
    base = lambda status, **kw: make_record(container, status=status, identity=ident, identity_hash=ihash,
                                            run_dir=str(run_dir), **kw)
    if device.is_main:
        atomic_write_json(run_dir / RESULT, base("running", evals=[], train=None))

    # data first: every bad input stops here, before a model is loaded
    eval_cfgs = [run.dataset if n == run.dataset.name else dataset_config(n) for n in eval_dataset_names(run)]
    splits = {}  # each dataset's split is read once (ImageNet's means listing 1.28M files)
    for ds in {d.name: d for d in [run.dataset, *eval_cfgs]}.values():
        ensure_dataset(ds, run.data.root)
        splits[ds.name] = load_splits(ds, run.data.root)
    sets = [s for ds in eval_cfgs for s in eval_sets(run, ds, splits[ds.name])]
    examples = train_examples(run, run.dataset, splits[run.dataset.name]) if run.train.kind != "none" else []

    model_path = models.resolve_model_path(run.model, run.paths.cache)
    if run.model.warm_start is not None:
        from clsrl_exp.train.warmstart import warm_start

        model_path = warm_start(run, model_path, device)
    run_name = "/".join(Path(run.run_dir).parts[-5:])
    report_to = runtime.init_tracker(run, container, device, ihash, run_name)
    processor = models.load_processor(model_path, run.model)

    if backend.startswith("vllm") or run.eval.backend == "vllm":
        pairs = [(run.dataset.question, ex) for ex in examples]
        pairs += [(s.question, ex) for s in sets for ex in s.examples[:256]]
        check_vllm_inputs(run, model_path, processor, pairs)

    model, train_summary = None, None
    if run.train.kind != "none":
        model, train_summary, model_path = train(run, model_path, processor, examples, sets, device, backend,
                                                 report_to)
        if not device.is_main:
            return {"status": "trained", "rank": device.rank}

    if run.eval.backend == "vllm":
        model = release(model)  # the vLLM engine needs the GPU memory the trainer held
    elif model is None:
        model = models.load_model(model_path, run.model, device.cuda)
    evals = evaluate(run, model, processor, sets, ihash, device, model_path)
    record = base("complete", evals=[e.record() for e in evals], train=train_summary,
                  extra={"model_path": model_path, "rollout": backend if run.train.kind == "grpo" else None})
    atomic_write_json(run_dir / RESULT, record)
    runtime.finish_tracker({f"acc/{e.dataset}/{e.split}": e.record()["accuracy"] for e in evals})
    for e in evals:
        r = e.record()
        log.info("%s %s/%s: accuracy %.2f (strict %.2f) on %d items, %d skipped", run.method.name, r["dataset"],
                 r["split"], r["accuracy"], r["accuracy_strict"], r["n"], r["skipped"])
    log.info("result: %s", run_dir / RESULT)
    return {**record, "cell": "done"}


def check_vllm_inputs(run: RunConfig, model_path: str, processor, pairs) -> None:
    """vLLM sees the saved processor's pixel bounds and a fixed context length: check both before any work.
    `pairs` are (question, example) for the training examples and a sample of every eval set."""
    from clsrl_exp.train.rollout import check_pixel_bounds, check_prompt_budget
    from clsrl_exp.train.rows import chat_prompt, prompt_text

    check_pixel_bounds(model_path, run)
    texts = [chat_prompt(prompt_text(run.method.train_template, q, ex.options), run.method) for q, ex in pairs]
    check_prompt_budget(processor, texts, [ex.image_path for _, ex in pairs], run)


def release(model) -> None:
    """Drop a model and give its GPU memory back."""
    import gc

    del model
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
    return None


def _generator(run: RunConfig, model, processor, device, model_path: str | None = None):
    from clsrl_exp.evaluate import HFGenerator

    if run.eval.backend == "vllm":
        from clsrl_exp.evaluate_vllm import VLLMGenerator

        return VLLMGenerator(model_path, run, processor)
    workers = min(8, max(0, (os.cpu_count() or 1) - 2)) if device.cuda else 0
    return HFGenerator(model, processor, run.eval.max_new_tokens, run.eval.greedy, workers)


def evaluate(run: RunConfig, model, processor, sets, ihash: str, device, model_path: str) -> list:
    """Score every eval set; zero-shot predictions are shared through a cache keyed by the run identity."""
    from clsrl_exp.evaluate import PredictionLog, evaluate_set

    run_dir = Path(run.run_dir)
    pred_path = run_dir / "predictions.jsonl"
    cached = run.train.kind == "none" and run.eval.cache_zeroshot
    if cached:  # zero-shot identity has no shots/train: k4 and k8 cells share one cache entry
        pred_path = Path(run.paths.cache) / "zeroshot" / ihash / "predictions.jsonl"
    from clsrl_exp.models import file_lock

    generator = _generator(run, model, processor, device, model_path)
    # cells that share the zero-shot cache (e.g. shots 1..16 under a parallel launcher) evaluate it one at a time
    with file_lock(pred_path.with_suffix(".lock")) if cached else contextlib.nullcontext():
        preds = PredictionLog(pred_path)
        results = [evaluate_set(generator, processor, s, run.method, preds, variant=run.eval.prompt,
                                image_size=run.model.image_size, batch_size=run.eval.batch_size,
                                limit=run.eval.limit) for s in sets]
    if cached and pred_path != run_dir / "predictions.jsonl":
        shutil.copyfile(pred_path, run_dir / "predictions.jsonl")
    return results


def shuffled_labels(examples: list, seed: int) -> list:
    """The shuffled-label control: the same examples with their labels permuted (prompts and images unchanged)."""
    import dataclasses
    import random

    labels = [ex.label for ex in examples]
    random.Random(f"control:{seed}").shuffle(labels)
    return [dataclasses.replace(ex, label=lab) for ex, lab in zip(examples, labels, strict=True)]


def _last_log(history: list[dict]) -> dict:
    """The last logged training metrics (numbers only) for the record."""
    last = next((h for h in reversed(history) if "loss" in h or "reward" in h), history[-1] if history else {})
    return {k: v for k, v in last.items() if isinstance(v, (int, float))}


def train(run: RunConfig, model_path: str, processor, examples, sets, device, backend: str, report_to: list[str]):
    """Train (resuming if a checkpoint exists) and return (live model, summary, checkpoint path)."""
    from clsrl_exp.evaluate import HFGenerator, PredictionLog, evaluate_set
    from clsrl_exp.train.callbacks import AccuracyCurve, WallClock, mean_completion_tokens
    from clsrl_exp.train.rows import grpo_dataset, sft_dataset, sft_rows

    run_dir = Path(run.run_dir)
    ckpt, done_file = run_dir / "checkpoint", run_dir / "train.json"
    if done_file.exists() and (ckpt / "config.json").exists():
        log.info("training already finished: %s", ckpt)
        return None, json.loads(done_file.read_text()), str(ckpt)

    trainer_dir = run_dir / "trainer"
    trainer_dir.mkdir(parents=True, exist_ok=True)
    clock = WallClock(trainer_dir / "wall.json")
    callbacks = [clock]
    curve = None
    if run.eval.curve_every and device.is_main:
        def curve_eval(model):
            gen = HFGenerator(model, processor, run.eval.max_new_tokens, greedy=True)
            out = []
            for s in sets:
                res = evaluate_set(gen, processor, s, run.method, PredictionLog(trainer_dir / "curve_tmp.jsonl"),
                                   variant=run.eval.prompt, image_size=run.model.image_size,
                                   batch_size=run.eval.batch_size, limit=run.eval.curve_limit, progress=False)
                (trainer_dir / "curve_tmp.jsonl").unlink(missing_ok=True)
                out.append({"dataset": s.dataset, "split": s.split, "accuracy": res.record()["accuracy"]})
            return out

        curve = AccuracyCurve(curve_eval, run.eval.curve_every)
        callbacks.append(curve)

    q, img = run.dataset.question, run.model.image_size
    if run.train.shuffle_reward_labels:
        examples = shuffled_labels(examples, run.seed)
        log.warning("control run: training labels are permuted across examples, rewards carry no label information")
    if run.train.kind == "grpo":
        from clsrl_exp.train.grpo import make_grpo_trainer

        trainer = make_grpo_trainer(run, model_path, processor, grpo_dataset(examples, run.method, q, img), device,
                                    str(trainer_dir), backend, report_to, callbacks)
    else:
        from clsrl_exp.train.sft import make_sft_trainer

        trainer = make_sft_trainer(run, model_path, processor, sft_dataset(sft_rows(examples, run.method, q), img),
                                   device, str(trainer_dir), report_to, callbacks)
    resume = last_checkpoint(trainer_dir)
    if resume:
        log.info("resuming training from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    summary = {"wall_s": round(clock.wall_s, 2), "steps": trainer.state.global_step,
               "mean_completion_tokens": mean_completion_tokens(trainer.state.log_history),
               "examples": len(examples), "kind": run.train.kind,
               "curve": curve.points if curve else [],
               "final_log": _last_log(trainer.state.log_history)}
    if device.is_main:
        trainer.save_model(str(ckpt))
        processor.save_pretrained(str(ckpt))
        atomic_write_json(done_file, summary)
        for old in trainer_dir.glob("checkpoint-*"):  # the final model is in checkpoint/; resume state no longer needed
            shutil.rmtree(old, ignore_errors=True)
    return trainer.model, summary, str(ckpt)
