"""What a report holds: the tables computed from the records (`build`) that the writers render (`render`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from clsrl_exp.report import tables
from clsrl_exp.report.records import Record, Skipped


@dataclass
class Transfer:
    """One free-lunch matrix: (model, method, shots), its file stem, our matrix, notes and the paper's matrix."""

    stem: str
    model: str
    method: str
    shots: int | None
    matrix: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    paper: pd.DataFrame | None = None


@dataclass
class Report:
    roots: list[str]
    records: list[Record]
    skipped: list[Skipped]
    fewshot: pd.DataFrame
    base2new: pd.DataFrame
    cost: pd.DataFrame
    curves: pd.DataFrame
    think_vs_nothink: pd.DataFrame
    transfers: list[Transfer]
    open: pd.DataFrame = field(default_factory=pd.DataFrame)  # open-set few-shot, fewshot's columns (v6 Table 11)
    consistency: pd.DataFrame = field(default_factory=pd.DataFrame)  # think/answer agreement (consistency.py)

    @property
    def skipped_frame(self) -> pd.DataFrame:
        return tables.skipped_table(self.skipped)
