"""Call rows keep a reference to their prompt, not its text: every call of a scripted run renders again from the
run dir to the recorded hash, the document is never repeated in rounds.jsonl, and ``autodata show`` prints a
call or says why it cannot."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from autodata.config import RootConfig
from autodata.generate import generate
from autodata.generate.recorder import messages_sha256
from autodata.generate.trajectory import RunRenderer, TrajectoryError, render_call
from autodata.llm import derive_seed
from autodata.rundir import read_jsonl
from autodata.generate.show import main as show
from tests.scripted import cs_task, last_user, scripted_llm, verdicts
from tests.test_generate_loop import N, N_POS, legal_cfg, legal_script, make_cfg

MARK = re.compile(r"\[d(\d) r(\d) c(\d)\]")
# Text of every document make_cfg writes, and never of a task: its presence in rounds.jsonl means a document
REPEATED = "short-circuit in Python. Boolean operators"


def seeds(method: str) -> dict[int, tuple[int, int, int]]:
    """Challenger seed -> (document, round, candidate): the script tells candidates apart as the loop names them."""
    out = {}
    for d in range(4):
        for r in range(1, 5):
            for c in range(3):
                for attempt in range(2):
                    key = f"{method}/doc{d}/r{r}/challenger{f'/{c}' if c else ''}/json{attempt}"
                    out[derive_seed(0, key)] = (d, r, c)
    return out


class Plan:
    """What each task's models do, by (document, round, candidate); the task's question carries its mark, so the
    quality verifier, solvers and judge (which never see the seed) know whose task they read."""

    def __init__(self, method: str, behaviour: dict[tuple[int, int, int], dict], default: dict):
        self.seeds = seeds(method)
        self.behaviour = behaviour
        self.default = default

    def spec(self, d: int, r: int, c: int) -> dict:
        return {**self.default, **self.behaviour.get((d, r, c), {})}

    def __call__(self, role: str, request, call: int):
        text = last_user(request)
        if role == "challenger":
            d, r, c = self.seeds[request.sampling.seed]
            if self.spec(d, r, c).get("malformed"):
                return "no JSON here"
            return cs_task(question=f"Predict the result of evaluating the expression [d{d} r{r} c{c}] and "
                                    "justify each step.")
        if role == "feedback":
            return f"DIAGNOSIS of {MARK.search(text).group(0)}: pattern matching was enough."
        # The judge's system message may hold the question: the mark is looked for in every message
        spec = self.spec(*map(int, MARK.search("\n".join(m["content"] for m in request.messages)).groups()))
        if role == "quality_verifier":
            return json.dumps({"verdict": spec["qv"], "feedback": f"qv said {spec['qv']}"})
        if role in ("weak_solver", "strong_solver"):
            return [spec["weak" if role == "weak_solver" else "strong"]] * request.n
        if role == "judge":
            if "UNGRADABLE" in text:
                return "no verdicts"
            return verdicts(N, N_POS if "GOOD" in text else 0, N_POS)
        raise AssertionError(role)


def run(cfg: RootConfig, tmp_path: Path, script) -> Path:
    run_dir = tmp_path / "run"
    llm, _ = scripted_llm(cfg.models, script)
    asyncio.run(generate(cfg, run_dir, llm=llm))
    # What run.py writes before the stage (write_provenance): the config the renderer reads
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    return run_dir


def calls(run_dir: Path) -> list[tuple[dict, dict]]:
    return [(row, call) for row in read_jsonl(run_dir / "rounds.jsonl") for call in row["calls"]]


def assert_every_call_renders(run_dir: Path) -> dict[str, int]:
    """Every call renders to its recorded hash and carries the document exactly when its reference says so; the
    count of calls per template."""
    renderer = RunRenderer(run_dir)
    docs = {d: (run_dir.parent / "docs" / f"{d}.md").read_text() for d in {r["document_id"] for r, _ in calls(run_dir)}}
    templates: dict[str, int] = {}
    for row, call in calls(run_dir):
        ref = call["prompt"]
        messages = renderer.render(row["document_id"], row["round"], call["step"])
        assert messages_sha256(messages) == ref["sha256"]
        assert sum(len(m["content"]) for m in messages) == ref["chars"]
        text = "\n".join(m["content"] for m in messages)
        doc = docs[row["document_id"]]
        if ref["document"] is None:
            assert doc[:200] not in text, (row["round"], call["step"])
        else:
            assert ref["document"]["id"] == row["document_id"]
            assert doc[:ref["document"]["chars"]] in text
        templates[ref["template"]] = templates.get(ref["template"], 0) + 1
    # The document's text is in the corpus, not in the log
    assert REPEATED not in (run_dir / "rounds.jsonl").read_text()
    return templates


AGENTIC = {
    # doc0: too easy, then accepted
    (0, 1, 0): {"weak": "GOOD"},
    # doc1: fails QV, then fails on strong (one strong run ungradable), then too easy: exhausted
    (1, 1, 0): {"qv": "FAIL"},
    (1, 2, 0): {"strong": "UNGRADABLE"},
    (1, 3, 0): {"weak": "GOOD"},
    # doc2: malformed, then accepted with a reasoning block before the strong answer
    (2, 1, 0): {"malformed": True},
    (2, 2, 0): {"strong": "<think>scratch work</think>GOOD answer"},
}
ACCEPT = {"qv": "PASS", "weak": "BAD answer", "strong": "GOOD answer"}


def test_every_agentic_call_renders_again_and_no_document_is_repeated(tmp_path):
    cfg = make_cfg(tmp_path, n_docs=3)
    # A long document cut by the run's cap: the renderer cuts the corpus's text where the run did
    (tmp_path / "docs" / "doc3.md").write_text("Document 3. " + "Evaluation order decides side effects. " * 400)
    cfg.models.default.max_document_tokens = 200
    run_dir = run(cfg, tmp_path, Plan("agentic", AGENTIC, ACCEPT))
    statuses = {r["document_id"]: r["status"] for r in read_jsonl(run_dir / "documents.jsonl")}
    assert statuses == {"doc0": "accepted", "doc1": "exhausted", "doc2": "accepted", "doc3": "accepted"}
    templates = assert_every_call_renders(run_dir)
    assert set(templates) == {"challenger", "qv", "solver", "judge", "feedback"}
    # doc1's round 3 writer heard of both earlier failures: the rebuilt history is the one the loop used
    prompt = render_call(run_dir, "doc1", 3, "challenger")[-1]["content"]
    assert "qv said FAIL" in prompt and "DIAGNOSIS of [d1 r2 c0]" in prompt
    cut = [c["prompt"]["document"] for r, c in calls(run_dir) if r["document_id"] == "doc3" and c["step"] == "qv"]
    assert cut[0]["chars"] < len((tmp_path / "docs" / "doc3.md").read_text())
    # Calls without the document: judges, weak solvers, feedback, and the strong solver by default
    refs = {c["step"].split("/")[0]: c["prompt"]["document"] is not None for _, c in calls(run_dir)}
    assert refs == {"challenger": True, "qv": True, "weak": False, "strong": False, "judge": False,
                    "feedback": False}


def test_two_challengers_and_a_strong_solver_that_reads_the_document(tmp_path):
    behaviour = {
        # round 1: writer 0 fails QV, writer 1 passes and is too easy
        (0, 1, 0): {"qv": "FAIL"}, (0, 1, 1): {"weak": "GOOD"},
        # round 2: neither passes (malformed, QV); round 3: writer 0 accepted
        (0, 2, 0): {"malformed": True}, (0, 2, 1): {"qv": "FAIL"},
        (1, 1, 1): {"qv": "FAIL"},
    }
    cfg = make_cfg(tmp_path, n_docs=2, challengers_per_round=2, strong_sees_document=True)
    run_dir = run(cfg, tmp_path, Plan("agentic", behaviour, ACCEPT))
    rounds = {(r["document_id"], r["round"]): r for r in read_jsonl(run_dir / "rounds.jsonl")}
    assert rounds["doc0", 1]["challenger_index"] == 1 and rounds["doc0", 2]["challenger_index"] is None
    assert rounds["doc0", 3]["status"] == "accepted"
    templates = assert_every_call_renders(run_dir)
    assert templates["challenger"] == 8 and templates["qv"] == 7
    strong = [c for _, c in calls(run_dir) if c["step"].startswith("strong/")]
    assert strong and all(c["prompt"]["document"] is not None for c in strong)
    # Round 3's writers heard of round 1's failed writer, its too-easy task and both of round 2's failures
    prompt = render_call(run_dir, "doc0", 3, "challenger/1")[-1]["content"]
    assert all(mark in prompt for mark in ("[d0 r1 c0]", "[d0 r1 c1]", "[d0 r2 c1]"))


def test_every_cot_call_renders_again(tmp_path):
    cfg = make_cfg(tmp_path, n_docs=2)
    cfg.method.name = "cot"
    run_dir = run(cfg, tmp_path, Plan("cot", {(1, 1, 0): {"weak": "GOOD"}}, ACCEPT))
    templates = assert_every_call_renders(run_dir)
    assert templates["challenger_cot"] == 2 and "challenger" not in templates


def test_legal_extractor_and_loop_judge_render_again(tmp_path):
    cfg = legal_cfg(tmp_path, "loop_judge")
    cfg.generate = replace(cfg.generate, max_rounds=2)
    run_dir = run(cfg, tmp_path, legal_script("improve"))
    templates = assert_every_call_renders(run_dir)
    assert templates["extractor"] == 1 and templates["loop_judge"] == 2 and templates["feedback"] == 2


def test_full_mode_keeps_the_messages_beside_the_reference(tmp_path):
    cfg = make_cfg(tmp_path, n_docs=1, prompts_in_rounds="full")
    run_dir = run(cfg, tmp_path, Plan("agentic", AGENTIC, ACCEPT))
    renderer = RunRenderer(run_dir)
    for row, call in calls(run_dir):
        assert call["messages"] == renderer.render(row["document_id"], row["round"], call["step"])
    assert REPEATED in (run_dir / "rounds.jsonl").read_text()


def test_a_prompt_that_no_longer_renders_to_what_was_sent_is_named(tmp_path):
    run_dir = run(make_cfg(tmp_path, n_docs=1, max_rounds=1), tmp_path, Plan("agentic", {}, ACCEPT))
    rows = list(read_jsonl(run_dir / "rounds.jsonl"))
    rows[0]["calls"][1]["prompt"]["sha256"] = "0" * 64
    (run_dir / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    step = rows[0]["calls"][1]["step"]
    with pytest.raises(TrajectoryError, match=rf"call '{step}' of document 'doc0' round 1 .* changed since the run"):
        render_call(run_dir, "doc0", 1, step)
    # A corpus edited since the run: the document's hash says so before any prompt is rendered
    (tmp_path / "docs" / "doc0.md").write_text("Document 0. Something else entirely. " * 20)
    with pytest.raises(TrajectoryError, match="is not the text the run sent"):
        render_call(run_dir, "doc0", 1, "challenger")


def test_show_prints_a_call_lists_calls_and_exits_2_on_a_bad_step(tmp_path, capsys):
    run_dir = str(run(make_cfg(tmp_path, n_docs=1, max_rounds=1), tmp_path, Plan("agentic", {}, ACCEPT)))
    assert show([run_dir, "doc0", "1", "qv"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("system: ") and "[d0 r1 c0]" in out and "Document 0." in out
    assert show([run_dir, "doc0", "1", "judge/weak/0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[-1]["role"] == "user"
    assert show([run_dir, "doc0", "1"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:3] == ["step", "role", "template"] and listing[1].split()[:3] == [
        "challenger", "challenger", "challenger"]
    assert show([run_dir, "doc0"]) == 0 and capsys.readouterr().out.startswith("round 1: accepted")
    assert show([run_dir, "doc0", "1", "nope"]) == 2
    err = capsys.readouterr().err
    assert "has no call 'nope'" in err and "judge/strong/0" in err
    assert show([run_dir, "doc9", "1", "qv"]) == 2 and "has no row" in capsys.readouterr().err
    assert show([run_dir, "doc0", "7", "qv"]) == 2 and "has no round 7; its rounds: 1" in capsys.readouterr().err


def test_prompts_in_rounds_is_validated():
    from autodata.generate.checks import check_generate

    cfg = RootConfig(stage="generate")
    cfg.generate.prompts_in_rounds = "some"
    problems = [p for p in check_generate(cfg) if p.key == "generate.prompts_in_rounds"]
    assert problems and "must be one of ref, full" in str(problems[0].rule)
