"""Few-shot sampling, base/new halves, option lists and frozen eval sets on miniature real layouts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_fixtures import DTD_CLASSES, make_dtd, make_fgvc, make_imagenet, make_run

from clsrl_exp.config import dataset_config
from clsrl_exp.data import class_halves, eval_sets, load_splits, train_examples
from clsrl_exp.errors import DataError
from clsrl_exp.fileio import write_sealed_json
from clsrl_exp.prompts import option_count

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def dtd(tmp_path):
    """5 DTD classes, 6 train / 1 val / 3 test images each."""
    make_dtd(tmp_path / "data", n_train=6, n_val=1, n_test=3)
    return tmp_path / "data", tmp_path / "cache"


def _ids_in_subprocess(root: Path, cache: Path, shots: int, seed: int) -> list[str]:
    code = (
        "import json, sys; sys.path.insert(0, 'tests')\n"
        "from data_fixtures import make_run\n"
        "from clsrl_exp.data import train_examples\n"
        f"run = make_run({str(root)!r}, {str(cache)!r}, 'dtd', shots={shots}, seed={seed})\n"
        "print(json.dumps([e.id for e in train_examples(run, run.dataset)]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "random"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


# ----------------------------------------------------------------------------------------------------- few-shot
def test_fewshot_identical_across_processes_and_different_across_seeds(dtd, tmp_path):
    root, _ = dtd
    a = _ids_in_subprocess(root, tmp_path / "cache_a", 2, 1)
    b = _ids_in_subprocess(root, tmp_path / "cache_b", 2, 1)  # separate caches: both sample from scratch
    assert a == b and len(a) == 10
    assert a != _ids_in_subprocess(root, tmp_path / "cache_c", 2, 2)
    run = make_run(root, tmp_path / "cache_d", "dtd", shots=2, seed=1)
    assert [e.id for e in train_examples(run, run.dataset)] == a  # and in this process


def test_fewshot_cache_holds_relative_paths_and_is_reused(dtd):
    root, cache = dtd
    run = make_run(root, cache, "dtd", shots=2, seed=3)
    first = train_examples(run, run.dataset)
    path = cache / "dtd" / "fewshot" / "shot_2-seed_3.json"
    data = json.loads(path.read_text())
    assert (data["shots"], data["seed"], data["dataset"]) == (2, 3, "dtd")
    assert [e[0] for e in data["train"]] == [e.id for e in first]
    assert all(not os.path.isabs(p) and p.startswith(tuple(DTD_CLASSES)) for p, _, _ in data["train"])
    assert {lab for _, lab, _ in data["train"]} == set(range(5))
    # a consistent (sealed) cache is read, not re-sampled: swap one entry for another image of the same class
    data["train"][0][0] = "banded/banded_train_5.jpg" if data["train"][0][0] != "banded/banded_train_5.jpg" \
        else "banded/banded_train_4.jpg"
    write_sealed_json(path, data)
    assert train_examples(run, run.dataset)[0].id == data["train"][0][0]
    # a hand-edited one (checksum broken) is re-sampled from the split, not trusted
    edited = json.loads(path.read_text())
    edited["train"] = edited["train"][::-1]
    path.write_text(json.dumps(edited))
    assert [e.id for e in train_examples(run, run.dataset)] == [e.id for e in first]
    # a changed split file (different sha256) invalidates it
    split = root / "dtd" / "split_zhou_DescribableTextures.json"
    split.write_text(split.read_text() + "\n")
    assert [e.id for e in train_examples(run, run.dataset)] == [e.id for e in first]
    assert json.loads(path.read_text())["split_sha256"] != data["split_sha256"]


def test_fewshot_examples_carry_display_labels_and_options(dtd):
    root, cache = dtd
    run = make_run(root, cache, "dtd", shots=4)
    ex = train_examples(run, run.dataset)
    assert len(ex) == 20 and {e.split for e in ex} == {"train"}
    assert all(os.path.isabs(e.image_path) and e.image_path.endswith(e.id) for e in ex)
    assert all(e.label in e.options and sorted(e.options) == sorted(DTD_CLASSES) for e in ex)  # 5 < 30 -> all
    assert len({e.options for e in ex}) > 1  # options shuffled per example


def test_shots_larger_than_smallest_class(dtd):
    root, cache = dtd
    split = root / "dtd" / "split_zhou_DescribableTextures.json"
    data = json.loads(split.read_text())
    data["train"] = [e for e in data["train"] if not (e[2] == "bumpy" and not e[0].endswith(("_0.jpg", "_1.jpg")))]
    split.write_text(json.dumps(data))
    run = make_run(root, cache, "dtd", shots=4)
    with pytest.raises(DataError, match=r"shots=4 is larger than the smallest class: class 'bumpy' \(label 4\) "
                                        r"has only 2 training image\(s\)"):
        train_examples(run, run.dataset)


def test_missing_or_corrupt_training_image(dtd):
    root, cache = dtd
    run = make_run(root, cache, "dtd", shots=6)  # every training image is selected
    victim = root / "dtd" / "images" / "braided" / "braided_train_3.jpg"
    victim.write_bytes(b"\xff\xd8garbage")
    with pytest.raises(DataError, match=rf"training image missing or unreadable: {victim}"):
        train_examples(run, run.dataset)
    victim.unlink()
    with pytest.raises(DataError, match=rf"training image missing or unreadable: {victim}"):
        train_examples(run, run.dataset)


# ----------------------------------------------------------------------------------------------------- base/new
def test_class_halves_floor_and_ceil():
    assert class_halves(5, "floor") == ([0, 1], [2, 3, 4])
    assert class_halves(5, "ceil") == ([0, 1, 2], [3, 4])
    assert class_halves(10, "floor") == class_halves(10, "ceil") == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])


@pytest.mark.parametrize(("base_split", "n_base"), [("floor", 2), ("ceil", 3)])
def test_base2new_train_and_eval_spaces(dtd, base_split, n_base):
    root, cache = dtd
    run = make_run(root, cache, "dtd", setting="base2new", base_split=base_split, shots=2)
    base, new = DTD_CLASSES[:n_base], DTD_CLASSES[n_base:]
    ex = train_examples(run, run.dataset)
    assert len(ex) == 2 * n_base and {e.label for e in ex} == set(base)
    assert all(set(e.options) == set(base) for e in ex)
    sets = {s.split: s for s in eval_sets(run, run.dataset)}
    assert list(sets) == ["base", "new"]
    assert {e.label for e in sets["base"].examples} == set(base) and len(sets["base"].examples) == 3 * n_base
    assert {e.label for e in sets["new"].examples} == set(new) and len(sets["new"].examples) == 3 * (5 - n_base)
    assert all(set(e.options) <= set(base) for e in sets["base"].examples)
    assert all(set(e.options) <= set(new) and e.label in e.options for e in sets["new"].examples)
    # base training = the all-class few-shot subset filtered to base classes (sample first, then filter)
    full = train_examples(make_run(root, cache, "dtd", shots=2), run.dataset)
    assert [e.id for e in ex] == [e.id for e in full if e.label in base]


def test_open_set_has_no_option_lists_the_same_items_and_the_open_question(dtd):
    """setting=open: the few-shot training subset and test items, without option lists; the eval set asks the open
    question and carries the label space its answers are free over (the consistency analysis reads it)."""
    import dataclasses

    root, cache = dtd
    ds = dataclasses.replace(dataset_config("dtd"), open_question="What is this texture?")
    run = make_run(root, cache, ds, setting="open", shots=2)
    few = make_run(root, cache, ds, shots=2)
    ex = train_examples(run, run.dataset)
    assert [e.id for e in ex] == [e.id for e in train_examples(few, few.dataset)]  # same K-shot subset
    assert all(e.options == () for e in ex)
    (test,) = eval_sets(run, run.dataset)
    (closed,) = eval_sets(few, few.dataset)
    assert test.split == "test" and test.question == "What is this texture?" and closed.question == ds.question
    assert [e.id for e in test.examples] == [e.id for e in closed.examples]
    assert all(e.options == () for e in test.examples) and all(e.options for e in closed.examples)
    assert test.classes == DTD_CLASSES and closed.classes == []
    frozen = json.loads((cache / "dtd" / "open" / "seed_1" / "eval_test.json").read_text())
    assert frozen["question"] == "What is this texture?" and all(i["options"] == [] for i in frozen["items"])


def test_option_sizes_follow_option_count(tmp_path):
    names = [f"c{i:02d}" for i in range(10)]
    make_dtd(tmp_path / "data", classes=names, n_train=2, n_val=0, n_test=2)
    kw = {"option_all_below": 0, "option_cap": 100}
    run = make_run(tmp_path / "data", tmp_path / "c1", "dtd", shots=1, **kw)  # fraction 0.4
    assert option_count(10, 0.4, 0, 100) == 4
    assert {len(e.options) for e in train_examples(run, run.dataset)} == {4}
    assert {len(e.options) for e in eval_sets(run, run.dataset)[0].examples} == {4}
    run = make_run(tmp_path / "data", tmp_path / "c2", "dtd", setting="base2new", shots=1, **kw)  # 0.8 of 5
    sets = eval_sets(run, run.dataset)
    assert [{len(e.options) for e in s.examples} for s in sets] == [{4}, {4}]
    assert {len(e.options) for e in train_examples(run, run.dataset)} == {4}
    run = make_run(tmp_path / "data", tmp_path / "c3", "dtd", shots=1, option_all_below=0, option_cap=3)
    assert {len(e.options) for e in eval_sets(run, run.dataset)[0].examples} == {3}


# ----------------------------------------------------------------------------------------------------- frozen eval
def test_eval_options_frozen_once_and_reused(dtd):
    root, cache = dtd
    zeroshot = make_run(root, cache, "dtd", shots=2)
    rl = make_run(root, cache, "dtd", shots=8)  # another method / shots: same eval prompts
    rl.train.kind, rl.method.name = "grpo", "nothink"
    first = eval_sets(zeroshot, zeroshot.dataset)
    path = cache / "dtd" / "fewshot" / "seed_1" / "eval_test.json"
    frozen = json.loads(path.read_text())
    assert [i["id"] for i in frozen["items"]] == [e.id for e in first[0].examples]
    assert [tuple(i["options"]) for i in frozen["items"]] == [e.options for e in first[0].examples]
    assert eval_sets(rl, rl.dataset)[0].examples == first[0].examples
    # the second call reads the file: a changed (but sealed) file is what comes back
    frozen["items"][0]["options"] = list(reversed(frozen["items"][0]["options"]))
    write_sealed_json(path, frozen)
    again = eval_sets(rl, rl.dataset)[0]
    assert again.examples[0].options == tuple(frozen["items"][0]["options"]) != first[0].examples[0].options
    # a hand-edited one (checksum broken) is drawn again, with the same seeded options as the first time
    path.write_text(json.dumps({**frozen, "items": frozen["items"][::-1]}))
    assert eval_sets(rl, rl.dataset)[0].examples == first[0].examples
    assert again.question == "What type of texture is in the photo?" and again.split == "test"
    # a different option rule does not reuse it
    other = make_run(root, cache, "dtd", shots=2, option_all_below=0, option_cap=2)
    with pytest.warns(UserWarning, match="rebuilding"):
        assert {len(e.options) for e in eval_sets(other, other.dataset)[0].examples} == {2}


def test_eval_options_depend_on_seed_not_on_process(dtd):
    root, cache = dtd
    s1 = eval_sets(make_run(root, cache, "dtd", seed=1), dataset_config("dtd"))[0]
    s1b = eval_sets(make_run(root, cache.with_name("other"), "dtd", seed=1), dataset_config("dtd"))[0]
    s2 = eval_sets(make_run(root, cache, "dtd", seed=2), dataset_config("dtd"))[0]
    assert s1.examples == s1b.examples
    assert [e.options for e in s1.examples] != [e.options for e in s2.examples]
    assert (cache / "dtd" / "fewshot" / "seed_2" / "eval_test.json").is_file()


def test_eval_missing_images_reported_and_val_optional(dtd):
    root, cache = dtd
    (root / "dtd" / "images" / "bubbly" / "bubbly_test_1.jpg").unlink()
    run = make_run(root, cache, "dtd")
    (s,) = eval_sets(run, run.dataset)
    assert s.missing == ["bubbly/bubbly_test_1.jpg"] and len(s.examples) == 14
    assert all(e.split == "test" and e.label in e.options for e in s.examples)
    with pytest.warns(UserWarning, match=r"rebuilding frozen eval options .*\(include_val_in_test=False->True\)"):
        (sv,) = eval_sets(make_run(root, cache, "dtd", include_val=True), run.dataset)
    assert len(sv.examples) == 19 and any(e.id.endswith("_val_0.jpg") for e in sv.examples)


def test_imagenet_and_fgvc_end_to_end(tmp_path):
    make_imagenet(tmp_path / "data", n_train=3, n_val=2)
    make_fgvc(tmp_path / "data", counts=(2, 1, 1))
    run = make_run(tmp_path / "data", tmp_path / "cache", "imagenet", shots=2)
    ex = train_examples(run, run.dataset)
    assert len(ex) == 6 and ex[0].label == "tench" and ex[0].id.startswith("train/n01440764/")
    assert len(eval_sets(run, run.dataset)[0].examples) == 6
    run = make_run(tmp_path / "data", tmp_path / "cache", "fgvc_aircraft", setting="base2new", shots=1)
    base, new = eval_sets(run, run.dataset)
    assert {e.label for e in base.examples} == {"707-320", "A300B4"}
    assert {e.label for e in new.examples} == {"F/A-18", "Cessna 172", "DHC-1"}
    assert len(load_splits(run.dataset, run.data.root).val) == 5
