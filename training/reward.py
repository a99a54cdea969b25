"""The GRPO reward: the domain's judge grades each completion against its example (async, concurrent).

One scoring implementation with the generate stage: the judge sees the domain's
judge prompt (``Domain.judge_messages``: the completion fenced as data, the
rubric criterion by criterion, or the reference answer for verifiable domains),
returns per-criterion verdicts (or an equivalence verdict), and the framework
computes the score (``Domain.parse_grade`` -> ``scoring.rubric_score``). Calls go
through ``autodata.llm.LLM`` with role ``judge``, so the endpoint, the response
cache, retries, timeouts and the one JSON repair are the generate stage's.

Per completion, in order:
1. ``final_answer``: the text after the last ``</think>``; a completion whose
   reasoning never closed (cut off by max_completion_length, also when the
   chat template opened the block inside the prompt, as Qwen3.5's does) has
   no answer: reward 0;
2. the injection guard (``autodata.guard``): an attempt to instruct the judge
   gets reward 0 with no judge call, and is logged; then, when the optional
   screen role is declared (``autodata.screen``), a model's verdict on the
   answers the patterns pass: one that addresses the grader instead of the
   question is flagged the same way (flag ``screen``); a failed screen call
   leaves the answer to the judge;
3. the judge call. A failure after retries and the repair (an answer too long
   for the judge's context even after the backend shrinks it, say) gets
   ``failure_reward`` (``train.judge_failure_reward``, default 0.0), so a policy
   gains nothing by making the judge fail. ``None`` keeps the old exclusion:
   TRL 1.16 turns it into NaN, leaves it out of the group baseline and gives it
   zero advantage. Either way its status stays "failure" (counted in
   ``judge/failures`` and rewards.jsonl), apart from a graded 0.

TRL awaits ``JudgeReward.__call__`` (an async reward function); all judge calls
of a step run at once with ``asyncio.gather``, so a step's reward time is about
one judge call's latency, not k of them. The LLM lives on a ``JudgeLoop`` (one
event loop on a daemon thread for the whole run), so its HTTP clients and
batchers never see a second event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional, Sequence, TypeVar

from autodata.domains import Domain, Task
from autodata.examples import task_of
from autodata.guard import final_answer, injection_flags
from autodata.reasoning import with_reasoning
from autodata.llm import LLM
from autodata.screen import SCREEN_FLAG, Screen

if TYPE_CHECKING:
    from training.monitor import HackingMonitor

log = logging.getLogger(__name__)
T = TypeVar("T")

# Characters of a flagged completion kept in injections.jsonl and the log line
EXCERPT_CHARS = 500


class JudgeLoop:
    """One event loop on a daemon thread; coroutines from any thread or loop run on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="autodata-judge-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[T], timeout: Optional[float] = None) -> T:
        """Block the calling thread until ``coro`` finishes on the judge loop."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def run_async(self, coro: Awaitable[T]) -> T:
        """Await ``coro`` on the judge loop from another event loop (TRL's)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class Outcome:
    """The grade of one completion."""

    # On a judge failure: the configured failure reward (None: TRL excludes the completion)
    reward: Optional[float]
    # graded | failure | injection | empty
    status: str
    flags: list[str] = field(default_factory=list)
    met: Optional[list[bool]] = None
    correct: Optional[bool] = None
    latency_s: float = 0.0
    error: Optional[str] = None


@dataclass
class BatchResult:
    outcomes: list[Outcome]
    # Wall time of the whole batch (all judge calls, concurrent)
    seconds: float
    cache_hits: int = 0
    # With the screen on (else None): distinct answers it was asked about, and calls that failed (judge graded)
    screen_calls: Optional[int] = None
    screen_failures: int = 0

    @property
    def rewards(self) -> list[Optional[float]]:
        return [o.reward for o in self.outcomes]

    def metrics(self) -> dict[str, float]:
        """Per-step numbers, logged as train/judge/... (the names the README lists)."""
        status = Counter(o.status for o in self.outcomes)
        latencies = [o.latency_s for o in self.outcomes if o.status in ("graded", "failure")]
        out = {
            "judge/calls": float(len(latencies)),
            "judge/cache_hits": float(self.cache_hits),
            "judge/failures": float(status["failure"]),
            "judge/injection_flags": float(status["injection"]),
            "judge/empty_answers": float(status["empty"]),
            "judge/reward_time_s": self.seconds,
        }
        if latencies:
            out["judge/latency_mean_s"] = statistics.fmean(latencies)
            out["judge/latency_max_s"] = max(latencies)
        if self.screen_calls is not None:
            out["judge/screen_calls"] = float(self.screen_calls)
            out["judge/screen_flags"] = float(sum(SCREEN_FLAG in o.flags for o in self.outcomes))
            out["judge/screen_failures"] = float(self.screen_failures)
        return out


def completion_text(completion: Any) -> str:
    """TRL passes a string (standard prompts) or a list of messages (chat prompts)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))
    return str(completion)


def digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def is_truncated(ids: Sequence[int], max_length: Optional[int], eos_ids: Sequence[int]) -> bool:
    """A completion that filled the token budget without an end-of-turn token was cut off.

    >>> is_truncated([5, 6, 7], 3, [2]), is_truncated([5, 6, 2], 3, [2]), is_truncated([5, 2], 3, [2])
    (True, False, False)
    """
    return bool(max_length) and len(ids) >= max_length and (not ids or ids[-1] not in eos_ids)


class JudgeDown(RuntimeError):
    """The judge failed every call of several reward batches in a row: training would learn from nothing."""


class JudgeReward:
    """TRL reward function (async): ``await reward(prompts=..., completions=..., task=..., example_id=...)``.

    ``task`` and ``example_id`` are dataset columns (see ``training.data``);
    TRL passes every column to the reward function, one value per completion.
    """

    def __init__(
        self,
        domain: Domain,
        llm: LLM,
        *,
        loop: Optional[JudgeLoop] = None,
        strip_reasoning: bool = True,
        injection_guard: bool = True,
        concurrency: Optional[int] = None,
        max_completion_length: Optional[int] = None,
        eos_token_ids: Sequence[int] = (),
        on_outcome: Optional[Callable[[dict[str, Any]], None]] = None,
        on_injection: Optional[Callable[[dict[str, Any]], None]] = None,
        max_failed_batches: int = 0,
        failure_reward: Optional[float] = 0.0,
        screen: Optional[Screen] = None,
        monitor: Optional["HackingMonitor"] = None,
    ):
        self.domain = domain
        self.llm = llm
        self.loop = loop
        self.strip_reasoning = strip_reasoning
        self.injection_guard = injection_guard
        # None: every call of a batch at once (the endpoint's max_concurrency still bounds it); 1: sequential
        self.concurrency = concurrency
        self.max_completion_length = max_completion_length
        self.eos_token_ids = list(eos_token_ids)
        self.on_outcome = on_outcome
        self.on_injection = on_injection
        # Raise JudgeDown after this many consecutive batches whose judge calls all failed (0: never)
        self.max_failed_batches = max_failed_batches
        self.failed_batches = 0
        # The reward of a completion the judge failed to grade (None: TRL leaves it out, advantage 0)
        self.failure_reward = failure_reward
        # The optional screen (models.roles.screen): asked about the answers the guard's patterns pass
        self.screen = screen
        # A training.monitor.HackingMonitor: per step, the hacking/* metrics and alerts (None: not monitored)
        self.monitor = monitor
        # TRL names the reward's metrics (rewards/<name>/mean) after this
        # (the domain class says how it grades: rubric_judge or equivalence_judge)
        self.__name__ = f"{domain.grading}_judge"
        # The policy's chat template opens the reasoning block inside the prompt (set by the train stage from the
        # tokenizer): every completion then starts mid-reasoning (autodata/reasoning.py)
        self.prompt_opens_reasoning = False
        self.totals: Counter[str] = Counter()
        self._tasks: dict[str, Task] = {}

    async def __call__(self, prompts: list, completions: list, task: list[str], example_id: Optional[list[str]] = None,
                       completion_ids: Optional[list[list[int]]] = None, trainer_state: Any = None,
                       log_metric: Optional[Callable[[str, float], None]] = None,
                       log_extra: Optional[Callable[[str, list], None]] = None, **_: Any) -> list[Optional[float]]:
        texts = [completion_text(c) for c in completions]
        step = int(getattr(trainer_state, "global_step", 0) or 0)
        work = self.score(task, texts, example_id, step=step)
        result = await (self.loop.run_async(work) if self.loop is not None else work)
        self._check_judge_up(result, step)
        metrics = result.metrics()
        truncated = None
        if completion_ids is not None and self.max_completion_length:
            truncated = [is_truncated(ids, self.max_completion_length, self.eos_token_ids) for ids in completion_ids]
            metrics["truncation_rate"] = sum(truncated) / max(1, len(truncated))
        if self.monitor is not None:
            metrics.update(self.monitor.observe(step, texts, result.outcomes, example_id, completion_ids,
                                                truncated).metrics)
        if log_metric is not None:
            for name, value in metrics.items():
                log_metric(name, value)
        if log_extra is not None:
            log_extra("judge_status", [o.status for o in result.outcomes])
            log_extra("injection_flags", [",".join(o.flags) for o in result.outcomes])
        return result.rewards

    def _check_judge_up(self, result: BatchResult, step: int) -> None:
        calls = [o for o in result.outcomes if o.status in ("graded", "failure")]
        if not calls:
            return  # nothing was sent to the judge (all empty or flagged): says nothing about it
        if any(o.status == "graded" for o in calls):
            self.failed_batches = 0
            return
        self.failed_batches += 1
        if self.max_failed_batches and self.failed_batches >= self.max_failed_batches:
            last = next(o.error for o in reversed(calls) if o.error)
            raise JudgeDown(f"the judge failed all {len(calls)} calls of each of the last {self.failed_batches} "
                            f"reward batches (step {step}); last error: {last}")

    async def score(self, tasks: Sequence[str | Task], texts: Sequence[str], ids: Optional[Sequence[str]] = None,
                    step: int = 0) -> BatchResult:
        """Grade every (task, completion) pair concurrently; one Outcome per pair, in order."""
        if len(tasks) != len(texts):
            raise ValueError(f"score got {len(tasks)} tasks for {len(texts)} completions; pass one task per completion")
        ids = list(ids) if ids is not None else [f"#{i}" for i in range(len(texts))]
        gate = asyncio.Semaphore(self.concurrency) if self.concurrency else None
        usage = self.llm.usage["judge"]
        cached_before = usage.cached_calls
        screened_before = self.screen.totals.copy() if self.screen is not None else None
        started = time.perf_counter()

        async def one(i: int) -> Outcome:
            task = tasks[i] if isinstance(tasks[i], Task) else self._task(tasks[i])
            if gate is None:
                return await self.grade(task, texts[i], ids[i], step)
            async with gate:
                return await self.grade(task, texts[i], ids[i], step)

        outcomes = list(await asyncio.gather(*(one(i) for i in range(len(texts)))))
        result = BatchResult(outcomes, time.perf_counter() - started, usage.cached_calls - cached_before)
        if screened_before is not None:
            result.screen_calls = self.screen.totals["calls"] - screened_before["calls"]
            result.screen_failures = self.screen.totals["failures"] - screened_before["failures"]
        self.totals.update(o.status for o in outcomes)
        self.totals["completions"] += len(outcomes)
        return result

    def _task(self, encoded: str) -> Task:
        task = self._tasks.get(encoded)
        if task is None:
            task = self._tasks[encoded] = task_of(encoded)
        return task

    async def grade(self, task: Task, text: str, example_id: str, step: int = 0) -> Outcome:
        text = with_reasoning(text, opened=self.prompt_opens_reasoning)
        answer = final_answer(text) if self.strip_reasoning else text.strip()
        if not answer:
            outcome = Outcome(0.0, "empty")
        elif self.injection_guard and (flags := injection_flags(answer, task.rubric, task.question)):
            outcome = Outcome(0.0, "injection", flags=flags)
            self._report_injection(example_id, step, flags, answer)
        elif self.screen is not None and await self.screen.addresses_grader(task.question, answer):
            outcome = Outcome(0.0, "injection", flags=[SCREEN_FLAG])
            self._report_injection(example_id, step, [SCREEN_FLAG], answer)
        else:
            outcome = await self._judge(task, answer, example_id)
        if self.on_outcome is not None:
            self.on_outcome({"step": step, "example_id": example_id, "completion_sha1": digest(text),
                             "reward": outcome.reward, "status": outcome.status, "flags": outcome.flags,
                             "met": outcome.met, "correct": outcome.correct,
                             "latency_s": round(outcome.latency_s, 4), "error": outcome.error})
        return outcome

    async def _judge(self, task: Task, answer: str, example_id: str) -> Outcome:
        started = time.perf_counter()
        try:
            result = await self.llm.chat_json(
                "judge", self.domain.judge_messages(task, answer), schema=self.domain.judge_schema(task),
                parse=lambda obj: self.domain.parse_grade(task, obj), schema_name="verdicts",
                # Content-addressed: an identical completion of the same example is a cache hit.
                seed_key=f"train/{example_id}/{digest(answer)}",
            )
        except Exception as err:  # noqa: BLE001 - a judge failure must never stop training
            latency = time.perf_counter() - started
            log.warning("judge call failed for example %s after retries (reward %s): %s", example_id,
                        self.failure_reward, err)
            return Outcome(self.failure_reward, "failure", latency_s=latency, error=f"{type(err).__name__}: {err}")
        latency = time.perf_counter() - started
        if not result.ok:
            log.warning("judge output unusable for example %s after one repair (reward %s): %s", example_id,
                        self.failure_reward, result.error)
            return Outcome(self.failure_reward, "failure", latency_s=latency, error=result.error)
        grade = result.value
        return Outcome(grade.score, "graded", met=grade.met, correct=grade.correct, latency_s=latency)

    def _report_injection(self, example_id: str, step: int, flags: list[str], answer: str) -> None:
        excerpt = answer[:EXCERPT_CHARS]
        log.warning("injection guard: completion of example %s at step %d tried to instruct the judge (%s); "
                    "reward 0: %r", example_id, step, ", ".join(flags), excerpt[:160])
        if self.on_injection is not None:
            self.on_injection({"step": step, "example_id": example_id, "flags": flags, "excerpt": excerpt})
