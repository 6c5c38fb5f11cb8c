"""Real images end to end: Fashion-MNIST (Debian's dataset-fashion-mnist, installed by .ci/run) prepared into the
CoOp layout and scored zero-shot by the tiny model through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import cli, require

SOURCE = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
def test_zero_shot_on_a_few_hundred_real_images(tmp_path):
    require(None if SOURCE.exists() else f"no {SOURCE}: apt-get install dataset-fashion-mnist (done by .ci/run)")
    data = tmp_path / "data"
    p = cli(["fashion-mnist", "--root", str(data), "--train-per-class", "4", "--test-per-class", "30"],
            module="clsrl_exp.data.prepare")
    assert p.returncode == 0, p.stderr
    p = cli(["model=tiny-qwen2vl", "dataset=fashion-mnist", "method=zeroshot", "logger=none", "rollout=hf",
             f"data.root={data}", "eval.max_new_tokens=8", "eval.batch_size=50"], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    (rec_path,) = (tmp_path / "runs").rglob("result.json")
    rec = json.loads(rec_path.read_text())
    assert rec["status"] == "complete" and rec["run"]["dataset"] == "fashion-mnist"
    (ev,) = rec["evals"]
    assert ev["n"] == 300 and ev["skipped"] == 0  # 10 classes x 30 real test images
    lines = (rec_path.parent / "predictions.jsonl").read_text().splitlines()
    labels = {json.loads(x)["label"] for x in lines}
    assert len(lines) == 300 and {"T-shirt/top", "Ankle boot", "Sneaker"} <= labels
