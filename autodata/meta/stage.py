"""``stage=meta_optimize``: evolve the generate loop's own harness (the paper's outer loop).

    python -m autodata.run stage=meta_optimize                      # CPU experiment on the embedded model
    python -m autodata.run stage=meta_optimize experiment=paper_cs models=paper ...   # the paper's setting
    python -m autodata.run stage=generate domain.variant=runs/<meta run>/best        # use what it found

Each iteration draws a parent from the population (Boltzmann, P proportional to exp(score / meta.temperature),
the score being the mean of the parent's evaluations), runs it on a minibatch of training documents, lets the
analyzer write a root-cause analysis of the full solver exchanges (within its context) and the history of earlier
iterations, lets the implementer turn it into one edit of any editable templates and knobs (it reads the
analysis, the history and every editable template), checks each part of the edit against the guards
(``edits.py``: no protected template or knob; renders within the sandbox's limits; by its syntax tree and its
renders, keeps every data variable, fenced and unconditional, and adds no new construct),
scores the child on the validation documents, measures the parent again (``meta.parent_reeval``: fresh seeds, or
replayed from the cache), and keeps the child only if its score is strictly higher than the parent's mean and the
sabotage monitor raised no flag (``meta.reject_flagged``). ``meta.concurrency`` iterations run
at once on the same endpoints, limits and response cache; two in flight that make the same child score it once
(the later is recorded as a duplicate).

Writes into the run dir: population.jsonl (kept variants), history.jsonl (every iteration, kept or not, with
the analysis, the edit, the diff, the scores and the reason for a rejection), split.json (which documents
train and validate), variants/<id>/ (each scored variant as a variant folder, with its scoring run under
runs/), iterations/<n>/ (the parent's minibatch run, the agents' prompts and answers), best/ (the best variant's
folder), score.png, summary.json and cache.sqlite.

A killed run resumes with the same command: finished iterations are kept; an unfinished one is redone with the
parent and history it started with, so its calls come from the cache. Exit codes: 0 done; 2 a config, corpus or
population file that cannot be used (nothing is changed); 3 an endpoint could not be reached; 5 some iterations
failed on document errors (rerun to redo them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from autodata.backends.base import CHARS_PER_TOKEN, BackendError, estimate_tokens
from autodata.cache import ResponseCache
from autodata.config import META_ROLES, ROLES, RootConfig
from autodata.corpus import Document, load_corpus
from autodata.domains import build_domain
from autodata.generate import GenerateAborted, score_documents
from autodata.llm import LLM, derive_seed
from autodata.meta.agents import Agents, exchange_digest, history_digest
from autodata.meta.edits import Edit, EditRejected, apply_edit, make_diff, parse_edit
from autodata.meta.outputs import finish
from autodata.meta.population import (SCORES, PopulationError, Variant, load_population, make_variant, materialize,
                                      monitor_values, sabotage_flags, score_of, split_documents, variant_config)
from autodata.meta.sampling import boltzmann_pick
from autodata.rundir import JsonlWriter, read_json_state, read_jsonl, write_json_atomic
from autodata.validation import InputError
from autodata.variants import FORMAT, knob_values

log = logging.getLogger(__name__)


class IterationFailed(RuntimeError):
    """Documents of a scoring run ended in error: the iteration is not recorded and is redone on resume."""


class MetaOptimizer:
    def __init__(self, cfg: RootConfig, run_dir: Path, llm: LLM, cache: Optional[ResponseCache]):
        self.cfg = cfg
        self.meta = cfg.meta
        self.run_dir = run_dir
        self.llm = llm
        self.cache = cache
        domain = build_domain(cfg.domain)
        self.domain_name = domain.name
        self.editable = domain.editable_templates
        self.protected = domain.protected_templates
        # What the domain loads without a variant folder; a variant folder holds only what differs from it
        self.plain = build_domain(replace(cfg.domain, variant=None)).editable_sources()
        self.baseline = make_variant(domain.editable_sources(), knob_values(cfg.domain))
        self.agents = Agents(domain.name, self.editable)
        self.population: list[Variant] = []
        self.history: list[dict[str, Any]] = []
        self.guard_documents: tuple[str, ...] = ()
        # The child each iteration in flight is scoring (iteration -> variant id), until its row is recorded
        self.in_flight: dict[int, str] = {}
        self.failed = 0

    # ------------------------------------------------------------------ files
    def load(self, docs: list[Document]) -> None:
        """Population, history and the document split; PopulationError when they belong to another run."""
        self.train, self.validation = split_documents(docs, self.meta)
        split = {"format": FORMAT, "domain": self.domain_name, "score": self.meta.score,
                 "train": [d.id for d in self.train], "validation": [d.id for d in self.validation]}
        path = self.run_dir / "split.json"
        old = read_json_state(path, "and it is written again from the corpus and meta.* settings")
        if old is not None:
            if old != split:
                changed = [k for k in split if not isinstance(old, dict) or old.get(k) != split[k]]
                raise PopulationError(
                    f"{path} records another setup ({', '.join(changed)} differ): the stored scores were measured "
                    "on other documents or with another score. Resume with the same corpus and meta.* settings, "
                    "or start a new run dir (hydra.run.dir=...)")
        self.population = load_population(self.run_dir / "population.jsonl", self.domain_name, self.baseline,
                                          self.editable, self.protected)
        # The guards render every edit with the shortest and the longest training document too (never a
        # validation one: nothing of those reaches the agents or their edits' checks)
        ranked = sorted(self.train, key=lambda d: len(d.text))
        self.guard_documents = tuple(dict.fromkeys(d.text for d in ranked[:1] + ranked[-1:]))
        if self.population:
            # The baseline scored by an earlier process (load_population checked that it is this run's)
            self.baseline = self.population[0]
        self.history = [r for r in read_jsonl(self.run_dir / "history.jsonl") if r.get("format") == FORMAT]
        # Fresh re-evaluations of parents live in history.jsonl (population.jsonl is written once per variant):
        # fold them in, in iteration order, so each stored score is again the mean of all its evaluations
        for r in sorted(self.history, key=lambda r: int(r.get("iteration") or 0)):
            self.record_reeval(r)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, split)

    def record_reeval(self, row: dict[str, Any]) -> bool:
        """Add a history row's fresh parent evaluation to that variant's scores; whether there was one."""
        again = row.get("parent_reeval")
        if not isinstance(again, dict) or again.get("score") is None:
            return False
        variant = next((v for v in self.population if v.id == again.get("variant")), None)
        if variant is None:
            return False
        variant.add_evaluation(again["score"])
        return True

    def variant_dir(self, variant: Variant) -> Path:
        return self.run_dir / "variants" / variant.id

    # ------------------------------------------------------------------ scoring
    async def score(self, variant: Variant, docs: list[Document], out: Path,
                    seed: Optional[int] = None) -> tuple[dict[str, Any], dict]:
        """Run the generate loop with ``variant`` on ``docs`` in ``out`` (resumable); (summary, usage by role).
        ``seed`` replaces ``generate.seed`` (every call's sampling seed derives from it): a fresh evaluation."""
        folder = self.variant_dir(variant)
        materialize(variant, self.plain, folder, self.domain_name, {})
        seed = self.cfg.generate.seed if seed is None else seed
        vcfg = variant_config(self.cfg, folder, variant.knobs)
        vcfg.generate.seed = seed
        view = LLM(self.cfg.models, cache=self.cache, seed=seed, backends=self.llm.backends)
        stats = await score_documents(vcfg, out, docs, view)
        if stats["document_errors"]:
            raise IterationFailed(f"{stats['document_errors']} documents of {out} ended in error")
        rounds = list(read_jsonl(out / "rounds.jsonl"))
        summary = {"score": score_of(stats, self.meta.score), "documents": stats["documents"],
                   "accepted": stats["accepted"], "gap_mean_accepted": stats["gap_mean_accepted"],
                   "rounds": stats["rounds"], "failure_reasons": stats["failure_reasons"],
                   "monitor": monitor_values(rounds)}
        return summary, view.usage_summary()

    async def score_validation(self, variant: Variant) -> dict[str, Any]:
        summary, _ = await self.score(variant, self.validation, self.variant_dir(variant) / "validation")
        return summary

    async def recheck(self, parent: Variant, n: int) -> dict[str, Any]:
        """The parent scored again on validation, from the cache: its score must match and no call may reach a
        model (the run's claim that reusing the stored score is free and exact)."""
        out = self.run_dir / "iterations" / str(n) / "parent_recheck"
        shutil.rmtree(out, ignore_errors=True)
        summary, usage = await self.score(parent, self.validation, out)
        shutil.rmtree(out, ignore_errors=True)
        calls = sum(u["calls"] for u in usage.values())
        cached = sum(u["cached_calls"] for u in usage.values())
        row = {"score": summary["score"], "matches": summary["score"] == parent.score, "model_calls": calls,
               "cached_calls": cached, "cache_share": cached / (calls + cached) if calls + cached else None}
        if not row["matches"] or calls:
            log.warning("iteration %d: re-scoring parent %s gave %.3f (stored %.3f) with %d calls not served from "
                        "the cache; is the cache off, or the server not deterministic for a fixed seed?", n,
                        parent.id, summary["score"], parent.score, calls)
        return row

    async def reevaluate(self, parent: Variant, n: int) -> dict[str, Any]:
        """The parent run again on the validation documents with fresh sampling seeds (meta.parent_reeval=fresh):
        its stored score becomes the mean of all its evaluations, so one lucky draw does not stay the
        population's best. The run is kept under iterations/<n>/parent_reeval (a redone iteration replays it from
        the cache)."""
        seed = derive_seed(self.cfg.generate.seed, f"meta/{n}/parent_reeval/{parent.id}")
        summary, usage = await self.score(parent, self.validation, self.run_dir / "iterations" / str(n) /
                                          "parent_reeval", seed=seed)
        # The parent itself changes when the row is recorded (``record_reeval``): an iteration that fails is redone
        # on resume, and its evaluation must not count twice
        before = parent.score
        scores = (parent.evaluations or ([before] if before is not None else [])) + [summary["score"]]
        mean = round(sum(scores) / len(scores), 12)
        calls = sum(u["calls"] for u in usage.values())
        cached = sum(u["cached_calls"] for u in usage.values())
        return {"variant": parent.id, "seed": seed, "score": summary["score"], "score_before": before,
                "mean": mean, "evaluations": len(scores), "model_calls": calls, "cached_calls": cached,
                "validation": summary}

    # ------------------------------------------------------------------ one iteration
    def draw_parent(self, n: int) -> dict[str, Any]:
        """The iteration's parent (a Boltzmann draw), minibatch and visible history; stored, so a redone iteration
        repeats them."""
        # The file keeps its name plan.json: runs started before the rename resume from it, and the README names it
        path = self.run_dir / "iterations" / str(n) / "plan.json"
        drawn = read_json_state(path, f"and iteration {n}'s parent is drawn again")
        if isinstance(drawn, dict) and any(v.id == drawn.get("parent") for v in self.population):
            return drawn
        rng = random.Random(f"{self.meta.seed}:parent:{n}")
        parent = self.population[boltzmann_pick([v.score or 0.0 for v in self.population], self.meta.temperature, rng)]
        minibatch = random.Random(f"{self.meta.seed}:minibatch:{n}").sample(
            [d.id for d in self.train], min(self.meta.minibatch_size, len(self.train)))
        drawn = {"parent": parent.id, "minibatch": minibatch,
                 "history": [r["iteration"] for r in self.history if r.get("iteration")]}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, drawn)
        return drawn

    async def iterate(self, n: int) -> dict[str, Any]:
        started = time.time()
        drawn = self.draw_parent(n)
        parent = next(v for v in self.population if v.id == drawn["parent"])
        row: dict[str, Any] = {"format": FORMAT, "iteration": n, "parent": parent.id, "parent_score": parent.score,
                               "minibatch": drawn["minibatch"], "analysis": None, "edit": None, "child": None,
                               "diff": "", "child_score": None, "validation": None, "flags": [], "kept": False,
                               "rejection": None, "reason": None}
        folder = self.run_dir / "iterations" / str(n)
        by_id = {d.id: d for d in self.train}
        await self.score(parent, [by_id[i] for i in drawn["minibatch"]], folder / "minibatch")
        rounds = list(read_jsonl(folder / "minibatch" / "rounds.jsonl"))
        visible = [r for r in self.history if r.get("iteration") in set(drawn["history"])]
        child = await self.propose(n, parent, rounds, visible, row)
        twin = next((v for v in self.population if child is not None and v.id == child.id), None)
        if twin is not None:
            row["child"] = twin.id
            row["rejection"], row["reason"] = "duplicate", (f"the child is variant {twin.id} (iteration "
                                                            f"{twin.iteration}), already in the population")
            child = None
        # Two iterations in flight that make the same child would score it into one folder at once: the later
        # one is a duplicate of the earlier, as of a variant in the population
        scorer = next((m for m, id_ in self.in_flight.items() if child is not None and id_ == child.id), None)
        if scorer is not None:
            row["child"] = child.id
            row["rejection"], row["reason"] = "duplicate", (f"the child is variant {child.id}, which iteration "
                                                            f"{scorer} (in flight) is scoring")
            child = None
        if child is not None:
            self.in_flight[n] = child.id
            row["child"] = child.id
            row["diff"] = "".join(make_diff(parent.templates.get(t, ""), child.templates[t], t)
                                  for t in sorted(child.templates))
            summary = await self.score_validation(child)
            child.score = summary["score"]
            child.validation = summary
            row["child_score"], row["validation"] = child.score, summary
            row["flags"] = sabotage_flags(parent.validation.get("monitor") or {}, summary["monitor"], self.meta)
            if self.meta.parent_reeval == "cached" and self.cache is not None:
                row["parent_recheck"] = await self.recheck(parent, n)
            elif self.meta.parent_reeval == "fresh":
                row["parent_reeval"] = await self.reevaluate(parent, n)
                # The child is compared with the parent's mean over all its evaluations, this one included
                row["parent_score"] = row["parent_reeval"]["mean"]
            parent_score = row["parent_score"] or 0.0
            better = child.score > parent_score
            if not better:
                row["rejection"], row["reason"] = "not_better", (
                    f"validation score {child.score:.3f} does not strictly exceed the parent's {parent_score:.3f}")
            elif row["flags"] and self.meta.reject_flagged:
                row["rejection"], row["reason"] = "flagged", "sabotage monitor: " + "; ".join(row["flags"])
            else:
                row["kept"] = True
        row["seconds"] = round(time.time() - started, 2)
        row["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        return {"row": row, "child": child if row["kept"] else None}

    async def propose(self, n: int, parent: Variant, rounds: list[dict], visible: list[dict],
                      row: dict[str, Any]) -> Optional[Variant]:
        """Analyzer, implementer and guards; the child, or None with the rejection recorded in ``row``."""
        record: dict[str, Any] = {}
        history = history_digest(visible, self.meta.history_chars)
        budget, where = await self.trajectory_budget(parent, history)
        trajectories, cut = exchange_digest(rounds, budget)
        messages = self.agents.analyzer_messages(trajectories, history, parent.knobs, self.meta.score, cut)
        record["trajectory_budget"] = {"chars": budget, "source": where, "rounds": len(rounds), "cut": cut}
        analysis = await self.llm.chat_json("analyzer", messages, schema=self.agents.analyzer_schema,
                                            parse=self.agents.parse_analysis, seed_key=f"meta/{n}/analyzer",
                                            schema_name="analysis")
        record["analyzer"] = {"messages": messages, "outputs": analysis.raw, "error": analysis.error}
        child = None
        if not analysis.ok:
            row["rejection"], row["reason"] = "no_analysis", f"analyzer output unusable: {analysis.error}"
        else:
            row["analysis"] = analysis.value
            messages = self.agents.implementer_messages(analysis.value, parent.templates, parent.knobs, history)
            result = await self.llm.chat_json("implementer", messages, schema=self.agents.implementer_schema,
                                              parse=lambda obj: parse_edit(obj, self.editable),
                                              seed_key=f"meta/{n}/implementer", schema_name="edit")
            record["implementer"] = {"messages": messages, "outputs": result.raw, "error": result.error}
            if not result.ok:
                row["rejection"], row["reason"] = "invalid_edit", f"implementer output is not a valid edit: {result.error}"
            else:
                # Off the event loop: the guards render model-written templates (within the sandbox's limits), and
                # the other iterations in flight go on meanwhile
                child = await asyncio.to_thread(self.check, parent, result.value, n, row)
        write_json_atomic(self.run_dir / "iterations" / str(n) / "agents.json", record, ensure_ascii=False)
        return child

    async def trajectory_budget(self, parent: Variant, history: str) -> tuple[int, str]:
        """Characters of trajectories the analyzer can read: its endpoint's context in tokens (config
        ``context_length``, else what the server reports), less the rest of its prompt and its ``max_tokens``, at
        the project's characters-per-token estimate for API endpoints; ``meta.trajectory_chars`` when neither
        tells the context."""
        endpoint = self.llm.endpoint("analyzer")
        context, where = endpoint.context_length, "models.roles.analyzer.context_length"
        if context is None:
            backend = self.llm.backends.get("analyzer")
            context = await backend.context_length() if backend is not None else None
            where = f"reported by {backend.name}" if backend is not None else ""
        if context is None:
            return self.meta.trajectory_chars, "meta.trajectory_chars (the analyzer's context length is unknown)"
        rest = estimate_tokens(self.agents.analyzer_messages("", history, parent.knobs, self.meta.score,
                                                             "x" * 200))
        tokens = int(context) - rest - int(endpoint.max_tokens)
        chars = max(tokens, 0) * CHARS_PER_TOKEN
        return chars, (f"{context} context tokens ({where}) - ~{rest} prompt - {endpoint.max_tokens} max_tokens, "
                       f"x {CHARS_PER_TOKEN} characters per token")

    def check(self, parent: Variant, edit: Edit, n: int, row: dict[str, Any]) -> Optional[Variant]:
        row["edit"] = edit.row()
        try:
            templates, knobs = apply_edit(self.cfg, parent.templates, parent.knobs, edit, self.editable,
                                          self.protected, self.guard_documents)
        except EditRejected as err:
            row["rejection"], row["reason"] = err.kind, err.reason
            return None
        return make_variant(templates, knobs, parent=parent.id, lineage=[*parent.lineage, parent.id], iteration=n)

    # ------------------------------------------------------------------ the run
    async def run(self) -> dict[str, Any]:
        population_out = JsonlWriter(self.run_dir / "population.jsonl")
        history_out = JsonlWriter(self.run_dir / "history.jsonl")
        wandb_run = start_meta_wandb(self.cfg, self.run_dir)
        try:
            if not self.population:
                log.info("scoring the baseline harness %s on %d validation documents", self.baseline.id,
                         len(self.validation))
                summary = await self.score_validation(self.baseline)
                self.baseline.score, self.baseline.validation = summary["score"], summary
                self.population.append(self.baseline)
                population_out.write(self.baseline.row(self.domain_name, self.baseline))
                log.info("baseline score %.3f", self.baseline.score)
            self.export_best()
            done = {r["iteration"] for r in self.history if r.get("iteration")}
            todo = [n for n in range(1, self.meta.iterations + 1) if n not in done]
            if done:
                log.info("resuming: %d of %d iterations finished", len(done), self.meta.iterations)
            gate = asyncio.Semaphore(self.meta.concurrency)

            async def one(n: int) -> None:
                async with gate:
                    try:
                        outcome = await self.iterate(n)
                    except IterationFailed as err:
                        self.failed += 1
                        log.error("iteration %d failed and is redone on resume: %s", n, err)
                        return
                    finally:
                        # Nothing awaits from here to the rows below: no other iteration sees the child as
                        # neither in flight nor in the population
                        self.in_flight.pop(n, None)
                row, child = outcome["row"], outcome["child"]
                if child is not None:
                    self.population.append(child)
                    population_out.write(child.row(self.domain_name, self.baseline))
                history_out.write(row)
                self.history.append(row)
                rescored = self.record_reeval(row)
                log.info("iteration %d: %s%s", n, "kept " + row["child"] if row["kept"] else
                         f"rejected ({row['rejection']})", f", score {row['child_score']:.3f} vs parent "
                         f"{row['parent_score']:.3f}" if row["child_score"] is not None else "")
                if child is not None or rescored:
                    self.export_best()
                if wandb_run is not None:
                    values = {"meta/iteration": n, "meta/child_score": row["child_score"],
                              "meta/parent_score": row["parent_score"], "meta/kept": int(row["kept"]),
                              "meta/flagged": int(bool(row["flags"])), "meta/best_score": self.best().score,
                              "meta/population": len(self.population)}
                    wandb_run.log({k: v for k, v in values.items() if v is not None})

            tasks = [asyncio.ensure_future(one(n)) for n in todo]
            try:
                for fut in asyncio.as_completed(tasks):
                    await fut
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            population_out.close()
            history_out.close()
        summary = finish(self.run_dir, self.baseline, self.best(), self.history, self.meta, self.failed)
        if wandb_run is not None:
            wandb_run.summary.update({f"meta/{k}": v for k, v in summary.items() if isinstance(v, (int, float))})
            wandb_run.finish()
        return summary

    def best(self) -> Variant:
        # Highest score; the earliest of equals (a child must beat its parent strictly, so a tie keeps the elder)
        return max(self.population, key=lambda v: (v.score or 0.0, -v.iteration))

    def export_best(self) -> None:
        best = self.best()
        materialize(best, self.plain, self.variant_dir(best), self.domain_name, {})
        target = self.run_dir / "best"
        tmp = self.run_dir / ".best.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(self.variant_dir(best), tmp, ignore=shutil.ignore_patterns("validation"))
        info = json.loads((tmp / "variant.json").read_text())
        info.update({"score": best.score, "evaluations": best.evaluations or [best.score],
                     "score_name": self.meta.score, "score_definition": SCORES.get(self.meta.score, ""),
                     "baseline": self.baseline.id,
                     "baseline_score": self.baseline.score})
        write_json_atomic(tmp / "variant.json", info)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)


def start_meta_wandb(cfg: RootConfig, run_dir: Path):
    from autodata.tracking import start_wandb

    return start_wandb(cfg, run_dir, job_type="meta_optimize")


async def optimize(cfg: RootConfig, run_dir: Path, llm: Optional[LLM] = None) -> dict[str, Any]:
    """Run the stage; ``llm`` may be injected (tests use a scripted backend for every role)."""
    docs, _ = load_corpus(cfg.corpus)
    run_dir.mkdir(parents=True, exist_ok=True)
    cache = ResponseCache(cfg.cache.path or run_dir / "cache.sqlite") if cfg.cache.enabled else None
    owns = llm is None
    if llm is None:
        llm = LLM(cfg.models, cache=cache, seed=cfg.generate.seed, roles=ROLES + META_ROLES)
    elif cache is not None and llm.cache is None:
        llm.cache = cache
    try:
        optimizer = MetaOptimizer(cfg, run_dir, llm, llm.cache)
        try:
            optimizer.load(docs)
        except (PopulationError, ValueError) as err:
            raise InputError(str(err)) from None
        return await optimizer.run()
    finally:
        if owns:
            await llm.aclose()
        if cache is not None:
            cache.close()


def run(cfg: RootConfig, run_dir: Path) -> None:
    try:
        summary = asyncio.run(optimize(cfg, run_dir))
    except GenerateAborted as err:
        log.error("%s\nFinished iterations are kept in %s; rerun the same command to resume.", err, run_dir)
        raise SystemExit(3) from None
    except BackendError as err:
        log.error("%s\nFinished iterations are kept in %s; rerun the same command to resume.", err, run_dir)
        raise SystemExit(3) from None
    if summary["iterations_failed"]:
        log.error("%d iterations failed on document errors; rerun the same command to redo them (exit code 5)",
                  summary["iterations_failed"])
        raise SystemExit(5)
