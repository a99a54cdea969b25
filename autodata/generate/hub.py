"""Publish a generate run's dataset to the Hugging Face hub (``generate.push_to_hub=ORG/NAME``).

The push runs after everything local is written (accepted.jsonl, the splits, dataset/ with its card,
stats.json), so a failed push loses nothing: it is logged with the command that retries it, recorded
under ``hub`` in stats.json, and ``stage.run`` exits with code 4. The token is read from ``HF_TOKEN``
(None lets huggingface_hub fall back to a ``huggingface-cli login``); it is never logged or written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

# Checked before the push by the stage; shared with validation and the card, which import it from autodata/
from autodata.hub_ids import repo_id_problem  # noqa: F401

log = logging.getLogger(__name__)

TOKEN_ENV = "HF_TOKEN"


def push_dataset(run_dir: Path, repo_id: str, private: bool, sizes: dict[str, int],
                 retry_command: str) -> dict[str, Any]:
    """Push the non-empty splits of ``run_dir/dataset`` (``sizes``: examples per split) and its card.

    Returns the outcome as stats.json records it under ``hub``.
    """
    import datasets
    from huggingface_hub import HfApi

    outcome: dict[str, Any] = {"repo_id": repo_id, "pushed": False, "splits": {}, "error": None}
    # The hub shows no empty split (the card lists only non-empty ones): only splits with examples are pushed
    saved = datasets.load_from_disk(str(run_dir / "dataset"))
    splits = datasets.DatasetDict({name: saved[name] for name, n in sizes.items() if n})
    if not splits:
        outcome["error"] = "the run accepted no examples: nothing to push (stats.json says why)"
        log.error("push to %s skipped: %s", repo_id, outcome["error"])
        return outcome
    token = os.environ.get(TOKEN_ENV) or None
    try:
        splits.push_to_hub(repo_id, private=private, token=token)
        # push_to_hub writes a README of its own; the card replaces it.
        HfApi(token=token).upload_file(path_or_fileobj=str(run_dir / "dataset" / "README.md"),
                                       path_in_repo="README.md", repo_id=repo_id, repo_type="dataset",
                                       commit_message="autodata dataset card")
    except Exception as err:  # any failure (network, auth, quota) must leave the local run intact and say so
        outcome["error"] = f"{type(err).__name__}: {err}"
        log.error("push to the hub dataset %s failed: %s\nEvery local output is in %s (dataset/ holds the data and "
                  "its card). Set %s (or run huggingface-cli login), then retry the push with the same command; "
                  "finished documents are not generated again:\n    %s", repo_id, outcome["error"], run_dir,
                  TOKEN_ENV, retry_command)
        return outcome
    outcome.update(pushed=True, splits={name: len(ds) for name, ds in splits.items()})
    log.info("pushed %s to https://huggingface.co/datasets/%s",
             ", ".join(f"{n} {name}" for name, n in outcome["splits"].items()), repo_id)
    return outcome
