"""Sweeps: a Hydra callback that tallies cells (done / skipped / failed) and a dry listing of a sweep's cells.

The callback runs `on_job_end` in the process that ran the cell (also a submitit worker) and appends one line to
`<sweep dir>/cells.jsonl`; `on_multirun_end` (main process) prints the summary, writes `summary.json` and exits
non-zero if any cell failed.

    python -m clsrl_exp.sweep +sweep=paper-fewshot [overrides]   # list the cells, their run dirs and status
"""

from __future__ import annotations

import fcntl
import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger(__name__)
LEDGER = "cells.jsonl"


def _append(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(row) + "\n")
        fh.flush()


class CellSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        ledger = Path(config.hydra.sweep.dir) / LEDGER
        if ledger.exists():  # one ledger per invocation; keep the previous one for reference
            ledger.replace(ledger.with_suffix(".prev.jsonl"))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            return
        out = job_return._return_value if hasattr(job_return, "_return_value") else None
        status = (out or {}).get("cell", "failed") if isinstance(out, dict) else "failed"
        if job_return.status.name == "FAILED":
            status = "failed"
        run_dir = HydraConfig.get().runtime.output_dir
        row = {"status": status, "run_dir": run_dir, "overrides": list(HydraConfig.get().overrides.task),
               "error": (out or {}).get("error") if isinstance(out, dict) else str(job_return._return_value)}
        if status == "failed":
            row["log"] = str(Path(run_dir) / f"{HydraConfig.get().job.name}.log")
        _append(Path(config.hydra.sweep.dir) / LEDGER, row)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = [json.loads(x) for x in (sweep_dir / LEDGER).read_text().splitlines()] if (
            sweep_dir / LEDGER).exists() else []
        counts = {k: sum(r["status"] == k for r in rows) for k in ("done", "skipped", "failed")}
        summary = {**counts, "cells": len(rows), "failed_cells": [r for r in rows if r["status"] == "failed"]}
        (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        print(f"\nsweep {sweep_dir}: {len(rows)} cells: {counts['done']} done, {counts['skipped']} skipped, "
              f"{counts['failed']} failed", flush=True)
        for r in summary["failed_cells"]:
            print(f"  FAILED {' '.join(r['overrides'])}\n    {r.get('error')}\n    log: {r.get('log')}", flush=True)
        if counts["failed"]:
            raise SystemExit(1)


def list_cells(overrides: list[str]) -> list[dict]:
    """Expand a sweep (file params x command-line sweeps) into cells without running them."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from clsrl_exp.config import CONF_DIR, run_relpath
    from clsrl_exp.results import read_record

    parser = OverridesParser.create()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        base = compose("config", overrides=[o for o in overrides if "," not in o], return_hydra_config=True)
        params = [f"{k}={v}" for k, v in (base.hydra.sweeper.params or {}).items()]
        parsed = parser.parse_overrides(params + overrides)
        batches = BasicSweeper.split_arguments(parsed, None)[0]
        cells = []
        for job in batches:
            cfg = compose("config", overrides=list(job))
            container = OmegaConf.to_container(cfg, resolve=True)
            rel = run_relpath(container)
            run_dir = Path(container["paths"]["runs"]) / rel
            rec = read_record(run_dir) or {}
            cells.append({"overrides": list(job), "run_dir": str(run_dir), "status": rec.get("status", "pending")})
    return cells


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "list":
        args = args[1:]
    cells = list_cells(args)
    for i, c in enumerate(cells):
        print(f"#{i:<3} {c['status']:<9} {' '.join(o for o in c['overrides'] if not o.startswith('+sweep='))}")
        print(f"      {c['run_dir']}")
    print(f"{len(cells)} cells")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
