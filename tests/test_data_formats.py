"""Data in the forms users have, without a model: image folders (every protocol), the authors' files (HF
save_to_disk, parquet, JSONL; verbatim problems, golden eval prompts, malformed rows), export -> import round trips,
and the data fingerprint. The CLI runs on the tiny model are in test_data_cli.py."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from data_fixtures import BIRDS, DTD_CLASSES, imagefolder_config, make_dtd, make_imagefolder, make_run, tiny_image
from omegaconf import OmegaConf

from clsrl_exp.config import ClassNames, DatasetConfig, FolderSplit, dataset_config, method_config
from clsrl_exp.data import Item, display_name, eval_sets, load_splits, train_examples
from clsrl_exp.data.fingerprint import dataset_fingerprint
from clsrl_exp.errors import ConfigError, DataError
from clsrl_exp.evaluate import EvalTask, PredictionLog, evaluate_set
from clsrl_exp.prompts import eval_prompt, prompt_text

REPO = Path(__file__).resolve().parent.parent
Q_DTD = "What type of texture is in the photo?"


# ----------------------------------------------------------------------------------------------------- image folders
def test_imagefolder_reads_split_folders_with_sorted_classes_and_coop_display_names(tmp_path):
    make_imagefolder(tmp_path / "birds")
    ds = imagefolder_config("birds", tmp_path / "birds", classnames=ClassNames(rename={"robin": "European robin"}))
    s = load_splits(ds, None)  # an absolute dataset.path needs no data root
    assert s.classnames == ["Zebra_finch", "blue_tit", "robin"]  # sorted case-sensitively
    assert (len(s.train), len(s.val), len(s.test)) == (15, 3, 6)
    assert s.train[0] == Item("train/Zebra_finch/train_0.png", 0, "Zebra_finch")
    assert s.test[-1] == Item("test/robin/test_1.png", 2, "robin")
    assert all(it.path.endswith(".png") and "/." not in it.path for it in s.train + s.val + s.test)
    assert all((s.image_root / it.path).is_file() for it in s.train + s.test)
    assert [display_name(c, ds) for c in s.classnames] == ["Zebra finch", "blue tit", "European robin"]
    assert len(s.fingerprint) == 64


def test_imagefolder_one_folder_is_split_by_a_seeded_fraction(tmp_path):
    make_imagefolder(tmp_path / "flat", split_dirs=False)  # 10 images per class
    ds = imagefolder_config("flat", tmp_path / "flat")
    a, again = load_splits(ds, None), load_splits(ds, None)
    assert (len(a.train), len(a.val), len(a.test)) == (21, 0, 9)  # 0.3 x 10 held out per class
    assert a.test == again.test and a.fingerprint == again.fingerprint
    assert not {it.path for it in a.train} & {it.path for it in a.test}
    b = load_splits(replace(ds, folder_split=FolderSplit(test=0.3, val=0.1, seed=1)), None)
    assert (len(b.train), len(b.val), len(b.test)) == (18, 3, 9)
    assert b.test != a.test and b.fingerprint != a.fingerprint
    with pytest.raises(ConfigError, match="folder_split needs 0 < test < 1"):
        load_splits(replace(ds, folder_split=FolderSplit(test=0.0)), None)


def _ids_in_subprocess(base: Path, cache: Path) -> dict:
    code = (
        "import json, sys; sys.path.insert(0, 'tests')\n"
        "from data_fixtures import imagefolder_config, make_run\n"
        "from clsrl_exp.data import eval_sets, train_examples\n"
        f"ds = imagefolder_config('flat', {str(base)!r})\n"
        f"run = make_run('/unused', {str(cache)!r}, ds, shots=3, seed=1)\n"
        "print(json.dumps({'train': [e.id for e in train_examples(run, ds)],\n"
        "                  'test': [[e.id, e.options] for e in eval_sets(run, ds)[0].examples]}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "random"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_imagefolder_subsets_identical_across_processes(tmp_path):
    """The held-out split, the K-shot subset and the frozen option lists are the same in any process."""
    base = make_imagefolder(tmp_path / "flat", classes=[f"c{i}" for i in range(5)], split_dirs=False)
    a = _ids_in_subprocess(base, tmp_path / "cache_a")
    b = _ids_in_subprocess(base, tmp_path / "cache_b")  # separate caches: both from scratch
    assert a == b and len(a["train"]) == 15 and len(a["test"]) == 15
    ds = imagefolder_config("flat", base)
    run = make_run(tmp_path, tmp_path / "cache_c", ds, shots=3, seed=1)
    assert [e.id for e in train_examples(run, ds)] == a["train"]
    assert [[e.id, list(e.options)] for e in eval_sets(run, ds)[0].examples] == a["test"]


def test_every_protocol_works_on_an_image_folder(tmp_path):
    classes = ["a_x", "b", "c", "d", "e"]
    base = make_imagefolder(tmp_path / "five", classes=classes, counts={"train": 4, "val": 1, "test": 3})
    ds = imagefolder_config("five", base)
    run = make_run(tmp_path, tmp_path / "cache", ds, shots=2, seed=1)
    train = train_examples(run, ds)
    assert sorted(e.label for e in train) == sorted(["a x", "b", "c", "d", "e"] * 2)  # K per class, display names
    assert all(set(e.options) == {"a x", "b", "c", "d", "e"} and e.problem is None for e in train)
    seed2 = train_examples(make_run(tmp_path, tmp_path / "cache", ds, shots=2, seed=2), ds)
    assert [e.id for e in seed2] != [e.id for e in train]
    (test,) = eval_sets(run, ds)
    frozen = tmp_path / "cache" / "five" / "fewshot" / "seed_1" / "eval_test.json"
    assert len(test.examples) == 15 and frozen.is_file()
    assert [e.options for e in eval_sets(run, ds)[0].examples] == [e.options for e in test.examples]
    with_val = make_run(tmp_path, tmp_path / "cache_val", ds, shots=2, seed=1, include_val=True)
    assert len(eval_sets(with_val, ds)[0].examples) == 20
    b2n = make_run(tmp_path, tmp_path / "cache", ds, setting="base2new", shots=2, seed=1)
    assert {e.label for e in train_examples(b2n, ds)} == {"a x", "b"}  # floor(5/2) base classes, label order
    base_set, new_set = eval_sets(b2n, ds)
    assert (base_set.split, len(base_set.examples), new_set.split, len(new_set.examples)) == ("base", 6, "new", 9)
    assert all(set(e.options) <= {"a x", "b"} for e in base_set.examples)
    assert all(set(e.options) <= {"c", "d", "e"} for e in new_set.examples)


def _train_only(base: Path) -> None:
    make_imagefolder(base, counts={"train": 2})


def _stray_test_class(base: Path) -> None:
    make_imagefolder(base)
    tiny_image(base / "test" / "owl" / "x.png")


def _empty_class(base: Path) -> None:
    make_imagefolder(base)
    (base / "train" / "owl").mkdir()
    (base / "train" / "owl" / "readme.txt").write_text("no images")


@pytest.mark.parametrize(("build", "error", "message"), [
    (lambda b: None, DataError, "dataset folder not found"),
    (_train_only, DataError, "has no test/ folder"),
    (_stray_test_class, DataError, "test/owl has no match in"),
    (_empty_class, DataError, "without training images in .*: owl"),
    (lambda b: make_imagefolder(b, classes=["solo"]), DataError, "defines 1 class"),
])
def test_imagefolder_bad_input_is_one_clear_error(tmp_path, build, error, message):
    base = tmp_path / "birds"
    build(base)
    with pytest.raises(error, match=message):
        load_splits(imagefolder_config("birds", base), None)


# ----------------------------------------------------------------------------------------------------- fingerprint
def test_fingerprint_moved_data_keeps_it_changed_data_changes_it_listing_cached(tmp_path, monkeypatch):
    import clsrl_exp.data.fingerprint as fingerprint

    a = make_imagefolder(tmp_path / "a")
    ds = imagefolder_config("birds", a)
    fa = dataset_fingerprint(ds, None, tmp_path / "cache")
    b = Path(shutil.copytree(a, tmp_path / "b"))
    moved = replace(ds, path=str(b))
    assert dataset_fingerprint(moved, None, tmp_path / "cache") == fa
    monkeypatch.setattr(fingerprint, "load_splits", lambda *a: pytest.fail("listed again although nothing changed"))
    assert dataset_fingerprint(moved, None, tmp_path / "cache") == fa  # cached under the folders' mtimes
    monkeypatch.undo()
    time.sleep(0.05)  # folder mtimes tick with the kernel clock
    tiny_image(b / "train" / "robin" / "new.png")
    added = dataset_fingerprint(moved, None, tmp_path / "cache")
    assert added != fa
    time.sleep(0.05)
    for key in ("train", "val", "test"):
        os.rename(b / key / "robin", b / key / "robin_redbreast")
    renamed = dataset_fingerprint(moved, None, tmp_path / "cache")
    assert renamed not in (fa, added)
    assert renamed == load_splits(moved, None).fingerprint


def test_fingerprint_of_a_split_file_follows_its_content_not_its_place(tmp_path):
    make_dtd(tmp_path / "r1")
    shutil.copytree(tmp_path / "r1", tmp_path / "r2")
    dtd = dataset_config("dtd")
    f1 = dataset_fingerprint(dtd, tmp_path / "r1", tmp_path / "cache")
    assert dataset_fingerprint(dtd, tmp_path / "r2", tmp_path / "cache") == f1
    split = tmp_path / "r2" / "dtd" / dtd.split_file
    data = json.loads(split.read_text())
    data["test"] = data["test"][1:]
    split.write_text(json.dumps(data))
    assert dataset_fingerprint(dtd, tmp_path / "r2", tmp_path / "cache") != f1


# ----------------------------------------------------------------------------------------------------- official files
def _problem(options: list[str]) -> str:
    return f"{Q_DTD}\nPlease choose one from list [ {', '.join(options)}]."


def official_dtd(root: Path, *, train_rows: list[dict] | None = None, files: dict | None = None) -> DatasetConfig:
    """DTD images in the CoOp layout + the authors' files beside them: `dtd/clsrl/{train,test}.jsonl` whose
    problems list the options in an order of their own (reversed), so verbatim use is visible."""
    split = make_dtd(root, n_train=4, n_val=0, n_test=2)
    rows = train_rows if train_rows is not None else [
        {"image": p, "problem": _problem(DTD_CLASSES[::-1]), "solution": f"<answer>{c}</answer>"}
        for p, _, c in split["train"]]
    test = [{"image": p, "label": c, "split": "test", "problem": _problem([c, "zigzagged"])}
            for p, _, c in split["test"]]
    test.append({"image": split["train"][0][0], "label": "banded", "split": "train", "problem": "not scored"})
    folder = root / "dtd" / "clsrl"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    return DatasetConfig(name="dtd-official", layout="clsrl_official", dataset_dir="dtd", image_dir="images",
                         files=files or {"train": "clsrl/train.jsonl", "test": "clsrl/test.jsonl"}, question=Q_DTD)


class StubProcessor:
    """The chat template reduced to the user text (the real template only wraps it)."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(c.get("text", "") for m in messages for c in m["content"] if isinstance(c, dict))


class PickByPrompt:
    """A generator whose answer depends on the prompt text: the option at position sha1(text) mod k of the list in
    the prompt. Two eval sets score the same only if their prompts are the same."""

    def __init__(self):
        self.texts: list[str] = []

    def batches(self, items, image_size, batch_size):
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            self.texts += [t for _, t in chunk]
            yield [ex for ex, _ in chunk], [t for _, t in chunk], []

    def generate(self, texts):
        outs = []
        for t in texts:
            options = re.search(r"list \[ (.*?)\]\.", t).group(1).split(", ")
            outs.append(options[int(hashlib.sha1(t.encode()).hexdigest(), 16) % len(options)])
        return outs, [1] * len(outs)


def _score(eval_set, prompt, path: Path):
    gen = PickByPrompt()
    entry = evaluate_set(gen, StubProcessor(), EvalTask(eval_set, "eval", prompt, "h"), PredictionLog(path),
                         image_size=8, batch_size=4, progress=False)
    return entry, gen.texts


def test_official_training_rows_use_problem_verbatim(tmp_path):
    from clsrl_exp.train.rows import grpo_dataset, sft_rows

    ds = official_dtd(tmp_path)
    run = make_run(tmp_path, tmp_path / "cache", ds, shots=4)
    exs = train_examples(run, ds)
    assert len(exs) == 20 and {e.label for e in exs} == set(DTD_CLASSES)  # labels from <answer>...</answer>
    assert all(e.problem == _problem(DTD_CLASSES[::-1]) and e.options == () for e in exs)
    assert exs[0].id == "banded/banded_train_0.jpg" and Path(exs[0].image_path).is_file()
    nothink, sft = method_config("nothink"), method_config("sft")
    row = grpo_dataset(exs, nothink, Q_DTD, 16)[0]
    assert row["prompt"] == [{"role": "user", "content": _problem(DTD_CLASSES[::-1]) +
                              "\n Please directly output the answer."}]  # the method's template around it
    assert row["label"] == "banded"
    (_, messages, target), *_ = sft_rows(exs, sft, Q_DTD)
    assert messages[1]["content"][0]["text"] == _problem(DTD_CLASSES[::-1]) and target == "<answer>banded</answer>"
    with pytest.raises(ConfigError, match="hold 4 images per class: run it with shots=4"):
        train_examples(make_run(tmp_path, tmp_path / "cache", ds, shots=2), ds)


def test_official_eval_prompts_are_the_frozen_problems(tmp_path):
    """Golden: the prompt the generator receives is the file's problem string inside the method's eval template."""
    ds = official_dtd(tmp_path)
    run = make_run(tmp_path, tmp_path / "cache", ds)
    (test,) = eval_sets(run, ds)
    assert len(test.examples) == 10 and test.missing == []  # the split=train row is not scored
    entry, texts = _score(test, eval_prompt(method_config("nothink"), "test", "eval"), tmp_path / "p.jsonl")
    assert entry.n == 10
    assert "What type of texture is in the photo?\nPlease choose one from list [ banded, zigzagged]. Please directly " \
           "output the answer name." in texts
    assert sorted(texts) == sorted(_problem([e.label, "zigzagged"]) + " Please directly output the answer name."
                                   for e in test.examples)
    with pytest.raises(ConfigError, match="no dataset.files.base: setting=base2new evaluates base, new"):
        eval_sets(make_run(tmp_path, tmp_path / "cache", ds, setting="base2new"), ds)


def test_official_files_in_open_set_ask_the_open_question_alone(tmp_path):
    """setting=open shows no option list: the rows' problems (which carry one) give way to the open question."""
    ds = replace(official_dtd(tmp_path), open_question="What texture is this?")
    run = make_run(tmp_path, tmp_path / "cache", ds, setting="open", shots=4)
    (test,) = eval_sets(run, ds)
    assert test.question == "What texture is this?" and test.classes == DTD_CLASSES
    assert all(e.problem is None and e.options == () for e in test.examples)
    assert all(e.problem is None for e in train_examples(run, ds))


def test_official_hf_save_to_disk_and_parquet_training_rows(tmp_path):
    from datasets import Dataset, load_from_disk
    from datasets import Image as HFImage
    from PIL import Image

    ds = official_dtd(tmp_path)
    colours = [(i * 40, 200 - i * 30, 90) for i in range(5)]
    rows = {"image": [Image.new("RGB", (8, 8), c) for c in colours for _ in range(4)],
            "problem": [_problem(DTD_CLASSES) for _ in range(20)],
            "solution": [f"<answer>{c}</answer>" for c in DTD_CLASSES for _ in range(4)]}
    saved = tmp_path / "dtd" / "clsrl" / "hf_train"
    Dataset.from_dict(rows).cast_column("image", HFImage()).save_to_disk(str(saved))
    hf = replace(ds, files={"train": "clsrl/hf_train", "test": "clsrl/test.jsonl"})
    exs = train_examples(make_run(tmp_path, tmp_path / "cache", hf, shots=4), hf)
    stored = load_from_disk(str(saved)).cast_column("image", HFImage(decode=False))
    assert [e.id for e in exs] == [f"clsrl/hf_train#{i}" for i in range(20)]
    assert [e.label for e in exs] == [c for c in DTD_CLASSES for _ in range(4)]
    for i, e in enumerate(exs):  # extracted once into the cache, bytes unchanged
        assert Path(e.image_path).parent == tmp_path / "cache" / "dtd-official" / "images"
        assert Path(e.image_path).read_bytes() == stored[i]["image"]["bytes"]
    assert len({e.image_path for e in exs}) == 5  # content-addressed: identical images share a file
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = [p for p, _, _ in make_dtd(tmp_path / "tmp")["train"]]  # the hub's struct, paths instead of bytes
    table = pa.table({"image": pa.array([{"bytes": None, "path": p} for p in paths]),
                      "problem": [_problem(DTD_CLASSES)] * 20,
                      "solution": [f"<answer>{c}</answer>" for c in DTD_CLASSES for _ in range(4)]})
    pq.write_table(table, tmp_path / "dtd" / "clsrl" / "train.parquet")
    parquet = replace(ds, files={"train": "clsrl/train.parquet", "test": "clsrl/test.jsonl"})
    exs = train_examples(make_run(tmp_path, tmp_path / "cache", parquet, shots=4), parquet)
    assert exs[0].id == "banded/banded_train_0.jpg"  # a path (no bytes) is relative to the image root
    assert exs[0].image_path == str((tmp_path / "dtd" / "images" / exs[0].id).resolve())


BAD_ROWS = [
    pytest.param('{"image": "banded/banded_train_1.jpg", "solution": "<answer>banded</answer>"}',
                 "field 'problem' is missing", id="no-problem"),
    pytest.param('{"problem": "Q", "solution": "<answer>banded</answer>"}', "field 'image' is missing", id="no-image"),
    pytest.param('{"image": "banded/banded_train_1.jpg", "problem": "Q", "solution": "<answer> </answer>"}',
                 "field 'solution' has an empty answer", id="empty-answer"),
    pytest.param('{"image": "banded/banded_train_1.jpg", "problem": "Q", "solution": 3}',
                 "field 'solution' is not a non-empty string", id="solution-not-text"),
    pytest.param('{"image": "banded/banded_train_1.jpg", "problem": "Q", "solution": "<answer>banded</answer>", '
                 '"label": "bumpy"}', "field 'label' \\('bumpy'\\) disagrees", id="label-disagrees"),
    pytest.param('{"image": "banded/banded_train_0.jpg", "problem": "Q", "solution": "<answer>banded</answer>"}',
                 "field 'image' repeats line 1", id="repeated-image"),
    pytest.param("{not json", "line 2: not valid JSON", id="not-json"),
]


@pytest.mark.parametrize(("line", "message"), BAD_ROWS)
def test_official_malformed_row_is_one_error_naming_file_line_and_field(tmp_path, line, message):
    good = json.dumps({"image": "banded/banded_train_0.jpg", "problem": "Q", "solution": "<answer>banded</answer>"})
    ds = official_dtd(tmp_path, train_rows=[])
    (tmp_path / "dtd" / "clsrl" / "train.jsonl").write_text(good + "\n" + line + "\n")
    with pytest.raises(DataError) as e:
        load_splits(ds, tmp_path)
    assert f"{tmp_path / 'dtd' / 'clsrl' / 'train.jsonl'}, line 2" in str(e.value)
    assert re.search(message, str(e.value)), str(e.value)
    assert "\n" not in str(e.value)


def test_official_config_errors(tmp_path):
    ds = official_dtd(tmp_path)
    with pytest.raises(ConfigError, match="unknown dataset.files key"):
        load_splits(replace(ds, files={"valid": "clsrl/test.jsonl"}), tmp_path)
    with pytest.raises(DataError, match="dataset.files.test not found"):
        load_splits(replace(ds, files={"test": "clsrl/nope.jsonl"}), tmp_path)
    with pytest.raises(ConfigError, match="no training rows"):
        evaluated_only = replace(ds, files={"test": "clsrl/test.jsonl"})
        train_examples(make_run(tmp_path, tmp_path / "cache", evaluated_only, shots=4), evaluated_only)


# ----------------------------------------------------------------------------------------------------- export
def _load_dataset_yaml(path: Path) -> DatasetConfig:
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DatasetConfig), OmegaConf.load(path)))


@pytest.mark.parametrize("setting", ["fewshot", "base2new"])
def test_export_then_import_gives_byte_identical_prompts_and_the_same_scores(tmp_path, setting, capsys):
    from clsrl_exp.data.export import main

    base = make_imagefolder(tmp_path / "birds", classes=[*BIRDS, "wren", "owl_x"],
                            counts={"train": 3, "test": 3})
    conf = tmp_path / "conf" / "dataset"
    conf.mkdir(parents=True)
    (conf / "birds.yaml").write_text(f"name: birds\nlayout: imagefolder\npath: {base}\n"
                                     "question: What bird is in the photo?\n")
    out = tmp_path / "export" / "birds_test.jsonl"
    args = ["birds", "--setting", setting, "--seed", "2", "--shots", "2", "--out", str(out), "--train-out",
            str(tmp_path / "export" / "birds_train.jsonl"), "--yaml", str(conf / "birds-export.yaml"),
            "--config-dir", str(tmp_path / "conf"), f"data.root={tmp_path}", f"data.cache_dir={tmp_path / 'c1'}"]
    assert main(args) == 0, capsys.readouterr().err
    imported = _load_dataset_yaml(conf / "birds-export.yaml")
    assert imported.layout == "clsrl_official" and imported.path == str(base)
    source = _load_dataset_yaml(conf / "birds.yaml")
    ours = make_run(tmp_path, tmp_path / "c1", source, setting=setting, shots=2, seed=2)
    theirs = make_run(tmp_path, tmp_path / "c2", imported, setting=setting, shots=2, seed=2)
    method = method_config("clsrl")
    pairs = list(zip(eval_sets(ours, source), eval_sets(theirs, imported), strict=True))
    assert [a.split for a, _ in pairs] == (["test"] if setting == "fewshot" else ["base", "new"])
    for a, b in pairs:
        prompt = eval_prompt(method, a.split, "eval")
        texts = [{e.id: (prompt.text(s.question, e.options, e.problem), e.label, e.image_path) for e in s.examples}
                 for s in (a, b)]
        assert texts[0] == texts[1] and len(a.examples) > 0
        assert all(e.problem is None for e in a.examples) and all(e.problem for e in b.examples)
        score_a, seen_a = _score(a, prompt, tmp_path / f"{a.split}_a.jsonl")
        score_b, seen_b = _score(b, prompt, tmp_path / f"{a.split}_b.jsonl")
        assert sorted(seen_a) == sorted(seen_b)  # byte-identical prompts reached the generator
        assert (score_a.n, score_a.correct, score_a.correct_strict) == (score_b.n, score_b.correct,
                                                                        score_b.correct_strict)
    train = lambda run, ds: [(e.id, e.label, prompt_text(method.train_template, ds.question, e.options, e.problem))
                             for e in train_examples(run, ds)]
    assert train(ours, source) == train(theirs, imported)
    first = json.loads((tmp_path / "export" / "birds_train.jsonl").read_text().splitlines()[0])
    assert set(first) == {"image", "problem", "solution", "label", "split"}
    assert first["solution"] == f"<answer>{first['label']}</answer>" and not Path(first["image"]).is_absolute()


def test_export_bad_dataset_is_one_error(tmp_path, capsys):
    from clsrl_exp.data.export import main

    assert main(["no-such-dataset", "--out", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no-such-dataset" in err and len(err.strip().splitlines()) == 1
    assert main(["dtd", "--out", str(tmp_path / "x.jsonl"), f"data.root={tmp_path}"]) == 3
    assert "dataset folder not found" in capsys.readouterr().err
