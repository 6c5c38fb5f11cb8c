"""Pure table functions: a list of `Record` in, one tidy `DataFrame` out (no I/O).

Conventions: accuracies in percent; std is the sample std over seeds (ddof=1, NaN for one seed); an "Average"
row averages the per-dataset means over the datasets present (`n_datasets` shows a partial average); the
base-to-new Average H is H(mean base, mean new), the paper's convention. Paper numbers come from `paper.py`;
a paper Average is the printed one when all the paper table's datasets are present (11; Tables 7/12: 4; Table
11: 5), else the mean of the paper's numbers over the same datasets (like for like), else empty.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable

import pandas as pd

from clsrl_exp.report import paper
from clsrl_exp.report.records import Record

AVERAGE = "Average"
NAN = float("nan")

FEWSHOT_COLUMNS = ["method", "dataset", "shots", "mean", "std", "n_seeds", "model", "mean_strict", "paper", "diff",
                   "n_datasets"]
BASE2NEW_COLUMNS = ["method", "dataset", "base", "new", "H", "model", "shots", "n_seeds", "paper_base", "paper_new",
                    "paper_H", "diff_H", "base_strict", "new_strict", "H_strict", "n_datasets"]
COST_COLUMNS = ["method", "dataset", "model", "setting", "shots", "n_seeds", "wall_s", "wall_min", "steps",
                "mean_completion_tokens"]
CURVE_COLUMNS = ["model", "method", "dataset", "setting", "shots", "seed", "step", "eval_dataset", "split", "accuracy"]
TVN_COLUMNS = ["model", "setting", "shots", "dataset", "method", "n_seeds", "accuracy", "wall_min",
               "mean_completion_tokens"]
SKIPPED_COLUMNS = ["path", "reason"]


# ------------------------------------------------------------------------------------------------ helpers
def dataset_sort_key(name: str) -> tuple:
    """Paper column order, then other names alphabetically, then the Average row."""
    if name == AVERAGE:
        return (2, "")
    if name in paper.DATASETS:
        return (0, paper.DATASETS.index(name))
    return (1, name)


def method_sort_key(name: str) -> tuple:
    return (0, paper.METHODS.index(name)) if name in paper.METHODS else (1, name)


def _setting_key(setting: str) -> tuple:
    order = ("fewshot", "base2new")
    return (order.index(setting), "") if setting in order else (len(order), setting)


def _shots_key(shots) -> tuple:
    return (1, 0) if shots is None else (0, shots)


def harmonic(base: float, new: float) -> float:
    """H = 2BN/(B+N); 0 when both are 0, NaN when either is NaN."""
    if _isnan(base) or _isnan(new):
        return NAN
    return 0.0 if base + new == 0 else 2 * base * new / (base + new)


def _isnan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _mean(values: Iterable, strict_all: bool = False) -> float:
    """Mean; NaN when empty, or (strict_all) when any value is missing."""
    values = list(values)
    present = [v for v in values if not _isnan(v)]
    if not present or (strict_all and len(present) != len(values)):
        return NAN
    return sum(present) / len(present)


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else NAN


def _na_to_none(value):
    return None if pd.isna(value) else value


def _sub(a, b) -> float:
    return NAN if _isnan(a) or _isnan(b) else a - b


def _frame(rows: list[dict], columns: list[str], int_columns: Iterable[str] = ()) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    for col in int_columns:
        df[col] = df[col].astype("Int64")
    return df.reset_index(drop=True)


def _paper_average(per_dataset: dict[str, object], printed: object, combine,
                   datasets: Iterable[str] = paper.DATASETS) -> object:
    """The printed average when all the table's datasets (the 11 paper datasets unless given) are present; else
    `combine(values)` over the same datasets when the paper has all of them; else None."""
    if printed is not None and set(per_dataset) == set(datasets):
        return printed
    if not per_dataset or any(v is None for v in per_dataset.values()):
        return None
    return combine(list(per_dataset.values()))


def _b2n_combine(values: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    b, n = _mean(v[0] for v in values), _mean(v[1] for v in values)
    return (b, n, harmonic(b, n))


def _by_setting(records: list[Record], setting: str) -> dict[tuple, list[Record]]:
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for rec in records:
        r = rec.run
        if r["setting"] == setting:
            groups[(r["model"], r["method"], r["shots"], r["dataset"])].append(rec)
    return groups


def _group_order(key: tuple) -> tuple:
    model, method, shots, dataset = key
    return (model, method_sort_key(method), _shots_key(shots), dataset_sort_key(dataset))


# ------------------------------------------------------------------------------------------------ few-shot
def fewshot_table(records: list[Record], setting: str = "fewshot") -> pd.DataFrame:
    """One row per model x method x dataset x shots (own-dataset test eval) + Average rows. `setting` is `fewshot`
    (paper: v6 Table 5 for the 2B model, Tables 7/12 for the 7B) or `open` (open-set, v6 Table 11)."""
    lookup = paper.open_set if setting == "open" else paper.fewshot
    rows, per_group = [], defaultdict(list)
    groups = _by_setting(records, setting)
    for key in sorted(groups, key=_group_order):
        model, method, shots, dataset = key
        recs = groups[key]
        accs = [rec.accuracy(dataset, "test") for rec in recs]
        stricts = [rec.accuracy(dataset, "test", strict=True) for rec in recs]
        ref = lookup(method, dataset, model, shots)
        mean = _mean(accs)
        row = {"method": method, "dataset": dataset, "shots": shots, "mean": mean, "std": _std(accs),
               "n_seeds": len(recs), "model": model, "mean_strict": _mean(stricts, strict_all=True),
               "paper": NAN if ref is None else ref, "diff": _sub(mean, ref), "n_datasets": 1}
        rows.append(row)
        per_group[(model, method, shots)].append(row)
    for (model, method, shots), group in per_group.items():
        refs = {row["dataset"]: lookup(method, row["dataset"], model, shots) for row in group}
        printed, datasets = paper.average(setting, method, model)
        ref = _paper_average(refs, printed, _mean, datasets)
        mean = _mean(row["mean"] for row in group)
        rows.append({"method": method, "dataset": AVERAGE, "shots": shots, "mean": mean, "std": NAN,
                     "n_seeds": min(row["n_seeds"] for row in group), "model": model,
                     "mean_strict": _mean((row["mean_strict"] for row in group), strict_all=True),
                     "paper": NAN if ref is None else ref, "diff": _sub(mean, ref), "n_datasets": len(group)})
    rows.sort(key=lambda r: _group_order((r["model"], r["method"], r["shots"], r["dataset"])))
    return _frame(rows, FEWSHOT_COLUMNS, ("shots", "n_seeds", "n_datasets"))


def variant_notes(methods: Iterable[str]) -> list[str]:
    """Why a prompt-variant row (`<method> [<variant>]`) has no paper numbers beside it, one note per row.

    >>> variant_notes(["clsrl", "clsrl [empty-think]", "clsrl [nothink]", "nothink [train]"])[0][:40]
    '`clsrl [empty-think]`: no paper numbers:'
    >>> [n.split(": ")[0] for n in variant_notes(["clsrl [nothink]", "nothink [train]"])]
    ['`clsrl [nothink]`', '`nothink [train]`']
    """
    notes = []
    for label in methods:
        if not label.endswith("]") or " [" not in label:
            continue
        variant = label[label.index(" [") + 2:-1]
        if variant == "empty-think":
            why = paper.NO_NUMBERS["empty-think"]
        elif variant == "train":
            why = "the method's training template at inference: our variant, not in the paper"
        else:
            why = f"the {variant} method's eval template (cross-prompt): " + paper.NO_NUMBERS["cross-prompt"]
        notes.append(f"`{label}`: no paper numbers: {why}")
    return notes


# ------------------------------------------------------------------------------------------------ base-to-new
def base2new_table(records: list[Record]) -> pd.DataFrame:
    """Per dataset: base/new = mean over seeds, H = H(base, new); Average: means over datasets, H of the means."""
    rows, per_group = [], defaultdict(list)
    groups = _by_setting(records, "base2new")
    for key in sorted(groups, key=_group_order):
        model, method, shots, dataset = key
        recs = groups[key]
        b, n = _mean(r.accuracy(dataset, "base") for r in recs), _mean(r.accuracy(dataset, "new") for r in recs)
        bs = _mean((r.accuracy(dataset, "base", strict=True) for r in recs), strict_all=True)
        ns = _mean((r.accuracy(dataset, "new", strict=True) for r in recs), strict_all=True)
        ref = paper.base2new(method, dataset, model, shots) or (NAN, NAN, NAN)
        row = {"method": method, "dataset": dataset, "base": b, "new": n, "H": harmonic(b, n), "model": model,
               "shots": shots, "n_seeds": len(recs), "paper_base": ref[0], "paper_new": ref[1], "paper_H": ref[2],
               "diff_H": _sub(harmonic(b, n), ref[2]), "base_strict": bs, "new_strict": ns,
               "H_strict": harmonic(bs, ns), "n_datasets": 1}
        rows.append(row)
        per_group[(model, method, shots)].append(row)
    for (model, method, shots), group in per_group.items():
        b, n = _mean(r["base"] for r in group), _mean(r["new"] for r in group)
        bs = _mean((r["base_strict"] for r in group), strict_all=True)
        ns = _mean((r["new_strict"] for r in group), strict_all=True)
        refs = {r["dataset"]: paper.base2new(method, r["dataset"], model, shots) for r in group}
        ref = _paper_average(refs, paper.BASE2NEW_AVERAGE.get(method), _b2n_combine) or (NAN, NAN, NAN)
        rows.append({"method": method, "dataset": AVERAGE, "base": b, "new": n, "H": harmonic(b, n), "model": model,
                     "shots": shots, "n_seeds": min(r["n_seeds"] for r in group), "paper_base": ref[0],
                     "paper_new": ref[1], "paper_H": ref[2], "diff_H": _sub(harmonic(b, n), ref[2]),
                     "base_strict": bs, "new_strict": ns, "H_strict": harmonic(bs, ns), "n_datasets": len(group)})
    rows.sort(key=lambda r: _group_order((r["model"], r["method"], r["shots"], r["dataset"])))
    return _frame(rows, BASE2NEW_COLUMNS, ("shots", "n_seeds", "n_datasets"))


# ------------------------------------------------------------------------------------------------ cost, curves
def _train_value(rec: Record, key: str) -> float:
    value = (rec.train or {}).get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else NAN


def cost_table(records: list[Record]) -> pd.DataFrame:
    """Training wall time (s, min), steps and mean completion tokens per method x dataset, mean over seeds."""
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for rec in records:
        r = rec.run
        groups[(r["model"], r["method"], r["setting"], r["shots"], r["dataset"])].append(rec)
    rows = []
    for (model, method, setting, shots, dataset), recs in groups.items():
        wall = _mean(_train_value(r, "wall_s") for r in recs)
        rows.append({"method": method, "dataset": dataset, "model": model, "setting": setting, "shots": shots,
                     "n_seeds": len(recs), "wall_s": wall, "wall_min": wall / 60,
                     "steps": _mean(_train_value(r, "steps") for r in recs),
                     "mean_completion_tokens": _mean(_train_value(r, "mean_completion_tokens") for r in recs)})
    rows.sort(key=lambda r: (r["model"], _setting_key(r["setting"]), _shots_key(r["shots"]),
                             method_sort_key(r["method"]), dataset_sort_key(r["dataset"])))
    return _frame(rows, COST_COLUMNS, ("shots", "n_seeds"))


def curves_frame(records: list[Record]) -> pd.DataFrame:
    """Every `train.curve` point as one tidy row (empty frame when no record has a curve)."""
    rows = []
    for rec in records:
        r = rec.run
        for point in (rec.train or {}).get("curve") or []:
            if not isinstance(point, dict) or "step" not in point or "accuracy" not in point:
                continue
            rows.append({"model": r["model"], "method": r["method"], "dataset": r["dataset"],
                         "setting": r["setting"], "shots": r["shots"], "seed": r["seed"], "step": point["step"],
                         "eval_dataset": point.get("dataset", r["dataset"]), "split": point.get("split", "test"),
                         "accuracy": float(point["accuracy"])})
    rows.sort(key=lambda r: (r["model"], method_sort_key(r["method"]), dataset_sort_key(r["dataset"]),
                             str(r["seed"]), dataset_sort_key(r["eval_dataset"]), r["split"], r["step"]))
    return _frame(rows, CURVE_COLUMNS, ("shots",))


def think_vs_nothink(records: list[Record]) -> pd.DataFrame:
    """clsrl vs nothink on the (model, setting, shots, dataset, prompt variant) both have: accuracy (few-shot test;
    base-to-new H of the mean base/new), training minutes and mean completion tokens, mean over seeds; + Average
    rows. Rows carry the table label of the method (`nothink [train]` for a non-default prompt)."""
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for rec in records:
        r = rec.run
        base = r.get("base_method", r["method"])
        if base in ("clsrl", "nothink"):
            groups[(r["model"], r["setting"], r["shots"], r["dataset"], rec.prompt, base)].append(rec)
    shared = sorted({k[:5] for k in groups if (*k[:5], "clsrl") in groups and (*k[:5], "nothink") in groups},
                    key=lambda k: (k[0], _setting_key(k[1]), _shots_key(k[2]), dataset_sort_key(k[3]), k[4]))
    rows, per = [], defaultdict(list)
    for key in shared:
        model, setting, shots, dataset, prompt = key
        for base in ("clsrl", "nothink"):
            recs = groups[(*key, base)]
            if setting == "base2new":
                acc = harmonic(_mean(r.accuracy(dataset, "base") for r in recs),
                               _mean(r.accuracy(dataset, "new") for r in recs))
            else:
                acc = _mean(r.accuracy(dataset, "test") for r in recs)
            method = recs[0].run["method"]
            row = {"model": model, "setting": setting, "shots": shots, "dataset": dataset, "method": method,
                   "n_seeds": len(recs), "accuracy": acc,
                   "wall_min": _mean(_train_value(r, "wall_s") for r in recs) / 60,
                   "mean_completion_tokens": _mean(_train_value(r, "mean_completion_tokens") for r in recs)}
            rows.append(row)
            per[(model, setting, shots, method)].append(row)
    for (model, setting, shots, method), group in per.items():
        if len(group) > 1:
            rows.append({"model": model, "setting": setting, "shots": shots, "dataset": AVERAGE, "method": method,
                         "n_seeds": min(r["n_seeds"] for r in group),
                         "accuracy": _mean(r["accuracy"] for r in group),
                         "wall_min": _mean(r["wall_min"] for r in group),
                         "mean_completion_tokens": _mean(r["mean_completion_tokens"] for r in group)})
    rows.sort(key=lambda r: (r["model"], _setting_key(r["setting"]), _shots_key(r["shots"]),
                             dataset_sort_key(r["dataset"]), method_sort_key(r["method"])))
    return _frame(rows, TVN_COLUMNS, ("shots", "n_seeds"))


def skipped_table(skipped) -> pd.DataFrame:
    return _frame([{"path": s.path, "reason": s.reason} for s in skipped], SKIPPED_COLUMNS)


# ------------------------------------------------------------------------------------------------ paper views
def fewshot_wide(fewshot: pd.DataFrame, model: str, shots) -> pd.DataFrame:
    """Paper-style view of `fewshot_table` for one (model, shots): a row per method with our means, followed by
    "<method> (paper)" and "<method> (diff)" rows where the paper has numbers; columns = datasets + Average.
    Zero-shot rows are shown whatever their shots value (0 or k) when the model has a single one."""
    rows_ = list(zip(fewshot["model"], fewshot["method"], fewshot["shots"].map(_na_to_none), strict=True))
    zs_shots = {s for m, meth, s in rows_ if m == model and meth == "zeroshot"}
    # zero-shot does not depend on shots: show it beside every shots group (its own shots if it has them)
    zs_ok = {shots} if shots in zs_shots else (zs_shots if len(zs_shots) == 1 else set())
    sub = fewshot[[m == model and (s in zs_ok if meth == "zeroshot" else s == shots) for m, meth, s in rows_]]
    datasets = sorted(sub["dataset"].unique(), key=dataset_sort_key)
    rows = []
    for method in sorted(sub["method"].unique(), key=method_sort_key):
        m = sub[sub["method"] == method].set_index("dataset")
        for label, col in ((method, "mean"), (f"{method} (paper)", "paper"), (f"{method} (diff)", "diff")):
            values = {ds: m[col].get(ds, NAN) for ds in datasets}
            if col == "mean" or any(not _isnan(v) for v in values.values()):
                rows.append({"method": label, **values})
    return pd.DataFrame(rows, columns=["method", *datasets])


def paper_efficiency_table() -> pd.DataFrame:
    """The paper's §5.3 ImageNet few-shot efficiency table (v6 Table 6; 8xA100)."""
    return pd.DataFrame(paper.EFFICIENCY, columns=["method", "accuracy", "finetune_min", "inference_min"])
