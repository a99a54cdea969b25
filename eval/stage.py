"""``stage=eval``: sample the evaluated model on held-out sets, grade each sample, compute mean@k / best@k / pass@k.

    python -m autodata.run stage=eval eval.datasets=[runs/cs_agentic] hydra.run.dir=runs/eval_base
    python -m autodata.run stage=eval models=openai models.base_url=http://localhost:8000/v1 \\
        models.roles.weak_solver.model=runs/train_cs_agentic/final eval.datasets=[runs/cs_cot,runs/cs_agentic]
    python -m autodata.run stage=eval domain=principia eval.datasets=[data/principia_bench.jsonl] eval.n=8

The evaluated model plays role ``weak_solver`` (``eval.model`` is a shortcut for
``models.roles.weak_solver.model``). Every role in ``eval.judges`` (``judge``, and
``judge_<name>`` roles declared in ``models.roles``) grades every sample with the
generate stage's judge prompt and scoring (``Domain.parse_grade``); each judge
gets its own metrics. A sample a judge cannot grade (after the repair round, or
a failed request) is counted in that judge's ``judge_failures`` and left out of
its metrics, never scored 0.

Writes into the run dir: ``samples.jsonl`` (one row per completion, with a grade
per judge), ``prompts.jsonl`` (the resume ledger: a prompt is finished once its
row is there), ``metrics.json`` and ``cache.sqlite``. Rerunning with the same
``hydra.run.dir`` skips finished prompts, grades finished samples with any judge
added since (and retries grades that failed), and recomputes metrics.json from
every sample on disk. A line of samples.jsonl or prompts.jsonl that cannot be
read (torn by a kill, or damaged) is moved to <file>.corrupt next to it, and its
prompt is sampled again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Optional

from autodata.backends.base import BackendError, Completion, EndpointUnreachable
from autodata.cache import ResponseCache
from autodata.config import EvalConfig, RootConfig, apply_eval_shortcuts, endpoint_for
from autodata.domains import Domain, build_domain
from autodata.guard import final_answer, injection_flags
from autodata.llm import LLM
from autodata.rundir import JsonlWriter, input_conflicts, rewrite_jsonl, salvage_jsonl, write_json_atomic
from autodata.tracking import flatten, start_wandb
from eval import metrics as M
from eval.sets import EvalDataError, EvalItem, EvalSet, load_sets, local_paths

log = logging.getLogger(__name__)

SAMPLES = "samples.jsonl"
LEDGER = "prompts.jsonl"
METRICS = "metrics.json"
# Version of the samples.jsonl rows: 2 keeps one grade per judge under "grades"
SAMPLES_FORMAT = 2


class EvalAborted(RuntimeError):
    pass


def prepare_resume(run_dir: Path, ledger: list[dict]) -> tuple[set[tuple[str, str]], list[dict]]:
    """Finished (dataset, prompt id) pairs and their sample rows; samples of unfinished prompts (and repeats)
    are dropped from samples.jsonl (those prompts are redone).

    ``ledger``: the rows of prompts.jsonl, read with ``salvage_jsonl`` (a ledger line lost to damage leaves its
    prompt unfinished). A prompt whose ledger row counts more samples than samples.jsonl still holds (a line
    lost there) is unfinished too: its ledger row is dropped and it is sampled again.
    """
    done = {(r["dataset"], r["prompt_id"]) for r in ledger}
    path = run_dir / SAMPLES
    rows = salvage_jsonl(path)
    kept: list[dict] = []
    seen: set[tuple] = set()
    for number, row in enumerate(rows, 1):
        if row.get("format") != SAMPLES_FORMAT:
            raise EvalDataError(
                f"{path} row {number} has samples format {row.get('format', 1)}; this version reads format "
                f"{SAMPLES_FORMAT} (one grade per judge under 'grades'). Evaluate into a new hydra.run.dir; "
                f"the existing files are left as they are")
        ident = (row.get("dataset"), row.get("prompt_id"), row.get("sample"))
        if ident[:2] in done and ident not in seen:
            seen.add(ident)
            kept.append(row)
    held = Counter((r["dataset"], r["prompt_id"]) for r in kept)
    short = {(r["dataset"], r["prompt_id"]) for r in ledger
             if isinstance(r.get("samples"), int) and held[(r["dataset"], r["prompt_id"])] < r["samples"]}
    for dataset, prompt_id in sorted(short):
        log.warning("prompt %s/%s is sampled again: its ledger row counts more samples than %s holds", dataset,
                    prompt_id, path)
    if short:
        done -= short
        kept = [r for r in kept if (r["dataset"], r["prompt_id"]) not in short]
        rewrite_jsonl(run_dir / LEDGER, [r for r in ledger if (r["dataset"], r["prompt_id"]) not in short])
    if len(kept) != len(rows):
        rewrite_jsonl(path, kept)
    return done, kept


def answer_of(text: str, strip_reasoning: bool) -> str:
    return final_answer(text) if strip_reasoning else text


async def grade(llm: LLM, domain: Domain, item: EvalItem, answer: str, judge: str, seed_key: str) -> dict[str, Any]:
    """One judge's score, verdicts and error for one answer (never raises for a judge failure)."""
    out: dict[str, Any] = {"score": None, "verdicts": None, "correct": None, "judge_error": None}
    if not answer.strip():
        # No answer to grade (empty, or reasoning that never closed): the model's failure, scored 0.
        out.update(score=0.0)
        return out
    task = item.task
    try:
        result = await llm.chat_json(judge, domain.judge_messages(task, answer), schema=domain.judge_schema(task),
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


def judge_seed_key(row: dict[str, Any], judge: str) -> str:
    # The primary judge role keeps the key of single-judge runs, so their cached verdicts still apply.
    suffix = "" if judge == "judge" else f"/{judge}"
    return f"eval/{row['dataset']}/{row['prompt_id']}/judge/{row['sample']}{suffix}"


def needs_grade(row: dict[str, Any], judge: str) -> bool:
    """No grade from this judge yet, or a failed one (retried: a transient error may have passed; an unusable
    verdict comes back from the response cache at no cost)."""
    grade = row["grades"].get(judge)
    return grade is None or bool(grade.get("judge_error"))


async def grade_row(llm: LLM, domain: Domain, item: EvalItem, row: dict[str, Any], cfg: EvalConfig) -> None:
    """Add the grades of ``cfg.judges`` (those the row lacks) to ``row['grades']``.

    With ``cfg.injection_guard`` an answer that tries to instruct the judge (``autodata.guard``,
    the check the GRPO reward applies) scores 0 for every judge without being sent to one.
    """
    answer = answer_of(row["completion"], cfg.strip_reasoning)
    row["empty_answer"] = not answer.strip()
    guarded = cfg.injection_guard and answer.strip()
    row["injection_flags"] = injection_flags(answer, item.task.rubric, item.task.question) if guarded else []
    missing = [j for j in cfg.judges if needs_grade(row, j)]
    if row["injection_flags"]:
        row["grades"].update({j: {"score": 0.0, "verdicts": None, "correct": None, "judge_error": None}
                              for j in missing})
        return
    results = await asyncio.gather(*(grade(llm, domain, item, answer, j, judge_seed_key(row, j)) for j in missing))
    row["grades"].update(zip(missing, results))


async def eval_prompt(llm: LLM, domain: Domain, cfg: EvalConfig, eval_set: EvalSet, item: EvalItem) -> list[dict]:
    key = f"eval/{eval_set.name}/{item.id}"
    completions = await llm.chat("weak_solver", item.prompt, n=cfg.n, seed_key=f"{key}/solve")
    rows = [{"format": SAMPLES_FORMAT, "dataset": eval_set.name, "prompt_id": item.id, "sample": i,
             "completion": c.text, "finish_reason": c.finish_reason, "completion_tokens": c.completion_tokens,
             "grades": {}} for i, c in enumerate(completions)]
    await asyncio.gather(*(grade_row(llm, domain, item, r, cfg) for r in rows))
    return rows


async def grade_finished_samples(llm: LLM, domain: Domain, cfg: EvalConfig, run_dir: Path,
                                 sets: list[EvalSet], rows: list[dict]) -> int:
    """Grade finished samples (``rows``, updated in place) with judges added since they were drawn, and retry
    failed grades; returns how many grades were (re)computed.

    The samples file is rewritten once, after every grade is in; a kill before that loses no sample, and the
    judge calls already made come back from the response cache on the rerun.
    """
    items = {(s.name, item.id): item for s in sets for item in s.items}
    gate = asyncio.Semaphore(cfg.max_prompts_in_flight * max(cfg.n, 1))
    todo = [r for r in rows if (r["dataset"], r["prompt_id"]) in items and any(needs_grade(r, j) for j in cfg.judges)]
    if not todo:
        return 0
    added = sum(1 for r in todo for j in cfg.judges if needs_grade(r, j))
    log.info("grading %d finished samples again: %d grades from judges added since, or that failed before",
             len(todo), added)
    await llm.check()

    async def one(row: dict[str, Any]) -> None:
        async with gate:
            await grade_row(llm, domain, items[(row["dataset"], row["prompt_id"])], row, cfg)

    await asyncio.gather(*(one(r) for r in todo))
    rewrite_jsonl(run_dir / SAMPLES, rows)
    return added


def metric_ks(cfg: EvalConfig) -> list[int]:
    """The k of every @k metric: ``eval.ks`` up to ``eval.n``, and ``eval.n`` itself.

    >>> metric_ks(EvalConfig(n=8, ks=[1, 3])), metric_ks(EvalConfig(n=1, ks=[1, 3]))
    ([1, 3, 8], [1])
    """
    return sorted({k for k in cfg.ks if k <= cfg.n} | {cfg.n})


def judge_metrics(rows: list[dict], judge: str, ks: list[int], pass_threshold: float) -> dict[str, Any]:
    """One judge's metrics of one set from its sample rows (that judge's failures excluded, counted).

    Each prompt's graded scores are in sample order, so the @k metrics that read the first k samples read the
    first k graded ones.
    """
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_prompt[r["prompt_id"]].append(r)
    grades = {pid: [r["grades"].get(judge, {}) for r in sorted(rs, key=lambda r: r["sample"])]
              for pid, rs in by_prompt.items()}
    scores = [[g["score"] for g in gs if g.get("score") is not None] for gs in grades.values()]
    out: dict[str, Any] = {
        "judge_failures": sum(1 for gs in grades.values() for g in gs if g.get("judge_error")),
        # Samples with no entry from this judge: 0 after every completed run (a judge added later grades the
        # finished samples first); anything else means samples.jsonl was changed by hand
        "ungraded": sum(1 for gs in grades.values() for g in gs if not g),
        "prompts_without_grade": sum(1 for s in scores if not s),
    }
    for k in ks:
        out[f"mean_at_{k}"] = M.mean_at_k(scores, k).to_dict()
        out[f"best_at_{k}"] = M.best_at_k(scores, k).to_dict()
        out[f"pass_at_{k}"] = M.pass_at_k(scores, k, pass_threshold).to_dict()
        if M.is_binary(scores):
            out[f"avg_at_{k}"] = M.avg_at_k(scores, k).to_dict()
    return out


def dataset_metrics(rows: list[dict], judges: list[str], ks: list[int], pass_threshold: float) -> dict[str, Any]:
    """Every metric of one set: sampling metrics once, grading metrics per judge.

    The primary judge's (``judges[0]``) metrics are also the set's top-level keys, so
    a report cell that names no judge reads them.
    """
    by_judge = {j: judge_metrics(rows, j, ks, pass_threshold) for j in judges}
    return {
        "prompts": len({r["prompt_id"] for r in rows}),
        "samples": len(rows),
        "empty_answers": sum(1 for r in rows if r.get("empty_answer")),
        # Answers that tried to instruct the judge: scored 0 by every judge, never sent to one
        "injection_flagged": sum(1 for r in rows if r.get("injection_flags")),
        "truncation_rate": M.truncation_rate([r.get("finish_reason", "") for r in rows]).to_dict(),
        "primary_judge": judges[0],
        **by_judge[judges[0]],
        "by_judge": by_judge,
    }


def compute_metrics(cfg: RootConfig, rows: list[dict], sets: list[EvalSet]) -> dict[str, Any]:
    """metrics.json from every sample row of the run (those on disk before it and those it drew)."""
    by_set: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_set[r["dataset"]].append(r)
    judges = list(cfg.eval.judges)
    ks = metric_ks(cfg.eval)
    solver = endpoint_for(cfg.models, "weak_solver")
    return {
        "model": solver.model,
        "temperature": solver.temperature,
        "max_tokens": solver.max_tokens,
        # The primary judge's model; judges maps every judge role to its model
        "judge": endpoint_for(cfg.models, judges[0]).model,
        "judges": {j: endpoint_for(cfg.models, j).model for j in judges},
        "domain": cfg.domain.name,
        "n": cfg.eval.n,
        "ks": ks,
        "datasets": {s.name: {"path": str(s.path), "format": s.format, "items": len(s.items),
                              **dataset_metrics(by_set.get(s.name, []), judges, ks, cfg.eval.pass_threshold)}
                     for s in sets},
    }


def refuse_foreign_inputs(cfg: RootConfig) -> None:
    """A held-out set or a trained model made under another domain cannot be graded by this one's judge."""
    found = [(f"eval.datasets: {path}", p) for given in cfg.eval.datasets for path in local_paths(given)
             for p in input_conflicts(path, cfg)]
    if cfg.eval.model and Path(cfg.eval.model).exists():
        found += [(f"eval.model: {cfg.eval.model}", p) for p in input_conflicts(Path(cfg.eval.model), cfg)]
    if found:
        lines = "\n".join(f"  - {where}: {what}" for where, what in found)
        raise EvalDataError(f"inputs from another experiment:\n{lines}\nPoint at runs of this experiment, add the "
                            "matching domain=... to the command, or set check_inputs=false to use them anyway")


async def evaluate(cfg: RootConfig, run_dir: Path, llm: Optional[LLM] = None) -> dict[str, Any]:
    """Run the stage; ``llm`` may be injected (tests drive it with a scripted backend)."""
    apply_eval_shortcuts(cfg)
    domain = build_domain(cfg.domain)
    refuse_foreign_inputs(cfg)
    dropped = sorted({k for k in cfg.eval.ks if k > cfg.eval.n})
    if dropped:
        log.warning("eval.ks: %s above eval.n=%d dropped (a prompt has only eval.n samples); raise eval.n to get "
                    "those @k metrics", ", ".join(f"k={k}" for k in dropped), cfg.eval.n)
    sets = load_sets(cfg.eval.datasets, domain, cfg.eval.limit)
    run_dir.mkdir(parents=True, exist_ok=True)
    ledger = salvage_jsonl(run_dir / LEDGER)
    earlier_n = {r.get("n") for r in ledger} - {cfg.eval.n}
    if earlier_n:
        raise EvalDataError(f"{run_dir} holds samples drawn with eval.n={sorted(earlier_n, key=str)}, but this run "
                            f"asks for eval.n={cfg.eval.n}; mean@k would mix the two. Rerun with the earlier "
                            "eval.n, or use a new hydra.run.dir")
    done, rows = prepare_resume(run_dir, ledger)
    todo = [(s, item) for s in sets for item in s.items if (s.name, item.id) not in done]
    if done:
        log.info("resuming: %d prompts already evaluated, %d to go", len(done), len(todo))

    cache = ResponseCache(cfg.cache.path or run_dir / "cache.sqlite") if cfg.cache.enabled else None
    owns_llm = llm is None
    if llm is None:
        llm = LLM(cfg.models, cache=cache, seed=cfg.eval.seed, roles=("weak_solver", *cfg.eval.judges))
    wandb_run = start_wandb(cfg, run_dir, job_type="eval")
    writers: list[JsonlWriter] = []
    gate = asyncio.Semaphore(cfg.eval.max_prompts_in_flight)
    counts = {"errors": 0, "finished": len(done), "total": len(done) + len(todo)}
    tasks: list[asyncio.Future] = []

    async def one(eval_set: EvalSet, item: EvalItem, samples_out: JsonlWriter, ledger_out: JsonlWriter) -> None:
        async with gate:
            try:
                drawn = await eval_prompt(llm, domain, cfg.eval, eval_set, item)
            except EndpointUnreachable:
                raise
            except BackendError as err:
                # Not in the ledger: the next run of the same dir retries this prompt.
                log.error("prompt %s/%s failed and will be retried on resume: %s", eval_set.name, item.id, err)
                counts["errors"] += 1
                return
        # One fsync for the prompt's samples, then the ledger row that marks them finished.
        samples_out.write_many(drawn)
        ledger_out.write({"dataset": eval_set.name, "prompt_id": item.id, "n": cfg.eval.n, "samples": len(drawn),
                          "judge_failures": {j: sum(1 for r in drawn if r["grades"][j]["judge_error"])
                                             for j in cfg.eval.judges}})
        rows.extend(drawn)
        counts["finished"] += 1
        if wandb_run is not None:
            wandb_run.log({"eval/prompts_done": counts["finished"],
                           "eval/progress": counts["finished"] / max(counts["total"], 1)})

    try:
        regraded = await grade_finished_samples(llm, domain, cfg.eval, run_dir, sets, rows) if rows else 0
        if todo:
            await llm.check()
        samples_out = JsonlWriter(run_dir / SAMPLES)
        ledger_out = JsonlWriter(run_dir / LEDGER)
        writers += [samples_out, ledger_out]
        tasks = [asyncio.ensure_future(one(s, item, samples_out, ledger_out)) for s, item in todo]
        for fut in asyncio.as_completed(tasks):
            await fut
    except EndpointUnreachable as err:
        if wandb_run is not None:
            wandb_run.finish(exit_code=3)
        raise EvalAborted(f"{err}\nFinished prompts are saved in {run_dir}. Fix the endpoint, then rerun the same "
                          f"command with hydra.run.dir={run_dir} to resume.") from err
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.close()
        if owns_llm:
            await llm.aclose()
        if cache is not None:
            cache.close()

    result = compute_metrics(cfg, rows, sets)
    result["prompt_errors_this_run"] = counts["errors"]
    result["grades_redone_this_run"] = regraded
    write_json_atomic(run_dir / METRICS, result)
    if wandb_run is not None:
        log_to_wandb(wandb_run, result, rows, sets, cfg.eval.strip_reasoning)
    return result


# Characters of each text (question, reference, answer, completion) in the W&B samples table; samples.jsonl keeps all
WANDB_TEXT_CHARS = 4000


# Columns of the W&B samples table before the score of each judge: what was asked, the reference, what the model
# answered (the graded text), the primary judge's score and whether the answer hit the token budget
SAMPLE_COLUMNS = ("dataset", "prompt_id", "sample", "question", "reference", "answer", "score", "truncated",
                  "finish_reason", "completion_tokens", "completion")


def samples_table(result: dict[str, Any], rows: list[dict], sets: list[EvalSet],
                  strip_reasoning: bool) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the W&B samples table: one row per completion, with its question and reference answer
    (from the eval set), the graded answer, the primary judge's score, truncated, and a ``score/<judge>`` column per
    judge. Texts are cut at WANDB_TEXT_CHARS (samples.jsonl keeps them whole)."""
    judges = list(result["judges"])
    primary = judges[0]
    items = {(s.name, item.id): item for s in sets for item in s.items}
    columns = [*SAMPLE_COLUMNS, *[f"score/{j}" for j in judges]]
    data = []
    for row in rows:
        item = items.get((row["dataset"], row["prompt_id"]))
        question = item.task.question if item else ""
        reference = item.task.reference_answer if item else ""
        data.append([row["dataset"], row["prompt_id"], row["sample"], question[:WANDB_TEXT_CHARS],
                     reference[:WANDB_TEXT_CHARS], answer_of(row["completion"], strip_reasoning)[:WANDB_TEXT_CHARS],
                     row["grades"].get(primary, {}).get("score"), row["finish_reason"] == "length",
                     row["finish_reason"], row["completion_tokens"], row["completion"][:WANDB_TEXT_CHARS],
                     *[row["grades"].get(j, {}).get("score") for j in judges]])
    return columns, data


def log_to_wandb(wandb_run: Any, result: dict[str, Any], rows: list[dict], sets: list[EvalSet],
                 strip_reasoning: bool = True) -> None:
    """Every metric into the run summary (``eval/<set>/<metric>``, ``eval/<set>/by_judge/<judge>/<metric>``)
    and the samples as a table (``samples_table``)."""
    import wandb

    wandb_run.summary.update(dict(flatten("eval", result["datasets"])))
    columns, data = samples_table(result, rows, sets, strip_reasoning)
    table = wandb.Table(columns=columns)
    for values in data:
        table.add_data(*values)
    wandb_run.log({"eval/samples": table})
    wandb_run.finish()


def run(cfg: RootConfig, run_dir: Path) -> None:
    try:
        result = asyncio.run(evaluate(cfg, run_dir))
    except (EvalAborted, EvalDataError) as err:
        log.error("%s", err)
        raise SystemExit(3) from None
    for name, m in result["datasets"].items():
        n = result["n"]
        log.info("%s: %d prompts, truncation %s", name, m["prompts"], _fmt(m["truncation_rate"]))
        for judge, jm in m["by_judge"].items():
            log.info("  graded by %s (%s): mean@%d %s best@%d %s, %d judge failures (excluded)", judge,
                     result["judges"][judge], n, _fmt(jm[f"mean_at_{n}"]), n, _fmt(jm[f"best_at_{n}"]),
                     jm["judge_failures"])
    log.info("metrics in %s", run_dir / METRICS)


def _fmt(est: dict[str, Any]) -> str:
    return "n/a" if est["value"] is None else f"{est['value']:.3f}±{est['stderr']:.3f}"
