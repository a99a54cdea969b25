"""What a domain is: its task format, prompts, schemas, parsers and quality rules.

A domain (cs, legal, principia) is pure: it builds chat messages, JSON schemas
for constrained decoding, and parses model outputs into typed objects. It never
calls a model; ``autodata.generate.loop`` does, and asks the domain what to send
and how to read the answer. The framework computes every score itself from
per-criterion verdicts (``parse_grade``); no model's overall score is ever used.

Parsers raise ``OutputFormatError`` (``TaskFormatError`` for the challenger)
whose message lists every wrong field: its path, what was expected, what was
found. The loop records the round as malformed and shows the message to the
challenger in its next prompt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from autodata.acceptance import GROUP_TITLES, AcceptancePolicy, build_policy
from autodata.config import DomainConfig, GenerateConfig
from autodata.domains import checks
from autodata.domains.templating import PromptSet, shorten
from autodata.errors import lookup
from autodata.variants import VariantError, content_hash, knob_values, protected_overrides, template_files


@dataclass
class Criterion:
    criterion: str
    # Signed: a negative criterion that is met means the bad behaviour is present
    weight: float
    category: str = ""
    # Domain-specific keys (legal: number, capability, weight_class)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Task:
    question: str
    # Text the solver sees before the question (empty when the question stands alone)
    context: str
    reference_answer: str
    # Empty for verifiable domains (principia)
    rubric: list[Criterion] = field(default_factory=list)
    question_type: str = ""
    tags: list[str] = field(default_factory=list)
    # Anything else the challenger wrote (e.g. "plan")
    extra: dict[str, Any] = field(default_factory=dict)
    # The earlier turns of a multi-turn conversation as chat messages ({"role": "user" | "assistant",
    # "content"}), oldest first; the question is the user's next message. Empty for a single question, which
    # every generated task is: only eval sets (PRBench) have them.
    earlier_messages: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        # Rows of single-question tasks (all that stage=generate writes) keep the fields they always had.
        if not self.earlier_messages:
            del out["earlier_messages"]
        return out

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "Task":
        rubric = [Criterion(**c) for c in row.get("rubric") or []]
        return cls(
            question=row["question"],
            context=row.get("context", ""),
            reference_answer=row["reference_answer"],
            rubric=rubric,
            question_type=row.get("question_type", ""),
            tags=list(row.get("tags") or []),
            extra=dict(row.get("extra") or {}),
            earlier_messages=list(row.get("earlier_messages") or []),
        )


@dataclass
class Grade:
    # In [0, 1]; for verifiable tasks exactly 1.0 (correct) or 0.0
    score: float
    # Rubric domains: one verdict per criterion, in rubric order
    met: Optional[list[bool]] = None
    # Verifiable domains: the equivalence verdict
    correct: Optional[bool] = None
    # The judge's parsed output, kept for the records
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class FailedAttempt:
    round: int
    # A FailureReason value; decides the feedback group the challenger sees
    reason: str
    question: str
    # The orchestrator's diagnosis (or the QV feedback / format error)
    diagnosis: str
    weak_mean: Optional[float]
    strong_mean: Optional[float]


class OutputFormatError(ValueError):
    """A model output does not have the fields and types the domain expects."""

    def __init__(self, what: str, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"- {p}" for p in problems)
        super().__init__(
            f"{what} has {len(problems)} format problem(s):\n{lines}\n"
            "The output must match the JSON schema sent with the request; turn on structured_output "
            "for this role, or fix the prompt if a field is misunderstood."
        )


class TaskFormatError(OutputFormatError):
    """The challenger's task is malformed (a missing field, a wrong type)."""


class Fields:
    """Reads one JSON object field by field, collecting every problem before raising."""

    def __init__(self, obj: Any, what: str):
        self.what = what
        self.problems: list[str] = []
        self.obj = obj if isinstance(obj, dict) else {}
        if not isinstance(obj, dict):
            self.problems.append(f"(top level): expected a JSON object, found {_show(obj)}")

    def get(self, key: str, path: Optional[str] = None, obj: Optional[dict] = None) -> Any:
        """The value, or None after recording a problem (missing key, or JSON null)."""
        src = self.obj if obj is None else obj
        if key not in src:
            self.problems.append(f"{path or key}: missing")
            return None
        if src[key] is None:
            self.problems.append(f"{path or key}: expected a value, found null")
        return src[key]

    def text(self, key: str, *, obj: Optional[dict] = None, path: Optional[str] = None,
             required: bool = True, allow_empty: bool = False) -> str:
        src = self.obj if obj is None else obj
        if not required and key not in src:
            return ""
        value = self.get(key, path, src)
        if value is None:
            return ""
        if not isinstance(value, str):
            self.problems.append(f"{path or key}: expected a string, found {_show(value)}")
            return ""
        if not allow_empty and not value.strip():
            self.problems.append(f"{path or key}: expected non-empty text, found an empty string")
        return value.strip()

    def integer(self, key: str, *, obj: Optional[dict] = None, path: Optional[str] = None) -> int:
        value = self.get(key, path, obj)
        if value is None:
            return 0
        # bool is an int subclass in Python; true/false is not a weight.
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            self.problems.append(f"{path or key}: expected an integer, found {_show(value)}")
            return 0
        return int(value)

    def boolean(self, key: str, *, obj: Optional[dict] = None, path: Optional[str] = None) -> bool:
        value = self.get(key, path, obj)
        if value is None:
            return False
        if not isinstance(value, bool):
            self.problems.append(f"{path or key}: expected true or false, found {_show(value)}")
            return False
        return value

    def choice(self, key: str, options: tuple[str, ...], *, obj: Optional[dict] = None,
               path: Optional[str] = None) -> str:
        value = self.text(key, obj=obj, path=path)
        if value and value not in options:
            self.problems.append(f"{path or key}: expected one of {', '.join(options)}, found {_show(value)}")
        return value

    def array(self, key: str, *, min_items: int = 0, max_items: Optional[int] = None) -> list:
        value = self.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problems.append(f"{key}: expected a JSON array, found {_show(value)}")
            return []
        if len(value) < min_items or (max_items is not None and len(value) > max_items):
            want = f"{min_items}-{max_items}" if max_items is not None else f"at least {min_items}"
            self.problems.append(f"{key}: expected {want} items, found {len(value)}")
        return value

    def raise_if_any(self, error: type[OutputFormatError] = OutputFormatError) -> None:
        if self.problems:
            raise error(self.what, self.problems)


def _show(value: Any) -> str:
    text = repr(value)
    return (text if len(text) <= 60 else text[:57] + "...") + f" ({type(value).__name__})"


def object_schema(properties: dict[str, Any]) -> dict[str, Any]:
    """A closed JSON object with every property required.

    OpenAI's strict response_format demands exactly this shape, and xgrammar and
    vLLM accept it; order of properties is the order the model writes them.
    """
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


STRING = {"type": "string"}


def cap_strings(schema: Any, max_chars: int, item_chars: Optional[int] = None) -> Any:
    """A copy of ``schema`` whose free-text strings carry ``maxLength`` (enums are left alone).

    Small models ramble inside JSON strings until the token budget runs out; a
    constrained decoder honours maxLength, so the answer still closes. Strings
    inside array items (rubric criteria, tags) get ``item_chars``.

    >>> cap_strings({"type": "object", "properties": {"q": {"type": "string"}}}, 50)["properties"]["q"]
    {'type': 'string', 'maxLength': 50}
    >>> cap_strings({"type": "array", "items": {"type": "string"}}, 50, 20)["items"]
    {'type': 'string', 'maxLength': 20}
    """
    if isinstance(schema, dict):
        out = {}
        for key, value in schema.items():
            if key == "items" and item_chars:
                out[key] = cap_strings(value, item_chars, item_chars)
            else:
                out[key] = cap_strings(value, max_chars, item_chars)
        if out.get("type") == "string" and "enum" not in out:
            out["maxLength"] = max_chars
        return out
    if isinstance(schema, list):
        return [cap_strings(v, max_chars, item_chars) for v in schema]
    return schema


QV_SCHEMA = object_schema({"feedback": STRING, "verdict": {"type": "string", "enum": ["PASS", "FAIL"]}})

# Order of the feedback groups in the challenger prompt, and what each means.
GROUP_ORDER = ("TOO EASY", "FAILED ON STRONG", "FAILED QV", "LOOP JUDGE: IMPROVE")
QUESTION_CHARS_IN_FEEDBACK = 300
DIAGNOSIS_CHARS_IN_FEEDBACK = 500


def feedback_groups(history: list[FailedAttempt]) -> list[dict[str, Any]]:
    """Earlier failures grouped under their titles, for the challenger prompt."""
    groups: dict[str, list[dict[str, Any]]] = {title: [] for title in GROUP_ORDER}
    for attempt in history:
        title = GROUP_TITLES.get(attempt.reason)
        if title is None:
            continue
        scores = []
        if attempt.weak_mean is not None:
            scores.append(f"weak {attempt.weak_mean:.2f}")
        if attempt.strong_mean is not None:
            scores.append(f"strong {attempt.strong_mean:.2f}")
        groups[title].append({
            "round": attempt.round,
            "question": shorten(attempt.question, QUESTION_CHARS_IN_FEEDBACK) or "(no valid task was produced)",
            "diagnosis": shorten(attempt.diagnosis, DIAGNOSIS_CHARS_IN_FEEDBACK),
            "scores": ", ".join(scores),
        })
    return [{"title": t, "attempts": groups[t]} for t in GROUP_ORDER if groups[t]]


def protected_message(template_dir: Optional[str], names: list[str]) -> str:
    return (f"domain.template_dir={template_dir} replaces protected template(s) {', '.join(names)}: the solver and "
            "judge prompts decide what a score means, so a change there can widen the gap without a better task "
            "(the paper's agents learned to make the weak solver fail on purpose). Remove them from the folder, or "
            "set domain.allow_protected_templates=true if you mean it (the run dir records it)")


class Domain:
    """Shared logic; subclasses set the task format, schemas and domain rules."""

    name: str = ""
    # How the judge grades an answer: "rubric" (weighted criteria; every example carries a rubric) or
    # "equivalence" (same as the reference answer, 1 or 0). Read by data checks, the reward's name and
    # validation, so a new domain class states it here instead of being named in a list elsewhere.
    grading: str = ""
    has_extractor: bool = False
    has_loop_judge: bool = False
    # Challengers writing a task at once per agentic round when generate.challengers_per_round is null
    challengers_per_round: int = 1
    template_names: tuple[str, ...] = ("challenger", "challenger_cot", "qv", "solver", "judge", "feedback")
    # Templates a harness variant (stage=meta_optimize) may rewrite and domain.template_dir may replace. The rest
    # (solver, judge, loop judge and the macros the judge uses) decide what a score means: protected.
    editable_templates: tuple[str, ...] = ("_rules", "_attempts", "challenger", "challenger_cot", "qv", "feedback")
    protected_templates: tuple[str, ...] = ("solver", "judge", "macros")
    # Phrases that point the solver at a source it never sees (the weak solver
    # answers without the document).
    self_references: tuple[str, ...] = (
        "the paper", "this paper", "the document", "this document", "the passage", "the text above",
        "the authors", "the source text",
    )
    METHODS = {"agentic": "challenger", "cot": "challenger_cot"}

    def __init__(self, cfg: DomainConfig):
        self.cfg = cfg
        self.policy: AcceptancePolicy = build_policy(cfg.acceptance)
        overridden = protected_overrides(cfg.template_dir, self.editable_templates, self.protected_templates)
        if overridden and not cfg.allow_protected_templates:
            raise ValueError(protected_message(cfg.template_dir, overridden))
        # Protected templates this run's template_dir replaces (allowed by domain.allow_protected_templates);
        # stats.json records them
        self.protected_overrides = overridden
        overlays = (Path(cfg.variant) / "templates",) if cfg.variant else ()
        for folder in overlays:
            # A variant's overlay may hold editable templates only, as regular files: checked on every load, not
            # only where run.py reads the folder (the meta-optimizer builds domains on its own variant folders)
            _, problems = template_files(folder, self.editable_templates, self.protected_templates)
            if problems:
                raise VariantError(f"domain.variant={cfg.variant} cannot be used: " + "; ".join(problems))
        self.prompts = self._prompts(cfg, overlays)
        self.challenger_schema: dict[str, Any] = self._challenger_schema()
        self.qv_schema: dict[str, Any] = QV_SCHEMA
        if cfg.max_field_chars:
            for name in ("challenger_schema", "qv_schema", "extractor_schema", "loop_judge_schema"):
                setattr(self, name, cap_strings(getattr(self, name), cfg.max_field_chars, cfg.max_item_chars))

    def _prompts(self, cfg: DomainConfig, overlays: tuple[Path, ...]) -> PromptSet:
        """The templates, searched in order: the variant's overlay, domain.template_dir, the packaged ones."""
        return PromptSet(self.name, list(self.template_names), cfg.template_dir, overlays=overlays)

    # ----------------------------------------------------------------- harness identity
    def editable_sources(self) -> dict[str, str]:
        """The effective text of every editable template (variant overlay, template_dir, packaged)."""
        return {name: text for name in self.editable_templates if (text := self.prompts.source(name)) is not None}

    @property
    def variant_id(self) -> str:
        """Content hash of the harness this domain runs: editable templates and task-shaping knobs."""
        return content_hash(self.editable_sources(), knob_values(self.cfg))

    # ----------------------------------------------------------------- challenger
    def challenger_messages(self, doc_text: str, history: list[FailedAttempt], method: str,
                            gen: Optional[GenerateConfig] = None) -> list[dict]:
        """The writer's prompt; ``gen`` (the run's generate settings; defaults when None) decides what the prompt
        says the strong model reads (``strong_sees_document``)."""
        template = lookup(self.METHODS, method, "method", key="method.name")
        return self.prompts.messages(template, document=doc_text, feedback_groups=feedback_groups(history),
                                     cfg=self.cfg, gen=gen if gen is not None else GenerateConfig())

    def _challenger_schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def parse_task(self, obj: dict) -> Task:
        raise NotImplementedError

    # ----------------------------------------------------------------- quality
    def structural_problems(self, task: Task, doc_text: str) -> list[str]:
        """The framework's own quality rules; each problem is written as an instruction to the writer."""
        problems = []
        visible = f"{task.context}\n{task.question}"
        for phrase in checks.phrases_found(task.question, self.cfg.banned_phrasings):
            problems.append(f"question uses the banned phrasing {phrase!r}, which weak models game; ask for a "
                            "concrete prediction, derivation or decision instead")
        opener = checks.starts_like_recall(task.question, self.cfg.recall_openers)
        if opener:
            problems.append(f"question opens with {opener!r}, a recall question; ask for reasoning the "
                            "solver must carry out (predict, derive, compare, decide)")
        for phrase in checks.phrases_found(visible, self.self_references):
            problems.append(f"question or context mentions {phrase!r}, but the solver never sees the source; "
                            "state what is needed directly")
        if checks.contains_answer(task.reference_answer, visible):
            problems.append("the reference answer is written in the question or context (answer leakage); "
                            "remove it from what the solver sees")
        else:
            gram = checks.leaked_ngram(task.reference_answer, task.context, self.cfg.leakage_ngram)
            if gram:
                problems.append(f"context repeats the reference answer's words {gram!r} (answer leakage); "
                                "rewrite the context so it does not give the answer away")
        return problems + self.domain_problems(task, doc_text)

    def domain_problems(self, task: Task, doc_text: str) -> list[str]:
        return []

    def hard_rule_problems(self, task: Task) -> list[str]:
        """Rules that force the loop judge's verdict to improve (checked even with structural checks off)."""
        return []

    def qv_messages(self, task: Task, doc_text: str) -> list[dict]:
        return self.prompts.messages("qv", task=task, document=doc_text, cfg=self.cfg)

    def parse_qv(self, obj: dict) -> tuple[bool, str]:
        f = Fields(obj, "quality verifier output")
        feedback = f.text("feedback", allow_empty=True)
        verdict = f.choice("verdict", ("PASS", "FAIL"))
        f.raise_if_any()
        return verdict == "PASS", feedback

    # ----------------------------------------------------------------- solving and grading
    def solver_messages(self, task: Task, doc_text: Optional[str]) -> list[dict]:
        """``doc_text`` given means privileged access (the strong solver sees the source).

        A multi-turn task's earlier turns go between the system prompt and the question as real turns, so the
        model answers the conversation it would see in use, not a transcript pasted into one message.
        """
        *system, question = self.prompts.messages("solver", task=task, document=doc_text)
        return [*system, *task.earlier_messages, question]

    def judge_messages(self, task: Task, answer: str) -> list[dict]:
        raise NotImplementedError

    def judge_schema(self, task: Task) -> dict[str, Any]:
        raise NotImplementedError

    def parse_grade(self, task: Task, obj: dict) -> Grade:
        raise NotImplementedError

    def feedback_messages(self, task: Task, reason: str, weak_scores: list[float], strong_scores: list[float],
                          detail: str) -> list[dict]:
        return self.prompts.messages(
            "feedback", task=task, reason=reason, group=GROUP_TITLES.get(reason, reason.upper()),
            weak_scores=[round(s, 3) for s in weak_scores], strong_scores=[round(s, 3) for s in strong_scores],
            detail=detail, acceptance=self.cfg.acceptance,
        )

    # ----------------------------------------------------------------- legal-only steps
    extractor_schema: dict[str, Any] = {}
    loop_judge_schema: dict[str, Any] = {}

    def extractor_messages(self, doc_text: str) -> list[dict]:
        raise NotImplementedError(f"domain {self.name!r} has no extractor step (has_extractor is False)")

    def parse_extractor(self, obj: dict) -> tuple[bool, str]:
        raise NotImplementedError(f"domain {self.name!r} has no extractor step (has_extractor is False)")

    def loop_judge_messages(self, task: Task, weak_answers: list[str], strong_answers: list[str],
                            weak_scores: list[float], strong_scores: list[float]) -> list[dict]:
        raise NotImplementedError(f"domain {self.name!r} has no loop judge (has_loop_judge is False)")

    def parse_loop_judge(self, obj: dict) -> dict[str, Any]:
        raise NotImplementedError(f"domain {self.name!r} has no loop judge (has_loop_judge is False)")
