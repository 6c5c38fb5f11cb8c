"""What the benchmark runs on without weights: the real architecture with random weights, and 384 px images with
real method prompts (40-name option lists). Random weights never emit EOS, so completion lengths are forced."""

from __future__ import annotations

import random
from pathlib import Path

from clsrl_exp.config import ModelConfig, TinyBuild

# Shapes from each model's hub config.json (no weights are needed to time the architecture).
ARCH = {
    "qwen2vl-2b": {"text": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                                num_key_value_heads=2, tie_word_embeddings=True),
                   "vision": dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4)},
    "qwen2vl-7b": {"text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
                   "vision": dict(depth=32, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4)},
}
VOCAB = 151936
NAMES = [f"class {w}" for w in (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec "
    "romeo sierra tango uniform victor whiskey xray yankee zulu amber bronze copper denim ebony fawn gold hazel "
    "ivory jade khaki lemon mauve navy").split()]


def offline_tokenizer():
    """A BPE tokenizer trained in-process on the paper's templates and the benchmark's class names."""
    from clsrl_exp.config import load_option
    from clsrl_exp.models import build_tokenizer

    text = list(load_option("model", "tiny-qwen2vl").tiny.text)  # the paper's templates and questions
    return build_tokenizer(TinyBuild(vocab_size=1024, corpus=[w for n in NAMES for w in n.split()],
                                     text=text + NAMES))


def offline_processor(model_cfg: ModelConfig, out_dir: Path):
    """`model_cfg`'s real processor settings (pixel bounds) around the offline tokenizer, saved and loaded back
    the way training loads a processor (`clsrl_exp.models.load_processor`). No weights."""
    from clsrl_exp.models import load_processor, qwen2vl_parts

    if not (out_dir / "processor_config.json").exists():
        proc, _, _ = qwen2vl_parts(offline_tokenizer(), model_cfg, {}, {})
        proc.save_pretrained(out_dir)
    return load_processor(str(out_dir), model_cfg)


def build_random_model(model_cfg: ModelConfig, out_dir: Path, cuda: bool) -> str:
    """Save a random-weight model of `model_cfg.name`'s architecture (bf16) with an offline tokenizer/processor."""
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    from clsrl_exp.models import qwen2vl_parts

    if model_cfg.name not in ARCH:
        raise SystemExit(f"error: no architecture table for model '{model_cfg.name}'; known: {sorted(ARCH)}")
    if (out_dir / "config.json").exists():
        return str(out_dir)
    arch = ARCH[model_cfg.name]
    tok = offline_tokenizer()
    text = dict(arch["text"], vocab_size=VOCAB, max_position_embeddings=32768,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": arch.get(
                    "mrope_section", [16, 24, 24])})
    proc, cfg, gen = qwen2vl_parts(tok, model_cfg, text, arch["vision"])
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):
        model = Qwen2VLForConditionalGeneration(cfg).to(torch.bfloat16)
    model.generation_config = gen
    model.save_pretrained(out_dir)
    proc.save_pretrained(out_dir)
    del model
    if cuda:
        torch.cuda.empty_cache()
    return str(out_dir)


def examples(n: int, size: int, out_dir: Path, seed: int = 0, names: list[str] | None = None,
             source: tuple[int, int] | None = None):
    """n JPEGs with per-example shuffled option lists over the 40 names (real prompt lengths): size x size random
    noise, or with `source` = (width, height) smooth photo-like images of that size (the loader resizes them)."""
    import numpy as np
    from PIL import Image

    from clsrl_exp.data import Example
    from clsrl_exp.prompts import option_list

    names = names or NAMES
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    out = []
    for i in range(n):
        path = out_dir / f"img_{i:05d}.jpg"
        if not path.exists() and source is None:
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, quality=90)
        elif not path.exists():  # noise at 1/16 of the size, upsampled: compresses and decodes like a photo
            w, h = source
            small = Image.fromarray(rng.integers(0, 256, (max(1, h // 16), max(1, w // 16), 3), dtype=np.uint8))
            small.resize((w, h), Image.Resampling.BICUBIC).save(path, quality=90)
        label = pick.choice(names)
        out.append(Example(id=path.name, image_path=str(path), label=label,
                           options=tuple(option_list(names, label, len(names), seed, path.name)), split="test"))
    return out


def table(rows: list[tuple]) -> str:
    """A plain-text table: the first row is the header, columns padded to their widest cell."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
