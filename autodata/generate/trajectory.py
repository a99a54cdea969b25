"""A recorded call's prompt, rendered again from the run dir and checked against the hash the run recorded.

``rounds.jsonl`` keeps each call's prompt as a reference (autodata/generate/recorder.py): the template, the
harness variant, the sha256 of the messages and, when the source document went in, its id, hash and length.
``render_call`` rebuilds the messages from what the run dir keeps: its ``config.yaml`` (the domain as the run
built it, a variant's templates included), the document from the corpus by id (cut to the length the run sent),
and the task, answers and earlier failures from the document's round rows. It raises ``TrajectoryError``
when the call is not there, or when the rendering's hash differs from the recorded one (the templates, the
corpus or the code changed since the run). ``autodata show`` (autodata/generate/show.py) is its command line::

    autodata show runs/cs_agentic doc0 2 qv
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from autodata.config import RootConfig
from autodata.corpus import CorpusError, Document, text_sha256
from autodata.domains.base import Domain, FailedAttempt, Task
from autodata.generate.recorder import messages_sha256
from autodata.guard import final_answer


class TrajectoryError(ValueError):
    """A call that cannot be shown: not in the run dir, or its prompt no longer renders to what was sent."""


def run_config(run_dir: Path) -> RootConfig:
    """The config a run recorded (``<run_dir>/config.yaml``, written after validation: domain and variant
    knobs resolved)."""
    from omegaconf import OmegaConf

    from autodata.config import to_typed

    path = run_dir / "config.yaml"
    if not path.exists():
        raise TrajectoryError(f"{run_dir} has no config.yaml: give the run dir of a stage=generate run (the folder "
                              "that holds rounds.jsonl and config.yaml)")
    try:
        return to_typed(OmegaConf.load(path))
    except Exception as err:  # noqa: BLE001 - any unreadable config makes the run unusable here; say why
        raise TrajectoryError(f"{path} cannot be read ({type(err).__name__}: {err})") from err


def document_rounds(run_dir: Path, document_id: str) -> dict[int, dict[str, Any]]:
    """The document's round rows by round number (a later row of the same round wins, as resume keeps it).

    Only lines that hold the id's JSON string are parsed: a paper-scale rounds.jsonl is mostly other
    documents' rows.
    """
    path = run_dir / "rounds.jsonl"
    if not path.exists():
        raise TrajectoryError(f"{run_dir} has no rounds.jsonl: give the run dir of a stage=generate run")
    needle = json.dumps(document_id, ensure_ascii=False).encode("utf-8")
    rows: dict[int, dict[str, Any]] = {}
    with path.open("rb") as fh:
        for raw in fh:
            if needle not in raw:
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(row, dict) and row.get("document_id") == document_id:
                rows[int(row["round"])] = row
    return rows


def scores(runs: list[dict[str, Any]]) -> list[float]:
    """The graded scores of a row's solver runs, as ``SolverResult.scores`` had them (ungraded runs left out).

    >>> scores([{"score": 1.0}, {"score": None}, {"score": 0.0}])
    [1.0, 0.0]
    """
    return [r["score"] for r in runs if r.get("score") is not None]


def history_before(rows: dict[int, dict[str, Any]], rnd: int) -> list[FailedAttempt]:
    """The earlier failures the agentic challenger of round ``rnd`` was told about, as ``_run_agentic`` built
    them: in each earlier round, its failed candidates in index order, then the round's rejected decision with
    its diagnosis when its task reached the solvers."""
    history: list[FailedAttempt] = []
    for r in sorted(k for k in rows if 1 <= k < rnd):
        row = rows[r]
        solved = "weak" in row
        if "challengers" in row:
            history.extend(FailedAttempt(r, c["reason"], c.get("question") or "", c["detail"], None, None)
                           for c in row["challengers"] if not c["passed"])
        elif not solved:
            # One challenger, and its task failed the checks: the row is that candidate's
            history.append(FailedAttempt(r, row["reason"], (row.get("task") or {}).get("question", ""),
                                         row["detail"], None, None))
        if solved and row["status"] == "rejected":
            history.append(FailedAttempt(r, row["reason"], row["task"]["question"], row.get("diagnosis", ""),
                                         row.get("weak_mean"), row.get("strong_mean")))
    return history


def call_of(row: dict[str, Any], step: str) -> dict[str, Any]:
    """The call of ``row`` named ``step``; the error lists the round's steps."""
    for call in row.get("calls", []):
        if call.get("step") == step:
            return call
    steps = ", ".join(c.get("step", "?") for c in row.get("calls", [])) or "none"
    raise TrajectoryError(f"document {row['document_id']} round {row['round']} has no call {step!r}; its calls: "
                          f"{steps}")


class RunRenderer:
    """One run dir's config, domain and corpus, read once, for rendering any number of its calls."""

    def __init__(self, run_dir: Path, cfg: Optional[RootConfig] = None):
        """``cfg`` replaces the run's config.yaml (a run dir written without one: the meta-optimizer's scoring
        runs, tests)."""
        self.run_dir = Path(run_dir)
        self.cfg = cfg if cfg is not None else run_config(self.run_dir)
        self._domain: Optional[Domain] = None
        self._docs: Optional[dict[str, Document]] = None

    @property
    def domain(self) -> Domain:
        if self._domain is None:
            from autodata.domains import build_domain

            self._domain = build_domain(self.cfg.domain)
        return self._domain

    def rounds(self, document_id: str) -> dict[int, dict[str, Any]]:
        rows = document_rounds(self.run_dir, document_id)
        if not rows:
            raise TrajectoryError(f"document {document_id!r} has no row in {self.run_dir / 'rounds.jsonl'}; "
                                  "documents.jsonl lists the run's documents")
        return rows

    def row(self, document_id: str, rnd: int) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
        rows = self.rounds(document_id)
        if rnd not in rows:
            raise TrajectoryError(f"document {document_id!r} has no round {rnd}; its rounds: "
                                  f"{', '.join(map(str, sorted(rows)))}")
        return rows, rows[rnd]

    def document_text(self, ref: dict[str, Any]) -> str:
        """The document's text as the run sent it: the corpus's text by id, cut to the recorded length."""
        if self._docs is None:
            from autodata.corpus import load_corpus

            try:
                docs, _ = load_corpus(self.cfg.corpus)
            except CorpusError as err:
                raise TrajectoryError(f"the run's corpus cannot be read: {err}") from err
            self._docs = {d.id: d for d in docs}
        doc = self._docs.get(ref["id"])
        where = f"corpus.source={self.cfg.corpus.source} corpus.path={self.cfg.corpus.path}"
        if doc is None:
            raise TrajectoryError(f"document {ref['id']!r} is not in the run's corpus ({where}); run the command "
                                  "where the run's corpus paths resolve")
        text = doc.text[:ref["chars"]]
        if text_sha256(text) != ref["sha256"]:
            raise TrajectoryError(f"document {ref['id']!r} in the corpus ({where}) is not the text the run sent (its "
                                  f"first {ref['chars']} characters hash differently): the corpus changed since the "
                                  "run")
        return text

    def render(self, document_id: str, rnd: int, step: str) -> list[dict]:
        """The messages call ``step`` of round ``rnd`` sent, checked against its recorded hash."""
        rows, row = self.row(document_id, rnd)
        call = call_of(row, step)
        ref = call.get("prompt")
        if ref is None:
            if "messages" in call:
                # Recorded before prompt references: the row has the messages themselves
                return call["messages"]
            raise TrajectoryError(f"call {step!r} of document {document_id!r} round {rnd} has neither a prompt "
                                  "reference nor messages")
        doc_text = self.document_text(ref["document"]) if ref.get("document") else None
        messages = self._messages(rows, row, step, doc_text)
        got = messages_sha256(messages)
        if got != ref["sha256"]:
            raise TrajectoryError(
                f"call {step!r} of document {document_id!r} round {rnd} (template {ref['template']}, variant "
                f"{ref['variant']}) renders to sha256 {got[:12]}…, but the run sent {ref['sha256'][:12]}…: its "
                "templates (packaged, domain.template_dir or the variant at domain.variant) or the code that fills "
                "them changed since the run. Check out the run's commit (run_info.json, git) to see it, or rerun "
                "with generate.prompts_in_rounds=full to keep the messages")
        return messages

    def _messages(self, rows: dict[int, dict[str, Any]], row: dict[str, Any], step: str,
                  doc_text: Optional[str]) -> list[dict]:
        domain = self.domain
        head, _, rest = step.partition("/")
        if step == "extract":
            return domain.extractor_messages(_need(doc_text, step))
        if head == "challenger":
            method = row.get("method") or self.cfg.method.name
            history = [] if method == "cot" else history_before(rows, row["round"])
            return domain.challenger_messages(_need(doc_text, step), history, method, self.cfg.generate)
        if head == "qv":
            return domain.qv_messages(candidate_task(row, int(rest or 0)), _need(doc_text, step))
        task = Task.from_dict(row["task"])
        weak, strong = row.get("weak") or [], row.get("strong") or []
        if head in ("weak", "strong"):
            return domain.solver_messages(task, doc_text)
        if head == "judge":
            side, _, index = rest.partition("/")
            answer = (weak if side == "weak" else strong)[int(index)]["answer"]
            return domain.judge_messages(task, final_answer(answer))
        if step == "feedback":
            return domain.feedback_messages(task, row["reason"], scores(weak), scores(strong), row["detail"])
        if step == "loop_judge":
            return domain.loop_judge_messages(task, [r["answer"] for r in weak], [r["answer"] for r in strong],
                                              scores(weak), scores(strong))
        raise TrajectoryError(f"step {step!r} is not a step this module can render")


def candidate_task(row: dict[str, Any], index: int) -> Task:
    """The task candidate ``index`` of the round wrote (the one its quality verifier read)."""
    if "challengers" in row:
        task = row["challengers"][index].get("task")
        if task is None:
            raise TrajectoryError(f"candidate {index} of document {row['document_id']} round {row['round']} has no "
                                  "task recorded (rows written before candidates kept theirs)")
        return Task.from_dict(task)
    return Task.from_dict(row["task"])


def _need(doc_text: Optional[str], step: str) -> str:
    if doc_text is None:
        raise TrajectoryError(f"call {step!r} always sends the document, but its prompt reference names none")
    return doc_text


def render_call(run_dir: Path, document_id: str, rnd: int, step: str,
                cfg: Optional[RootConfig] = None) -> list[dict]:
    """The messages call ``step`` of round ``rnd`` of ``document_id`` sent, rendered again and checked against
    the recorded sha256 (``TrajectoryError`` when they differ or the call is not there). Steps are the recorder's:
    "challenger", "challenger/1", "qv", "qv/1", "weak/0", "strong/2", "judge/weak/1", "feedback", "extract",
    "loop_judge"."""
    return RunRenderer(run_dir, cfg).render(document_id, rnd, step)


__all__ = ["RunRenderer", "TrajectoryError", "document_rounds", "history_before", "render_call", "run_config"]
