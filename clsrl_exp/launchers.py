"""Sweeps whose cells are submitit jobs (local processes or Slurm: `hydra/launcher=local|slurm`): one change to
hydra-submitit-launcher's launchers.

A cell whose job dies without returning (killed,
out of memory, `os._exit`, a Slurm time limit) is a failed cell of the sweep, not the end of it. hydra-submitit-
launcher collects `job.results()` for every job and raises on the first dead one, so the others' results and the
sweep summary are lost; here every job is waited for, a dead one is recorded (its `result.json` marked failed, a
line in the sweep ledger naming its submitit log) and the sweep ends with its summary and a non-zero exit.
Finding out that a Slurm job died needs `sacct` (or the stand-in `.ci/slurm.sh install` puts in /usr/local/bin).

Hydra instantiates launchers only from classes it discovered in the `hydra_plugins` package, so the change is
applied to hydra-submitit-launcher's own `launch` when `clsrl_exp.__main__` imports this module (`install()`); the
presets keep the plugin's classes (and the submitted jobs unpickle them as usual).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus

log = logging.getLogger(__name__)


class _CollectAll:
    """Mixin for `BaseSubmititLauncher`: wait for every job, turn a dead one into a failed cell."""

    def launch(self, job_overrides, initial_job_idx):
        import submitit

        original = submitit.AutoExecutor.map_array

        def map_array(executor, fn, *iterables):  # keep the jobs instead of letting launch() collect them
            jobs = original(executor, fn, *iterables)
            return [_Deferred(j) for j in jobs]

        submitit.AutoExecutor.map_array = map_array
        try:
            deferred = type(self)._clsrl_original_launch(self, job_overrides, initial_job_idx)
        finally:
            submitit.AutoExecutor.map_array = original
        return [self._result(d.job, list(overrides)) for d, overrides in zip(deferred, job_overrides, strict=True)]

    def _result(self, job, overrides: list[str]) -> JobReturn:
        try:
            return job.results()[0]
        except Exception as e:  # noqa: BLE001 - UncompletedJobError, FailedJobError, ...: the cell died
            return self._dead(job, overrides, e)

    def _dead(self, job, overrides: list[str], error: Exception) -> JobReturn:
        from clsrl_exp.schema import mark, read_raw
        from clsrl_exp.sweep import LEDGER, append_ledger

        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        message = f"job {job.job_id} died without returning ({type(error).__name__}: {reason})"[:500]
        run_dir = self._run_dir(overrides)
        record = read_raw(run_dir) if run_dir is not None else None
        # a cell that finished its record and died on exit is done (its result stands); any other is failed
        status = "done" if record is not None and record.get("status") == "complete" else "failed"
        if status == "failed" and record is not None:
            mark(run_dir, "failed", message)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        append_ledger(sweep_dir / LEDGER, {"status": status, "run_dir": str(run_dir), "overrides": overrides,
                                           "error": message, "log": str(job.paths.stderr)})
        log.error("cell %s: %s; log: %s", " ".join(overrides), message, job.paths.stderr)
        ret = JobReturn(overrides=overrides, status=JobStatus.COMPLETED)
        ret.return_value = {"cell": status, "run_dir": str(run_dir), "error": message}
        return ret

    def _run_dir(self, overrides: list[str]) -> Path | None:
        """The cell's run directory (the sweep's subdir, derived from the cell's identity)."""
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            return (Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)).resolve()
        except Exception:  # noqa: BLE001 - the ledger line still names the overrides
            return None


class _Deferred:
    """What `launch()` collects in place of a result: the job, kept for `_CollectAll._result`."""

    def __init__(self, job):
        self.job = job

    def results(self):
        return [self]


def install() -> None:
    """Make every submitit launcher wait for all its jobs and report dead ones as failed cells (idempotent).

    Hydra's plugin discovery re-executes the plugin modules, so this runs after it (`clsrl_exp.__main__` first
    initialises Hydra's plugin registry) and patches the class Hydra will instantiate."""
    from hydra.core.plugins import Plugins

    Plugins.instance()  # discovery first: it replaces the plugin module's classes
    base = sys.modules["hydra_plugins.hydra_submitit_launcher.submitit_launcher"].BaseSubmititLauncher
    if getattr(base, "_clsrl_original_launch", None) is None:
        base._clsrl_original_launch = base.launch
    base.launch = _CollectAll.launch
    for name in ("_result", "_dead", "_run_dir"):
        setattr(base, name, getattr(_CollectAll, name))
