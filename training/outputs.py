"""What a training run writes besides its checkpoints: metrics.jsonl, W&B (offline by default) and the final model card.

Metric names are TRL's plus the reward's, all under ``train/`` (the prefix W&B's
transformers integration adds, written the same way to ``metrics.jsonl``):
``train/reward``, ``train/rewards/rubric_judge/mean``, ``train/frac_reward_zero_std``,
``train/truncation_rate``, ``train/judge/latency_mean_s``, ``train/judge/failures``,
``train/judge/injection_flags``, ... (the README lists them all).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

from transformers import TrainerCallback

from autodata.config import RootConfig
from autodata.domains import domain_class
from autodata.rundir import JsonlWriter, write_json_atomic, write_text_atomic


def metric_name(key: str) -> str:
    """W&B's naming of Trainer logs: eval keys keep their prefix, everything else goes under train/.

    >>> metric_name("frac_reward_zero_std"), metric_name("eval_reward"), metric_name("train/loss")
    ('train/frac_reward_zero_std', 'eval/reward', 'train/loss')
    """
    if key.startswith("eval_"):
        return "eval/" + key[len("eval_"):]
    if key.startswith(("train/", "eval/")):
        return key
    return "train/" + key


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlMetrics(TrainerCallback):
    """Every Trainer log line as one JSON row in <run dir>/metrics.jsonl (main process only)."""

    def __init__(self, path: Path):
        self.path = path
        self._writer: Optional[JsonlWriter] = None
        self.last: dict[str, Any] = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if self._writer is None:
            self._writer = JsonlWriter(self.path)
        row = {"step": state.global_step, "time": round(time.time(), 3)}
        row.update({metric_name(k): _clean(v) for k, v in logs.items()})
        self._writer.write(row)
        self.last.update({k: v for k, v in row.items() if v is not None})

    def on_train_end(self, args, state, control, **kwargs):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


KEY_METRICS = ("train/reward", "train/reward_std", "train/frac_reward_zero_std", "train/truncation_rate",
               "train/completions/mean_length", "train/judge/latency_mean_s", "train/judge/reward_time_s",
               "train/kl", "train/entropy", "train/train_runtime")


def write_model_card(final_dir: Path, cfg: RootConfig, summary: dict[str, Any]) -> None:
    """README.md (a Hugging Face model card) and train_summary.json next to the saved weights."""
    t = cfg.train
    plan = summary["batch"]
    data = summary["data"]
    base = t.model if not Path(t.model).exists() and t.model != "embedded" else None
    front = ["---", "library_name: " + ("peft" if t.lora.enabled else "transformers"),
             "tags: [autodata, grpo, trl]"] + ([f"base_model: {base}"] if base else []) + ["---", ""]
    lines = [
        f"# {final_dir.parent.name}: GRPO on autodata {cfg.domain.name} data",
        "",
        f"Policy `{t.model}` trained with GRPO (TRL) on examples made by `stage=generate`; the reward is the "
        f"`{summary['reward_function']}` judge (`{summary['judge']}`), scored by the framework "
        + ("(equivalence with the reference answer, 1 or 0)." if domain_class(cfg.domain).grading == "equivalence"
           else "(clipped weighted rubric score in [0, 1])."),
        "",
        "## Training data",
        "",
        "| source | read | examples | held-out dropped |",
        "|---|---|---|---|",
        *[f"| `{s['path']}` | {s['read']} | {s['examples']} | {s['heldout_dropped']} |" for s in data["sources"]],
        "",
        f"{data['examples']} training examples in all; held-out examples were never trained on.",
        "",
        "## Configuration",
        "",
        f"- batch: {plan['prompts_per_step']} prompts x {t.group_size} completions = {plan['completions_per_step']} "
        f"completions per optimizer step = {plan['per_device_batch_size']} per device x {plan['num_processes']} "
        f"processes x {plan['gradient_accumulation_steps']} accumulation steps",
        f"- learning rate {t.learning_rate} ({t.lr_scheduler_type}), epochs {t.epochs}, max steps {t.max_steps}",
        f"- temperature {t.temperature}, top-p {t.top_p}, max completion length {t.max_completion_length}",
        f"- beta {t.beta}, loss {t.loss_type}, reward scaling {t.scale_rewards}, "
        f"mask truncated {t.mask_truncated_completions}",
        f"- LoRA: {'r=%d alpha=%d' % (t.lora.r, t.lora.alpha) if t.lora.enabled else 'off'}; "
        f"vLLM rollouts: {t.vllm.mode if t.vllm.enabled else 'off'}",
        "- full config: `autodata_config.yaml`",
        "",
        "## Metrics (last logged values)",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| `{k}` | {_fmt(summary['metrics'][k])} |" for k in KEY_METRICS if k in summary["metrics"]],
        f"| steps | {summary['global_step']} |",
        f"| judge failures (total) | {summary['judge_totals'].get('failure', 0)} |",
        f"| injection flags (total) | {summary['judge_totals'].get('injection', 0)} |",
        "",
        *monitor_lines(summary.get("monitor")),
        "## Reproduce",
        "",
        "```bash",
        summary["command"],
        "```",
        "",
        f"autodata commit {summary['git'].get('commit')} (dirty: {summary['git'].get('dirty')}).",
        "",
    ]
    final_dir.mkdir(parents=True, exist_ok=True)
    (final_dir / "README.md").write_text("\n".join(front + lines))
    write_json_atomic(final_dir / "train_summary.json", summary, default=str)
    from omegaconf import OmegaConf

    write_text_atomic(final_dir / "autodata_config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def monitor_lines(monitor: Optional[dict[str, Any]]) -> list[str]:
    """The model card's section on the hacking monitors (training/monitor.py): one row per metric."""
    if not monitor or not monitor.get("metrics"):
        return []
    rows = [f"| `train/{name}` | {_fmt(m['last'])} | {_fmt(m['max'])} | {_fmt(m['threshold'])} | {m['alerts']} | "
            f"{_fmt(m['first_alert_step'])} |" for name, m in monitor["metrics"].items()]
    return ["## Hacking monitors", "",
            f"{monitor['alerts']} alert(s) over {monitor['steps']} steps (rolling mean of {monitor['window']} "
            "steps against each threshold; `alerts.jsonl` in the run dir quotes the completions).", "",
            "| metric | last | max | threshold | alerts | first alert at step |", "|---|---|---|---|---|---|",
            *rows, ""]


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def command_line() -> str:
    """The command that launched this process, as a user would type it (Hydra overrides kept)."""
    return " ".join(["python -m autodata.run", *sys.argv[1:]])
