"""Start-time checks of a command line, before Hydra starts a job and before any data or model work.

`python -m clsrl_exp ...` first composes the config it was given (for a sweep: its first cell), validates it
(`clsrl_exp.config.validate`), proves the output locations can be written and the tracker settings can work. Every
failure is ONE `error:` line and its exit code (`clsrl_exp.errors`); nothing is created but the output root itself.
Informational commands (`--help`, `--cfg`, `--info`, ...) skip the checks.
"""

from __future__ import annotations

import os
from pathlib import Path

from clsrl_exp.errors import ConfigError, OutputError, UserError

INFO_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc",
              "--version", "--experimental-rerun"}
VALUE_FLAGS = {"--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp", "--package", "-p"}


def parse_argv(argv: list[str]) -> tuple[list[str], str | None, bool, bool]:
    """(overrides, --config-dir, multirun flag, informational command) of a command line.

    >>> parse_argv(["-m", "--config-dir", "my", "method=nothink", "seed=1,2"])
    (['method=nothink', 'seed=1,2'], 'my', True, False)
    >>> parse_argv(["--cfg", "job"])[3]
    True
    """
    overrides, config_dir, multirun, info = [], None, False, False
    i = 0
    while i < len(argv):
        a = argv[i]
        flag, _, value = a.partition("=") if a.startswith("--") else (a, "", "")
        if flag in INFO_FLAGS:
            info = True
        elif a in ("-m", "--multirun"):
            multirun = True
        elif flag in VALUE_FLAGS:
            if not value:
                i += 1
                value = argv[i] if i < len(argv) else ""
            if flag in ("--config-dir", "-cd"):
                config_dir = value
        elif not a.startswith("-"):
            overrides.append(a)
        i += 1
    return overrides, config_dir, multirun, info


def first_cell(overrides: list[str], config_dir: str | None) -> tuple[list[str], object]:
    """The overrides of the first cell a command would run (a sweep's first combination) and the composed base
    config (with its hydra node, for the sweep folder)."""
    from clsrl_exp.compose import compose_config, fixed_overrides, sweep_jobs

    fixed = fixed_overrides(overrides)
    base = compose_config(fixed, config_dir, hydra=True)
    jobs = sweep_jobs(base, overrides)
    return (jobs[0] if jobs else fixed), base


def _writable(path: Path, what: str) -> None:
    """The nearest existing folder on the way to `path` accepts a new file (nothing but a probe is written)."""
    from clsrl_exp.fileio import check_writable

    path = Path(path).expanduser()
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file, not a folder")
        check_writable(existing, what)
    except OSError as e:
        raise OutputError(f"{what} {path} cannot be written ({e.strerror or e}): point CLSRL_OUTPUTS or "
                          "paths.output_root at a writable folder") from None


def preflight(argv: list[str]) -> None:
    """Raise the `UserError` the command would stop with, or return when it can start."""
    overrides, config_dir, multirun, info = parse_argv(argv)
    if info:
        return
    if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        from clsrl_exp.runtime import check_single_process_launch

        check_single_process_launch()  # e.g. `accelerate launch --cpu --num_processes 2`: one process, not two
    from omegaconf import OmegaConf

    from clsrl_exp.compose import compose_config
    from clsrl_exp.config import to_run_config
    from clsrl_exp.runtime import check_tracker

    try:
        job, base = first_cell(overrides, config_dir)
        cfg = compose_config(job, config_dir)
        container = OmegaConf.to_container(cfg, resolve=True)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - Hydra/OmegaConf errors: their message names the key and the options
        raise ConfigError(_one_message(e)) from None
    run = to_run_config(container)
    checks = [(run.paths.output_root, "the output root (paths.output_root)"),
              (Path(run.run_dir).parent, "the run folder (paths.runs)"), (run.paths.cache, "the cache (paths.cache)")]
    if multirun or OmegaConf.select(base, "hydra.mode", default=None) == "MULTIRUN":
        checks.append((OmegaConf.select(base, "hydra.sweep.dir"), "the sweep folder (hydra.sweep.dir)"))
    for path, what in checks:
        _writable(Path(os.fspath(path)), what)
    check_tracker(run.logger)


def _one_message(e: Exception) -> str:
    """Hydra's and OmegaConf's messages without their advice to set HYDRA_FULL_ERROR."""
    text = str(e).replace("Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.", "")
    return f"{text.strip()}\n(python -m clsrl_exp --help lists the config groups and their options)"
