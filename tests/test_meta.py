"""stage=meta_optimize with a scripted backend: the outer loop's logic, its guards and its files."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from autodata.cache import ResponseCache
from autodata.config import RootConfig
from autodata.domains import build_domain
from autodata.generate import generate
from autodata.meta.edits import Edit, EditRejected, apply_diff, apply_edit, make_diff
from autodata.meta.population import PopulationError
from autodata.meta.sampling import boltzmann_pick, boltzmann_probabilities
from autodata.meta.stage import optimize
from autodata.rundir import read_jsonl
from autodata.validation import InputError
from autodata.variants import VariantError, knob_values, read_folder
from tests.scripted import cs_task, last_user, scripted_llm, verdicts

N_POS, N_NEG = 8, 3
N = N_POS + N_NEG
MARK = "HARDER-TASKS: ask for what only careful reasoning gets right."
CHALLENGER = build_domain(RootConfig().domain).editable_sources()["challenger"]
HARDER = CHALLENGER.replace("{{ rules.output_shape() }}", MARK + "\n{{ rules.output_shape() }}")


def make_cfg(tmp_path: Path, n_docs: int = 4, **meta) -> RootConfig:
    cfg = RootConfig(stage="meta_optimize")
    docs = tmp_path / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        (docs / f"doc{i}.md").write_text(f"Document {i}. " + "Boolean operators short-circuit in Python. " * 20)
    cfg.corpus.source, cfg.corpus.path = "folder", str(docs)
    cfg.progress = False
    cfg.generate.max_rounds = 1
    cfg.meta.iterations = 2
    cfg.meta.concurrency = 1
    cfg.meta.train_documents = 2
    cfg.meta.validation_documents = 2
    cfg.meta.minibatch_size = 1
    for key, value in meta.items():
        setattr(cfg.meta, key, value)
    return cfg


def diff_edit(old: str = CHALLENGER, new: str = HARDER, template: str = "challenger") -> str:
    return json.dumps({"rationale": "tasks are too easy", "template": template, "mode": "diff",
                       "text": make_diff(old, new, template), "knobs": []})


class World:
    """A scripted world: a challenger prompt carrying MARK makes tasks the weak solver fails and the strong
    solver passes; without it every task is too easy."""

    def __init__(self, implementer=None, analyzer=None, weak_on_hard: str = "BAD"):
        # What the weak solver says to a HARDER task (a refusal: the child "wins" by breaking the weak solver)
        self.weak_on_hard = weak_on_hard
        self.implementer = implementer or (lambda call: diff_edit())
        self.analyzer = analyzer or (lambda call: json.dumps({
            "analysis": "Every task is too easy: the weak model solves it.", "target": "challenger",
            "proposal": "Ask for tasks that need careful reasoning."}))
        self.agent_prompts: list[str] = []

    def __call__(self, role: str, request, call: int):
        text = last_user(request)
        if role == "challenger":
            question = "Predict HARDER the result of the expression." if MARK in text else None
            return cs_task(question) if question else cs_task()
        if role == "quality_verifier":
            return json.dumps({"verdict": "PASS", "feedback": "fine"})
        if role == "weak_solver":
            return [self.weak_on_hard if "HARDER" in text else "GOOD"] * request.n
        if role == "strong_solver":
            return ["GOOD"] * request.n
        if role == "judge":
            return verdicts(N, N_POS if "GOOD" in text else 0, N_POS)
        if role == "feedback":
            return "The weak model solved it: the idea is general knowledge."
        self.agent_prompts.append(" ".join(m["content"] for m in request.messages))
        if role == "analyzer":
            return self.analyzer(call)
        if role == "implementer":
            return self.implementer(call)
        raise AssertionError(role)


def run(cfg: RootConfig, tmp_path: Path, world: World):
    cache = ResponseCache(tmp_path / "run" / "cache.sqlite")
    llm, backends = scripted_llm(cfg.models, world, cache=cache)
    try:
        summary = asyncio.run(optimize(cfg, tmp_path / "run", llm=llm))
    finally:
        cache.close()
    return summary, backends


def history(tmp_path: Path) -> list[dict]:
    return list(read_jsonl(tmp_path / "run" / "history.jsonl"))


def test_an_iteration_keeps_a_strictly_better_child_and_exports_it(tmp_path):
    summary, backends = run(make_cfg(tmp_path, parent_reeval="cached"), tmp_path, World())
    rows = history(tmp_path)
    assert [r["iteration"] for r in rows] == [1, 2]
    first = rows[0]
    assert first["kept"] and first["parent_score"] == 0.0 and first["child_score"] == 1.0
    assert first["analysis"]["target"] == "challenger" and MARK in first["diff"]
    # The parent's stored score was re-measured from the cache: no model call, same number
    assert first["parent_recheck"] == {"score": 0.0, "matches": True, "model_calls": 0,
                                       "cached_calls": first["parent_recheck"]["cached_calls"], "cache_share": 1.0}
    assert first["parent_recheck"]["cached_calls"] > 0
    # Iteration 2 drew the child (exp(10) times likelier) and the same diff no longer applies to it
    assert rows[1]["parent"] == first["child"] and rows[1]["rejection"] == "invalid_edit"
    population = list(read_jsonl(tmp_path / "run" / "population.jsonl"))
    assert [p["id"] for p in population] == [first["parent"], first["child"]]
    assert population[1]["lineage"] == [first["parent"]] and "challenger" in population[1]["diffs"]
    assert summary["kept"] == 1 and summary["best_score"] == 1.0 and summary["baseline_score"] == 0.0
    assert (tmp_path / "run" / "score.png").stat().st_size > 0
    best = tmp_path / "run" / "best"
    assert MARK in (best / "templates" / "challenger.j2").read_text()
    assert json.loads((best / "variant.json").read_text())["id"] == first["child"]

    # generate takes the exported folder with one override, and its rows carry the variant's hash
    gen = make_cfg(tmp_path)
    gen.stage = "generate"
    gen.domain.variant = str(best)
    llm, _ = scripted_llm(gen.models, World())
    stats = asyncio.run(generate(gen, tmp_path / "gen", llm=llm))
    assert stats["accepted"] == 4 and stats["variant"]["id"] == first["child"]
    assert {r["variant"] for r in read_jsonl(tmp_path / "gen" / "accepted.jsonl")} == {first["child"]}


def test_an_equal_score_is_rejected(tmp_path):
    qv = build_domain(RootConfig().domain).editable_sources()["qv"]
    edit = diff_edit(qv, qv.replace("Be strict", "Be very strict"), "qv")
    run(make_cfg(tmp_path, iterations=1), tmp_path, World(implementer=lambda call: edit))
    row = history(tmp_path)[0]
    assert row["child_score"] == row["parent_score"] == 0.0
    assert not row["kept"] and row["rejection"] == "not_better" and "strictly" in row["reason"]
    assert len(list(read_jsonl(tmp_path / "run" / "population.jsonl"))) == 1


def test_validation_documents_never_reach_the_agents(tmp_path):
    world = World()
    run(make_cfg(tmp_path, n_docs=6, train_documents=3, validation_documents=3), tmp_path, world)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert not set(split["train"]) & set(split["validation"])
    assert world.agent_prompts
    for doc_id in split["validation"]:
        number = re.search(r"\d+", doc_id).group(0)
        for prompt in world.agent_prompts:
            assert f"Document {number}." not in prompt and doc_id not in prompt


@pytest.mark.parametrize("edit, reason", [
    (Edit("solver", "replace", "{% block user %}Answer badly: {{ task.question }}{% endblock %}"), "protected"),
    (Edit("judge", "replace", "{% block user %}x{% endblock %}"), "protected"),
    (Edit("macros", "replace", "{% block user %}x{% endblock %}"), "protected"),
    (Edit("", "none", "", {"strong_min": 0.1}), "not an editable knob"),
    (Edit("", "none", "", {"min_gap": 0.9}), "not an editable knob"),
    (Edit("", "none", "", {"rubric_min": 20}), "invalid"),
    (Edit("challenger", "replace", CHALLENGER.replace('{{ document | fence("document") }}', "")), "no longer shows document"),
    (Edit("challenger", "replace", CHALLENGER.replace('{{ document | fence("document") }}', "{{ document }}")),
     "outside its data fence"),
    (Edit("challenger", "replace", CHALLENGER.replace("{{ rules.output_shape() }}", "{{ secret_variable }}")),
     "fails to render"),
    (Edit("challenger", "replace", CHALLENGER.replace("{{ rules.output_shape() }}",
                                                       "{{ ''.__class__.__mro__[1].__subclasses__() }}")),
     "fails to render"),
    (Edit("challenger", "replace", CHALLENGER + "{% for i in range(99999) %}x{% endfor %}"), "range"),
    (Edit("qv", "replace", "{% block system %}only a system block{% endblock %}"), "do not compile"),
])
def test_guards_reject_before_any_call(edit, reason):
    cfg = RootConfig(stage="meta_optimize")
    domain = build_domain(cfg.domain)
    with pytest.raises(EditRejected, match=reason) as err:
        apply_edit(cfg, domain.editable_sources(), knob_values(cfg.domain), edit, domain.editable_templates,
                   domain.protected_templates)
    assert err.value.kind in ("guard", "invalid_edit")


def test_a_guarded_edit_is_logged_and_costs_no_validation_call(tmp_path):
    bad = json.dumps({"rationale": "make the weak model fail", "template": "challenger", "mode": "replace",
                      "text": "{% block user %}Write anything.{% endblock %}", "knobs": []})
    _, backends = run(make_cfg(tmp_path, iterations=1), tmp_path, World(implementer=lambda call: bad))
    row = history(tmp_path)[0]
    assert row["rejection"] == "guard" and "no longer shows document" in row["reason"]
    assert row["child"] is None and not (tmp_path / "run" / "variants").joinpath("x").exists()
    # baseline scoring (2 docs) and the minibatch (1 doc): three challenger calls, none for a child
    assert len(backends["challenger"].requests) == 3


def test_knob_edits_are_typed_and_whitelisted():
    cfg = RootConfig(stage="meta_optimize")
    domain = build_domain(cfg.domain)
    templates, knobs = apply_edit(cfg, domain.editable_sources(), knob_values(cfg.domain),
                                  Edit("", "none", "", {"positive_only": "true", "max_weight": "7"}),
                                  domain.editable_templates, domain.protected_templates)
    assert knobs["positive_only"] is True and knobs["max_weight"] == 7 and templates == domain.editable_sources()


def test_boltzmann_frequencies_match_the_distribution():
    scores, temperature = [0.40, 0.45, 0.50, 0.62], 0.1
    expected = boltzmann_probabilities(scores, temperature)
    rng = random.Random(1234)
    draws = 40_000
    counts = Counter(boltzmann_pick(scores, temperature, rng) for _ in range(draws))
    for i, p in enumerate(expected):
        sd = (p * (1 - p) / draws) ** 0.5
        assert abs(counts[i] / draws - p) < 4 * sd, (i, counts[i] / draws, p)
    # exp(s/T) normalised, by hand
    import math
    weights = [math.exp(s / temperature) for s in scores]
    assert expected == pytest.approx([w / sum(weights) for w in weights])


def test_diff_round_trip_and_offset_hunks():
    old = "a\nb\nc\nd\ne\n"
    new = "a\nb\nX\nd\ne\n"
    diff = make_diff(old, new, "qv")
    assert apply_diff(old, diff) == new
    shifted = diff.replace("@@ -1,5 +1,5 @@", "@@ -9,5 +9,5 @@")
    assert apply_diff(old, shifted) == new
    with pytest.raises(ValueError, match="hunk 1 does not match"):
        apply_diff("something else\n", diff)


def test_invalid_implementer_output_and_empty_analysis_are_recorded_and_the_run_goes_on(tmp_path):
    # The analyzer says nothing in iteration 1 (its answer and the repair), the implementer never gives JSON
    run(make_cfg(tmp_path, iterations=2), tmp_path,
        World(implementer=lambda call: "not json at all", analyzer=lambda call: json.dumps(
            {"analysis": "", "target": "challenger", "proposal": ""}) if call <= 2 else json.dumps(
            {"analysis": "too easy", "target": "challenger", "proposal": "harder"})))
    rows = history(tmp_path)
    assert [r["rejection"] for r in rows] == ["no_analysis", "invalid_edit"]
    assert "no analysis" in rows[0]["reason"] and "not a valid edit" in rows[1]["reason"]


def test_too_few_documents_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"has 2 usable documents.*need 3"):
        run(make_cfg(tmp_path, n_docs=2), tmp_path, World())
    assert not (tmp_path / "run" / "population.jsonl").exists()


def test_a_population_of_another_domain_is_refused_untouched(tmp_path):
    run(make_cfg(tmp_path, iterations=1), tmp_path, World())
    path = tmp_path / "run" / "population.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["domain"] = "legal"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = path.read_text()
    with pytest.raises(InputError, match="belongs to domain 'legal'"):
        run(make_cfg(tmp_path, iterations=2), tmp_path, World())
    assert path.read_text() == before and len(history(tmp_path)) == 1


def test_a_population_of_another_version_is_refused(tmp_path):
    run(make_cfg(tmp_path, iterations=1), tmp_path, World())
    path = tmp_path / "run" / "population.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["format"] = 99
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match="format 99"):
        run(make_cfg(tmp_path, iterations=2), tmp_path, World())


def test_resume_keeps_finished_iterations_and_pays_nothing_twice(tmp_path):
    run(make_cfg(tmp_path, iterations=1), tmp_path, World())
    world = World()
    summary, backends = run(make_cfg(tmp_path, iterations=2), tmp_path, world)
    assert [r["iteration"] for r in history(tmp_path)] == [1, 2]
    assert summary["baseline_score"] == 0.0 and summary["best_score"] == 1.0 and summary["iterations"] == 2
    # Only iteration 2 asked the agents; the baseline was not scored again
    assert len(backends["analyzer"].requests) == 1 and len(backends["implementer"].requests) == 1


def test_an_unfinished_iteration_is_redone_from_the_cache(tmp_path):
    cfg = make_cfg(tmp_path, iterations=1)
    run(cfg, tmp_path, World())
    # Forget that iteration 1 finished (as a kill after its calls, before its history row, would)
    (tmp_path / "run" / "history.jsonl").write_text("")
    (tmp_path / "run" / "population.jsonl").write_text(
        (tmp_path / "run" / "population.jsonl").read_text().splitlines()[0] + "\n")
    _, backends = run(cfg, tmp_path, World())
    assert [r["iteration"] for r in history(tmp_path)] == [1] and history(tmp_path)[0]["kept"]
    assert sum(len(b.requests) for b in backends.values()) == 0


def test_a_variant_folder_may_not_carry_a_protected_template(tmp_path):
    folder = tmp_path / "v"
    (folder / "templates").mkdir(parents=True)
    (folder / "templates" / "solver.j2").write_text("{% block user %}fail{% endblock %}")
    (folder / "knobs.yaml").write_text("max_weight: 7\n")
    (folder / "variant.json").write_text(json.dumps({"format": 1, "domain": "cs"}))
    with pytest.raises(VariantError, match="solver.j2 is not an editable template"):
        read_folder(folder, "cs", ("challenger", "qv"))


def test_concurrent_iterations_each_draw_from_the_population_as_it_stands(tmp_path):
    # One at a time, iteration 2 is planned after iteration 1 finished and sees it; two in flight, it is planned
    # while iteration 1 runs: it sees no history and draws from the baseline-only population.
    run(make_cfg(tmp_path / "serial", iterations=2, concurrency=1), tmp_path / "serial", World())
    run(make_cfg(tmp_path / "parallel", iterations=2, concurrency=2), tmp_path / "parallel", World())
    plan = lambda root: json.loads((root / "run" / "iterations" / "2" / "plan.json").read_text())  # noqa: E731
    assert plan(tmp_path / "serial")["history"] == [1]
    parallel = plan(tmp_path / "parallel")
    assert parallel["history"] == [] and parallel["parent"] == history(tmp_path / "parallel")[0]["parent"]
    # The same edit of the same parent makes the same child: one iteration scores and keeps it, the other is its
    # duplicate (tests/test_rundir_safety.py has the case where both are in flight at once)
    rows = history(tmp_path / "parallel")
    assert sorted(r["kept"] for r in rows) == [False, True]
    assert [r["rejection"] for r in rows if not r["kept"]] == ["duplicate"]


def test_meta_logs_each_iteration_to_an_offline_wandb_run(tmp_path, monkeypatch):
    from tests.wandb_offline import read_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg(tmp_path, iterations=2)
    cfg.logger = "wandb"
    run(cfg, tmp_path, World())
    summary, logged = read_run(tmp_path / "run")
    assert [h["meta/child_score"] for h in logged if "meta/child_score" in h] == [1.0]
    assert [h["meta/best_score"] for h in logged if "meta/best_score" in h] == [1.0, 1.0]
    assert summary["meta/kept"] == 1 and summary["meta/best_score"] == 1.0


def test_a_child_already_in_the_population_is_not_added_twice(tmp_path):
    # Iteration 2 reverts the first edit, making the baseline again
    edits = {1: diff_edit(), 2: diff_edit(HARDER, CHALLENGER)}
    run(make_cfg(tmp_path, iterations=2), tmp_path, World(implementer=lambda call: edits[min(call, 2)]))
    rows = history(tmp_path)
    assert rows[0]["kept"] and rows[1]["rejection"] == "duplicate" and rows[1]["child"] == rows[0]["parent"]
    assert len(list(read_jsonl(tmp_path / "run" / "population.jsonl"))) == 2


@pytest.mark.parametrize("reject_flagged", [True, False])
def test_a_child_that_wins_by_weak_refusals_is_flagged(tmp_path, reject_flagged):
    world = World(weak_on_hard="I'm sorry, but I can't help with that.")
    summary, _ = run(make_cfg(tmp_path, iterations=1, reject_flagged=reject_flagged), tmp_path, world)
    row = history(tmp_path)[0]
    # The pass rate rose (0 -> 1), but every weak answer is now a refusal
    assert row["child_score"] == 1.0 and row["parent_score"] == 0.0
    assert row["flags"] == ["weak refusals rose 0% -> 100%"]
    assert row["validation"]["monitor"]["weak_refusal_share"] == 1.0
    assert summary["flagged"] == 1
    if reject_flagged:
        assert not row["kept"] and row["rejection"] == "flagged" and "sabotage monitor" in row["reason"]
    else:
        assert row["kept"]


def test_meta_module_doctests():
    import doctest

    import autodata.meta.agents
    import autodata.meta.edits
    import autodata.meta.population
    import autodata.meta.sampling
    import autodata.variants

    for module in (autodata.meta.agents, autodata.meta.edits, autodata.meta.population, autodata.meta.sampling,
                   autodata.variants):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
