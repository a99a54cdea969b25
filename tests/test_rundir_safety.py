"""Run-dir safety: one process (or one multi-process launch) per run dir, small state files replaced in one step
and redone when found torn, and concurrent meta iterations that make the same child scoring it once."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autodata import rundir
from autodata.cache import ResponseCache
from autodata.generate.stage import generate
from autodata.meta.stage import optimize
from autodata.rundir import (LOCK_FILE, RunDirBusy, lock_run_dir, read_json_state, read_jsonl, write_json_atomic,
                             write_provenance)
from tests import test_meta as meta
from tests.scripted import last_user, scripted_llm
from tests.test_generate_loop import Scenario, make_cfg

ROOT = Path(__file__).resolve().parents[1]
# Holds the run dir's lock (with the environment it is given) and says so, then waits to be killed
HOLDER = ("import sys, time; from pathlib import Path; from autodata.rundir import lock_run_dir; "
          "lock_run_dir(Path(sys.argv[1])); print('held', flush=True); time.sleep(120)")
# The ranks of one torchrun launch: what every rank's environment agrees on
LAUNCH = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29555", "TORCHELASTIC_RUN_ID": "job7"}


@pytest.fixture
def holders():
    """Starts lock holders as subprocesses: ``start(run_dir, **env)``; kills what is left at the end."""
    started: list[subprocess.Popen] = []

    def start(run_dir: Path, **env: str) -> subprocess.Popen:
        base = {k: v for k, v in os.environ.items() if k not in (*LAUNCH, "RANK")}
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], cwd=ROOT, env={**base, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        line = proc.stdout.readline()
        assert line.strip() == "held", line + proc.stderr.read()
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture(autouse=True)
def quick_settle(monkeypatch):
    # A refusal in this process waits less for a holder to settle (the CLI waits the full LOCK_SETTLE_S)
    monkeypatch.setattr(rundir, "LOCK_SETTLE_S", 0.3)


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def run_cli(run_dir: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "autodata.run", "stage=plan", "plan.target=100", f"hydra.run.dir={run_dir}",
           "progress=false"]
    env = {k: v for k, v in os.environ.items() if k not in (*LAUNCH, "RANK")}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


# -- the lock -----------------------------------------------------------------------------------------------------


def test_a_second_start_on_a_held_run_dir_is_refused_naming_the_holder(tmp_path, holders):
    run_dir = tmp_path / "run"
    holder = holders(run_dir)
    before = sorted(p.name for p in run_dir.iterdir())
    proc = run_cli(run_dir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    for phrase in (f"{run_dir} is in use by pid {holder.pid} on host ", "started 20", "-c 'import sys",
                   f"kill {holder.pid}", "rerun this command to resume", "its own hydra.run.dir"):
        assert phrase in out, f"{phrase!r} missing from:\n{out}"
    # Refused before writing anything: no config, provenance or log file of its own in the holder's dir
    assert sorted(p.name for p in run_dir.iterdir()) == before == [LOCK_FILE]

    # Once the holder is killed (no cleanup: kill -9), the same command runs and holds the dir itself
    kill9(holder)
    proc = run_cli(run_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (run_dir / "plan.json").exists()
    recorded = json.loads((run_dir / LOCK_FILE).read_text())
    assert "stage=plan" in recorded["command"] and recorded["launch"] is None


def test_the_lock_is_free_again_after_its_holder_is_killed_with_sigkill(tmp_path, holders):
    run_dir = tmp_path / "run"
    holder = holders(run_dir)
    with pytest.raises(RunDirBusy, match=f"in use by pid {holder.pid} "):
        lock_run_dir(run_dir, env={})
    kill9(holder)
    lock = lock_run_dir(run_dir, env={})
    try:
        assert lock is not None and json.loads((run_dir / LOCK_FILE).read_text())["pid"] == os.getpid()
        # This process asking again (a sweep naming one dir twice) gets the lock it holds
        assert lock_run_dir(run_dir, env={}) is lock
    finally:
        lock.release()


def test_the_ranks_of_one_launch_share_the_lock_and_anyone_else_is_refused(tmp_path, holders):
    run_dir = tmp_path / "run"
    rank0 = holders(run_dir, **LAUNCH, RANK="0")
    rank1 = holders(run_dir, **LAUNCH, RANK="1")
    # A process on its own, and a rank of another launch, are refused; the message names the launch
    with pytest.raises(RunDirBusy, match="rank 0 of launch .*127.0.0.1:29555/job7"):
        lock_run_dir(run_dir, env={})
    with pytest.raises(RunDirBusy, match=f"in use by pid {rank0.pid} "):
        lock_run_dir(run_dir, env={**LAUNCH, "MASTER_PORT": "29556", "RANK": "0"})
    # The lock is held while any rank lives, whichever rank took it first
    kill9(rank0)
    with pytest.raises(RunDirBusy):
        lock_run_dir(run_dir, env={})
    kill9(rank1)
    lock_run_dir(run_dir, env={}).release()


def test_a_rank_that_arrives_first_holds_the_lock_for_its_launch(tmp_path, holders):
    run_dir = tmp_path / "run"
    holders(run_dir, **LAUNCH, RANK="1")
    # Rank 0 of the same launch joins (this process, as a rank)
    lock = lock_run_dir(run_dir, env={**LAUNCH, "RANK": "0"})
    try:
        assert lock is not None
        assert json.loads((run_dir / LOCK_FILE).read_text())["rank"] == "1"
    finally:
        lock.release()


# -- atomic state files -------------------------------------------------------------------------------------------

# Writes run_info.json atomically, but dies (kill -9) at the moment the temporary file would replace it
CRASH_BEFORE_REPLACE = ("import os, signal, sys; from pathlib import Path; from autodata import rundir; "
                        "rundir.os.replace = lambda a, b: os.kill(os.getpid(), signal.SIGKILL); "
                        "rundir.write_json_atomic(Path(sys.argv[1]), {'starts': ['new']})")


def test_a_crash_between_write_and_replace_leaves_the_old_file(tmp_path):
    path = tmp_path / "run_info.json"
    write_json_atomic(path, {"starts": ["old"]})
    proc = subprocess.run([sys.executable, "-c", CRASH_BEFORE_REPLACE, str(path)], cwd=ROOT, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(path.read_text()) == {"starts": ["old"]}
    # The new content was complete on disk, in a temporary file next to it that nothing reads
    (leftover,) = [p for p in tmp_path.iterdir() if p != path]
    assert leftover.name.startswith(".run_info.json.") and json.loads(leftover.read_text()) == {"starts": ["new"]}

    write_json_atomic(path, {"starts": ["new"]})
    assert json.loads(path.read_text()) == {"starts": ["new"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, leftover.name])


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    path = tmp_path / "stats.json"
    write_json_atomic(path, {"accepted": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"accepted": object()})
    assert json.loads(path.read_text()) == {"accepted": 1}
    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_json_atomic(path, {"accepted": 2})
    assert json.loads(path.read_text()) == {"accepted": 1} and [p.name for p in tmp_path.iterdir()] == ["stats.json"]
    # Created like write_text creates a file, readable by the group that shares the run dir (not mkstemp's 0o600)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_torn_state_file_is_moved_aside_with_a_warning(tmp_path, caplog):
    path = tmp_path / "plan.json"
    path.write_text('{"parent": "v1", "minib')
    with caplog.at_level(logging.WARNING):
        assert read_json_state(path, "and it is planned again") is None
    assert not path.exists() and (tmp_path / "plan.json.corrupt").read_text() == '{"parent": "v1", "minib'
    assert str(path) in caplog.text and "and it is planned again" in caplog.text
    assert read_json_state(path, "unused") is None  # missing: no warning, nothing to move


def test_a_torn_run_info_keeps_a_copy_and_starts_the_history_again(tmp_path, caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run_info.json").write_text('{"starts": [{"argv": ["x"]}, {"ar')
    with caplog.at_level(logging.WARNING):
        write_provenance(make_cfg(tmp_path), run_dir, argv=["python", "again"])
    assert [s["argv"] for s in json.loads((run_dir / "run_info.json").read_text())["starts"]] == [["python", "again"]]
    assert (run_dir / "run_info.json.corrupt").exists() and "run_info.json" in caplog.text


def test_a_torn_stats_json_is_reported_and_written_again_on_resume(tmp_path, caplog):
    cfg = make_cfg(tmp_path, n_docs=2, max_docs_in_flight=1)
    run_dir = tmp_path / "run"
    rounds = [{"weak": "BAD", "strong": "GOOD"}]
    llm, _ = scripted_llm(cfg.models, Scenario(rounds))
    first = asyncio.run(generate(cfg, run_dir, llm=llm))
    text = (run_dir / "stats.json").read_text()
    (run_dir / "stats.json").write_text(text[: len(text) // 2])

    llm, backends = scripted_llm(cfg.models, Scenario(rounds))
    with caplog.at_level(logging.WARNING):
        stats = asyncio.run(generate(cfg, run_dir, llm=llm))
    assert f"{run_dir / 'stats.json'} is not valid JSON" in caplog.text
    assert json.loads((run_dir / "stats.json").read_text())["accepted"] == first["accepted"] == stats["accepted"] == 2
    assert (run_dir / "stats.json.corrupt").read_text() == text[: len(text) // 2]
    assert sum(len(b.requests) for b in backends.values()) == 0  # finished documents are not run again


def test_a_torn_split_and_plan_are_reported_and_the_iteration_redone_from_the_cache(tmp_path, caplog):
    cfg = meta.make_cfg(tmp_path, iterations=1)
    meta.run(cfg, tmp_path, meta.World())
    run_dir = tmp_path / "run"
    plan = json.loads((run_dir / "iterations" / "1" / "plan.json").read_text())
    for name in ("split.json", "iterations/1/plan.json"):
        (run_dir / name).write_text((run_dir / name).read_text()[:20])
    # Forget that iteration 1 finished, as a kill after its calls and before its history row would
    (run_dir / "history.jsonl").write_text("")
    (run_dir / "population.jsonl").write_text((run_dir / "population.jsonl").read_text().splitlines()[0] + "\n")

    with caplog.at_level(logging.WARNING):
        _, backends = meta.run(cfg, tmp_path, meta.World())
    for name in ("split.json", "iterations/1/plan.json"):
        assert f"{run_dir / name} is not valid JSON" in caplog.text
        assert (run_dir / (name + ".corrupt")).exists()
    assert json.loads((run_dir / "iterations" / "1" / "plan.json").read_text()) == plan
    assert json.loads((run_dir / "split.json").read_text())["domain"] == "cs"
    assert [r["kept"] for r in meta.history(tmp_path)] == [True]
    assert sum(len(b.requests) for b in backends.values()) == 0


# -- meta.concurrency: one child, one scoring ---------------------------------------------------------------------


def gate(backend, before) -> None:
    """Run ``await before(request)`` ahead of each of the backend's answers."""
    inner = backend.complete

    async def complete(request):
        await before(request)
        return await inner(request)

    backend.complete = complete


def test_two_iterations_in_flight_that_make_the_same_child_score_it_once(tmp_path):
    # Both iterations draw the baseline and get the same edit. The second implementer answer waits until the
    # first child is being scored, and that scoring waits until the second iteration has its row: the second
    # child is made while the first is in flight.
    cfg = meta.make_cfg(tmp_path, iterations=2, concurrency=2)
    run_dir = tmp_path / "run"
    cache = ResponseCache(run_dir / "cache.sqlite")
    llm, backends = scripted_llm(cfg.models, meta.World(), cache=cache)
    answered, scoring = [], asyncio.Event()

    async def until(condition, what: str) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline, f"waited 30 s for {what}"
            await asyncio.sleep(0.01)

    async def implementer(request) -> None:
        answered.append(request)
        if len(answered) == 2:
            await until(scoring.is_set, "the first child's scoring")

    async def weak_solver(request) -> None:
        if "HARDER" in last_user(request):
            scoring.set()
            await until(lambda: any(read_jsonl(run_dir / "history.jsonl")), "the other iteration's row")

    gate(backends["implementer"], implementer)
    gate(backends["weak_solver"], weak_solver)
    try:
        summary = asyncio.run(optimize(cfg, run_dir, llm=llm))
    finally:
        cache.close()

    rows = {r["iteration"]: r for r in meta.history(tmp_path)}
    (kept,) = [r for r in rows.values() if r["kept"]]
    (twin,) = [r for r in rows.values() if not r["kept"]]
    assert twin["rejection"] == "duplicate" and twin["child"] == kept["child"]
    assert f"iteration {kept['iteration']} (in flight)" in twin["reason"] and twin["child_score"] is None
    # Scored once, into one folder: each validation document once in its ledger, and one population row
    ledger = [r["document_id"] for r in read_jsonl(run_dir / "variants" / kept["child"] / "validation" /
                                                  "documents.jsonl")]
    assert sorted(ledger) == sorted(set(ledger)) and len(ledger) == cfg.meta.validation_documents
    assert [p["id"] for p in read_jsonl(run_dir / "population.jsonl")] == [kept["parent"], kept["child"]]
    assert summary["kept"] == 1


def test_rundir_doctests():
    import doctest

    assert doctest.testmod(rundir).failed == 0
