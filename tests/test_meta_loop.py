"""The outer loop in full: what the analyzer and implementer read, multi-template edits, and fresh parent
re-evaluation (meta.parent_reeval), on the scripted backend of tests/test_meta.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from autodata.cache import ResponseCache
from autodata.config import RootConfig
from autodata.domains import build_domain
from autodata.meta.agents import exchange_digest
from autodata.meta.edits import Change, Edit, EditRejected, apply_edit, make_diff, parse_edit
from autodata.meta.stage import optimize
from autodata.rundir import read_jsonl
from autodata.variants import knob_values
from tests.scripted import scripted_llm
from tests.test_meta import CHALLENGER, HARDER, MARK, World, history, make_cfg

QV = build_domain(RootConfig().domain).editable_sources()["qv"]
STRICTER = QV.replace("Be strict", "Be very strict")


def run(cfg, tmp_path, world, analyzer_context=None):
    cache = ResponseCache(tmp_path / "run" / "cache.sqlite")
    llm, backends = scripted_llm(cfg.models, world, cache=cache)
    backends["analyzer"].context = analyzer_context
    try:
        summary = asyncio.run(optimize(cfg, tmp_path / "run", llm=llm))
    finally:
        cache.close()
    return summary, backends


def agents(tmp_path, n: int) -> dict:
    return json.loads((tmp_path / "run" / "iterations" / str(n) / "agents.json").read_text())


def prompt(record: dict) -> str:
    return "\n".join(m["content"] for m in record["messages"])


def two_templates(qv_new: str = STRICTER, challenger: str = "") -> str:
    first = ({"template": "challenger", "mode": "replace", "text": challenger} if challenger else
             {"template": "challenger", "mode": "diff", "text": make_diff(CHALLENGER, HARDER, "challenger")})
    return json.dumps({"rationale": "harder tasks, stricter checks", "templates": [first,
        {"template": "qv", "mode": "replace", "text": qv_new}], "knobs": [{"name": "max_weight", "value": "6"}]})


def test_the_analyzer_reads_full_exchanges_and_the_implementer_history_and_every_template(tmp_path):
    run(make_cfg(tmp_path, iterations=2, parent_reeval="none"), tmp_path, World())
    first, second = agents(tmp_path, 1), agents(tmp_path, 2)
    analyzer = prompt(first["analyzer"])
    # Each round's question, reference answer, rubric, the solvers' answers with per-criterion verdicts, the QV
    # verdict and the diagnosis
    for shown in ("question: Predict the result", "reference answer: It evaluates to False",
                  "[1] (+5) States consequence 0 of the rule", "weak answer 1 (score",
                  "verdicts: [1] met", "not met", "quality verifier: PASS", "diagnosis: The weak model solved it"):
        assert shown in analyzer, shown
    assert first["trajectory_budget"]["source"].startswith("meta.trajectory_chars")
    # Iteration 2's parent (the kept child) makes tasks the weak solver fails: the strong solver answers too
    assert "strong answer 1 (score" in prompt(second["analyzer"])
    implementer = prompt(second["implementer"])
    # The history of iteration 1 (kept, with its idea) and the text of every editable template, fenced
    assert "iteration 1: edit challenger: kept" in implementer
    sources = build_domain(RootConfig().domain).editable_sources()
    for name in build_domain(RootConfig().domain).editable_templates:
        assert f"{name}.j2" in implementer, name
    assert implementer.count("<template>") == len(sources)
    assert MARK in implementer  # the parent of iteration 2 is the kept child: its text, not the baseline's


def test_the_analyzer_budget_follows_its_context_and_says_what_was_cut(tmp_path):
    cfg = make_cfg(tmp_path, iterations=1, parent_reeval="none")
    max_tokens = RootConfig().models.default.max_tokens
    # Room for nothing but the prompt and the answer: every round is left out, and the prompt says so
    run(cfg, tmp_path, World(), analyzer_context=max_tokens + 10)
    record = agents(tmp_path, 1)
    budget = record["trajectory_budget"]
    assert budget["chars"] == 0 and "context tokens (reported by scripted:analyzer)" in budget["source"]
    assert "1 of 1 rounds left out" in budget["cut"]
    assert "Not everything fit in your context: 1 of 1 rounds left out" in prompt(record["analyzer"])


def test_exchange_digest_cuts_the_least_informative_rounds_first():
    task = {"question": "Q?", "reference_answer": "A", "rubric": [{"criterion": "c", "weight": 5}]}
    rows = [{"document_id": "d1", "round": 1, "status": "rejected", "reason": "malformed", "detail": "no JSON"},
            {"document_id": "d1", "round": 2, "status": "rejected", "reason": "too_easy", "task": task,
             "weak": [{"answer": "A " * 200, "met": [True], "score": 1.0}]}]
    full, cut = exchange_digest(rows, 100_000)
    assert cut == "" and "weak answer 1" in full
    small, cut = exchange_digest(rows, len(full) - 50)
    # The malformed round goes first; the solver exchange stays whole
    assert "weak answer 1" in small and "malformed" not in small and cut.startswith("1 of 2 rounds left out")


def test_a_multi_template_edit_is_applied_whole():
    cfg = RootConfig(stage="meta_optimize")
    domain = build_domain(cfg.domain)
    edit = parse_edit(json.loads(two_templates()), domain.editable_templates)
    assert [c.template for c in edit.changes] == ["challenger", "qv"]
    templates, knobs = apply_edit(cfg, domain.editable_sources(), knob_values(cfg.domain), edit,
                                  domain.editable_templates, domain.protected_templates)
    assert MARK in templates["challenger"] and "Be very strict" in templates["qv"] and knobs["max_weight"] == 6
    # An older row's single-template form still reads
    old = parse_edit({"template": "qv", "mode": "replace", "text": STRICTER}, domain.editable_templates)
    assert [c.template for c in old.changes] == ["qv"] and old.row()["template"] == "qv"


@pytest.mark.parametrize("bad, reason", [
    (Change("qv", "replace", QV.replace('{{ document | fence("document") }}', "")), "no longer shows document"),
    (Change("judge", "replace", "{% block user %}x{% endblock %}"), "protected"),
    (Change("qv", "diff", "@@ -1,1 +1,1 @@\n-not in the text\n+x\n"), "does not apply"),
])
def test_one_failing_part_rejects_the_whole_edit(bad, reason):
    cfg = RootConfig(stage="meta_optimize")
    domain = build_domain(cfg.domain)
    edit = Edit.of([Change("challenger", "replace", HARDER), bad], {"max_weight": 6})
    with pytest.raises(EditRejected, match=reason):
        apply_edit(cfg, domain.editable_sources(), knob_values(cfg.domain), edit, domain.editable_templates,
                   domain.protected_templates)


def test_a_run_keeps_a_multi_template_child_and_refuses_one_with_a_bad_part(tmp_path):
    good = two_templates()
    # Iteration 2: a good change of the challenger beside a qv.j2 that shows the document unfenced
    bad = two_templates(QV.replace('{{ document | fence("document") }}', "{{ document }}"),
                        HARDER.replace(MARK, MARK + " Name the rule."))
    run(make_cfg(tmp_path, iterations=2, parent_reeval="none"), tmp_path,
        World(implementer=lambda call: bad if call > 1 else good))
    first, second = history(tmp_path)
    assert first["kept"] and first["edit"]["templates"][1]["template"] == "qv"
    population = list(read_jsonl(tmp_path / "run" / "population.jsonl"))
    assert set(population[1]["diffs"]) == {"challenger", "qv"} and population[1]["knobs"]["max_weight"] == 6
    assert second["rejection"] == "guard" and "qv.j2" in second["reason"] and second["child"] is None


class Lucky(World):
    """The baseline's first validation run is unlucky (too easy everywhere); any later run of it (fresh seeds)
    gets hard tasks: its mean moves from 0 to 0.5."""

    def __init__(self):
        super().__init__()
        self.plain_challenges = 0

    def __call__(self, role, request, call):
        text = request.messages[-1]["content"]
        if role == "challenger" and MARK not in text:
            self.plain_challenges += 1
            # 2 validation documents, then 1 minibatch document; the rest are re-evaluations
            if self.plain_challenges > 3:
                from tests.scripted import cs_task
                return cs_task("Predict HARDER the result of the expression.")
        return super().__call__(role, request, call)


def test_fresh_parent_reeval_makes_new_calls_and_stores_the_mean(tmp_path):
    summary, backends = run(make_cfg(tmp_path, iterations=1), tmp_path, Lucky())
    row = history(tmp_path)[0]
    again = row["parent_reeval"]
    assert again["model_calls"] > 0 and again["cached_calls"] == 0 and again["score"] == 1.0
    assert again["score_before"] == 0.0 and again["mean"] == 0.5 and again["evaluations"] == 2
    # The child (1.0) is compared with the mean (0.5), and kept
    assert row["parent_score"] == 0.5 and row["kept"]
    # baseline 2 + minibatch 1 + child 2 + fresh parent 2 challenger calls
    assert len(backends["challenger"].requests) == 7
    assert summary["parent_reevals"]["count"] == 1 and summary["parent_reevals"]["model_calls"] > 0
    assert summary["parent_reeval"] == "fresh" and "documents" in summary["score_definition"]
    # On resume the mean is rebuilt from history.jsonl; the resumed run makes no call
    cfg = make_cfg(tmp_path, iterations=1)
    _, again_backends = run(cfg, tmp_path, Lucky())
    assert sum(len(b.requests) for b in again_backends.values()) == 0
    from autodata.meta.stage import MetaOptimizer
    from autodata.corpus import load_corpus
    from tests.scripted import scripted_llm as make
    optimizer = MetaOptimizer(cfg, tmp_path / "run", make(cfg.models, World())[0], None)
    optimizer.load(load_corpus(cfg.corpus)[0])
    assert optimizer.population[0].score == 0.5 and optimizer.population[0].evaluations == [0.0, 1.0]


def test_cached_parent_reeval_makes_no_call(tmp_path):
    _, backends = run(make_cfg(tmp_path, iterations=1, parent_reeval="cached"), tmp_path, Lucky())
    row = history(tmp_path)[0]
    assert "parent_reeval" not in row and row["parent_recheck"]["model_calls"] == 0
    assert len(backends["challenger"].requests) == 5


def test_the_orchestrators_instructions_are_editable_and_follow_strong_sees_document():
    from autodata.acceptance import FailureReason
    from autodata.config import GenerateConfig
    from autodata.domains import FailedAttempt

    cfg = RootConfig(stage="meta_optimize")
    domain = build_domain(cfg.domain)
    assert "_attempts" in domain.editable_templates and "macros" in domain.protected_templates
    sources = domain.editable_sources()
    assert "ENTIRELY NEW" in sources["_attempts"] and "ENTIRELY NEW" not in domain.prompts.source("macros")
    # The instruction to write a new question from another angle is the harness's to evolve
    edit = Edit("_attempts", "replace", sources["_attempts"].replace("ENTIRELY NEW question", "COMPLETELY "
                                                                     "DIFFERENT question"))
    templates, _ = apply_edit(cfg, sources, knob_values(cfg.domain), edit, domain.editable_templates,
                              domain.protected_templates)
    assert "COMPLETELY DIFFERENT" in templates["_attempts"]
    history = [FailedAttempt(1, FailureReason.FAILED_ON_STRONG, "Q?", "ambiguous", 0.1, 0.2)]
    hidden = domain.challenger_messages("doc", history, "agentic")[-1]["content"]
    shown = domain.challenger_messages("doc", history, "agentic",
                                       GenerateConfig(strong_sees_document=True))[-1]["content"]
    assert "can read the source" not in hidden and "Even the strong model did not" in hidden
    assert "Even the strong model, which can read the source, did not" in shown


def test_history_rows_of_either_edit_form_read_with_the_reason_for_a_rejection():
    from autodata.meta.agents import history_digest

    old = {"iteration": 1, "kept": False, "rejection": "guard", "reason": "qv.j2 no longer shows document",
           "edit": {"template": "qv", "mode": "replace", "text": "x", "knobs": {}, "rationale": "stricter"}}
    new = {"iteration": 2, "kept": True, "parent_score": 0.5, "child_score": 0.75,
           "edit": {**Edit.of([Change("challenger", "diff", "d"), Change("qv", "replace", "x")],
                              {"max_weight": 6}).row()}}
    text = history_digest([old, new], 10_000)
    assert "iteration 2: edit challenger, qv; knobs max_weight=6: kept; score 0.500 -> 0.750" in text
    assert "iteration 1: edit qv: rejected (guard): qv.j2 no longer shows document; idea: stricter" in text


def test_the_configured_analyzer_context_sets_the_trajectory_budget(tmp_path):
    cfg = make_cfg(tmp_path, iterations=1, parent_reeval="none")
    cfg.models.roles["analyzer"].context_length = 200_000
    run(cfg, tmp_path, World(), analyzer_context=1000)
    budget = agents(tmp_path, 1)["trajectory_budget"]
    # The config wins over what the server reports; 4 characters per token, less the prompt and max_tokens
    assert "200000 context tokens (models.roles.analyzer.context_length)" in budget["source"]
    assert 4 * (200_000 - RootConfig().models.default.max_tokens) - 20_000 < budget["chars"] < 800_000
    assert budget["cut"] == ""
