"""Evaluation: batched greedy generation (HF or vLLM), resumable append-only predictions, lenient + strict scores.

Each prediction line holds the item id, the prompt variant, the output and both matches; it is written (and
fsynced) per batch, so a killed evaluation resumes with no duplicate or lost item. Images that are missing or
unreadable are skipped, counted and named in the result (never scored as wrong silently).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from clsrl_exp.config import MethodConfig
from clsrl_exp.prompts import user_messages
from clsrl_exp.rewards import lenient_match, strict_match
from clsrl_exp.train.rows import prompt_text

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    dataset: str
    split: str
    prompt_variant: str
    n: int = 0
    correct: int = 0
    correct_strict: int = 0
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    mean_output_tokens: float = 0.0

    def record(self) -> dict:
        acc = lambda c: round(100.0 * c / self.n, 2) if self.n else 0.0
        return {"dataset": self.dataset, "split": self.split, "n": self.n, "correct": self.correct,
                "skipped": self.skipped, "accuracy": acc(self.correct), "accuracy_strict": acc(self.correct_strict),
                "prompt_variant": self.prompt_variant, "skipped_examples": self.skipped_examples[:5],
                "wall_s": round(self.wall_s, 2), "mean_output_tokens": round(self.mean_output_tokens, 2)}


def eval_template(method: MethodConfig, split: str, variant: str) -> str:
    """The method's eval template for this split (official wording differs per setting), or its train template."""
    if variant == "train":
        return method.train_template
    return method.eval_templates.get(split, method.eval_templates["default"])


class PredictionLog:
    """Append-only JSONL keyed by (dataset, split, prompt_variant, id); a torn last line is dropped on open."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: dict[tuple, dict] = {}
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):  # killed mid-write: that item was never complete
                data = data[: data.rfind(b"\n") + 1]
                with open(self.path, "r+b") as fh:
                    fh.truncate(len(data))
            for line in data.decode().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.rows[self.key(row)] = row

    @staticmethod
    def key(row: dict) -> tuple:
        return row["dataset"], row["split"], row["prompt_variant"], row["id"]

    def done(self, dataset: str, split: str, variant: str) -> dict[str, dict]:
        return {k[3]: r for k, r in self.rows.items() if k[:3] == (dataset, split, variant)}

    def append(self, rows: list[dict]) -> None:
        with open(self.path, "a") as fh:
            fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            fh.flush()
            os.fsync(fh.fileno())
        for r in rows:
            self.rows[self.key(r)] = r


# ----------------------------------------------------------------------------------------------------- backends
class _Items:
    """Map-style dataset: (example, chat text) -> (example, image or None if unreadable)."""

    def __init__(self, items, image_size):
        self.items, self.image_size = items, image_size

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from clsrl_exp.data import load_image

        ex, text = self.items[i]
        try:
            return ex, text, load_image(ex.image_path, self.image_size)
        except Exception as e:  # unreadable file: skipped and reported, not scored
            return ex, text, e


class HFGenerator:
    """Batched HF generate with left padding; CPU-side image decoding + processing overlap the GPU via workers."""

    def __init__(self, model, processor, max_new_tokens: int, greedy: bool = True, num_workers: int = 0,
                 **generate_kwargs):
        self.model, self.processor = model, processor
        self.max_new_tokens, self.greedy, self.num_workers = max_new_tokens, greedy, num_workers
        self.generate_kwargs = generate_kwargs  # e.g. a logits processor in the benchmark
        processor.tokenizer.padding_side = "left"  # trap T10

    def _collate(self, chunk):
        """Worker side: decode, resize and process a small chunk; sequences come back unpadded."""
        ok = [(ex, t, img) for ex, t, img in chunk if not isinstance(img, Exception)]
        bad = [(ex, img) for ex, _, img in chunk if isinstance(img, Exception)]
        if not ok:
            return [], None, bad
        out = self.processor(text=[t for _, t, _ in ok], images=[img for _, _, img in ok], padding=True,
                             padding_side="left", return_tensors="pt")
        keep = out["attention_mask"].bool()
        seqs = {k: [row[m] for row, m in zip(out[k], keep, strict=True)] for k in out if k not in (
            "attention_mask", "pixel_values", "image_grid_thw")}
        return [ex for ex, _, _ in ok], {"seqs": seqs, "pixel_values": out["pixel_values"],
                                         "image_grid_thw": out["image_grid_thw"]}, bad

    def _merge(self, parts):
        """Main side: left-pad the chunks' sequences into one generation batch."""
        import torch

        pad_id = self.processor.tokenizer.pad_token_id
        keys = parts[0]["seqs"].keys()
        rows = {k: [r for p in parts for r in p["seqs"][k]] for k in keys}
        width = max(len(r) for r in rows["input_ids"])
        batch = {}
        for k, seqs in rows.items():
            fill = pad_id if k == "input_ids" else 0
            batch[k] = torch.stack([torch.cat([torch.full((width - len(r),), fill, dtype=r.dtype), r]) for r in seqs])
        batch["attention_mask"] = torch.stack([torch.cat([torch.zeros(width - len(r), dtype=torch.long),
                                                          torch.ones(len(r), dtype=torch.long)])
                                               for r in rows["input_ids"]])
        batch["pixel_values"] = torch.cat([p["pixel_values"] for p in parts])
        batch["image_grid_thw"] = torch.cat([p["image_grid_thw"] for p in parts])
        return batch

    def batches(self, items, image_size, batch_size):
        """Yield (examples, inputs, unreadable) per generation batch. Workers prepare chunks of up to 16 items in
        parallel (one worker per whole batch of 256 would serialise preprocessing) while the GPU generates."""
        from torch.utils.data import DataLoader

        chunk = max(1, min(16, batch_size)) if self.num_workers else batch_size
        loader = DataLoader(_Items(items, image_size), batch_size=chunk, shuffle=False,
                            num_workers=self.num_workers, collate_fn=self._collate,
                            prefetch_factor=max(2, 2 * batch_size // chunk // max(self.num_workers, 1))
                            if self.num_workers else None)
        exs, parts, bad = [], [], []
        for chunk_exs, inputs, chunk_bad in loader:
            bad += chunk_bad
            if inputs is not None:
                exs += chunk_exs
                parts.append(inputs)
            if len(exs) >= batch_size:
                yield exs, self._merge(parts), bad
                exs, parts, bad = [], [], []
        if exs or bad:
            yield exs, self._merge(parts) if parts else None, bad

    def generate(self, inputs) -> tuple[list[str], list[int]]:
        import torch

        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        sampling = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None} if self.greedy else {}
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, **sampling, **self.generate_kwargs)
        if was_training:
            self.model.train()
        new = out[:, inputs["input_ids"].shape[1]:].cpu()
        eos = set(_as_list(self.model.generation_config.eos_token_id)) | {self.processor.tokenizer.pad_token_id}
        lengths = [next((i + 1 for i, t in enumerate(row.tolist()) if t in eos), len(row)) for row in new]
        texts = self.processor.batch_decode(new, skip_special_tokens=True)
        return texts, lengths


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


# ----------------------------------------------------------------------------------------------------- evaluate
def spread(examples, limit: int):
    """`limit` items in a fixed pseudo-random order (by id hash), so a subset covers all classes.

    >>> from types import SimpleNamespace as E
    >>> [e.id for e in spread([E(id=str(i)) for i in range(6)], 3)] == [e.id for e in spread(
    ...     [E(id=str(i)) for i in reversed(range(6))], 3)]
    True
    """
    import hashlib

    return sorted(examples, key=lambda e: hashlib.sha1(e.id.encode()).hexdigest())[:limit]


def chat_texts(processor, examples, method: MethodConfig, question: str, template: str) -> list[str]:
    """Prompt strings after the chat template, with ONE image placeholder each (processor/vLLM expand it)."""
    msgs = [user_messages(prompt_text(template, question, ex.options), system_prompt=method.system_prompt,
                          image_first=method.image_first) for ex in examples]
    return [processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in msgs]


def evaluate_set(generator, processor, eval_set, method: MethodConfig, log_: PredictionLog, *, variant: str,
                 image_size: int, batch_size: int, limit: int | None = None, progress: bool = True) -> EvalResult:
    """Score one eval set, resuming from `log_`; returns counts over all (previously and newly) scored items."""
    template = eval_template(method, eval_set.split, variant)
    examples = spread(eval_set.examples, limit) if limit else list(eval_set.examples)
    res = EvalResult(eval_set.dataset, eval_set.split, variant)
    res.skipped_examples = list(eval_set.missing[:5])
    res.skipped = len(eval_set.missing) if not limit else 0
    done = log_.done(eval_set.dataset, eval_set.split, variant)
    todo = [ex for ex in examples if ex.id not in done]
    texts = chat_texts(processor, todo, method, eval_set.question, template) if todo else []
    order = sorted(range(len(todo)), key=lambda i: len(texts[i]))  # similar lengths batch together: less padding
    items = [(todo[i], texts[i]) for i in order]
    t0, n_new, tokens = time.perf_counter(), 0, []
    if items:
        log.info("eval %s/%s: %d items (%d already scored), batch %d", eval_set.dataset, eval_set.split, len(items),
                 len(done), batch_size)
    for batch_examples, inputs, bad in generator.batches(items, image_size, batch_size):
        for ex, err in bad:
            res.skipped += 1
            if len(res.skipped_examples) < 5:
                res.skipped_examples.append(f"{ex.id}: {type(err).__name__}: {err}"[:200])
        if not batch_examples:
            continue
        outputs, lengths = generator.generate(inputs)
        tokens += lengths
        log_.append([{"dataset": eval_set.dataset, "split": eval_set.split, "prompt_variant": variant, "id": ex.id,
                      "label": ex.label, "output": out, "lenient": lenient_match(out, ex.label),
                      "strict": strict_match(out, ex.label), "output_tokens": n}
                     for ex, out, n in zip(batch_examples, outputs, lengths, strict=True)])
        n_new += len(batch_examples)
        if progress:
            rate = n_new / max(time.perf_counter() - t0, 1e-9)
            log.info("  %s/%s %d/%d items, %.1f items/s", eval_set.dataset, eval_set.split, n_new, len(items), rate)
    res.wall_s = time.perf_counter() - t0
    scored = log_.done(eval_set.dataset, eval_set.split, variant)
    wanted = {ex.id for ex in examples}
    rows = [r for i, r in scored.items() if i in wanted]
    res.n = len(rows)
    res.correct = sum(r["lenient"] for r in rows)
    res.correct_strict = sum(r["strict"] for r in rows)
    lens = [r.get("output_tokens", 0) for r in rows]
    res.mean_output_tokens = sum(lens) / len(lens) if lens else 0.0
    return res
