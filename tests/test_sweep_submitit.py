"""Hydra multirun sweeps through hydra-submitit-launcher, the path of ``-m hydra/launcher=slurm``: a 2 x 2 sweep of
stage=generate on submitit's local executor (hydra/launcher=submitit_local, the plugin's own option) against the fake
OpenAI server, each point its own finished run dir at multirun/<stage>/<time>/<job num>; and every preset in
conf/hydra/launcher/ composes as the plugin's SLURM launcher."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from fake_openai_server import MODEL, serve_in_subprocess  # noqa: E402

from autodata.config import register_configs  # noqa: E402
from autodata.rundir import finished  # noqa: E402

register_configs()


def test_a_sweep_on_submitit_finishes_every_point_in_its_own_run_dir(tmp_path):
    gaps, methods = ["0.1", "0.3"], ["cot", "agentic"]
    with serve_in_subprocess(0.0, schema_json=True) as url:
        # Started in tmp_path: the sweep lands where conf/config.yaml puts it, relative to the working directory
        proc = subprocess.run(
            [sys.executable, "-m", "autodata.run", "-m", "stage=generate", "hydra/launcher=submitit_local",
             f"domain.acceptance.min_gap={','.join(gaps)}", f"method={','.join(methods)}", "corpus.limit=1",
             "generate.max_rounds=1", "models=openai", f"models.base_url={url}", f"models.model={MODEL}",
             "progress=false"],
            cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sweeps = list((tmp_path / "multirun" / "generate").iterdir())
    assert len(sweeps) == 1, sweeps
    sweep = sweeps[0]
    points = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in points] == ["0", "1", "2", "3"]
    seen = set()
    for point in points:
        assert (point / "stats.json").exists() and finished(point), sorted(p.name for p in point.iterdir())
        json.loads((point / "stats.json").read_text())
        cfg = OmegaConf.load(point / "config.yaml")
        seen.add((str(cfg.domain.acceptance.min_gap), cfg.method.name))
        # Under submitit argv is the launcher's; run_info.json also records the point's own overrides
        overrides = json.loads((point / "run_info.json").read_text())["starts"][-1]["overrides"]
        assert f"method={cfg.method.name}" in overrides
    assert seen == set(itertools.product(gaps, methods))
    # The sweep's own record and submitit's job logs sit next to the points
    assert (sweep / "multirun.yaml").exists() and (sweep / ".submitit").is_dir()


@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "conf" / "hydra" / "launcher").glob("*.yaml")))
def test_every_launcher_preset_is_a_submitit_slurm_launcher(preset):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(config_name="config", return_hydra_config=True,
                      overrides=["stage=generate", f"hydra/launcher={preset}", "hydra.launcher.partition=p"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "p" and launcher.timeout_min > 0 and launcher.max_num_timeout > 0
