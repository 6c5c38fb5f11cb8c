"""Rule-based rewards (TRL signature), their registry, and evaluation scoring for CLS-RL / No-Thinking-RL.

Pure module: only the standard library. Every reward has the TRL signature
``f(completions, label, **kwargs) -> list[float]`` (extra dataset columns and TRL's own keywords arrive in
``kwargs``); TRL logs each one as ``rewards/<__name__>/mean``, so the function names are part of the interface.

How to add a reward: write the function (with a doctest) here and add it to `REWARDS`, or, without touching the
package, name it in a method's reward list by import path:

    rewards:
      - {name: accuracy}                                       # a key of REWARDS
      - {name: my_rewards.py:brevity, weight: 0.5, kwargs: {max_chars: 40}}   # file.py:function (or module:function)

`kwargs` are bound to the function (`functools.partial`, so TRL still logs it under the function's name); a
function decorated with `@reward_factory` is called with them instead and must return the reward function (as TRL's
`get_soft_overlong_punishment`).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from clsrl_exp.plugins import is_import_path, load_object

_THINK_ANSWER = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_ANSWER_REASON = re.compile(r"<answer>.*?</answer>\s*<reason>.*?</reason>", re.DOTALL)
_ANSWER_ONLY = re.compile(r"<answer>.*?</answer>", re.DOTALL)
_ANSWER_LINE = re.compile(r"<answer>(.*?)</answer>")  # no DOTALL: an answer spanning a newline is not extracted
_ANSWER_EVAL = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)


def completion_text(c: Any) -> str:
    """The text of one completion: a plain string, or TRL's conversational ``[{"role", "content"}, ...]``.

    The content of the first message is used; a content list of parts has its text parts joined (no separator).

    >>> completion_text("<answer>cat</answer>")
    '<answer>cat</answer>'
    >>> completion_text([{"role": "assistant", "content": "dog"}])
    'dog'
    >>> parts = [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]
    >>> completion_text([{"role": "assistant", "content": parts}])
    'ab'
    >>> completion_text([])
    ''
    """
    if isinstance(c, str):
        return c
    if isinstance(c, dict):
        c = [c]
    if not c:
        return ""
    content = c[0].get("content", "")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") or "" for p in content if isinstance(p, dict) and p.get("type", "text") == "text")


def _texts(completions: Sequence[Any], label: Sequence[str]) -> list[str]:
    """Completion texts, after checking there is one label per completion.

    >>> _texts(["a", [{"role": "assistant", "content": "b"}]], ["x", "y"])
    ['a', 'b']
    >>> _texts(["a"], ["x", "y"])
    Traceback (most recent call last):
    ...
    ValueError: got 1 completions but 2 labels; expected one label per completion
    """
    if len(completions) != len(label):
        raise ValueError(
            f"got {len(completions)} completions but {len(label)} labels; expected one label per completion"
        )
    return [completion_text(c) for c in completions]


def format_reward(completions: Sequence[Any], label: Sequence[str], **kwargs: Any) -> list[float]:
    """1.0 iff the WHOLE completion is ``<think>...</think>`` then (whitespace) ``<answer>...</answer>``.

    >>> format_reward(["<think>x</think>\\n<answer>cat</answer>", "<answer>cat</answer>"], ["cat", "cat"])
    [1.0, 0.0]
    >>> format_reward(["hi <think>x</think><answer>cat</answer>"], ["cat"], prompts=None)
    [0.0]
    """
    return [1.0 if _THINK_ANSWER.fullmatch(t) else 0.0 for t in _texts(completions, label)]


def _label_forms(gt: str, underscore_retry: bool) -> list[str]:
    """The label, then (open-set, official `grpo_open_pets.py`) the label with `_` as spaces if it has any.

    >>> _label_forms("sea_lion", True), _label_forms("sea_lion", False), _label_forms("cat", True)
    (['sea_lion', 'sea lion'], ['sea_lion'], ['cat'])
    """
    return [gt, gt.replace("_", " ")] if underscore_retry and "_" in gt else [gt]


def accuracy_reward(completions: Sequence[Any], label: Sequence[str], underscore_retry: bool = False,
                    **kwargs: Any) -> list[float]:
    """CLS-RL accuracy: the first ``<answer>(.*?)</answer>`` (same line only), stripped, equals the label ignoring case.

    Without an answer-tag match the whole stripped completion is compared instead. The official code first
    tries math-verify on the answer; it is left out here because it only fires on numeric labels.
    `underscore_retry` (open-set, official `grpo_open_pets.py`): a label with `_` also matches with spaces.

    >>> accuracy_reward(["<think>.</think><answer> Cat </answer>", "<answer>dog</answer>", "cat"], ["cat"] * 3)
    [1.0, 0.0, 1.0]
    >>> accuracy_reward(["<answer>\\ncat</answer>"], ["cat"])  # spans a newline: not extracted, whole text compared
    [0.0]
    >>> accuracy_reward(["<answer>cat</answer><answer>dog</answer>"], ["dog"])  # first answer wins
    [0.0]
    >>> accuracy_reward(["<answer>Sea Lion</answer>"] * 2, ["sea_lion"] * 2), accuracy_reward(
    ...     ["<answer>Sea Lion</answer>"], ["sea_lion"], underscore_retry=True)
    ([0.0, 0.0], [1.0])
    """
    out = []
    for text, gt in zip(_texts(completions, label), label, strict=True):
        m = _ANSWER_LINE.search(text)
        ans = m.group(1).strip().lower() if m else text.strip().lower()
        hit = any(ans == g.lower() for g in _label_forms(gt.strip(), underscore_retry))  # as the official code
        out.append(1.0 if hit else 0.0)
    return out


def equality_reward(completions: Sequence[Any], label: Sequence[str], underscore_retry: bool = False,
                    **kwargs: Any) -> list[float]:
    """No-Thinking-RL: 1.0 iff the raw completion equals the label exactly (case-sensitive, no strip, no tags).

    `underscore_retry` (open-set, official `grpo_direct_open_pets.py`): a label with `_` also matches with spaces.

    >>> equality_reward(["cat", "Cat", "cat ", "<answer>cat</answer>"], ["cat"] * 4)
    [1.0, 0.0, 0.0, 0.0]
    >>> equality_reward(["sea lion", "sea lion", "Sea lion"], ["sea_lion"] * 3, underscore_retry=True)
    [1.0, 1.0, 0.0]
    """
    return [1.0 if any(t == g for g in _label_forms(gt, underscore_retry)) else 0.0
            for t, gt in zip(_texts(completions, label), label, strict=True)]


def adaptive_format_reward(completions: Sequence[Any], label: Sequence[str], **kwargs: Any) -> list[float]:
    """1.0 iff the WHOLE completion is ``<answer>...</answer>`` or ``<think>...</think>`` + ``<answer>...</answer>``.

    >>> adaptive_format_reward(["<answer>cat</answer>", "<think>x</think> <answer>cat</answer>", "cat"], ["cat"] * 3)
    [1.0, 1.0, 0.0]
    """
    return [1.0 if _ANSWER_ONLY.fullmatch(t) or _THINK_ANSWER.fullmatch(t) else 0.0 for t in _texts(completions, label)]


def answer_reason_format_reward(completions: Sequence[Any], label: Sequence[str], **kwargs: Any) -> list[float]:
    """Think-After-Answer: 1.0 iff the WHOLE completion is ``<answer>...</answer>`` then (whitespace)
    ``<reason>...</reason>``.

    No official code exists (paper App. E: the rewards "do not change"); this is OUR rule: CLS-RL's format rule with
    the two blocks swapped (same lazy ``.*?``, DOTALL, full match), so its edge cases are CLS-RL's.

    >>> answer_reason_format_reward(["<answer>cat</answer>\\n<reason>fur</reason>",   # answer, newline, reason
    ...                              "<reason>fur</reason><answer>cat</answer>",       # reversed order
    ...                              "<answer>cat</answer>",                           # reason missing
    ...                              "<answer>cat</answer><reason>fur</reason> ok",    # extra text after
    ...                              "So: <answer>cat</answer><reason>fur</reason>",   # extra text before
    ...                              "<answer>a\\nb</answer><reason>c\\nd</reason>",      # newlines inside blocks
    ...                              "<answer>cat</answer>x<reason>fur</reason>"],     # text between blocks
    ...                             ["cat"] * 7)
    [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    >>> answer_reason_format_reward(["<answer><answer>cat</answer></answer><reason>r</reason>",  # nested: .*? spans
    ...                              "<answer>cat<reason>r</reason></answer>"], ["cat"] * 2)    # reason inside answer
    [1.0, 0.0]
    """
    return [1.0 if _ANSWER_REASON.fullmatch(t) else 0.0 for t in _texts(completions, label)]


def reward_factory(fn: Callable[..., Callable]) -> Callable[..., Callable]:
    """Mark `fn` as a factory: a method's `kwargs` are passed to it and it returns the reward function."""
    fn.is_reward_factory = True
    return fn


REWARDS: dict[str, Callable[..., list[float]]] = {
    "format": format_reward,
    "accuracy": accuracy_reward,
    "equality": equality_reward,
    "adaptive_format": adaptive_format_reward,
    "answer_reason_format": answer_reason_format_reward,
}


def _named_params(fn: Callable, offered: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `offered` that `fn` names as parameters (a catch-all ``**kwargs`` does not count).

    >>> _named_params(accuracy_reward, {"underscore_retry": True, "other": 1})
    {'underscore_retry': True}
    >>> _named_params(format_reward, {"underscore_retry": True})
    {}
    """
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins and other callables without a signature
        return {}
    return {k: v for k, v in offered.items()
            if k in params and params[k].kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}


def get_reward(name: str, kwargs: Mapping[str, Any] | None = None,
               offered: Mapping[str, Any] | None = None) -> Callable[..., list[float]]:
    """The reward function for a registry key or an import path, with `kwargs` bound (or passed to a factory).

    `offered` are keyword arguments bound only where the function (or factory) names them as parameters, under
    the method's own `kwargs` (a setting's `reward_kwargs`: open-set offers `underscore_retry` to every reward).

    >>> get_reward("accuracy").__name__
    'accuracy_reward'
    >>> f = get_reward("clsrl_exp.rewards:equality_reward", {}); f(["cat"], ["cat"])
    [1.0]
    >>> get_reward("equality", offered={"underscore_retry": True})(["sea lion"], ["sea_lion"])
    [1.0]
    >>> get_reward("format", offered={"underscore_retry": True}) is format_reward  # not a parameter: not bound
    True
    >>> get_reward("nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    KeyError: "unknown reward 'nope'; known: ['format', 'accuracy', ...] or an import path (module:function, ...)"
    """
    if is_import_path(name):
        fn = load_object(name)
    else:
        try:
            fn = REWARDS[name]
        except KeyError:
            raise KeyError(f"unknown reward {name!r}; known: {list(REWARDS)} or an import path "
                           "(module:function, file.py:function)") from None
    if not callable(fn):
        raise TypeError(f"reward {name!r} is not callable (got {type(fn).__name__})")
    kwargs = {**_named_params(fn, offered or {}), **(kwargs or {})}
    if getattr(fn, "is_reward_factory", False):
        fn = fn(**kwargs)
        if not callable(fn):
            raise TypeError(f"reward factory {name!r} returned {type(fn).__name__}, not a function")
        return fn
    return functools.partial(fn, **kwargs) if kwargs else fn


def extract_answer(output: str) -> str:
    """The first ``<answer>...</answer>`` content (may span lines), stripped; else the whole output stripped.

    >>> extract_answer("<think>hm</think><answer>\\n  Golden Retriever \\n</answer>")
    'Golden Retriever'
    >>> extract_answer("  just text ")
    'just text'
    """
    m = _ANSWER_EVAL.search(output)
    return (m.group(1) if m else output).strip()


def lenient_match(output: str, label: str) -> bool:
    """The paper's eval rule: answer equals or contains the label, ignoring case; retry with ``_`` as spaces.

    The label is stripped; an empty or whitespace-only label (or one that becomes empty) never matches.

    >>> lenient_match("<answer>a Golden Retriever</answer>", "golden retriever")
    True
    >>> lenient_match("<answer>sea lion</answer>", "sea_lion")
    True
    >>> lenient_match("<answer>lion</answer>", "sea lion")
    False
    >>> lenient_match("anything", "  ")
    False
    """
    ans = extract_answer(output).lower()
    candidates = [label]
    if "_" in label:
        candidates.append(label.replace("_", " "))
    for cand in candidates:
        gt = cand.strip().lower()
        if gt and (ans == gt or gt in ans):
            return True
    return False


def strict_match(output: str, label: str) -> bool:
    """The extracted answer equals the stripped label, ignoring case; nothing else (an empty label never matches).

    >>> strict_match("<answer> Cat </answer>", "cat")
    True
    >>> strict_match("<answer>a cat</answer>", "cat")
    False
    >>> strict_match("", "")
    False
    """
    gt = label.strip().lower()
    return bool(gt) and extract_answer(output).lower() == gt
