"""Bad input to stage=train: each fails before the policy loads, with an error that says what to do."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autodata.config import RootConfig
from training.stage import TrainAborted, train

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "train_run"


def smoke_cfg(**train_overrides) -> RootConfig:
    cfg = RootConfig(stage="train")
    cfg.progress = False
    cfg.train.dataset = str(FIXTURE)
    cfg.train.model = "embedded"
    cfg.train.batch_size, cfg.train.group_size, cfg.train.max_steps = 2, 4, 1
    for key, value in train_overrides.items():
        setattr(cfg.train, key, value)
    return cfg


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def run_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "autodata.run", "stage=train", f"hydra.run.dir={tmp_path / 'run'}", "progress=false",
           *overrides]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def test_missing_dataset_path(tmp_path):
    with pytest.raises(TrainAborted) as info:
        train(smoke_cfg(dataset=str(tmp_path / "runs" / "cs_agentic")), tmp_path / "run")
    assert "cs_agentic does not exist" in str(info.value) and "stage=generate" in str(info.value)


def test_dataset_without_the_needed_fields(tmp_path):
    rows = [{"id": f"x{i}", "question": "q", "domain": "cs"} for i in range(4)]
    (tmp_path / "accepted.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TrainAborted) as info:
        train(smoke_cfg(dataset=str(tmp_path / "accepted.jsonl")), tmp_path / "run")
    text = str(info.value)
    assert "'reference_answer'" in text and "'rubric'" in text and "written by stage=generate" in text


def test_empty_dataset(tmp_path):
    (tmp_path / "accepted.jsonl").write_text("")
    with pytest.raises(TrainAborted, match="no training examples"):
        train(smoke_cfg(dataset=str(tmp_path / "accepted.jsonl")), tmp_path / "run")


def test_a_step_larger_than_the_dataset(tmp_path):
    with pytest.raises(TrainAborted, match="one optimizer step needs 16 prompts"):
        train(smoke_cfg(batch_size=16), tmp_path / "run")


def test_unreachable_judge_fails_fast_with_the_url(tmp_path):
    url = closed_port_url()
    cfg = smoke_cfg()
    cfg.models.backend, cfg.models.base_url, cfg.models.model = "openai", url, "judge-model"
    started = time.perf_counter()
    with pytest.raises(TrainAborted) as info:
        train(cfg, tmp_path / "run")
    assert url in str(info.value) and "Nothing was trained" in str(info.value)
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_judge_model_that_cannot_load(tmp_path):
    cfg = smoke_cfg()
    cfg.models.roles["judge"].model = str(tmp_path / "no_such_model")
    with pytest.raises(TrainAborted, match="no_such_model"):
        train(cfg, tmp_path / "run")


def test_vllm_rollouts_without_a_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = smoke_cfg()
    cfg.train.vllm.enabled = True
    with pytest.raises(TrainAborted, match="needs a CUDA GPU"):
        train(cfg, tmp_path / "run")


def test_existing_checkpoints_need_resume(tmp_path):
    (tmp_path / "run" / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    with pytest.raises(TrainAborted, match="already holds checkpoint-5; continue it with train.resume=true"):
        train(smoke_cfg(), tmp_path / "run")


def test_cli_bad_batch_exits_2_listing_the_problem(tmp_path):
    proc = run_cli(tmp_path, f"train.dataset={FIXTURE}", "train.batch_unit=completions", "train.batch_size=12",
                   "train.group_size=8")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "train.batch_size (12) must be divisible by train.group_size (8)" in proc.stdout + proc.stderr


def test_cli_unreachable_judge_exits_3_naming_the_url(tmp_path):
    url = closed_port_url()
    proc = run_cli(tmp_path, "experiment=smoke", "models=openai", f"models.base_url={url}", "models.model=judge")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out
    assert url in out and "reward judge" in out
