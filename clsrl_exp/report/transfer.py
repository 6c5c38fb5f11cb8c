"""Free-lunch transfer matrices (pure): accuracy of a checkpoint trained on one dataset, evaluated on others,
minus the zero-shot accuracy on the evaluation dataset; plus the paper's §5.4 matrices in the same layout."""

from __future__ import annotations

from collections import defaultdict

import pandas as pd

from clsrl_exp.report import paper
from clsrl_exp.report.records import Record
from clsrl_exp.report.tables import NAN, _mean, _shots_key, dataset_sort_key, method_sort_key


def _base(rec: Record) -> str:
    return rec.run.get("base_method", rec.run["method"])


def transfer_groups(records: list[Record]) -> list[tuple[str, str, int | None]]:
    """(model, method, shots) of non-zeroshot few-shot runs that have at least one cross-dataset test eval
    (`method` is the table label: a non-default prompt variant makes a matrix of its own)."""
    found = set()
    for rec in records:
        r = rec.run
        if r["setting"] == "fewshot" and _base(rec) != "zeroshot":
            if any(ev["dataset"] != r["dataset"] and ev["split"] == "test" for ev in rec.evals):
                found.add((r["model"], r["method"], r["shots"]))
    return sorted(found, key=lambda k: (k[0], method_sort_key(k[1]), _shots_key(k[2])))


def zeroshot_reference(records: list[Record], model: str, prompt: str = "eval") -> dict[str, dict]:
    """{eval dataset: {seed: mean test accuracy}} of the zero-shot few-shot records of this model, evaluated with
    the same prompt variant.

    A zero-shot run's evaluation of its own dataset is the reference; evaluations of other datasets by zero-shot
    runs are used only where no such run exists (with one base model they are the same numbers; with a base model
    prepared per dataset, e.g. the tiny demo's warm start, only the own-dataset run is that dataset's baseline).
    """
    own: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    other: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        r = rec.run
        if _base(rec) == "zeroshot" and r["model"] == model and r["setting"] == "fewshot" and rec.prompt == prompt:
            for ev in rec.evals:
                if ev["split"] == "test":
                    (own if ev["dataset"] == r["dataset"] else other)[ev["dataset"]][r["seed"]].append(
                        float(ev["accuracy"]))
    acc = {ds: own.get(ds) or other[ds] for ds in {*own, *other}}
    return {ds: {seed: _mean(v) for seed, v in seeds.items()} for ds, seeds in acc.items()}


def transfer_matrix(records: list[Record], method: str, model: str, shots: int | None) -> tuple[pd.DataFrame, list]:
    """Rows = training dataset, columns = eval dataset, value = accuracy - zero-shot accuracy (same seed if
    there is one, else the zero-shot mean over seeds), averaged over seeds; `AVG` = mean of the row's values.

    Returns (matrix, notes); a cell whose column has no zero-shot reference is NaN and named in the notes.
    """
    mine = [rec for rec in records
            if (rec.run["setting"], rec.run["method"], rec.run["model"], rec.run["shots"]) ==
            ("fewshot", method, model, shots)]
    zs = zeroshot_reference(records, model, mine[0].prompt if mine else "eval")
    diffs: dict[tuple[str, str], list[float]] = defaultdict(list)
    missing = set()
    for rec in mine:
        r = rec.run
        for ev in rec.evals:
            if ev["split"] != "test":
                continue
            cell = (r["dataset"], ev["dataset"])
            ref = zs.get(ev["dataset"], {})
            if not ref:
                missing.add(ev["dataset"])
                diffs.setdefault(cell, [])
                continue
            base = ref[r["seed"]] if r["seed"] in ref else _mean(ref.values())
            diffs[cell].append(float(ev["accuracy"]) - base)
    rows_ = sorted({k[0] for k in diffs}, key=dataset_sort_key)
    cols = sorted({k[1] for k in diffs}, key=dataset_sort_key)
    data = [[_mean(diffs[(r, c)]) if (r, c) in diffs else NAN for c in cols] for r in rows_]
    df = pd.DataFrame(data, index=pd.Index(rows_, name="train_dataset"), columns=cols, dtype=float)
    df["AVG"] = df[cols].mean(axis=1, skipna=True) if cols else pd.Series(dtype=float)
    notes = [f"no zero-shot reference (method zeroshot, model {model}, setting fewshot, split test) for {ds}: "
             "its column is empty" for ds in sorted(missing, key=dataset_sort_key)]
    return df, notes


def paper_transfer_matrix(method: str) -> pd.DataFrame | None:
    """The paper's §5.4 matrix for this method (clsrl, nothink) in the same layout, or None."""
    if method not in paper.TRANSFER:
        return None
    m = paper.TRANSFER[method]
    df = pd.DataFrame.from_dict(m, orient="index")[[*paper.DATASETS, "AVG"]]
    df.index.name = "train_dataset"
    return df.astype(float)
