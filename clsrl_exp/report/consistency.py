"""Rule-based think/answer consistency: does the class a reply's thinking concludes match its answer?

The paper (App. E.1) asked GPT-4o; this is a reproducible stand-in with a stated rule (the extractor uses the
standard library only; `consistency_table` reads the records' prediction logs into one pandas table):

1. The reply is the prefilled start of an empty-think prompt (if any) + the model's output. Its think text is every
   `<think>...</think>` block (an unclosed `<think>` runs to the end), joined. A reply without `<think>` is not
   analysed.
2. Candidates are the item's option list (closed set) or the evaluation's classes (open set). A class is named
   where its words appear as whole words, ignoring case, with spaces, `_` and `-` alike, the last word optionally
   plural (+s / +es); at each place the longest name wins ("sea lion" never counts as "lion"); `aliases` may add
   other names for a class (synonyms; the report passes none, so a synonym outside the options names nothing).
3. A name is negated when, within its sentence, a negation cue precedes it with at most four filler words between
   ("not a cat", "isn't really a cat", "no cat", "rather than a cat", "unlike cats", "instead of the cat",
   "ruled out cat").
4. The think text concludes the class of its LAST non-negated name; none when it names no class, or only negated
   ones.
5. The answer's class: the same rule on the answer (the first `<answer>` block, else the reply without its think
   blocks).
6. `agree`: the think and the answer conclude the same class; `disagree`: the think concludes a class and the
   answer another one or none; `no_class`: the think concludes none.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from clsrl_exp.report.records import DEFAULT_PROMPT, Record
from clsrl_exp.report.tables import dataset_sort_key, method_sort_key
from clsrl_exp.schema import PREDICTIONS_FILE

_THINK = re.compile(r"<think>(.*?)(?:</think>|\Z)", re.DOTALL)
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)  # as clsrl_exp.rewards.extract_answer
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_SENTENCE_END = re.compile(r"[.;:!?\n]")

NEGATION_CUES = frozenset({"not", "no", "never", "neither", "nor", "cannot", "unlike", "than", "except",
                           "excluding", "without"})  # + any word ending in n't ("isn't", "doesn't")
NEGATION_PAIRS = frozenset({("instead", "of"), ("rule", "out"), ("rules", "out"), ("ruled", "out"),
                            ("ruling", "out")})
FILLERS = frozenset({"a", "an", "the", "this", "that", "it", "its", "it's", "is", "was", "be", "being", "been",
                     "just", "really", "quite", "exactly", "actually", "simply", "necessarily", "definitely",
                     "clearly", "likely", "probably", "certainly", "look", "looks", "like", "seem", "seems",
                     "appear", "appears", "to", "any", "some", "type", "kind", "sort", "of", "one"})
MAX_FILLERS = 4


def _words(text: str) -> list[tuple[str, int, int]]:
    """(lower-cased word, start, end) of every word; `_` and `-` separate words, apostrophes stay inside them.

    >>> [w for w, _, _ in _words("It isn't a Golden_Retriever-mix.")]
    ['it', "isn't", 'a', 'golden', 'retriever', 'mix']
    """
    text = text.replace("\u2019", "'")
    return [(m.group().lower(), m.start(), m.end()) for m in _WORD.finditer(text)]


class ClassFinder:
    """Finds the classes (of a fixed candidate list, plus aliases) a text names, in order, each with its negation.

    >>> f = ClassFinder(["cat", "dog", "sea lion", "lion"])
    >>> f.mentions("Not a cat. Maybe a sea lion, or two dogs")
    [('cat', True), ('sea lion', False), ('dog', False)]
    """

    def __init__(self, classes: Iterable[str], aliases: Mapping[str, Sequence[str]] | None = None):
        self.names: dict[tuple[str, ...], str] = {}
        for cls in classes:
            self._add(cls, cls)
        for cls, others in (aliases or {}).items():
            for other in others:
                self._add(other, cls)
        self.longest = max((len(k) for k in self.names), default=0)

    def _add(self, name: str, cls: str) -> None:
        key = tuple(w for w, _, _ in _words(name))
        if key:
            self.names.setdefault(key, cls)

    def _lookup(self, words: list[str]) -> str | None:
        key = tuple(words)
        if key in self.names:
            return self.names[key]
        last = words[-1]
        for suffix in ("es", "s"):  # the last word in the plural
            if last.endswith(suffix) and len(last) > len(suffix):
                hit = self.names.get((*words[:-1], last[:-len(suffix)]))
                if hit is not None:
                    return hit
        return None

    def mentions(self, text: str, allowed: Iterable[str] | None = None) -> list[tuple[str, bool]]:
        """(class, negated) for every class named in `text`, in order; `allowed` keeps only those classes."""
        words = _words(text)
        keep = None if allowed is None else set(allowed)
        out, i = [], 0
        while i < len(words):
            for n in range(min(self.longest, len(words) - i), 0, -1):
                cls = self._lookup([w for w, _, _ in words[i:i + n]])
                if cls is not None:
                    if keep is None or cls in keep:
                        out.append((cls, _negated(text, words, i)))
                    i += n
                    break
            else:
                i += 1
        return out

    def concluded(self, text: str, allowed: Iterable[str] | None = None) -> str | None:
        """The class of the last non-negated name in `text`, or None."""
        named = [cls for cls, negated in self.mentions(text, allowed) if not negated]
        return named[-1] if named else None


def _negated(text: str, words: list[tuple[str, int, int]], i: int) -> bool:
    """Whether a negation cue precedes word i within its sentence, with at most MAX_FILLERS fillers between."""
    j, skipped = i - 1, 0
    while j >= 0:
        word, _, end = words[j]
        if _SENTENCE_END.search(text, end, words[j + 1][1]):
            return False
        if word in NEGATION_CUES or word.endswith("n't"):
            return True
        if j >= 1 and (words[j - 1][0], word) in NEGATION_PAIRS:
            return True
        if word not in FILLERS or skipped == MAX_FILLERS:
            return False
        j, skipped = j - 1, skipped + 1
    return False


def think_text(reply: str) -> str | None:
    """The reply's think blocks joined by newlines, or None when it has none.

    >>> think_text("<think>a cat</think><answer>cat</answer>"), think_text("<answer>cat</answer>")
    ('a cat', None)
    >>> think_text("<think></think><think>x</think>y"), think_text("<think>cut off")
    ('\\nx', 'cut off')
    """
    if "<think>" not in reply:
        return None
    return "\n".join(_THINK.findall(reply))


def answer_text(reply: str) -> str:
    """The first answer block (as the evaluation reads it), else the reply without its think blocks.

    >>> answer_text("<think>dog?</think><answer> cat </answer>"), answer_text("<think>dog?</think> cat")
    ('cat', 'cat')
    """
    m = _ANSWER.search(reply)
    return m.group(1).strip() if m else _THINK.sub("", reply).strip()


def classify(reply: str, finder: ClassFinder, allowed: Iterable[str] | None = None) -> str | None:
    """`agree`, `disagree` or `no_class` for one reply (None when it has no think block).

    Closed-set replies with the options ["cat", "dog", "sea lion", "lion", "tabby cat"]:

    >>> f = ClassFinder(["cat", "dog", "sea lion", "lion", "tabby cat"])
    >>> classify("<think>Pointed ears, whiskers: a cat.</think><answer>cat</answer>", f)
    'agree'
    >>> classify("<think>It has whiskers, so cat.</think><answer>dog</answer>", f)
    'disagree'
    >>> classify("<think>This is not a cat.</think><answer>cat</answer>", f)  # a negation names no class
    'no_class'
    >>> classify("<think>Not a cat, it is a dog.</think><answer>dog</answer>", f)  # several names: last one
    'agree'
    >>> classify("<think>It could be a cat or a dog; the snout says dog.</think><answer>cat</answer>", f)
    'disagree'
    >>> classify("<think>A dog? No. It is definitely a cat.</think><answer>cat</answer>", f)  # sentence ends
    'agree'
    >>> classify("<think>More like a dog than a cat.</think><answer>dog</answer>", f)  # "than" negates
    'agree'
    >>> classify("<think>A sea lion on a rock.</think><answer>sea lion</answer>", f)  # "lion" is inside
    'agree'
    >>> classify("<think>Two Tabby-Cats.</think><answer>tabby cat</answer>", f)  # case, hyphen, plural
    'agree'
    >>> classify("<think>A kitty.</think><answer>cat</answer>", f)  # a synonym is not an option
    'no_class'
    >>> classify("<think>A kitty.</think><answer>cat</answer>", ClassFinder(["cat", "dog"], {"cat": ["kitty"]}))
    'agree'
    >>> classify("<think>Looks like a dog.</think><answer>a lion</answer>", f, allowed=["cat", "dog"])
    'disagree'
    >>> classify("<answer>cat</answer>", f) is None  # no think block: not analysed
    True
    """
    think = think_text(reply)
    if think is None:
        return None
    thought = finder.concluded(think, allowed)
    if thought is None:
        return "no_class"
    return "agree" if finder.concluded(answer_text(reply), allowed) == thought else "disagree"


# ------------------------------------------------------------------------------------------------ the table
GROUPS = ("agree", "disagree", "no_class")
COLUMNS = ["model", "setting", "shots", "method", "dataset", "split", "n_seeds", "n_think", "agree", "disagree",
           "no_class", "acc_agree", "acc_disagree", "acc_no_class", "acc_think", "n_agree", "n_disagree",
           "n_no_class", "n_unanalysed"]


def _prediction_rows(run_dir: Path, dataset: str, cache: dict) -> list[dict]:
    """The lines of a run directory's prediction log on `dataset` that hold a think block. Only the directory read
    last is kept (the records of one directory, one per prompt variant, come one after the other)."""
    key = (run_dir, dataset)
    if key not in cache:
        cache.clear()
        rows = []
        path = run_dir / PREDICTIONS_FILE
        if path.exists():
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    if "<think>" not in line:  # cheap filter before parsing: most lines of a no-think run have none
                        continue
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue  # a torn last line
                    if row.get("dataset") == dataset:
                        rows.append(row)
        cache[key] = rows
    return cache[key]


def _rows_of(ev: dict, rows: list[dict]) -> list[dict]:
    if ev.get("eval_hash"):
        return [r for r in rows if r.get("eval_hash") == ev["eval_hash"]]
    variant = ev.get("prompt_variant", DEFAULT_PROMPT)  # schema 1 lines: no eval hash
    return [r for r in rows if (r.get("dataset"), r.get("split"), r.get("prompt_variant", DEFAULT_PROMPT)) ==
            (ev["dataset"], ev["split"], variant)]


def _pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else float("nan")


def consistency_table(records: list[Record]) -> pd.DataFrame:
    """Per (model, setting, shots, method label, dataset, split) over the own-dataset evaluations of every seed:
    of the predictions whose reply has a think block (`n_think`), the % where think and answer agree, disagree or
    the think names no class, and the answer accuracy (lenient, %) in each group. Lines without the options they
    were shown (logs written before options were recorded) are counted in `n_unanalysed`."""
    counts: dict[tuple, dict] = defaultdict(lambda: {"seeds": set(), **{g: [0, 0] for g in GROUPS}, "skip": 0})
    cache: dict[tuple, list[dict]] = {}
    finders: dict[frozenset, ClassFinder] = {}
    for rec in records:
        r = rec.run
        rows = _prediction_rows(Path(rec.path).parent, r["dataset"], cache)
        for ev in rec.evals:
            if ev["dataset"] != r["dataset"]:
                continue
            mine = _rows_of(ev, rows)
            if not mine:
                continue
            key = (r["model"], r["setting"], r["shots"], r["method"], ev["dataset"], ev["split"])
            c = counts[key]
            c["seeds"].add(r["seed"])
            classes = ev.get("classes") or []
            pool = frozenset(classes).union(*(row.get("options") or () for row in mine))
            finder = finders.get(pool) or finders.setdefault(pool, ClassFinder(sorted(pool)))
            for row in mine:
                allowed = row.get("options") or classes
                if not allowed:
                    c["skip"] += 1
                    continue
                group = classify(row.get("prefill", "") + str(row.get("output", "")), finder, allowed)
                if group is not None:
                    c[group][0] += 1
                    c[group][1] += bool(row.get("lenient"))
    out = []
    for (model, setting, shots, method, dataset, split), c in counts.items():
        n = sum(c[g][0] for g in GROUPS)
        if not n and not c["skip"]:
            continue
        row = {"model": model, "setting": setting, "shots": shots, "method": method, "dataset": dataset,
               "split": split, "n_seeds": len(c["seeds"]), "n_think": n, "n_unanalysed": c["skip"],
               "acc_think": _pct(sum(c[g][1] for g in GROUPS), n)}
        for g in GROUPS:
            row.update({g: _pct(c[g][0], n), f"acc_{g}": _pct(c[g][1], c[g][0]), f"n_{g}": c[g][0]})
        out.append(row)
    out.sort(key=lambda x: (x["model"], x["setting"], str(x["shots"]), method_sort_key(x["method"]),
                            dataset_sort_key(x["dataset"]), x["split"]))
    df = pd.DataFrame(out, columns=COLUMNS)
    for col in ("shots", "n_seeds", "n_think", "n_agree", "n_disagree", "n_no_class", "n_unanalysed"):
        df[col] = df[col].astype("Int64")
    return df
