"""`python -m clsrl_exp.bench.ranks`: the wall time of one evaluation set with 1 vs N ranks (torchrun; gloo on a CPU).

Zero-shot on the tiny model through the real entry point: the same items scored once by one process and once by N
torchrun ranks that shard the set (`clsrl_exp/evaluate.py`). The tiny model and the synthetic data are built once;
each run then starts from a copy without predictions (zero-shot predictions are cached per identity, so a shared
output root would score nothing the second time). Prints, per rank count, the evaluation's wall time from its
record, the process wall time, and whether the predictions equal the 1-rank ones item by item; writes ranks.json.

    python -m clsrl_exp.bench.ranks                       # 200 items, batch 16, 1 vs 2 ranks (make bench-ranks)
    python -m clsrl_exp.bench.ranks --ranks 1,2 --batch-size 64 eval.limit=100
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from clsrl_exp.schema import RESULT_FILE, read_record

ARGS = ["model=tiny-qwen2vl", "dataset=synthetic-colors", "method=zeroshot", "logger=none", "rollout=hf"]


def run(world: int, root: Path, args: list[str]) -> subprocess.CompletedProcess:
    """One zero-shot cell in `root`: a plain process for world 1, else `torchrun --nproc_per_node world`."""
    launch = [sys.executable, "-m"] if world == 1 else [
        str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", str(world), "-m"]
    env = dict(os.environ, CLSRL_OUTPUTS=str(root), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run([*launch, "clsrl_exp", *args], env=env, capture_output=True, text=True)


def predictions(root: Path) -> dict[str, str]:
    (log,) = (root / "runs").rglob("predictions.jsonl")
    return {row["id"]: row["output"] for row in map(json.loads, log.read_text().splitlines())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", default="1,2", help="rank counts to time (the first is the reference)")
    ap.add_argument("--batch-size", type=int, default=16, help="eval.batch_size (a rank gets whole batches)")
    ap.add_argument("--out", default="outputs/bench-ranks")
    ap.add_argument("overrides", nargs="*", help="extra config overrides for every run (e.g. eval.limit=64)")
    a = ap.parse_args(argv)
    out = Path(a.out).resolve()
    args = [*ARGS, f"eval.batch_size={a.batch_size}", *a.overrides]
    prep = out / "prep"
    shutil.rmtree(out, ignore_errors=True)
    p = run(1, prep, [*args, "eval.limit=4"])  # builds the tiny model and the dataset once
    if p.returncode:
        print(f"error: preparing the tiny model failed:\n{p.stderr[-2000:]}", file=sys.stderr)
        return 1
    rows, reference = [], None
    for world in (int(w) for w in a.ranks.split(",")):
        root = out / f"ranks-{world}"
        shutil.copytree(prep, root, ignore=shutil.ignore_patterns("runs", "zeroshot"))
        t0 = time.perf_counter()
        p = run(world, root, args)
        wall = time.perf_counter() - t0
        if p.returncode:
            print(f"error: the {world}-rank run failed:\n{p.stderr[-2000:]}", file=sys.stderr)
            return 1
        (path,) = (root / "runs").rglob(RESULT_FILE)
        (ev,) = read_record(path.parent).evals
        preds = predictions(root)
        reference = reference or preds
        rows.append({"ranks": world, "items": ev.n, "eval_s": ev.wall_s, "process_s": round(wall, 1),
                     "identical_to_first": preds == reference})
    (out / "ranks.json").write_text(json.dumps(rows, indent=1))
    print(f"zero-shot evaluation, tiny model, batch {a.batch_size}, one torch thread per rank ({os.cpu_count()} CPUs)")
    print(f"{'ranks':>5} {'items':>6} {'eval s':>7} {'process s':>9}  predictions = first row's")
    for r in rows:
        print(f"{r['ranks']:>5} {r['items']:>6} {r['eval_s']:>7.1f} {r['process_s']:>9.1f}  {r['identical_to_first']}")
    print(f"wrote {out / 'ranks.json'}")
    return 0 if all(r["identical_to_first"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
