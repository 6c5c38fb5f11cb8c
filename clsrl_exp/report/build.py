"""Assemble every table from the records (`build_report`) and write the report directory (`write_report`)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from clsrl_exp.fileio import atomic_write_bytes, atomic_write_text
from clsrl_exp.report import consistency, plots, render, tables, transfer
from clsrl_exp.report.content import Report, Transfer
from clsrl_exp.report.records import load_records


def _safe(name: object) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-")


def _transfer_stems(groups: list[tuple[str, str, int | None]]) -> dict[tuple, str]:
    """`transfer_<method>`, suffixed with the model and/or shots only where one method has several of them."""
    stems = {}
    for model, method, shots in groups:
        same = [g for g in groups if g[1] == method]
        stem = f"transfer_{_safe(method)}"
        if len({g[0] for g in same}) > 1:
            stem += f"_{_safe(model)}"
        if len({g[2] for g in same}) > 1:
            stem += f"_{shots}shot"
        stems[(model, method, shots)] = stem
    return stems


def build_report(roots: list[str | Path]) -> Report:
    """Load the records under `roots` (raises `RunRootNotFound` for a missing root) and compute every table."""
    records, skipped = load_records(roots)
    groups = transfer.transfer_groups(records)
    stems = _transfer_stems(groups)
    transfers = []
    for model, method, shots in groups:
        matrix, notes = transfer.transfer_matrix(records, method, model, shots)
        transfers.append(Transfer(stems[(model, method, shots)], model, method, shots, matrix, notes,
                                  transfer.paper_transfer_matrix(method)))
    return Report(
        roots=[str(r) for r in roots],
        records=records,
        skipped=skipped,
        fewshot=tables.fewshot_table(records),
        base2new=tables.base2new_table(records),
        cost=tables.cost_table(records),
        curves=tables.curves_frame(records),
        think_vs_nothink=tables.think_vs_nothink(records),
        transfers=transfers,
        open=tables.fewshot_table(records, "open"),
        consistency=consistency.consistency_table(records),
    )


def write_report(report: Report, out: str | Path) -> dict[str, Path]:
    """Write the CSVs, PNGs, report.md and report.tex into `out` (each atomically); returns {file name: path}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def csv(name: str, df: pd.DataFrame, index: bool = False) -> None:
        written[name] = render.write_csv_atomic(df, out / name, index=index)

    def png(name: str, data: bytes) -> None:
        written[name] = atomic_write_bytes(out / name, data)

    csv("fewshot.csv", report.fewshot)
    csv("base2new.csv", report.base2new)
    if not report.open.empty:
        csv("open.csv", report.open)
    csv("cost.csv", report.cost)
    csv("skipped.csv", report.skipped_frame)
    for t in report.transfers:
        csv(f"{t.stem}.csv", t.matrix, index=True)
        title = f"{t.method}: accuracy − zero-shot ({t.model}, {t.shots}-shot)"
        png(f"{t.stem}.png", plots.heatmap_png(t.matrix, title))
        if t.paper is not None:
            csv(f"{t.stem}_paper.csv", t.paper, index=True)
    if not report.curves.empty:
        csv("curves.csv", report.curves)
        png("curves.png", plots.curves_png(report.curves))
    if not report.think_vs_nothink.empty:
        csv("think_vs_nothink.csv", report.think_vs_nothink)
    if not report.consistency.empty:
        csv("consistency.csv", report.consistency)
    written["report.md"] = atomic_write_text(out / "report.md", render.render_markdown(report))
    written["report.tex"] = atomic_write_text(out / "report.tex", render.render_latex(report))
    return written
