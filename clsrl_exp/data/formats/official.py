"""The authors' published data (paper.md 4.2), read verbatim: `layout: clsrl_official`.

`dataset.files` names one file per split, under the dataset folder (or absolute):
- `train`: the training rows, a Hugging Face dataset saved with `save_to_disk` (a folder), a `.parquet` file (the
  hub's shard) or a `.jsonl` file, with `image`, `problem` (question + frozen option list) and `solution`
  (`<answer>label</answer>`; a `label` column is used when there is no `solution`);
- `test` (few-shot) or `base` + `new` (base-to-new): the frozen test JSONL, one object per line with `image`,
  `label`, `split` and `problem`. As the official eval script, rows whose `split` is `test` or `valid` are scored.

`image` is a path relative to the image root `<dataset folder>/<image_dir>` (the CoOp image folder the authors'
`dataset_prefix.py` prepends), or an HF `Image` value: its embedded bytes (what `save_to_disk` and the hub store)
are extracted once into the data cache by `clsrl_exp.data.protocol`, its path is used when there are no bytes.
A malformed row is one `DataError` naming the file, the line (row) and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clsrl_exp.config import DatasetConfig
from clsrl_exp.data.formats import Item, Splits, check_classes, content_fingerprint, dataset_dir
from clsrl_exp.errors import ConfigError, DataError
from clsrl_exp.rewards import extract_answer

TRAIN_KEY, EVAL_KEYS = "train", ("test", "base", "new")
SCORED_SPLITS = ("test", "valid", "val")  # the official eval keeps split in {test, valid}


class _Rows:
    """Rows of one file as dicts, plus where each came from (for error messages) and lazy access to embedded
    image bytes (HF `Image` columns)."""

    def __init__(self, path: Path):
        self.path, self.table, self.embedded = path, None, set()  # embedded: row numbers whose image is bytes
        if path.is_dir():
            from datasets import load_from_disk

            try:
                data = load_from_disk(str(path))
            except Exception as e:  # noqa: BLE001 - any load failure is bad input here
                raise DataError(f"cannot read {path} as a Hugging Face dataset saved with save_to_disk ({e})") from None
            if hasattr(data, "keys"):  # a DatasetDict: its train split
                if "train" not in data:
                    raise DataError(f"{path} is a DatasetDict without a 'train' split (has {', '.join(data)})")
                data = data["train"]
            self.table, self.where = data.data, "row"
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                self.table, self.where = pq.read_table(path), "row"
            except Exception as e:  # noqa: BLE001
                raise DataError(f"cannot read parquet file {path} ({e})") from None
        elif path.suffix == ".jsonl":
            self.where = "line"
        else:
            raise ConfigError(f"dataset.files entry {path}: expected a save_to_disk folder, a .parquet or a .jsonl "
                              "file")

    def __iter__(self):
        """(line or row number, the row as a dict; `image` = the image's path, None when it is embedded)."""
        if self.table is None:
            with open(self.path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"malformed row in {self.path}, line {n}: not valid JSON ({e.msg})") from None
                    if not isinstance(row, dict):
                        raise DataError(f"malformed row in {self.path}, line {n}: expected a JSON object")
                    yield n, row
            return
        cols = {c: self.table.column(c).to_pylist() for c in self.table.column_names if c != "image"}
        images = self._image_paths()
        for i in range(self.table.num_rows):
            yield i, {**{c: v[i] for c, v in cols.items()}, **({"image": images[i]} if images else {})}

    def _image_paths(self) -> list[Any] | None:
        if "image" not in self.table.column_names:
            return None
        col = self.table.column("image")
        if not hasattr(col.type, "get_field_index"):  # a plain string column of paths
            return col.to_pylist()
        import pyarrow.compute as pc

        embedded = pc.is_valid(pc.struct_field(col, "bytes")).to_pylist()
        self.embedded = {i for i, e in enumerate(embedded) if e}
        paths = pc.struct_field(col, "path").to_pylist()
        return [None if e else p for e, p in zip(embedded, paths, strict=True)]

    def image_bytes(self, row: int) -> bytes:
        return self.table.column("image")[row]["bytes"].as_py()


def _field(rows: _Rows, n: int, row: dict, name: str, need: str) -> str:
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        got = "missing" if name not in row else f"not a non-empty string ({json.dumps(value)[:60]})"
        raise DataError(f"malformed row in {rows.path}, {rows.where} {n}: field '{name}' is {got} ({need})")
    return value


def _read_file(rows: _Rows, key: str, rel: str, embedded: dict[str, tuple[_Rows, int]]) -> list[tuple[str, str, str]]:
    """(id, label, problem) per kept row; embedded images are registered in `embedded` under their id."""
    train = key == TRAIN_KEY
    need = ("training rows need image, problem and solution (<answer>label</answer>)" if train
            else "frozen test rows need image, label, split and problem")
    out, seen = [], {}
    for n, row in rows:
        if not train and row.get("split") not in (None, *SCORED_SPLITS):
            continue
        problem = _field(rows, n, row, "problem", need)
        # the label: training rows from `solution` (what the rewards compare with), test rows from `label`
        first, other = ("solution", "label") if train else ("label", "solution")
        name = first if first in row or other not in row else other
        value = _field(rows, n, row, name, need)
        label = extract_answer(value) if name == "solution" else value.strip()  # as the official rewards read it
        if not label:
            raise DataError(f"malformed row in {rows.path}, {rows.where} {n}: field 'solution' has an empty answer")
        if name == "solution" and isinstance(row.get("label"), str) and row["label"].strip() != label:
            raise DataError(f"malformed row in {rows.path}, {rows.where} {n}: field 'label' ({row['label']!r}) "
                            f"disagrees with the answer in 'solution' ({label!r})")
        if n in rows.embedded:
            item_id = f"{rel}#{n}"
            embedded[item_id] = (rows, n)
        else:
            item_id = _field(rows, n, row, "image", need)
        if item_id in seen:
            raise DataError(f"malformed row in {rows.path}, {rows.where} {n}: field 'image' repeats {rows.where} "
                            f"{seen[item_id]} ({item_id}); each row must be a distinct image")
        seen[item_id] = n
        out.append((item_id, label, problem))
    if not out:
        raise DataError(f"{rows.path} has no rows" + ("" if train else f" with split in {SCORED_SPLITS}"))
    return out


def listing_inputs(ds: DatasetConfig, root) -> list[Path]:
    """The data files (a save_to_disk folder with its files): their paths, mtimes and sizes stand for the content, so
    `clsrl_exp.data.dataset_fingerprint` caches the fingerprint instead of reading every table at each skip check."""
    base = dataset_dir(ds, root)
    paths = [base / rel for rel in (ds.files or {}).values()]
    return [q for p in paths for q in ([p, *sorted(p.rglob("*"))] if p.is_dir() else [p])]


def read_official(ds: DatasetConfig, root) -> Splits:
    """`dataset.files`: `train` (HF folder / parquet / JSONL) and `test` or `base` + `new` (frozen JSONL)."""
    if not ds.files:
        raise ConfigError(f"dataset '{ds.name}' uses layout clsrl_official but sets no dataset.files (train: ..., "
                          "test: ... or base: ..., new: ...)")
    unknown = sorted(set(ds.files) - {TRAIN_KEY, *EVAL_KEYS})
    if unknown:
        raise ConfigError(f"dataset '{ds.name}': unknown dataset.files key(s) {unknown}; use train, test, base, new")
    base = dataset_dir(ds, root)
    embedded: dict[str, tuple[_Rows, int]] = {}
    raw: dict[str, list[tuple[str, str, str]]] = {}
    for key, rel in ds.files.items():
        path = base / rel
        if not path.exists():
            raise DataError(f"dataset.files.{key} not found: {path} (dataset '{ds.name}')")
        raw[key] = _read_file(_Rows(path), key, rel, embedded)
    classnames = sorted({label for rows in raw.values() for _, label, _ in rows})
    check_classes(f"the files of dataset '{ds.name}'", classnames)
    label_of = {c: i for i, c in enumerate(classnames)}
    parts = {k: [Item(i, label_of[lab], lab, problem) for i, lab, problem in rows] for k, rows in raw.items()}
    fp = content_fingerprint(classnames, parts)
    frozen = {k: v for k, v in parts.items() if k != TRAIN_KEY}

    def image_bytes(item: Item) -> bytes | None:
        hit = embedded.get(item.path)
        return hit[0].image_bytes(hit[1]) if hit else None

    img_root = base / ds.image_dir if ds.image_dir else base
    return Splits(ds.name, img_root, classnames, parts.get(TRAIN_KEY, []), [], frozen.get("test", []), fp,
                  frozen=frozen, image_bytes=image_bytes if embedded else None)
