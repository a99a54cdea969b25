"""Sharded generation: corpus.num_shards / corpus.shard split a corpus the same way everywhere, and stage=merge
joins the shards' run dirs into what one unsharded run of the corpus writes (same examples, split and counts)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from autodata.config import RootConfig
from autodata.corpus import load_corpus, shard_of
from autodata.generate.merge import MergeError, merge
from autodata.generate.outputs import compute_stats, stats_view
from autodata.generate.stage import generate
from autodata.rundir import input_conflicts, mark_finished, read_jsonl, write_provenance
from autodata.validation import ConfigError, validate
from tests.scripted import cs_task, last_user, scripted_llm, verdicts
from tests.test_generate_loop import N, N_POS, make_cfg

ROOT = Path(__file__).resolve().parents[1]
N_DOCS, N_SHARDS = 9, 3
# Counts that must not depend on how the corpus was split
SAME_COUNTS = ("documents", "documents_finished", "documents_by_status", "document_errors", "accepted",
               "acceptance_rate", "rounds", "mean_rounds_per_accepted", "weak_mean_accepted", "strong_mean_accepted",
               "gap_mean_accepted", "weak_mean_all_rounds", "strong_mean_all_rounds", "failure_reasons",
               "failure_reasons_before_acceptance", "rounds_before_acceptance", "calls_saved_early_exit",
               "strong_runs_skipped_weak_failed", "judge_failures", "train_examples", "heldout_examples", "per_role",
               "documents_skipped", "method", "domain")


def by_document(role: str, request, call: int) -> str | list[str]:
    """An outcome that depends on the document only (never on what else runs), so any split gives the same rows.

    Even documents are accepted in round 1 (the weak solver fails); odd ones are too easy, except that a document
    whose number is a multiple of 3 gets a harder question after the feedback and is accepted in round 2.
    """
    text = last_user(request)
    if role == "challenger":
        number = int(re.search(r"Document (\d+)\.", text).group(1))
        hard = " (hard variant)" if "TOO EASY" in text and number % 3 == 0 else ""
        return cs_task(question=f"Predict the result of evaluating expression number {number}{hard} and justify "
                                "each step.")
    if role == "quality_verifier":
        return json.dumps({"verdict": "PASS", "feedback": "fine"})
    if role in ("weak_solver", "strong_solver"):
        number = int(re.search(r"expression number (\d+)", text).group(1))
        fails = role == "weak_solver" and (number % 2 == 0 or "hard variant" in text)
        return ["BAD" if fails else "GOOD"] * request.n
    if role == "judge":
        return verdicts(N, N_POS if "GOOD" in text else 0, N_POS)
    if role == "feedback":
        return "The weak model solved it by pattern matching."
    raise AssertionError(role)


def corpus_cfg(tmp_path: Path, **corpus) -> RootConfig:
    cfg = make_cfg(tmp_path, n_docs=N_DOCS, max_rounds=2)
    cfg.corpus = replace(cfg.corpus, **corpus)
    return cfg


def generate_run(cfg: RootConfig, run_dir: Path) -> dict:
    """One stage=generate run as run.py makes it: provenance, the stage, the finished mark."""
    shard = [f"corpus.num_shards={cfg.corpus.num_shards}", f"corpus.shard={cfg.corpus.shard}"]
    write_provenance(cfg, run_dir, argv=["autodata.run", "stage=generate", *shard])
    llm, _ = scripted_llm(cfg.models, by_document)
    stats = asyncio.run(generate(cfg, run_dir, llm=llm))
    mark_finished(run_dir)
    return stats


def merge_run(runs: list[Path], run_dir: Path, **root) -> dict:
    cfg = RootConfig(stage="merge", progress=False, **root)
    cfg.merge.runs = [str(r) for r in runs]
    write_provenance(cfg, run_dir, argv=["autodata.run", "stage=merge"])
    return merge(cfg, run_dir)


def rows(run_dir: Path, name: str) -> list[dict]:
    return list(read_jsonl(run_dir / name))


def ids(run_dir: Path, name: str) -> set[str]:
    return {r["id"] for r in rows(run_dir, name)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The corpus generated unsharded, in 3 shards (runs/big/shard_i), and the shards merged."""
    tmp = tmp_path_factory.mktemp("shards")
    made = {"whole": tmp / "whole", "merged": tmp / "big" / "merged"}
    generate_run(corpus_cfg(tmp), made["whole"])
    for i in range(N_SHARDS):
        made[f"shard_{i}"] = tmp / "big" / f"shard_{i}"
        generate_run(corpus_cfg(tmp, num_shards=N_SHARDS, shard=i), made[f"shard_{i}"])
    merge_run([made[f"shard_{i}"] for i in range(N_SHARDS)], made["merged"])
    return made


def shard_runs(runs: dict[str, Path]) -> list[Path]:
    return [runs[f"shard_{i}"] for i in range(N_SHARDS)]


# ---------------------------------------------------------------- the split


def test_module_doctests():
    import doctest

    import autodata.corpus
    import autodata.generate.outputs

    for module in (autodata.corpus, autodata.generate.outputs):
        result = doctest.testmod(module)
        assert result.attempted and not result.failed, module.__name__


def test_shard_of_is_a_stable_hash_of_the_id():
    # Golden values: sha1 of the id, so every machine and every Python process agrees (hash() would not).
    assert [shard_of(f"doc{i}", 3) for i in range(N_DOCS)] == [0, 2, 2, 2, 0, 1, 2, 0, 0]
    assert [shard_of(i, 4) for i in ("pydoc/assert", "pydoc/if", "sha1-0123456789ab")] == [0, 0, 2]
    assert all(shard_of(f"doc{i}", 1) == 0 for i in range(N_DOCS))


@pytest.mark.parametrize("limit", [None, 5])
def test_the_shards_are_disjoint_and_together_the_corpus(tmp_path, limit):
    whole, skipped = load_corpus(corpus_cfg(tmp_path, limit=limit).corpus)
    parts = [load_corpus(corpus_cfg(tmp_path, limit=limit, num_shards=N_SHARDS, shard=i).corpus)
             for i in range(N_SHARDS)]
    shard_ids = [[d.id for d in docs] for docs, _ in parts]
    # corpus.limit picks the first documents by id before the split: the same documents with and without it
    assert sorted(i for part in shard_ids for i in part) == [d.id for d in whole]
    assert len({i for part in shard_ids for i in part}) == len(whole) == (limit or N_DOCS)
    for i, part in enumerate(shard_ids):
        assert part == sorted(part) and all(shard_of(d, N_SHARDS) == i for d in part)
    # Every shard reads the whole corpus, so its skip counts are the corpus's
    assert all(s == skipped for _, s in parts)


def test_a_shard_without_documents_is_empty_not_an_error(tmp_path):
    # doc0 and doc1 (the first two by id) fall in shards 0 and 2: shard 1 has nothing to do, and is merged anyway
    docs, _ = load_corpus(corpus_cfg(tmp_path, limit=2, num_shards=N_SHARDS, shard=1).corpus)
    assert docs == []
    shards = [tmp_path / f"shard_{i}" for i in range(N_SHARDS)]
    for i, run_dir in enumerate(shards):
        stats = generate_run(corpus_cfg(tmp_path, limit=2, num_shards=N_SHARDS, shard=i), run_dir)
        assert stats["documents"] == (0 if i == 1 else 1)
    merged = merge_run([tmp_path], tmp_path / "merged")
    assert (merged["documents"], merged["accepted"], merged["rounds"]) == (2, 1, 3)


@pytest.mark.parametrize("corpus,key,phrase", [
    ({"num_shards": 0}, "corpus.num_shards", "must be an integer >= 1"),
    ({"num_shards": 3, "shard": 3}, "corpus.shard", "must lie in 0 .. corpus.num_shards-1 (2)"),
    ({"num_shards": 3, "shard": -1}, "corpus.shard", "--array=0-2"),
])
def test_shard_settings_are_validated(corpus, key, phrase):
    cfg = RootConfig(stage="generate")
    cfg.corpus = replace(cfg.corpus, **corpus)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    line = next(line for line in str(err.value).splitlines() if key in line)
    assert phrase in line


def test_a_sharded_run_pushes_once_from_the_merge():
    cfg = RootConfig(stage="generate")
    cfg.corpus.num_shards = 2
    cfg.generate.push_to_hub = "org/data"
    with pytest.raises(ConfigError, match=r"generate.push_to_hub .*each of the 2 shards.*stage=merge"):
        validate(cfg)
    merge_cfg = RootConfig(stage="merge")
    merge_cfg.generate.push_to_hub = "org/data"
    validate(merge_cfg)


# ---------------------------------------------------------------- merged == unsharded


def test_the_shards_split_the_work(runs):
    per_shard = [{r["document_id"] for r in rows(d, "documents.jsonl")} for d in shard_runs(runs)]
    assert per_shard == [{"doc0", "doc4", "doc7", "doc8"}, {"doc5"}, {"doc1", "doc2", "doc3", "doc6"}]
    # Each shard draws its own split; only the merge draws the corpus's
    assert sum(len(rows(d, "heldout.jsonl")) for d in shard_runs(runs)) == 2


def test_merged_run_has_the_unsharded_examples(runs):
    whole, merged = runs["whole"], runs["merged"]
    accepted = rows(merged, "accepted.jsonl")
    assert {r["document_id"] for r in accepted} == {"doc0", "doc2", "doc3", "doc4", "doc6", "doc8"}
    assert accepted == sorted(rows(whole, "accepted.jsonl"), key=lambda r: r["document_id"])
    assert next(r for r in accepted if r["document_id"] == "doc3")["rounds_used"] == 2
    ledger = rows(merged, "documents.jsonl")
    assert [r["document_id"] for r in ledger] == [f"doc{i}" for i in range(N_DOCS)]
    assert ledger == sorted(rows(whole, "documents.jsonl"), key=lambda r: r["document_id"])

    def timeless(name: str, run_dir: Path) -> list[dict]:
        """Round rows without their timings (the round's and each call's seconds)."""
        out = []
        for r in rows(run_dir, name):
            r.pop("seconds")
            r["calls"] = [{k: v for k, v in c.items() if k != "seconds"} for c in r["calls"]]
            out.append(r)
        return sorted(out, key=lambda r: (r["document_id"], r["round"]))

    merged_rounds = timeless("rounds.jsonl", merged)
    assert merged_rounds == timeless("rounds.jsonl", whole)
    assert [(r["document_id"], r["round"]) for r in rows(merged, "rounds.jsonl")] == [
        (r["document_id"], r["round"]) for r in merged_rounds]


def test_merged_split_is_drawn_over_the_whole_corpus(runs):
    whole, merged = runs["whole"], runs["merged"]
    assert ids(merged, "heldout.jsonl") == ids(whole, "heldout.jsonl") and len(ids(whole, "heldout.jsonl")) == 3
    assert ids(merged, "train.jsonl") == ids(whole, "train.jsonl")
    import datasets

    saved = datasets.load_from_disk(str(merged / "dataset"))
    assert set(saved["heldout"]["id"]) == ids(whole, "heldout.jsonl")
    assert set(saved["train"]["id"]) == ids(whole, "train.jsonl")
    card = (merged / "dataset" / "README.md").read_text()
    # The card's commands: every shard's, then the merge's
    assert "| accepted examples | 6 |" in card
    assert all(f"corpus.num_shards=3 corpus.shard={i}" in card for i in range(N_SHARDS)) and "stage=merge" in card


def test_merged_stats_are_the_unsharded_stats(runs):
    whole = json.loads((runs["whole"] / "stats.json").read_text())
    merged = json.loads((runs["merged"] / "stats.json").read_text())
    assert {k: merged[k] for k in SAME_COUNTS} == {k: whole[k] for k in SAME_COUNTS}
    assert merged["accepted"] == 6 and merged["documents"] == N_DOCS and merged["rounds"] == 13
    assert merged["failure_reasons"] == {"too_easy": 7}
    shards = [json.loads((d / "stats.json").read_text()) for d in shard_runs(runs)]
    assert merged["wall_seconds_total"] == pytest.approx(sum(s["wall_seconds_total"] for s in shards), abs=0.05)
    assert [(s["shard"], s["documents"], s["accepted"], s["rounds"]) for s in merged["shards"]] == [
        (0, 4, 3, 5), (1, 1, 0, 2), (2, 4, 3, 6)]
    assert merged["why_none_accepted"] is None and shards[1]["why_none_accepted"]


def test_stats_of_round_views_equal_stats_of_full_rounds(runs):
    rounds = rows(runs["whole"], "rounds.jsonl")
    ledger, accepted = rows(runs["whole"], "documents.jsonl"), rows(runs["whole"], "accepted.jsonl")
    assert compute_stats([stats_view(r) for r in rounds], ledger, accepted, N_DOCS) == compute_stats(
        rounds, ledger, accepted, N_DOCS)


def test_merged_run_is_read_like_a_generate_run(runs):
    from eval.sets import load_sets
    from training.data import load_training_data
    from training.stage import refuse_foreign_data

    from autodata.domains import build_domain

    merged, cfg = runs["merged"], RootConfig(stage="train")
    domain = build_domain(cfg.domain)
    assert {r["example_id"] for r in load_training_data(str(merged), domain).rows} == ids(runs["whole"],
                                                                                        "train.jsonl")
    assert {i.id for i in load_sets([str(merged)], domain)[0].items} == ids(runs["whole"], "heldout.jsonl")
    # Its config.yaml names the shards' domain and models, so train and eval check it as a generate run; a shard
    # (stage=generate) and the merge (stage=merge) side by side are both accepted
    cfg.train.dataset = [str(runs["shard_0"]), str(merged)]
    cfg.train.model = "embedded"
    refuse_foreign_data(cfg)
    assert input_conflicts(merged, cfg, trained_model="embedded") == []
    legal = RootConfig(stage="eval")
    legal.domain.name = "legal"
    assert any("domain.name is 'cs' there" in p for p in input_conflicts(merged, legal))


def test_training_on_merged_data_made_for_another_model_is_refused(runs):
    cfg = RootConfig(stage="train")
    assert input_conflicts(runs["shard_0"], cfg, trained_model="other-model")
    assert input_conflicts(runs["merged"], cfg, trained_model="other-model")


def test_merge_through_the_cli_matches_the_direct_merge(runs, tmp_path):
    out = tmp_path / "merged_cli"
    proc = subprocess.run([sys.executable, "-m", "autodata.run", "stage=merge",
                           f"merge.runs=[{runs['merged'].parent}]", f"hydra.run.dir={out}", "progress=false"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("accepted.jsonl", "documents.jsonl", "rounds.jsonl", "train.jsonl", "heldout.jsonl"):
        assert (out / name).read_bytes() == (runs["merged"] / name).read_bytes(), name
    assert json.loads((out / "run_info.json").read_text())["starts"][-1]["finished_at"]
    assert "stage: merge" in (out / "config.yaml").read_text()


# ---------------------------------------------------------------- refusals


def copy_shards(runs: dict[str, Path], tmp_path: Path) -> list[Path]:
    copies = []
    for i, src in enumerate(shard_runs(runs)):
        copies.append(tmp_path / f"shard_{i}")
        shutil.copytree(src, copies[-1])
    return copies


def refused(shards: list[Path], tmp_path: Path) -> str:
    with pytest.raises(MergeError) as err:
        merge_run(shards, tmp_path / "merged")
    assert not (tmp_path / "merged" / "accepted.jsonl").exists()
    return str(err.value)


def rewrite_config(run_dir: Path, change) -> None:
    from omegaconf import OmegaConf

    from autodata.config import to_typed

    cfg = to_typed(OmegaConf.load(run_dir / "config.yaml"))
    change(cfg)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def test_an_unfinished_shard_is_refused(runs, tmp_path):
    shards = copy_shards(runs, tmp_path)
    info = json.loads((shards[1] / "run_info.json").read_text())
    del info["starts"][-1]["finished_at"]
    (shards[1] / "run_info.json").write_text(json.dumps(info))
    message = refused(shards, tmp_path)
    assert f"{shards[1]} has not finished" in message and "rerun that shard's command" in message


def test_what_is_not_a_generate_run_is_refused(runs, tmp_path):
    assert "is not a run dir" in refused([tmp_path], tmp_path)
    shards = copy_shards(runs, tmp_path)
    rewrite_config(shards[0], lambda c: setattr(c, "stage", "eval"))
    assert "is a stage=eval run; stage=merge joins stage=generate runs" in refused(shards, tmp_path)
    with pytest.raises(MergeError, match="merge.runs is empty"):
        merge_run([], tmp_path / "merged")


@pytest.mark.parametrize("change,phrase", [
    (lambda c: setattr(c.domain, "name", "legal"), "domain.name is 'legal' in"),
    (lambda c: setattr(c.method, "name", "cot"), "method.name is 'cot' in"),
    (lambda c: setattr(c.models.roles["weak_solver"], "model", "other-model"),
     "models.roles.weak_solver.model is 'other-model' in"),
    (lambda c: setattr(c.corpus, "limit", 5), "corpus.limit is 5 in"),
    (lambda c: setattr(c.corpus, "num_shards", 4), "corpus.num_shards is 4 in"),
])
def test_shards_of_different_runs_are_refused(runs, tmp_path, change, phrase):
    shards = copy_shards(runs, tmp_path)
    rewrite_config(shards[2], change)
    message = refused(shards, tmp_path)
    assert phrase in message and "same command but for corpus.shard" in message


def test_endpoints_may_differ_between_shards(runs, tmp_path):
    shards = copy_shards(runs, tmp_path)
    rewrite_config(shards[2], lambda c: setattr(c.models.roles["weak_solver"], "base_url", "http://node7:8000/v1"))
    assert merge_run(shards, tmp_path / "merged")["accepted"] == 6


def test_a_duplicate_or_missing_shard_is_refused(runs, tmp_path):
    shards = copy_shards(runs, tmp_path)
    twice = tmp_path / "again" / "shard_0"
    shutil.copytree(shards[0], twice)
    message = refused([*shards, twice], tmp_path)
    assert "shard 0 is given 2 times" in message and "list each shard's run dir once" in message
    message = refused(shards[:2], tmp_path)
    assert "shard(s) 2 of corpus.num_shards=3 are missing (given: 0, 1)" in message


def test_a_document_in_two_shards_is_refused(runs, tmp_path):
    shards = copy_shards(runs, tmp_path)
    stray = next(r for r in rows(shards[0], "documents.jsonl") if r["document_id"] == "doc7")
    with (shards[1] / "documents.jsonl").open("a") as fh:
        fh.write(json.dumps(stray) + "\n")
    message = refused(shards, tmp_path)
    assert f"document 'doc7' is in two shards: {shards[0]} and {shards[1]}" in message
    assert "belongs to shard 0" in message


def test_a_refused_merge_exits_2_through_the_cli(runs, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "autodata.run", "stage=merge", f"merge.runs=[{runs['shard_0']}]",
                           f"hydra.run.dir={tmp_path / 'm'}", "progress=false"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out and "shard(s) 1, 2 of corpus.num_shards=3 are missing" in out
