"""Folder domains (domain=folder domain.path=PATH): principia as a folder matches its class, and a bad folder is
refused with a message naming the file, the key and the fix. Pure unit tests: no model, no server."""

from __future__ import annotations

import copy
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from autodata.acceptance import FailureReason, Status
from autodata.config import AcceptanceConfig, DomainConfig
from autodata.domains import (
    DOMAINS,
    FailedAttempt,
    FolderDomain,
    FolderDomainError,
    OutputFormatError,
    TaskFormatError,
    build_domain,
    domain_class,
    resolve_config,
)
from autodata.domains.principia import PrincipiaDomain
from autodata.domains.templating import PACKAGED_TEMPLATES
from autodata.variants import VariantError

ROOT = Path(__file__).resolve().parents[1]
PRINCIPIA_FOLDER = ROOT / "autodata" / "domains" / "folders" / "principia"
# conf/domain/principia.yaml's values
PRINCIPIA_CFG = DomainConfig(name="principia", recall_openers=[], acceptance=AcceptanceConfig(policy="verifiable"))
FOLDER_CFG = DomainConfig(name="folder", path=str(PRINCIPIA_FOLDER))
DOC = "Euler's totient phi(n) counts the integers up to n coprime to n; phi is multiplicative."
TASK = {
    "plan": "Combine multiplicativity with the prime-power formula.",
    "answer_type": "set",
    "question": "For which positive integers n is Euler's totient phi(n) equal to n/2?",
    "reference_answer": "Exactly the powers of two, n = 2^k with k >= 1.",
}
HISTORY = [
    FailedAttempt(1, FailureReason.TOO_EASY, "What is phi(8)?", "general knowledge", 0.9, None),
    FailedAttempt(2, FailureReason.FAILED_ON_STRONG, "Derive phi of a product.", "ambiguous", 0.1, 0.2),
    FailedAttempt(3, FailureReason.MALFORMED, "", "question: missing", None, None),
]


@pytest.fixture(scope="module")
def pair() -> tuple[PrincipiaDomain, FolderDomain]:
    return PrincipiaDomain(PRINCIPIA_CFG), build_domain(FOLDER_CFG)


# ---------------------------------------------------------------- principia as a folder = the class
def test_the_folder_holds_the_packaged_principia_templates_unchanged():
    for file in sorted((PACKAGED_TEMPLATES / "principia").glob("*.j2")):
        assert (PRINCIPIA_FOLDER / file.name).read_text() == file.read_text(), file.name
    assert sorted(p.name for p in PRINCIPIA_FOLDER.glob("*.j2")) == sorted(
        p.name for p in (PACKAGED_TEMPLATES / "principia").glob("*.j2"))


def test_the_folder_config_is_the_principia_option():
    cfg = resolve_config(FOLDER_CFG)
    assert replace(cfg, name="principia", path=None) == PRINCIPIA_CFG
    # Applying it again changes nothing; other domains pass through
    assert resolve_config(cfg) == cfg
    assert resolve_config(PRINCIPIA_CFG) is PRINCIPIA_CFG


def test_same_facts(pair):
    cls, folder = pair
    assert (folder.name, folder.grading, folder.challengers_per_round) == ("principia", "equivalence", 3)
    assert folder.variant_id == cls.variant_id
    assert folder.editable_sources() == cls.editable_sources()
    facts = domain_class(FOLDER_CFG)
    assert issubclass(facts, FolderDomain) and facts.grading == "equivalence" and facts.challengers_per_round == 3
    assert domain_class(PRINCIPIA_CFG) is PrincipiaDomain


@pytest.mark.parametrize("method,history", [("agentic", []), ("agentic", HISTORY), ("cot", [])])
def test_same_challenger_messages(pair, method, history):
    cls, folder = pair
    assert folder.challenger_messages(DOC, history, method) == cls.challenger_messages(DOC, history, method)


def test_same_task_prompts(pair):
    cls, folder = pair
    t = cls.parse_task(copy.deepcopy(TASK))
    assert folder.qv_messages(t, DOC) == cls.qv_messages(t, DOC)
    for doc in (None, DOC):
        assert folder.solver_messages(t, doc) == cls.solver_messages(t, doc)
    answer = "Final answer: powers of two"
    assert folder.judge_messages(t, answer) == cls.judge_messages(t, answer)
    args = (t, FailureReason.TOO_EASY, [1.0, 0.0], [1.0, 1.0], "weak correct in 1 of 2")
    assert folder.feedback_messages(*args) == cls.feedback_messages(*args)


@pytest.mark.parametrize("cap", [None, 200])
def test_same_schemas(cap):
    cls = PrincipiaDomain(replace(PRINCIPIA_CFG, max_field_chars=cap))
    folder = build_domain(replace(FOLDER_CFG, max_field_chars=cap))
    t = cls.parse_task(copy.deepcopy(TASK))
    assert folder.challenger_schema == cls.challenger_schema
    assert folder.qv_schema == cls.qv_schema
    assert folder.judge_schema(t) == cls.judge_schema(t)


BAD_TASKS = [
    TASK,
    {k: v for k, v in TASK.items() if k != "plan"},
    {**TASK, "plan": ""},
    {**TASK, "plan": "   "},
    {**TASK, "plan": None},
    {**TASK, "plan": 5},
    {**TASK, "question": ""},
    {**TASK, "question": 7, "reference_answer": None},
    {k: v for k, v in TASK.items() if k != "answer_type"},
    {**TASK, "answer_type": ["set"]},
    [],
    "not an object",
]


@pytest.mark.parametrize("obj", BAD_TASKS)
def test_same_parse_task_results_and_errors(pair, obj):
    cls, folder = pair

    def outcome(domain):
        try:
            return domain.parse_task(copy.deepcopy(obj))
        except TaskFormatError as err:
            return ("error", str(err))

    assert outcome(folder) == outcome(cls)


@pytest.mark.parametrize("answer", [
    TASK["reference_answer"],
    "42",
    "The answer is 3.14159.",
    "It is the set of primes. It is infinite.",
    "The group of units " + "x" * 300,
    "The paper says the set of all n.",
])
def test_same_structural_problems(pair, answer):
    cls, folder = pair
    t = cls.parse_task({**TASK, "reference_answer": answer})
    assert folder.structural_problems(t, DOC) == cls.structural_problems(t, DOC)


@pytest.mark.parametrize("obj", [{"reason": "same set", "equivalent": True}, {"reason": "", "equivalent": False},
                                 {"equivalent": "yes"}, {}])
def test_same_grades(pair, obj):
    cls, folder = pair
    t = cls.parse_task(copy.deepcopy(TASK))

    def outcome(domain):
        try:
            return domain.parse_grade(t, obj)
        except OutputFormatError as err:
            return str(err)

    assert outcome(folder) == outcome(cls)


@pytest.mark.parametrize("weak,strong", [
    ([0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]),
    ([1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]),
    ([0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]),
    ([1.0, 1.0, 1.0, 0.0], []),
])
def test_same_acceptance(pair, weak, strong):
    cls, folder = pair
    assert folder.policy.name == cls.policy.name == "verifiable"
    assert folder.policy.decide(weak, strong) == cls.policy.decide(weak, strong)
    for k in (4, 6):
        assert folder.policy.weak_status(weak[:2], k) == cls.policy.weak_status(weak[:2], k)
    assert cls.policy.weak_status([1.0, 1.0], 4) == Status.FAIL


# ---------------------------------------------------------------- the format itself
RUBRIC_SPEC = {
    "name": "medicine",
    "description": "Clinical reasoning questions",
    "grading": "rubric",
    "fields": [
        {"name": "plan", "type": "text", "required": False, "visible_to": []},
        {"name": "specialty", "type": "enum", "values": ["cardiology", "neurology"], "column": "question_type"},
        {"name": "skills", "type": "list", "min_items": 1, "max_items": 2, "column": "tags", "max_chars": 20},
        {"name": "history", "type": "text", "visible_to": ["solver", "judge", "qv"]},
        {"name": "question", "type": "text", "visible_to": ["solver", "judge", "qv"]},
        {"name": "reference_answer", "type": "text", "visible_to": ["judge", "qv"]},
    ],
    "rubric": {"min": 2, "max": 4, "min_positive": 1, "min_negative": 1, "max_weight": 5,
               "categories": ["correctness", "safety"]},
    "acceptance": {"policy": "cs_paper", "min_gap": 0.3},
    "quality": {"recall_openers": []},
    "eval": {"prompt": {"question": "vignette", "history": "notes"}, "reference": "answer", "rubric": "criteria"},
}
SOLVER = """{% block user %}
{{ fields.history }}
{{ task.question }}
{% endblock %}
"""
JUDGE = """{% block user %}
{{ fields.history }} {{ task.question }}
{% for c in criteria %}{{ c.id }}. {{ c.text }}
{% endfor %}{% if show_reference %}{{ task.reference_answer }}{% endif %}
{{ answer | fence("answer") }}
{% endblock %}
"""
PLAIN = """{% block user %}
{{ spec.name }}
{% endblock %}
"""
QV = """{% block user %}
{{ task.question }} {{ fields.specialty }} {{ task.reference_answer }}
{% endblock %}
"""
MED_TASK = {
    "plan": "p",
    "specialty": "cardiology",
    "skills": ["diagnosis"],
    "history": "A 60-year-old with chest pain on exertion relieved by rest.",
    "question": "Predict the most likely finding on an exercise ECG and justify it.",
    "reference_answer": "ST depression during exercise, from demand ischaemia.",
    "rubric": [{"criterion": "Predicts ST depression", "weight": 5, "category": "correctness"},
               {"criterion": "Explains demand ischaemia", "weight": 3, "category": "correctness"},
               {"criterion": "Recommends immediate thrombolysis", "weight": -4, "category": "safety"}],
}


def write_folder(root: Path, spec: dict, templates: dict[str, str] | None = None) -> Path:
    folder = root / "medicine"
    folder.mkdir(exist_ok=True)
    (folder / "domain.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    texts = {"challenger": PLAIN, "challenger_cot": PLAIN, "qv": QV, "feedback": PLAIN, "solver": SOLVER,
             "judge": JUDGE, **(templates or {})}
    for name, text in texts.items():
        if text is not None:
            (folder / f"{name}.j2").write_text(text)
    return folder


@pytest.fixture
def med(tmp_path) -> FolderDomain:
    return build_domain(DomainConfig(name="folder", path=str(write_folder(tmp_path, RUBRIC_SPEC))))


def test_rubric_folder_schema_parser_and_config(med):
    schema = med.challenger_schema
    assert list(schema["properties"]) == ["plan", "specialty", "skills", "history", "question", "reference_answer",
                                          "rubric"]
    assert schema["properties"]["specialty"] == {"type": "string", "enum": ["cardiology", "neurology"]}
    assert schema["properties"]["skills"] == {"type": "array", "items": {"type": "string"}, "minItems": 1,
                                              "maxItems": 2}
    criterion = schema["properties"]["rubric"]["items"]["properties"]
    assert criterion["weight"] == {"type": "integer", "minimum": -5, "maximum": 5}
    assert criterion["category"] == {"type": "string", "enum": ["correctness", "safety"]}
    assert (med.cfg.rubric_min, med.cfg.rubric_max, med.cfg.acceptance.policy, med.cfg.acceptance.min_gap) == (
        2, 4, "cs_paper", 0.3)
    t = med.parse_task(copy.deepcopy(MED_TASK))
    assert (t.question_type, t.tags) == ("cardiology", ["diagnosis"])
    assert t.extra == {"plan": "p", "history": MED_TASK["history"]}
    assert [c.weight for c in t.rubric] == [5, 3, -4]
    assert med.structural_problems(t, "doc") == []
    assert med.judge_schema(t)["properties"]["verdicts"]["maxItems"] == 3
    grade = med.parse_grade(t, {"verdicts": [{"id": 1, "met": True}, {"id": 2, "met": True}, {"id": 3, "met": False}]})
    assert grade.score == 1.0


def test_rubric_folder_parse_errors_name_each_field(med):
    bad = {**MED_TASK, "specialty": "oncology", "skills": [], "history": 3,
           "rubric": [{**MED_TASK["rubric"][0], "category": "style"}]}
    with pytest.raises(TaskFormatError) as err:
        med.parse_task(bad)
    text = str(err.value)
    assert "challenger task (medicine) has 4 format problem(s)" in text
    for line in ("specialty: expected one of cardiology, neurology, found 'oncology'",
                 "skills: expected 1-2 items, found 0", "history: expected a string, found 3 (int)",
                 "rubric[0].category: expected one of correctness, safety, found 'style'"):
        assert line in text


def test_each_role_sees_only_its_fields(med):
    t = med.parse_task(copy.deepcopy(MED_TASK))
    solver = "\n".join(m["content"] for m in med.solver_messages(t, None))
    assert MED_TASK["history"] in solver and MED_TASK["reference_answer"] not in solver
    shown, values = med.view(t, "solver")
    assert shown.reference_answer == "" and shown.question_type == "" and "plan" not in shown.extra
    assert set(values) == {"history", "question"}
    judge = "\n".join(m["content"] for m in med.judge_messages(t, "ST depression"))
    assert "Predicts ST depression" in judge and MED_TASK["reference_answer"] not in judge


def test_rubric_folder_structural_rules(med):
    t = med.parse_task({**MED_TASK, "skills": ["differential diagnosis of chest pain"],
                        "history": "As the document says, ST depression during exercise, from demand ischaemia."})
    problems = med.structural_problems(t, "doc")
    assert "skills is 36 characters; keep it under 20" in problems
    assert any(p.startswith("history mentions 'the document'") for p in problems)
    assert "history gives the reference answer away (answer leakage); rewrite it" in problems


def test_command_line_values_win_over_the_folder(tmp_path):
    path = str(write_folder(tmp_path, RUBRIC_SPEC))
    cfg = resolve_config(DomainConfig(name="folder", path=path, rubric_max=14,
                                      acceptance=AcceptanceConfig(min_gap=0.1)))
    assert (cfg.rubric_min, cfg.rubric_max, cfg.acceptance.policy, cfg.acceptance.min_gap) == (2, 14, "cs_paper", 0.1)


def test_eval_rows_map_columns_to_fields(med):
    row = med.eval_row({"id": 7, "vignette": "Q?", "notes": "H", "answer": "A",
                        "criteria": [{"criterion": "c", "weight": 2}]}, 0)
    assert row == {"id": "7", "question": "Q?", "context": "", "reference_answer": "A", "extra": {"history": "H"},
                   "rubric": [{"criterion": "c", "weight": 2.0, "category": "", "extra": {}}]}
    with pytest.raises(KeyError, match="column 'vignette' .eval.prompt.question in .*domain.yaml. is missing"):
        med.eval_row({"answer": "A"}, 1)


def test_protected_split_applies_to_folder_domains(tmp_path):
    path = str(write_folder(tmp_path, RUBRIC_SPEC))
    override = tmp_path / "override"
    override.mkdir()
    (override / "judge.j2").write_text(JUDGE)
    with pytest.raises(ValueError, match="replaces protected template.s. judge.j2"):
        build_domain(DomainConfig(name="folder", path=path, template_dir=str(override)))
    variant = tmp_path / "variant"
    (variant / "templates").mkdir(parents=True)
    (variant / "templates" / "solver.j2").write_text(SOLVER)
    with pytest.raises(VariantError, match="solver.j2 is not an editable template"):
        build_domain(DomainConfig(name="folder", path=path, variant=str(variant)))
    (variant / "templates" / "solver.j2").unlink()
    (variant / "templates" / "challenger.j2").write_text(PLAIN.replace("spec.name", "spec.description"))
    edited = build_domain(DomainConfig(name="folder", path=path, variant=str(variant)))
    assert edited.editable_sources()["challenger"] != build_domain(DomainConfig(name="folder", path=path)
                                                                   ).editable_sources()["challenger"]
    assert edited.challenger_messages("doc", [], "agentic")[0]["content"] == "Clinical reasoning questions"


# ---------------------------------------------------------------- a bad folder: file, key and fix
def folder_error(tmp_path, spec=None, templates=None) -> str:
    path = write_folder(tmp_path, spec or RUBRIC_SPEC, templates)
    with pytest.raises(FolderDomainError) as err:
        build_domain(DomainConfig(name="folder", path=str(path)))
    # A ValueError: run.py exits 2 on it
    assert isinstance(err.value, ValueError)
    return str(err.value)


def test_a_template_using_an_undeclared_field(tmp_path):
    text = folder_error(tmp_path, templates={"solver": SOLVER.replace("fields.history", "fields.symptoms")})
    assert "medicine/solver.j2: line 2: uses fields.symptoms" in text
    assert "medicine/domain.yaml declares no field 'symptoms' under fields" in text and "add it there" in text


def test_a_template_using_a_field_its_role_does_not_see(tmp_path):
    text = folder_error(tmp_path, templates={"solver": SOLVER.replace("fields.history", "task.reference_answer")})
    assert "solver.j2: line 2: uses task.reference_answer" in text
    assert "fields (reference_answer).visible_to is ['judge', 'qv']); add solver to its visible_to" in text


def test_a_template_using_a_variable_the_domain_does_not_pass(tmp_path):
    text = folder_error(tmp_path, templates={"qv": QV.replace("task.question", "symptoms")})
    assert "qv.j2: uses the variable 'symptoms', which the domain does not pass to qv.j2" in text
    assert "write {{ fields.symptoms }}" in text


def test_an_unknown_policy(tmp_path):
    text = folder_error(tmp_path, {**RUBRIC_SPEC, "acceptance": {"policy": "strict"}})
    assert "medicine/domain.yaml: acceptance.policy: 'strict' is not in the acceptance registry" in text
    assert "cs_deployed, cs_paper" in text and "pick one of them" in text


def test_a_loop_judge_policy_needs_a_loop_judge(tmp_path):
    text = folder_error(tmp_path, {**RUBRIC_SPEC, "acceptance": {"policy": "loop_judge"}})
    assert "acceptance.policy: 'loop_judge' leaves the verdict to a loop judge" in text


def test_a_template_that_does_not_compile(tmp_path):
    text = folder_error(tmp_path, templates={"qv": "{% block user %}{% if task.question %}{% endblock %}"})
    assert "medicine/qv.j2: line 1: does not compile" in text and "fix the Jinja syntax there" in text


def test_a_field_type_it_cannot_parse(tmp_path):
    spec = copy.deepcopy(RUBRIC_SPEC)
    spec["fields"][3]["type"] = "string"
    text = folder_error(tmp_path, spec)
    assert ("medicine/domain.yaml: fields[3] (history).type: 'string' is not a field type; use text, list (a list "
            "of text) or enum") in text


def test_every_problem_at_once(tmp_path):
    spec = {**RUBRIC_SPEC, "grading": "exact", "acceptance": {"policy": "strict", "min_gapp": 0.1},
            "rubric": {**RUBRIC_SPEC["rubric"], "max_weight": "ten"}}
    text = folder_error(tmp_path, spec)
    for piece in ("grading: expected one of rubric, equivalence", "acceptance.min_gapp: unknown key",
                  "acceptance.policy: 'strict'", "rubric.max_weight: expected an integer, found 'ten'"):
        assert piece in text


def test_a_missing_template_or_folder(tmp_path):
    text = folder_error(tmp_path, templates={"judge": None})
    assert "medicine/judge.j2: missing; every domain folder holds" in text
    with pytest.raises(FolderDomainError, match="domain.path: missing; domain=folder needs domain.path=PATH"):
        build_domain(DomainConfig(name="folder"))
    with pytest.raises(FolderDomainError, match="nowhere: not a folder"):
        build_domain(DomainConfig(name="folder", path=str(tmp_path / "nowhere")))


def test_the_question_and_reference_slots_are_required(tmp_path):
    spec = {**RUBRIC_SPEC, "fields": [f for f in RUBRIC_SPEC["fields"] if f["name"] != "reference_answer"]}
    text = folder_error(tmp_path, spec)
    assert "fields: no field fills the task slot reference_answer; add a field named reference_answer" in text


def test_a_copied_principia_folder_builds(tmp_path):
    shutil.copytree(PRINCIPIA_FOLDER, tmp_path / "mine")
    assert build_domain(DomainConfig(name="folder", path=str(tmp_path / "mine"))).grading == "equivalence"
    assert "folder" in DOMAINS


def test_resolving_the_config_checks_the_templates_too(tmp_path):
    """run.py resolves the domain config before validation: a broken template stops the run there (exit 2)."""
    path = write_folder(tmp_path, RUBRIC_SPEC, {"judge": "{% block user %}{{ fields.vitals }}{% endblock %}",
                                                "judgee": PLAIN})
    with pytest.raises(FolderDomainError) as err:
        resolve_config(DomainConfig(name="folder", path=str(path)))
    text = str(err.value)
    assert "judge.j2: line 1: uses fields.vitals" in text
    assert "medicine/judgee.j2: not a template of a domain folder" in text and "rename it or remove it" in text


def test_outside_rows_are_recognised_by_their_columns(med):
    assert med.reads_eval_row({"vignette": "Q?", "notes": "H", "answer": "A", "criteria": []})
    assert not med.reads_eval_row({"question": "Q?", "reference_answer": "A", "rubric": []})
    _, folder = PrincipiaDomain(PRINCIPIA_CFG), build_domain(FOLDER_CFG)
    row = folder.eval_row({"problem_statement": "Q?", "answer": 3}, 4)
    assert row == {"id": "row4", "question": "Q?", "context": "", "reference_answer": "3", "extra": {}}


def test_the_meta_optimizer_may_not_show_a_role_a_hidden_field():
    """An edit is compiled as a variant over the folder: the field visibility holds for rewritten templates too."""
    from autodata.meta.edits import render_all

    qv = build_domain(FOLDER_CFG).editable_sources()["qv"]
    assert render_all(FOLDER_CFG, {"qv": qv}).rendered["probes"]["qv"]
    with pytest.raises(ValueError, match="qv.j2: line 11: uses fields.plan, .* add qv to its visible_to"):
        render_all(FOLDER_CFG, {"qv": qv.replace("task.question_type", "fields.plan")})


def test_module_doctests():
    import doctest

    import autodata.domains.checks
    import autodata.domains.folder_spec

    results = [doctest.testmod(m) for m in (autodata.domains.folder_spec, autodata.domains.checks)]
    assert sum(r.attempted for r in results) >= 3 and sum(r.failed for r in results) == 0


def test_an_optional_list_may_be_left_out(tmp_path):
    spec = copy.deepcopy(RUBRIC_SPEC)
    spec["fields"][2]["required"] = False
    d = build_domain(DomainConfig(name="folder", path=str(write_folder(tmp_path, spec))))
    assert d.parse_task({k: v for k, v in MED_TASK.items() if k != "skills"}).tags == []
    with pytest.raises(TaskFormatError, match=r"skills\[0\]: expected a non-empty string, found 3"):
        d.parse_task({**MED_TASK, "skills": [3]})


def test_the_judge_must_see_the_reference_it_is_shown(tmp_path):
    spec = copy.deepcopy(RUBRIC_SPEC)
    spec["rubric"]["judge_sees_reference"] = True
    spec["fields"][5]["visible_to"] = ["qv"]
    text = folder_error(tmp_path, spec)
    assert "rubric.judge_sees_reference: is true, but field 'reference_answer' is not visible to the judge" in text


def test_a_variants_knobs_stand_over_the_folder(tmp_path):
    """run.py applies the folder, then the variant's knobs; the domain keeps them, a default-valued one too."""
    path = str(write_folder(tmp_path, RUBRIC_SPEC))
    variant = tmp_path / "variant"
    (variant / "templates").mkdir(parents=True)
    resolved = resolve_config(DomainConfig(name="folder", path=path))
    assert resolved.rubric_min == 2
    with_knobs = replace(resolved, variant=str(variant), rubric_min=DomainConfig().rubric_min, rubric_max=12)
    d = build_domain(with_knobs)
    assert (d.cfg.rubric_min, d.cfg.rubric_max, d.cfg.acceptance.min_gap) == (DomainConfig().rubric_min, 12, 0.3)
