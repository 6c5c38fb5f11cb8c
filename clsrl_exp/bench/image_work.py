"""The CPU image work of GRPO steps, TRL's own path vs the image cache (issue #18), and of evaluation, on any CPU.

One GRPO step's image work as TRL 1.16 does it: the step's rows are read (our loader opens, decodes and resizes
the images), the prompts are deep-copied and tokenized with their images for generation (TRL's own
`GRPOTrainer._tokenize_prompts`), and the processor runs again over the same images for scoring (the call in
`GRPOTrainer._generate_and_score_completions`, repeated here line for line). The same steps - same images, same
order - go through both paths in one process, interleaved, and must produce identical tensors. The real 384-px
processor settings need no weights: the processor is built offline around a small tokenizer (text tokenization is
a little cheaper than with Qwen's tokenizer; the image work is the same).
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import replace
from types import SimpleNamespace

from clsrl_exp.bench.fixtures import table


def _timed(fn, calls: list):
    """`fn` (a `_process_images`) that appends (seconds, image slots) per call to `calls`."""
    from transformers.image_utils import make_flat_list_of_images

    def timed(images, **kw):
        t0 = time.perf_counter()
        try:
            return fn(images, **kw)
        finally:
            calls.append((time.perf_counter() - t0, len(make_flat_list_of_images(images))))

    return timed


def trl_step(processor, rows: list[dict]):
    """The processor work of one GRPO generation batch, as GRPOTrainer does it (trl 1.16): returns
    (prompt ids, multimodal fields for generation, scoring inputs)."""
    from trl import GRPOTrainer
    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    images = [[r["image"]] for r in rows]
    prompts = [prepare_multimodal_messages(r["prompt"], images=im) for r, im in zip(rows, images, strict=True)]
    trainer = SimpleNamespace(processing_class=processor, _is_vlm=True, environment_factories=None, tools=None,
                              chat_template=None, chat_template_kwargs={})
    ids, _, fields = GRPOTrainer._tokenize_prompts(trainer, copy.deepcopy(prompts))  # _generate deep-copies
    texts = [apply_chat_template({"prompt": p}, processor)["prompt"] for p in prompts]
    scored = processor(images=images, text=texts, padding=True, return_tensors="pt")
    return ids, fields, scored


def same_inputs(a, b) -> bool:
    """Equal prompt ids and bit-identical tensors (same keys, dtypes, values) of two `trl_step` results."""
    import torch

    def same(x, y):
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            return type(x) is type(y) and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
        return x == y

    (ids_a, fa, sa), (ids_b, fb, sb) = a, b
    return (ids_a == ids_b and fa.keys() == fb.keys() and all(same(fa[k], fb[k]) for k in fa)
            and sa.keys() == sb.keys() and all(same(sa[k], sb[k]) for k in sa))


def grpo_image_work(run, processor, examples, warmup, *, prompts: int, generations: int, epochs: int,
                    seed: int = 0) -> dict:
    """Per-step milliseconds of both paths over `epochs` passes of `examples` (`prompts` x `generations` image slots
    per step), split into phases; epoch 1 is a cold cache, later epochs a warm one. One step over the `warmup`
    examples (not in `examples`) first warms up each path's code."""
    import random

    from clsrl_exp.train.imagecache import cached_processor, capacity, decoded_cache_size
    from clsrl_exp.train.rows import grpo_dataset

    q = run.dataset.question
    off = replace(run, train=replace(run.train, image_cache=False))
    on = replace(run, train=replace(run.train, image_cache=True))
    size = run.model.image_size
    paths = {"trl": (copy.copy(processor), grpo_dataset(examples, run.method, q, size, decoded_cache_size(off))),
             "cached": (cached_processor(processor, capacity(on)),
                        grpo_dataset(examples, run.method, q, size, decoded_cache_size(on)))}
    cache = paths["cached"][0]._process_images  # the ImageCache (its counters), before timing wraps it
    for proc, _ in paths.values():
        warm = grpo_dataset(warmup, run.method, q, size)
        trl_step(proc, warm.__getitems__([i for i in range(len(warmup)) for _ in range(generations)]))
    cache.computed = cache.reused = cache.passed = 0
    calls = {name: [] for name in paths}  # (seconds, slots) inside _process_images: the image part of both calls
    for name, (proc, _) in paths.items():
        proc._process_images = _timed(proc._process_images, calls[name])
    rng, steps, identical = random.Random(seed), [], True
    for epoch in range(epochs):
        order = rng.sample(range(len(examples)), len(examples))
        for s in range(len(examples) // prompts):
            idx = [i for i in order[s * prompts:(s + 1) * prompts] for _ in range(generations)]
            results = {}
            for name, (proc, data) in paths.items():
                n_calls, computed = len(calls[name]), cache.computed
                c0, t0 = time.process_time(), time.perf_counter()
                rows = data.__getitems__(idx)  # the DataLoader's fetch of one generation batch
                t1 = time.perf_counter()
                results[name] = trl_step(proc, rows)
                t2, c2 = time.perf_counter(), time.process_time()
                steps.append({"path": name, "epoch": epoch + 1, "rows_ms": 1e3 * (t1 - t0),
                              "processor_ms": 1e3 * (t2 - t1),
                              "images_ms": 1e3 * sum(sec for sec, _ in calls[name][n_calls:]),
                              "total_ms": 1e3 * (t2 - t0), "cpu_ms": 1e3 * (c2 - c0),
                              "processed": cache.computed - computed if name == "cached"  # images run through the
                              else sum(n for _, n in calls[name][n_calls:])})  # image processor in this step
            identical = identical and same_inputs(results["trl"], results["cached"])
    summary = []
    for name in paths:
        for label, sel in (("epoch 1", lambda e: e == 1), ("epochs 2+", lambda e: e > 1)):
            mine = [x for x in steps if x["path"] == name and sel(x["epoch"])]
            if mine:
                summary.append({"path": name, "epochs": label, "steps": len(mine), **{
                    k: statistics.median(x[k] for x in mine) for k in ("rows_ms", "processor_ms", "images_ms",
                                                                        "total_ms", "cpu_ms", "processed")}})
    return {"slots_per_step": prompts * generations, "unique_per_step": prompts, "train_images": len(examples),
            "epochs": epochs, "identical": identical, "cache": {"computed": cache.computed, "reused": cache.reused,
                                                         "passed": cache.passed, "held": len(cache.entries),
                                                         "held_mb": cache.nbytes / 2**20},
            "summary": summary, "steps": steps}


def eval_image_work(run, processor, examples, chunk: int = 16) -> dict:
    """Milliseconds per image of the evaluator's preprocessing worker (open, decode, resize, processor over a
    chunk of `chunk`): what `clsrl_exp.generation.hf` runs in worker processes while the GPU generates."""
    from clsrl_exp.evaluate import chat_texts
    from clsrl_exp.generation.hf import HFGenerator, _Items
    from clsrl_exp.prompts import eval_prompt

    gen = HFGenerator(model=None, processor=processor, max_new_tokens=1, greedy=True, num_workers=0)
    texts = chat_texts(processor, examples, eval_prompt(run.method, "test", "eval"), run.dataset.question)
    items = _Items(list(zip(examples, texts, strict=True)), run.model.image_size)
    t0 = time.perf_counter()
    for i in range(0, len(items), chunk):
        gen._collate([items[j] for j in range(i, min(i + chunk, len(items)))])
    ms = 1e3 * (time.perf_counter() - t0) / len(items)
    return {"images": len(items), "ms_per_image": ms, "images_per_s_per_worker": 1e3 / ms}


def render(r: dict) -> str:
    """The per-step table (medians), the saving and the evaluation worker's rate."""
    g = r["grpo"]
    rows = [("path", "epochs", "steps", "rows (decode) ms", "gen + score calls ms", "of which images ms",
             "step ms", "step CPU ms", "images processed")]
    for s in g["summary"]:
        rows.append((s["path"], s["epochs"], s["steps"], f"{s['rows_ms']:.0f}", f"{s['processor_ms']:.0f}",
                     f"{s['images_ms']:.0f}", f"{s['total_ms']:.0f}", f"{s['cpu_ms']:.0f}", f"{s['processed']:.0f}"))
    head = (f"GRPO image work per step on {r['device']} ({r['threads']} torch thread(s)): {r['model']} processor "
            f"({r['image_size']} px, {r['image_tokens']} visual tokens), {g['slots_per_step']} image slots = "
            f"{g['unique_per_step']} prompts x {g['slots_per_step'] // g['unique_per_step']}, "
            f"{g['train_images']} training images ({r['source']} JPEGs), {g['epochs']} epochs")
    out = [head, "", table(rows), "", f"cached path fed identical prompt ids and pixels: {g['identical']}"]
    by = {(s["path"], s["epochs"]): s for s in g["summary"]}
    for ep in ("epoch 1", "epochs 2+"):
        if ("trl", ep) in by and ("cached", ep) in by:
            t, c = by[("trl", ep)], by[("cached", ep)]
            work = {k: v["rows_ms"] + v["images_ms"] for k, v in (("t", t), ("c", c))}
            out.append(f"{ep}: image work (decode + image processor) {work['t']:.0f} -> {work['c']:.0f} ms per step "
                       f"({work['t'] / work['c']:.1f}x less); whole step {t['total_ms']:.0f} -> {c['total_ms']:.0f} ms "
                       f"(saves {t['total_ms'] - c['total_ms']:.0f} ms)")
    c = g["cache"]
    out.append(f"cache: {c['computed']} images processed, {c['reused']} slots reused, holds {c['held']} images "
               f"({c['held_mb']:.0f} MB)")
    e = r.get("eval")
    if e:
        out.append(f"evaluation worker: {e['ms_per_image']:.1f} ms per image (open, decode, resize, processor) -> "
                   f"{e['images_per_s_per_worker']:.0f} images/s per worker process")
    return "\n".join(out)
