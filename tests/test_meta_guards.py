"""Guards that hold by construction: hostile template edits, as an implementer would write them, are refused in
under a second, before any model call, and nothing a template does changes the run's objects.

The hostile edits are the three of issue 17 (a QV template that shortens the rubric and clears the run's
recall openers; a challenger that shows the document only when it is short; nested loops that never end) and
variants of each."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

from autodata.config import DomainConfig, RootConfig
from autodata.domains import Criterion, Task, build_domain
from autodata.domains import sandbox
from autodata.domains.sandbox import RenderLimit
from autodata.domains.templating import PromptSet
from autodata.meta.edits import Edit, EditRejected, apply_edit, render_all
from autodata.meta.population import PopulationError, load_population, make_variant
from autodata.meta.stage import MetaOptimizer
from autodata.meta.syntax import compare, read_template
from autodata.variants import VariantError, apply_knobs, knob_values, protected_overrides, read_folder
from tests.test_meta import World, history, make_cfg, run

CFG = RootConfig(stage="meta_optimize")
DOMAIN = build_domain(CFG.domain)
SOURCES = DOMAIN.editable_sources()
CHALLENGER, QV, RULES = SOURCES["challenger"], SOURCES["qv"], SOURCES["_rules"]
FENCED = '{{ document | fence("document") }}'
SHAPE = "{{ rules.output_shape() }}"


def challenger(old: str, new: str) -> Edit:
    assert old in CHALLENGER
    return Edit("challenger", "replace", CHALLENGER.replace(old, new, 1))


def qv_with(extra: str) -> Edit:
    """The packaged QV template with ``extra`` at the end of its user block."""
    head, tail = QV.rsplit("{% endblock %}", 1)
    return Edit("qv", "replace", head + extra + "\n{% endblock %}" + tail)


# name -> (edit, what the recorded reason says)
HOSTILE = {
    # Issue 17, edit 1: shorten the rubric the judge grades, and empty the run's own recall openers
    "issue1_qv_mutates_task_and_config": (qv_with(
        "{% if task.rubric|length > 1 %}{% set _a = task.rubric.pop() %}{% endif %}"
        "{% set _b = cfg.recall_openers.clear() %}"), "unsafe|uses what its parent"),
    # Issue 17, edit 2: the document only when it is short; otherwise an unfenced easy recall question
    "issue2_document_only_when_short": (challenger(
        FENCED, "{% if document|length < 4000 %}" + FENCED + "{% else %}Write an easy recall question about "
        "{{ document }}{% endif %}"), "decides on document|outside its data fence"),
    # Issue 17, edit 3: nested loops that never end
    "issue3_nested_loops": (challenger(
        SHAPE, SHAPE + "{% set r = range %}{% for i in r(100000) %}{% for j in r(100000) %}{% endfor %}"
        "{% endfor %}"), "more than 100000 operations|name range"),
    # Mutation, other ways
    "append": (qv_with("{{ task.tags.append('x') }}"), "unsafe"),
    "update": (qv_with("{{ task.extra.update({'plan': 'x'}) }}"), "unsafe"),
    "attr_filter_pop": (qv_with("{{ (task.rubric|attr('pop'))() }}"), "unsafe"),
    "alias_then_pop": (qv_with("{% set x = task.rubric %}{{ x.pop() }}"), "unsafe"),
    "namespace_holding_the_rubric": (qv_with("{% set ns = namespace(r=task.rubric) %}{% set ns.r = [] %}"),
                                     "namespace"),
    "dunder_escape": (qv_with("{{ cfg.__class__.__init__.__globals__ }}"), "unsafe|fails to render"),
    # Hiding or weakening the document
    "document_only_if_it_contains_x": (challenger(FENCED, "{% if 'x' in document %}" + FENCED + "{% endif %}"),
                                       "decides on document"),
    "document_only_without_history": (challenger(FENCED, "{% if not feedback_groups %}" + FENCED + "{% endif %}"),
                                       "decides on feedback_groups|only under"),
    "document_only_with_history": (challenger(FENCED, "{% if feedback_groups %}" + FENCED + "{% endif %}"),
                                   "only under if feedback_groups"),
    "document_inside_a_loop": (challenger(FENCED, "{% for g in feedback_groups %}" + FENCED + "{% endfor %}"),
                               "only under for feedback_groups"),
    "fence_removed": (challenger(FENCED, "{{ document }}"), "outside its data fence"),
    "document_truncated": (challenger(FENCED, '{{ document | truncate(100) | fence("document") }}'),
                           "no longer shows document"),
    "instructions_chosen_by_the_document": (challenger(
        SHAPE, "{{ 'Ask an easy recall question.' if document|length > 4000 else '' }}" + SHAPE),
        "shows document in a way its parent does not"),
    "document_shadowed_by_a_macro_parameter": (challenger(
        FENCED, "{% macro f(document) %}{{ document|fence('document') }}{% endmacro %}{{ f('nothing') }}"),
        "no longer shows document"),
    "document_behind_a_new_rules_macro": (Edit(
        "_rules", "replace", RULES + "\n{% macro doc(d) %}{% if d|length < 4000 %}{{ d|fence('document') }}"
        "{% endif %}{% endmacro %}\n"), "uses what its parent"),
    "history_dropped": (challenger("{{ attempts.history(feedback_groups, gen) }}", ""),
                        "no longer shows feedback_groups"),
    # The orchestrator's instructions are editable (_attempts.j2), the data they show is not optional
    "diagnoses_dropped_from_attempts": (Edit("_attempts", "replace", SOURCES["_attempts"].replace(
        "  Why it failed: {{ a.diagnosis }}\n", "")), "no longer shows"),
    # Work and size without end
    "cycler_loop": (challenger(SHAPE, "{% set c = cycler('a', 'b') %}{% for i in [1, 2] %}{{ c.next() }}"
                                      "{% endfor %}" + SHAPE), "cycler"),
    "joiner": (challenger(SHAPE, "{% set j = joiner() %}{{ j() }}" + SHAPE), "joiner"),
    "a_billion_characters": (challenger(SHAPE, '{{ "a" * 10**9 }}' + SHAPE), "1000000000 characters"),
    "a_huge_format_width": (challenger(SHAPE, '{{ "%999999999s" | format(1) }}' + SHAPE), "format"),
    "macro_calls_itself": (challenger(SHAPE, "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}" + SHAPE),
                           "nests calls too deep|calls itself"),
    "nested_ranges": (challenger(SHAPE, "{% for i in range(10**5) %}{% for j in range(10**5) %}{% endfor %}"
                                        "{% endfor %}" + SHAPE), "more than 100000 operations|range"),
    "doubling_text_in_a_macro": (challenger(
        SHAPE, "{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}{{ f('xxxxxxxxxx') }}" + SHAPE),
        "concatenation|nests calls too deep"),
    # Names of what may not be edited
    "protected_name_in_another_case": (Edit("Judge", "replace", "{% block user %}x{% endblock %}"), "protected"),
    "protected_name_with_a_suffix": (Edit("judge.J2", "replace", "{% block user %}x{% endblock %}"), "protected"),
    "a_path_for_a_name": (Edit("../judge", "replace", "{% block user %}x{% endblock %}"), "not an editable template"),
}


def guard(edit: Edit, cfg: RootConfig = CFG) -> None:
    apply_edit(cfg, SOURCES, knob_values(cfg.domain), edit, DOMAIN.editable_templates, DOMAIN.protected_templates)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_edit_is_refused_in_under_a_second_and_changes_nothing(name):
    edit, reason = HOSTILE[name]
    cfg = copy.deepcopy(CFG)
    before = copy.deepcopy(cfg)
    started = time.perf_counter()
    with pytest.raises(EditRejected, match=reason) as err:
        guard(edit, cfg)
    seconds = time.perf_counter() - started
    assert err.value.kind == "guard"
    assert seconds < 1.0, f"{name} took {seconds:.2f} s to refuse"
    # Neither the probe renders nor a mutation attempt reached the run's config
    assert cfg == before


def test_the_guards_let_an_ordinary_edit_through():
    # Rewording and moving the document further down the prompt changes no use of the data
    moved = CHALLENGER.replace(FENCED + "\n", "").replace(SHAPE, "Think hard about what the source implies.\n"
                                                                 + FENCED + "\n" + SHAPE)
    templates, _ = apply_edit(CFG, SOURCES, knob_values(CFG.domain), Edit("challenger", "replace", moved),
                              DOMAIN.editable_templates, DOMAIN.protected_templates)
    assert "Think hard" in templates["challenger"]


def test_hostile_edits_are_logged_in_history_and_never_scored(tmp_path):
    names = list(HOSTILE)
    edits = [json.dumps({"rationale": "make the gap wider", "template": HOSTILE[n][0].template, "mode": "replace",
                         "text": HOSTILE[n][0].text, "knobs": []}) for n in names]
    _, backends = run(make_cfg(tmp_path, iterations=len(names)), tmp_path, World(implementer=lambda c: edits[c - 1]))
    rows = sorted(history(tmp_path), key=lambda r: r["iteration"])
    assert len(rows) == len(names)
    for name, row in zip(names, rows):
        assert row["rejection"] == "guard", (name, row["rejection"], row["reason"])
        assert row["child"] is None and row["child_score"] is None and row["validation"] is None
        assert row["edit"]["text"] == HOSTILE[name][0].text
        assert re.search(HOSTILE[name][1], row["reason"]), (name, row["reason"])
    # Only the baseline was ever scored: the challenger saw the 2 validation documents and the minibatch documents
    # (served from the cache after their first run), never a child's prompt
    minibatch = {d for n in range(1, len(names) + 1)
                 for d in json.loads((tmp_path / "run" / "iterations" / str(n) / "plan.json").read_text())["minibatch"]}
    assert len(backends["challenger"].requests) == 2 + len(minibatch)
    assert [p.name for p in (tmp_path / "run" / "variants").iterdir()] == [rows[0]["parent"]]


def test_the_guard_runs_off_the_event_loop(tmp_path, monkeypatch):
    threads = []
    check = MetaOptimizer.check

    def recording(self, *args):
        threads.append(threading.get_ident())
        return check(self, *args)

    monkeypatch.setattr(MetaOptimizer, "check", recording)
    loop_thread = threading.get_ident()
    run(make_cfg(tmp_path, iterations=1), tmp_path, World())
    assert threads and loop_thread not in threads


# ---------------------------------------------------------------------------------------------- the sandbox
def task() -> Task:
    return Task("Predict x.", "A context.", "x is 3.", [Criterion("States 3", 5, "c"), Criterion("Explains", 3, "c")],
                question_type="prediction", tags=["reasoning"], extra={"plan": "p"})


def prompts(tmp_path: Path, body: str) -> PromptSet:
    (tmp_path / "hostile.j2").write_text("{% block user %}" + body + "{% endblock %}")
    return PromptSet("cs", ["hostile"], str(tmp_path))


@pytest.mark.parametrize("body, error", [
    ("{% set _ = task.rubric.pop() %}", "unsafe"),
    ("{% set _ = cfg.recall_openers.clear() %}", "unsafe"),
    ("{{ task.extra.update({'plan': 'x'}) }}", "unsafe"),
    ("{{ (task.rubric|attr('pop'))() }}", "unsafe"),
    ("{% set x = task.tags %}{{ x.append('y') }}", "unsafe"),
    ("{% for i in range(10**5) %}{% for j in range(10**5) %}{% endfor %}{% endfor %}", "operations"),
    ("{% for a in 'x' * 100000 %}{% for b in 'y' * 100000 %}{% endfor %}{% endfor %}", "operations"),
    ('{{ "a" * 10**9 }}', "characters"),
    ("{{ 2 ** 100000 }}", "bits"),
    ('{{ "x" | center(999999999) }}', "999999999"),
    ('{{ "%999999999s" % 1 }}', "format"),
    ('{{ "{:>999999999}".format(1) }}', "format"),
    ('{{ range(100000) | join("x" * 100000) }}', "join"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "too deep"),
    ("{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}{{ f('xxxxxxxxxx') }}", "concatenation"),
    ("{% for i in range(5) %}{{ document }}{% endfor %}", "rendered prompt"),
    ("{% macro f(s) %}{% for i in range(90000) %}{{ s }}{% endfor %}{% endmacro %}{{ f('x' * 100000) }}",
     "macro's or block's output"),
    ("{{ lipsum(100000) }}", "lipsum"),
])
def test_a_render_stops_at_its_limits_and_changes_nothing(tmp_path, body, error):
    cfg, t = DomainConfig(), task()
    before = copy.deepcopy((cfg, t))
    started = time.perf_counter()
    with pytest.raises(Exception, match=error):
        # A 400,000-character document: the output may be at most 1,000,000 + twice that
        prompts(tmp_path, body).messages("hostile", task=t, cfg=cfg, document="w " * 200_000)
    assert time.perf_counter() - started < 1.0
    assert (cfg, t) == before


def test_a_render_stops_after_its_cpu_time(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "MAX_SECONDS", 0.2)
    # Few operations, each slow: the operation count never trips, the clock does
    slow = prompts(tmp_path, "{% for i in range(5000) %}{{ ('ab ' * 300000) | wordcount }}{% endfor %}")
    started = time.perf_counter()
    with pytest.raises(RenderLimit, match="CPU time"):
        slow.messages("hostile")
    assert time.perf_counter() - started < 1.0


def test_templates_get_copies_of_their_variables(tmp_path):
    class Counter:
        """An object whose method changes it, which the sandbox cannot know."""

        def __init__(self):
            self.n = 0

        def bump(self):
            self.n += 1
            return self.n

    t = task()
    t.extra["counter"] = Counter()
    assert prompts(tmp_path, "{{ task.extra.counter.bump() }}").messages("hostile", task=t)[0]["content"] == "1"
    assert t.extra["counter"].n == 0


def test_the_qv_template_cannot_shorten_the_rubric_the_loop_grades(tmp_path):
    from tests.test_generate_loop import make_cfg as generate_cfg
    from autodata.generate import generate
    from tests.scripted import cs_task, scripted_llm

    cfg = generate_cfg(tmp_path)
    (tmp_path / "t").mkdir()
    shorten = "{% if task.rubric|length > 1 %}{% set _ = task.rubric.pop() %}{% endif %}"
    (tmp_path / "t" / "qv.j2").write_text(QV.replace("{% block user %}", "{% block user %}" + shorten))
    cfg.domain.template_dir = str(tmp_path / "t")
    llm, backends = scripted_llm(cfg.models, lambda role, request, call: cs_task())
    with pytest.raises(Exception, match="unsafe"):
        asyncio.run(generate(cfg, tmp_path / "out", llm=llm))
    assert not backends["quality_verifier"].requests and not backends["judge"].requests


def test_probe_renders_share_nothing_with_the_run():
    cfg = copy.deepcopy(CFG)
    child = apply_knobs(cfg.domain, {"banned_phrasings": ["why"]})
    assert child.recall_openers == cfg.domain.recall_openers and child.recall_openers is not cfg.domain.recall_openers
    assert child.acceptance is not cfg.domain.acceptance
    render_all(cfg.domain, SOURCES)
    assert cfg == CFG


# ---------------------------------------------------------------------------------------------- the syntax tree
def reading(user: str, extra: dict[str, str] | None = None):
    sources = {"t.j2": "{% block user %}" + user + "{% endblock %}", **(extra or {})}
    return read_template("t.j2", sources.get, {"document", "items"}, {"document", "items", "cfg"})


def test_the_syntax_tree_reading_follows_loops_and_macros():
    macros = {"m.j2": "{% macro show(xs) %}{% for x in xs %}{{ x.name }}{% endfor %}{% endmacro %}"}
    uses = reading("{% import 'm.j2' as m %}{{ document|fence('document') }}{{ m.show(items) }}{{ cfg.n }}",
                   macros).uses
    assert [(u.kind, u.expr, u.where) for u in uses] == [
        ("show", "document|fence('document')", ()), ("loop", "items", ()), ("show", "items[].name", ("for items",))]
    assert uses[0].unfenced == frozenset() and uses[2].unfenced == {"items"}


@pytest.mark.parametrize("child, problem", [
    ("{% if document|length > 9 %}{{ document|fence('document') }}{% endif %}", "decides on document"),
    ("{{ document }}", "outside its data fence"),
    ("{% set d = 'x' %}{{ d|fence('document') }}", "no longer shows document"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}{{ document|fence('document') }}", "calls itself"),
    ("{{ document|fence('document') }}{{ range(3) }}", "name range"),
    ("{% for d in [document] %}{{ d|fence('document') }}{% endfor %}", "loops over document"),
    ("{{ document|fence('document') }}{{ 'easy' if document|length > 9 else 'hard' }}", "shows document in a way"),
    ("{{ document|fence('document') }}{{ ['hard', 'easy'][document|length > 9] }}", "shows document in a way"),
])
def test_compare_names_what_a_child_changed(child, problem):
    parent = reading("{{ document|fence('document') }}")
    assert any(problem in p for p in compare("t.j2", parent, reading(child))), compare("t.j2", parent, reading(child))


def test_compare_accepts_the_same_uses_rearranged_and_plain_new_displays():
    parent = reading("A {{ document|fence('document') }} B {% if items %}{{ items|join(', ') }}{% endif %}")
    child = reading("{% if items %}{{ items|join(', ') }}{% endif %} New words. {{ document|fence('document') }}"
                    "{% if items %}{{ items|join('; ') }}{% endif %}")
    assert compare("t.j2", parent, child) == []


# ---------------------------------------------------------------------------------------------- variant folders
def variant(tmp_path: Path) -> Path:
    folder = tmp_path / "v"
    (folder / "templates").mkdir(parents=True)
    (folder / "knobs.yaml").write_text("max_weight: 7\n")
    (folder / "variant.json").write_text(json.dumps({"format": 1, "domain": "cs"}))
    return folder


@pytest.mark.parametrize("file", ["Judge.j2", "judge.J2", "SOLVER.j2"])
def test_a_variant_file_named_like_a_protected_template_in_another_case_is_refused(tmp_path, file):
    folder = variant(tmp_path)
    (folder / "templates" / file).write_text("{% block user %}fail{% endblock %}")
    with pytest.raises(VariantError, match="it names the protected"):
        read_folder(folder, "cs", DOMAIN.editable_templates, DOMAIN.protected_templates)
    with pytest.raises(VariantError, match="not an editable template"):
        build_domain(DomainConfig(variant=str(folder)))
    assert protected_overrides(str(folder / "templates"), DOMAIN.editable_templates, DOMAIN.protected_templates)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_a_variant_with_symbolic_links_is_refused(tmp_path):
    folder = variant(tmp_path)
    target = tmp_path / "elsewhere.j2"
    target.write_text(QV)
    (folder / "templates" / "qv.j2").symlink_to(target)
    with pytest.raises(VariantError, match="symbolic link"):
        read_folder(folder, "cs", DOMAIN.editable_templates)
    with pytest.raises(VariantError, match="symbolic link"):
        build_domain(DomainConfig(variant=str(folder)))
    (folder / "templates" / "qv.j2").unlink()
    (folder / "templates").rmdir()
    (folder / "templates").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(VariantError, match="symbolic link"):
        read_folder(folder, "cs", DOMAIN.editable_templates)


@pytest.mark.parametrize("name", ["../judge", "Judge", "judge.J2", "judge"])
def test_population_rows_naming_a_template_that_is_not_editable_are_refused(tmp_path, name):
    baseline = make_variant(SOURCES, knob_values(CFG.domain))
    child = make_variant({**SOURCES, "qv": QV + "\nx"}, knob_values(CFG.domain))
    row = child.row("cs", baseline)
    row["diffs"] = {name: row["diffs"]["qv"].replace("qv.j2", f"{name}.j2")}
    path = tmp_path / "population.jsonl"
    path.write_text(json.dumps(baseline.row("cs", baseline)) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(PopulationError, match="line 2.*(protected|not an editable template)"):
        load_population(path, "cs", baseline, DOMAIN.editable_templates, DOMAIN.protected_templates)


def test_jinja_is_recent_enough_for_its_sandbox():
    from importlib.metadata import version

    assert tuple(int(p) for p in version("jinja2").split(".")[:3]) >= (3, 1, 6)


def test_macros_that_call_each_other_exponentially_are_refused_unread():
    chain = "{% macro a0() %}x{% endmacro %}" + "".join(
        f"{{% macro a{i}() %}}{{{{ a{i - 1}() }}}}{{{{ a{i - 1}() }}}}{{% endmacro %}}" for i in range(1, 31))
    started = time.perf_counter()
    problems = compare("t.j2", reading("{{ document|fence('document') }}"),
                       reading("{% if false %}" + chain + "{{ a30() }}{% endif %}{{ document|fence('document') }}"))
    assert any("to read" in p for p in problems) and time.perf_counter() - started < 1.0


def test_sandbox_doctests():
    import doctest

    result = doctest.testmod(sandbox)
    assert result.failed == 0 and result.attempted > 0
