"""``stage=generate``: make a dataset with Agentic Self-Instruct or the CoT baseline.

    python -m autodata.run stage=generate                     # embedded SmolLM2 on the embedded corpus
    python -m autodata.run stage=generate method=cot
    python -m autodata.run stage=generate hydra.run.dir=runs/x  # run again with the same dir to resume

Writes into the run dir: accepted.jsonl, rounds.jsonl, documents.jsonl (the
resume ledger), train.jsonl / heldout.jsonl, dataset/ (a datasets DatasetDict),
stats.json and cache.sqlite (the response cache).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Optional

from autodata.backends.base import BackendError, EndpointUnreachable
from autodata.cache import ResponseCache
from autodata.config import RootConfig
from autodata.corpus import Document, load_corpus
from autodata.domains import build_domain
from autodata.generate.loop import DocOutcome, DocumentRunner
from autodata.generate.outputs import finalize, print_summary
from autodata.llm import LLM
from autodata.rundir import JsonlWriter, read_jsonl, rewrite_jsonl
from autodata.tracking import flatten, start_wandb

log = logging.getLogger(__name__)


class GenerateAborted(RuntimeError):
    pass


def prepare_resume(run_dir: Path) -> set[str]:
    """Finished documents from the ledger; drop partial rows of unfinished ones.

    A document counts as finished only once its ledger row is written (after
    its accepted row). Rows of documents that were mid-way when the run was
    killed are removed, so redoing them (free, from the response cache) does not
    duplicate anything.
    """
    done = {row["document_id"] for row in read_jsonl(run_dir / "documents.jsonl")}
    for name, key in (("rounds.jsonl", "document_id"), ("accepted.jsonl", "document_id")):
        path = run_dir / name
        if path.exists():
            seen: set[tuple] = set()
            kept = []
            for row in read_jsonl(path):
                ident = (row.get(key), row.get("round"))
                if row.get(key) in done and ident not in seen:
                    seen.add(ident)
                    kept.append(row)
            rewrite_jsonl(path, kept)
    ledger = list(read_jsonl(run_dir / "documents.jsonl"))
    unique = {row["document_id"]: row for row in ledger}
    if len(unique) != len(ledger):
        rewrite_jsonl(run_dir / "documents.jsonl", unique.values())
    return done


async def generate(cfg: RootConfig, run_dir: Path, llm: Optional[LLM] = None) -> dict[str, Any]:
    """Run the stage; ``llm`` may be injected (tests drive the loop with a scripted backend)."""
    started = time.time()
    docs, skipped = load_corpus(cfg.corpus)
    domain = build_domain(cfg.domain)
    run_dir.mkdir(parents=True, exist_ok=True)
    done = prepare_resume(run_dir)
    todo = [d for d in docs if d.id not in done]
    if done:
        log.info("resuming: %d of %d documents already finished", len(docs) - len(todo), len(docs))

    cache = ResponseCache(cfg.cache.path or run_dir / "cache.sqlite") if cfg.cache.enabled else None
    owns_llm = llm is None
    if llm is None:
        llm = LLM(cfg.models, cache=cache, seed=cfg.generate.seed)
    if todo:
        try:
            await llm.check()
        except EndpointUnreachable as err:
            if owns_llm:
                await llm.aclose()
            raise GenerateAborted(f"{err}\nNothing was generated in this run; start the server (or fix the "
                                  f"URL) and rerun the same command.") from err

    rounds_out = JsonlWriter(run_dir / "rounds.jsonl")
    accepted_out = JsonlWriter(run_dir / "accepted.jsonl")
    ledger_out = JsonlWriter(run_dir / "documents.jsonl")
    runner = DocumentRunner(cfg, llm, domain, on_round=rounds_out.write)
    progress = _progress(cfg, len(docs), len(docs) - len(todo))
    wandb_run = start_wandb(cfg, run_dir, job_type="generate")
    counts = {"accepted": 0, "finished": 0, "errors": 0}
    gate = asyncio.Semaphore(cfg.generate.max_docs_in_flight)

    async def one(doc: Document) -> None:
        async with gate:
            try:
                outcome: DocOutcome = await runner.run(doc)
            except EndpointUnreachable:
                raise
            except BackendError as err:
                # Not written to the ledger: the next run of the same dir retries this document.
                log.error("document %s failed and will be retried on resume: %s", doc.id, err)
                counts["errors"] += 1
                return
        if outcome.example is not None:
            accepted_out.write(outcome.example)
        ledger_out.write({"document_id": doc.id, "status": outcome.status, "rounds_used": outcome.rounds_used,
                          "reason": outcome.reason})
        counts["finished"] += 1
        counts["accepted"] += outcome.example is not None
        if progress is not None:
            progress.update(1)
            progress.set_postfix(accepted=counts["accepted"])
        if wandb_run is not None:
            wandb_run.log({"generate/docs_done": counts["finished"], "generate/accepted": counts["accepted"],
                           "generate/acceptance_rate": counts["accepted"] / counts["finished"]})

    tasks = [asyncio.ensure_future(one(doc)) for doc in todo]
    try:
        for fut in asyncio.as_completed(tasks):
            await fut
    except EndpointUnreachable as err:
        raise GenerateAborted(
            f"{err}\nFinished documents are saved in {run_dir}. Fix the endpoint, then rerun the same command "
            f"with hydra.run.dir={run_dir} to resume."
        ) from err
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in (rounds_out, accepted_out, ledger_out):
            writer.close()
        if progress is not None:
            progress.close()
        if owns_llm:
            await llm.aclose()
        if cache is not None:
            cache.close()

    stats = finalize(cfg, run_dir, docs, skipped, llm, wall_seconds=time.time() - started,
                     document_errors=counts["errors"])
    if wandb_run is not None:
        wandb_run.summary.update(dict(flatten("generate", stats)))
        wandb_run.finish()
    return stats


def _progress(cfg: RootConfig, total: int, initial: int):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="documents", unit="doc")


def run(cfg: RootConfig, run_dir: Path) -> None:
    try:
        stats = asyncio.run(generate(cfg, run_dir))
    except GenerateAborted as err:
        log.error("%s", err)
        raise SystemExit(3) from None
    log.info("accepted %d of %d documents (%d rounds, %.0f s); failures: %s; stats in %s", stats["accepted"],
             stats["documents"], stats["rounds"], stats["wall_seconds"], stats["failure_reasons"] or "none",
             run_dir / "stats.json")
    print_summary(stats, run_dir)
