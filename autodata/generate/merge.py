"""``stage=merge``: join the run dirs of a sharded generate run into one run dir shaped like a generate run's.

    # one process per shard (a SLURM array: i = $SLURM_ARRAY_TASK_ID), each its own run dir, ledger and cache
    python -m autodata.run stage=generate corpus.num_shards=4 corpus.shard=$i hydra.run.dir=runs/big/shard_$i
    # then, once every shard has finished
    python -m autodata.run stage=merge merge.runs=[runs/big] hydra.run.dir=runs/big/merged

``merge.runs`` lists the shards' run dirs, or names one folder whose ``shard_*`` subfolders are they. The
merged run dir holds what one unsharded generate run of the same corpus would write: accepted.jsonl,
rounds.jsonl and documents.jsonl (every shard's rows, ordered by document id), train.jsonl / heldout.jsonl
(the held-out split drawn over every accepted example, as generate draws it), dataset/ with its card, and
stats.json (recomputed from the merged rows; ``wall_seconds_total``, retries and documents not started
summed over the shards, ``wall_seconds`` the longest shard's; ``shards`` lists each input with its counts).
Its config.yaml carries the shards' experiment, models, domain, method, corpus (as one part: the merged dir
holds the whole corpus) and generate settings, so stage=train (``train.dataset=runs/big/merged``) and
stage=eval (``eval.datasets=[runs/big/merged]``) read and check it as they do a generate run dir. The merge
command needs none of those overrides; of its own generate group only ``generate.push_to_hub`` and
``generate.hub_private`` apply (a sharded run pushes once, here; exit 4 when that push fails), and the card's
``generate.license``, ``license_name``, ``license_link`` and ``language``.

Refused, exit 2 (nothing is merged): an input that is not a finished stage=generate run, shards whose
settings differ (domain, method, models, corpus, the generate settings that shape the data), a shard given
twice or missing, and a document found in two shards.

Each shard is an ordinary generate run: a lost node is redone by rerunning its shard's command with the
same hydra.run.dir (it resumes from its ledger and cache), and the merge runs again afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from autodata.config import RootConfig, to_typed
from autodata.corpus import shard_of
from autodata.domains import build_domain
# What the shards must agree on is what shapes the data, which the card shows too
from autodata.generate.card import command_line, data_settings, render_card, run_commands
from autodata.generate.hub import push_dataset
from autodata.generate.outputs import compute_stats, print_summary, stats_view, why_none_accepted, write_splits
from autodata.rundir import finished, jsonl_lines, read_jsonl, rewrite_jsonl, write_json_atomic, write_text_atomic
from autodata.validation import InputError

log = logging.getLogger(__name__)

# The subfolders of a merge.runs folder that are the shards' run dirs
SHARD_DIRS = "shard_*"
# Problems of one kind shown before "and N more"
SHOWN = 5


class MergeError(InputError):
    """The inputs of stage=merge are not the finished shards of one generate run; the message says which and why."""


@dataclass
class Shard:
    run_dir: Path
    cfg: RootConfig
    stats: dict[str, Any]
    ledger: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    # The rounds as compute_stats reads them (stats_view), and where each row's line lies in rounds.jsonl
    rounds: list[dict[str, Any]] = field(default_factory=list)
    round_lines: list[tuple[str, int, int, int]] = field(default_factory=list)

    @property
    def index(self) -> int:
        return self.cfg.corpus.shard


def shard_dirs(runs: list[str]) -> list[Path]:
    """merge.runs as run dirs: an entry that is not a run dir but holds ``shard_*`` run dirs stands for them.

    The order does not matter: shards are put in order by their corpus.shard.
    """
    dirs: list[Path] = []
    for given in runs:
        path = Path(given).expanduser()
        subfolders = sorted(p for p in path.glob(SHARD_DIRS) if p.is_dir()) if path.is_dir() else []
        dirs += subfolders if subfolders and not (path / "run_info.json").exists() else [path]
    return dirs


def read_run(path: Path) -> tuple[Optional[RootConfig], Optional[str]]:
    """The config of a finished generate run dir, or why ``path`` is not one."""
    if not path.is_dir():
        return None, "does not exist (or is not a folder)"
    if not ((path / "config.yaml").exists() and (path / "run_info.json").exists()):
        return None, ("is not a run dir (it has no config.yaml and run_info.json); list the shards' generate run dirs, "
                      f"or one folder holding them as {SHARD_DIRS}")
    try:
        cfg = to_typed(OmegaConf.load(path / "config.yaml"))
    except Exception as err:  # noqa: BLE001 - any unreadable config makes the input unusable; say why
        return None, f"has a config.yaml that cannot be read ({type(err).__name__}: {err})"
    if cfg.stage != "generate":
        return None, f"is a stage={cfg.stage} run; stage=merge joins stage=generate runs (one per corpus.shard)"
    if not finished(path) or not (path / "stats.json").exists():
        return None, ("has not finished (the latest start in its run_info.json has no finished_at: still running, "
                      "killed, or it exited with an error); rerun that shard's command with the same hydra.run.dir "
                      "to resume it, then merge again")
    try:
        json.loads((path / "stats.json").read_text())
    except ValueError as err:
        return None, (f"has a stats.json that is not JSON ({type(err).__name__}: torn by a kill, or damaged); rerun "
                      "that shard's command with the same hydra.run.dir to write it again (no model call), then "
                      "merge again")
    return cfg, None


def _some(items: list[str]) -> list[str]:
    return items[:SHOWN] + ([f"and {len(items) - SHOWN} more"] if len(items) > SHOWN else [])


def load_shards(runs: list[str]) -> list[Shard]:
    """Every shard of merge.runs, in shard order, checked to be the finished shards of one generate run."""
    if not runs:
        raise MergeError("merge.runs is empty; list the shards' generate run dirs, e.g. "
                         "merge.runs=[runs/big/shard_0,runs/big/shard_1], or the folder holding them: "
                         "merge.runs=[runs/big]")
    problems: list[str] = []
    shards: list[Shard] = []
    for path in shard_dirs(runs):
        cfg, why = read_run(path)
        if cfg is None:
            problems.append(f"{path} {why}")
        else:
            shards.append(Shard(path, cfg, json.loads((path / "stats.json").read_text())))
    if problems:
        raise _refused(problems)

    first = shards[0]
    expected = data_settings(first.cfg)
    for shard in shards[1:]:
        found = data_settings(shard.cfg)
        problems += _some([f"{key} is {found.get(key)!r} in {shard.run_dir} but {value!r} in {first.run_dir}"
                           for key, value in expected.items() if found.get(key) != value])
    if problems:
        problems.append("every shard must be run with the same command but for corpus.shard; merge shards of one run")
        raise _refused(problems)

    n = first.cfg.corpus.num_shards
    by_index: dict[int, list[Shard]] = {}
    for shard in shards:
        by_index.setdefault(shard.index, []).append(shard)
    for index, given in sorted(by_index.items()):
        if len(given) > 1:
            problems.append(f"shard {index} is given {len(given)} times ({', '.join(str(s.run_dir) for s in given)}); "
                            "list each shard's run dir once")
    missing = [i for i in range(n) if i not in by_index]
    if missing:
        problems.append(f"shard(s) {', '.join(map(str, missing))} of corpus.num_shards={n} are missing (given: "
                        f"{', '.join(map(str, sorted(by_index))) or 'none'}); run them (corpus.num_shards={n} "
                        f"corpus.shard=I) and list their run dirs too")
    if problems:
        raise _refused(problems)
    shards.sort(key=lambda s: s.index)

    owner: dict[str, Path] = {}
    for shard in shards:
        _read_rows(shard)
        for row in shard.ledger:
            doc_id = str(row.get("document_id"))
            if doc_id in owner:
                problems.append(f"document {doc_id!r} is in two shards: {owner[doc_id]} and {shard.run_dir}")
            owner[doc_id] = shard.run_dir
            home = shard_of(doc_id, n)
            if home != shard.index:
                problems.append(f"document {doc_id!r} of {shard.run_dir} (shard {shard.index}) belongs to shard {home}")
    if problems:
        shown = _some(problems)
        shown.append("a run dir holds the rows of another shard: was a hydra.run.dir shared by two shards? Rerun the "
                     "affected shards, each in a run dir of its own")
        raise _refused(shown)
    return shards


def _refused(problems: list[str]) -> MergeError:
    lines = "\n".join(f"  - {p}" for p in problems)
    return MergeError(f"stage=merge cannot join merge.runs:\n{lines}")


def _read_rows(shard: Shard) -> None:
    """The shard's ledger and accepted rows, and its rounds as stats views plus the place of each line."""
    shard.ledger = list(read_jsonl(shard.run_dir / "documents.jsonl"))
    shard.accepted = list(read_jsonl(shard.run_dir / "accepted.jsonl"))
    path = shard.run_dir / "rounds.jsonl"
    for line_no, start, raw, row in jsonl_lines(path):
        if row is None:
            log.warning("%s line %d is not a JSON object (torn by a kill, or damaged); not merged", path, line_no)
            continue
        shard.rounds.append(stats_view(row))
        line = raw if raw.endswith(b"\n") else raw + b"\n"
        shard.round_lines.append((str(row.get("document_id")), int(row.get("round") or 0), start, len(line)))


def write_rounds(shards: list[Shard], out: Path) -> None:
    """Every shard's round rows by document id and round, copied line by line (no round is held in memory whole:
    with the solvers' answers a sharded corpus's rounds can outgrow it)."""
    order = sorted((doc_id, rnd, i, n) for i, shard in enumerate(shards)
                   for n, (doc_id, rnd, _, _) in enumerate(shard.round_lines))
    tmp = out.with_suffix(out.suffix + ".tmp")
    files = [(s.run_dir / "rounds.jsonl").open("rb") if s.round_lines else None for s in shards]
    try:
        with tmp.open("wb") as dst:
            for _, _, i, n in order:
                _, _, start, length = shards[i].round_lines[n]
                src = files[i]
                src.seek(start)
                dst.write(src.read(length).rstrip(b"\r\n") + b"\n")
            dst.flush()
            os.fsync(dst.fileno())
    finally:
        for fh in files:
            if fh is not None:
                fh.close()
    os.replace(tmp, out)


def merged_config(cfg: RootConfig, shards: list[Shard]) -> RootConfig:
    """The config the merged run dir records: the shards' data settings, the whole corpus as one part."""
    made = shards[0].cfg
    targets = [s.cfg.generate.target_accepted for s in shards]
    # Where and how the merged data is published is the merge command's own: the hub repo and the card's license
    published = {k: getattr(cfg.generate, k) for k in ("push_to_hub", "hub_private", "license", "license_name",
                                                       "license_link", "language")}
    generate = replace(made.generate, target_accepted=None if None in targets else sum(targets), **published)
    return replace(cfg, experiment=made.experiment, models=made.models, domain=made.domain, method=made.method,
                   corpus=replace(made.corpus, num_shards=1, shard=0), generate=generate)


def merge(cfg: RootConfig, run_dir: Path) -> dict[str, Any]:
    """Join the shards of ``cfg.merge.runs`` into ``run_dir``; returns the merged stats."""
    started = time.time()
    shards = load_shards(cfg.merge.runs)
    made = merged_config(cfg, shards)
    run_dir.mkdir(parents=True, exist_ok=True)

    ledger = sorted((row for s in shards for row in s.ledger), key=lambda r: str(r.get("document_id")))
    accepted = sorted((row for s in shards for row in s.accepted),
                      key=lambda r: (str(r.get("document_id")), str(r.get("id"))))
    rewrite_jsonl(run_dir / "documents.jsonl", ledger)
    rewrite_jsonl(run_dir / "accepted.jsonl", accepted)
    write_rounds(shards, run_dir / "rounds.jsonl")
    train_rows, heldout_rows = write_splits(run_dir, accepted, made.generate, build_domain(made.domain))

    n_docs = sum(int(s.stats.get("documents", 0)) for s in shards)
    stats = compute_stats([r for s in shards for r in s.rounds], ledger, accepted, n_docs)
    totals = [float(s.stats.get("wall_seconds_total", 0.0) or 0.0) for s in shards]
    retries: Counter = Counter()
    for s in shards:
        retries.update(s.stats.get("retries") or {})
    target = made.generate.target_accepted
    first = shards[0].stats
    stats.update({
        "method": made.method.name,
        "domain": made.domain.name,
        "train_examples": len(train_rows),
        "heldout_examples": len(heldout_rows),
        # Counted by every shard over the whole corpus (each reads all of it), so any one shard's counts
        "documents_skipped": first.get("documents_skipped", {}),
        "target_accepted": target,
        "target_reached": None if target is None else all(s.stats.get("target_reached") for s in shards),
        "documents_not_started": sum(int(s.stats.get("documents_not_started", 0) or 0) for s in shards),
        "strong_sees_document": made.generate.strong_sees_document,
        "challengers_per_round": first.get("challengers_per_round", 1),
        # The first shard's that ran a document (each shard derives it from its own endpoints; see shards)
        "document_cap": next((c for s in shards if (c := s.stats.get("document_cap")) is not None), None),
        # What the shards took side by side, and all of them together
        "wall_seconds": round(max(totals), 2),
        "wall_seconds_total": round(sum(totals), 2),
        "retries": dict(sorted(retries.items())),
        # The merge itself calls no model
        "this_process": {"per_role": {}, "retries": {}},
        "why_none_accepted": why_none_accepted(stats) if not accepted else None,
        "variant": first.get("variant"),
        "protected_template_overrides": first.get("protected_template_overrides"),
        "shards": [{
            "run_dir": str(s.run_dir),
            "shard": s.index,
            "documents": s.stats.get("documents"),
            "documents_finished": s.stats.get("documents_finished"),
            "document_errors": s.stats.get("document_errors"),
            "accepted": len(s.accepted),
            "rounds": len(s.rounds),
            "wall_seconds_total": s.stats.get("wall_seconds_total"),
            "document_cap": (s.stats.get("document_cap") or {}).get("tokens"),
        } for s in shards],
        "merge_seconds": round(time.time() - started, 2),
    })
    errors = [f"{s['run_dir']}: {s['document_errors']}" for s in stats["shards"] if s["document_errors"]]
    if errors:
        log.warning("documents that ended in error are merged as such (%s); rerun those shards' commands to redo "
                    "them, then merge again", ", ".join(errors))
    write_json_atomic(run_dir / "stats.json", stats)
    commands = [c for s in shards for c in run_commands(s.run_dir)] + run_commands(run_dir)
    commands = [c for i, c in enumerate(commands) if c not in commands[:i]]
    (run_dir / "dataset" / "README.md").write_text(render_card(made, stats, commands), encoding="utf-8")
    # Last: train and eval read the data's producer (domain, models) from here (autodata/rundir.py input_conflicts)
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(made)))
    return stats


def run(cfg: RootConfig, run_dir: Path) -> None:
    stats = merge(cfg, run_dir)
    log.info("merged %d shards: %d accepted of %d documents, %d rounds; stats in %s", len(stats["shards"]),
             stats["accepted"], stats["documents"], stats["rounds"], run_dir / "stats.json")
    print_summary(stats, run_dir)
    repo_id = cfg.generate.push_to_hub
    if repo_id:
        sizes = {"train": stats["train_examples"], "heldout": stats["heldout_examples"]}
        # The same command again merges (no model call) and retries the push
        argv = sys.argv + ([] if any(a.startswith("hydra.run.dir=") for a in sys.argv[1:])
                           else [f"hydra.run.dir={run_dir}"])
        stats["hub"] = push_dataset(run_dir, repo_id, cfg.generate.hub_private, sizes, command_line(argv))
        write_json_atomic(run_dir / "stats.json", stats)
        if not stats["hub"]["pushed"]:
            log.error("the merged dataset is in %s but was not pushed to %s (exit code 4)", run_dir / "dataset",
                      repo_id)
            raise SystemExit(4)
