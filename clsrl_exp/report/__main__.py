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
    p.add_argument("--print", action="store_true", dest="show",
                   help="also print the tables (accuracy per method and dataset, think vs no-think, transfer)")
    return p


def _show(report) -> None:
    """The short before/after view `make demo` prints."""
    from tabulate import tabulate

    few = report.fewshot[report.fewshot["dataset"] != "Average"]
    if len(few):
        wide = few.pivot_table(index="method", columns="dataset", values="mean", sort=False)
        print("\nheld-out accuracy (%), mean over seeds:")
        print(tabulate(wide, headers="keys", tablefmt="simple", floatfmt=".1f"))
    tvn = report.think_vs_nothink
    if len(tvn):
        print("\nthinking vs no thinking (same warm start, same steps):")
        cols = ["dataset", "method", "accuracy", "wall_min", "mean_completion_tokens"]
        print(tabulate(tvn[cols], headers=["dataset", "method", "accuracy", "train min", "completion tokens"],
                       tablefmt="simple", floatfmt=".2f", showindex=False))
    for t in report.transfers:
        print(f"\nfree lunch ({t.method}): accuracy - zero-shot accuracy; rows = trained on, columns = tested on")
        print(tabulate(t.matrix, headers="keys", tablefmt="simple", floatfmt=".1f"))


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
    for name, table in (("few-shot", report.fewshot), ("open-set", report.open)):
        if table.empty:
            continue
        for row in table[table["dataset"] == "Average"].itertuples(index=False):
            paper = "" if row.paper != row.paper else f" (paper {row.paper:.2f})"
            print(f"  {name} {row.model} {row.method} {row.shots}-shot: Average {row.mean:.2f} over "
                  f"{row.n_datasets} datasets{paper}")
    avg = report.base2new[report.base2new["dataset"] == "Average"]
    for row in avg.itertuples(index=False):
        paper = "" if row.paper_H != row.paper_H else f" (paper {row.paper_H:.2f})"
        print(f"  base2new {row.model} {row.method}: Average H {row.H:.2f} over {row.n_datasets} datasets{paper}")
    if args.show:
        _show(report)
    print(f"files: {', '.join(sorted(written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
