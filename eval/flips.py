"""Wrong-to-right flips between two eval runs of the same set, and how many came from fixing truncation.

The paper reports that 54.81% of the science arm's wrong-to-right flips came from fixing truncation:
the base model's answer was cut off at the token budget, the trained model's was not. ``report.flips``
names, per label, a base and a trained eval run (``RUN[#SET][@JUDGE]``, as in ``report.runs``). Samples
are paired by prompt id and sample index (independent draws, so a pair is a fair draw of one base and
one trained answer); a sample is right when its score is at least ``report.flip_threshold`` (1.0: a
binary verdict of correct). Pairs where either side has no grade are left out and counted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from autodata.rundir import read_jsonl
from eval.cells import ReportError, parse_spec


@dataclass
class FlipStats:
    pairs: int
    ungraded_pairs: int
    wrong_to_right: int
    right_to_wrong: int
    # Of the wrong-to-right pairs: the base answer had hit the token budget (finish_reason "length")
    from_truncation: int

    @property
    def share_from_truncation(self) -> Optional[float]:
        return self.from_truncation / self.wrong_to_right if self.wrong_to_right else None

    @property
    def stderr(self) -> Optional[float]:
        p, n = self.share_from_truncation, self.wrong_to_right
        return math.sqrt(p * (1 - p) / n) if p is not None and n > 1 else (0.0 if p is not None else None)


def load_samples(spec: str) -> tuple[dict[tuple[str, int], dict[str, Any]], str]:
    """(prompt id, sample index) -> {score, finish_reason} of one set and judge of an eval run."""
    path_text, dataset, judge = parse_spec(spec)
    run = Path(path_text)
    samples = run / "samples.jsonl"
    if not samples.exists():
        raise ReportError(f"report.flips: {samples} not found (run stage=eval with hydra.run.dir={path_text})")
    rows = list(read_jsonl(samples))
    sets = sorted({r.get("dataset") for r in rows})
    if not dataset:
        if len(sets) != 1:
            raise ReportError(f"report.flips: {samples} has sets {sets}; name one as {path_text}#SET")
        dataset = sets[0]
    if not judge:
        metrics = run / "metrics.json"
        try:
            primary = json.loads(metrics.read_text())["datasets"].get(dataset, {}) if metrics.exists() else {}
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ReportError(f"report.flips: {metrics} is not an eval metrics file ({type(err).__name__}: {err}); "
                              f"rerun stage=eval with hydra.run.dir={path_text} to rewrite it from samples.jsonl, "
                              f"or name the judge as {spec}@JUDGE") from None
        judge = primary.get("primary_judge", "judge")
    out = {}
    for r in rows:
        if r.get("dataset") != dataset:
            continue
        grade = (r.get("grades") or {}).get(judge) or {}
        out[(r["prompt_id"], int(r["sample"]))] = {"score": grade.get("score"), "finish_reason": r.get("finish_reason")}
    if not out:
        raise ReportError(f"report.flips: {samples} has no samples of set {dataset!r} (sets: {sets})")
    return out, f"{path_text}#{dataset}@{judge}"


def flip_stats(base: dict[tuple[str, int], dict], trained: dict[tuple[str, int], dict], threshold: float) -> FlipStats:
    """Count flips over the (prompt, sample) pairs both runs have.

    >>> b = {("p", 0): {"score": 0.0, "finish_reason": "length"}, ("p", 1): {"score": 0.0, "finish_reason": "stop"},
    ...      ("q", 0): {"score": 1.0, "finish_reason": "stop"}, ("q", 1): {"score": None, "finish_reason": "stop"}}
    >>> t = {("p", 0): {"score": 1.0, "finish_reason": "stop"}, ("p", 1): {"score": 1.0, "finish_reason": "stop"},
    ...      ("q", 0): {"score": 0.0, "finish_reason": "stop"}, ("q", 1): {"score": 1.0, "finish_reason": "stop"}}
    >>> s = flip_stats(b, t, 1.0)
    >>> (s.pairs, s.ungraded_pairs, s.wrong_to_right, s.right_to_wrong, s.from_truncation, s.share_from_truncation)
    (3, 1, 2, 1, 1, 0.5)
    """
    pairs = ungraded = up = down = truncated = 0
    for key in sorted(base.keys() & trained.keys()):
        b, t = base[key], trained[key]
        if b["score"] is None or t["score"] is None:
            ungraded += 1
            continue
        pairs += 1
        was, now = b["score"] >= threshold, t["score"] >= threshold
        if not was and now:
            up += 1
            truncated += b["finish_reason"] == "length"
        elif was and not now:
            down += 1
    return FlipStats(pairs, ungraded, up, down, truncated)
