"""generate.target_accepted: stop starting documents at the target, resume towards a larger one."""

from __future__ import annotations

import json

from autodata.generate.outputs import target_status
from tests.test_generate_loop import Scenario, make_cfg, rows, run

# Every document is accepted in its first round: weak fails, strong succeeds.
ALWAYS_ACCEPT = [{"weak": "BAD", "strong": "GOOD"}]


def test_target_stops_new_documents_and_a_larger_target_resumes(tmp_path):
    cfg = make_cfg(tmp_path, n_docs=10, max_docs_in_flight=1, target_accepted=3)
    stats, backends = run(cfg, tmp_path, Scenario(ALWAYS_ACCEPT))
    # One document in flight at a time: the fourth finds the target reached when it gets its slot.
    assert stats["accepted"] == 3 and stats["documents_finished"] == 3
    assert stats["target_reached"] is True and stats["documents_not_started"] == 7
    assert len(backends["challenger"].requests) == 3  # nothing of the other 7 reached a model
    assert sorted(r["document_id"] for r in rows(tmp_path, "documents.jsonl")) == ["doc0", "doc1", "doc2"]

    cfg.generate.target_accepted = 5
    stats, backends = run(cfg, tmp_path, Scenario(ALWAYS_ACCEPT))
    # The three earlier examples count towards the new target: two more documents, not five.
    assert stats["accepted"] == 5 and len(backends["challenger"].requests) == 2
    assert stats["documents_not_started"] == 5 and stats["target_reached"] is True
    assert [r["document_id"] for r in rows(tmp_path, "accepted.jsonl")] == [f"doc{i}" for i in range(5)]
    on_disk = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert (on_disk["target_accepted"], on_disk["target_reached"], on_disk["documents_not_started"]) == (5, True, 5)


def test_a_reached_target_starts_nothing(tmp_path):
    cfg = make_cfg(tmp_path, n_docs=4, max_docs_in_flight=1, target_accepted=2)
    run(cfg, tmp_path, Scenario(ALWAYS_ACCEPT))
    stats, backends = run(cfg, tmp_path, Scenario(ALWAYS_ACCEPT))
    assert sum(len(b.requests) for b in backends.values()) == 0
    assert stats["accepted"] == 2 and stats["documents_not_started"] == 2


def test_documents_in_flight_finish_after_the_target(tmp_path):
    # Four documents start together; the target of 2 is reached while all four run: a small overshoot.
    cfg = make_cfg(tmp_path, n_docs=6, max_docs_in_flight=4, target_accepted=2)
    stats, _ = run(cfg, tmp_path, Scenario(ALWAYS_ACCEPT))
    assert stats["accepted"] == 4 and stats["documents_not_started"] == 2 and stats["target_reached"] is True


def test_target_not_reached_when_the_corpus_runs_out(tmp_path):
    # Weak and strong both succeed: too easy every round, nothing accepted.
    cfg = make_cfg(tmp_path, n_docs=2, max_rounds=1, target_accepted=5)
    stats, _ = run(cfg, tmp_path, Scenario([{"weak": "GOOD", "strong": "GOOD"}]))
    assert stats["target_reached"] is False and stats["documents_not_started"] == 0
    assert target_status(stats) == "target 5 not reached: corpus exhausted after 2 documents (0 accepted)"


def test_without_a_target_stats_say_so(tmp_path):
    stats, _ = run(make_cfg(tmp_path, n_docs=2), tmp_path, Scenario(ALWAYS_ACCEPT))
    assert stats["target_accepted"] is None and stats["target_reached"] is None
    assert stats["documents_not_started"] == 0 and target_status(stats) is None


def test_the_final_log_line_says_whether_the_target_was_reached(tmp_path, monkeypatch, caplog):
    from autodata.generate import stage
    from tests.scripted import scripted_llm

    cfg = make_cfg(tmp_path, n_docs=3, max_docs_in_flight=1, target_accepted=2)
    llm, _ = scripted_llm(cfg.models, Scenario(ALWAYS_ACCEPT))
    real_generate = stage.generate
    # stage.run builds its own LLM; hand it the scripted one instead.
    monkeypatch.setattr(stage, "generate", lambda cfg, run_dir: real_generate(cfg, run_dir, llm=llm))
    with caplog.at_level("INFO", logger="autodata.generate.stage"):
        stage.run(cfg, tmp_path / "run")
    assert "accepted 2 (target 2, reached; 1 documents not started); 2 rounds" in caplog.text
