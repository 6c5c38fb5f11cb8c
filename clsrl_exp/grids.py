"""Named dataset lists of the paper's grids: the one place `eval.all_datasets`, the sweep files and the report read.

Config files name a list: `eval.all_datasets: paper` (what `eval.datasets=all` evaluates), and sweep files through
the resolver `${clsrl_grid:paper}` (registered in `clsrl_exp.resolvers`), the names comma-joined as a Hydra sweeper
parameter needs them (`hydra.sweeper.params.dataset`).
"""

from __future__ import annotations

DATASET_LISTS: dict[str, tuple[str, ...]] = {
    # the 11 CoOp datasets in the paper's column order (v6 Tables 5 and 9, Fig. 4)
    "paper": ("imagenet", "caltech101", "dtd", "eurosat", "food101", "oxford_flowers", "oxford_pets",
              "stanford_cars", "sun397", "ucf101", "fgvc_aircraft"),
    # Qwen2-VL-7B few-shot classification (v6 Tables 7 and 12)
    "paper-7b": ("dtd", "eurosat", "oxford_flowers", "stanford_cars"),
    # open-set few-shot, no option list (v6 Table 11)
    "paper-open": ("imagenet", "caltech101", "food101", "oxford_flowers", "oxford_pets"),
    # the CPU demo's two generated datasets
    "synthetic": ("synthetic-colors", "synthetic-shapes"),
}

PAPER_DATASETS = DATASET_LISTS["paper"]


def dataset_list(name: str) -> list[str]:
    """The datasets of a named list.

    >>> dataset_list("paper-7b")
    ['dtd', 'eurosat', 'oxford_flowers', 'stanford_cars']
    >>> dataset_list("nope")
    Traceback (most recent call last):
    ...
    KeyError: "unknown dataset list 'nope'; known: paper, paper-7b, paper-open, synthetic"
    """
    try:
        return list(DATASET_LISTS[name])
    except KeyError:
        raise KeyError(f"unknown dataset list {name!r}; known: {', '.join(DATASET_LISTS)}") from None
