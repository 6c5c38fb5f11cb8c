"""Sweeps: a Hydra callback that tallies cells (done / skipped / failed) and a dry listing of a sweep's cells.

A sweep is a file in `sweeps/` (`conf/sweep` links there) with `hydra.mode: MULTIRUN` and `hydra.sweeper.params`;
command-line sweeps (`seed=1,2,3`) multiply it. Every cell lands in the run directory its config identity names, so
re-running a sweep skips finished cells and resumes interrupted ones.

The callback runs `on_job_end` in the process that ran the cell (also a submitit worker) and appends one line to
`<sweep dir>/cells.jsonl`; `on_multirun_end` (main process) prints the summary, writes `summary.json` and exits
non-zero if any cell failed. Under `accelerate launch` every rank runs the sweep; only rank 0 records.

    python -m clsrl_exp.sweep +sweep=paper-fewshot [overrides]   # list the cells, their run dirs and status
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from clsrl_exp.fileio import append_jsonl, atomic_write_json, read_jsonl

log = logging.getLogger(__name__)
LEDGER = "cells.jsonl"
SUMMARY = "summary.json"
STATUSES = ("done", "skipped", "failed")


def _is_main_rank() -> bool:
    """Rank 0 of a torchrun/accelerate launch or of a cell's Slurm tasks (or no launcher at all)."""
    from clsrl_exp.runtime import env_rank

    return env_rank() == 0


def append_ledger(path: Path, row: dict) -> None:
    """Append one cell's line to the sweep ledger (locked: cells end in parallel processes)."""
    append_jsonl(path, [row])


def _cell_status(job_return: Any) -> tuple[str, str | None]:
    """('done' | 'skipped' | 'failed', error message) from a Hydra JobReturn of `clsrl_exp.__main__.task`."""
    out = getattr(job_return, "_return_value", None)
    if job_return.status.name == "FAILED":  # an exception escaped the task function
        return "failed", f"{type(out).__name__}: {out}"
    if not isinstance(out, dict) or out.get("cell") not in STATUSES:
        return "failed", f"unexpected task return value: {str(out)[:200]}"
    return out["cell"], out.get("error")


class CellSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _is_main_rank():
            return
        ledger = Path(config.hydra.sweep.dir) / LEDGER
        if ledger.exists():  # one ledger per invocation; keep the previous one for reference
            ledger.replace(ledger.with_suffix(".prev.jsonl"))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if HydraConfig.get().mode != RunMode.MULTIRUN or not _is_main_rank():
            return
        status, error = _cell_status(job_return)
        hc = HydraConfig.get()
        run_dir = hc.runtime.output_dir
        row = {"status": status, "run_dir": run_dir, "overrides": list(hc.overrides.task), "error": error}
        if status == "failed":
            row["log"] = str(Path(run_dir) / f"{hc.job.name}.log")
        append_ledger(Path(config.hydra.sweep.dir) / LEDGER, row)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not _is_main_rank():
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        summary = summarize(sweep_dir)
        print(format_summary(summary), flush=True)
        if summary["failed"]:
            raise SystemExit(1)


def summarize(sweep_dir: Path) -> dict:
    """Count the ledger of the last invocation and write `<sweep dir>/summary.json`."""
    lines, bad = read_jsonl(sweep_dir / LEDGER)
    if bad:
        log.warning("%s: %d unreadable line(s) ignored", sweep_dir / LEDGER, bad)
    # one row per cell, its last word (a job that wrote its row and then died is also reported by the launcher)
    rows = list({tuple(r.get("overrides") or [r.get("run_dir")]): r for r in lines}.values())
    counts = {k: sum(r["status"] == k for r in rows) for k in STATUSES}
    summary = {"sweep_dir": str(sweep_dir), "cells": len(rows), **counts,
               "failed_cells": [r for r in rows if r["status"] == "failed"]}
    atomic_write_json(sweep_dir / SUMMARY, summary)
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"\nsweep {summary['sweep_dir']}: {summary['cells']} cells: {summary['done']} done, "
             f"{summary['skipped']} skipped, {summary['failed']} failed"]
    for r in summary["failed_cells"]:
        lines += [f"  FAILED {' '.join(r['overrides'])}", f"    {r.get('error')}", f"    log: {r.get('log')}",
                  f"    run dir: {r['run_dir']}"]
    lines.append(f"summary: {Path(summary['sweep_dir']) / SUMMARY}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- dry listing
def _covering(jobs: list[list[str]]) -> set[int]:
    """Indices of a few cells in which every `key=value` of the grid occurs at least once (greedy cover)."""
    todo = {o for job in jobs for o in job}
    chosen: set[int] = set()
    while todo:
        i = max(range(len(jobs)), key=lambda j: len(todo & set(jobs[j])))
        chosen.add(i)
        todo -= set(jobs[i])
    return chosen


def list_cells(overrides: list[str], sample: bool = False) -> list[dict]:
    """Expand a sweep (file params x command-line sweeps) into cells without running or creating anything.

    Mirrors Hydra's BasicSweeper: each `hydra.sweeper.params` entry becomes an override, the command-line overrides
    are appended (a key given on both replaces the file's), and the cartesian product gives the cells. Each cell is
    composed and resolved (~0.2 s each) to find its run directory and status; a cell that does not compose is
    listed with status `error` and the message, so a grid is checked before it is launched. `sample=True` composes
    only a few cells that together use every swept value (status `unchecked` for the others).

    Status: `complete` (nothing to do), `evaluate` (trained; N evaluations missing), `retrain` (its training data
    changed), `pending`, or the record's `running` / `failed` / `interrupted`. A cell with a record of its own reads
    its datasets' split definitions (`clsrl_exp.cells`): a missing dataset is listed as an error. `steps`: the
    optimizer steps a training cell will make (`clsrl_exp.plan.planned_steps`).
    """
    from clsrl_exp.cells import cell_state
    from clsrl_exp.compose import compose_config, compose_container, fixed_overrides, hydra_session, sweep_jobs
    from clsrl_exp.config import to_run_config
    from clsrl_exp.plan import planned_steps

    with hydra_session():
        base = compose_config(fixed_overrides(overrides), hydra=True)
        jobs = sweep_jobs(base, overrides)
        check = _covering(jobs) if sample else set(range(len(jobs)))
        cells = []
        for i, job in enumerate(jobs):
            cell = {"overrides": job, "run_dir": None, "status": "pending", "error": None, "steps": None}
            if i not in check:
                cells.append({**cell, "status": "unchecked"})
                continue
            try:
                container = compose_container(job)
                run = to_run_config(container)
                cell["run_dir"] = run.run_dir  # what run_cell writes to (paths.runs/<training identity>)
                cs = cell_state(run, container, listing=True)
                cell["status"], cell["missing_evals"] = cs.state, len(cs.missing)
                cell["steps"] = planned_steps(run)  # optimizer steps (official rule), known before data is read
            except Exception as e:  # noqa: BLE001 - list every broken cell, not just the first
                cell.update(status="error", error=f"{type(e).__name__}: {e}".splitlines()[0])
            cells.append(cell)
    return cells


def main(argv: list[str] | None = None) -> int:
    """`python -m clsrl_exp.sweep [--sample] +sweep=NAME [overrides]`: print the cells; exit 1 if any is broken."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "list":
        args = args[1:]
    sample = "--sample" in args
    cells = list_cells([a for a in args if a != "--sample"], sample=sample)
    for i, c in enumerate(cells):
        status = c["status"] + (f" ({c['missing_evals']} evals)" if c["status"] == "evaluate" else "")
        print(f"#{i:<3} {status:<9} {' '.join(o for o in c['overrides'] if not o.startswith('+sweep='))}")
        if c["status"] != "unchecked":
            steps = f"  ({c['steps']} steps)" if c.get("steps") is not None else ""
            print(f"      {c['error'] if c['status'] == 'error' else c['run_dir'] + steps}")
    counts = {s: sum(c["status"] == s for c in cells) for s in dict.fromkeys(c["status"] for c in cells)}
    print(f"{len(cells)} cells" + (f" ({', '.join(f'{n} {s}' for s, n in counts.items())})" if cells else ""))
    return 1 if counts.get("error") else 0


if __name__ == "__main__":
    raise SystemExit(main())
