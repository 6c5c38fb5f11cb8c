"""The paper's published numbers as plain data, keyed by our dataset and method names.

Source: Ming Li, Jike Zhong, Shitian Zhao, Yuxiang Lai, Haoquan Zhang, Wang Bill Zhu, Kaipeng Zhang,
"To Think or Not To Think: A Study of Thinking in Rule-Based Visual Reinforcement Fine-Tuning", NeurIPS 2025,
arXiv 2503.16188 (v6, 2025-10-25; v1 title "CLS-RL: Image Classification with Rule-Based Reinforcement Learning").
Numbers are for Qwen2-VL-2B-Instruct, 4 shots, unless stated, copied from the paper (v6 tables as listed below):

- `FEWSHOT`, `FEWSHOT_AVERAGE`: few-shot accuracy %, v6 Table 5 (= v1 Table 2), reference §5.2.
  Rows: "Qwen2VL zero-shot" -> zeroshot, "SFT" -> sft, "Thinking (CLS-RL)" -> clsrl, "No-Thinking" -> nothink.
  DTD SFT is printed with three decimals (71.336) and is kept as printed.
- `BASE2NEW`, `BASE2NEW_AVERAGE`: base-to-new (base, new, H) %, v6 Table 9 (= v1 Table 1), reference §5.1.
  The printed Average H is H(average base, average new), not the mean of the per-dataset H.
- `EFFICIENCY`: ImageNet few-shot accuracy and wall-clock minutes on 8xA100, v6 Table 6 (= v1 Table 3), §5.3.
- `TRANSFER`: free-lunch matrices (accuracy minus zero-shot accuracy of the test dataset; row = fine-tuning
  dataset, column = test dataset, "AVG" = mean of the 11 columns), v6 Fig. 4(a) Thinking and 4(b) No-Thinking
  (repo heatmaps `r1_improve_heatmap.png`, `direct_improve_heatmap.png`), reference §5.4.
- `FEWSHOT_7B`, `FEWSHOT_7B_AVERAGE`: Qwen2-VL-7B-Instruct few-shot accuracy % on DTD, EuroSAT, Flowers102 and
  StanfordCars, v6 Tables 7/12, reference §5.6. Rows: "Thinking" -> clsrl, "Think-After-Answer" ->
  think-after-answer, "Adaptive-Thinking" -> adaptive, "No-Thinking" -> nothink. (The table's 2B rows are Table 5's.)
- `OPEN`, `OPEN_AVERAGE`: open-set few-shot accuracy % (no option list), v6 Table 11 (= v1 Table 4), reference
  §5.5. Rows: "Qwen2VL" -> zeroshot, "Thinking" -> clsrl, "No-Thinking" -> nothink.
- No classification numbers exist for two of the paper's inference variants, so the report shows ours alone:
  v6 Table 17 ("w/o Thinking": Thinking-RFT answering after an empty think tag) covers reasoning benchmarks only,
  and v6 Fig. 7(b) (Thinking-RFT with the no-thinking inference prompt) is a plot without published numbers.
"""

from __future__ import annotations

from clsrl_exp.grids import PAPER_DATASETS, dataset_list

PAPER_MODEL = "qwen2vl-2b"
PAPER_MODEL_7B = "qwen2vl-7b"
PAPER_SHOTS = 4

CITATION = (
    'Li et al., "To Think or Not To Think: A Study of Thinking in Rule-Based Visual Reinforcement Fine-Tuning", '
    "NeurIPS 2025, arXiv 2503.16188; numbers from v6 Tables 5, 6, 7/12, 9, 11 and Fig. 4"
)

# the paper's column order (ImageNet, Caltech101, DTD, EuroSAT, Food101, Flowers102, OxfordPets, StanfordCars,
# SUN397, UCF101, FGVCAircraft) in our config names: the one list in clsrl_exp.grids
DATASETS = PAPER_DATASETS
METHODS = ("zeroshot", "sft", "clsrl", "think-after-answer", "nothink", "adaptive")


def _row(values: list[float]) -> dict[str, float]:
    assert len(values) == len(DATASETS)
    return dict(zip(DATASETS, values, strict=True))


# §5.2 — v6 Table 5
FEWSHOT: dict[str, dict[str, float]] = {
    "zeroshot": _row([70.80, 88.56, 54.79, 45.68, 77.54, 64.43, 73.89, 35.77, 63.83, 66.22, 42.75]),
    "sft": _row([41.60, 93.91, 71.336, 75.16, 75.75, 96.87, 85.80, 71.13, 41.66, 63.81, 60.15]),
    "clsrl": _row([92.24, 98.09, 69.92, 49.46, 88.94, 86.56, 87.24, 80.24, 84.57, 82.10, 74.41]),
    "nothink": _row([92.31, 98.46, 73.52, 58.02, 90.78, 91.60, 86.13, 92.50, 86.72, 83.82, 74.41]),
}
FEWSHOT_AVERAGE: dict[str, float] = {"zeroshot": 62.21, "sft": 70.65, "clsrl": 81.25, "nothink": 84.39}

# §5.1 — v6 Table 9: (base, new, H)
BASE2NEW: dict[str, dict[str, tuple[float, float, float]]] = {
    "zeroshot": {
        "imagenet": (61.56, 74.90, 67.58),
        "caltech101": (88.83, 92.90, 90.82),
        "dtd": (60.99, 61.34, 61.17),
        "eurosat": (54.52, 63.54, 58.69),
        "food101": (74.07, 80.42, 77.12),
        "oxford_flowers": (61.10, 60.99, 61.05),
        "oxford_pets": (75.59, 91.79, 82.90),
        "stanford_cars": (43.81, 33.15, 37.74),
        "sun397": (56.97, 65.80, 61.07),
        "ucf101": (69.60, 64.62, 67.02),
        "fgvc_aircraft": (36.07, 39.47, 37.70),
    },
    "sft": {
        "imagenet": (27.78, 47.78, 35.13),
        "caltech101": (93.87, 93.01, 93.44),
        "dtd": (71.98, 71.41, 71.70),
        "eurosat": (91.55, 77.87, 84.16),
        "food101": (74.27, 77.82, 76.00),
        "oxford_flowers": (97.77, 94.95, 96.34),
        "oxford_pets": (84.06, 86.28, 85.15),
        "stanford_cars": (74.54, 69.68, 72.03),
        "sun397": (27.39, 37.80, 31.77),
        "ucf101": (59.95, 63.93, 61.87),
        "fgvc_aircraft": (38.23, 57.53, 45.94),
    },
    "clsrl": {
        "imagenet": (88.12, 90.01, 89.05),
        "caltech101": (97.74, 95.20, 96.45),
        "dtd": (77.42, 67.82, 72.30),
        "eurosat": (58.09, 69.33, 63.22),
        "food101": (87.29, 87.56, 87.42),
        "oxford_flowers": (87.78, 74.97, 80.87),
        "oxford_pets": (83.28, 94.49, 88.53),
        "stanford_cars": (82.08, 75.74, 78.78),
        "sun397": (81.03, 82.52, 81.77),
        "ucf101": (79.47, 74.95, 77.14),
        "fgvc_aircraft": (70.53, 58.07, 63.69),
    },
    "nothink": {
        "imagenet": (88.97, 90.66, 89.81),
        "caltech101": (97.93, 95.63, 96.77),
        "dtd": (77.42, 70.37, 73.72),
        "eurosat": (66.43, 74.13, 70.07),
        "food101": (88.77, 88.93, 88.85),
        "oxford_flowers": (88.71, 76.73, 82.29),
        "oxford_pets": (86.64, 95.50, 90.85),
        "stanford_cars": (91.13, 87.04, 89.04),
        "sun397": (83.18, 84.14, 83.66),
        "ucf101": (80.47, 79.18, 79.82),
        "fgvc_aircraft": (68.01, 58.31, 62.79),
    },
}
BASE2NEW_AVERAGE: dict[str, tuple[float, float, float]] = {
    "zeroshot": (62.10, 66.27, 64.12),
    "sft": (67.40, 70.73, 69.03),
    "clsrl": (81.17, 79.15, 80.15),
    "nothink": (83.42, 81.88, 82.64),
}

# §5.6 — v6 Tables 7/12: Qwen2-VL-7B, 4 shots, in the order of clsrl_exp.grids "paper-7b"
DATASETS_7B = tuple(dataset_list("paper-7b"))  # dtd, eurosat, oxford_flowers, stanford_cars


def _row7b(values: list[float]) -> dict[str, float]:
    return dict(zip(DATASETS_7B, values, strict=True))


FEWSHOT_7B: dict[str, dict[str, float]] = {
    "clsrl": _row7b([77.90, 53.17, 93.91, 84.19]),
    "think-after-answer": _row7b([76.29, 62.95, 94.84, 89.32]),
    "adaptive": _row7b([79.60, 56.62, 96.86, 89.92]),
    "nothink": _row7b([80.56, 58.91, 94.24, 94.02]),
}
FEWSHOT_7B_AVERAGE: dict[str, float] = {"clsrl": 77.29, "think-after-answer": 80.85, "adaptive": 80.75,
                                        "nothink": 81.93}

# §5.5 — v6 Table 11: open-set few-shot (no option list), Qwen2-VL-2B, in the order of clsrl_exp.grids "paper-open"
DATASETS_OPEN = tuple(dataset_list("paper-open"))  # imagenet, caltech101, food101, oxford_flowers, oxford_pets


def _row_open(values: list[float]) -> dict[str, float]:
    return dict(zip(DATASETS_OPEN, values, strict=True))


OPEN: dict[str, dict[str, float]] = {
    "zeroshot": _row_open([46.57, 62.96, 57.79, 48.44, 47.40]),
    "clsrl": _row_open([54.84, 79.07, 73.51, 67.64, 89.94]),
    "nothink": _row_open([56.45, 86.29, 71.99, 71.21, 86.07]),
}
OPEN_AVERAGE: dict[str, float] = {"zeroshot": 52.63, "clsrl": 73.00, "nothink": 74.40}

# inference variants the paper studies without classification numbers (the report says so beside their rows)
NO_NUMBERS = {
    "empty-think": "v6 Table 17 (\"w/o Thinking\", an empty think tag at inference) reports reasoning benchmarks "
                   "only (MathVista, MathVision, CVBench, puzzles): no classification numbers",
    "cross-prompt": "v6 Fig. 7(b) (Thinking-RFT asked with the no-thinking prompt) is a plot without published "
                    "numbers",
}

# §5.3 — v6 Table 6: ImageNet few-shot, 8xA100
EFFICIENCY: list[dict[str, object]] = [
    {"method": "sft", "accuracy": 41.60, "finetune_min": 35, "inference_min": 20},
    {"method": "clsrl", "accuracy": 92.24, "finetune_min": 1587, "inference_min": 30},
    {"method": "nothink", "accuracy": 92.31, "finetune_min": 94, "inference_min": 26},
]


def _matrix(rows: list[list[float]]) -> dict[str, dict[str, float]]:
    """11 rows of 11 test-dataset values + AVG, in the paper's order, to {train: {test | "AVG": value}}."""
    assert len(rows) == len(DATASETS)
    out = {}
    for train, values in zip(DATASETS, rows, strict=True):
        assert len(values) == len(DATASETS) + 1
        out[train] = {**_row(values[:-1]), "AVG": values[-1]}
    return out


# §5.4 — v6 Fig. 4(a) Thinking (CLS-RL) and 4(b) No-Thinking
TRANSFER: dict[str, dict[str, dict[str, float]]] = {
    "clsrl": _matrix(
        [
            [21.44, 9.13, 8.22, 1.14, 10.14, 13.60, 9.81, 15.89, 17.93, 13.88, 10.59, 11.98],
            [9.63, 9.53, 5.38, 4.30, 6.56, 6.70, 4.17, 16.15, 8.58, 9.81, 7.74, 8.05],
            [5.75, 6.65, 15.13, 1.46, 4.33, 4.51, 3.98, 6.39, 3.93, 4.36, 8.70, 5.93],
            [-2.52, 3.29, 0.65, 3.78, -1.05, 1.50, 1.55, 8.54, -3.88, -3.33, -4.65, 0.35],
            [11.98, 8.92, 7.39, -0.41, 11.39, 8.12, 6.08, 11.54, 11.15, 11.13, 8.01, 8.66],
            [14.66, 8.32, 7.21, 0.91, 8.31, 22.13, 5.89, 11.95, 13.22, 10.78, 6.72, 10.01],
            [7.89, 8.03, 4.61, 2.56, 5.92, 6.90, 13.36, 8.01, 4.87, 8.80, 10.62, 7.41],
            [5.14, 3.37, -3.60, -2.26, 2.61, 1.66, 0.93, 44.47, 1.41, 0.92, 8.01, 5.70],
            [16.98, 9.41, 9.34, 2.63, 8.02, 11.37, 3.08, 15.88, 20.73, 11.10, 5.82, 10.40],
            [10.46, 8.07, 6.21, 2.41, 6.44, 6.25, 2.64, 12.72, 9.44, 15.89, 2.91, 7.59],
            [12.37, 8.36, 4.97, 3.84, 7.13, 8.12, 5.42, 17.16, 9.91, 9.73, 31.65, 10.79],
        ]
    ),
    "nothink": _matrix(
        [
            [21.51, 9.61, 12.82, 0.86, 11.12, 14.25, 10.22, 18.13, 18.64, 14.41, 2.49, 12.19],
            [13.31, 9.90, 10.17, 2.84, 7.44, 11.20, 3.62, 15.61, 11.73, 12.61, -1.17, 8.84],
            [10.11, 8.97, 18.74, 0.77, 5.02, 7.84, -0.90, 13.31, 8.93, 10.76, -2.34, 7.38],
            [4.23, 7.83, 6.15, 12.35, -0.33, 3.65, -6.19, 13.13, 2.23, 8.59, -1.65, 4.54],
            [14.51, 9.05, 10.46, 1.84, 13.23, 12.95, 5.26, 17.46, 10.87, 12.87, 6.12, 10.42],
            [17.44, 8.60, 11.23, 1.14, 9.39, 27.16, 5.48, 17.42, 14.87, 12.77, 5.22, 11.88],
            [11.77, 8.80, 7.15, 0.67, 6.19, 8.69, 12.24, 15.98, 8.62, 10.94, 3.84, 8.63],
            [17.33, 8.32, 9.63, 3.47, 10.22, 11.90, 3.90, 56.73, 16.06, 13.06, 12.72, 14.85],
            [19.00, 8.84, 12.29, 3.70, 10.60, 12.34, 4.28, 18.95, 22.89, 14.09, 5.49, 12.04],
            [13.53, 8.97, 7.68, 3.46, 8.24, 10.15, -0.46, 15.89, 11.72, 17.61, 0.93, 8.88],
            [15.06, 7.87, 8.45, 3.39, 8.25, 10.96, 2.59, 24.90, 12.42, 11.87, 31.65, 12.49],
        ]
    ),
}
TRANSFER_NAMES = {"clsrl": "Thinking", "nothink": "No-Thinking"}


def fewshot(method: str, dataset: str, model: str, shots: int | None) -> float | None:
    """The paper's few-shot number for our (method, dataset), or None when the paper has none for this setting.

    2B: Table 5; 7B: Tables 7/12. Zero-shot does not depend on shots; the other methods match only at 4 shots.
    """
    if method != "zeroshot" and shots != PAPER_SHOTS:
        return None
    table = {PAPER_MODEL: FEWSHOT, PAPER_MODEL_7B: FEWSHOT_7B}.get(model, {})
    return table.get(method, {}).get(dataset)


def open_set(method: str, dataset: str, model: str, shots: int | None) -> float | None:
    """The paper's open-set few-shot number (Table 11) for our (method, dataset), or None."""
    if model != PAPER_MODEL or (method != "zeroshot" and shots != PAPER_SHOTS):
        return None
    return OPEN.get(method, {}).get(dataset)


def average(setting: str, method: str, model: str) -> tuple[float | None, tuple[str, ...]]:
    """(printed Average, the datasets it is over) of a (setting, method, model) table, or (None, ())."""
    if setting == "open":
        return (OPEN_AVERAGE.get(method), DATASETS_OPEN) if model == PAPER_MODEL else (None, ())
    if model == PAPER_MODEL_7B:
        return FEWSHOT_7B_AVERAGE.get(method), DATASETS_7B
    return (FEWSHOT_AVERAGE.get(method), DATASETS) if model == PAPER_MODEL else (None, ())


def source(setting: str, model: str) -> str:
    """Which paper table a (setting, model) few-shot view is compared with.

    >>> source("fewshot", "qwen2vl-7b"), source("open", "qwen2vl-2b"), source("fewshot", "tiny")
    ('v6 Tables 7/12', 'v6 Table 11', 'v6 Table 5')
    """
    if setting == "open":
        return "v6 Table 11"
    return "v6 Tables 7/12" if model == PAPER_MODEL_7B else "v6 Table 5"


def base2new(method: str, dataset: str, model: str, shots: int | None) -> tuple[float, float, float] | None:
    """The paper's (base, new, H) for our (method, dataset), or None."""
    if model != PAPER_MODEL or (method != "zeroshot" and shots != PAPER_SHOTS):
        return None
    return BASE2NEW.get(method, {}).get(dataset)
