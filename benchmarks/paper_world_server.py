"""A "paper world" fake OpenAI-compatible server: one model role of the paper's CS loop, with a scripted difficulty.

benchmarks/bench_paper_scale.py starts one of these per role (challenger, quality_verifier, weak_solver,
strong_solver, judge, feedback), each in its own process with its own latency, so a generate run against them
walks the paper's loop without any inference. Run one by hand:

    python benchmarks/paper_world_server.py --role judge --latency 1.0 --max-concurrency 256 --port 0

The world (every decision is a pure function of the prompt, so a resumed or cached run sees the same answers):

* each corpus document carries ``PAPERWORLD-DOC id=<id> rounds=<r>``: the round r (1..generate.max_rounds) at
  which its task is accepted (benchmarks/bench_paper_scale.py's ``make_corpus`` draws them);
* the challenger writes a valid cs task whose question starts with ``PWQ id=<qid> r=<r> a=<a>``: a is the number of
  earlier attempts listed in its prompt (the feedback history repeats each earlier question, shortened to
  QUESTION_CHARS_IN_FEEDBACK characters from its start, so the marker survives);
* the quality verifier passes everything; the solvers answer ``ANSWER <weak|strong> <hash>``; feedback writes a
  short diagnosis;
* the judge grades round a+1 of a document: at a+1 >= r the weak answer meets no positive criterion and the strong
  one all of them (cs_paper accepts: weak 0.0, strong 1.0); earlier, 80% of questions (by a hash of qid) are too
  easy (weak scores 1.0, so early exit stops the weak solver after 2 of 3 runs and the strong never runs) and 20%
  fail on strong (both score 0.0). Penalty criteria (the cs domain asks for >= 3) are met exactly when the
  positive ones are not, so scores are 0.0 or 1.0.

Busy share: the server keeps every request's (start, end) wall-clock times. ``POST /busy`` with
``{"windows": [[t0, t1], ...]}`` returns the integral of requests in flight over each window (seconds);
divided by max_concurrency x (t1 - t0) it is the share of the role's slots kept busy. ``GET /stats`` gives the
request count, peak and current in-flight counts and the first request's start; ``POST /reset`` clears them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Optional

from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_openai_server import READY, serve_app  # noqa: E402

ROLES = ("challenger", "quality_verifier", "weak_solver", "strong_solver", "judge", "feedback")
TOO_EASY_SHARE = 0.8
# A cs rubric: the domain's defaults want 10-15 criteria, >= 4 positive and >= 3 penalties (negative weights)
POSITIVE_CRITERIA = 7
PENALTY_CRITERIA = 3

DOC_MARKER = re.compile(r"PAPERWORLD-DOC id=(\S+) rounds=(\d+)")
QUESTION_MARKER = re.compile(r"PWQ id=(\w+) r=(\d+) a=(\d+)")
ANSWER_MARKER = re.compile(r"ANSWER (weak|strong)\b")
VERDICT_COUNT = re.compile(r"exactly (\d+) verdicts")
PENALTY_LINE = re.compile(r"^(\d+)\. \[penalty", re.MULTILINE)


def _digest(*parts: Any) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()


def unit(*parts: Any) -> float:
    """A number in [0, 1) fixed by ``parts`` (the same in every process).

    >>> unit("q1") == unit("q1") and 0 <= unit("q1") < 1
    True
    """
    return int(_digest(*parts)[:8], 16) / 16**8


def user_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(str(m.get("content") or "") for m in messages if m.get("role") != "system")


def challenger_task(prompt: str) -> dict[str, Any]:
    """The task the challenger writes for a prompt: its question carries the document's rounds and the attempt.

    >>> task = challenger_task("PAPERWORLD-DOC id=d7 rounds=3 ...")
    >>> task["question"].split(".")[0].split()[2:]
    ['r=3', 'a=0']
    >>> len(task["rubric"]), sum(c["weight"] < 0 for c in task["rubric"])
    (10, 3)
    """
    found = DOC_MARKER.search(prompt)
    if found is None:
        raise ValueError("challenger prompt has no PAPERWORLD-DOC marker: was the corpus made by make_corpus?")
    doc_id, rounds = found.group(1), int(found.group(2))
    # Every earlier question is listed once in the feedback history, marker first
    attempt = len(QUESTION_MARKER.findall(prompt))
    qid = _digest(doc_id, attempt)[:12]
    rubric = [{"criterion": f"Derives consequence {i} of the mechanism for case {qid}", "weight": 5,
               "category": "reasoning"} for i in range(1, POSITIVE_CRITERIA + 1)]
    rubric += [{"criterion": f"Confuses quantity {i} with its inverse in case {qid}", "weight": -3,
                "category": "error"} for i in range(1, PENALTY_CRITERIA + 1)]
    return {
        "plan": f"Attempt {attempt} on a source that needs {rounds} rounds.",
        "question_type": "derivation",
        "tags": ["causal reasoning", "quantitative estimate"],
        "context": f"A system processes a stream of jobs under a fixed budget; scenario {qid}.",
        "question": f"PWQ id={qid} r={rounds} a={attempt}. Derive how the throughput of scenario {qid} changes "
                    f"when its budget doubles, and state the limiting factor.",
        "reference_answer": f"Throughput of {qid} rises until the queue becomes the bound, then stays flat.",
        "rubric": rubric,
    }


def passes(qid: str, rounds: int, attempt: int, solver: str) -> bool:
    """Whether ``solver``'s answer to question ``qid`` (attempt ``attempt`` on a document that needs ``rounds``
    rounds) meets its rubric.

    >>> passes("q", 3, 2, "weak"), passes("q", 3, 2, "strong")       # round 3 of 3: accepted
    (False, True)
    """
    if attempt + 1 >= rounds:
        return solver == "strong"
    too_easy = unit("too_easy", qid) < TOO_EASY_SHARE
    return too_easy


def judge_verdicts(prompt: str) -> dict[str, Any]:
    """The judge's verdicts for one answer, ids 1..n (n read from the prompt), penalties met when the answer fails.

    >>> judge_verdicts("PWQ id=q r=1 a=0. ... 1. a\\n2. [penalty: x] b\\n... exactly 2 verdicts ... ANSWER strong 1")
    {'verdicts': [{'id': 1, 'met': True}, {'id': 2, 'met': False}]}
    """
    question, solver, count = QUESTION_MARKER.search(prompt), ANSWER_MARKER.search(prompt), VERDICT_COUNT.search(prompt)
    if question is None or solver is None or count is None:
        raise ValueError("judge prompt lacks the PWQ question marker, the ANSWER line or 'exactly N verdicts'")
    ok = passes(question.group(1), int(question.group(2)), int(question.group(3)), solver.group(1))
    penalties = {int(i) for i in PENALTY_LINE.findall(prompt)}
    n = int(count.group(1))
    return {"verdicts": [{"id": i, "met": (not ok) if i in penalties else ok} for i in range(1, n + 1)]}


def answer(role: str, messages: list[dict[str, Any]], seed: Any) -> str:
    prompt = user_text(messages)
    if role == "challenger":
        return json.dumps(challenger_task(prompt))
    if role == "quality_verifier":
        return json.dumps({"feedback": "Well posed.", "verdict": "PASS"})
    if role in ("weak_solver", "strong_solver"):
        side = role.split("_")[0]
        return f"ANSWER {side} {_digest(prompt, seed)[:10]}: the queue becomes the bound."
    if role == "judge":
        return json.dumps(judge_verdicts(prompt))
    if role == "feedback":
        return "The idea was general knowledge; ask for a derivation only the source's mechanism supports."
    raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")


class Tracker:
    """Every request's start and end (wall clock), for request counts, peak in flight and busy integrals.

    >>> t = Tracker(); t.done = [(0.0, 2.0), (1.0, 3.0)]
    >>> t.busy_seconds(1.0, 2.0)     # two requests in flight over the whole second
    2.0
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.done: list[tuple[float, float]] = []
        self.open: dict[int, float] = {}
        self.requests = 0
        self.peak = 0
        self.first_start: Optional[float] = None

    def begin(self) -> int:
        token = self.requests
        now = time.time()
        self.requests += 1
        self.open[token] = now
        self.peak = max(self.peak, len(self.open))
        if self.first_start is None:
            self.first_start = now
        return token

    def end(self, token: int) -> None:
        # A request begun before a reset is not counted (pop finds nothing)
        started = self.open.pop(token, None)
        if started is not None:
            self.done.append((started, time.time()))

    def busy_seconds(self, t0: float, t1: float, now: Optional[float] = None) -> float:
        """Integral of requests in flight over [t0, t1]; requests still running count up to ``now``."""
        now = time.time() if now is None else now
        spans = self.done + [(s, now) for s in self.open.values()]
        return sum(max(0.0, min(e, t1) - max(s, t0)) for s, e in spans)

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "completed": len(self.done), "in_flight": len(self.open),
                "peak_in_flight": self.peak, "first_start": self.first_start,
                "last_end": max((e for _, e in self.done), default=None)}


def make_app(role: str, latency_s: float, max_concurrency: int, output_tokens: int = 0) -> web.Application:
    tracker = Tracker()

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        token = tracker.begin()
        try:
            await asyncio.sleep(latency_s)
            n = int(body.get("n") or 1)
            messages = body.get("messages") or []
            contents = [answer(role, messages, (body.get("seed"), i)) for i in range(n)]
        finally:
            tracker.end(token)
        prompt_tokens = sum(len(str(m.get("content") or "")) for m in messages) // 4
        completion = sum(output_tokens or len(c) // 4 for c in contents)
        return web.json_response({
            "id": "chatcmpl-paperworld", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "paperworld"),
            "choices": [{"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": "stop",
                         "logprobs": None} for i, c in enumerate(contents)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                      "total_tokens": prompt_tokens + completion},
        })

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": "paperworld", "object": "model", "created": 0, "owned_by": "bench"}]})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"role": role, "latency_s": latency_s, "max_concurrency": max_concurrency,
                                  **tracker.stats()})

    async def busy(request: web.Request) -> web.Response:
        windows = (await request.json()).get("windows") or []
        now = time.time()
        return web.json_response({"busy_seconds": [tracker.busy_seconds(t0, t1, now) for t0, t1 in windows],
                                  "max_concurrency": max_concurrency})

    async def reset(request: web.Request) -> web.Response:
        tracker.reset()
        return web.json_response({"reset": True})

    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/stats", stats)
    app.router.add_post("/busy", busy)
    app.router.add_post("/reset", reset)
    return app


async def _serve(role: str, host: str, port: int, latency_s: float, max_concurrency: int, output_tokens: int) -> None:
    await serve_app(make_app(role, latency_s, max_concurrency, output_tokens), host, port,
                    f"role={role} latency={latency_s}")


def start_server(role: str, latency_s: float, max_concurrency: int, output_tokens: int = 0,
                 host: str = "127.0.0.1") -> tuple[subprocess.Popen, str]:
    """Start one role's server in a child process; (the process, its base URL http://host:port/v1)."""
    argv = [sys.executable, os.path.abspath(__file__), "--role", role, "--host", host, "--port", "0",
            "--latency", str(latency_s), "--max-concurrency", str(max_concurrency),
            "--output-tokens", str(output_tokens)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline() if process.stdout else ""
    if not line.startswith(READY):
        process.kill()
        raise RuntimeError(f"paper world server for {role} did not start (exit code {process.poll()}, said "
                           f"{line!r}); run python {__file__} --role {role} --port 0 to see why")
    return process, line.split()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", required=True, choices=ROLES)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds before each chat answer")
    parser.add_argument("--max-concurrency", type=int, default=256,
                        help="the client's request cap for this role: the denominator of the busy share")
    parser.add_argument("--output-tokens", type=int, default=0,
                        help="completion tokens reported per answer (0: characters / 4)")
    args = parser.parse_args()
    asyncio.run(_serve(args.role, args.host, args.port, args.latency, args.max_concurrency, args.output_tokens))


if __name__ == "__main__":
    main()
