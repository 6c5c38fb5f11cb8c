"""W&B: offline with no network and no key, the resolved Hydra config as the run's config, stable names/tags."""

from __future__ import annotations

import pytest
from helpers import TINY, cli, run_config


def test_init_tracker_passes_the_resolved_config_group_and_tags(tmp_path, monkeypatch):
    import wandb

    from clsrl_exp import runtime
    from clsrl_exp.runtime import Device

    seen = {}
    monkeypatch.setattr(wandb, "init", lambda **kw: seen.update(kw))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run, container = run_config([*TINY[:-2], "logger=wandb", "method=clsrl", "sweep_name=paper-fewshot"], tmp_path)
    assert runtime.init_tracker(run, container, Device(cuda=False), "abc123", "fewshot/dtd/clsrl") == ["wandb"]
    assert seen["config"]["train"]["beta"] == 0.04 and seen["config"]["method"]["name"] == "clsrl"
    assert "${" not in str(seen["config"])  # resolved, not interpolations
    assert seen["group"] == "paper-fewshot" and seen["id"] == "abc123" and seen["mode"] == "offline"
    assert {"clsrl", "synthetic-colors", "fewshot", "tiny-qwen2vl"} <= set(seen["tags"])
    # only rank 0 logs
    seen.clear()
    assert runtime.init_tracker(run, container, Device(cuda=False, world_size=2, rank=1), "x", "y") == ["none"]
    assert not seen


@pytest.mark.slow
def test_wandb_offline_run_needs_no_network_or_key(tmp_path):
    p = cli([*TINY[:-2], "rollout=hf", "logger=wandb", "method=nothink", "debug=fast"], tmp_path,
            env={"WANDB_API_KEY": "", "WANDB_MODE": "offline"})
    assert p.returncode == 0, p.stderr[-2000:]
    runs = list((tmp_path / "runs").rglob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
