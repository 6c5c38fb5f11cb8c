"""`python -m clsrl_exp.bench.learning`: does rule-based GRPO teach the tiny VLM, and what does thinking cost?

Runs the demo recipe through the real entry point (`python -m clsrl_exp experiment=demo/...`) for seeds x
{No-Thinking, CLS-RL}, plus the shuffled-label control of each arm (rewards computed against permuted labels), two
processes at a time (one torch thread each), and prints held-out accuracy before (warm start) / after, steps, train
time per step, wall time and mean completion length. Writes learning.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from clsrl_exp.schema import RESULT_FILE, read_record


def cell(method: str, seed: int, root: Path, extra: list[str], control: bool = False) -> dict:
    """Run one demo cell in a subprocess and read its result record."""
    name = f"{method}-s{seed}" + ("-control" if control else "")
    args = [f"experiment=demo/{method}", "dataset=synthetic-colors", f"seed={seed}", "eval.datasets=null", *extra]
    if control:
        args.append("train.shuffle_reward_labels=true")
    env = dict(os.environ, CLSRL_OUTPUTS=str(root), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "clsrl_exp", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log = root / f"{name}.log"
    log.write_text(proc.stdout + proc.stderr)
    recs = [read_record(p.parent) for p in (root / "demo" / "runs").rglob(RESULT_FILE)]
    rec = next((r for r in recs if r is not None and r.run.method == method and r.run.seed == seed
                and r.identity.get("train", {}).get("shuffle_reward_labels", False) == control), None)
    if proc.returncode or rec is None or rec.status != "complete" or rec.train is None:
        return {"name": name, "error": f"exit {proc.returncode}, see {log}"}
    curve = [p for p in rec.train.curve if p["dataset"] == "synthetic-colors"]
    return {"name": name, "method": method, "seed": seed, "control": control,
            "before": curve[0]["accuracy"] if curve else None, "after": rec.evals[0].accuracy,
            "best": max((p["accuracy"] for p in curve), default=None), "steps": rec.train.steps,
            "train_s": rec.train.wall_s, "process_s": round(wall, 1),
            "mean_completion_tokens": rec.train.mean_completion_tokens, "curve": curve}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--methods", default="nothink,clsrl")
    ap.add_argument("--out", default="outputs/bench-learning")
    ap.add_argument("--controls", default="nothink,clsrl", help="arms that also run the shuffled-label control")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="extra config overrides for every cell (e.g. train.max_steps=200)")
    a = ap.parse_args(argv)
    root = Path(a.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    # build the warm-started model once before the parallel cells (they would wait on its lock anyway)
    jobs = [(m, int(s), False) for m in a.methods.split(",") for s in a.seeds.split(",")]
    jobs += [(m, int(a.seeds.split(",")[0]), True) for m in a.controls.split(",") if m]
    first, rest = jobs[0], jobs[1:]
    rows = [cell(*first[:2], root, a.overrides, first[2])]
    with ThreadPoolExecutor(a.jobs) as pool:
        rows += list(pool.map(lambda j: cell(j[0], j[1], root, a.overrides, j[2]), rest))
    (root / "learning.json").write_text(json.dumps(rows, indent=1))
    print(f"{'run':<22} {'before':>7} {'after':>7} {'best':>7} {'steps':>6} {'train s':>8} {'s/step':>7} "
          f"{'process s':>9} {'tokens':>7}")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<22} ERROR {r['error']}")
            continue
        print(f"{r['name']:<22} {r['before']:>7.1f} {r['after']:>7.1f} {r['best']:>7.1f} {r['steps']:>6} "
              f"{r['train_s']:>8.0f} {r['train_s'] / max(r['steps'], 1):>7.2f} {r['process_s']:>9.0f} "
              f"{r['mean_completion_tokens'] or 0:>7.1f}")
    print(f"wrote {root / 'learning.json'}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
