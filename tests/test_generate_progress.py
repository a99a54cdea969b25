"""The generate bar's postfix moves with every model call, not only when a document finishes."""

from __future__ import annotations

import pytest

from autodata.config import RootConfig
from autodata.generate.progress import Counts, Progress
from tests.scripted import scripted_llm
from tests.test_generate_loop import Scenario, make_cfg, run
from tests.wandb_offline import read_run

# Calls of one accepted document (solver_wave 1): challenger, quality verifier, three weak runs and three
# strong runs (an accepted task carries every run, early exit or not), and a judge call per run.
CALLS_PER_DOC = 1 + 1 + 3 + 3 + 6


class FakeBar:
    """Records what tqdm would show: (documents done, postfix) at each refresh."""

    instances: list["FakeBar"] = []

    def __init__(self, total: int, initial: int, **_):
        self.total, self.n, self.mininterval = total, initial, 0.0
        self.shown: list[tuple[int, dict]] = []
        FakeBar.instances.append(self)

    def set_postfix(self, postfix: dict) -> None:
        self.shown.append((self.n, dict(postfix)))

    def update(self, n: int) -> None:
        self.n += n

    def close(self) -> None:
        pass


@pytest.fixture
def bars(monkeypatch):
    """The stage's bars, faked (patching tqdm itself would break huggingface_hub, which subclasses it)."""
    from autodata.generate import stage

    FakeBar.instances = []
    monkeypatch.setattr(stage, "_bar", lambda cfg, total, initial: FakeBar(total, initial) if cfg.progress else None)
    return FakeBar.instances


def test_calls_move_the_postfix_before_the_document_finishes(tmp_path, bars):
    cfg = make_cfg(tmp_path, n_docs=1)
    cfg.progress = True
    run(cfg, tmp_path, Scenario([{"weak": "BAD", "strong": "GOOD"}]))
    (bar,) = bars
    # From the start (0 calls) and while the document is still running (0 done), every completed call shows
    # up, one at a time.
    during = [p["calls"] for n, p in bar.shown if n == 0]
    assert during[:CALLS_PER_DOC + 1] == list(range(CALLS_PER_DOC + 1))
    # The round is counted before the document is.
    n, shown = bar.shown[CALLS_PER_DOC + 1]
    assert n == 0 and {k: v for k, v in shown.items() if k != "tok/s"} == {"accepted": 0, "rounds": 1,
                                                                          "calls": CALLS_PER_DOC}
    n, last = bar.shown[-1]
    assert n == 1 and last["accepted"] == 1 and last["rounds"] == 1 and last["calls"] == CALLS_PER_DOC
    # The default roles run on the local backend: generated tokens per second are shown.
    assert "tok/s" in last


def test_progress_false_builds_no_bar(tmp_path):
    from autodata.generate.stage import _bar

    cfg = make_cfg(tmp_path)  # progress=false, as in every loop test, which Progress runs through without a bar
    assert _bar(cfg, total=2, initial=0) is None


def test_postfix_reads_the_llm_counters_and_throttles():
    cfg = RootConfig(stage="generate")
    llm, _ = scripted_llm(cfg.models, lambda *a: "")
    usage = llm.usage["weak_solver"]
    usage.calls, usage.cached_calls, usage.completion_tokens = 3, 1, 200
    now = [100.0]
    bar = FakeBar(total=5, initial=0)
    bar.mininterval = 0.5
    progress = Progress(Counts(accepted=2, rounds=4), llm, bar=bar, target=5, clock=lambda: now[0])
    now[0] += 10.0
    # Cache hits count as calls; tokens per second counts generated tokens only: 200 tokens over 10 s.
    assert progress.postfix() == {"accepted": "2/5", "rounds": 4, "calls": 4, "tok/s": "20.0"}
    progress.call_done()
    progress.call_done()  # same instant: throttled
    now[0] += 0.6
    progress.call_done()
    assert len(bar.shown) == 1 + 2  # the first postfix at start, then two of the three calls


def test_served_endpoints_show_no_token_rate():
    cfg = RootConfig(stage="generate")
    cfg.models.backend = "openai"
    llm, _ = scripted_llm(cfg.models, lambda *a: "")
    assert "tok/s" not in Progress(Counts(), llm).postfix()


def test_rounds_and_calls_are_logged_to_wandb_per_round(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg(tmp_path, n_docs=2, max_docs_in_flight=1)
    cfg.logger = "wandb"
    run(cfg, tmp_path, Scenario([{"weak": "BAD", "strong": "GOOD"}]))
    _, history = read_run(tmp_path / "run")
    logged = [(h["generate/rounds_done"], h["generate/calls_done"]) for h in history if "generate/rounds_done" in h]
    assert logged == [(1, CALLS_PER_DOC), (2, 2 * CALLS_PER_DOC)]
