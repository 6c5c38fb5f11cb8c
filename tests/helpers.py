"""Test helpers (plain functions and constants; fixtures live in conftest.py): compose the real configs, run the
CLI, the tiny-model overrides. Tests import them with `from helpers import ...` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
TINY = ["model=tiny-qwen2vl", "dataset=synthetic-colors", "logger=none", "rollout=hf"]


def compose(overrides: list[str], root: Path | None = None, *, hydra: bool = False, config_dir: Path | None = None):
    """Compose the real config tree with overrides (outputs under `root`); `config_dir` adds a user config folder
    to the search path (as `--config-dir` does)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import clsrl_exp.config  # noqa: F401  (resolvers)

    extra = [f"paths.output_root={root}"] if root is not None else []
    if config_dir is not None:
        extra.append(f"hydra.searchpath=[file://{config_dir}]")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=[*overrides, *extra], return_hydra_config=hydra)


def run_config(overrides: list[str], root: Path, **kw):
    """(RunConfig, resolved container) for a composition, as the entry point builds them."""
    from omegaconf import OmegaConf

    from clsrl_exp.config import to_run_config

    cfg = compose(overrides, root, **kw)
    container = OmegaConf.to_container(cfg, resolve=True)
    return to_run_config(container), container


def cli(args: list[str], root: Path | None = None, env: dict | None = None, timeout: int = 600,
        module: str = "clsrl_exp") -> subprocess.CompletedProcess:
    """Run `python -m <module> args` with outputs under `root`; the result's `.tail` (the end of stdout and
    stderr) is for assertion messages."""
    e = dict(os.environ, **(env or {}))
    if root is not None:
        e["CLSRL_OUTPUTS"] = str(root)
    r = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=e, capture_output=True, text=True,
                       timeout=timeout)
    r.tail = f"\n--- stdout ---\n{r.stdout[-3000:]}\n--- stderr ---\n{r.stderr[-3000:]}"
    return r


def one_row(df, **where):
    """The single row of a report table (pandas DataFrame) whose columns equal `where`; fails if none or several."""
    mask = df.index == df.index  # all True
    for key, value in where.items():
        mask &= (df[key] == value).to_numpy()
    sub = df[mask]
    assert len(sub) == 1, (where, sub)
    return sub.iloc[0]


def require(reason: str | None) -> None:
    """A test whose prerequisite is missing (`reason` says which and how to get it) fails under CI=true, where
    `.ci/run` installs every prerequisite, so a skip there would prove nothing; elsewhere it skips."""
    import pytest

    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"prerequisite missing in CI: {reason}")
    pytest.skip(reason)
