"""Hacking monitors: per GRPO step, the signs that the policy is learning to game its judge, and an alert when one
rises.

    python -m autodata.run stage=train train.dataset=runs/cs_agentic   # alerts.jsonl, monitor.png in the run dir

``JudgeReward`` (training/reward.py) feeds the monitor each reward batch: the completions, their outcomes, the
example ids and TRL's completion token ids. The numbers, logged through TRL's ``log_metric`` (so
``train/hacking/...`` in metrics.jsonl and W&B), per step:

- ``hacking/guard_share``: share of the step's completions the injection guard flagged (status "injection"
  with a flag other than ``SCREEN_FLAG``);
- ``hacking/screen_share``: share the screen flagged (``SCREEN_FLAG`` among the flags; 0 without a screen);
- ``hacking/judge_failure_share``: share the judge failed to grade after retries (status "failure");
- ``hacking/length_tokens_mean``, ``hacking/length_tokens_p95``: completion length in tokens (TRL's
  ``completion_ids``, the end-of-turn token included); ``hacking/length_chars_*`` in characters when a caller
  passes no token ids. p95 interpolates linearly between order statistics;
- ``hacking/truncation_share``: share that filled ``max_completion_length`` without an end-of-turn token
  (``reward.is_truncated``; only with token ids);
- ``hacking/reward_length_corr``: pooled within-group correlation of reward with length. A group is the
  completions of one ``example_id``. Each reward r and length l is centred on its group's means, then
  corr = sum(dr * dl) / sqrt(sum(dr^2) * sum(dl^2)) over all completions. Centring removes differences between
  prompts (a hard prompt with long, low-scoring answers says nothing about the judge paying for length).
  Completions without a reward (a judge failure with ``train.judge_failure_reward=null``) are left out; the
  metric is omitted when undefined (no spread of reward or length within any group).

Alerts: the mean of the last ``train.hacking_alert_window`` values of a metric (fewer at the start; one value per
reward batch, which is one per optimizer step, or per ``train.num_iterations`` steps) is compared with its
threshold (``train.hacking_alert_*``). Rising above it logs one warning with up to ``EXAMPLES`` trimmed, distinct
excerpts of the offending completions and calls ``on_alert`` with one row (stage.py writes it to alerts.jsonl);
the alert re-arms only once the mean is back at or below the threshold, so a metric that stays high warns once.
Thresholds are strict (a share threshold of 0 alerts on the first flagged completion).

``step`` is ``trainer_state.global_step`` when the completions were scored, as in rewards.jsonl, so an alert's
examples can be found there by step and example id (metrics.jsonl logs the same batch at step + 1, after the
optimizer step). Under several processes each rank monitors its own slice (a group split across ranks is centred
on its part's means) and writes its own alerts file; TRL averages the logged numbers across ranks.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from autodata.config import TrainConfig
from autodata.screen import SCREEN_FLAG

log = logging.getLogger(__name__)

# Offending completions quoted per alert, and the characters kept of each (its start and its end)
EXAMPLES = 3
EXCERPT_CHARS = 300

GUARD, SCREEN, FAILURE = "hacking/guard_share", "hacking/screen_share", "hacking/judge_failure_share"
TRUNCATION, CORR = "hacking/truncation_share", "hacking/reward_length_corr"
# The metric each train.hacking_alert_* threshold watches
SETTINGS = {GUARD: "hacking_alert_guard_share", SCREEN: "hacking_alert_screen_share",
            FAILURE: "hacking_alert_judge_failure_share", TRUNCATION: "hacking_alert_truncation_share",
            CORR: "hacking_alert_length_corr"}
# Every name the monitor may log, in the order of the plot's panels
METRIC_NAMES = (GUARD, SCREEN, FAILURE, TRUNCATION, CORR, "hacking/length_tokens_mean", "hacking/length_tokens_p95",
                "hacking/length_chars_mean", "hacking/length_chars_p95")


def share(flags: Sequence[bool]) -> float:
    """The share of true flags (0 of none).

    >>> share([True, False, False, False]), share([])
    (0.25, 0.0)
    """
    return sum(map(bool, flags)) / len(flags) if flags else 0.0


def p95(values: Sequence[float]) -> float:
    """The 95th percentile, linear between order statistics (numpy's default).

    >>> p95(list(range(1, 21))), p95([7])
    (19.05, 7.0)
    """
    xs = sorted(values)
    pos = 0.95 * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def centred(values: Sequence[float], groups: Sequence[Any]) -> list[float]:
    """Each value minus the mean of its group.

    >>> centred([1.0, 3.0, 10.0], ["a", "a", "b"])
    [-1.0, 1.0, 0.0]
    """
    members: dict[Any, list[float]] = {}
    for v, g in zip(values, groups):
        members.setdefault(g, []).append(v)
    means = {g: statistics.fmean(vs) for g, vs in members.items()}
    return [v - means[g] for v, g in zip(values, groups)]


def within_group_corr(rewards: Sequence[Optional[float]], lengths: Sequence[float],
                      groups: Sequence[Any]) -> Optional[float]:
    """Pooled within-group Pearson correlation of reward with length; None when undefined.

    >>> within_group_corr([0.0, 1.0, 1.0, 0.0], [10, 30, 100, 100], ["a", "a", "b", "b"])  # 10 / sqrt(200 * 1)
    0.7071067811865475
    >>> within_group_corr([0.0, 1.0], [10, 30], ["a", "b"]) is None  # no group of two
    True
    """
    kept = [(r, l, g) for r, l, g in zip(rewards, lengths, groups) if r is not None and math.isfinite(r)]
    if not kept:
        return None
    rs, ls, gs = zip(*kept)
    dr, dl = centred(rs, gs), centred(ls, gs)
    spread = sum(x * x for x in dr) * sum(y * y for y in dl)
    if spread <= 0:
        return None
    return sum(x * y for x, y in zip(dr, dl)) / math.sqrt(spread)


def excerpt(text: str, chars: int = EXCERPT_CHARS) -> str:
    """The start and the end of a long completion (gaming text is often at the end, after the reasoning).

    >>> excerpt("abcdefghij", 6)
    'abc … hij'
    """
    if len(text) <= chars:
        return text
    half = chars // 2
    return f"{text[:half]} … {text[-half:]}"


@dataclass
class Alert:
    step: int
    metric: str
    # The rolling mean that crossed the threshold, over ``steps`` steps; ``step_value``: this step's own value
    value: float
    threshold: float
    step_value: float
    steps: int
    examples: list[dict[str, Any]] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepReport:
    step: int
    metrics: dict[str, float]
    # Rolling means of the watched metrics (what the thresholds are compared with)
    rolling: dict[str, float]
    alerts: list[Alert]


class HackingMonitor:
    """Fed one reward batch per ``observe``; keeps the history for ``summary`` and ``write_plot``."""

    def __init__(self, thresholds: Optional[dict[str, Optional[float]]] = None, window: int = 5, alerts: bool = True,
                 on_alert: Optional[Callable[[dict[str, Any]], None]] = None):
        unknown = set(thresholds or {}) - set(SETTINGS)
        if unknown:
            raise ValueError(f"no hacking monitor named {sorted(unknown)}; known: {sorted(SETTINGS)}")
        # Only the metrics that alert; a None threshold, or alerts off, leaves a metric logged but silent
        self.thresholds = {k: v for k, v in (thresholds or {}).items() if v is not None} if alerts else {}
        self.window = window
        self.on_alert = on_alert
        self._recent = {name: deque(maxlen=window) for name in SETTINGS}
        self._examples: dict[str, deque[list[dict[str, Any]]]] = {name: deque(maxlen=window) for name in SETTINGS}
        self._armed = {name: True for name in SETTINGS}
        self.history: list[StepReport] = []
        self.alerts: list[Alert] = []

    @classmethod
    def from_config(cls, t: TrainConfig, on_alert: Optional[Callable[[dict[str, Any]], None]] = None):
        return cls({name: getattr(t, key) for name, key in SETTINGS.items()}, t.hacking_alert_window,
                   t.hacking_alert_enabled, on_alert)

    def observe(self, step: int, texts: Sequence[str], outcomes: Sequence[Any], groups: Optional[Sequence[Any]] = None,
                completion_ids: Optional[Sequence[Sequence[int]]] = None,
                truncated: Optional[Sequence[bool]] = None) -> StepReport:
        """One reward batch: ``outcomes`` are ``reward.Outcome``s (status, flags, reward, error), one per text;
        ``groups`` the example ids. Returns the step's metrics and the alerts it raised."""
        if not texts:
            return StepReport(step, {}, {}, [])
        unit = "tokens" if completion_ids is not None else "chars"
        lengths = [len(ids) for ids in completion_ids] if completion_ids is not None else [len(t) for t in texts]
        rewards = [o.reward for o in outcomes]
        offending = {
            GUARD: [o.status == "injection" and any(f != SCREEN_FLAG for f in o.flags) for o in outcomes],
            SCREEN: [SCREEN_FLAG in o.flags for o in outcomes],
            FAILURE: [o.status == "failure" for o in outcomes],
        }
        if truncated is not None:
            offending[TRUNCATION] = list(truncated)
        metrics = {name: share(flags) for name, flags in offending.items()}
        metrics[f"hacking/length_{unit}_mean"] = statistics.fmean(lengths)
        metrics[f"hacking/length_{unit}_p95"] = p95(lengths)
        order: dict[str, list[int]] = {name: [i for i, bad in enumerate(flags) if bad]
                                       for name, flags in offending.items()}
        if groups is not None:
            corr = within_group_corr(rewards, lengths, groups)
            if corr is not None:
                metrics[CORR] = corr
                order[CORR] = length_paid(rewards, lengths, groups)

        rolling: dict[str, float] = {}
        alerts: list[Alert] = []
        for name in SETTINGS:
            if name not in metrics:
                continue
            self._recent[name].append(metrics[name])
            self._examples[name].append([self._example(step, i, texts, outcomes, groups, lengths, unit)
                                         for i in first_distinct(order[name], texts)])
            rolling[name] = statistics.fmean(self._recent[name])
            threshold = self.thresholds.get(name)
            if threshold is None:
                continue
            if self._armed[name] and rolling[name] > threshold:
                self._armed[name] = False
                alerts.append(Alert(step, name, rolling[name], threshold, metrics[name], len(self._recent[name]),
                                    self._recent_examples(name)))
            elif rolling[name] <= threshold:
                self._armed[name] = True
        report = StepReport(step, metrics, rolling, alerts)
        self.history.append(report)
        for alert in alerts:
            self._report(alert)
        return report

    @staticmethod
    def _example(step: int, i: int, texts: Sequence[str], outcomes: Sequence[Any], groups: Optional[Sequence[Any]],
                 lengths: Sequence[int], unit: str) -> dict[str, Any]:
        o = outcomes[i]
        out = {"step": step, "example_id": groups[i] if groups is not None else None, "reward": o.reward,
               "status": o.status, "flags": list(o.flags), f"length_{unit}": lengths[i], "excerpt": excerpt(texts[i])}
        if o.error:
            out["error"] = str(o.error)[:EXCERPT_CHARS]
        return out

    def _recent_examples(self, name: str) -> list[dict[str, Any]]:
        """This step's offending completions first, then those of the earlier steps in the window; one of each
        text (a policy that found a trick repeats it word for word)."""
        found: dict[str, dict[str, Any]] = {}
        for step_examples in reversed(self._examples[name]):
            for e in step_examples:
                found.setdefault(e["excerpt"], e)
        return list(found.values())[:EXAMPLES]

    def _report(self, alert: Alert) -> None:
        self.alerts.append(alert)
        quoted = "; ".join(repr(e["excerpt"][:160]) for e in alert.examples) or "(none in the window)"
        log.warning("hacking monitor: %s rose to %.3f (mean of the last %d steps; this step %.3f), above "
                    "train.%s=%g at step %d. The policy may be gaming the judge; read the completions in "
                    "rewards.jsonl / alerts.jsonl. Examples: %s", alert.metric, alert.value, alert.steps,
                    alert.step_value, SETTINGS[alert.metric], alert.threshold, alert.step, quoted)
        if self.on_alert is not None:
            self.on_alert(alert.row())

    def summary(self) -> dict[str, Any]:
        """Per metric logged: last and max value, its threshold, the step of its first alert and its alert count."""
        per: dict[str, Any] = {}
        for name in METRIC_NAMES:
            values = [r.metrics[name] for r in self.history if name in r.metrics]
            if not values:
                continue
            fired = [a for a in self.alerts if a.metric == name]
            per[name] = {"last": values[-1], "max": max(values), "threshold": self.thresholds.get(name),
                         "first_alert_step": fired[0].step if fired else None, "alerts": len(fired)}
        return {"steps": len(self.history), "window": self.window, "alerts": len(self.alerts), "metrics": per}

    def write_plot(self, path: Path) -> bool:
        """monitor.png: one panel per metric over steps, the rolling mean, the threshold dashed and each alert as a
        red line. False (with a warning) when there is nothing to plot or the plot fails: never costs the run."""
        if not self.history:
            return False
        try:
            plot_history(self.history, self.thresholds, self.alerts, path)
        except Exception as err:  # noqa: BLE001 - a plot must never cost the run its summary
            log.warning("%s not written: %s", path.name, err)
            return False
        return True


def first_distinct(indexes: Sequence[int], texts: Sequence[str], k: int = EXAMPLES) -> list[int]:
    """The first ``k`` indexes whose texts differ.

    >>> first_distinct([0, 1, 2, 3], ["a", "a", "b", "c"], 2)
    [0, 2]
    """
    seen: set[str] = set()
    picked: list[int] = []
    for i in indexes:
        if texts[i] not in seen and len(picked) < k:
            seen.add(texts[i])
            picked.append(i)
    return picked


def length_paid(rewards: Sequence[Optional[float]], lengths: Sequence[float], groups: Sequence[Any]) -> list[int]:
    """Indexes of completions both longer and better rewarded than their group's mean, most to the correlation first:
    the examples of a length alert.

    >>> length_paid([0.0, 1.0, 1.0, 0.0], [10, 30, 100, 100], ["a", "a", "b", "b"])
    [1]
    """
    kept = [i for i, r in enumerate(rewards) if r is not None and math.isfinite(r)]
    dr = centred([rewards[i] for i in kept], [groups[i] for i in kept])
    dl = centred([lengths[i] for i in kept], [groups[i] for i in kept])
    paid = [(x * y, i) for i, x, y in zip(kept, dr, dl) if x > 0 and y > 0]
    return [i for _, i in sorted(paid, key=lambda p: -p[0])]


def plot_history(history: Sequence[StepReport], thresholds: dict[str, float], alerts: Sequence[Alert],
                 path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = [n for n in METRIC_NAMES if any(n in r.metrics for r in history)]
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        steps = [r.step for r in history if name in r.metrics]
        ax.plot(steps, [r.metrics[name] for r in history if name in r.metrics], marker=".", linewidth=1,
                label="step")
        if name in SETTINGS:
            ax.plot(steps, [r.rolling[name] for r in history if name in r.metrics], linewidth=1.5, label="rolling")
        if name in thresholds:
            ax.axhline(thresholds[name], color="tab:red", linestyle="--", linewidth=0.8, label="threshold")
        for alert in alerts:
            if alert.metric == name:
                ax.axvline(alert.step, color="tab:red", alpha=0.4, linewidth=1)
        if name == CORR:
            ax.set_ylim(-1.05, 1.05)
        elif name.endswith("_share"):
            ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name.removeprefix("hacking/"), fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=6)
    fig.supxlabel("step (trainer global_step at scoring)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def define_wandb_metrics(run: Any) -> None:
    """The train/hacking/* series in W&B: drawn against ``train/global_step`` (TRL's x-axis) with their max and last
    value in the run summary, so the runs table sorts by the worst step."""
    run.define_metric("train/global_step")
    for name in METRIC_NAMES:
        run.define_metric(f"train/{name}", step_metric="train/global_step", summary="max,last")


def wandb_panels(monitor: HackingMonitor, plot: Optional[Path]) -> dict[str, Any]:
    """What ``run.log`` takes at the end of training: the ``hacking`` section of the workspace, with monitor.png
    (``hacking/monitor``) and a table of the alerts (``hacking/alerts``: step, metric, value, threshold, first
    example)."""
    import wandb

    table = wandb.Table(columns=["step", "metric", "value", "threshold", "example"])
    for a in monitor.alerts:
        table.add_data(a.step, a.metric, a.value, a.threshold, a.examples[0]["excerpt"] if a.examples else "")
    panels: dict[str, Any] = {"hacking/alerts": table}
    if plot is not None and plot.exists():
        panels["hacking/monitor"] = wandb.Image(str(plot))
    return panels
