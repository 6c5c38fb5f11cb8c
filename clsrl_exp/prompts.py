"""Every prompt, exactly as the paper's code builds it (paper.md 1.1-1.5): option lists, problem text, templates and
the chat messages of GRPO, SFT and evaluation. Nothing else in the package assembles a prompt.

Templates live in `conf/method/*.yaml` and questions in `conf/dataset/*.yaml`; this module only assembles them.
Option lists are seeded from (run seed, example id), so every method sees the same list for the same item.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clsrl_exp.config import MethodConfig


def option_count(num_classes: int, fraction: float = 0.4, all_below: int = 30, cap: int = 100) -> int:
    """Options shown per example: int(fraction x C); all classes if that is < `all_below`; at most `cap`.

    Few-shot uses fraction 0.4, base-to-new 0.8 over the classes of that half (paper.md 1.1, App. D.1).

    >>> [option_count(c) for c in (1000, 47, 10, 196, 100)]  # ImageNet, DTD, EuroSAT, StanfordCars, FGVCAircraft
    [100, 47, 10, 78, 40]
    """
    n = int(fraction * num_classes)
    if n < all_below:
        n = num_classes
    return min(n, cap, num_classes)


def option_list(classes: Sequence[str], label: str, n: int, seed: int, example_id: str) -> list[str]:
    """The per-example option list of the official notebook: shuffle, take n, put the label in, shuffle again.

    Deterministic for a given (seed, example id) on every machine (string seeds hash with SHA-512).

    >>> option_list(["a", "b", "c", "d"], "c", 2, seed=1, example_id="x.jpg") == option_list(
    ...     ["a", "b", "c", "d"], "c", 2, seed=1, example_id="x.jpg")
    True
    >>> "c" in option_list(["a", "b", "c", "d"], "c", 2, seed=1, example_id="x.jpg")
    True
    """
    if label not in classes:
        raise ValueError(f"label {label!r} is not one of the {len(classes)} classes")
    rng = random.Random(f"{seed}:{example_id}")
    pool = list(classes)
    rng.shuffle(pool)
    chosen = pool[:n]
    if label not in chosen:
        chosen[-1] = label  # the notebook replaces the last drawn entry with the ground truth
    rng.shuffle(chosen)
    return chosen


def problem_text(question: str, options: Sequence[str]) -> str:
    """Question + newline + ` Please choose one from list [ a, b, c].` with the leading space stripped; without
    options (open-set, official `grpo_open*.py`) the question alone.

    >>> problem_text("What type of texture is in the photo?", ["banded", "zigzagged"])
    'What type of texture is in the photo?\\nPlease choose one from list [ banded, zigzagged].'
    >>> problem_text("What type of flower is in the photo?", [])
    'What type of flower is in the photo?'
    """
    if not options:
        return question
    choice = " Please choose one from list [ "
    for name in options:
        choice = choice + name + ", "
    choice = choice[:-2].strip() + "]."
    return question + "\n" + choice


def example_problem(question: str, options: Sequence[str], problem: str | None = None) -> str:
    """The problem text of one example: its verbatim `problem` when it carries one (the authors' files and our
    exports hold question + frozen option list as one string), else `problem_text(question, options)`. Training
    rows, SFT rows and evaluation prompts all take their problem from here.

    >>> example_problem("What?", ["a", "b"]) == problem_text("What?", ["a", "b"])
    True
    >>> example_problem("What?", [], problem="Which?\\nPlease choose one from list [ x, y].")
    'Which?\\nPlease choose one from list [ x, y].'
    """
    return problem if problem is not None else problem_text(question, options)


def fill(template: str, problem: str) -> str:
    """Put the problem into a method template (`{question}` placeholder)."""
    return template.replace("{question}", problem)


def prompt_text(template: str, question: str, options: Sequence[str], problem: str | None = None) -> str:
    """The user text: the method template around the problem (question + option list, or the verbatim problem).

    >>> prompt_text("{question} Please directly output the answer name.", "What?", ["a", "b"])
    'What?\\nPlease choose one from list [ a, b]. Please directly output the answer name.'
    """
    return fill(template, example_problem(question, options, problem))


@dataclass(frozen=True)
class PromptSpec:
    """How one prompt is asked: the template and the chat layout around it (all of it is evaluation identity)."""

    template: str
    system_prompt: str | None = None
    image_first: bool = True
    prefill: str = ""  # text that starts the assistant turn (the model continues after it)

    def text(self, question: str, options: Sequence[str], problem: str | None = None) -> str:
        return prompt_text(self.template, question, options, problem)


# eval.prompt values that are not a method name; any other value names a method whose eval prompt is asked
PROMPT_VARIANTS = ("eval", "train", "empty-think")


def eval_template(method: MethodConfig, split: str, setting: str | None = None) -> str:
    """The method's eval template: its `eval_templates` entry for the setting, else for the split, else `default`
    (the official eval scripts word it per setting: base-to-new base, open-set).

    >>> from types import SimpleNamespace as M
    >>> m = M(eval_templates={"default": "D", "base": "B", "open": "O"})
    >>> cases = (("test", "fewshot"), ("base", "base2new"), ("new", "base2new"), ("test", "open"))
    >>> [eval_template(m, split, setting) for split, setting in cases]
    ['D', 'B', 'D', 'O']
    """
    for key in (setting, split):
        if key and key in method.eval_templates:
            return method.eval_templates[key]
    return method.eval_templates["default"]


def eval_prompt(method: MethodConfig, split: str, variant: str = "eval", *, setting: str | None = None,
                other: MethodConfig | None = None, empty_think: str | None = None) -> PromptSpec:
    """The prompt an evaluation asks (`eval.prompt`), with the method's system turn and image position unless said:

    - `eval`: the method's eval template for this setting and split (the official eval scripts);
    - `train`: its training template;
    - `empty-think`: its eval prompt with `empty_think` prefilled at the start of the reply (v6 Table 17 "w/o
      Thinking": the model answers after a forced empty think block);
    - a method's name (cross-prompt, v6 Fig. 7(b)): that method's eval prompt, whose config is passed as `other`
      (template, system turn and image position: the prompt as that method is asked).

    >>> from types import SimpleNamespace as M
    >>> think = M(name="clsrl", train_template="T {question}", eval_templates={"default": "E {question}"},
    ...           system_prompt=None, image_first=True)
    >>> direct = M(name="nothink", train_template="t", eval_templates={"default": "e {question}"}, system_prompt=None,
    ...            image_first=True)
    >>> eval_prompt(think, "test", "empty-think", empty_think="<think></think>")
    PromptSpec(template='E {question}', system_prompt=None, image_first=True, prefill='<think></think>')
    >>> eval_prompt(think, "test", "nothink", other=direct).template
    'e {question}'
    """
    if variant == "train":
        return PromptSpec(method.train_template, method.system_prompt, method.image_first)
    if variant in ("eval", "empty-think"):
        if variant == "empty-think" and not empty_think:
            raise ValueError("the empty-think variant needs the text to prefill (eval.empty_think)")
        return PromptSpec(eval_template(method, split, setting), method.system_prompt, method.image_first,
                          prefill=empty_think if variant == "empty-think" else "")
    if other is not None and other.name == variant:
        return eval_prompt(other, split, "eval", setting=setting)
    raise ValueError(f"unknown prompt variant {variant!r}: use one of {PROMPT_VARIANTS} or a method name (with its "
                     "config as `other`)")


def chat_messages(text: str, *, system_prompt: str | None = None, image_first: bool = True) -> list[dict]:
    """Structured chat messages with one image placeholder where the method puts it (evaluation and SFT).

    No system turn unless given: Qwen's chat template then inserts its default system turn (as the official code).

    >>> chat_messages("Q?")
    [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': 'Q?'}]}]
    >>> chat_messages("Q?", system_prompt="S", image_first=False)[1]["content"][0]["type"]
    'text'
    """
    image, words = {"type": "image"}, {"type": "text", "text": text}
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    messages.append({"role": "user", "content": [image, words] if image_first else [words, image]})
    return messages


def grpo_messages(text: str, method: MethodConfig) -> list[dict]:
    """GRPO prompt messages. Image-first prompts keep plain string content: TRL inserts the image block before the
    text itself (trl_notes 1.2); text-first prompts carry an explicit placeholder after the text.

    >>> from types import SimpleNamespace as M
    >>> grpo_messages("Q?", M(system_prompt=None, image_first=True))
    [{'role': 'user', 'content': 'Q?'}]
    """
    messages: list[dict[str, Any]] = []
    if method.system_prompt:
        messages.append({"role": "system", "content": method.system_prompt})
    if method.image_first:
        messages.append({"role": "user", "content": text})
    else:
        messages.append({"role": "user", "content": [{"type": "text", "text": text}, {"type": "image"}]})
    return messages


def sft_messages(text: str, method: MethodConfig) -> list[dict]:
    """SFT prompt messages: the method's system turn and image position, an explicit image placeholder."""
    return chat_messages(text, system_prompt=method.system_prompt, image_first=method.image_first)


def render_chat(processor: Any, spec: PromptSpec, question: str, options: Sequence[str],
                problem: str | None = None) -> str:
    """The prompt string after the chat template (one image placeholder, expanded later by the processor or vLLM),
    ending with the assistant turn's opening and the spec's prefill."""
    messages = chat_messages(spec.text(question, options, problem), system_prompt=spec.system_prompt,
                             image_first=spec.image_first)
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + spec.prefill
