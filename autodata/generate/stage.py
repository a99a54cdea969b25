"""``stage=generate``: make a dataset with Agentic Self-Instruct or the CoT baseline.

    python -m autodata.run stage=generate                     # embedded SmolLM2 on the embedded corpus
    python -m autodata.run stage=generate method=cot
    python -m autodata.run stage=generate hydra.run.dir=runs/x  # run again with the same dir to resume
    python -m autodata.run stage=generate hydra.run.dir=runs/x generate.target_accepted=1300 \
        generate.push_to_hub=my-org/cs_agentic                  # stop at 1300 examples, publish them

Writes into the run dir: accepted.jsonl, rounds.jsonl, documents.jsonl (the
resume ledger), train.jsonl / heldout.jsonl, dataset/ (a datasets DatasetDict
and its card, README.md), stats.json and cache.sqlite (the response cache).

Exit codes: 0 done; 3 an endpoint could not be reached or the run was set up
wrong (finished documents are kept; rerun the same command to resume); 4 every
local output is written but the push to generate.push_to_hub failed (rerun the
same command to retry it; nothing is generated again). run.py exits 2 on a
config error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional

from autodata.backends.base import BackendError, EndpointUnreachable
from autodata.cache import ResponseCache
from autodata.config import RootConfig
from autodata.corpus import Document, load_corpus
from autodata.domains import build_domain
from autodata.generate.card import command_line
from autodata.generate.hub import push_dataset, repo_id_problem
from autodata.generate.loop import DocOutcome, DocumentRunner
from autodata.generate.outputs import finalize, print_summary, target_status
from autodata.generate.progress import Counts, Progress
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
    repo_id = cfg.generate.push_to_hub
    if repo_id and repo_id_problem(repo_id):
        # Before any work: a typo found after hours of generation would cost the push.
        raise GenerateAborted(repo_id_problem(repo_id))
    docs, skipped = load_corpus(cfg.corpus)
    domain = build_domain(cfg.domain)
    run_dir.mkdir(parents=True, exist_ok=True)
    done = prepare_resume(run_dir)
    todo = [d for d in docs if d.id not in done]
    if done:
        log.info("resuming: %d of %d documents already finished", len(docs) - len(todo), len(docs))
    # Run-dir totals, so the target counts what earlier processes accepted (prepare_resume kept only finished rows).
    counts = Counts(accepted=sum(1 for _ in read_jsonl(run_dir / "accepted.jsonl")),
                    rounds=sum(1 for _ in read_jsonl(run_dir / "rounds.jsonl")), finished=len(docs) - len(todo))
    target = cfg.generate.target_accepted

    def target_reached() -> bool:
        return target is not None and counts.accepted >= target

    if target is not None:
        log.info("target: %d accepted examples (%d already in %s)", target, counts.accepted, run_dir)

    cache = ResponseCache(cfg.cache.path or run_dir / "cache.sqlite") if cfg.cache.enabled else None
    owns_llm = llm is None
    if llm is None:
        llm = LLM(cfg.models, cache=cache, seed=cfg.generate.seed)
    if todo and not target_reached():
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
    wandb_run = start_wandb(cfg, run_dir, job_type="generate")
    progress = Progress(counts, llm, bar=_bar(cfg, len(docs), counts.finished), wandb_run=wandb_run, target=target)

    def on_round(row: dict[str, Any]) -> None:
        rounds_out.write(row)
        progress.round_done()

    runner = DocumentRunner(cfg, llm, domain, on_round=on_round, on_call=progress.call_done)
    gate = asyncio.Semaphore(cfg.generate.max_docs_in_flight)

    async def one(doc: Document) -> None:
        # Every document is scheduled at once behind the gate, so the target is checked when a document
        # gets its slot: nothing new starts after the target, and documents in flight finish.
        async with gate:
            if target_reached():
                # Not written to the ledger: a rerun with a larger target starts this document.
                counts.not_started += 1
                return
            try:
                outcome: DocOutcome = await runner.run(doc)
            except EndpointUnreachable:
                raise
            except BackendError as err:
                # Not written to the ledger: the next run of the same dir retries this document.
                log.error("document %s failed and will be retried on resume: %s", doc.id, err)
                counts.errors += 1
                return
            # Counted before the slot is released, so the next document's target check sees this one.
            if outcome.example is not None:
                accepted_out.write(outcome.example)
            ledger_out.write({"document_id": doc.id, "status": outcome.status, "rounds_used": outcome.rounds_used,
                              "reason": outcome.reason})
            progress.document_done(accepted=outcome.example is not None)

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
        progress.close()
        if owns_llm:
            await llm.aclose()
        if cache is not None:
            cache.close()

    stats = finalize(cfg, run_dir, docs, skipped, llm, wall_seconds=time.time() - started,
                     document_errors=counts.errors, documents_not_started=counts.not_started)
    if wandb_run is not None:
        wandb_run.summary.update(dict(flatten("generate", stats)))
        wandb_run.finish()
    if repo_id:
        sizes = {"train": stats["train_examples"], "heldout": stats["heldout_examples"]}
        stats["hub"] = push_dataset(run_dir, repo_id, cfg.generate.hub_private, sizes, retry_command(run_dir))
        (run_dir / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


def retry_command(run_dir: Path) -> str:
    """This process's command, pinned to its run dir so a rerun resumes (and retries the push) there."""
    argv = list(sys.argv)
    if not any(a.startswith("hydra.run.dir=") for a in argv[1:]):
        argv.append(f"hydra.run.dir={run_dir}")
    return command_line(argv)


def _bar(cfg: RootConfig, total: int, initial: int):
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
    accepted = target_status(stats) or f"accepted {stats['accepted']} of {stats['documents']} documents"
    log.info("%s; %d rounds, %.0f s; failures: %s; stats in %s", accepted, stats["rounds"], stats["wall_seconds"],
             stats["failure_reasons"] or "none", run_dir / "stats.json")
    print_summary(stats, run_dir)
    hub = stats.get("hub")
    if hub is not None and not hub["pushed"]:
        # Logged in full by push_dataset; the exit code tells a pipeline or SLURM script the data is not published.
        log.error("the dataset is in %s but was not pushed to %s (exit code 4)", run_dir / "dataset", hub["repo_id"])
        raise SystemExit(4)
