"""Writers: atomic file writes, and the report as Markdown (tabulate pipe) and LaTeX (tabulate latex_booktabs).

Both documents are rendered from one list of blocks (`report_blocks`) so they always hold the same tables.
Missing values are "—" in Markdown, "--" in LaTeX, empty in CSV; floats have 2 decimals in the documents.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from tabulate import tabulate

from clsrl_exp.fileio import atomic_write_text
from clsrl_exp.report import paper, tables
from clsrl_exp.report.content import Report

NO_RECORDS = "no complete records found"


def write_csv_atomic(df: pd.DataFrame, path: str | Path, index: bool = False) -> Path:
    """CSV with empty cells for missing values; floats rounded to 6 decimals (drops float noise only)."""
    df = df.copy()
    floats = df.select_dtypes("float").columns
    df[floats] = df[floats].round(6)
    return atomic_write_text(path, df.to_csv(index=index, na_rep="", lineterminator="\n"))


# ------------------------------------------------------------------------------------------------ tables
def _cells(df: pd.DataFrame, index: bool) -> tuple[list[str], list[list]]:
    if index:
        df = df.reset_index()
    rows = [[None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in row]
            for row in df.itertuples(index=False)]
    return [str(c) for c in df.columns], rows


def md_table(df: pd.DataFrame, index: bool = False) -> str:
    headers, rows = _cells(df, index)
    return tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".2f", missingval="—")


def latex_table(df: pd.DataFrame, index: bool = False) -> str:
    headers, rows = _cells(df, index)
    return tabulate(rows, headers=headers, tablefmt="latex_booktabs", floatfmt=".2f", missingval="--")


# ------------------------------------------------------------------------------------------------ content
def _groups(df: pd.DataFrame) -> list[tuple]:
    """(model, shots) groups of a few-shot table; zero-shot rows only make a group of their own when the model
    has no trained method (they are shown in every group of their model otherwise)."""
    trained = df[df["method"] != "zeroshot"]
    keys = {(m, None if pd.isna(s) else int(s)) for m, s in zip(trained["model"], trained["shots"], strict=True)}
    keys |= {(m, None if pd.isna(s) else int(s)) for m, s in zip(df["model"], df["shots"], strict=True)
             if m not in set(trained["model"])}
    return sorted(keys, key=lambda k: (k[0], -1 if k[1] is None else k[1]))


def _wide_views(df: pd.DataFrame, setting: str) -> list[tuple]:
    """Per (model, shots): the paper-style wide table, then a note for every prompt-variant row without paper
    numbers (v6 Table 17 and Fig. 7(b) publish none for classification)."""
    b: list[tuple] = []
    for model, shots in _groups(df):
        b.append(("h3", f"{model}, {shots}-shot (ours vs paper, {paper.source(setting, model)})"))
        wide = tables.fewshot_wide(df, model, shots)
        b.append(("table", wide, False))
        b.extend(("p", f"Note: {note}.") for note in tables.variant_notes(wide["method"]))
    return b


def report_blocks(report: Report) -> list[tuple]:
    """The report as ("h1"|"h2"|"h3"|"p"|"table"|"img", ...) blocks."""
    b: list[tuple] = [("h1", "CLS-RL / Think-or-Not-Think reproduction report")]
    b.append(("p", f"Paper: {paper.CITATION}. Paper numbers are Qwen2-VL-2B-Instruct ({paper.PAPER_MODEL}) at "
                   f"{paper.PAPER_SHOTS} shots (Tables 7/12: Qwen2-VL-7B-Instruct, {paper.PAPER_MODEL_7B}) and use "
                   "the paper's lenient scoring; `*_strict` columns are our strict accuracy. `diff` = ours − paper."))
    b.append(("p", f"{len(report.records)} complete records from {', '.join(report.roots)}; "
                   f"{len(report.skipped)} skipped (see Skipped records)."))
    if not report.records:
        b.append(("p", f"**{NO_RECORDS}**"))
    if not report.fewshot.empty:
        b.append(("h2", "Few-shot accuracy (%)"))
        b.append(("p", "Mean and sample std (ddof=1) over seeds of the test accuracy on the training dataset. "
                       "Average = mean of the per-dataset means over the datasets present (`n_datasets`); its "
                       "paper value is the printed average when all the table's datasets are present (11; 7B: 4), "
                       "else the mean of the paper's numbers over the same datasets."))
        b.extend(_wide_views(report.fewshot, "fewshot"))
        b.append(("h3", "Few-shot detail"))
        b.append(("table", report.fewshot, False))
    if not report.open.empty:
        b.append(("h2", "Open-set few-shot accuracy (%)"))
        b.append(("p", "No option list: the question names the domain (flower, food, animal, object; "
                       "`dataset.open_question`), scored as the closed set (lenient containment). Same statistics "
                       "as the few-shot table; the paper's numbers are v6 Table 11 (Qwen2-VL-2B, 4 shots)."))
        b.extend(_wide_views(report.open, "open"))
        b.append(("h3", "Open-set detail: `open.csv`"))
        b.append(("table", report.open, False))
    if not report.base2new.empty:
        b.append(("h2", "Base-to-new (%)"))
        b.append(("p", "base/new = mean over seeds; H = 2BN/(B+N) of those means. Average: base and new are means "
                       "over datasets and H = H(mean base, mean new), the paper's convention (v6 Table 9)."))
        b.append(("table", report.base2new, False))
    if report.transfers:
        b.append(("h2", "Free-lunch transfer (accuracy − zero-shot, pp)"))
        b.append(("p", "Rows: fine-tuning dataset; columns: evaluation dataset; value = accuracy − zero-shot accuracy "
                       "on the column dataset (same seed when a zero-shot record has it, else the zero-shot mean), "
                       "mean over seeds; AVG = mean over the row's evaluated columns."))
        for t in report.transfers:
            b.append(("h3", f"{t.method} ({t.model}, {t.shots}-shot): `{t.stem}.csv`"))
            b.append(("table", t.matrix, True))
            b.append(("img", f"{t.stem}.png", f"{t.method} transfer heatmap"))
            for note in t.notes:
                b.append(("p", f"Note: {note}."))
            if t.paper is not None:
                b.append(("h3", f"Paper: {paper.TRANSFER_NAMES[t.method]} (v6 Fig. 4): `{t.stem}_paper.csv`"))
                b.append(("table", t.paper, True))
    if not report.cost.empty:
        b.append(("h2", "Training cost"))
        b.append(("p", "Mean over seeds of training wall time, optimizer steps and mean completion tokens; zero-shot "
                       "has no training."))
        b.append(("table", report.cost, False))
        b.append(("h3", "Paper: ImageNet few-shot efficiency, 8xA100 (v6 Table 6)"))
        b.append(("table", tables.paper_efficiency_table(), False))
    if not report.think_vs_nothink.empty:
        b.append(("h2", "Think vs no-think"))
        b.append(("p", "clsrl (thinking) vs nothink on the datasets both have: accuracy (few-shot: test; "
                       "base-to-new: H), training minutes and mean completion tokens."))
        b.append(("table", report.think_vs_nothink, False))
    if not report.consistency.empty:
        b.append(("h2", "Think/answer consistency (rule-based)"))
        b.append(("p", "The paper (App. E.1) asked GPT-4o whether the class concluded in `<think>` matches the "
                       "`<answer>`; this is a reproducible rule instead (`clsrl_exp/report/consistency.py`). Of the "
                       "predictions whose reply has a think block (`n_think`; own-dataset evaluations, all seeds "
                       "pooled): the class the think text concludes is the LAST option it names that is not negated "
                       "(whole words, any case, `_`/`-` as spaces, plural allowed, the longest name at each place; "
                       "negated: a cue such as not, no, n't, than, unlike, instead of within four filler words "
                       "before it in the same sentence); open-set uses the dataset's classes as the options. "
                       "`agree` / `disagree` / `no_class` = % of `n_think` where the answer names the same class / "
                       "another or none / the think names none; `acc_*` = answer accuracy (lenient, %) in each "
                       "group. Empty-think rows (`[empty-think]`) start with an empty think block by construction: "
                       "only a think block the model writes after it can name a class."))
        b.append(("table", report.consistency, False))
    if not report.curves.empty:
        b.append(("h2", "Training curves"))
        b.append(("p", "Held-out accuracy vs step, mean over seeds (faint lines: single seeds); data in `curves.csv`."))
        b.append(("img", "curves.png", "training curves"))
    b.append(("h2", "Skipped records"))
    if report.skipped:
        b.append(("p", "Excluded from every table:"))
        b.append(("table", report.skipped_frame, False))
    else:
        b.append(("p", "none"))
    return b


def render_markdown(report: Report) -> str:
    out = []
    for block in report_blocks(report):
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + block[1])
        elif kind == "p":
            out.append(block[1])
        elif kind == "table":
            out.append(md_table(block[1], index=block[2]))
        elif kind == "img":
            out.append(f"![{block[2]}]({block[1]})")
    return "\n\n".join(out) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "−": "$-$", "—": "--", "`": ""}


def _tex(text: str) -> str:
    text = text.replace("**", "")
    return "".join(_TEX.get(ch, ch) for ch in text)


def render_latex(report: Report) -> str:
    out = [r"\documentclass{article}", r"\usepackage[margin=1.5cm,landscape]{geometry}", r"\usepackage{booktabs}",
           r"\usepackage{graphicx}", r"\begin{document}"]
    sections = {"h1": r"\section*{%s}", "h2": r"\subsection*{%s}", "h3": r"\subsubsection*{%s}"}
    for block in report_blocks(report):
        kind = block[0]
        if kind in sections:
            out.append(sections[kind] % _tex(block[1]))
        elif kind == "p":
            out.append(_tex(block[1]) + "\n")
        elif kind == "table":
            out.append("{\\scriptsize\n" + latex_table(block[1], index=block[2]) + "\n}\n")
        elif kind == "img":
            out.append(rf"\includegraphics[width=0.8\linewidth]{{{block[1]}}}" + "\n")
    out.append(r"\end{document}")
    return "\n".join(out) + "\n"
