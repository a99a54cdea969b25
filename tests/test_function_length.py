"""No function or method over 100 lines outside tests/: a longer one is a sequence of steps that wants names.

Counted with ast from ``def`` to the last line of the body (docstring and comments included), so the number is
what a reader scrolls through.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 100
# Not the project's code: the tests, virtual environments and anything git would not track
SKIPPED = {"tests", ".venv", "venv", ".git", "build", "dist", "node_modules", "outputs", "runs", "multirun"}


def source_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py")
                  if not SKIPPED & set(p.relative_to(ROOT).parts) and not any(
                      part.startswith(".") for part in p.relative_to(ROOT).parts))


def long_functions(path: Path, limit: int = LIMIT) -> list[tuple[str, int, int]]:
    """(name, first line, lines) of each function or method in ``path`` longer than ``limit`` lines."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [(node.name, node.lineno, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > limit]


def test_the_counter_sees_a_long_method(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("class A:\n    def f(self):\n" + "        x = 1\n" * 101 + "\ndef g():\n    pass\n")
    assert long_functions(src) == [("f", 2, 102)]


def test_no_function_over_the_limit():
    files = source_files()
    assert any(p.parts[-2:] == ("autodata", "run.py") for p in files)
    wrong = [f"{path.relative_to(ROOT)}:{line} {name} is {n} lines" for path in files
             for name, line, n in long_functions(path)]
    assert not wrong, (f"functions over {LIMIT} lines; split each into named steps:\n" + "\n".join(wrong))
