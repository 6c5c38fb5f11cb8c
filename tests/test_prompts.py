"""Golden prompts: the exact text each method trains and is evaluated on, after the chat template, for one fixed
example, against strings written out below from paper.md 1.1-1.5 (official grpo.py, grpo_direct.py, sft.py and the
eval scripts); plus the option-list rule (sizes, reproducibility, formatting).

The training prompts go through the same steps as in training: `prompt_text` + `grpo_messages` (GRPO) or `sft_rows`
(SFT), then TRL's own image insertion (`prepare_multimodal_messages`) and the processor's chat template (Qwen's, as
shipped with the tiny model). Evaluation prompts come from `clsrl_exp.evaluate.chat_texts`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO, TINY, run_config
from PIL import Image

from clsrl_exp.data import Example, class_halves
from clsrl_exp.evaluate import chat_texts
from clsrl_exp.prompts import eval_prompt, grpo_messages, option_count, option_list, problem_text, prompt_text
from clsrl_exp.train.rows import sft_rows

QUESTION = "What type of texture is in the photo?"
OPTIONS = ["banded", "zigzagged", "marbled"]
LABEL = "banded"

SYS = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
USER_IMG = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
END = "<|im_end|>\n<|im_start|>assistant\n"
PROBLEM = "What type of texture is in the photo?\nPlease choose one from list [ banded, zigzagged, marbled]."
ADAPTIVE = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|><|image_pad|><|vision_end|>What type of texture is in the photo?\n"
    "Please choose one from list [ banded, zigzagged, marbled].. Please first identify whether this problem requires "
    "intermediate thinking or calculation. If the problem requires thinking or calculation, output the thinking and "
    "calculation process inside <think> </think> tags and the final answer inside <answer> </answer> tags. If no "
    "thinking or calculation is required, directly output the final answer inside <answer> </answer> tags. Your "
    "output should follow one of two cases: (1) '<answer> ... </answer>', (2) '<think> ... </think> <answer> ... "
    "</answer>'.<|im_end|>\n<|im_start|>assistant\n"
)
SFT_PROMPT = (
    "<|im_start|>system\nOutput the thinking process in <think> </think> and final answer in <answer> </answer> "
    "tags.<|im_end|>\n<|im_start|>user\nWhat type of texture is in the photo?\nPlease choose one from list "
    "[ banded, zigzagged, marbled].<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n"
)

# GRPO training prompts (paper.md 1.2: default system turn, image first, "{Question}\n Please ...").
TRAIN = {
    "nothink": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>What type of texture is in the photo?\n"
        "Please choose one from list [ banded, zigzagged, marbled].\n Please directly output the answer."
        "<|im_end|>\n<|im_start|>assistant\n"
    ),
    "clsrl": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>What type of texture is in the photo?\n"
        "Please choose one from list [ banded, zigzagged, marbled].\n Please output the thinking process in "
        "<think> </think> and final answer in <answer> </answer> tags.<|im_end|>\n<|im_start|>assistant\n"
    ),
    "adaptive": ADAPTIVE,
    # no official code: the paper's instruction (App. E), placed as grpo.py places CLS-RL's ("\n Please ...")
    "think-after-answer": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>What type of texture is in the photo?\n"
        "Please choose one from list [ banded, zigzagged, marbled].\n Please first output the answer in "
        "<answer> </answer> tags and then output a brief reasoning process in <reason> </reason> tags."
        "<|im_end|>\n<|im_start|>assistant\n"
    ),
}
# Evaluation prompts (paper.md 1.3: the eval scripts' wording; " Please directly output the answer name.").
EVAL = {
    ("zeroshot", "test"): (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>What type of texture is in the photo?\n"
        "Please choose one from list [ banded, zigzagged, marbled]. Please directly output the answer name."
        "<|im_end|>\n<|im_start|>assistant\n"
    ),
    ("nothink", "test"): (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>What type of texture is in the photo?\n"
        "Please choose one from list [ banded, zigzagged, marbled]. Please directly output the answer name."
        "<|im_end|>\n<|im_start|>assistant\n"
    ),
    ("clsrl", "test"): (  # test_qwen2vl_fewshot.py, b2n_new: "First output ..."
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>What type of texture is in the photo?\n"
        "Please choose one from list [ banded, zigzagged, marbled]. First output the thinking process in "
        "<think> </think> and final answer in <answer> </answer> tags.<|im_end|>\n<|im_start|>assistant\n"
    ),
    ("clsrl", "new"): (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>What type of texture is in the photo?\n"
        "Please choose one from list [ banded, zigzagged, marbled]. First output the thinking process in "
        "<think> </think> and final answer in <answer> </answer> tags.<|im_end|>\n<|im_start|>assistant\n"
    ),
    ("clsrl", "base"): (  # test_qwen2vl_b2n_base.py: "Please output ..."
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>What type of texture is in the photo?\n"
        "Please choose one from list [ banded, zigzagged, marbled]. Please output the thinking process in "
        "<think> </think> and final answer in <answer> </answer> tags.<|im_end|>\n<|im_start|>assistant\n"
    ),
    ("adaptive", "test"): ADAPTIVE,  # no official eval script: its training prompt
    ("think-after-answer", "test"): (  # no official eval script: placed as the eval scripts place CLS-RL's
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>What type of texture is in the photo?\n"
        "Please choose one from list [ banded, zigzagged, marbled]. Please first output the answer in "
        "<answer> </answer> tags and then output a brief reasoning process in <reason> </reason> tags."
        "<|im_end|>\n<|im_start|>assistant\n"
    ),
    ("sft", "test"): SFT_PROMPT,  # the SFT prompt (system turn, text then image)
}


@pytest.fixture(scope="module")
def processor(tiny_path, session_root):
    from clsrl_exp.models import load_processor

    run, _ = run_config(TINY, session_root)
    return load_processor(tiny_path, run.model)


@pytest.fixture(scope="module")
def settings(session_root):
    return {s: run_config([f"setting={s}"], session_root)[0].setting for s in ("fewshot", "base2new")}


@pytest.fixture(scope="module")
def methods(session_root):
    return {m: run_config([*TINY, f"method={m}"], session_root)[0].method
            for m in ("zeroshot", "sft", "clsrl", "nothink", "adaptive", "think-after-answer")}


def _example(split: str = "test") -> Example:
    return Example("banded/banded_0001.jpg", "/nonexistent/banded_0001.jpg", LABEL, tuple(OPTIONS), split)


def _image():
    return Image.new("RGB", (56, 56), (200, 30, 30))


def test_golden_pieces_are_consistent():
    """The literal strings above are built from the same pieces (a typo in one of them would show here)."""
    for m, text in TRAIN.items():
        assert text.startswith(SYS + USER_IMG + PROBLEM) and text.endswith(END), m
    for key, text in EVAL.items():
        assert text.endswith(END) and PROBLEM in text, key


@pytest.mark.parametrize("method", sorted(TRAIN))
def test_grpo_training_prompt_after_chat_template(method, methods, processor):
    from trl.data_utils import prepare_multimodal_messages

    m = methods[method]
    messages = grpo_messages(prompt_text(m.train_template, QUESTION, OPTIONS), m)
    rendered = processor.apply_chat_template(prepare_multimodal_messages(messages, images=[_image()]),
                                             tokenize=False, add_generation_prompt=True)
    assert rendered == TRAIN[method]


def test_grpo_dataset_rows_render_the_same_prompt(methods, processor, tmp_path):
    """The rows handed to GRPOTrainer (grpo_dataset) carry exactly that prompt, with the image beside it."""
    from trl.data_utils import prepare_multimodal_messages

    from clsrl_exp.train.rows import grpo_dataset

    path = tmp_path / "banded_0001.png"
    _image().save(path)
    ex = Example("banded/banded_0001.png", str(path), LABEL, tuple(OPTIONS), "train")
    row = grpo_dataset([ex], methods["nothink"], QUESTION, 56)[0]
    assert (row["label"], row["id"], row["image"].size) == (LABEL, ex.id, (56, 56))
    rendered = processor.apply_chat_template(prepare_multimodal_messages(row["prompt"], images=[row["image"]]),
                                             tokenize=False, add_generation_prompt=True)
    assert rendered == TRAIN["nothink"]


def test_sft_training_prompt_and_target(methods, processor):
    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    m = methods["sft"]
    assert m.system_prompt == ("Output the thinking process in <think> </think> and final answer in <answer> </answer> "
                               "tags.")
    ((ex, prompt, target),) = sft_rows([_example("train")], m, QUESTION)
    assert target == "<answer>banded</answer>"
    # text first, then the image (paper.md 1.4)
    assert [p["type"] for p in prompt[-1]["content"]] == ["text", "image"]
    example = {"prompt": prepare_multimodal_messages(prompt, images=[_image()]),
               "completion": prepare_multimodal_messages([{"role": "assistant",
                                                           "content": [{"type": "text", "text": target}]}])}
    out = apply_chat_template(example, processor)  # what TRL's SFT collator renders
    assert out["prompt"] == SFT_PROMPT
    assert out["completion"] == "<answer>banded</answer><|im_end|>\n"


@pytest.mark.parametrize(("method", "split"), sorted(EVAL))
def test_eval_prompt_after_chat_template(method, split, methods, processor):
    m = methods[method]
    (text,) = chat_texts(processor, [_example(split)], eval_prompt(m, split, "eval"), QUESTION)
    assert text == EVAL[(method, split)]


def test_zeroshot_train_variant_is_the_direct_training_prompt(methods, processor):
    """eval.prompt=train: zero-shot with the No-Thinking training wording (the warm-started demo uses it)."""
    m = methods["zeroshot"]
    (text,) = chat_texts(processor, [_example()], eval_prompt(m, "test", "train"), QUESTION)
    assert text == TRAIN["nothink"]


# Open-set (setting=open): no option list, the official domain question (grpo_open*.py, test_qwen2vl_open_fewshot.py)
FLOWER, ANIMAL = "What type of flower is in the photo?", "What type of animal is in the photo?"
OPEN_TRAIN = {
    ("clsrl", "oxford_flowers"): (  # grpo_open.py: grpo.py's template around the question alone
        SYS + USER_IMG + "What type of flower is in the photo?\n Please output the thinking process in <think> "
        "</think> and final answer in <answer> </answer> tags." + END),
    ("nothink", "oxford_pets"): (  # grpo_direct_open_pets.py
        SYS + USER_IMG + "What type of animal is in the photo?\n Please directly output the answer." + END),
}
OPEN_EVAL = {
    ("clsrl", "oxford_flowers"): (  # test_qwen2vl_open_fewshot.py, prompt=normal ("Please output ...")
        SYS + USER_IMG + "What type of flower is in the photo? Please output the thinking process in <think> "
        "</think> and final answer in <answer> </answer> tags." + END),
    ("nothink", "oxford_flowers"): (  # prompt=direct
        SYS + USER_IMG + "What type of flower is in the photo? Please directly output the answer name." + END),
    ("zeroshot", "oxford_pets"): SYS + USER_IMG + "What type of animal is in the photo? Please directly output the "
                                 "answer name." + END,
    ("think-after-answer", "food101"): (
        SYS + USER_IMG + "What type of food is in the photo? Please first output the answer in <answer> </answer> "
        "tags and then output a brief reasoning process in <reason> </reason> tags." + END),
}


@pytest.fixture(scope="module")
def open_runs(session_root):
    """(RunConfig, container) per (method, dataset) composed with setting=open."""
    keys = {*OPEN_TRAIN, *OPEN_EVAL}
    return {(m, d): run_config(["logger=none", "setting=open", f"method={m}", f"dataset={d}"], session_root)
            for m, d in keys}


def _open_example(split: str) -> Example:
    return Example("x/0001.jpg", "/nonexistent/0001.jpg", "pink primrose", (), split)


@pytest.mark.parametrize("key", sorted(OPEN_TRAIN))
def test_open_set_training_prompt_after_chat_template(key, open_runs, processor):
    from trl.data_utils import prepare_multimodal_messages

    run, _ = open_runs[key]
    question = run.dataset.question_in(run.setting.name)
    messages = grpo_messages(prompt_text(run.method.train_template, question, ()), run.method)
    rendered = processor.apply_chat_template(prepare_multimodal_messages(messages, images=[_image()]),
                                             tokenize=False, add_generation_prompt=True)
    assert rendered == OPEN_TRAIN[key]
    assert "Please choose one from list" not in rendered


@pytest.mark.parametrize("key", sorted(OPEN_EVAL))
def test_open_set_eval_prompt_after_chat_template(key, open_runs, processor):
    """Through the cell's own evaluation request (setting=open picks the open-set wording and question)."""
    from clsrl_exp.cells import requested_evals
    from clsrl_exp.identity import train_hash

    run, container = open_runs[key]
    (spec,) = requested_evals(run, train_hash(container))
    assert spec.split == "test" and spec.variant == "eval"
    (text,) = chat_texts(processor, [_open_example("test")], spec.prompt, run.dataset.question_in("open"))
    assert text == OPEN_EVAL[key]


def test_open_questions_are_the_official_ones_and_others_ask_their_own():
    from clsrl_exp.config import dataset_config

    obj = "What type of object is in the photo?"
    expected = {"oxford_flowers": FLOWER, "oxford_pets": ANIMAL, "food101": "What type of food is in the photo?",
                "imagenet": obj, "caltech101": obj, "dtd": QUESTION,
                "eurosat": "What type of object is in the centered satellite photo?",
                "ucf101": "What actions is the person performing in the photo?"}
    for name, question in expected.items():
        ds = dataset_config(name)
        assert ds.question_in("open") == question, name
        assert ds.question_in("fewshot") == ds.question  # the closed set keeps the paper's question


# eval.prompt variants: cross-prompt (another method's eval prompt, v6 Fig. 7(b)) and empty-think (v6 Table 17)
VARIANTS = {
    ("clsrl", "nothink"): EVAL[("nothink", "test")],
    ("nothink", "clsrl"): EVAL[("clsrl", "test")],
    ("clsrl", "sft"): SFT_PROMPT,  # the whole prompt as SFT is asked: its system turn, text before image
    ("clsrl", "empty-think"): EVAL[("clsrl", "test")] + "<think></think>",  # the reply starts with the empty block
    ("clsrl", "clsrl"): EVAL[("clsrl", "test")],  # its own name: its default prompt
}


@pytest.mark.parametrize(("method", "variant"), sorted(VARIANTS))
def test_prompt_variants_after_chat_template(method, variant, session_root, processor):
    from clsrl_exp.cells import requested_evals
    from clsrl_exp.identity import train_hash

    run, container = run_config([*TINY, f"method={method}", f"eval.prompt={variant}"], session_root)
    (spec,) = requested_evals(run, train_hash(container))
    assert spec.variant == ("eval" if variant == method else variant)
    (text,) = chat_texts(processor, [_example()], spec.prompt, QUESTION)
    assert text == VARIANTS[(method, variant)]


def test_image_token_expands_to_the_configured_count(processor):
    """After the processor, the single placeholder becomes the 4 visual tokens of a 56 px image (tiny model)."""
    out = processor(text=[TRAIN["nothink"]], images=[_image()], return_tensors="pt")
    assert int((out["input_ids"][0] == processor.image_token_id).sum()) == 4


# ------------------------------------------------------------------------------------------------- option lists
@pytest.mark.parametrize(("dataset", "classes", "expected"), [
    ("imagenet", 1000, 100), ("dtd", 47, 47), ("eurosat", 10, 10), ("stanford_cars", 196, 78),
    ("fgvc_aircraft", 100, 40), ("caltech101", 100, 40), ("sun397", 397, 100), ("oxford_pets", 37, 37),
    ("food101", 101, 40), ("ucf101", 101, 40), ("oxford_flowers", 102, 40),
])
def test_fewshot_option_counts(dataset, classes, expected, settings):
    s = settings["fewshot"]
    assert (s.option_fraction, s.option_all_below, s.option_cap) == (0.4, 30, 100)
    assert option_count(classes, s.option_fraction, s.option_all_below, s.option_cap) == expected
    assert option_count(classes) == expected  # the defaults are the few-shot rule


@pytest.mark.parametrize(("classes", "base", "new"), [
    (1000, 100, 100),  # 500 per half -> int(0.8 * 500) = 400 -> cap 100
    (47, 23, 24),      # DTD: 23 / 24 classes -> 18 / 19 < 30 -> all
    (196, 78, 78),     # StanfordCars: 98 per half -> 78
    (10, 5, 5),        # EuroSAT: all
    (100, 40, 40),     # 50 per half -> 40
    (397, 100, 100),   # SUN397: 198 / 199 -> 158 / 159 -> cap 100
])
def test_base2new_option_counts(classes, base, new, settings):
    s = settings["base2new"]
    assert (s.option_fraction, s.option_all_below, s.option_cap, s.base_split) == (0.8, 30, 100, "floor")
    b, n = class_halves(classes, s.base_split)
    assert len(b) == classes // 2
    count = lambda c: option_count(c, s.option_fraction, s.option_all_below, s.option_cap)
    assert (count(len(b)), count(len(n))) == (base, new)


CLASSES = [f"class_{i:03d}" for i in range(100)]
IDS = [f"img/{i:05d}.jpg" for i in range(60)]

_LISTS_CODE = """
import json, sys
from clsrl_exp.prompts import option_list
classes = [f"class_{i:03d}" for i in range(100)]
ids = [f"img/{i:05d}.jpg" for i in range(60)]
print(json.dumps([option_list(classes, classes[i % 100], 40, seed=int(sys.argv[1]), example_id=x)
                  for i, x in enumerate(ids)]))
"""


def _lists(seed: int) -> list[list[str]]:
    return [option_list(CLASSES, CLASSES[i % 100], 40, seed=seed, example_id=x) for i, x in enumerate(IDS)]


def test_option_lists_are_reproducible_across_processes():
    here = _lists(1)
    outs = []
    for hashseed in ("1", "12345"):  # str hashing is randomised per process: the lists must not depend on it
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        r = subprocess.run([sys.executable, "-c", _LISTS_CODE, "1"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=120, check=True)
        outs.append(json.loads(r.stdout))
    assert outs[0] == outs[1] == here


def test_option_lists_contain_the_label_once_and_no_duplicates():
    for i, opts in enumerate(_lists(1)):
        assert len(opts) == 40 and len(set(opts)) == 40
        assert opts.count(CLASSES[i % 100]) == 1
        assert set(opts) <= set(CLASSES)


def test_option_lists_depend_on_seed_and_id():
    a, b = _lists(1), _lists(2)
    assert sum(x != y for x, y in zip(a, b, strict=True)) >= 0.9 * len(IDS)
    assert len({tuple(x) for x in a}) == len(IDS)  # a different list per example
    # all classes shown (DTD-like): the order still changes with the seed
    small = CLASSES[:10]
    o1 = [option_list(small, "class_000", 10, seed=1, example_id=x) for x in IDS]
    o2 = [option_list(small, "class_000", 10, seed=2, example_id=x) for x in IDS]
    assert all(sorted(x) == small for x in o1)
    assert sum(x != y for x, y in zip(o1, o2, strict=True)) >= 0.9 * len(IDS)


def test_option_list_rejects_unknown_label():
    with pytest.raises(ValueError):
        option_list(CLASSES, "not a class", 40, seed=1, example_id="x")


@pytest.mark.parametrize(("options", "expected"), [
    (["banded", "zigzagged", "marbled"],
     "What type of texture is in the photo?\nPlease choose one from list [ banded, zigzagged, marbled]."),
    (["banded"], "What type of texture is in the photo?\nPlease choose one from list [ banded]."),
    (["Annual Crop Land", "Sea or Lake"],
     "What type of texture is in the photo?\nPlease choose one from list [ Annual Crop Land, Sea or Lake]."),
])
def test_problem_text_format(options, expected):
    text = problem_text(QUESTION, options)
    assert text == expected
    assert "[ " in text and " ]" not in text and not text.split("\n")[1].startswith(" ")


@pytest.mark.parametrize(("dataset", "question"), [
    ("dtd", QUESTION),
    ("imagenet", "What type of object is in the photo?"),
    ("caltech101", "What type of object is in the photo?"),
    ("oxford_pets", "What type of object is in the photo?"),
    ("stanford_cars", "What type of object is in the photo?"),
    ("oxford_flowers", "What type of object is in the photo?"),
    ("food101", "What type of object is in the photo?"),
    ("sun397", "What type of object is in the photo?"),
    ("fgvc_aircraft", "What type of aircraft is in the photo?"),
    ("eurosat", "What type of object is in the centered satellite photo?"),
    ("ucf101", "What actions is the person performing in the photo?"),
])
def test_dataset_questions_are_the_papers(dataset, question):
    from clsrl_exp.config import dataset_config

    assert dataset_config(dataset).question == question  # paper.md 1.1
