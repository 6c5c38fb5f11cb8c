"""The GRPO image cache (clsrl_exp.train.imagecache) feeds exactly what TRL's own processing feeds.

TRL 1.16's two processor call sites (`GRPOTrainer._tokenize_prompts`, TRL's own function, and the scoring call of
`_generate_and_score_completions`) run on a plain processor and on its cached copy with the real 384-px pixel
bounds, over images of different sizes (so different patch grids) repeated G times in a mixed order: prompt ids and
every tensor must be identical, each image processed once. Untagged images and calls the cache cannot answer go
through the processor's own method; the bound holds; the processor itself and what it saves stay as they were.
The 2-step GRPO run with and without the cache (identical losses) is in test_train.py.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from clsrl_exp.bench.image_work import same_inputs, trl_step
from clsrl_exp.config import ModelConfig
from clsrl_exp.train.imagecache import ImageCache, cached_processor, tag

REAL = ModelConfig(name="qwen2vl-2b", image_size=384, min_pixels=3136, max_pixels=401408)  # conf/model/qwen2vl-2b
KW = {"size": {"shortest_edge": 3136, "longest_edge": 401408}}  # the images kwargs the processor passes


@pytest.fixture(scope="module")
def processor(tiny_path):
    """The tiny model's tokenizer with Qwen2-VL-2B's pixel bounds, loaded as training loads it."""
    from clsrl_exp.models import load_processor

    return load_processor(tiny_path, REAL)


def _images(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [tag(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), f"img{i}@{w}x{h}")
            for i, (w, h) in enumerate(sizes)]


def _rows(images, order):
    prompt = [{"role": "user", "content": "What type of object is in the photo?"}]
    return [{"prompt": prompt, "image": images[i]} for i in order]


SIZES = [(384, 384), (56, 84), (112, 56), (200, 150)]  # 196, 6, 8 and 35 visual tokens: four different grids
ORDER = [0, 0, 1, 2, 1, 3, 0, 2, 3, 3]  # repeats (a GRPO group's G copies) in a mixed order


def test_cached_path_feeds_identical_prompt_ids_and_pixels(processor):
    images = _images(SIZES)
    rows = _rows(images, ORDER)
    plain = trl_step(processor, rows)
    assert len(set(plain[2]["image_grid_thw"][:, 1:].prod(-1).tolist())) == 4  # four grids really are in play
    twin = cached_processor(processor, 100)
    cache = twin._process_images
    cold = trl_step(twin, rows)  # first sight: generation call computes, scoring call reuses
    assert same_inputs(plain, cold)
    assert (cache.computed, cache.reused, cache.passed) == (4, 2 * len(ORDER) - 4, 0)
    # the scoring call gets the generation call's tensors (read-only there), and no later call shares them
    assert cold[1]["pixel_values"] is cold[2]["pixel_values"]
    warm = trl_step(twin, _rows(images, ORDER[::-1]))  # a later epoch, another order: nothing computed
    assert same_inputs(trl_step(processor, _rows(images, ORDER[::-1])), warm)
    assert cache.computed == 4 and len(cache.entries) == 4
    again = trl_step(twin, _rows(images, ORDER[::-1]))
    assert again[1]["pixel_values"] is not warm[2]["pixel_values"] and same_inputs(warm, again)
    assert all(e[0].dtype == torch.float32 for e in cache.entries.values())  # kept exact, as the processor made it


def test_same_inputs_tells_different_pixels_apart(processor):
    """The comparison the exactness tests rely on is not blind: one changed image changes the result."""
    images, other = _images(SIZES), _images(SIZES, seed=1)
    a = trl_step(processor, _rows(images, ORDER))
    b = trl_step(processor, _rows(images[:3] + other[3:], ORDER))
    assert same_inputs(a, a) and not same_inputs(a, b)


def test_untagged_images_and_other_tensor_types_go_through_the_processor(processor):
    twin = cached_processor(processor, 100)
    cache = twin._process_images
    rng = np.random.default_rng(0)
    untagged = [Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)) for _ in range(2)]
    assert same_inputs(trl_step(processor, _rows(untagged, [0, 1, 1])), trl_step(twin, _rows(untagged, [0, 1, 1])))
    assert cache.passed == 6 and cache.computed == 0 and not cache.entries
    tagged = _images(SIZES[:1])
    out = twin(images=tagged, text=["<|vision_start|><|image_pad|><|vision_end|>"], return_tensors="np")
    assert isinstance(out["pixel_values"], np.ndarray) and cache.passed == 7 and not cache.entries


def test_the_bound_holds_and_a_call_larger_than_it_is_still_answered(processor):
    images = _images(SIZES)
    kw = KW
    cache = ImageCache(processor, max_images=2)
    full, _ = cache(images, **kw)  # four images through a cache of two
    ref = processor.image_processor(images, **kw, return_tensors="pt")
    assert torch.equal(full["pixel_values"], ref["pixel_values"])
    assert torch.equal(full["image_grid_thw"], ref["image_grid_thw"])
    assert len(cache.entries) == 2 and cache.computed == 4
    cache([images[3], images[2]], **kw)  # the two most recent are kept
    assert cache.computed == 4
    cache([images[0]], **kw)  # the oldest was evicted
    assert cache.computed == 5 and len(cache.entries) == 2


def test_the_processor_is_untouched_and_the_copy_saves_the_same_files(processor, tmp_path):
    twin = cached_processor(processor, 100)
    twin._process_images(_images(SIZES[:1]), **KW)
    assert len(twin._process_images.entries) == 1
    assert "_process_images" not in vars(processor) and type(twin) is type(processor)
    assert twin.image_processor is processor.image_processor and twin.tokenizer is processor.tokenizer
    assert copy.deepcopy(twin)._process_images is twin._process_images  # to_dict's deepcopy leaves the pixels alone
    processor.save_pretrained(tmp_path / "plain")
    twin.save_pretrained(tmp_path / "cached")
    names = sorted(p.name for p in (tmp_path / "plain").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "cached").iterdir())
    for name in names:
        if name.endswith(".json"):
            assert json.loads((tmp_path / "plain" / name).read_text()) == json.loads(
                (tmp_path / "cached" / name).read_text()), name


def test_training_rows_are_tagged_and_decoded_once(tmp_path):
    from clsrl_exp.bench.fixtures import NAMES, examples
    from clsrl_exp.config import method_config
    from clsrl_exp.train.rows import grpo_dataset

    exs = examples(3, 56, tmp_path, names=NAMES[:4], source=(80, 60))
    data = grpo_dataset(exs, method_config("nothink"), "What is it?", 56, decoded_cache=8)
    rows = data.__getitems__([0, 0, 1, 2, 0])
    assert [r["image"].info["cache_key"] for r in rows] == [f"{exs[i].image_path}@56" for i in (0, 0, 1, 2, 0)]
    assert rows[0]["image"] is rows[1]["image"] is rows[4]["image"] and rows[0]["image"].size == (56, 56)


def test_capacity_follows_the_memory_bound(tmp_path):
    from helpers import run_config

    from clsrl_exp.train.imagecache import bytes_per_image, capacity, decoded_cache_size

    run, _ = run_config(["model=qwen2vl-2b", "method=nothink", "dataset=dtd"], tmp_path)
    assert run.train.image_cache and run.train.image_cache_mb == 8192
    assert capacity(run) == 8192 * 2**20 // sum(bytes_per_image(run.model)) == 2079
    assert decoded_cache_size(run) == 2079
    off, _ = run_config(["model=qwen2vl-2b", "method=nothink", "dataset=dtd", "train.image_cache=false"], tmp_path)
    assert capacity(off) == 0 and decoded_cache_size(off) == 256  # the loader as it was before the cache


def test_a_processor_with_its_own_image_method_is_left_uncached(processor):
    Own = type("Own", (type(processor),), {"_process_images": lambda self, images, **kw: (
        type(processor)._process_images(self, images, **kw))})
    other = copy.copy(processor)
    other.__class__ = Own
    assert cached_processor(other, 100) is other and "_process_images" not in vars(other)
