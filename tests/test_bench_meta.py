"""benchmarks/bench_meta_iteration.py's critical-path count and the fake server's schema answers (no server)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_meta_iteration import round_levels, run_levels  # noqa: E402
from fake_openai_server import ANSWER, answer_for, schema_instance  # noqa: E402

from autodata.config import DomainConfig  # noqa: E402
from autodata.domains import build_domain  # noqa: E402
from autodata.meta.agents import Agents  # noqa: E402
from autodata.meta.edits import parse_edit  # noqa: E402

LATENCY = 0.2


def call(role: str, step: str, seconds: float = LATENCY, outputs: int = 1, structured: bool = False) -> dict:
    row: dict[str, Any] = {"role": role, "step": step, "seconds": seconds, "outputs": ["x"] * outputs}
    if structured:
        row["parse_error"] = None
    return row


def full_round() -> list[dict]:
    return [
        call("challenger", "challenger", 2 * LATENCY, outputs=2, structured=True),  # repaired: two calls
        call("quality_verifier", "qv", structured=True),
        call("weak_solver", "weak/0", outputs=2),
        call("judge", "judge/weak/0", structured=True), call("judge", "judge/weak/1", 2 * LATENCY, 2, True),
        call("weak_solver", "weak/2"),
        call("judge", "judge/weak/2", structured=True),
        call("strong_solver", "strong/0", outputs=2),
        call("judge", "judge/strong/0", structured=True), call("judge", "judge/strong/1", structured=True),
        call("feedback", "feedback"),
    ]


def test_round_levels_counts_a_wave_of_judges_once_and_a_repair_twice():
    # challenger 2 + qv 1 + weak 1 + judges 2 (one repaired) + weak 1 + judge 1 + strong 1 + judges 1 + feedback 1
    assert round_levels(full_round(), LATENCY) == 11


def test_cached_calls_count_no_level():
    cached = [dict(c, seconds=0.001) for c in full_round()]
    assert round_levels(cached, LATENCY) == 0
    # A malformed round: the challenger alone, repaired
    assert round_levels([call("challenger", "challenger", outputs=2, structured=True)], LATENCY) == 2


def test_run_levels_sums_rounds_per_document_and_packs_documents_into_slots():
    rounds = [{"document_id": d, "calls": full_round()} for d in ("a", "a", "b", "c")]
    assert run_levels(rounds, LATENCY, in_flight=3) == 22
    # a (22) in slot 1, b (11) in slot 2, c (11) after b
    assert run_levels(rounds, LATENCY, in_flight=2) == 22
    assert run_levels(rounds, LATENCY, in_flight=1) == 44
    assert run_levels([], LATENCY, in_flight=2) == 0


def valid(schema: dict, value: Any) -> bool:
    """A hand check of the JSON-schema keywords the project's schemas use."""
    if "enum" in schema:
        return value in schema["enum"]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return (isinstance(value, dict) and set(schema.get("required", [])) <= set(value)
                and (schema.get("additionalProperties", True) or set(value) <= set(props))
                and all(valid(props[k], v) for k, v in value.items() if k in props))
    if kind == "array":
        return (isinstance(value, list) and len(value) >= schema.get("minItems", 0)
                and len(value) <= schema.get("maxItems", len(value))
                and all(valid(schema.get("items", {}), v) for v in value))
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)
                and schema.get("minimum", value) <= value <= schema.get("maximum", value))
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return (isinstance(value, str)
                and schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)))
    return True


@pytest.mark.parametrize("knobs", [
    {},
    # The CPU experiment's rubric, capped strings
    {"rubric_min": 7, "rubric_max": 8, "positive_only": True, "max_weight": 7, "max_field_chars": 20,
     "max_item_chars": 12},
])
def test_schema_instances_are_valid_and_parse_for_the_cs_loop(knobs):
    domain = build_domain(DomainConfig(name="cs", **knobs))
    obj = schema_instance(domain.challenger_schema, "5eed5eed")
    assert valid(domain.challenger_schema, obj)
    task = domain.parse_task(obj)
    assert len(task.rubric) == domain.cfg.rubric_min
    assert len({c.criterion for c in task.rubric}) == len(task.rubric)
    verdicts = schema_instance(domain.judge_schema(task), "s")
    assert valid(domain.judge_schema(task), verdicts)
    grade = domain.parse_grade(task, verdicts)
    assert grade.met == [i % 2 == 1 for i in range(len(task.rubric))] and 0 < grade.score < 1
    assert domain.parse_qv(schema_instance(domain.qv_schema)) == (True, "x")
    agents = Agents("cs", domain.editable_templates)
    assert agents.parse_analysis(schema_instance(agents.analyzer_schema, "s"))["analysis"]
    edit = schema_instance(agents.implementer_schema, "s")
    assert valid(agents.implementer_schema, edit)
    # The fake server's bare instance has no template and no knob (arrays get minItems items): not an edit; one
    # template item of the same schema is
    with pytest.raises(ValueError, match="changes nothing"):
        parse_edit(edit, domain.editable_templates)
    item = schema_instance(agents.implementer_schema["properties"]["templates"]["items"], "s")
    assert parse_edit({**edit, "templates": [item]}, domain.editable_templates).template == \
        domain.editable_templates[0]


def test_schema_instance_bounds():
    assert schema_instance({"type": "string", "minLength": 5}, "") == "xxxxx"
    assert schema_instance({"type": "string", "maxLength": 3}, "abcdef") == "xab"
    assert schema_instance({"type": "integer", "minimum": 4, "maximum": 6}) == 4
    assert schema_instance({"type": ["null", "number"]}) == 1.0
    assert schema_instance({"anyOf": [{"type": "boolean"}, {"type": "string"}]}) is True
    assert schema_instance({"type": "array", "items": {"type": "string"}}) == []


def test_answers_stay_fixed_unless_schema_json_is_on():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = {"messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "task", "schema": schema}}}
    assert answer_for(body, False, {}) == ANSWER
    first = json.loads(answer_for(body, True, {}))
    assert first == json.loads(answer_for(body, True, {}))
    other = dict(body, messages=[{"role": "user", "content": "another prompt"}])
    assert json.loads(answer_for(other, True, {})) != first
    assert answer_for(body, True, {"task": "fixed"}) == "fixed"
    assert answer_for({"messages": []}, True, {}) == ANSWER
    as_object = dict(body, response_format={"type": "json_object", "schema": schema})
    assert json.loads(answer_for(as_object, True, {})) == first
