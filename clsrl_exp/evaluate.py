"""Evaluation: any generation backend, resumable append-only predictions, lenient + strict scores per eval set.

An `EvalTask` is one evaluation a cell asks for (an eval set, a prompt, its `eval_hash`). Each prediction line
holds the eval hash, dataset, split, prompt variant, item id, output, both matches and the options the item was
shown (the report's think/answer consistency reads them), plus the prefilled start of the reply for an empty-think
prompt; it is written (and fsynced) per batch, so a killed evaluation resumes with no duplicate or lost item.
Images that are missing or unreadable are skipped, counted and named in the result (never scored as wrong
silently).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clsrl_exp.fileio import append_jsonl
from clsrl_exp.prompts import PromptSpec, render_chat
from clsrl_exp.rewards import lenient_match, strict_match
from clsrl_exp.runtime import check_stop
from clsrl_exp.schema import EvalEntry, make_eval

log = logging.getLogger(__name__)


@dataclass
class EvalTask:
    """One evaluation of a model: an eval set asked with one prompt; `eval_hash` keys its predictions."""

    eval_set: Any  # clsrl_exp.data.EvalSet
    variant: str
    prompt: PromptSpec
    eval_hash: str
    identity: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.eval_set.dataset}/{self.eval_set.split}" + (
            f" [{self.variant}]" if self.variant != "eval" else "")


class PredictionLog:
    """Append-only JSONL keyed by (eval_hash, id); a torn last line is dropped on open.

    Lines written before evaluations had their own hash (schema 1) are keyed by (dataset, split, variant, id).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: dict[tuple, dict] = {}
        if self.path.exists():
            import fcntl

            with open(self.path, "r+b") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)  # other ranks append to the same log: read whole lines only
                try:
                    data = fh.read()
                    if data and not data.endswith(b"\n"):  # killed mid-write: that item was never complete
                        data = data[: data.rfind(b"\n") + 1]
                        fh.truncate(len(data))
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
            bad = 0
            for line in data.decode(errors="replace").splitlines():
                if line.strip():
                    try:
                        row = json.loads(line)
                        self.rows[self.key(row)] = row
                    except (ValueError, KeyError, TypeError):  # an edited or corrupted line: that item is redone
                        bad += 1
            if bad:
                log.warning("%s: %d unreadable line(s) ignored; their items are scored again", self.path, bad)

    @staticmethod
    def key(row: dict) -> tuple:
        if row.get("eval_hash"):
            return row["eval_hash"], row["id"]
        return row["dataset"], row["split"], row["prompt_variant"], row["id"]

    def done(self, eval_hash: str) -> dict[str, dict]:
        """Scored rows of one evaluation, by item id (an unreadable image's `skipped` line is not scored)."""
        return {k[1]: r for k, r in self.rows.items() if len(k) == 2 and k[0] == eval_hash and "skipped" not in r}

    def skipped(self, eval_hash: str) -> dict[str, dict]:
        """Items of one evaluation whose image could not be read (last attempt), by item id."""
        return {k[1]: r for k, r in self.rows.items() if len(k) == 2 and k[0] == eval_hash and "skipped" in r}

    def append(self, rows: list[dict]) -> None:
        """Append whole lines (locked and fsynced: several ranks share one log; `fileio.append_jsonl`)."""
        append_jsonl(self.path, rows)
        for r in rows:
            self.rows[self.key(r)] = r


def spread(examples, limit: int):
    """`limit` items in a fixed pseudo-random order (by id hash), so a subset covers all classes.

    >>> from types import SimpleNamespace as E
    >>> [e.id for e in spread([E(id=str(i)) for i in range(6)], 3)] == [e.id for e in spread(
    ...     [E(id=str(i)) for i in reversed(range(6))], 3)]
    True
    """
    return sorted(examples, key=lambda e: hashlib.sha1(e.id.encode()).hexdigest())[:limit]


def chat_texts(processor, examples, prompt: PromptSpec, question: str) -> list[str]:
    """Prompt strings after the chat template, with ONE image placeholder each (processor/vLLM expand it)."""
    return [render_chat(processor, prompt, question, ex.options, getattr(ex, "problem", None)) for ex in examples]


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not enabled or not total, dynamic_ncols=True,
                mininterval=2.0, leave=False)


def shard_items(items: list, batch_size: int, rank: int, world: int) -> list:
    """This rank's share of the items: whole generation batches, batch b to rank b mod world, so every batch (and so
    every greedy prediction) is the one a single process would make.

    >>> shard_items(list(range(7)), 2, 1, 2)
    [2, 3, 6]
    """
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    return [it for b in batches[rank::world] for it in b]


def generate_set(generator, processor, task: EvalTask, log_: PredictionLog, *, image_size: int, batch_size: int,
                 limit: int | None = None, progress: bool = True, shard: tuple[int, int] = (0, 1)) -> tuple[int, float]:
    """Generate the items of `task` not yet in `log_` (this rank's shard of them) and append each batch to the log;
    unreadable images are logged as skipped (and tried again on a rerun). Returns (items handled, seconds)."""
    eval_set = task.eval_set
    examples = spread(eval_set.examples, limit) if limit else list(eval_set.examples)
    done = log_.done(task.eval_hash)
    todo = [ex for ex in examples if ex.id not in done]
    texts = chat_texts(processor, todo, task.prompt, eval_set.question) if todo else []
    order = sorted(range(len(todo)), key=lambda i: len(texts[i]))  # similar lengths batch together: less padding
    items = shard_items([(todo[i], texts[i]) for i in order], batch_size, *shard)
    if items and progress:
        part = f", shard {shard[0]} of {shard[1]}" if shard[1] > 1 else ""
        log.info("eval %s: %d items (%d already scored%s), batch %d", task.name, len(items), len(done), part,
                 batch_size)
    # an empty-think prompt prefills the start of the reply: the model's output (what is scored, as the official
    # eval scripts decode only generated tokens) continues it; the line keeps both, the reply = prefill + output
    prefill = {"prefill": task.prompt.prefill} if task.prompt.prefill else {}
    head = {"eval_hash": task.eval_hash, "dataset": eval_set.dataset, "split": eval_set.split,
            "prompt_variant": task.variant}
    t0 = time.perf_counter()
    with _progress(len(items), f"eval {task.name}", progress) as bar:
        for batch_examples, inputs, bad in generator.batches(items, image_size, batch_size):
            check_stop(f"during the evaluation of {task.name} (every finished batch is saved in {log_.path})")
            if bad:
                log_.append([{**head, "id": ex.id, "skipped": f"{type(err).__name__}: {err}"[:200]} for ex, err in bad])
            bar.update(len(bad))
            if not batch_examples:
                continue
            outputs, lengths = generator.generate(inputs)
            log_.append([{**head, "id": ex.id, "label": ex.label, "output": out,
                          "lenient": lenient_match(out, ex.label), "strict": strict_match(out, ex.label),
                          "output_tokens": n, "options": list(ex.options), **prefill}
                         for ex, out, n in zip(batch_examples, outputs, lengths, strict=True)])
            bar.update(len(batch_examples))
    return len(items), time.perf_counter() - t0


def score_set(task: EvalTask, log_: PredictionLog, *, limit: int | None = None, backend: str | None = None,
              wall_s: float = 0.0) -> EvalEntry:
    """The evaluation's entry from the prediction log (every rank's lines): lenient and strict accuracy over the
    scored items, missing and unreadable images counted and named."""
    eval_set = task.eval_set
    wanted = {ex.id for ex in (spread(eval_set.examples, limit) if limit else eval_set.examples)}
    rows = [r for i, r in log_.done(task.eval_hash).items() if i in wanted]
    bad = [r for i, r in log_.skipped(task.eval_hash).items() if i in wanted]
    missing = [] if limit else list(eval_set.missing)
    lens = [r.get("output_tokens", 0) for r in rows]
    return make_eval(eval_set.dataset, eval_set.split, task.variant, n=len(rows),
                     correct=sum(r["lenient"] for r in rows), correct_strict=sum(r["strict"] for r in rows),
                     skipped=len(missing) + len(bad), eval_hash=task.eval_hash, backend=backend,
                     skipped_examples=(missing + [f"{r['id']}: {r['skipped']}" for r in bad])[:5],
                     wall_s=round(wall_s, 2), mean_output_tokens=round(sum(lens) / len(lens), 2) if lens else 0.0,
                     identity=task.identity, classes=list(getattr(eval_set, "classes", [])))


def evaluate_set(generator, processor, task: EvalTask, log_: PredictionLog, *, image_size: int, batch_size: int,
                 limit: int | None = None, progress: bool = True, backend: str | None = None) -> EvalEntry:
    """Score one eval set in this process, resuming from `log_`; counts over all (previously and newly) scored
    items."""
    new, wall = generate_set(generator, processor, task, log_, image_size=image_size, batch_size=batch_size,
                             limit=limit, progress=progress)
    entry = score_set(task, log_, limit=limit, backend=backend, wall_s=wall)
    if progress:
        _summary(task, entry, new, wall)
    return entry


def _summary(task: EvalTask, entry: EvalEntry, new: int, wall: float) -> None:
    rate = f", {new / wall:.1f} items/s" if new and wall > 0 else ""
    log.info("eval %s: accuracy %.2f (strict %.2f) on %d items (%d new%s), %d skipped, %.0f s", task.name,
             entry.accuracy, entry.accuracy_strict, entry.n, new, rate, entry.skipped, wall)


def evaluate_tasks(run, backend, model, processor, tasks: list[EvalTask], thash: str, device,
                   model_path: str | None) -> list[EvalEntry]:
    """Score every task of a cell with `backend` (a `Generator` class) into `<run_dir>/predictions.jsonl`.

    Several ranks share the work: each generates a disjoint shard (whole batches) and appends to the one log (lines
    are appended under a lock); rank 0 then scores from the complete log and returns the entries (other ranks
    return []). Zero-shot predictions are shared between cells through a cache keyed by the model
    (`<paths.cache>/zeroshot/<training hash>/`): k1..k16 zero-shot cells are one model, evaluated once; cells
    sharing the cache evaluate it one at a time (rank 0 holds a file lock) and append the rows of their own
    evaluations to their run directory's log.
    """
    import contextlib

    from clsrl_exp.fileio import file_lock
    from clsrl_exp.runtime import barrier
    from clsrl_exp.schema import PREDICTIONS_FILE

    if not tasks:
        return []
    run_dir = Path(run.run_dir)
    pred_path = run_dir / PREDICTIONS_FILE
    cached = run.train.kind == "none" and run.eval.cache_zeroshot
    if cached:
        pred_path = Path(run.paths.cache) / "zeroshot" / thash / PREDICTIONS_FILE
    world, rank = device.world_size, device.rank
    generator = backend(run, model=model, processor=processor, model_path=model_path, device=device)
    shared = file_lock(pred_path.with_suffix(".lock")) if device.is_main else contextlib.nullcontext()
    walls, news = {}, {}
    try:
        with shared:
            barrier(world)  # every rank starts once rank 0 holds the shared log
            # one snapshot of what is done, read by every rank before any rank appends: the ranks must split the
            # same remaining items into the same shards (a rank that read later would see another's new lines,
            # shard a shorter list and leave items to nobody)
            done = PredictionLog(pred_path)
            barrier(world)
            for t in tasks:
                news[t.eval_hash], walls[t.eval_hash] = generate_set(generator, processor, t, done,
                                                       image_size=run.model.image_size,
                                                       batch_size=run.eval.batch_size, limit=run.eval.limit,
                                                       shard=(rank, world))
            barrier(world)  # every shard is on disk
            if not device.is_main:
                return []
            preds = PredictionLog(pred_path)
            entries = [score_set(t, preds, limit=run.eval.limit, backend=run.eval.backend,
                                 wall_s=walls[t.eval_hash]) for t in tasks]
    finally:
        generator.close()
    for t, e in zip(tasks, entries, strict=True):
        _summary(t, e, news[t.eval_hash], walls[t.eval_hash])
    if cached:
        own = PredictionLog(run_dir / PREDICTIONS_FILE)
        wanted = {t.eval_hash for t in tasks}
        own.append([r for k, r in preds.rows.items() if len(k) == 2 and k[0] in wanted and k not in own.rows])
    return entries
