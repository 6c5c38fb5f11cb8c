"""CPU smoke of the GPU benchmark: the same code (`python -m clsrl_exp.bench`) on the tiny model."""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli


@pytest.mark.slow
def test_bench_tiny_runs_every_part_and_writes_the_table(tmp_path):
    p = cli(["--tiny", "--out", str(tmp_path)], module="clsrl_exp.bench", timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads((tmp_path / "bench.json").read_text())
    variants = {(g["method"], g["variant"]) for g in out["grpo"]}
    assert ("nothink", "TRL defaults") in variants and any(m == "clsrl" for m, _ in variants)
    for g in out["grpo"]:
        assert g["step_s"] > 0 and g["floor_s"] > 0 and g["micro_batch"] * g["grad_accum"] == 8  # 2 prompts x 4
        assert g["generate_s"] <= g["step_s"]
    ours = [e for e in out["eval"] if e["setting"].startswith("ours")]
    assert len(ours) == 2 and all(e["images"] == 32 and e["images_per_s"] > 0 for e in ours)  # two batch sizes
    assert "GRPO step" in p.stdout and "images/s" in p.stdout and "ours / official" in p.stdout
