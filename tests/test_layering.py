"""The stages sit level with each other: what generate, train and eval share lives in autodata/.

Scans import statements with ast (lazy imports inside functions included, since a lazy import is still a
dependency and a lazy circle is still a circle), so the test needs no stage's heavy dependencies.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Package -> the stage packages it must never import. autodata is the shared layer, so it imports no stage;
# train and eval share through autodata and never reach into each other.
FORBIDDEN = {"autodata": ("training", "eval"), "eval": ("training",), "training": ("eval",)}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file; ``from pkg import name`` counts as ``pkg.name`` too, since
    ``name`` may be a submodule (``from eval import plots``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def package_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_no_stage_imports_another_stage_or_the_shared_layer_a_stage():
    wrong = []
    for package, banned in FORBIDDEN.items():
        for path in package_files(package):
            for line, module in imported_modules(path):
                top = module.split(".")[0]
                if top in banned:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, ("move what both sides use into autodata/ (e.g. autodata/examples.py):\n"
                       + "\n".join(sorted(set(wrong))))


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (module -> modules it imports), or [] when there is none.

    >>> find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}})
    ['a', 'b', 'c', 'a']
    >>> find_cycle({"a": {"b"}, "b": set()})
    []
    """
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_find_cycle_examples():
    import doctest
    import sys

    result = doctest.testmod(sys.modules[__name__])
    assert result.failed == 0 and result.attempted >= 2


def test_no_import_cycle_among_eval_modules():
    modules = {module_name(p): p for p in package_files("eval")}
    graph = {name: {m for _, m in imported_modules(path) if m in modules and m != name}
             for name, path in modules.items()}
    # The package itself is imported by each of its modules; only module-to-module edges can make a circle.
    graph.pop("eval", None)
    assert find_cycle(graph) == [], "eval modules import each other in a circle; move the shared pieces to a module "\
                                    "both import (as eval/cells.py holds the report cells)"


def test_the_cycle_check_sees_lazy_imports(tmp_path):
    """The circle this guards against was made of imports inside functions."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    from eval.b import g\n")
    b.write_text("import json\n\ndef g():\n    from eval.a import f\n")
    graph = {"eval.a": {m for _, m in imported_modules(a)}, "eval.b": {m for _, m in imported_modules(b)}}
    assert find_cycle(graph) == ["eval.a", "eval.b", "eval.a"]
