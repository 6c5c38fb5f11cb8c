"""The package's shape: no import circle, imports only go down the layers, the report stays free of torch.

The import graph is read with `ast` from every module of `clsrl_exp/` (module-level and function-level imports;
imports under `if TYPE_CHECKING:` are type hints only and are left out). A new module must be given a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "clsrl_exp"

# lower layers never import higher ones; within a layer the graph must still be acyclic
LAYERS = {
    0: ["errors", "fileio", "plugins", "grids", "lengths"],
    1: ["schema", "identity", "rewards", "prompts", "resolvers", "runtime"],
    2: ["config", "plan", "compose", "generation"],
    3: ["data", "data.*", "models", "cells"],
    4: ["evaluate", "generation.*", "train", "train.*"],
    5: ["run", "sweep", "preflight", "launchers", "__main__", "bench", "bench.*"],
}
# the report reads records only: it may import these package modules and nothing heavier
REPORT_ALLOWED = {"errors", "fileio", "grids", "schema"}
HEAVY = ("torch", "transformers", "trl", "vllm", "datasets", "accelerate")


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "__init__"


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split(".")[1:])
    return (PKG / rel).with_suffix(".py").exists() or (PKG / rel / "__init__.py").exists()


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(clsrl_exp modules imported, top-level third-party/stdlib names imported) by one file."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    ours, others = set(), set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1]
                names = [".".join([*base, node.module or ""]).strip(".")]
            else:
                mod = node.module or ""
                subs = [f"{mod}.{a.name}" for a in node.names] if mod.startswith("clsrl_exp") else []
                subs = [n for n in subs if _is_module(n)]
                names = subs or [mod]  # `from pkg import submodule` imports the submodule, not (only) pkg
        for name in names:
            if name == "clsrl_exp" or name.startswith("clsrl_exp."):
                target = name.removeprefix("clsrl_exp").lstrip(".") or "__init__"
                ours.add(target)
            else:
                others.add(name.split(".")[0])
    return ours, others


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    g = {}
    for mod, path in files.items():
        ours, _ = imports_of(path)
        # `from clsrl_exp.x import y` names x.y: keep it only when x.y is a module
        g[mod] = {t for t in ours if t in files and t not in (mod, "__init__")}  # the package itself is empty
    return g


def layer_of(mod: str) -> int:
    for layer, names in LAYERS.items():
        for n in names:
            if mod == n or (n.endswith(".*") and mod.startswith(n[:-1])):
                return layer
    raise AssertionError(f"module clsrl_exp.{mod} has no layer in tests/test_architecture.py LAYERS")


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_go_down_the_layers():
    g = graph()
    bad = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
           for a, deps in g.items() if not a.startswith("report") for b in deps
           if not b.startswith("report") and layer_of(b) > layer_of(a)]
    assert not bad, "\n".join(bad)


def test_identity_imports_no_training_code():
    g = graph()
    reach, todo = set(), ["identity"]
    while todo:
        for m in g.get(todo.pop(), ()):
            if m not in reach:
                reach.add(m)
                todo.append(m)
    assert not {m for m in reach if m.startswith(("train", "generation", "data", "models", "evaluate"))}, reach


def test_report_imports_only_records_and_no_torch():
    files = {module_name(p) for p in PKG.rglob("*.py")}
    for path in (PKG / "report").rglob("*.py"):
        ours, others = imports_of(path)
        ours = {m for m in ours if m in files and not m.startswith("report") and m != "__init__"}
        assert ours <= REPORT_ALLOWED, (path.name, ours - REPORT_ALLOWED)
        assert not others & set(HEAVY), (path.name, others & set(HEAVY))


@pytest.mark.parametrize("module", ["schema", "fileio", "plugins", "grids", "lengths", "rewards", "identity"])
def test_low_modules_use_the_standard_library_only(module):
    path = PKG / f"{module}.py"
    _, others = imports_of(path)
    import sys

    third_party = {m for m in others if m not in sys.stdlib_module_names and m != "__future__"}
    assert not third_party, (module, third_party)
