"""Dataset rows handed to TRL: conversational `prompt`, `image`, `label` (class name) and `id`.

Prompts come from `clsrl_exp.prompts` (the only place a prompt is assembled). Images stay paths in the table and are
opened and resized (image_size, LANCZOS) only when a row is read, so a 16-shot ImageNet train set never sits
decoded in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

from clsrl_exp.config import MethodConfig
from clsrl_exp.prompts import grpo_messages, prompt_text, sft_messages


def _lazy_images(dataset, image_size: int, key: str, cache_size: int = 256):
    """Open and resize images when a row is read. GRPO's sampler reads each prompt's row G times in a row, so the
    last `cache_size` decoded images are kept (at 384 px 0.44 MB each) instead of decoding each one G times; with
    the GRPO image cache on, as many as it holds (each image decoded once per run). Each image is tagged with its
    path and size, the key under which the image cache keeps its processed pixels."""
    import functools

    from clsrl_exp.data import load_image
    from clsrl_exp.train.imagecache import tag

    load = functools.lru_cache(maxsize=cache_size)(
        lambda path: tag(load_image(path, image_size), f"{path}@{image_size}"))

    def transform(batch):
        batch[key] = [([load(p) for p in v] if isinstance(v, list) else load(v)) for v in batch[key]]
        return batch

    return dataset.with_transform(transform)


def grpo_prompt(ex, method: MethodConfig, question: str) -> list[dict]:
    """One example's GRPO prompt messages: the method's train template, as TRL's trainer receives them."""
    return grpo_messages(prompt_text(method.train_template, question, ex.options, ex.problem), method)


def sft_prompt(ex, method: MethodConfig, question: str) -> list[dict]:
    """One example's SFT prompt messages (the method's train template in the SFT conversation)."""
    return sft_messages(prompt_text(method.train_template, question, ex.options, ex.problem), method)


def grpo_dataset(examples, method: MethodConfig, question: str, image_size: int, decoded_cache: int = 256):
    """One row per training example with the method's train template; the last `decoded_cache` images stay decoded
    (`clsrl_exp.train.imagecache.decoded_cache_size`)."""
    from datasets import Dataset

    rows = {"prompt": [], "image": [], "label": [], "id": []}
    for ex in examples:
        rows["prompt"].append(grpo_prompt(ex, method, question))
        rows["image"].append(ex.image_path)
        rows["label"].append(ex.label)
        rows["id"].append(ex.id)
    return _lazy_images(Dataset.from_dict(rows), image_size, "image", decoded_cache)


def sft_dataset(rows: Sequence[tuple], image_size: int):
    """prompt/completion rows from (example, prompt messages, target text) triples."""
    from datasets import Dataset

    table = {"prompt": [], "completion": [], "images": [], "label": [], "id": []}
    for ex, prompt, target in rows:
        table["prompt"].append(prompt)
        table["completion"].append([{"role": "assistant", "content": [{"type": "text", "text": target}]}])
        table["images"].append([ex.image_path])
        table["label"].append(ex.label)
        table["id"].append(ex.id)
    return _lazy_images(Dataset.from_dict(table), image_size, "images")


def sft_rows(examples, method: MethodConfig, question: str) -> list[tuple]:
    """The SFT baseline's rows: the method's prompt and its target template filled with the label."""
    return [(ex, sft_prompt(ex, method, question), method.target_template.replace("{label}", ex.label))
            for ex in examples]
