"""Check that the GPU install resolves to a set the train stage runs on, without installing it.

    python scripts/check_gpu_deps.py                          # resolve '.[gpu]' with pip (about a minute), then check
    python scripts/check_gpu_deps.py --report gpu.json        # check a report of `pip install --dry-run --report`
    python scripts/check_gpu_deps.py --save-report gpu.json   # keep the resolved report for later runs
    python scripts/check_gpu_deps.py --json                   # the result as one JSON object

What it checks, on the set pip resolves for `pip install '.[gpu]'` on this platform:
  1. every keyword argument training/stage.py:grpo_kwargs passes to TRL's GRPOConfig, for every
     conf/train/*.yaml and conf/experiment/*.yaml with and without CUDA, is a field of that TRL's
     GRPOConfig or of that transformers' TrainingArguments: those it derives, those it copies from named
     settings (autodata/grpo.py SETTINGS) and the train.grpo entries a config passes through;
  2. the resolved vLLM lies in the range the resolved TRL declares as supported;
  3. the environment running this script (CI's CPU .venv) has the same transformers and TRL, so the
     tests exercise the versions the cluster runs.
The transformers and TRL wheels are downloaded (not installed) into .autodata_cache/gpu_deps/ and
read with `ast`; nothing of them is imported. Exit 0: all good; 1: a check failed (each line says
what to change); 2: the check could not run (no network, pip failed).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import functools
import importlib.metadata
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".autodata_cache" / "gpu_deps"
SHOWN = ("vllm", "torch", "transformers", "trl", "deepspeed", "peft", "accelerate")
# The environment running the checks must have these at the GPU set's versions: they define GRPOConfig.
SAME_AS_GPU = ("transformers", "trl")
PINNED_IN = "pyproject.toml [project.optional-dependencies] gpu"


def normalize(name: str) -> str:
    """PEP 503 name: `Foo_Bar.baz` -> `foo-bar-baz`."""
    return re.sub(r"[-_.]+", "-", name).lower()


class CheckError(RuntimeError):
    """The check could not run (exit 2)."""


# ---- reading dataclass fields from source ------------------------------------------------------------------------

@dataclass
class ClassFields:
    """The init fields of a dataclass, each with the `path:Class` that defines it last, and bases not found."""

    fields: dict[str, str] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)


def _is_dataclass(node: ast.ClassDef) -> bool:
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if ast.unparse(target).split(".")[-1] == "dataclass":
            return True
    return False


def _own_fields(node: ast.ClassDef) -> list[str]:
    names = []
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        annotation = ast.unparse(stmt.annotation)
        if annotation.split("[")[0].split(".")[-1] in ("ClassVar", "KW_ONLY"):
            continue
        value = stmt.value
        if isinstance(value, ast.Call) and ast.unparse(value.func).split(".")[-1] == "field" and any(
                k.arg == "init" and isinstance(k.value, ast.Constant) and k.value.value is False
                for k in value.keywords):
            continue
        names.append(stmt.target.id)
    return names


class SourceTree:
    """Python sources by path (`pkg/mod.py`), parsed on demand; classes are found by following imports."""

    def __init__(self, files: Mapping[str, str], hints: Iterable[str] = ()):
        self.files = files
        # Files to search for a class that imports do not lead to (packages that import lazily)
        self.hints = list(hints)
        self._trees: dict[str, ast.Module] = {}

    def tree(self, path: str) -> ast.Module:
        if path not in self._trees:
            self._trees[path] = ast.parse(self.files[path], filename=path)
        return self._trees[path]

    def module_path(self, dotted: str) -> Optional[str]:
        base = dotted.replace(".", "/")
        return next((p for p in (f"{base}.py", f"{base}/__init__.py") if p in self.files), None)

    def _absolute(self, path: str, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        package = path.split("/")[:-1]
        package = package[:len(package) - (node.level - 1)]
        return ".".join(package + ([node.module] if node.module else []))

    def find_class(self, path: str, name: str, seen: Optional[set] = None) -> Optional[tuple[str, ast.ClassDef]]:
        """The class `name` as seen from module `path`: defined there, imported into it, or in a hint file."""
        seen = set() if seen is None else seen
        if (path, name) in seen or path not in self.files:
            return None
        seen.add((path, name))
        tree = self.tree(path)
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                return path, node
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        target = self.module_path(self._absolute(path, node))
                        found = target and self.find_class(target, alias.name, seen)
                        if found:
                            return found
        for hint in self.hints:
            found = self.find_class(hint, name, seen)
            if found:
                return found
        return None

    def fields(self, path: str, name: str) -> ClassFields:
        """Init fields of dataclass `name` in `path`, inherited ones included (a subclass's definition wins)."""
        found = self.find_class(path, name)
        if found is None:
            return ClassFields(unresolved=[f"{name} (from {path})"])
        where, node = found
        out = ClassFields()
        for base in node.bases:
            base_name = ast.unparse(base).split(".")[-1].split("[")[0]
            if base_name in ("object", "Generic", "ABC", "Protocol"):
                continue
            inherited = self.fields(where, base_name)
            out.fields.update(inherited.fields)
            out.unresolved += inherited.unresolved
        if _is_dataclass(node):
            out.fields.update({f: f"{where}:{node.name}" for f in _own_fields(node)})
        return out


class WheelFiles(Mapping):
    """The `.py` files of one or more wheels, read lazily."""

    def __init__(self, wheels: Iterable[Path]):
        self.zips = [zipfile.ZipFile(w) for w in wheels]
        self.index = {n: z for z in self.zips for n in z.namelist() if n.endswith((".py", "METADATA"))}

    def __getitem__(self, path: str) -> str:
        return self.index[path].read(path).decode("utf-8")

    def __iter__(self):
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)


# ---- the vLLM range a TRL release supports -----------------------------------------------------------------------

_FLIP = {">=": "<", "<": ">=", "<=": ">", ">": "<=", "==": "!=", "!=": "=="}
_OPS = {ast.GtE: ">=", ast.Gt: ">", ast.LtE: "<=", ast.Lt: "<", ast.Eq: "==", ast.NotEq: "!="}
_MIRROR = {">=": "<=", "<=": ">=", ">": "<", "<": ">", "==": "==", "!=": "!="}


def _version_constant(node: ast.expr) -> Optional[str]:
    """`Version("0.22.0")`, `version.parse("0.10.2")` -> the string; anything else -> None."""
    if (isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in ("Version", "parse")
            and len(node.args) == 1 and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        return node.args[0].value
    return None


def _specs(node: ast.expr, holds: bool) -> Optional[list[str]]:
    """Specifiers for the versions where `node` is `holds`; [] when `node` does not compare versions (e.g. an
    availability flag, taken as true); None when the condition is not one range."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return _specs(node.operand, not holds)
    if isinstance(node, ast.BoolOp):
        parts = [p for p in (_specs(v, holds) for v in node.values) if p != []]
        if any(p is None for p in parts):
            return None
        conjunction = isinstance(node.op, ast.And) == holds
        if conjunction or len(parts) <= 1:
            return [s for p in parts for s in p]
        return None
    if isinstance(node, ast.Compare):
        operands = [node.left, *node.comparators]
        pairs = []
        for left, op, right in zip(operands, node.ops, operands[1:]):
            lc, rc = _version_constant(left), _version_constant(right)
            if type(op) not in _OPS or (lc is None) == (rc is None):
                continue
            sym = _OPS[type(op)]
            pairs.append(f"{sym}{rc}" if rc is not None else f"{_MIRROR[sym]}{lc}")
        if not pairs:
            return []
        if holds:
            return pairs
        if len(pairs) == 1:
            sym = re.match(r"[<>=!]+", pairs[0]).group(0)
            return [_FLIP[sym] + pairs[0][len(sym):]]
        return None
    return []


def _warns(body: list[ast.stmt]) -> bool:
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Raise):
                return True
            if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in ("warn", "warning"):
                return True
    return False


def vllm_range_from_source(source: str, path: str = "trl/import_utils.py") -> Optional[tuple[str, str]]:
    """The supported range TRL's `is_vllm_available` warns outside of, as (specifier, `path:line`).

    >>> src = '''
    ... def is_vllm_available():
    ...     if _vllm_available:
    ...         if not (Version("0.22.0") <= v <= Version("0.31.0")):
    ...             warnings.warn("unsupported")
    ... '''
    >>> vllm_range_from_source(src)
    ('<=0.31.0,>=0.22.0', 'trl/import_utils.py:4')
    """
    for func in ast.walk(ast.parse(source)):
        if not (isinstance(func, ast.FunctionDef) and "vllm" in func.name):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.If) and _warns(node.body):
                specs = _specs(node.test, holds=False)
                if specs:
                    return str(SpecifierSet(",".join(specs))), f"{path}:{node.lineno}"
    return None


def vllm_range_from_metadata(metadata: str) -> Optional[str]:
    """The vllm requirement of TRL's `vllm` extra (its METADATA file), e.g. `<=0.31.0,>=0.22.0`."""
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if normalize(req.name) == "vllm" and req.marker and req.marker.evaluate({"extra": "vllm"}):
                return str(req.specifier)
    return None


def trl_vllm_ranges(files: Mapping[str, str]) -> list[tuple[str, str]]:
    """Every declaration of supported vLLM versions found in a TRL wheel: (specifier, where)."""
    found = []
    for path in sorted(p for p in files if p.startswith("trl/") and p.endswith(".py")):
        if path == "trl/import_utils.py" or "def is_vllm_available" in files[path]:
            hit = vllm_range_from_source(files[path], path)
            if hit:
                found.append(hit)
    for path in (p for p in files if p.endswith(".dist-info/METADATA")):
        spec = vllm_range_from_metadata(files[path])
        if spec:
            found.append((spec, f"{path} (extra 'vllm')"))
    return found


def _importable(root: Path) -> None:
    """Let `python scripts/check_gpu_deps.py` import the project from a plain checkout."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


# ---- what the train stage passes --------------------------------------------------------------------------------

def train_overrides(conf: Path) -> dict[str, list[str]]:
    """One override list per train option and experiment file, as `stage=train` composes them."""
    data = "train.dataset=tests/fixtures/train_run"
    runs = {"(defaults)": ["stage=train", data]}
    for group in ("train", "experiment"):
        for path in sorted((conf / group).glob("*.yaml")):
            runs[f"{group}={path.stem}"] = ["stage=train", f"{group}={path.stem}", data]
    return runs


def passed_keys(root: Path = ROOT) -> dict[str, list[str]]:
    """Each GRPOConfig keyword the train stage passes -> the configs (with cuda on/off) that pass it."""
    return {key: list(runs) for key, runs in _passed_keys(Path(root).resolve()).items()}


@functools.lru_cache(maxsize=None)
def _passed_keys(root: Path) -> dict[str, list[str]]:
    """Composes every config once per process (about 4 s)."""
    _importable(root)
    from hydra import compose, initialize_config_dir

    from autodata.config import register_configs, to_typed
    from training.stage import TrainAborted, batch_plan, grpo_kwargs

    register_configs()
    keys: dict[str, list[str]] = {}
    with initialize_config_dir(config_dir=str(root / "conf"), version_base=None):
        for label, overrides in train_overrides(root / "conf").items():
            try:
                cfg = to_typed(compose(config_name="config", overrides=overrides))
            except Exception as err:  # a config that does not compose cannot be checked: say which
                raise CheckError(f"{' '.join(overrides)} does not compose: {err}") from err
            plan = None
            # Names do not depend on the process count: take the first count the batch splits over
            for processes in (1, 2, 4, 8, 16, 32, 64):
                try:
                    plan = batch_plan(cfg.train, processes)
                    break
                except TrainAborted:
                    continue
            if plan is None:
                raise CheckError(f"{label}: no process count up to 64 splits its batch; see batch_plan")
            for cuda in (False, True):
                for key in grpo_kwargs(cfg, Path("runs/check"), plan, cuda):
                    keys.setdefault(key, []).append(f"{label} cuda={cuda}")
    return keys


def key_sites(func: Callable, root: Path = ROOT) -> dict[str, str]:
    """`path:line (function)` of each keyword `func` writes into the dict it returns."""
    import inspect

    path = Path(inspect.getsourcefile(func)).resolve()
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    tree = ast.parse(path.read_text())
    sites = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == func.__name__:
            for inner in ast.walk(node):
                if isinstance(inner, ast.keyword) and inner.arg:
                    sites.setdefault(inner.arg, f"{shown}:{inner.lineno} ({func.__name__})")
    return sites


def table_sites(root: Path = ROOT, path: str = "autodata/grpo.py", table: str = "SETTINGS") -> dict[str, str]:
    """`path:line (SETTINGS: train.<setting>)` of each GRPOConfig field the table copies from a named setting."""
    tree = ast.parse((Path(root) / path).read_text())
    sites = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == table
                and isinstance(node.value, ast.Dict)):
            for key, value in zip(node.value.keys, node.value.values):
                if isinstance(key, ast.Constant) and isinstance(value, ast.Constant):
                    sites[key.value] = f"{path}:{key.lineno} ({table}: train.{value.value})"
    return sites


# ---- the checks -------------------------------------------------------------------------------------------------

def missing_names(keys: Mapping[str, list[str]], accepted: Mapping[str, str], sites: Mapping[str, str],
                  versions: Mapping[str, str]) -> list[str]:
    """One problem line per passed keyword GRPOConfig does not accept."""
    problems = []
    runs = {run for passing in keys.values() for run in passing}
    for key in sorted(set(keys) - set(accepted)):
        near = difflib.get_close_matches(key, list(accepted), n=3, cutoff=0.6)
        hint = f"pass a name it has ({', '.join(near)})" if near else "drop it"
        when = ("for every config, with and without CUDA" if len(keys[key]) == len(runs)
                else f"for {', '.join(keys[key][:3])}{' ...' if len(keys[key]) > 3 else ''}")
        problems.append(
            f"GRPOConfig of trl {versions.get('trl', '?')} with transformers {versions.get('transformers', '?')} "
            f"has no field `{key}`, which {sites.get(key, 'train.grpo (passed through by grpo_kwargs)')} passes {when}; "
            f"{hint}, or pin versions that have it in {PINNED_IN}")
    return problems


def vllm_problems(vllm: Optional[str], trl: Optional[str], ranges: list[tuple[str, str]]) -> list[str]:
    if vllm is None or not ranges:
        return []
    base = Version(Version(vllm).base_version)
    outside = [f"{_shown(spec)} at {where}" for spec, where in ranges
               if not SpecifierSet(spec).contains(base, prereleases=True)]
    if not outside:
        return []
    return [f"vllm {vllm} is outside the range trl {trl} supports ({'; '.join(outside)}); pin a vllm in that range, "
            f"or a trl that supports vllm {vllm}, in {PINNED_IN}"]


def environment_problems(versions: Mapping[str, str], installed: Mapping[str, Optional[str]]) -> list[str]:
    return [f"this environment has {name} {installed[name]} but the GPU install resolves to {versions[name]}: the "
            f"tests run another {name} than the cluster; make the core dependency in pyproject.toml the same pin "
            f"and rerun `bash scripts/setup.sh --dev`"
            for name in SAME_AS_GPU if name in versions and installed.get(name) not in (None, versions[name])]


# ---- resolving and fetching -------------------------------------------------------------------------------------

def resolve(root: Path, save: Optional[Path]) -> dict:
    """pip's report for `pip install '.[gpu]'` here, resolved from the index without installing anything."""
    with tempfile.TemporaryDirectory() as tmp:
        report = save or Path(tmp) / "gpu.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), ".[gpu]"]
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        if done.returncode:
            raise CheckError(f"pip could not resolve '.[gpu]' (needs the package index):\n  {' '.join(cmd)}\n"
                             + "\n".join(done.stderr.strip().splitlines()[-15:]))
        return json.loads(report.read_text())


def resolved_versions(report: Mapping) -> dict[str, str]:
    return {normalize(item["metadata"]["name"]): item["metadata"]["version"] for item in report["install"]}


def cached_wheel(name: str, version: str, cache: Path) -> Optional[Path]:
    hits = sorted(cache.glob(f"{normalize(name).replace('-', '_')}-{version}-*.whl"))
    return hits[0] if hits else None


def fetch_wheel(name: str, version: str, cache: Path) -> Path:
    """The wheel of `name==version` in `cache`, downloaded (not installed) the first time."""
    wheel = cached_wheel(name, version, cache)
    if wheel is None:
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "-d", str(cache), f"{name}=={version}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheel = cached_wheel(name, version, cache)
        if done.returncode or wheel is None:
            raise CheckError(f"could not download {name}=={version}: {' '.join(cmd)}\n{done.stderr.strip()[-2000:]}")
    return wheel


def grpo_config_path(files: Mapping[str, str]) -> str:
    paths = sorted(p for p in files if p.startswith("trl/") and p.endswith("grpo_config.py"))
    paths += sorted(p for p in files if p.startswith("trl/") and p.endswith(".py") and p not in paths)
    for path in paths:
        if re.search(r"^class GRPOConfig\b", files[path], re.M):
            return path
    raise CheckError("no `class GRPOConfig` in the TRL wheel; update grpo_config_path in scripts/check_gpu_deps.py")


# ---- main -------------------------------------------------------------------------------------------------------

def installed_versions(names: Iterable[str]) -> dict[str, Optional[str]]:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def check(report: Mapping, cache: Path, root: Path = ROOT) -> dict:
    _importable(root)
    from training.stage import grpo_kwargs

    versions = resolved_versions(report)
    for needed in ("transformers", "trl"):
        if needed not in versions:
            raise CheckError(f"the resolved set has no {needed}; is this a report of `pip install '.[gpu]'`?")
    files = WheelFiles([fetch_wheel(n, versions[n], cache) for n in ("transformers", "trl")])
    tree = SourceTree(files, hints=["transformers/training_args.py"])
    args = tree.fields("transformers/training_args.py", "TrainingArguments")
    grpo = tree.fields(grpo_config_path(files), "GRPOConfig")
    problems = [f"could not read the base class {u} of GRPOConfig/TrainingArguments from the wheels; update "
                "scripts/check_gpu_deps.py" for u in dict.fromkeys(args.unresolved + grpo.unresolved)]
    keys = passed_keys(root)
    if not problems:
        sites = {**key_sites(grpo_kwargs, root), **table_sites(root)}
        problems += missing_names(keys, grpo.fields, sites, versions)
    ranges = trl_vllm_ranges(files)
    warnings = [] if ranges or "vllm" not in versions else [
        f"found no supported vLLM range in trl {versions['trl']} (import_utils.py, METADATA); vllm not checked"]
    problems += vllm_problems(versions.get("vllm"), versions["trl"], ranges)
    installed = installed_versions(SHOWN)
    problems += environment_problems(versions, installed)
    return {
        "resolved": {n: versions.get(n) for n in SHOWN},
        "this_environment": installed,
        "vllm_supported_by_trl": [{"specifier": s, "where": w} for s, w in ranges],
        "training_arguments_fields": len(args.fields),
        "grpo_config_fields": len(grpo.fields),
        "passed_keys": len(keys),
        "configs": sorted({c.rsplit(" cuda=", 1)[0] for v in keys.values() for c in v}),
        "warnings": warnings,
        "problems": problems,
    }


def _shown(spec: str) -> str:
    """`<=0.31.0,>=0.22.0` -> `>=0.22.0,<=0.31.0`: lower bounds first."""
    order = {">": 0, ">=": 0, "==": 1, "===": 1, "~=": 1, "!=": 2, "<": 3, "<=": 3}
    return ",".join(str(s) for s in sorted(SpecifierSet(spec), key=lambda s: order[s.operator])) or "any"


def summary(result: Mapping, source: str) -> str:
    lines = [f"GPU install set ({source}):", f"  {'package':<14}{'.[gpu]':<14}this environment"]
    for name, version in result["resolved"].items():
        lines.append(f"  {name:<14}{version or '-':<14}{result['this_environment'].get(name) or '-'}")
    by_spec: dict[str, list[str]] = {}
    for r in result["vllm_supported_by_trl"]:
        by_spec.setdefault(r["specifier"], []).append(r["where"])
    for spec, wheres in by_spec.items():
        lines.append(f"trl {result['resolved']['trl']} supports vllm {_shown(spec)} ({'; '.join(wheres)})")
    lines.append(f"GRPOConfig: {result['grpo_config_fields']} fields ({result['training_arguments_fields']} from "
                 f"TrainingArguments); the train stage passes {result['passed_keys']} names over "
                 f"{len(result['configs'])} configs x cuda on/off")
    lines += [f"warning: {w}" for w in result["warnings"]]
    if result["problems"]:
        lines.append(f"FAILED: {len(result['problems'])} problem(s)")
        lines += [f"  - {p}" for p in result["problems"]]
    else:
        lines.append("OK: the GPU install has every name the train stage passes and a vLLM its TRL supports")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report", type=Path, help="check this pip --report JSON instead of resolving '.[gpu]'")
    parser.add_argument("--save-report", type=Path, help="write the resolved pip report here")
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"wheel cache (default {CACHE.relative_to(ROOT)})")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        if args.report:
            report, source = json.loads(args.report.read_text()), f"from {args.report}"
        else:
            report, source = resolve(ROOT, args.save_report), "resolved by pip for '.[gpu]'"
        result = check(report, args.cache)
    except (CheckError, OSError, ValueError, KeyError) as err:
        what = str(err) if isinstance(err, CheckError) else f"{type(err).__name__}: {err}"
        print(f"check_gpu_deps: cannot check: {what}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else summary(result, source))
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
