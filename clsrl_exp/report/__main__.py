"""CLI: `python -m clsrl_exp.report [RUN_ROOTS...] --out DIR` (defaults: outputs/ and outputs/report/)."""

from __future__ import annotations

import argparse
import sys

from clsrl_exp.errors import UserError
from clsrl_exp.report.build import build_report, write_report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m clsrl_exp.report",
                                description="Tables, plots and report.md/report.tex from result.json records, "
                                            "beside the paper's numbers (arXiv 2503.16188).")
    p.add_argument("run_roots", nargs="*", default=["outputs/"], metavar="RUN_ROOT",
                   help="directories searched recursively for result.json (default: outputs/)")
    p.add_argument("--out", default="outputs/report/", help="report directory (default: outputs/report/)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        report = build_report(args.run_roots)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    written = write_report(report, args.out)
    print(f"report: {written['report.md']}")
    if not report.records:
        print("no complete records found")
    print(f"records: {len(report.records)} complete, {len(report.skipped)} skipped")
    avg = report.fewshot[report.fewshot["dataset"] == "Average"]
    for row in avg.itertuples(index=False):
        paper = "" if row.paper != row.paper else f" (paper {row.paper:.2f})"
        print(f"  few-shot {row.model} {row.method} {row.shots}-shot: Average {row.mean:.2f} over "
              f"{row.n_datasets} datasets{paper}")
    avg = report.base2new[report.base2new["dataset"] == "Average"]
    for row in avg.itertuples(index=False):
        paper = "" if row.paper_H != row.paper_H else f" (paper {row.paper_H:.2f})"
        print(f"  base2new {row.model} {row.method}: Average H {row.H:.2f} over {row.n_datasets} datasets{paper}")
    print(f"files: {', '.join(sorted(written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
