"""Evaluation images/s: our evaluator vs the official script's settings on the same inputs.

Random weights never stop, so both stop after `answer_tokens` (a No-Thinking answer) through the same logits
processor; the official setting keeps its max_new_tokens=1024, batch 32, and per-batch preprocessing on the main
thread in dataset order (src/eval/test_qwen2vl_fewshot.py).
"""

from __future__ import annotations

import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from clsrl_exp.bench.hardware import sync


class _Stopping(LogitsProcessor):
    """Force EOS once `n` new tokens exist (a trained model's short answer); the prompt length is taken from the
    first call of each generate (it only grows within one call)."""

    def __init__(self, n: int, eos: int):
        self.n, self.eos, self.start = n, eos, None

    def __call__(self, input_ids, scores):
        if self.start is None or input_ids.shape[1] < self.start:
            self.start = input_ids.shape[1]
        if input_ids.shape[1] - self.start >= self.n:
            scores[:] = float("-inf")
            scores[:, self.eos] = 0.0
        return scores


def official(model, processor, examples, texts, image_size: int, answer_tokens: int, eos: int, cuda: bool) -> dict:
    """Batch 32, max_new_tokens 1024, preprocessing in the loop, no length sorting."""
    from clsrl_exp.data import load_image

    device = next(model.parameters()).device
    processor.tokenizer.padding_side = "left"
    sync(cuda)
    t0 = time.perf_counter()
    n = 0
    for i in range(0, len(examples), 32):
        batch = examples[i:i + 32]
        imgs = [load_image(ex.image_path, image_size) for ex in batch]
        inputs = processor(text=texts[i:i + 32], images=imgs, padding=True, return_tensors="pt").to(device)
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=1024, do_sample=False, temperature=None, top_p=None, top_k=None,
                           logits_processor=LogitsProcessorList([_Stopping(answer_tokens, eos)]))
        n += len(batch)
    sync(cuda)
    s = time.perf_counter() - t0
    return {"setting": "official (batch 32, max_new_tokens 1024)", "images": n, "seconds": s, "images_per_s": n / s}


def ours(model, processor, examples, method, image_size: int, batch_size: int, answer_tokens: int, eos: int,
         cuda: bool, workers: int) -> dict:
    """Our evaluator as a run uses it (length-sorted batches, worker processes for decoding + preprocessing)."""
    import tempfile
    from pathlib import Path

    from clsrl_exp.data import EvalSet
    from clsrl_exp.evaluate import EvalTask, PredictionLog, evaluate_set
    from clsrl_exp.generation.hf import HFGenerator
    from clsrl_exp.prompts import eval_prompt

    gen = HFGenerator(model=model, processor=processor, max_new_tokens=answer_tokens, greedy=True,
                      num_workers=workers, logits_processor=LogitsProcessorList([_Stopping(answer_tokens, eos)]))
    es = EvalSet(dataset="bench", split="test", question="What type of object is in the photo?",
                 examples=list(examples), missing=[])
    task = EvalTask(es, "eval", eval_prompt(method, "test", "eval"), eval_hash="bench")
    with tempfile.TemporaryDirectory() as d:
        sync(cuda)
        t0 = time.perf_counter()
        res = evaluate_set(gen, processor, task, PredictionLog(Path(d) / "p.jsonl"), image_size=image_size,
                           batch_size=batch_size, progress=False)
        sync(cuda)
        s = time.perf_counter() - t0
    return {"setting": f"ours (batch {batch_size}, {workers} workers, sorted)", "images": res.n, "seconds": s,
            "images_per_s": res.n / s, "mean_output_tokens": res.mean_output_tokens}
