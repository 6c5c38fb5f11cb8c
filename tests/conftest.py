"""Shared fixtures: offline environment, composing the real configs, one tiny model per session, CLI runner.

Tests compose `conf/` exactly as `python -m clsrl_exp` does (lightning-hydra-template style) and point every
output at a temporary directory. The tiny Qwen2-VL and the synthetic datasets are built once per session.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def session_root(tmp_path_factory) -> Path:
    """Output root shared by the session: tiny model, warm start and synthetic data are built once."""
    return tmp_path_factory.mktemp("clsrl")


def compose(overrides: list[str], root: Path | None = None, *, hydra: bool = False):
    """Compose the real config tree with overrides (outputs under `root`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import clsrl_exp.config  # noqa: F401  (resolvers)

    extra = [f"paths.output_root={root}"] if root is not None else []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=[*overrides, *extra], return_hydra_config=hydra)


def run_config(overrides: list[str], root: Path):
    """(RunConfig, resolved container) for a composition, as the entry point builds them."""
    from omegaconf import OmegaConf

    from clsrl_exp.config import to_run_config

    cfg = compose(overrides, root)
    container = OmegaConf.to_container(cfg, resolve=True)
    return to_run_config(container), container


TINY = ["model=tiny-qwen2vl", "dataset=synthetic-colors", "logger=none", "rollout=hf"]


@pytest.fixture(scope="session")
def tiny_path(session_root) -> str:
    from clsrl_exp.models import resolve_model_path

    run, _ = run_config(TINY, session_root)
    return resolve_model_path(run.model, run.paths.cache)


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


@pytest.fixture(scope="session")
def shared(session_root, tiny_path) -> list[str]:
    """Overrides that reuse the session's tiny model and both synthetic datasets (generated here once, before any
    parallel subprocess would race to build them)."""
    from clsrl_exp.config import dataset_config
    from clsrl_exp.data import ensure_dataset

    run, _ = run_config(TINY, session_root)
    for name in ("synthetic-colors", "synthetic-shapes"):
        ensure_dataset(dataset_config(name), run.data.root)
    return [f"paths.cache={run.paths.cache}", f"data.root={run.data.root}"]
