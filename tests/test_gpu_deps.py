"""scripts/check_gpu_deps.py: the dataclass field reader, the missing-name and vLLM-range checks, and the pins of
the `gpu` extra. Offline except the one `slow` test, which downloads the pinned wheels (skipped without network)."""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_gpu_deps", ROOT / "scripts" / "check_gpu_deps.py")
deps = importlib.util.module_from_spec(_spec)
sys.modules["check_gpu_deps"] = deps
_spec.loader.exec_module(deps)

PINNED = ("vllm", "torch", "transformers", "trl", "deepspeed")

# A TrainingArguments-like package that re-exports lazily (the import sits under TYPE_CHECKING), and a TRL-like
# package whose config inherits it through a base class that overrides one field.
ARGS = '''
from dataclasses import dataclass, field
from typing import ClassVar

@dataclass
class TrainingArguments:
    output_dir: str = None
    seed: int = 42
    gradient_checkpointing: bool = False
    _n_gpu: int = field(init=False, default=-1)
    framework: ClassVar[str] = "pt"

    def helper(self) -> int:
        local: int = 3
        return local
'''
INIT = '''
from typing import TYPE_CHECKING
_import_structure = {"args": ["TrainingArguments"]}
if TYPE_CHECKING:
    from .args import TrainingArguments as TrainingArguments
'''
BASE = '''
from dataclasses import dataclass, field
from tf import TrainingArguments

@dataclass
class _BaseConfig(TrainingArguments):
    gradient_checkpointing: bool = field(default=True)
    logging_steps: float = 10
'''
GRPO = '''
from dataclasses import dataclass
from ..base import _BaseConfig

@dataclass
class GRPOConfig(_BaseConfig):
    beta: float = 0.0
    use_vllm: bool = False
'''
FILES = {"tf/__init__.py": INIT, "tf/args.py": ARGS, "rl/__init__.py": "", "rl/base.py": BASE,
         "rl/trainer/__init__.py": "", "rl/trainer/grpo_config.py": GRPO}
VLLM_CHECK = '''
def is_vllm_available(min_version=None):
    _vllm_available, _vllm_version = _is_package_available("vllm", return_version=True)
    if _vllm_available:
        base = Version(Version(_vllm_version).base_version)
        if not (Version("0.22.0") <= base <= Version("0.31.0")):
            warnings.warn("TRL currently supports vLLM versions from 0.22.0 to 0.31.0.")
        if min_version is not None and Version(_vllm_version) < Version(min_version):
            return False
    return _vllm_available
'''


def test_module_doctests():
    import doctest

    assert doctest.testmod(deps).failed == 0


def test_fields_are_read_with_inheritance_through_imports():
    tree = deps.SourceTree(FILES)
    got = tree.fields("rl/trainer/grpo_config.py", "GRPOConfig")
    assert got.unresolved == []
    assert set(got.fields) == {"output_dir", "seed", "gradient_checkpointing", "logging_steps", "beta", "use_vllm"}
    # the subclass's redefinition wins; init=False fields, ClassVars and locals of methods are not init fields
    assert got.fields["gradient_checkpointing"] == "rl/base.py:_BaseConfig"
    assert got.fields["seed"] == "tf/args.py:TrainingArguments"


def test_a_class_imports_do_not_reach_is_found_through_a_hint_file():
    lazy = dict(FILES, **{"tf/__init__.py": '_import_structure = {"args": ["TrainingArguments"]}'})
    assert deps.SourceTree(lazy).fields("rl/base.py", "_BaseConfig").unresolved == ["TrainingArguments (from rl/base.py)"]
    found = deps.SourceTree(lazy, hints=["tf/args.py"]).fields("rl/base.py", "_BaseConfig")
    assert found.unresolved == [] and "seed" in found.fields


def test_a_passed_name_the_config_lacks_is_a_problem_naming_it():
    accepted = deps.SourceTree(FILES).fields("rl/trainer/grpo_config.py", "GRPOConfig").fields
    keys = {"seed": ["train=smoke cuda=False"], "activation_checkpointing": ["train=paper_cs cuda=True"]}
    sites = {"activation_checkpointing": "training/stage.py:183 (grpo_kwargs)"}
    [problem] = deps.missing_names(keys, accepted, sites, {"trl": "1.16.0", "transformers": "5.20.2"})
    assert "`activation_checkpointing`" in problem and "training/stage.py:183 (grpo_kwargs)" in problem
    assert "trl 1.16.0" in problem and "transformers 5.20.2" in problem
    assert "gradient_checkpointing" in problem  # the near name is offered as the fix
    assert deps.missing_names({"seed": ["x"]}, accepted, {}, {}) == []


@pytest.mark.parametrize("source, expected", [
    (VLLM_CHECK, "<=0.31.0,>=0.22.0"),
    # TRL 0.2x: one exact version
    ('def is_vllm_available():\n    if _vllm_available and version.parse(_vllm_version) != version.parse("0.10.2"):\n'
     '        warnings.warn("TRL currently only supports vLLM version `0.10.2`.")\n    return _vllm_available\n',
     "==0.10.2"),
    ('def is_vllm_available():\n    if v < Version("0.22.0") or v > Version("0.31.0"):\n        raise ImportError()\n',
     "<=0.31.0,>=0.22.0"),
])
def test_the_supported_vllm_range_is_read_from_trl_source(source, expected):
    spec, where = deps.vllm_range_from_source(source, "trl/import_utils.py")
    assert spec == expected and where.startswith("trl/import_utils.py:")


def test_no_vllm_range_in_source_is_none_and_metadata_is_read():
    assert deps.vllm_range_from_source("def is_vllm_available():\n    return _vllm_available\n") is None
    metadata = ('Name: trl\nRequires-Dist: transformers>=4.56.2\nRequires-Dist: vllm<=0.31.0,>=0.22.0; extra == "vllm"'
                '\nRequires-Dist: aiohttp>=3.13.3; extra == "vllm"\n')
    assert deps.vllm_range_from_metadata(metadata) == "<=0.31.0,>=0.22.0"
    assert deps.vllm_range_from_metadata("Name: trl\n") is None


def test_a_vllm_outside_trls_range_is_a_problem():
    ranges = [("<=0.31.0,>=0.22.0", "trl/import_utils.py:107")]
    [problem] = deps.vllm_problems("0.33.0", "1.16.0", ranges)
    assert "vllm 0.33.0" in problem and "trl 1.16.0" in problem and ">=0.22.0,<=0.31.0" in problem
    assert deps.vllm_problems("0.31.0", "1.16.0", ranges) == []
    assert deps.vllm_problems("0.31.0+cu129", "1.16.0", ranges) == []  # TRL compares the base version
    assert deps.vllm_problems("0.33.0", "1.16.0", []) == []  # no range found: a warning, not a failure


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pins(requirements: list[str]) -> dict[str, str]:
    out = {}
    for line in requirements:
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) == 1 and specs[0].operator == "==":
            out[deps.normalize(req.name)] = specs[0].version
    return out


def test_the_gpu_extra_pins_exact_versions_and_the_core_agrees():
    project = _pyproject()["project"]
    gpu = _pins(project["optional-dependencies"]["gpu"])
    assert [p for p in PINNED if p not in gpu] == [], f"the gpu extra must pin {PINNED} with ==; has {gpu}"
    core = _pins(project["dependencies"])
    # what CI tests on CPU (the core install) is what the GPU install runs
    assert {p: core.get(p) for p in deps.SAME_AS_GPU} == {p: gpu[p] for p in deps.SAME_AS_GPU}


def _wheel(path: Path, files: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)


def test_the_whole_check_on_a_report_and_local_wheels(tmp_path, monkeypatch, capsys):
    """End to end without network: a pip report and wheels already in the cache; one passed name is missing."""
    passed = deps.passed_keys()
    assert {"output_dir", "gradient_checkpointing", "num_generations", "use_vllm"} <= set(passed)
    fields = "\n".join(f"    {k}: object = None" for k in sorted(passed) if k != "num_generations")
    _wheel(tmp_path / "transformers-5.17.0-py3-none-any.whl", {
        "transformers/__init__.py": "from .training_args import TrainingArguments\n",
        "transformers/training_args.py": f"from dataclasses import dataclass\n\n@dataclass\nclass TrainingArguments:\n"
                                         f"{fields}\n"})
    _wheel(tmp_path / "trl-1.16.0-py3-none-any.whl", {
        "trl/__init__.py": "", "trl/import_utils.py": VLLM_CHECK,
        "trl/trainer/grpo_config.py": "from dataclasses import dataclass\nfrom transformers import TrainingArguments"
                                      "\n\n@dataclass\nclass GRPOConfig(TrainingArguments):\n    beta: float = 0.0\n",
        "trl-1.16.0.dist-info/METADATA": 'Name: trl\nRequires-Dist: vllm<=0.31.0,>=0.22.0; extra == "vllm"\n'})
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"install": [{"metadata": {"name": n, "version": v}} for n, v in [
        ("vllm", "0.33.0"), ("torch", "2.14.0"), ("transformers", "5.17.0"), ("trl", "1.16.0")]]}))
    monkeypatch.setattr(deps, "installed_versions", lambda names: {n: None for n in names})

    assert deps.main(["--report", str(report), "--cache", str(tmp_path), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert len(result["problems"]) == 2
    # A field copied from a named setting is traced to its row of the table (autodata/grpo.py SETTINGS)
    assert "`num_generations`" in result["problems"][0] and "autodata/grpo.py:" in result["problems"][0]
    assert "train.group_size" in result["problems"][0]
    assert "vllm 0.33.0 is outside" in result["problems"][1]
    assert result["resolved"]["vllm"] == "0.33.0"
    assert {"train=paper_cs", "experiment=smoke"} <= set(result["configs"])


def _online() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_the_pinned_wheels_accept_every_name_and_vllm():
    """The real pinned transformers and TRL (downloaded once into .autodata_cache/gpu_deps/)."""
    gpu = _pins(_pyproject()["project"]["optional-dependencies"]["gpu"])
    cached = all(deps.cached_wheel(n, gpu[n], deps.CACHE) for n in ("transformers", "trl"))
    if not cached and not _online():
        pytest.skip("needs pypi.org to download the pinned transformers and trl wheels")
    files = deps.WheelFiles([deps.fetch_wheel(n, gpu[n], deps.CACHE) for n in ("transformers", "trl")])
    tree = deps.SourceTree(files, hints=["transformers/training_args.py"])
    grpo = tree.fields(deps.grpo_config_path(files), "GRPOConfig")
    assert grpo.unresolved == []
    assert sorted(set(deps.passed_keys()) - set(grpo.fields)) == []
    ranges = deps.trl_vllm_ranges(files)
    assert ranges, "no supported vLLM range found in the pinned TRL"
    assert deps.vllm_problems(gpu["vllm"], gpu["trl"], ranges) == []
