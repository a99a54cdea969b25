"""``stage=eval``: sample the evaluated model on held-out sets, grade each sample, compute mean@k / best@k / pass@k.

    python -m autodata.run stage=eval eval.datasets=[runs/cs_agentic] hydra.run.dir=runs/eval_base
    python -m autodata.run stage=eval models=openai models.base_url=http://localhost:8000/v1 \\
        models.roles.weak_solver.model=runs/train_cs_agentic/final eval.datasets=[runs/cs_cot,runs/cs_agentic]
    python -m autodata.run stage=eval domain=principia eval.datasets=[data/principia_bench.jsonl] eval.n=8

The evaluated model plays role ``weak_solver`` (``eval.model`` is a shortcut for
``models.roles.weak_solver.model``); role ``judge`` grades with the generate
stage's judge and scoring (``Domain.parse_grade``). A sample the judge cannot
grade (after the repair round, or a failed request) is counted in
``judge_failures`` and left out of every metric, never scored 0.

Writes into the run dir: ``samples.jsonl`` (one row per graded completion),
``prompts.jsonl`` (the resume ledger: a prompt is finished once its row is
there), ``metrics.json`` and ``cache.sqlite``. Rerunning with the same
``hydra.run.dir`` skips finished prompts and recomputes metrics.json from every
sample on disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

from autodata.backends.base import BackendError, Completion, EndpointUnreachable
from autodata.cache import ResponseCache
from autodata.config import EndpointConfig, EvalConfig, RootConfig, endpoint_for
from autodata.domains import Domain, build_domain
from autodata.llm import LLM
from autodata.rundir import JsonlWriter, read_jsonl, rewrite_jsonl
from eval import metrics as M
from eval.sets import EvalDataError, EvalItem, EvalSet, load_sets
from training.guard import final_answer

log = logging.getLogger(__name__)

SAMPLES = "samples.jsonl"
LEDGER = "prompts.jsonl"
METRICS = "metrics.json"


class EvalAborted(RuntimeError):
    pass


def prepare_resume(run_dir: Path) -> set[tuple[str, str]]:
    """Finished (dataset, prompt id) pairs; samples of unfinished prompts are dropped (they are redone)."""
    done = {(r["dataset"], r["prompt_id"]) for r in read_jsonl(run_dir / LEDGER)}
    path = run_dir / SAMPLES
    if path.exists():
        seen: set[tuple] = set()
        kept = []
        for row in read_jsonl(path):
            ident = (row.get("dataset"), row.get("prompt_id"), row.get("sample"))
            if ident[:2] in done and ident not in seen:
                seen.add(ident)
                kept.append(row)
        rewrite_jsonl(path, kept)
    return done


async def grade(llm: LLM, domain: Domain, item: EvalItem, completion: Completion, strip_reasoning: bool,
                seed_key: str) -> dict[str, Any]:
    """Score, verdicts and judge error of one completion (never raises for a judge failure)."""
    answer = final_answer(completion.text) if strip_reasoning else completion.text
    out: dict[str, Any] = {"score": None, "verdicts": None, "correct": None, "judge_error": None}
    if not answer.strip():
        # No answer to grade (empty, or reasoning that never closed): the model's failure, scored 0.
        out.update(score=0.0, empty_answer=True)
        return out
    task = item.task
    try:
        result = await llm.chat_json("judge", domain.judge_messages(task, answer), schema=domain.judge_schema(task),
                                     parse=lambda obj: domain.parse_grade(task, obj), seed_key=seed_key)
    except EndpointUnreachable:
        raise
    except BackendError as err:
        out["judge_error"] = f"judge request failed: {err}"
        return out
    if not result.ok:
        out["judge_error"] = result.error
        return out
    out.update(score=result.value.score, verdicts=result.value.met, correct=result.value.correct)
    return out


async def eval_prompt(llm: LLM, domain: Domain, cfg: EvalConfig, eval_set: EvalSet, item: EvalItem) -> list[dict]:
    key = f"eval/{eval_set.name}/{item.id}"
    completions = await llm.chat("weak_solver", item.prompt, n=cfg.n, seed_key=f"{key}/solve")
    grades = await asyncio.gather(*(grade(llm, domain, item, c, cfg.strip_reasoning, f"{key}/judge/{i}")
                                    for i, c in enumerate(completions)))
    return [{"dataset": eval_set.name, "prompt_id": item.id, "sample": i, "completion": c.text,
             "finish_reason": c.finish_reason, "completion_tokens": c.completion_tokens, **g}
            for i, (c, g) in enumerate(zip(completions, grades))]


def dataset_metrics(rows: list[dict], n: int, pass_threshold: float) -> dict[str, Any]:
    """Every metric of one set from its sample rows (judge failures excluded, counted)."""
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_prompt[r["prompt_id"]].append(r)
    scores = [[r["score"] for r in sorted(rs, key=lambda r: r["sample"]) if r.get("score") is not None]
              for rs in by_prompt.values()]
    out: dict[str, Any] = {
        "prompts": len(by_prompt),
        "samples": len(rows),
        "judge_failures": sum(1 for r in rows if r.get("judge_error")),
        "prompts_without_grade": sum(1 for s in scores if not s),
        "empty_answers": sum(1 for r in rows if r.get("empty_answer")),
    }
    for k in sorted({1, n}):
        out[f"mean_at_{k}"] = M.mean_at_k(scores, k).to_dict()
        out[f"best_at_{k}"] = M.best_at_k(scores, k).to_dict()
        out[f"pass_at_{k}"] = M.pass_at_k(scores, k, pass_threshold).to_dict()
        if M.is_binary(scores):
            out[f"avg_at_{k}"] = M.avg_at_k(scores, k).to_dict()
    out["truncation_rate"] = M.truncation_rate([r.get("finish_reason", "") for r in rows]).to_dict()
    return out


def compute_metrics(cfg: RootConfig, run_dir: Path, sets: list[EvalSet]) -> dict[str, Any]:
    rows = list(read_jsonl(run_dir / SAMPLES))
    by_set: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_set[r["dataset"]].append(r)
    return {
        "model": endpoint_for(cfg.models, "weak_solver").model,
        "judge": endpoint_for(cfg.models, "judge").model,
        "domain": cfg.domain.name,
        "n": cfg.eval.n,
        "datasets": {s.name: {"path": str(s.path), "format": s.format, "items": len(s.items),
                              **dataset_metrics(by_set.get(s.name, []), cfg.eval.n, cfg.eval.pass_threshold)}
                     for s in sets},
    }


def apply_shortcuts(cfg: RootConfig) -> None:
    if cfg.eval.model:
        cfg.models.roles.setdefault("weak_solver", EndpointConfig()).model = cfg.eval.model


async def evaluate(cfg: RootConfig, run_dir: Path, llm: Optional[LLM] = None) -> dict[str, Any]:
    """Run the stage; ``llm`` may be injected (tests drive it with a scripted backend)."""
    apply_shortcuts(cfg)
    domain = build_domain(cfg.domain)
    sets = load_sets(cfg.eval.datasets, domain, cfg.eval.limit)
    run_dir.mkdir(parents=True, exist_ok=True)
    earlier_n = {r.get("n") for r in read_jsonl(run_dir / LEDGER)} - {cfg.eval.n}
    if earlier_n:
        raise EvalDataError(f"{run_dir} holds samples drawn with eval.n={sorted(earlier_n, key=str)}, but this run "
                            f"asks for eval.n={cfg.eval.n}; mean@k would mix the two. Rerun with the earlier "
                            "eval.n, or use a new hydra.run.dir")
    done = prepare_resume(run_dir)
    todo = [(s, item) for s in sets for item in s.items if (s.name, item.id) not in done]
    if done:
        log.info("resuming: %d prompts already evaluated, %d to go", len(done), len(todo))

    cache = ResponseCache(cfg.cache.path or run_dir / "cache.sqlite") if cfg.cache.enabled else None
    owns_llm = llm is None
    if llm is None:
        llm = LLM(cfg.models, cache=cache, seed=cfg.eval.seed)
    samples_out = JsonlWriter(run_dir / SAMPLES)
    ledger_out = JsonlWriter(run_dir / LEDGER)
    gate = asyncio.Semaphore(cfg.eval.max_prompts_in_flight)
    errors = {"prompts": 0}

    async def one(eval_set: EvalSet, item: EvalItem) -> None:
        async with gate:
            try:
                rows = await eval_prompt(llm, domain, cfg.eval, eval_set, item)
            except EndpointUnreachable:
                raise
            except BackendError as err:
                # Not in the ledger: the next run of the same dir retries this prompt.
                log.error("prompt %s/%s failed and will be retried on resume: %s", eval_set.name, item.id, err)
                errors["prompts"] += 1
                return
        for row in rows:
            samples_out.write(row)
        ledger_out.write({"dataset": eval_set.name, "prompt_id": item.id, "n": cfg.eval.n, "samples": len(rows),
                          "judge_failures": sum(1 for r in rows if r["judge_error"])})

    tasks = [asyncio.ensure_future(one(s, item)) for s, item in todo]
    try:
        if todo:
            await llm.check()
        for fut in asyncio.as_completed(tasks):
            await fut
    except EndpointUnreachable as err:
        raise EvalAborted(f"{err}\nFinished prompts are saved in {run_dir}. Fix the endpoint, then rerun the same "
                          f"command with hydra.run.dir={run_dir} to resume.") from err
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        samples_out.close()
        ledger_out.close()
        if owns_llm:
            await llm.aclose()
        if cache is not None:
            cache.close()

    result = compute_metrics(cfg, run_dir, sets)
    result["prompt_errors_this_run"] = errors["prompts"]
    (run_dir / METRICS).write_text(json.dumps(result, indent=2))
    return result


def run(cfg: RootConfig, run_dir: Path) -> None:
    try:
        result = asyncio.run(evaluate(cfg, run_dir))
    except (EvalAborted, EvalDataError) as err:
        log.error("%s", err)
        raise SystemExit(3) from None
    for name, m in result["datasets"].items():
        n = result["n"]
        log.info("%s: mean@%d %s best@%d %s (%d prompts, %d judge failures, truncation %s)", name, n,
                 _fmt(m[f"mean_at_{n}"]), n, _fmt(m[f"best_at_{n}"]), m["prompts"], m["judge_failures"],
                 _fmt(m["truncation_rate"]))
    log.info("metrics in %s", run_dir / METRICS)


def _fmt(est: dict[str, Any]) -> str:
    return "n/a" if est["value"] is None else f"{est['value']:.3f}±{est['stderr']:.3f}"
