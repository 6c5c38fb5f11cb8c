"""Share a frozen eval set the way the authors shared theirs: `python -m clsrl_exp.data.export`.

    python -m clsrl_exp.data.export dtd --setting fewshot --seed 1 --out dtd_test.jsonl \
        [--train-out dtd_train.jsonl] [--shots 4] [--yaml dtd-export.yaml] [--config-dir DIR] [key=value ...]

writes the eval set(s) of (dataset, setting, seed) as the authors' test JSONL (`image` relative to the dataset's
image root, `label`, `split`, `problem` = question + frozen option list), and with `--train-out` the K-shot
training subset as their training rows (`image`, `problem`, `solution` = `<answer>label</answer>`, plus `label` and
`split`). Base-to-new writes one file per split: `{split}` in `--out` is replaced, else `_base` / `_new` is added
before the suffix. `--yaml` writes the `layout: clsrl_official` dataset config that reads them back: the same
images, byte-identical prompts, the same scores. `key=value` overrides go to the composed config (`data.root=...`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from clsrl_exp.compose import compose_run
from clsrl_exp.data.protocol import ensure_dataset, eval_sets, load_splits, train_examples
from clsrl_exp.errors import UserError
from clsrl_exp.fileio import atomic_write_text
from clsrl_exp.prompts import example_problem


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _image(ex, image_root: Path) -> str:
    """The row's image: the item's path under the image root, or the absolute file (images extracted from a data
    file have no path under the root)."""
    return ex.id if (image_root / ex.id).is_file() else ex.image_path


def split_path(out: Path, split: str, n_splits: int) -> Path:
    """`out` for a one-split setting; else `{split}` substituted, or `_<split>` added before the suffix.

    >>> str(split_path(Path("a/x.jsonl"), "base", 2)), str(split_path(Path("a/{split}.jsonl"), "new", 2))
    ('a/x_base.jsonl', 'a/new.jsonl')
    """
    if n_splits == 1:
        return out
    if "{split}" in str(out):
        return Path(str(out).replace("{split}", split))
    return out.with_name(f"{out.stem}_{split}{out.suffix}")


def export(run, out: Path, train_out: Path | None = None) -> dict[str, Path]:
    """Write the run's eval set(s) (and training subset) in the authors' JSONL formats; returns split -> file."""
    ds = run.dataset
    ensure_dataset(ds, run.data.root)  # a synthetic dataset is generated on first use, as for a run
    splits = load_splits(ds, run.data.root)
    sets = eval_sets(run, ds, splits)
    written = {}
    for es in sets:
        rows = [{"image": _image(ex, splits.image_root), "label": ex.label, "split": "test",
                 "problem": example_problem(es.question, ex.options, ex.problem)} for ex in es.examples]
        path = split_path(out, es.split, len(sets))
        atomic_write_text(path, _jsonl(rows))
        written[es.split] = path
        if es.missing:
            print(f"warning: {len(es.missing)} {es.split} image(s) missing, not exported (e.g. {es.missing[0]})",
                  file=sys.stderr)
    if train_out is not None:
        rows = [{"image": _image(ex, splits.image_root),
                 "problem": example_problem(ds.question, ex.options, ex.problem),
                 "solution": f"<answer>{ex.label}</answer>", "label": ex.label, "split": "train"}
                for ex in train_examples(run, ds, splits)]
        atomic_write_text(train_out, _jsonl(rows))
        written["train"] = train_out
    return written


def import_yaml(run, written: dict[str, Path], name: str) -> str:
    """The dataset config that reads the exported files back (files under the dataset folder stay relative to it,
    so moving the folder keeps results)."""
    from clsrl_exp.data.formats import dataset_dir

    ds = run.dataset
    base = dataset_dir(ds, run.data.root)
    files = {k: os.path.relpath(p.resolve(), base) if p.resolve().is_relative_to(base) else str(p.resolve())
             for k, p in written.items()}
    where = f"path: {json.dumps(ds.path)}" if ds.path else f"dataset_dir: {json.dumps(ds.dataset_dir or ds.name)}"
    lines = [f"# {name}: the frozen {run.setting.name} eval set of dataset '{ds.name}' (seed {run.seed}) exported by "
             "clsrl_exp.data.export", f"name: {name}", "layout: clsrl_official", where,
             f"image_dir: {json.dumps(ds.image_dir)}", "files:",
             *(f"  {k}: {json.dumps(v)}" for k, v in files.items()),
             f"question: {json.dumps(ds.question)}   # unused: every row carries its problem text",
             f"epochs: {ds.epochs}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clsrl_exp.data.export", description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", help="a dataset option (conf/dataset/<name>.yaml or one in --config-dir)")
    p.add_argument("--setting", default="fewshot", choices=["fewshot", "base2new"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--shots", type=int, default=4, help="K of the training subset (--train-out)")
    p.add_argument("--out", required=True, type=Path, help="eval set JSONL ({split} is replaced in base2new)")
    p.add_argument("--train-out", type=Path, help="also write the K-shot training subset here")
    p.add_argument("--yaml", type=Path, help="write the dataset config that imports the files (layout clsrl_official)")
    p.add_argument("--config-dir", help="a folder with your own config groups (as python -m clsrl_exp --config-dir)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the composed config, e.g. data.root=/data")
    a = p.parse_intermixed_args(argv)
    try:
        run = compose_run([f"dataset={a.dataset}", f"setting={a.setting}", f"seed={a.seed}", f"shots={a.shots}",
                           "logger=none", *a.overrides], a.config_dir)
        written = export(run, a.out, a.train_out)
        if a.yaml is not None:
            atomic_write_text(a.yaml, import_yaml(run, written, a.yaml.stem))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    for split, path in written.items():
        print(f"{split}: {path}")
    if a.yaml is not None:
        print(f"config: {a.yaml} (copy it into conf/dataset/ or a --config-dir folder's dataset/)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
