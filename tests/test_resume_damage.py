"""Resume with a damaged line in each output file of generate and eval: the line is kept in ``<file>.corrupt``,
what it held is redone, and nothing ends up missing or twice."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from autodata.backends.base import BackendError
from autodata.generate import generate
from autodata.rundir import read_jsonl
from eval.stage import evaluate
from tests import test_eval_stage as ev
from tests.scripted import last_user, scripted_llm
from tests.test_generate_loop import Scenario, make_cfg

# Damage that no JSON reader gets past: a torn row, then bytes that are not UTF-8
DAMAGE = b'{"document_id": "doc1", "rou\xff\xfe\x00'


def damage_line(path: Path, belongs) -> int:
    """Overwrite the first line whose row ``belongs(row)`` with DAMAGE; returns its line number."""
    lines = path.read_bytes().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if belongs(json.loads(line)))
    lines[index] = DAMAGE + b"\n"
    path.write_bytes(b"".join(lines))
    return index + 1


def assert_moved_aside(path: Path, line_no: int, caplog) -> None:
    moved = [json.loads(line) for line in path.with_name(path.name + ".corrupt").read_text().splitlines()]
    assert [m["line"] for m in moved] == [line_no] and moved[0]["moved_at"]
    assert moved[0]["text"].encode("utf-8", errors="surrogateescape") == DAMAGE
    assert f"line {line_no}" in caplog.text and str(path) in caplog.text


def two_rounds() -> Scenario:
    # Too easy in round 1, accepted in round 2: every document has two round rows and one accepted row.
    return Scenario([{"weak": "GOOD", "strong": "GOOD"}, {"weak": "BAD", "strong": "GOOD"}])


@pytest.mark.parametrize("name", ["accepted.jsonl", "documents.jsonl", "rounds.jsonl"])
def test_generate_resume_keeps_a_damaged_line_aside_and_redoes_its_document(tmp_path, caplog, name):
    cfg = make_cfg(tmp_path, n_docs=3, max_docs_in_flight=1)
    run_dir = tmp_path / "run"
    llm, _ = scripted_llm(cfg.models, two_rounds())
    asyncio.run(generate(cfg, run_dir, llm=llm))
    line_no = damage_line(run_dir / name, lambda row: row["document_id"] == "doc1")

    llm, backends = scripted_llm(cfg.models, two_rounds())
    with caplog.at_level(logging.WARNING):
        stats = asyncio.run(generate(cfg, run_dir, llm=llm))
    assert_moved_aside(run_dir / name, line_no, caplog)
    # Only the document whose row was lost is asked about again.
    asked = {last_user(r).split("Document ")[1][:2] for r in backends["challenger"].requests}
    assert asked == {"1."}
    ledger = [r["document_id"] for r in read_jsonl(run_dir / "documents.jsonl")]
    accepted = [r["document_id"] for r in read_jsonl(run_dir / "accepted.jsonl")]
    rounds = [(r["document_id"], r["round"]) for r in read_jsonl(run_dir / "rounds.jsonl")]
    assert sorted(ledger) == sorted(accepted) == ["doc0", "doc1", "doc2"]
    assert sorted(rounds) == [(f"doc{i}", r) for i in range(3) for r in (1, 2)]
    assert stats["accepted"] == 3


def test_generate_resume_redoes_an_accepted_document_whose_example_is_gone(tmp_path, caplog):
    # Not damage that leaves a trace: the accepted row is simply missing (a hand edit, a truncated copy).
    cfg = make_cfg(tmp_path, n_docs=2, max_docs_in_flight=1)
    run_dir = tmp_path / "run"
    llm, _ = scripted_llm(cfg.models, two_rounds())
    asyncio.run(generate(cfg, run_dir, llm=llm))
    accepted = run_dir / "accepted.jsonl"
    accepted.write_text("".join(line + "\n" for line in accepted.read_text().splitlines()
                                if json.loads(line)["document_id"] != "doc0"))
    llm, backends = scripted_llm(cfg.models, two_rounds())
    with caplog.at_level(logging.WARNING):
        asyncio.run(generate(cfg, run_dir, llm=llm))
    assert "document doc0 is redone" in caplog.text and "accepted row is missing" in caplog.text
    assert sorted(r["document_id"] for r in read_jsonl(accepted)) == ["doc0", "doc1"]


def test_a_document_that_fails_gets_an_error_row_and_is_redone_on_resume_without_duplicates(tmp_path):
    cfg = make_cfg(tmp_path, n_docs=3, max_docs_in_flight=1)
    run_dir = tmp_path / "run"
    scenario = two_rounds()

    def failing(role, request, call):
        # doc1 fails in its second round, after its first round's row is written
        if role == "weak_solver" and scenario.current == "Document 1." and scenario.rounds_of[scenario.current] == 2:
            raise BackendError("answered 200 without a ChatCompletion (after 5 attempts)")
        return scenario(role, request, call)

    llm, _ = scripted_llm(cfg.models, failing)
    stats = asyncio.run(generate(cfg, run_dir, llm=llm))
    ledger = {r["document_id"]: r for r in read_jsonl(run_dir / "documents.jsonl")}
    assert ledger["doc1"]["status"] == "error" and "without a ChatCompletion" in ledger["doc1"]["reason"]
    assert stats["document_errors"] == 1 and stats["documents_finished"] == 2

    llm, backends = scripted_llm(cfg.models, two_rounds())
    stats = asyncio.run(generate(cfg, run_dir, llm=llm))
    asked = {last_user(r).split("Document ")[1][:2] for r in backends["challenger"].requests}
    assert asked == {"1."}
    ledger = [(r["document_id"], r["status"]) for r in read_jsonl(run_dir / "documents.jsonl")]
    rounds = [(r["document_id"], r["round"]) for r in read_jsonl(run_dir / "rounds.jsonl")]
    assert sorted(ledger) == [(f"doc{i}", "accepted") for i in range(3)]
    assert sorted(rounds) == [(f"doc{i}", r) for i in range(3) for r in (1, 2)]
    assert stats["document_errors"] == 0 and stats["accepted"] == 3


@pytest.mark.parametrize("name", ["samples.jsonl", "prompts.jsonl"])
def test_eval_resume_keeps_a_damaged_line_aside_and_samples_its_prompt_again(tmp_path, caplog, name):
    run_dir = tmp_path / "run"
    cfg = ev.make_cfg(tmp_path, f"eval.datasets=[{ev.HELDOUT_RUN}]", "cache.enabled=false")
    llm, _ = ev.make_llm(cfg, ev.solver_script(ev.ANSWERS))
    first = asyncio.run(evaluate(cfg, run_dir, llm=llm))
    line_no = damage_line(run_dir / name, lambda row: row["prompt_id"] == "agentic/pydoc/exceptions")

    llm, backends = ev.make_llm(cfg, ev.solver_script(ev.ANSWERS))
    with caplog.at_level(logging.WARNING):
        second = asyncio.run(evaluate(cfg, run_dir, llm=llm))
    assert_moved_aside(run_dir / name, line_no, caplog)
    asked = [ev.user_text(r) for r in backends["weak_solver"].requests]
    assert len(asked) == 1 and "finally" in asked[0]
    samples = [(r["prompt_id"], r["sample"]) for r in read_jsonl(run_dir / "samples.jsonl")]
    assert len(samples) == len(set(samples)) == 6
    assert sorted(r["prompt_id"] for r in read_jsonl(run_dir / "prompts.jsonl")) == [
        "agentic/pydoc/closures", "agentic/pydoc/exceptions"]
    assert second["datasets"]["train_run"]["mean_at_3"] == first["datasets"]["train_run"]["mean_at_3"]


def test_generate_stage_doctests():
    import doctest

    import autodata.generate.stage as stage

    assert doctest.testmod(stage).failed == 0
