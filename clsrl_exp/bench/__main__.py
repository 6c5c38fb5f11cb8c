"""`python -m clsrl_exp.bench [--tiny | --images]`: paper-scale GRPO steps and evaluation throughput, against the floor.

GRPO (16 prompts x 4 completions per optimizer step, paper hyperparameters) through our training entry:
  ours (bf16 weights, no checkpointing, micro-batch sweep) vs TRL's defaults (fp32 weights + bf16 autocast,
  gradient checkpointing), No-Thinking (8 tokens) and thinking (256 tokens) completions, phase split.
Evaluation: our evaluator vs the official script's settings on the same images and prompts.
Floors: FLOPs over the measured matmul rate + weight reads over the measured copy bandwidth (same run).
Prints one table and writes bench.json to --out (default $OUT or outputs/bench).
`--images` (any CPU, no model): the CPU image work of GRPO steps with the real processor settings, TRL's own path vs
the image cache (train.image_cache), and the evaluator's per-image preprocessing; writes bench_images.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from clsrl_exp.bench import eval_throughput, fixtures, grpo_step, hardware

log = logging.getLogger("clsrl_exp.bench")


def bench_run(model: str, method: str, out: Path):
    """The run config the benchmark times (a DTD cell of `model` x `method`, outputs under `out`)."""
    from clsrl_exp.compose import compose_run

    return compose_run([f"model={model}", f"method={method}", "dataset=dtd", "logger=none", "rollout=hf",
                        f"paths.output_root={out}"])


def grpo_floor(params: dict, hidden: int, vocab: int, prompt_tokens: float, patches: float, length: int,
               rate: float, bandwidth: float, sequences: int) -> float:
    """Seconds one optimizer step needs at least: train fwd+bwd (3x), reference forward, generation prefill as
    FLOPs at the matmul rate; decoding reads every weight once per new token at the copy bandwidth."""
    body = 2 * params["lm_body"] * sequences * (prompt_tokens + length)
    vision = 2 * params["vision"] * sequences * patches
    head = 2 * hidden * vocab * sequences * length  # logits only for completion tokens
    forward = body + vision + head
    prefill = 2 * params["lm_body"] * sequences * prompt_tokens + vision
    return (3 * forward + forward + prefill) / rate + length * 2 * params["total"] / bandwidth


def eval_floor(params: dict, prompt_tokens: float, patches: float, rate: float) -> float:
    """Images/s a prefill-bound evaluation can reach at most (answers of a few tokens)."""
    return rate / (2 * params["lm_body"] * prompt_tokens + 2 * params["vision"] * patches)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke: the tiny model, short lengths, few images")
    ap.add_argument("--model", default=None, help="model option (default qwen2vl-2b; tiny-qwen2vl with --tiny)")
    ap.add_argument("--out", default=os.environ.get("OUT") or "outputs/bench")
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps after one warm-up step")
    ap.add_argument("--nothink-len", type=int, default=8)
    ap.add_argument("--think-len", type=int, default=256)
    ap.add_argument("--micro-batches", default="8,16,32", help="our micro-batch sizes to try (completions)")
    ap.add_argument("--eval-images", type=int, default=None, help="default 768 (64 with --images)")
    ap.add_argument("--eval-batches", default="256", help="our evaluator's batch sizes to time (comma list)")
    ap.add_argument("--skip", default="", help="comma list of: cache-off,defaults,think,eval")
    ap.add_argument("--images", action="store_true", help="CPU: image work per GRPO step, TRL's path vs the cache")
    ap.add_argument("--train-images", type=int, default=None,
                    help="training images: GRPO steps sample from these (default: all, a new image almost every slot; "
                         "16 = every timed step revisits them, as epochs 2+ do); --images: epoch size (default 128)")
    ap.add_argument("--epochs", type=int, default=3, help="--images: passes over them (epoch 1 = cold cache)")
    ap.add_argument("--prompts", type=int, default=None, help="--images: prompts per step (train.prompts_per_step)")
    ap.add_argument("--source", default="500x375", help="--images: WxH of the JPEGs on disk (resized to 384)")
    ap.add_argument("--threads", type=int, default=1, help="--images: torch threads (the per-core cost)")
    a = ap.parse_args(argv)
    if a.images:
        a.eval_images = 64 if a.eval_images is None else a.eval_images
        a.train_images = a.train_images or 128
        return images_main(a)
    a.eval_images = 768 if a.eval_images is None else a.eval_images
    if not a.tiny:
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA GPU is visible: the paper-scale benchmark (Qwen2-VL-2B shapes) needs one; on a CPU "
                  "run `python -m clsrl_exp.bench --tiny` (make bench)", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    skip = set(filter(None, a.skip.split(",")))
    pps, names = None, None
    if a.tiny:  # same code, CPU-sized: 2 prompts x 4 per step, 8 option names, 16 images
        a.model = a.model or "tiny-qwen2vl"
        a.steps, a.nothink_len, a.think_len, a.eval_images, a.eval_batches = 1, 4, 16, 32, "8,32"
        a.micro_batches, pps, names = "8", 2, fixtures.NAMES[:8]
    a.model = a.model or "qwen2vl-2b"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    from clsrl_exp import models, runtime

    device = runtime.setup_device()
    cuda = device.cuda
    rate, bw = hardware.matmul_rate(cuda), hardware.copy_bandwidth(cuda)
    log.info("measured: matmul %.0f TFLOP/s, copy %.0f GB/s", rate / 1e12, bw / 1e9)
    run = bench_run(a.model, "nothink", out / "runs")
    path = (models.resolve_model_path(run.model, run.paths.cache) if run.model.path is None
            else fixtures.build_random_model(run.model, out / f"model-{a.model}", cuda))
    processor = models.load_processor(path, run.model)
    exs = fixtures.examples(max(16 * (a.steps + 1), a.eval_images), run.model.image_size, out / "images",
                            names=names)
    result = {"device": _device_name(cuda), "model": a.model, "matmul_tflops": rate / 1e12, "copy_gbs": bw / 1e9,
              "grpo": [], "eval": []}

    def attempt(method: str, name: str, r) -> None:
        """Time one variant; an OOM or crash is recorded and the benchmark goes on (partial JSON kept)."""
        try:
            row = grpo_step.time_grpo(name, r, path, processor, exs[:a.train_images], device, str(out / "trainer"))
            result["grpo"].append({"method": method, **row})
            log.info("%s %s: %.2f s/step (gen %.2f, ref/score %.2f, update %.2f), peak %s GB", method, name,
                     row["step_s"], row["generate_s"], row["score_ref_s"], row["update_s"], row["peak_gb"])
        except Exception as e:  # noqa: BLE001 - e.g. CUDA OOM at a large micro batch
            log.error("%s %s failed: %s", method, name, f"{type(e).__name__}: {e}"[:300])
            result["failed"].append({"method": method, "variant": name, "error": f"{type(e).__name__}: {e}"[:300]})
            import gc

            gc.collect()
            if cuda:
                import torch

                torch.cuda.empty_cache()
        (out / "bench.json").write_text(json.dumps(result, indent=1, default=str))

    result["failed"] = []
    for mb in [int(x) for x in a.micro_batches.split(",")]:
        attempt("nothink", f"ours mb{mb}", grpo_step.variant_run(run, micro_batch_size=mb, length=a.nothink_len,
                                                                 steps=a.steps, prompts_per_step=pps))
    best = min(result["grpo"], key=lambda g: g["step_s"]) if result["grpo"] else {"micro_batch": 8}
    if "cache-off" not in skip:  # before/after of the image cache in the same process (issue #18)
        attempt("nothink", f"ours mb{best['micro_batch']}, image cache off", grpo_step.variant_run(
            run, micro_batch_size=best["micro_batch"], length=a.nothink_len, steps=a.steps, prompts_per_step=pps,
            image_cache=False))
    if "defaults" not in skip:
        attempt("nothink", "TRL defaults", grpo_step.variant_run(run, trl_defaults=True, length=a.nothink_len,
                                                                 steps=a.steps, prompts_per_step=pps))
    if "think" not in skip:  # longer completions need more memory: halve the micro batch until it fits
        think = bench_run(a.model, "clsrl", out / "runs")
        mb = best["micro_batch"]
        while mb >= 4:
            n = len(result["grpo"])
            attempt("clsrl", f"ours mb{mb}", grpo_step.variant_run(think, micro_batch_size=mb, length=a.think_len,
                                                                   steps=a.steps, prompts_per_step=pps))
            if len(result["grpo"]) > n:
                break
            mb //= 2

    model = models.load_model(path, run.model, cuda)
    params = hardware.param_counts(model)
    hidden, vocab = model.config.text_config.hidden_size, model.config.text_config.vocab_size
    from clsrl_exp.evaluate import chat_texts
    from clsrl_exp.lengths import image_tokens
    from clsrl_exp.prompts import eval_prompt

    q = "What type of object is in the photo?"
    texts = chat_texts(processor, exs[: a.eval_images], eval_prompt(run.method, "test", "eval"), q)
    n_img = image_tokens(run.model.image_size, run.model.min_pixels, run.model.max_pixels)
    text_lens = [len(processor.tokenizer(t)["input_ids"]) - 1 + n_img for t in texts[:64]]
    prompt_tokens = sum(text_lens) / len(text_lens)
    patches = 4 * n_img
    for g in result["grpo"]:
        g["floor_s"] = grpo_floor(params, hidden, vocab, prompt_tokens, patches, g["completion_len"], rate, bw,
                                  sequences=g["micro_batch"] * g["grad_accum"] * device.world_size)
        g["x_floor"] = g["step_s"] / g["floor_s"]
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    if "eval" not in skip:
        model.eval()
        workers = runtime.preprocessing_workers(device)
        ev = exs[: a.eval_images]
        result["eval"].append(eval_throughput.official(model, processor, ev, texts, run.model.image_size,
                                                       a.nothink_len, eos, cuda))
        for batch in [int(b) for b in a.eval_batches.split(",")]:
            result["eval"].append(eval_throughput.ours(model, processor, ev, run.method, run.model.image_size,
                                                       batch, a.nothink_len, eos, cuda, workers))
        floor = eval_floor(params, prompt_tokens, patches, rate)
        for e in result["eval"]:
            e["floor_images_per_s"] = floor
            e["of_floor"] = e["images_per_s"] / floor
    result.update(params=params, prompt_tokens=prompt_tokens, image_tokens=n_img, wall_s=time.perf_counter() - t_start)
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    print(render(result), flush=True)
    print(f"\nwrote {out / 'bench.json'} ({result['wall_s']:.0f} s)")
    return 0


def images_main(a) -> int:
    """`--images`: GRPO image work per step (TRL's path vs the cache, same images, interleaved) + eval worker rate."""
    import torch

    from clsrl_exp.bench import image_work
    from clsrl_exp.lengths import image_tokens

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model = a.model or "qwen2vl-2b"
    run = bench_run(model, "nothink", out / "runs")
    processor = fixtures.offline_processor(run.model, out / f"processor-{model}")
    w, h = (int(x) for x in a.source.split("x"))
    prompts = a.prompts or run.train.prompts_per_step
    n = max(a.train_images, prompts)
    exs = fixtures.examples(n + 2 + a.eval_images, run.model.image_size, out / f"images-{a.source}", source=(w, h))
    m = run.model
    result = {"device": _device_name(False), "threads": a.threads, "model": model, "image_size": m.image_size,
              "image_tokens": image_tokens(m.image_size, m.min_pixels, m.max_pixels), "source": a.source,
              "grpo": image_work.grpo_image_work(run, processor, exs[:n], exs[n:n + 2], prompts=prompts,
                                                 generations=run.train.num_generations, epochs=a.epochs)}
    if a.eval_images:
        result["eval"] = image_work.eval_image_work(run, processor, exs[n + 2:])
    (out / "bench_images.json").write_text(json.dumps(result, indent=1))
    print(image_work.render(result), flush=True)
    print(f"\nwrote {out / 'bench_images.json'}")
    return 0 if result["grpo"]["identical"] else 1


def _device_name(cuda: bool) -> str:
    import platform

    import torch

    return torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()})"


def render(r: dict) -> str:
    rows = [("GRPO step", "variant", "weights", "ckpt", "mb x acc", "s/step", "gen s", "ref/score s", "update s",
             "tok/s", "peak GB", "floor s", "x floor")]
    for g in r["grpo"]:
        rows.append((f"{g['method']} ({g['completion_len']} tok)", g["variant"], g["weights"],
                     "on" if g["checkpointing"] else "off", f"{g['micro_batch']}x{g['grad_accum']}",
                     f"{g['step_s']:.2f}", f"{g['generate_s']:.2f}", f"{g['score_ref_s']:.2f}", f"{g['update_s']:.2f}",
                     f"{g['tokens_per_s']:.0f}", "-" if g["peak_gb"] is None else f"{g['peak_gb']:.1f}",
                     f"{g['floor_s']:.2f}", f"{g['x_floor']:.1f}"))
    head = (f"{r['device']} | {r['model']} ({r['params']['total'] / 1e9:.2f} B params) | matmul "
            f"{r['matmul_tflops']:.0f} TFLOP/s, copy {r['copy_gbs']:.0f} GB/s | prompt {r['prompt_tokens']:.0f} tokens "
            f"({r['image_tokens']} visual)")
    parts = [head, "", fixtures.table(rows)]
    parts += [f"FAILED {f['method']} {f['variant']}: {f['error']}" for f in r.get("failed", [])]
    by = {g["variant"]: g for g in r["grpo"] if g["method"] == "nothink"}
    mine = [g for g in r["grpo"] if g["method"] == "nothink" and g["variant"].startswith("ours")]
    ours = min((g for g in mine if g.get("image_cache", True)), key=lambda g: g["step_s"], default=None)
    off = next((g for g in mine if not g.get("image_cache", True)), None)
    if "TRL defaults" in by and ours:
        ref = by["TRL defaults"]["step_s"]
        parts.append(f"\nNo-Thinking step: ours {ours['step_s']:.2f} s vs TRL defaults {ref:.2f} s -> "
                     f"{ref / ours['step_s']:.2f}x faster")
    if ours and off:
        parts.append(f"image cache: {off['step_s']:.2f} s/step off -> {ours['step_s']:.2f} s/step on "
                     f"(ref/score {off['score_ref_s']:.2f} -> {ours['score_ref_s']:.2f} s, generate "
                     f"{off['generate_s']:.2f} -> {ours['generate_s']:.2f} s)")
    if r["eval"]:
        erows = [("evaluation", "images", "s", "images/s", "floor img/s", "of floor")]
        for e in r["eval"]:
            erows.append((e["setting"], e["images"], f"{e['seconds']:.1f}", f"{e['images_per_s']:.1f}",
                          f"{e['floor_images_per_s']:.0f}", f"{100 * e['of_floor']:.0f}%"))
        parts += ["", fixtures.table(erows)]
        best = max(r["eval"][1:], key=lambda e: e["images_per_s"], default=None)
        if best:
            parts.append(f"\nours / official: {best['images_per_s'] / r['eval'][0]['images_per_s']:.2f}x")
    return "\n".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
