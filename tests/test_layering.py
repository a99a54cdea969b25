"""The stages sit level with each other, and the shared layer under them imports none.

The rule, with the stage packages read from the stage registry (``Stage.package`` in autodata/stages.py): a
stage's code is the package its entry names; everything else under autodata/ is the shared layer, which imports
no stage, and a stage imports another stage only through that package's ``__init__`` (its public API). No module
of autodata/, training/ or eval/ is part of an import circle.

Scans import statements with ast (lazy imports inside functions included, since a lazy import is still a
dependency and a lazy circle is still a circle), so the test needs no stage's heavy dependencies.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Optional

from autodata.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
# The project's top-level packages (the design card's autodata/, training/, eval/)
PACKAGES = ("autodata", "training", "eval")
STAGE_PACKAGES = sorted({stage.package for stage in STAGES.values()})
# What no check module may load: validation runs them before any stage starts, on machines without a GPU
HEAVY = ("torch", "trl", "transformers", "vllm", "datasets")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, project module) of every import in a file: ``from pkg import sub`` imports the submodule ``pkg.sub``
    when there is one, and ``pkg`` itself (its ``__init__``) for any other name; modules outside ``modules`` are
    left out."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{alias.name}" for alias in node.names} & set(modules)
            found |= {(node.lineno, sub) for sub in subs}
            if len(subs) < len(node.names):
                found.add((node.lineno, node.module))
    return sorted((line, m) for line, m in found if m in modules)


def stage_of(module: str) -> Optional[str]:
    """The stage package ``module`` belongs to (the longest that holds it), or None for the shared layer.

    >>> stage_of("autodata.generate.loop"), stage_of("autodata.generate"), stage_of("training.stage")
    ('autodata.generate', 'autodata.generate', 'training')
    >>> stage_of("autodata.plan"), stage_of("autodata.planning"), stage_of("autodata.validation")
    ('autodata.plan', None, None)
    """
    owners = [p for p in STAGE_PACKAGES if module == p or module.startswith(p + ".")]
    return max(owners, key=len) if owners else None


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {project module it imports: first line}."""
    modules = project_modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for line, target in imports_of(path, modules):
            if target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def where(module: str, line: int) -> str:
    path = project_modules()[module]
    return f"{path.relative_to(ROOT)}:{line}"


def test_stage_packages_come_from_the_registry():
    modules = project_modules()
    assert {"autodata.generate", "training", "eval", "autodata.meta", "autodata.plan"} <= set(STAGE_PACKAGES)
    missing = [p for p in STAGE_PACKAGES if p not in modules]
    assert not missing, f"Stage.package names no module or package here: {missing}"


def test_the_shared_layer_imports_no_stage():
    wrong = [f"{where(module, line)} imports {target} (stage package {stage_of(target)})"
             for module, edges in import_graph().items() if stage_of(module) is None
             for target, line in edges.items() if stage_of(target) is not None]
    assert not wrong, ("autodata/ outside the stage packages is the shared layer and imports no stage; move what "
                       "both need into the shared layer, or resolve the stage through autodata/stages.py:\n"
                       + "\n".join(sorted(wrong)))


def test_a_stage_imports_another_stage_only_through_its_package():
    wrong = []
    for module, edges in import_graph().items():
        own = stage_of(module)
        for target, line in edges.items():
            other = stage_of(target)
            if own is not None and other is not None and other != own and target != other:
                wrong.append(f"{where(module, line)} imports {target}; import it from {other} (its __init__)")
    assert not wrong, ("a stage reaches another stage only through that package's __init__, its public API; "
                       "export what is needed there:\n" + "\n".join(sorted(wrong)))


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


def test_module_doctests():
    import doctest

    result = doctest.testmod(sys.modules[__name__])
    assert result.failed == 0 and result.attempted >= 4


def test_no_import_cycle_among_project_modules():
    graph = import_graph()
    cycle = find_cycle({name: set(edges) for name, edges in graph.items()})
    shown = " -> ".join(f"{a} ({where(a, graph[a][b])})" for a, b in zip(cycle, cycle[1:]))
    assert cycle == [], (f"modules import each other in a circle: {shown} -> {cycle[-1] if cycle else ''}; move the "
                         "shared pieces to a module both import (as eval/cells.py holds the report cells)")


def test_the_cycle_check_sees_lazy_imports(tmp_path):
    """The circle this guards against was made of imports inside functions."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    from eval.b import g\n")
    b.write_text("import json\n\ndef g():\n    from eval.a import f\n")
    modules = {"eval.a": a, "eval.b": b}
    graph = {name: {m for _, m in imports_of(path, modules)} for name, path in modules.items()}
    assert find_cycle(graph) == ["eval.a", "eval.b", "eval.a"]


def test_from_a_package_import_a_name_is_an_import_of_its_init(tmp_path):
    """``from eval import plots`` imports the submodule; ``from eval import run`` the package's __init__."""
    user = tmp_path / "user.py"
    user.write_text("from eval import plots, run\nimport eval.stage\n")
    modules = {"eval": tmp_path / "e.py", "eval.plots": tmp_path / "p.py", "eval.stage": tmp_path / "s.py"}
    assert [m for _, m in imports_of(user, modules)] == ["eval", "eval.plots", "eval.stage"]


def defines(module: str, function: str) -> bool:
    """Whether ``module``'s file defines ``function`` at top level (read with ast: no heavy import)."""
    modules = project_modules()
    if module not in modules:
        return False
    tree = ast.parse(modules[module].read_text(encoding="utf-8"))
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == function for n in tree.body)


def test_each_stage_entry_names_code_in_its_package():
    wrong = []
    for name, stage in STAGES.items():
        for field in ("target", "checks"):
            module, _, function = getattr(stage, field).partition(":")
            if not defines(module, function):
                wrong.append(f"{name}.{field}={getattr(stage, field)!r} names no function {function} in {module}")
            elif stage_of(module) != stage.package:
                wrong.append(f"{name}.{field}={getattr(stage, field)!r} lies outside the stage's package "
                             f"{stage.package}")
    assert not wrong, "\n".join(wrong)


def test_checks_resolve_and_stay_light():
    """validate() imports the stage's checks before anything runs: they load none of the stage's heavy modules."""
    code = ("import sys\nfrom autodata.stages import STAGES, resolve_checks\n"
            "for name in STAGES:\n    assert callable(resolve_checks(name)), name\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"a stage's checks import {out.stdout.strip()} at module level"
