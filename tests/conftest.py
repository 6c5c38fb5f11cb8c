"""Shared fixtures: offline environment, one tiny model per session, the synthetic datasets built once.

Tests compose `conf/` exactly as `python -m clsrl_exp` does (lightning-hydra-template style) and point every
output at a temporary directory; the plain helpers (compose, run_config, cli, TINY) are in helpers.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import TINY, require, run_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def session_root(tmp_path_factory) -> Path:
    """Output root shared by the session: tiny model, warm start and synthetic data are built once."""
    return tmp_path_factory.mktemp("clsrl")


@pytest.fixture(scope="session")
def tiny_path(session_root) -> str:
    from clsrl_exp.models import resolve_model_path

    run, _ = run_config(TINY, session_root)
    return resolve_model_path(run.model, run.paths.cache)


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


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The local one-node Slurm cluster (`bash .ci/slurm.sh start`); returns its default partition."""
    import shutil
    import subprocess

    from helpers import REPO

    status = subprocess.run(["bash", str(REPO / ".ci" / "slurm.sh"), "status"], capture_output=True, text=True)
    sacct = shutil.which("sacct")
    reason = None
    if status.returncode != 0:
        reason = "no local Slurm cluster: run `bash .ci/slurm.sh install && bash .ci/slurm.sh start` (.ci/run does)"
    elif not sacct or "clsrl-slurm sacct stand-in" not in open(sacct, errors="replace").read():
        reason = f"`sacct` on PATH is {sacct}, not the stand-in .ci/slurm.sh installs in /usr/local/bin"
    require(reason)
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):  # would reach every task
        os.environ.pop(key, None)
    return "debug"


@pytest.fixture(scope="session")
def torchrun() -> str:
    import shutil
    import sys

    path = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    require(None if path else "torchrun is not installed beside this Python")
    return path
