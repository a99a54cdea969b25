"""The command line: `autodata` (the console script) and `python -m autodata.run` answer --help from the stage
registry and conf/experiment/ without composing a stage, and still compose and run through Hydra otherwise."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from autodata.run import help_text
from autodata.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
# pip install -e . (scripts/setup.sh) writes the console script beside the venv's python
SCRIPT = Path(sys.executable).parent / "autodata"


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=120)


def console_script() -> str:
    assert SCRIPT.exists(), f"no console script at {SCRIPT}: run `.venv/bin/pip install -e .` (scripts/setup.sh does)"
    return str(SCRIPT)


def assert_help(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "ConfigCompositionException" not in proc.stderr, proc.stderr
    listed = re.findall(r"^  (\w+)  ", out, re.M)
    assert [name for name in listed if name in STAGES] == list(STAGES)
    assert sorted(name for name in listed if name in EXPERIMENTS) == EXPERIMENTS
    assert "examples:" in out and "autodata stage=generate" in out
    return out


def test_the_pyproject_declares_the_console_script():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"autodata": "autodata.run:main"}


def test_the_console_script_lists_stages_experiments_and_examples_from_any_directory(tmp_path):
    # Outside the checkout: the config path must not depend on the working directory
    out = assert_help(run(console_script(), "--help", cwd=tmp_path))
    assert "default cpu" in out
    # The descriptions come from the experiment files
    assert "CS table: CoT vs agentic data" in out


def test_python_m_gives_the_same_help():
    assert assert_help(run(sys.executable, "-m", "autodata.run", "-h")) == help_text() + "\n"


def test_a_normal_composition_still_goes_through_hydra():
    proc = run(console_script(), "stage=generate", "method=cot", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["stage"] == "generate" and cfg["method"]["name"] == "cot" and cfg["experiment"]["name"] == "cpu"


def test_hydra_flags_are_hydras():
    proc = run(console_script(), "--hydra-help")
    assert proc.returncode == 0 and "--shell-completion" in proc.stdout, proc.stderr
    completion = run(console_script(), "--shell-completion", "install=bash")
    assert completion.returncode == 0 and "hydra_bash_completion" in completion.stdout, completion.stderr


def test_without_a_stage_hydra_names_the_stages():
    proc = run(console_script())
    assert proc.returncode == 1
    assert "You must specify 'stage'" in proc.stderr and "generate" in proc.stderr


@pytest.mark.parametrize("folder", ["conf", "slurm", "launch", "training"])
def test_every_launch_file_a_command_names_exists(folder):
    """accelerate and DeepSpeed files live in launch/, outside Hydra's search path; each one named exists."""
    named = set()
    for path in (ROOT / folder).rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".json", ".sbatch", ".sh", ".py"):
            named |= set(re.findall(r"\b((?:conf|launch)/(?:accelerate|deepspeed)/[\w.]+)", path.read_text()))
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"{folder}/ names launch files that do not exist: {missing}"
    assert not any(p.startswith("conf/") for p in named), "launch files moved to launch/"
