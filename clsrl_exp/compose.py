"""Compose `conf/` outside `python -m clsrl_exp` (preflight, the dry sweep listing, export, benchmarks) exactly as
the entry point does: the same config dir, an optional user `--config-dir` on the search path, Hydra's own sweep
expansion.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from clsrl_exp.config import CONF_DIR, RunConfig, to_run_config
from clsrl_exp.errors import ConfigError


@contextlib.contextmanager
def hydra_session() -> Iterator[None]:
    """Hydra's global state initialised on `conf/` for the block (cleared before and after), so several
    `compose_config` calls share one initialisation."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            yield
    finally:
        GlobalHydra.instance().clear()


def compose_config(overrides: list[str], config_dir: str | None = None, hydra: bool = False):
    """The composed config (a DictConfig; with its `hydra` node if `hydra`); Hydra's own errors propagate."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    extra = [f"hydra.searchpath=[file://{Path(config_dir).resolve()}]"] if config_dir else []
    if GlobalHydra.instance().is_initialized():
        return compose("config", overrides=[*overrides, *extra], return_hydra_config=hydra)
    with hydra_session():
        return compose("config", overrides=[*overrides, *extra], return_hydra_config=hydra)


def compose_container(overrides: list[str], config_dir: str | None = None) -> dict:
    """One cell's resolved config as plain containers (no `hydra` node); a bad override is one `ConfigError`."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    try:
        cfg = compose_config(overrides, config_dir)
    except HydraException as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return container


def compose_run(overrides: list[str], config_dir: str | None = None) -> RunConfig:
    """The typed, validated run config of one cell; a bad override is one `ConfigError`."""
    return to_run_config(compose_container(overrides, config_dir))


def fixed_overrides(overrides: list[str]) -> list[str]:
    """The overrides that are not sweeps (`seed=1,2,3` is one): what every cell shares."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [o.input_line for o in OverridesParser.create().parse_overrides(overrides) if not o.is_sweep_override()]


def sweep_jobs(base, overrides: list[str]) -> list[list[str]]:
    """Every cell's overrides, as Hydra's BasicSweeper expands them: the sweep file's `hydra.sweeper.params` (from
    `base`, composed with its hydra node) x the command line's sweeps."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (base.hydra.sweeper.params or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + list(overrides))
    return [list(job) for job in BasicSweeper.split_arguments(parsed, None)[0]]
