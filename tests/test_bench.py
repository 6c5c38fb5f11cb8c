"""CPU smoke of the GPU benchmark: the same code (`python -m clsrl_exp.bench`) on the tiny model."""

from __future__ import annotations

import json

import pytest
from helpers import cli


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


def test_random_architecture_builder_on_a_small_table(tmp_path, monkeypatch):
    """The GPU benchmark's builder (real vocabulary size, real-shaped config) runs on CPU with small shapes."""
    from transformers import AutoConfig, AutoProcessor

    from clsrl_exp.bench import fixtures
    from clsrl_exp.config import ModelConfig

    small = {"text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                          num_key_value_heads=2, tie_word_embeddings=True),
             "vision": dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2),
             "mrope_section": [2, 3, 3]}
    monkeypatch.setitem(fixtures.ARCH, "small-test", small)
    cfg = ModelConfig(name="small-test", path="unused", image_size=56, min_pixels=3136, max_pixels=3136)
    path = fixtures.build_random_model(cfg, tmp_path / "m", cuda=False)
    conf = AutoConfig.from_pretrained(path)
    assert conf.text_config.vocab_size == fixtures.VOCAB and conf.tie_word_embeddings is True
    proc = AutoProcessor.from_pretrained(path)
    assert proc.image_processor.size["longest_edge"] == 3136
    assert conf.image_token_id == proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    exs = fixtures.examples(3, 56, tmp_path / "img", names=fixtures.NAMES[:5])
    assert all(len(e.options) == 5 and e.label in e.options for e in exs)


@pytest.mark.slow
def test_bench_images_compares_both_paths_on_the_same_steps(tmp_path, capsys):
    """`--images`: the real 384-px processor settings, TRL's path and the cache over the same steps; the cache
    processes each image once (epoch 1) and nothing after, and fed identical tensors."""
    from clsrl_exp.bench.__main__ import main

    assert main(["--images", "--out", str(tmp_path), "--train-images", "4", "--prompts", "2", "--epochs", "2",
                 "--eval-images", "4"]) == 0
    out = json.loads((tmp_path / "bench_images.json").read_text())
    g = out["grpo"]
    assert out["image_size"] == 384 and out["image_tokens"] == 196 and g["identical"] is True
    assert g["slots_per_step"] == 8 and g["train_images"] == 4
    processed = {(s["path"], s["epochs"]): s["processed"] for s in g["summary"]}
    assert processed == {("trl", "epoch 1"): 16, ("trl", "epochs 2+"): 16,  # 8 slots, twice per step
                         ("cached", "epoch 1"): 2, ("cached", "epochs 2+"): 0}  # 2 new images per step, then none
    assert g["cache"]["computed"] == 4 and g["cache"]["held"] == 4 + 2  # + the 2 warm-up images
    assert out["eval"]["images"] == 4 and out["eval"]["ms_per_image"] > 0
    assert "image work (decode + image processor)" in capsys.readouterr().out


@pytest.mark.distributed
def test_bench_ranks_scores_the_same_items_with_one_and_two_ranks(torchrun, tmp_path):
    p = cli(["--out", str(tmp_path), "--batch-size", "8", "eval.limit=32"], module="clsrl_exp.bench.ranks")
    assert p.returncode == 0, p.tail
    rows = json.loads((tmp_path / "ranks.json").read_text())
    assert [r["ranks"] for r in rows] == [1, 2]
    assert all(r["items"] == 32 and r["eval_s"] > 0 and r["identical_to_first"] for r in rows), rows
    assert "predictions = first row's" in p.stdout
