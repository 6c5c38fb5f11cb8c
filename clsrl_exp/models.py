"""Models and processors: load by hub id or path; build the tiny offline Qwen2-VL; keep pixel bounds in one place.

The tiny model is the real architecture with random weights, a BPE tokenizer trained in-process on the Qwen
special tokens, Qwen's chat template (TRL ships it) and a processor with small pixel bounds. It is saved under
`<cache>/models/` keyed by a hash of its spec and loaded from that path like any hub model, so TRL can rebuild the
reference model from `config._name_or_path` (trap T6). A file lock makes concurrent sweep cells build it once.
Everything the tokenizer is trained on is in the model config (`model.tiny.corpus`, `model.tiny.text`), so the
config alone - part of every run's identity - decides the tiny model.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from clsrl_exp.config import ModelConfig, TinyBuild
from clsrl_exp.fileio import file_lock, spec_hash, use_or_rebuild
from clsrl_exp.lengths import MERGE, PATCH

log = logging.getLogger(__name__)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
            "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
            "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]


# ----------------------------------------------------------------------------------------------------- tiny
def _chat_template() -> str:
    from trl.chat_template_utils import qwen2_5_vl_chat_template  # byte-identical to Qwen2-VL's own template

    return qwen2_5_vl_chat_template


def build_tokenizer(spec: TinyBuild):
    import json as _json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    # Class names must be single tokens (one sampled token = one answer): they dominate the merge statistics.
    words = [w for w in spec.corpus] + [" " + w for w in spec.corpus]
    lines = ["You are a helpful assistant.", "system user assistant", *spec.text] * 20 + words * 200
    bpe.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=spec.vocab_size, special_tokens=SPECIALS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    m = _json.loads(bpe.to_str())["model"]
    merges = [tuple(x) if isinstance(x, list) else tuple(x.split(" ")) for x in m["merges"]]  # v5 wants tuples
    tok = Qwen2Tokenizer(vocab=m["vocab"], merges=merges, unk_token=None, bos_token=None,
                         eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    tok.chat_template = _chat_template()
    tok.padding_side = "left"  # trap T10: batched generation and TRL's mm_token_type_ids need left padding
    split = [w for w in spec.corpus if w.isalpha() and len(tok.tokenize(w)) != 1]
    if split:
        log.warning("tiny tokenizer: %s are not single tokens; raise model.tiny.vocab_size", split)
    return tok


def qwen2vl_parts(tok, model_cfg: ModelConfig, text: dict, vision: dict):
    """(processor, model config, generation config) of a Qwen2-VL around an offline tokenizer: the processor carries
    the config's pixel bounds; special-token ids point into the tokenizer's vocabulary."""
    from transformers import (
        GenerationConfig,
        Qwen2VLConfig,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    proc = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=model_cfg.min_pixels, max_pixels=model_cfg.max_pixels),
        tokenizer=tok, video_processor=Qwen2VLVideoProcessor(), chat_template=_chat_template())
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    text = dict(text, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    cfg = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                        vision_end_token_id=ids["<|vision_end|>"],
                        tie_word_embeddings=text.get("tie_word_embeddings", False))
    gen = GenerationConfig(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    return proc, cfg, gen


def build_tiny(model_cfg: ModelConfig, out_dir: Path) -> Path:
    """Build and save a deterministic random Qwen2-VL + tokenizer + processor (learncheck.md recipe)."""
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    spec = model_cfg.tiny
    tok = build_tokenizer(spec)
    half = spec.hidden_size // spec.num_heads // 2  # mrope_section must sum to head_dim / 2
    mrope = [half // 4, 3 * half // 8, half - half // 4 - 3 * half // 8]
    text = dict(vocab_size=len(tok), hidden_size=spec.hidden_size, intermediate_size=2 * spec.hidden_size,
                num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
                num_key_value_heads=spec.num_kv_heads, max_position_embeddings=2048,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope})
    vision = dict(depth=spec.vision_depth, embed_dim=spec.vision_embed_dim, hidden_size=spec.hidden_size,
                  num_heads=spec.vision_heads, mlp_ratio=2, patch_size=PATCH, spatial_merge_size=MERGE,
                  temporal_patch_size=2)
    proc, cfg, gen = qwen2vl_parts(tok, model_cfg, text, vision)
    torch.manual_seed(spec.seed)
    model = Qwen2VLForConditionalGeneration(cfg)
    model.generation_config = gen
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    proc.save_pretrained(tmp)
    os.replace(tmp, out_dir)
    log.info("built tiny %s (%d parameters, vocab %d) at %s", model_cfg.name,
             sum(p.numel() for p in model.parameters()), len(tok), out_dir)
    return out_dir


def resolve_model_path(model_cfg: ModelConfig, cache_dir: str) -> str:
    """The path every component loads from: the hub id / local dir, or the cached tiny (and warm-started) build."""
    if model_cfg.path is not None:
        return model_cfg.path
    spec = [asdict(model_cfg.tiny), model_cfg.min_pixels, model_cfg.max_pixels]
    out = Path(cache_dir) / "models" / f"{model_cfg.name.removesuffix('-warm')}-{spec_hash(*spec)}"
    with file_lock(out.with_suffix(".lock")):  # concurrent cells build it once; a corrupt copy is rebuilt
        use_or_rebuild(out, spec, lambda folder: build_tiny(model_cfg, folder), "tiny model")
    return str(out)


# ----------------------------------------------------------------------------------------------------- loading
def load_processor(path: str, model_cfg: ModelConfig):
    """The processor with the config's pixel bounds and left padding (one source of truth for image size)."""
    from transformers import AutoProcessor

    size = {"shortest_edge": model_cfg.min_pixels, "longest_edge": model_cfg.max_pixels}  # = min/max_pixels
    proc = AutoProcessor.from_pretrained(path, size=size, padding_side="left")
    proc.tokenizer.padding_side = "left"
    return proc


def torch_dtype(model_cfg: ModelConfig, cuda: bool):
    import torch

    return getattr(torch, model_cfg.dtype) if cuda else torch.float32


def load_model(path: str, model_cfg: ModelConfig, cuda: bool):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(
        path, dtype=torch_dtype(model_cfg, cuda), attn_implementation=model_cfg.attn_implementation)
    return model.to("cuda") if cuda else model
