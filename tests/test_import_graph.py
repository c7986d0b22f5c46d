"""The library's import graph is a DAG with the layering the README states.

    cli -> recipes (demo, reproduce) -> training / tasks / generation / serve / inspect / interop
        -> model, data, tokenizer -> errors, atomic, options, textio;   model imports only torch (and the stdlib).

Every import counts, module-level or inside a function (a function-level import that dodges a cycle
is still a cycle); only imports under `if TYPE_CHECKING:` are left out, since they never run.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

BASE = {"errors", "atomic", "jsonio", "options"}
# package -> the packages it may import (besides itself). Together they must form a DAG.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "atomic": set(),
    "options": {"errors"},
    "jsonio": {"errors"},
    "textio": {"errors"},
    "modeldir": {"atomic"},
    "model": set(),
    "tokenizer": BASE | {"textio"},
    "data": BASE | {"textio", "tokenizer"},
    "builtin_data": BASE,
    "interop": BASE | {"model", "tokenizer"},
    "training": BASE | {"modeldir", "model", "data", "tokenizer", "interop"},
    "generation": BASE | {"model", "tokenizer", "interop"},
    "inspect": BASE | {"model", "tokenizer", "interop", "generation"},
    "tasks": BASE | {"textio", "modeldir", "model", "data", "tokenizer", "interop", "training"},
    "serve": BASE | {"model", "tokenizer", "interop", "generation", "tasks"},
    "baseline": BASE | {"tasks"},
    "demo": BASE | {"baseline", "modeldir", "model", "data", "tokenizer", "interop", "training", "tasks", "generation",
                    "builtin_data"},
    "reproduce": BASE | {"baseline", "modeldir", "model", "data", "tokenizer", "interop", "training", "tasks", "generation",
                         "builtin_data", "demo", "inspect"},
    "cli": BASE | {"baseline", "modeldir", "model", "data", "tokenizer", "interop", "training", "tasks", "generation",
                   "serve", "inspect", "builtin_data", "demo", "reproduce"},
    "gptkit": {"model"},  # the package's __init__: the public model classes
    "__main__": {"cli"},
}
LAYER_NAMES = set(ALLOWED)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def import_graph(root: Path, top: str = "gptkit") -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """module -> the gptkit modules it imports; module -> the third-party top-level names it imports."""
    files = {module_name(p, root): p for p in (root / top).rglob("*.py")}
    edges: dict[str, set[str]] = defaultdict(set)
    external: dict[str, set[str]] = defaultdict(set)
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom) or _type_checking_only(node, parents):
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                pkg = ".".join(base + ([node.module] if node.module else []))
                # `from . import x` names a submodule when there is one
                targets = [f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in files else pkg for a in node.names]
            else:
                pkg = node.module or ""
                targets = [f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in files else pkg for a in node.names]
            for t in targets:
                if t == top or t.startswith(top + "."):
                    edges[mod].add(t)
                else:
                    external[mod].add(t.split(".")[0])
    return edges, external


def package_of(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (as a path that ends where it starts), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color: dict[str, int] = defaultdict(int)
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        color[n] = GREY
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if color[m] == GREY:
                return stack[stack.index(m):] + [m]
            if color[m] == WHITE and (found := visit(m)):
                return found
        stack.pop()
        color[n] = BLACK
        return None

    for n in sorted(edges):
        if color[n] == WHITE and (found := visit(n)):
            return found
    return None


def layering_breaks(edges: dict[str, set[str]]) -> list[str]:
    breaks = []
    for a, targets in sorted(edges.items()):
        pa = package_of(a)
        for b in sorted(targets):
            pb = package_of(b)
            if pa != pb and pb not in ALLOWED.get(pa, set()):
                breaks.append(f"{a} -> {b} ({pa} may import only {sorted(ALLOWED.get(pa, set()))})")
    return breaks


@pytest.fixture(scope="module")
def graph():
    return import_graph(SRC)


def test_every_package_has_a_place_in_the_layering(graph):
    edges, _ = graph
    packages = {package_of(m) for m in edges} | {package_of(m) for t in edges.values() for m in t}
    assert packages <= LAYER_NAMES, f"packages without a layer: {sorted(packages - LAYER_NAMES)}"
    assert find_cycle({k: set(v) for k, v in ALLOWED.items()}) is None  # the stated layering is itself a DAG


def test_no_import_cycle_between_modules(graph):
    edges, _ = graph
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_follow_the_layering(graph):
    edges, _ = graph
    assert layering_breaks(edges) == []


def test_model_imports_only_torch(graph):
    edges, external = graph
    for mod in edges.keys() | external.keys():
        if package_of(mod) != "model":
            continue
        outside = {t for t in edges.get(mod, ()) if package_of(t) != "model"}
        third_party = {t for t in external.get(mod, ()) if t not in sys.stdlib_module_names and t != "torch"}
        assert not outside and not third_party, f"{mod} imports {sorted(outside | third_party)}"


def test_the_checker_sees_function_level_cycles_and_breaks(tmp_path):
    """The checks above can fail: a cycle hidden in a function, and model/ importing interop/."""
    pkg = tmp_path / "gptkit"
    for sub in ("model", "interop"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "model" / "gpt.py").write_text("def load():\n    from ..interop.hf import read\n    return read\n")
    (pkg / "interop" / "hf.py").write_text("from ..model.gpt import load\n")
    (pkg / "model" / "typed.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                            "    from ..interop.hf import read\n")
    edges, _ = import_graph(tmp_path)
    assert find_cycle(edges) == ["gptkit.interop.hf", "gptkit.model.gpt", "gptkit.interop.hf"]
    assert [b.split(" (")[0] for b in layering_breaks(edges)] == ["gptkit.model.gpt -> gptkit.interop.hf"]
