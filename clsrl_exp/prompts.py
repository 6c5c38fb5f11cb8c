"""Prompts exactly as the paper's code builds them (paper.md 1.1-1.5): option lists, problem text, chat messages.

Templates live in `conf/method/*.yaml` and questions in `conf/dataset/*.yaml`; this module only assembles them.
Option lists are seeded from (run seed, example id), so every method sees the same list for the same item.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def option_count(num_classes: int, fraction: float = 0.4, all_below: int = 30, cap: int = 100) -> int:
    """Options shown per example: int(fraction x C); all classes if that is < `all_below`; at most `cap`.

    Few-shot uses fraction 0.4, base-to-new 0.8 over the classes of that half (paper.md 1.1, App. D.1).

    >>> [option_count(c) for c in (1000, 47, 10, 196, 100)]  # ImageNet, DTD, EuroSAT, StanfordCars, FGVCAircraft
    [100, 47, 10, 78, 40]
    """
    n = int(fraction * num_classes)
    if n < all_below:
        n = num_classes
    return min(n, cap, num_classes)


def option_list(classes: Sequence[str], label: str, n: int, seed: int, example_id: str) -> list[str]:
    """The per-example option list of the official notebook: shuffle, take n, put the label in, shuffle again.

    Deterministic for a given (seed, example id) on every machine (string seeds hash with SHA-512).

    >>> option_list(["a", "b", "c", "d"], "c", 2, seed=1, example_id="x.jpg") == option_list(
    ...     ["a", "b", "c", "d"], "c", 2, seed=1, example_id="x.jpg")
    True
    >>> "c" in option_list(["a", "b", "c", "d"], "c", 2, seed=1, example_id="x.jpg")
    True
    """
    if label not in classes:
        raise ValueError(f"label {label!r} is not one of the {len(classes)} classes")
    rng = random.Random(f"{seed}:{example_id}")
    pool = list(classes)
    rng.shuffle(pool)
    chosen = pool[:n]
    if label not in chosen:
        chosen[-1] = label  # the notebook replaces the last drawn entry with the ground truth
    rng.shuffle(chosen)
    return chosen


def problem_text(question: str, options: Sequence[str]) -> str:
    """Question + newline + ` Please choose one from list [ a, b, c].` with the leading space stripped.

    >>> problem_text("What type of texture is in the photo?", ["banded", "zigzagged"])
    'What type of texture is in the photo?\\nPlease choose one from list [ banded, zigzagged].'
    """
    choice = " Please choose one from list [ "
    for name in options:
        choice = choice + name + ", "
    choice = choice[:-2].strip() + "]."
    return question + "\n" + choice


def fill(template: str, problem: str) -> str:
    """Put the problem into a method template (`{question}` placeholder)."""
    return template.replace("{question}", problem)


def user_messages(text: str, *, system_prompt: str | None = None, image_first: bool = True) -> list[dict]:
    """Structured chat messages with one image placeholder (for the evaluator and SFT).

    No system turn unless given: Qwen's chat template then inserts its default system turn.
    """
    image, words = {"type": "image"}, {"type": "text", "text": text}
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    messages.append({"role": "user", "content": [image, words] if image_first else [words, image]})
    return messages
