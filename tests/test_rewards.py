"""Table-driven and property tests for clsrl_exp.rewards (every expected value is written out literally)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clsrl_exp.rewards import (
    REWARDS,
    accuracy_reward,
    adaptive_format_reward,
    answer_reason_format_reward,
    completion_text,
    equality_reward,
    extract_answer,
    format_reward,
    get_reward,
    lenient_match,
    strict_match,
)

REWARD_FNS = [format_reward, accuracy_reward, equality_reward, adaptive_format_reward, answer_reason_format_reward,
              get_reward("accuracy", offered={"underscore_retry": True}),   # open-set (setting=open) forms
              get_reward("equality", offered={"underscore_retry": True})]
TRL_KWARGS = dict(
    prompts=[[{"role": "user", "content": "q"}]],
    completion_ids=[[1, 2, 3]],
    image=[None],
    trainer_state=object(),
    log_extra=lambda *a, **k: None,
    log_metric=lambda *a, **k: None,
)


def conv(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def conv_parts(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


# ---------------------------------------------------------------- completion_text


@pytest.mark.parametrize(
    "c, expected",
    [
        ("plain", "plain"),
        ("", ""),
        ([{"role": "assistant", "content": "hello"}], "hello"),
        ([{"role": "assistant", "content": "first"}, {"role": "assistant", "content": "second"}], "first"),
        ([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}], "ab"),
        ([{"role": "assistant", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}], "x"),
        ([{"role": "assistant", "content": ""}], ""),
        ([], ""),
    ],
)
def test_completion_text(c, expected):
    assert completion_text(c) == expected


# ---------------------------------------------------------------- format_reward

FORMAT_CASES = [
    ("<think>reason</think><answer>cat</answer>", 1.0),
    ("<think>reason</think>\n\n <answer>cat</answer>", 1.0),
    ("<think>multi\nline</think>\n<answer>two\nlines</answer>", 1.0),
    ("<think></think><answer></answer>", 1.0),
    ("<answer>cat</answer>", 0.0),  # think missing
    ("<think>reason</think>", 0.0),  # answer missing
    ("cat", 0.0),
    ("", 0.0),
    ("Sure! <think>r</think><answer>cat</answer>", 0.0),  # leading text
    ("<think>r</think><answer>cat</answer> done", 0.0),  # trailing text
    (" <think>r</think><answer>cat</answer>", 0.0),  # leading whitespace
    ("<think>r</think><answer>cat</answer>\n", 0.0),  # trailing newline
    ("<think>r</think>x<answer>cat</answer>", 0.0),  # non-space between tags
    ("<answer>cat</answer><think>r</think>", 0.0),  # wrong order
    ("<THINK>r</THINK><ANSWER>cat</ANSWER>", 0.0),  # tags are case-sensitive
    ("<think>r</think><answer>a</answer><answer>b</answer>", 1.0),  # .*? still spans to the final tag
]


@pytest.mark.parametrize("text, expected", FORMAT_CASES)
def test_format_reward(text, expected):
    assert format_reward([text], ["cat"]) == [expected]
    assert format_reward([conv(text)], ["cat"]) == [expected]
    assert format_reward([conv_parts(text)], ["cat"], **TRL_KWARGS) == [expected]


# ---------------------------------------------------------------- adaptive_format_reward

ADAPTIVE_CASES = [
    ("<answer>cat</answer>", 1.0),
    ("<answer>multi\nline</answer>", 1.0),
    ("<answer></answer>", 1.0),
    ("<think>r</think><answer>cat</answer>", 1.0),
    ("<think>r\ns</think>\n<answer>cat</answer>", 1.0),
    ("<think>r</think>", 0.0),
    ("cat", 0.0),
    ("", 0.0),
    ("The answer: <answer>cat</answer>", 0.0),
    ("<answer>cat</answer>.", 0.0),
    (" <answer>cat</answer>", 0.0),
    ("<answer>cat</answer>\n", 0.0),
    ("<answer>cat</answer><think>r</think>", 0.0),
    ("<think>r</think> x <answer>cat</answer>", 0.0),
]


@pytest.mark.parametrize("text, expected", ADAPTIVE_CASES)
def test_adaptive_format_reward(text, expected):
    assert adaptive_format_reward([text], ["cat"]) == [expected]
    assert adaptive_format_reward([conv(text)], ["cat"], **TRL_KWARGS) == [expected]


# ---------------------------------------------------------------- answer_reason_format_reward (Think-After-Answer)

ANSWER_REASON_CASES = [
    ("<answer>cat</answer><reason>fur</reason>", 1.0),
    ("<answer>cat</answer>\n\n <reason>fur</reason>", 1.0),  # whitespace between the blocks
    ("<answer>two\nlines</answer>\n<reason>multi\nline</reason>", 1.0),  # newlines inside blocks
    ("<answer></answer><reason></reason>", 1.0),  # empty blocks still have the format
    ("<reason>fur</reason><answer>cat</answer>", 0.0),  # reversed order
    ("<answer>cat</answer>", 0.0),  # reason missing
    ("<reason>fur</reason>", 0.0),  # answer missing
    ("<think>t</think><answer>cat</answer>", 0.0),  # CLS-RL's format is not this one
    ("Answer: <answer>cat</answer><reason>fur</reason>", 0.0),  # leading text
    ("<answer>cat</answer><reason>fur</reason> done", 0.0),  # trailing text
    ("<answer>cat</answer><reason>fur</reason>\n", 0.0),  # trailing newline
    (" <answer>cat</answer><reason>fur</reason>", 0.0),  # leading whitespace
    ("<answer>cat</answer> because <reason>fur</reason>", 0.0),  # text between the blocks
    ("<answer>cat</answer><reason>fur", 0.0),  # unclosed reason
    ("<answer>cat<reason>fur</reason></answer>", 0.0),  # reason nested inside the answer
    ("<answer><answer>cat</answer></answer><reason>fur</reason>", 1.0),  # nested answer: .*? spans (as CLS-RL)
    ("<answer>a</answer><reason>r</reason><reason>s</reason>", 1.0),  # .*? spans to the final tag (as CLS-RL)
    ("<ANSWER>cat</ANSWER><REASON>fur</REASON>", 0.0),  # tags are case-sensitive
    ("<answer>cat</answer><think>fur</think>", 0.0),
    ("", 0.0),
]


@pytest.mark.parametrize("text, expected", ANSWER_REASON_CASES)
def test_answer_reason_format_reward(text, expected):
    assert answer_reason_format_reward([text], ["cat"]) == [expected]
    assert answer_reason_format_reward([conv(text)], ["cat"]) == [expected]
    assert answer_reason_format_reward([conv_parts(text)], ["cat"], **TRL_KWARGS) == [expected]


def test_think_after_answer_accuracy_reads_the_answer_block():
    """Think-After-Answer's accuracy is CLS-RL's: the first answer tag; the reason after it is never read."""
    texts = ["<answer>cat</answer><reason>not a dog</reason>", "<answer>dog</answer><reason>cat-like</reason>"]
    assert accuracy_reward(texts, ["cat", "cat"]) == [1.0, 0.0]


# ---------------------------------------------------------------- accuracy_reward

ACCURACY_CASES = [
    ("<think>r</think><answer>cat</answer>", "cat", 1.0),
    ("<answer>Cat</answer>", "cat", 1.0),  # case
    ("<answer>CAT</answer>", "Cat", 1.0),
    ("<answer>  cat \t</answer>", "cat", 1.0),  # whitespace inside tag
    ("<answer>cat</answer>", "  cat ", 1.0),  # whitespace around label
    ("<answer>a cat</answer>", "cat", 0.0),  # no containment
    ("<answer>dog</answer>", "cat", 0.0),
    ("cat", "cat", 1.0),  # tag missing: whole text
    ("  Cat\n", "cat", 1.0),  # tag missing: whole text stripped, case ignored
    ("the answer is cat", "cat", 0.0),
    ("<answer>cat</answer><answer>dog</answer>", "cat", 1.0),  # first wins
    ("<answer>cat</answer><answer>dog</answer>", "dog", 0.0),
    ("<answer>\ncat</answer>", "cat", 0.0),  # newline inside: not extracted, whole text compared
    ("<answer>cat\n</answer>", "cat", 0.0),
    ("<answer>ca\nt</answer><answer>dog</answer>", "dog", 1.0),  # first tag spans a line, so the second matches
    ("<answer>\ncat</answer>", "<answer>\ncat</answer>", 1.0),  # fallback compares the whole text
    ("prefix <answer>cat</answer> suffix", "cat", 1.0),  # text outside tags is ignored
    ("<answer>sea_lion</answer>", "sea_lion", 1.0),
    ("<answer>sea lion</answer>", "sea_lion", 0.0),  # no underscore retry in training reward
    ("", "cat", 0.0),
    ("<answer></answer>", "cat", 0.0),
    ("<think>cat</think>", "cat", 0.0),
]


@pytest.mark.parametrize("text, label, expected", ACCURACY_CASES)
def test_accuracy_reward(text, label, expected):
    assert accuracy_reward([text], [label]) == [expected]
    assert accuracy_reward([conv(text)], [label]) == [expected]
    assert accuracy_reward([conv_parts(text)], [label], **TRL_KWARGS) == [expected]


# open-set (official grpo_open_pets.py): lower-cased equality on the answer tag, then `_` -> space retry
OPEN_ACCURACY_CASES = [
    ("<answer>american bulldog</answer>", "american_bulldog", 1.0),  # the retry
    ("<answer>American Bulldog</answer>", "american_bulldog", 1.0),  # retry, case ignored
    ("<answer>american_bulldog</answer>", "american_bulldog", 1.0),  # the raw label still matches
    ("<answer>americanbulldog</answer>", "american_bulldog", 0.0),
    ("<answer>an american bulldog</answer>", "american_bulldog", 0.0),  # still equality, no containment
    ("american bulldog", "american_bulldog", 1.0),  # no tag: whole text
    ("<answer>sea lion</answer>", "sea lion", 1.0),  # label without underscores: plain rule
    ("<answer>sea_lion</answer>", "sea lion", 0.0),  # the retry only turns label underscores into spaces
    ("<answer> </answer>", "_", 0.0),
]


@pytest.mark.parametrize("text, label, expected", OPEN_ACCURACY_CASES)
def test_open_set_accuracy_retries_underscores(text, label, expected):
    assert accuracy_reward([text], [label], underscore_retry=True) == [expected]
    assert get_reward("accuracy", offered={"underscore_retry": True})([conv(text)], [label]) == [expected]


OPEN_EQUALITY_CASES = [  # official grpo_direct_open_pets.py: exact raw equality, then `_` -> space retry
    ("american bulldog", "american_bulldog", 1.0),
    ("american_bulldog", "american_bulldog", 1.0),
    ("American bulldog", "american_bulldog", 0.0),  # still case-sensitive
    ("american bulldog ", "american_bulldog", 0.0),  # still no strip
    ("<answer>american bulldog</answer>", "american_bulldog", 0.0),
    ("sea lion", "sea lion", 1.0),
    ("sea_lion", "sea lion", 0.0),
]


@pytest.mark.parametrize("text, label, expected", OPEN_EQUALITY_CASES)
def test_open_set_equality_retries_underscores(text, label, expected):
    assert equality_reward([text], [label], underscore_retry=True) == [expected]
    assert get_reward("equality", offered={"underscore_retry": True})([conv(text)], [label]) == [expected]


def test_offered_kwargs_reach_only_rewards_that_name_them_and_never_override_the_methods():
    assert get_reward("format", offered={"underscore_retry": True}) is format_reward
    assert get_reward("answer_reason_format", offered={"underscore_retry": True}) is answer_reason_format_reward
    plain = get_reward("equality", {"underscore_retry": False}, offered={"underscore_retry": True})
    assert plain(["sea lion"], ["sea_lion"]) == [0.0]  # the method's own kwargs win


def test_accuracy_reward_batch():
    completions = ["<answer>cat</answer>", conv("<answer>dog</answer>"), "Bird", conv_parts("<answer>x</answer>")]
    assert accuracy_reward(completions, ["cat", "cat", "bird", "y"]) == [1.0, 0.0, 1.0, 0.0]


# ---------------------------------------------------------------- equality_reward

EQUALITY_CASES = [
    ("cat", "cat", 1.0),
    ("Cat", "cat", 0.0),  # case-sensitive
    ("cat ", "cat", 0.0),  # no strip
    (" cat", "cat", 0.0),
    ("cat\n", "cat", 0.0),
    ("cat", " cat", 0.0),
    ("<answer>cat</answer>", "cat", 0.0),  # no tag extraction
    ("sea_lion", "sea_lion", 1.0),
    ("sea lion", "sea_lion", 0.0),  # no underscore retry
    ("a cat", "cat", 0.0),
    ("", "cat", 0.0),
    ("", "", 1.0),
    ("two\nlines", "two\nlines", 1.0),
]


@pytest.mark.parametrize("text, label, expected", EQUALITY_CASES)
def test_equality_reward(text, label, expected):
    assert equality_reward([text], [label]) == [expected]
    assert equality_reward([conv(text)], [label], **TRL_KWARGS) == [expected]


# ---------------------------------------------------------------- shared reward behaviour


@pytest.mark.parametrize("fn", REWARD_FNS)
def test_length_mismatch_raises(fn):
    with pytest.raises(ValueError, match="2 completions but 1 labels"):
        fn(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="1 completions but 3 labels"):
        fn(["a"], ["a", "b", "c"], prompts=["p"])


@pytest.mark.parametrize("fn", REWARD_FNS)
def test_empty_batch(fn):
    assert fn([], []) == []


@pytest.mark.parametrize("fn", REWARD_FNS)
def test_returns_python_floats(fn):
    out = fn(["<think>a</think><answer>cat</answer>", "cat"], ["cat", "cat"], **TRL_KWARGS)
    assert all(type(r) is float for r in out)


def test_registry_and_names():
    assert REWARDS == {
        "format": format_reward,
        "accuracy": accuracy_reward,
        "equality": equality_reward,
        "adaptive_format": adaptive_format_reward,
        "answer_reason_format": answer_reason_format_reward,
    }
    assert [f.__name__ for f in REWARDS.values()] == [
        "format_reward",
        "accuracy_reward",
        "equality_reward",
        "adaptive_format_reward",
        "answer_reason_format_reward",
    ]
    assert get_reward("equality") is equality_reward


def test_get_reward_unknown():
    with pytest.raises(KeyError, match="known: .*'format'.*'accuracy'.*'equality'.*'adaptive_format'"):
        get_reward("accurracy")


# ---------------------------------------------------------------- extract_answer / lenient / strict

EXTRACT_CASES = [
    ("<answer>cat</answer>", "cat"),
    ("<think>t</think>\n<answer>  Cat \n</answer>", "Cat"),
    ("<answer>\nsea lion\n</answer>", "sea lion"),  # DOTALL: spans lines
    ("<answer>two\nlines</answer>", "two\nlines"),
    ("<answer>a</answer><answer>b</answer>", "a"),  # first wins
    ("  no tags here \n", "no tags here"),
    ("<answer>unclosed", "<answer>unclosed"),
    ("", ""),
    ("<answer></answer>", ""),
]


@pytest.mark.parametrize("output, expected", EXTRACT_CASES)
def test_extract_answer(output, expected):
    assert extract_answer(output) == expected


MATCH_CASES = [
    # output, label, lenient, strict
    ("<answer>cat</answer>", "cat", True, True),
    ("<answer>CAT</answer>", "cat", True, True),  # case
    ("<answer>cat</answer>", "Cat", True, True),
    ("<answer>  cat  </answer>", "cat", True, True),  # whitespace in tag
    ("<answer>cat</answer>", " cat ", True, True),  # whitespace around label
    ("<answer>a tabby cat</answer>", "cat", True, False),  # containment: lenient only
    ("<answer>ca</answer>", "cat", False, False),  # answer inside label does not count
    ("<answer>dog</answer>", "cat", False, False),
    ("cat", "cat", True, True),  # tag missing: whole text
    ("It is a cat.", "cat", True, False),
    ("It is a dog.", "cat", False, False),
    ("<answer>cat</answer><answer>dog</answer>", "cat", True, True),  # first wins
    ("<answer>cat</answer><answer>dog</answer>", "dog", False, False),
    ("<answer>\ncat\n</answer>", "cat", True, True),  # newline inside: DOTALL extraction
    ("<answer>sea\nlion</answer>", "sea lion", False, False),
    ("<think>cat?</think><answer>dog</answer>", "cat", False, False),  # only the answer is read
    ("<answer>sea lion</answer>", "sea_lion", True, False),  # underscore retry: lenient only
    ("<answer>Sea Lion</answer>", "sea_lion", True, False),
    ("<answer>sea_lion</answer>", "sea_lion", True, True),
    ("<answer>sealion</answer>", "sea_lion", False, False),
    ("<answer>anything</answer>", "", False, False),  # empty label never matches
    ("<answer>anything</answer>", "   ", False, False),
    ("", "", False, False),
    ("<answer>anything</answer>", "_", False, False),  # becomes empty after '_'->' ' retry
    ("<answer>a b</answer>", "__", False, False),
    ("", "cat", False, False),
    ("<answer></answer>", "cat", False, False),
]


@pytest.mark.parametrize("output, label, lenient, strict", MATCH_CASES)
def test_lenient_match(output, label, lenient, strict):
    assert lenient_match(output, label) is lenient


@pytest.mark.parametrize("output, label, lenient, strict", MATCH_CASES)
def test_strict_match(output, label, lenient, strict):
    assert strict_match(output, label) is strict


# ---------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(text=st.text(), label=st.text())
def test_property_rewards_never_raise_and_are_binary(text, label):
    for fn in REWARD_FNS:
        for c in (text, conv(text), conv_parts(text)):
            out = fn([c], [label], prompts=["p"], trainer_state=None)
            assert len(out) == 1
            assert out[0] in (0.0, 1.0)
            assert type(out[0]) is float
    assert isinstance(lenient_match(text, label), bool)
    assert isinstance(strict_match(text, label), bool)
    assert isinstance(extract_answer(text), str)


@settings(max_examples=300, deadline=None)
@given(text=st.text(), label=st.text())
def test_property_conversational_equals_plain(text, label):
    for fn in REWARD_FNS:
        assert fn([text], [label]) == fn([conv(text)], [label]) == fn([conv_parts(text)], [label])


@settings(max_examples=500, deadline=None)
@given(
    text=st.one_of(
        st.text(),
        st.builds(lambda a, b, c: f"{a}<answer>{b}</answer>{c}", st.text(), st.text(), st.text()),
    ),
    label=st.text().filter(lambda s: s.strip() != ""),
)
def test_property_strict_implies_lenient(text, label):
    if strict_match(text, label):
        assert lenient_match(text, label)


@settings(max_examples=300, deadline=None)
@given(
    label=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="<>")).filter(
        lambda s: s.strip() != ""
    ),
    pad=st.sampled_from(["", " ", "\n", "  \t"]),
)
def test_property_tagged_label_matches(label, pad):
    """ASCII labels without tag characters (Unicode upper/lower do not round-trip, e.g. micro sign)."""
    output = f"<think>x</think><answer>{pad}{label}{pad}</answer>"
    assert strict_match(output, label)
    assert lenient_match(output, label)
    assert lenient_match(output, label.upper())
    assert equality_reward([label], [label]) == [1.0]


@settings(max_examples=300, deadline=None)
@given(text=st.text(), label=st.text(alphabet=st.sampled_from("ab_ c")))
def test_property_underscore_retry_only_adds_matches(text, label):
    """The open-set retry accepts everything the closed-set rule accepts, and differs only for labels with `_`."""
    for fn in (accuracy_reward, equality_reward):
        plain, retry = fn([text], [label])[0], fn([text], [label], underscore_retry=True)[0]
        assert retry >= plain
        if "_" not in label:
            assert retry == plain


_NO_TAGS = st.text(alphabet=st.characters(exclude_characters="<>"))


@settings(max_examples=300, deadline=None)
@given(answer=_NO_TAGS, reason=_NO_TAGS, gap=st.sampled_from(["", " ", "\n", " \n\t"]),
       junk=st.text(min_size=1).filter(lambda s: s.strip() != ""))
def test_property_answer_then_reason_is_the_format_and_anything_around_it_breaks_it(answer, reason, gap, junk):
    good = f"<answer>{answer}</answer>{gap}<reason>{reason}</reason>"
    assert answer_reason_format_reward([good], ["x"]) == [1.0]
    assert answer_reason_format_reward([f"<reason>{reason}</reason>{gap}<answer>{answer}</answer>"], ["x"]) == [0.0]
    assert answer_reason_format_reward([good + junk], ["x"]) == [0.0]
    assert answer_reason_format_reward([f"<answer>{answer}</answer>"], ["x"]) == [0.0]
