"""Process each training image once per run: a per-image cache of the processor's pixel output for GRPO (issue #18).

TRL 1.16 runs the processor over every image slot of a GRPO step twice - in `_tokenize_prompts` for generation and
in `_generate_and_score_completions` for the reference/old log-probs and the loss - and each prompt's image fills G
slots. Both calls reach `ProcessorMixin._process_images`. `cached_processor` returns a shallow copy of the processor
whose `_process_images` is an `ImageCache`: an image the training loader tagged (`Image.info["cache_key"]`, set in
`clsrl_exp.train.rows`) is run through the image processor the first time it is seen and its rows of
`pixel_values` / `image_grid_thw` are reused afterwards, for both call sites, the G copies and later epochs.
Untagged images (evaluation, the accuracy curve) and any call the cache cannot reproduce go through the processor's
own method unchanged. The class is unchanged, so TRL's type checks and `save_pretrained` behave as before.

Memory: the cache keeps fp32 pixels (bit-identical to the processor's output), 3.7 MB per 384-px image (784 patches
x 1,176 values), and the loader keeps the same images decoded (0.44 MB each): `train.image_cache_mb` bounds both
together, per process (each DDP rank holds its own).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from clsrl_exp.config import ModelConfig, RunConfig
from clsrl_exp.lengths import MERGE, PATCH, image_tokens

log = logging.getLogger(__name__)

KEY = "cache_key"  # Image.info entry naming an image's pixel content (PIL keeps `info` through TRL's deepcopy)
TEMPORAL_PATCH = 2  # Qwen2-VL repeats a still image over 2 frames: one patch row = 3 x 2 x 14 x 14 values
UNCACHED_DECODED = 256  # the loader's decoded-image LRU without the cache (one GRPO group's G reads hit it)


def bytes_per_image(model: ModelConfig) -> tuple[int, int]:
    """(processed fp32 pixel bytes, decoded 8-bit RGB bytes) of one training image at the model's settings.

    >>> from clsrl_exp.config import ModelConfig
    >>> bytes_per_image(ModelConfig(name="m", image_size=384, min_pixels=3136, max_pixels=401408))
    (3687936, 442368)
    """
    patches = image_tokens(model.image_size, model.min_pixels, model.max_pixels) * MERGE * MERGE
    return patches * 3 * TEMPORAL_PATCH * PATCH * PATCH * 4, model.image_size * model.image_size * 3


def capacity(run: RunConfig) -> int:
    """How many training images the two caches hold within `train.image_cache_mb` (0 when the cache is off)."""
    if not run.train.image_cache:
        return 0
    processed, decoded = bytes_per_image(run.model)
    return run.train.image_cache_mb * 2**20 // (processed + decoded)


def decoded_cache_size(run: RunConfig) -> int:
    """The training loader's decoded-image LRU: the cached images (each decoded once per run), at least the 256
    it keeps without the cache."""
    return max(capacity(run), UNCACHED_DECODED)


def tag(image, key: str):
    """Mark a PIL image as the pixel content named `key` (e.g. its path and size); returns the image."""
    image.info[KEY] = key
    return image


class ImageCache:
    """LRU of one processor's per-image outputs, called as the processor's `_process_images(images, **kwargs)`.

    Kept: at most `max_images` images (oldest use evicted first; an image still needed by the call being answered is
    never lost). A call asking for exactly the images of the call before it (TRL's scoring call after its generation
    call) gets that call's tensors once more instead of a second 64 x 3.7 MB copy: generation only reads them, and
    no third call shares them. Counters: `computed` images run through the image processor, `reused` image slots
    served from the cache, `passed` slots handed to the processor's own method.
    """

    def __init__(self, processor, max_images: int):
        self.processor, self.max_images = processor, max_images
        self.entries: OrderedDict = OrderedDict()  # (key, kwargs) -> (pixel rows, grid_thw)
        self.computed = self.reused = self.passed = 0
        self.unsupported: list[str] | None = None  # output keys the cache cannot split per image
        self.last: tuple | None = None  # (keys, output) of the last call, handed once more to an identical next call

    def __deepcopy__(self, memo):  # processor.to_dict() deep-copies the processor's attributes: share, don't copy
        return self

    @property
    def nbytes(self) -> int:
        return sum(pv.nbytes + thw.nbytes for pv, thw in self.entries.values())

    def _own(self, images, kwargs):
        return type(self.processor)._process_images(self.processor, images, **kwargs)

    def __call__(self, images, **kwargs):
        import torch
        from PIL import Image
        from transformers import BatchFeature
        from transformers.image_utils import make_flat_list_of_images

        try:
            flat = make_flat_list_of_images(images)
        except ValueError:
            flat = []
        tagged = flat and all(isinstance(im, Image.Image) and KEY in im.info for im in flat)
        if not tagged or self.unsupported is not None or kwargs.get("return_tensors") not in (None, "pt"):
            self.passed += len(flat)
            return self._own(images, kwargs)
        kw = {k: v for k, v in kwargs.items() if k != "return_tensors"}
        settings = repr(sorted(kw.items()))
        keys = [(im.info[KEY], settings) for im in flat]
        last, self.last = self.last, None
        if last is not None and last[0] == keys:  # TRL's scoring call after its generation call: same images
            self.reused += len(flat)
            return self._answer(BatchFeature(dict(last[1])), flat, kwargs)
        todo = {}
        for k, im in zip(keys, flat, strict=True):
            if k not in self.entries:
                todo.setdefault(k, im)
        if todo:
            out = self.processor.image_processor(list(todo.values()), **kw, return_tensors="pt")
            if set(out.keys()) != {"pixel_values", "image_grid_thw"}:
                self.unsupported = sorted(out.keys())
                log.warning("image cache off: the image processor returns %s, not pixel_values + image_grid_thw "
                            "per image", self.unsupported)
                self.passed += len(flat)
                return self._own(images, kwargs)
            rows = out["image_grid_thw"].prod(-1).tolist()
            for k, pv, thw in zip(todo, torch.split(out["pixel_values"], rows), out["image_grid_thw"], strict=True):
                self.entries[k] = (pv.clone(), thw.clone())  # own storage, so an evicted image frees its bytes
        self.computed += len(todo)
        self.reused += len(flat) - len(todo)
        for k in keys:
            self.entries.move_to_end(k)
        processed = BatchFeature({"pixel_values": torch.cat([self.entries[k][0] for k in keys]),
                                  "image_grid_thw": torch.stack([self.entries[k][1] for k in keys])})
        while len(self.entries) > self.max_images:
            self.entries.popitem(last=False)
        self.last = (keys, dict(processed))
        return self._answer(processed, flat, kwargs)

    def _answer(self, processed, flat, kwargs):
        replacements = []
        if getattr(self.processor, "image_token", None) is not None:  # as ProcessorMixin._process_images
            replacements = [self.processor.replace_image_token(processed, image_idx=i, **kwargs)
                            for i in range(len(flat))]
        return processed, replacements


def cached_processor(processor, max_images: int):
    """A shallow copy of `processor` (same class, tokenizer and image processor) that serves tagged images from an
    `ImageCache` of at most `max_images` images; `processor` itself is left as it was. A processor class with its
    own `_process_images` (the cache reproduces only ProcessorMixin's) is returned as it is, with a warning."""
    import copy

    from transformers import ProcessorMixin

    if type(processor)._process_images is not ProcessorMixin._process_images:
        log.warning("image cache off: %s overrides _process_images", type(processor).__name__)
        return processor
    twin = copy.copy(processor)
    twin._process_images = ImageCache(twin, max_images)
    return twin
