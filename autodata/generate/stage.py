"""``stage=generate``: make a dataset with Agentic Self-Instruct or the CoT baseline.

    python -m autodata.run stage=generate                     # embedded SmolLM2 on the embedded corpus
    python -m autodata.run stage=generate method=cot
    python -m autodata.run stage=generate hydra.run.dir=runs/x  # run again with the same dir to resume
    python -m autodata.run stage=generate hydra.run.dir=runs/x generate.target_accepted=1300 \
        generate.push_to_hub=my-org/cs_agentic                  # stop at 1300 examples, publish them

Writes into the run dir: accepted.jsonl, rounds.jsonl, documents.jsonl (the
resume ledger), train.jsonl / heldout.jsonl, dataset/ (a datasets DatasetDict
and its card, README.md), stats.json and cache.sqlite (the response cache).
On resume, a line of accepted.jsonl, rounds.jsonl or documents.jsonl that
cannot be read (torn by a kill, or damaged) is moved to <file>.corrupt next
to it, and the document it belonged to is redone.

A document that still fails after the backend's retries (an answer that is
never a ChatCompletion, a prompt longer than the model's context) gets a ledger
row with status "error" and the reason; resume redoes it.

Exit codes: 0 done; 3 an endpoint could not be reached, does not serve the
model (404) or the run was set up wrong (finished documents are kept; rerun the
same command to resume); 4 every local output is written but the push to
generate.push_to_hub failed (rerun the same command to retry it; nothing is
generated again); 5 every output is written but some documents ended in error
(stats.json's document_errors; rerun the same command to redo them, or set
generate.allow_document_errors=true to exit 0). run.py exits 2 on a config
error or a corpus that cannot be read.

``generate`` is the stage without its exit codes, in three steps (``GenerateRun``: open the run, run the
documents, finish); ``score_documents`` runs the same loop on given documents for the meta-optimizer. Other
stages import them from ``autodata.generate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from autodata.backends.base import BackendError, EndpointUnreachable
from autodata.cache import ResponseCache
from autodata.config import RootConfig
from autodata.corpus import Document, load_corpus
from autodata.domains import Domain, build_domain
from autodata.generate.card import command_line
from autodata.generate.hub import push_dataset
from autodata.generate.documents import DocumentCap, document_cap
from autodata.generate.loop import DocOutcome, DocumentRunner, challengers_per_round
from autodata.generate.outputs import finalize, print_summary, target_status
from autodata.generate.progress import Counts, Progress
from autodata.hub_ids import repo_id_problem
from autodata.llm import LLM
from autodata.rundir import JsonlWriter, keep_rows, read_jsonl, rewrite_jsonl, salvage_jsonl, write_json_atomic
from autodata.tracking import flatten, start_wandb

log = logging.getLogger(__name__)


class GenerateAborted(RuntimeError):
    """An endpoint or the setup stopped the run; finished documents are kept (``run`` exits 3)."""


@dataclass
class ResumeState:
    """What earlier processes finished, as ``prepare_resume`` left the run dir."""

    done: set[str]
    # Rows kept in accepted.jsonl and rounds.jsonl (the run-dir totals the progress bar and the target start from)
    accepted: int = 0
    rounds: int = 0


def _ident(row: dict[str, Any]) -> tuple[Any, Any]:
    return row.get("document_id"), row.get("round")


def prepare_resume(run_dir: Path, extract_round: bool) -> ResumeState:
    """Finished documents from the ledger; every row of an unfinished one is dropped, so redoing it (free, from
    the response cache) duplicates nothing.

    A document counts as finished once its ledger row is written (after its round rows and its accepted row)
    and those rows are all still there; a row with status "error" does not finish it (its rows are dropped and it
    runs again). A line lost to damage (``salvage_jsonl`` moves it to ``<file>.corrupt``)
    unfinishes its document: a lost ledger row leaves nothing that says the document was done; a lost accepted
    or round row leaves a ledger row whose rows are incomplete. ``extract_round``: the domain's extractor
    writes a round 0 for every document.

    Each file is streamed once and only each row's document and round are kept, so start-up holds no answers or
    prompts in memory however long the run; a file is rewritten (a streamed copy) only when rows must go.
    """
    ledger_rows = salvage_jsonl(run_dir / "documents.jsonl")
    rounds = salvage_jsonl(run_dir / "rounds.jsonl", view=_ident)
    accepted = salvage_jsonl(run_dir / "accepted.jsonl", view=_ident)
    # The last row of a document wins (a row written twice is dropped below).
    ledger = {row["document_id"]: row for row in ledger_rows}
    rounds_of: dict[Any, set[Any]] = defaultdict(set)
    for doc_id, rnd in rounds:
        rounds_of[doc_id].add(rnd)
    with_example = {doc_id for doc_id, _ in accepted}
    done = {doc_id for doc_id, row in ledger.items() if row.get("status") != "error"}
    for doc_id, row in ledger.items():
        lost = lost_rows(row, rounds_of[doc_id], doc_id in with_example, extract_round)
        if lost:
            log.warning("document %s is redone: its ledger row says it finished, but %s", doc_id, lost)
            done.discard(doc_id)
    kept_count = {}
    for name, idents in (("rounds.jsonl", rounds), ("accepted.jsonl", accepted)):
        seen: set[tuple] = set()
        kept: set[int] = set()
        for i, ident in enumerate(idents):
            if ident[0] in done and ident not in seen:
                seen.add(ident)
                kept.add(i)
        if len(kept) != len(idents):
            keep_rows(run_dir / name, kept.__contains__)
        kept_count[name] = len(kept)
    kept_ledger = [row for doc_id, row in ledger.items() if doc_id in done]
    if len(kept_ledger) != len(ledger_rows):
        rewrite_jsonl(run_dir / "documents.jsonl", kept_ledger)
    return ResumeState(done, accepted=kept_count["accepted.jsonl"], rounds=kept_count["rounds.jsonl"])


def lost_rows(ledger_row: dict[str, Any], rounds: set[Any], has_example: bool, extract_round: bool) -> str:
    """What a finished document's ledger row promises that its other files lack; empty when nothing.

    Each round writes one row (round 0: the extractor's verdict) and an accepted document one example.

    >>> lost_rows({"status": "accepted", "rounds_used": 2}, {1}, False, extract_round=False)
    'its accepted row is missing; round 2 of rounds.jsonl is missing'
    >>> lost_rows({"status": "unsuitable", "rounds_used": 0}, {0}, False, extract_round=True)
    ''
    """
    lost = []
    if ledger_row.get("status") == "accepted" and not has_example:
        lost.append("its accepted row is missing")
    expected = set(range(1, int(ledger_row.get("rounds_used") or 0) + 1))
    if extract_round or ledger_row.get("status") == "unsuitable":
        expected.add(0)
    missing = sorted(expected - rounds)
    if missing:
        lost.append(f"round {', '.join(map(str, missing))} of rounds.jsonl is missing")
    return "; ".join(lost)


async def generate(cfg: RootConfig, run_dir: Path, llm: Optional[LLM] = None) -> dict[str, Any]:
    """The stage's work without its exit codes: the stats (``run`` turns them into exit codes 4 and 5).

    ``llm`` may be injected (tests drive the loop with a scripted backend); it is then the caller's to close.
    Raises GenerateAborted when an endpoint or the setup stops the run (``run`` exits 3).
    """
    return await GenerateRun(cfg, run_dir).execute(llm)


async def score_documents(cfg: RootConfig, run_dir: Path, docs: list[Document], llm: LLM) -> dict[str, Any]:
    """The generate loop on ``docs`` (not the corpus) in ``run_dir``, with the caller's ``llm`` (not closed here):
    the stats. It resumes like the stage and writes the same files but no dataset/ folder or card: the
    meta-optimizer scores a harness variant this way, ``cfg`` being the variant's config. Nothing is pushed."""
    return await GenerateRun(cfg, run_dir, docs=docs, export=False).execute(llm)


class GenerateRun:
    """One process's run of the stage, as three steps: ``open`` the run, ``run_documents``, ``finish``.

    ``execute`` runs them inside one exit stack, the only place the run's resources are closed, whether it ends
    or fails: the cache, the LLM (when the run made it) and W&B; the documents' writers and bar close when the
    documents are done, before their files are read into stats. ``docs`` None reads the corpus of ``cfg``.
    """

    # Set by ``open``
    domain: Domain
    challengers: int

    def __init__(self, cfg: RootConfig, run_dir: Path, docs: Optional[list[Document]] = None, export: bool = True):
        self.cfg = cfg
        self.run_dir = run_dir
        self.given_docs = docs
        self.docs: list[Document] = []
        self.skipped: dict[str, int] = {}
        # export=False: no dataset/ folder and card (the meta-optimizer's scoring runs)
        self.export = export
        self.started = time.time()
        self.target = cfg.generate.target_accepted
        # Counted by ``open`` (resume), then by the documents as they finish
        self.todo: list[Document] = []
        self.counts = Counts()
        self.doc_cap: Optional[DocumentCap] = None
        self.wandb_run: Any = None

    async def execute(self, llm: Optional[LLM] = None) -> dict[str, Any]:
        async with contextlib.AsyncExitStack() as stack:
            llm = await self.open(stack, llm)
            await self.run_documents(llm)
            stats = self.finish(llm)
        # After W&B has finished and the endpoints are closed: a slow or failed push holds nothing open
        self.publish(stats)
        return stats

    def target_reached(self) -> bool:
        return self.target is not None and self.counts.accepted >= self.target

    # ------------------------------------------------------------------ open the run
    async def open(self, stack: contextlib.AsyncExitStack, llm: Optional[LLM]) -> LLM:
        """Check the push target, read the corpus and what earlier processes finished, open the cache and the LLM
        (each closed by ``stack``), probe the endpoints when documents are left, start W&B; the run's LLM."""
        repo_id = self.cfg.generate.push_to_hub
        if repo_id and repo_id_problem(repo_id):
            # Before any work: a typo found after hours of generation would cost the push.
            raise GenerateAborted(repo_id_problem(repo_id))
        if self.given_docs is None:
            self.docs, self.skipped = load_corpus(self.cfg.corpus)
        else:
            self.docs = self.given_docs
        self.domain = build_domain(self.cfg.domain)
        self.challengers = challengers_per_round(self.cfg, self.domain)
        self.resume()
        cache = ResponseCache(self.cfg.cache.path or self.run_dir / "cache.sqlite") if self.cfg.cache.enabled else None
        if cache is not None:
            stack.callback(cache.close)
        if llm is None:
            llm = LLM(self.cfg.models, cache=cache, seed=self.cfg.generate.seed)
            stack.push_async_callback(llm.aclose)
        # Only a process that runs documents asks the endpoints; finalize keeps the cap an earlier process recorded.
        if self.todo and not self.target_reached():
            self.doc_cap = await self.probe(llm)
        self.wandb_run = start_wandb(self.cfg, self.run_dir, job_type="generate")
        if self.wandb_run is not None:
            stack.push(_finish_wandb(self.wandb_run))
        return llm

    def resume(self) -> None:
        """The documents left to run and the run dir's counts (earlier processes' finished rows included)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = prepare_resume(self.run_dir, self.domain.has_extractor)
        self.todo = [d for d in self.docs if d.id not in state.done]
        if state.done:
            log.info("resuming: %d of %d documents already finished", len(self.docs) - len(self.todo), len(self.docs))
        # Run-dir totals, so the target counts what earlier processes accepted (prepare_resume kept only finished rows).
        self.counts = Counts(accepted=state.accepted, rounds=state.rounds, finished=len(self.docs) - len(self.todo))
        if self.target is not None:
            log.info("target: %d accepted examples (%d already in %s)", self.target, self.counts.accepted,
                     self.run_dir)

    async def probe(self, llm: LLM) -> DocumentCap:
        """Ask every endpoint before the first document, and derive the document cap from their contexts."""
        try:
            await llm.check()
            doc_cap = await document_cap(self.cfg, llm, self.domain, self.challengers)
        except EndpointUnreachable as err:
            raise GenerateAborted(f"{err}\nNothing was generated in this run; start the server (or fix the "
                                  f"URL) and rerun the same command.") from err
        # BackendError: the server answered, but refused (e.g. 401: the API key); ValueError: a context too small
        # for any document (document_cap names the setting)
        except (BackendError, ValueError) as err:
            raise GenerateAborted(f"{err}\nNothing was generated in this run.") from err
        log.info("documents: %s (%s)", f"cut at {doc_cap.tokens} tokens" if doc_cap.tokens else "sent whole",
                 doc_cap.source)
        return doc_cap

    # ------------------------------------------------------------------ run the documents
    async def run_documents(self, llm: LLM) -> None:
        """Every document left, at most generate.max_docs_in_flight at once; each ends with a ledger row, and none
        starts once the target is reached."""
        async with contextlib.AsyncExitStack() as stack:
            out = _Writers(self.run_dir)
            stack.callback(out.close)
            progress = Progress(self.counts, llm, bar=_bar(self.cfg, len(self.docs), self.counts.finished),
                                wandb_run=self.wandb_run, target=self.target)
            stack.callback(progress.close)

            def on_round(row: dict[str, Any]) -> None:
                out.rounds.write(row)
                progress.round_done()

            runner = DocumentRunner(self.cfg, llm, self.domain, on_round=on_round, on_call=progress.call_done,
                                    doc_cap=self.doc_cap)
            # generate.max_docs_in_flight workers take the documents in corpus order: the documents waiting for a
            # slot are an iterator, not a task each, so memory follows the documents in flight, not the corpus
            todo = iter(self.todo)

            async def worker() -> None:
                for doc in todo:
                    # One turn of the event loop first, so documents that finished in the same turn are counted
                    # before this one checks the target
                    await asyncio.sleep(0)
                    await self.run_document(doc, runner, out, progress)

            tasks = [asyncio.ensure_future(worker())
                     for _ in range(min(self.cfg.generate.max_docs_in_flight, len(self.todo)))]
            # Registered last, so the documents in flight stop before the writers and the bar close
            stack.push_async_callback(_cancel, tasks)
            try:
                for fut in asyncio.as_completed(tasks):
                    await fut
            except EndpointUnreachable as err:
                raise GenerateAborted(
                    f"{err}\nFinished documents are saved in {self.run_dir}. Fix the endpoint, then rerun the same "
                    f"command with hydra.run.dir={self.run_dir} to resume."
                ) from err

    async def run_document(self, doc: Document, runner: DocumentRunner, out: _Writers, progress: Progress) -> None:
        # The target is checked when a document gets its slot: nothing new starts after the target, and documents
        # in flight finish.
        if self.target_reached():
            # Not written to the ledger: a rerun with a larger target starts this document.
            self.counts.not_started += 1
            return
        try:
            outcome: DocOutcome = await runner.run(doc)
        except EndpointUnreachable:
            raise
        except BackendError as err:
            # An "error" row, so every document of the corpus ends with an outcome; resume redoes it.
            log.error("document %s failed and will be retried on resume: %s", doc.id, err)
            self.counts.errors += 1
            out.ledger.write({"document_id": doc.id, "status": "error", "rounds_used": None, "reason": str(err)})
            return
        # Counted before the worker takes its next document, so that document's target check sees this one.
        if outcome.example is not None:
            out.accepted.write(outcome.example)
        out.ledger.write({"document_id": doc.id, "status": outcome.status, "rounds_used": outcome.rounds_used,
                          "reason": outcome.reason, **doc.reference()})
        progress.document_done(accepted=outcome.example is not None)

    # ------------------------------------------------------------------ finish
    def finish(self, llm: LLM) -> dict[str, Any]:
        """The split, the dataset and its card (``export``), stats.json and W&B's summary; the stats."""
        stats = finalize(self.cfg, self.run_dir, self.docs, self.skipped, llm, wall_seconds=time.time() - self.started,
                         documents_not_started=self.counts.not_started, doc_cap=self.doc_cap,
                         challengers=self.challengers, domain=self.domain, export=self.export)
        if self.wandb_run is not None:
            from autodata.tracking import accepted_panels

            self.wandb_run.summary.update(dict(flatten("generate", stats)))
            # The distributions behind the means above, and the examples (all of the run dir's, resumes included)
            self.wandb_run.log(accepted_panels(list(read_jsonl(self.run_dir / "accepted.jsonl"))))
        return stats

    def publish(self, stats: dict[str, Any]) -> None:
        """Push the dataset to generate.push_to_hub, if set; the outcome goes into stats.json (``hub``)."""
        repo_id = self.cfg.generate.push_to_hub
        # export=False wrote no dataset/ to push
        if repo_id and self.export:
            sizes = {"train": stats["train_examples"], "heldout": stats["heldout_examples"]}
            stats["hub"] = push_dataset(self.run_dir, repo_id, self.cfg.generate.hub_private, sizes,
                                        retry_command(self.run_dir))
            write_json_atomic(self.run_dir / "stats.json", stats)


class _Writers:
    """The run dir's append-only files that each document writes to."""

    def __init__(self, run_dir: Path):
        self.rounds = JsonlWriter(run_dir / "rounds.jsonl")
        self.accepted = JsonlWriter(run_dir / "accepted.jsonl")
        self.ledger = JsonlWriter(run_dir / "documents.jsonl")

    def close(self) -> None:
        for writer in (self.rounds, self.accepted, self.ledger):
            writer.close()


async def _cancel(tasks: list[asyncio.Future]) -> None:
    """Stop the documents still in flight (after a failure) and wait until they have."""
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _finish_wandb(wandb_run: Any):
    """The exit callback that ends the W&B run: marked failed when the stage fails, as wandb's own exit hook
    would mark a process that exits 3."""

    def finish(exc_type, exc, tb) -> bool:
        wandb_run.finish(exit_code=0 if exc_type is None else 1)
        return False

    return finish


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
    if stats["document_errors"]:
        allowed = cfg.generate.allow_document_errors
        log.error("%d of %d documents ended in error (status \"error\" in documents.jsonl, with the reason); rerun "
                  "the same command to redo them%s", stats["document_errors"], stats["documents"],
                  "" if allowed else " (exit code 5; generate.allow_document_errors=true exits 0)")
        if not allowed:
            raise SystemExit(5)
