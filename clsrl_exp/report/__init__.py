"""Result report: `python -m clsrl_exp.report [RUN_ROOTS...] --out DIR`.

Reads every `result.json` under the run roots, validates them (`records`), computes tidy tables (`tables`) beside
the paper's numbers (`paper`), the think/answer consistency from the prediction logs (`consistency`), draws heatmaps
and curves (`plots`) and writes CSV/Markdown/LaTeX (`render`).
Pure pandas + matplotlib (Agg) + tabulate: never imports torch/transformers/trl.
"""

from clsrl_exp.report.build import build_report, write_report
from clsrl_exp.report.content import Report, Transfer
from clsrl_exp.report.records import Record, RunRootNotFound, Skipped, load_records

__all__ = ["Record", "Report", "RunRootNotFound", "Skipped", "Transfer", "build_report", "load_records",
           "write_report"]
