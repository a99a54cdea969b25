"""``stage=train``: GRPO (TRL) on a generate run's accepted examples, rewarded by the rubric judge.

    python -m autodata.run stage=train train.dataset=runs/cs_agentic                # GRPO on agentic data
    python -m autodata.run stage=train train.dataset='[runs/cs_cot,runs/cs_agentic]'  # the combined arm
    python -m autodata.run stage=train experiment=smoke                                # two steps on CPU, embedded model
    python -m autodata.run stage=train train.dataset=runs/cs_agentic hydra.run.dir=runs/train_a train.resume=true
    accelerate launch --config_file launch/accelerate/zero3.yaml -m autodata.run stage=train train=paper_cs \\
        train.dataset=runs/cs_agentic hydra.run.dir=runs/train_cs_agentic

Order of work: read and check the data, check the batch arithmetic against the
number of processes, ask the judge endpoint to answer (fail fast, naming the
URL), and only then load the policy. Writes into the run dir:
``checkpoints/checkpoint-N`` (every ``train.save_steps``), ``metrics.jsonl``,
``rewards.jsonl`` (one row per graded completion), ``injections.jsonl``, ``alerts.jsonl`` and
``monitor.png`` (the hacking monitors, training/monitor.py), and
``final/``: the model (or LoRA adapter), its tokenizer, a vision-language base's processor
files (training/policy.py), ``README.md`` (model card: data, config, metrics),
``train_summary.json`` and ``autodata_config.yaml``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from autodata import grpo
from autodata.backends import build_backend, endpoint_key
from autodata.backends.base import BackendError
from autodata.cache import ResponseCache
from autodata.config import SCREEN_ROLE, RootConfig, TrainConfig, endpoint_for, has_screen
from autodata.domains import Domain, build_domain
from autodata.llm import LLM
from autodata.reasoning import template_kwargs, template_opens_reasoning
from autodata.rundir import JsonlWriter, git_commit, input_conflicts
from autodata.screen import Screen
from autodata.tracking import run_name, start_wandb
from training.data import DataError, TrainingData, as_paths, check_enough, load_training_data
from training.monitor import HackingMonitor, define_wandb_metrics, wandb_panels
from training.policy import load_policy, lora_exclude, save_final
from training.outputs import JsonlMetrics, command_line, write_model_card
from training.reward import JudgeDown, JudgeLoop, JudgeReward

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
FINAL = "final"


class TrainAborted(RuntimeError):
    """Training cannot start (bad data, impossible batch, unreachable judge); the message says what to do."""


@dataclass
class BatchPlan:
    """How the paper's batch maps onto TRL's knobs; logged at start and written to the model card."""

    prompts_per_step: int
    completions_per_step: int
    per_device_batch_size: int
    num_processes: int
    gradient_accumulation_steps: int


def batch_plan(t: TrainConfig, num_processes: int) -> BatchPlan:
    """completions per step = per_device_batch_size x num_processes x gradient_accumulation_steps.

    >>> from autodata.config import TrainConfig
    >>> plan = batch_plan(TrainConfig(), num_processes=4)
    >>> plan.prompts_per_step, plan.completions_per_step, plan.gradient_accumulation_steps
    (16, 128, 4)
    """
    per_step = t.completions_per_step
    micro = t.per_device_batch_size * num_processes
    if per_step % micro:
        raise TrainAborted(
            f"train: {per_step} completions per step (train.batch_size={t.batch_size} {t.batch_unit}, group of "
            f"{t.group_size}) cannot be split into micro-batches of train.per_device_batch_size="
            f"{t.per_device_batch_size} on {num_processes} processes ({micro} per pass); pick a per_device_batch_size "
            f"such that per_device_batch_size x {num_processes} divides {per_step}"
        )
    return BatchPlan(per_step // t.group_size, per_step, t.per_device_batch_size, num_processes, per_step // micro)


def num_processes() -> int:
    """Processes of this launch (accelerate/torchrun set WORLD_SIZE); 1 for a plain python run."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def check_platform(t: TrainConfig) -> None:
    """Optional parts (vLLM rollouts, LoRA) need packages and hardware this machine may not have: say so first."""
    import importlib.util

    if t.vllm.enabled:
        import torch

        if not torch.cuda.is_available():
            raise TrainAborted("train.vllm.enabled=true needs a CUDA GPU and this torch sees none; set "
                               "train.vllm.enabled=false (rollouts with transformers' generate) or run on a GPU node")
        if importlib.util.find_spec("vllm") is None:
            raise TrainAborted("train.vllm.enabled=true needs the vllm package: pip install 'autodata[gpu]'")
    if t.lora.enabled and importlib.util.find_spec("peft") is None:
        raise TrainAborted("train.lora.enabled=true needs the peft package: pip install 'autodata[lora]'")


def latest_checkpoint(output_dir: Path) -> Optional[Path]:
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def resume_point(t: TrainConfig, output_dir: Path) -> Optional[Path]:
    last = latest_checkpoint(output_dir)
    if t.resume:
        if last is None:
            log.warning("train.resume=true but %s holds no checkpoint yet; starting from step 0", output_dir)
        return last
    if last is not None:
        raise TrainAborted(
            f"train: {output_dir} already holds {last.name}; continue it with train.resume=true, or train from "
            "scratch in a new run dir (hydra.run.dir=...)"
        )
    return None


class Judge:
    """The reward judge's runtime: its own event loop, the LLM (role judge, and screen when declared) and the
    response cache."""

    def __init__(self, cfg: RootConfig, run_dir: Path, llm: Optional[LLM] = None):
        self.loop = JudgeLoop()
        self.cache = ResponseCache(cfg.cache.path or run_dir / "cache.sqlite") if cfg.cache.enabled else None
        self.owns_llm = llm is None
        self._closed = False
        try:
            # Only the judge (and the screen) are called during training: no backend is built for the other roles.
            self.llm = llm if llm is not None else LLM(
                cfg.models, cache=self.cache, seed=cfg.train.seed, backends=judge_backends(cfg))
            self.screen = Screen(self.llm) if has_screen(cfg.models) else None
        except (ValueError, BackendError) as err:  # e.g. api_key_env names an unset variable
            self.close()
            raise TrainAborted(f"the reward judge cannot be set up: {err}") from err
        backend = self.llm.backends["judge"]
        self.name = getattr(backend, "name", type(backend).__name__)

    def check(self) -> None:
        """Fail fast: one request to the judge endpoint (and the screen's, if it has its own) before the policy
        loads."""
        try:
            self.loop.run(self.llm.backends["judge"].check())
        except BackendError as err:
            raise TrainAborted(f"the reward judge ({self.name}) cannot serve: {err}\nNothing was trained. Start the "
                               "judge server (or fix models.roles.judge / models.base_url) and rerun.") from err
        screen = self.llm.backends[SCREEN_ROLE] if self.screen is not None else None
        if screen is None or screen is self.llm.backends["judge"]:
            return
        try:
            self.loop.run(screen.check())
        except BackendError as err:
            raise TrainAborted(f"the screen ({getattr(screen, 'name', type(screen).__name__)}) cannot serve: {err}\n"
                               "Nothing was trained. Start its server (or fix models.roles.screen), or leave out "
                               "+judges=screen to train without it, and rerun.") from err

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.owns_llm and hasattr(self, "llm"):
            self.loop.run(self.llm.aclose(), timeout=30)
        self.loop.close()
        if self.cache is not None:
            self.cache.close()


def judge_backends(cfg: RootConfig) -> dict:
    """The judge's backend, and the screen's when declared: one backend when both name the same endpoint (one
    loaded model, one connection pool)."""
    judge = endpoint_for(cfg.models, "judge")
    backends = {"judge": build_backend(judge)}
    if has_screen(cfg.models):
        screen = endpoint_for(cfg.models, SCREEN_ROLE)
        same = endpoint_key(screen) == endpoint_key(judge)
        backends[SCREEN_ROLE] = backends["judge"] if same else build_backend(screen)
    return backends


def grpo_config(cfg: RootConfig, run_dir: Path, plan: BatchPlan, cuda: bool):
    from trl import GRPOConfig

    return GRPOConfig(**grpo_kwargs(cfg, run_dir, plan, cuda))


def grpo_kwargs(cfg: RootConfig, run_dir: Path, plan: BatchPlan, cuda: bool) -> dict[str, Any]:
    """The keyword arguments of TRL's ``GRPOConfig`` this stage passes: the fields it derives, those copied from
    named settings (autodata/grpo.py SETTINGS), and ``train.grpo`` as given (scripts/check_gpu_deps.py checks every
    name against the transformers and TRL a GPU install resolves to)."""
    t = cfg.train
    bf16 = cuda if t.bf16 is None else t.bf16
    checkpointing = cuda if t.gradient_checkpointing is None else t.gradient_checkpointing
    derived = dict(
        output_dir=str(run_dir / CHECKPOINTS),
        run_name=run_name(cfg, "train", run_dir),
        use_cpu=not cuda,
        bf16=bf16,
        # The name every transformers 5 has and TRL's configs redefine (default on); transformers >= 5.23 keeps it
        # as an alias of activation_checkpointing, which the pinned 5.17 lacks.
        gradient_checkpointing=checkpointing,
        # The batch: one generation batch = one optimizer step = completions_per_step completions.
        gradient_accumulation_steps=plan.gradient_accumulation_steps,
        max_steps=t.max_steps if t.max_steps is not None else -1,
        chat_template_kwargs=policy_template_kwargs(cfg),
        save_strategy="steps",
        num_completions_to_print=4,
        report_to=["wandb"] if cfg.logger == "wandb" else "none",
        disable_tqdm=not cfg.progress,
    )
    named = {name: grpo.setting(t, path) for name, path in grpo.SETTINGS.items()}
    return {**derived, **named, **grpo.passed_through(t.grpo)}


def policy_template_kwargs(cfg: RootConfig) -> Optional[dict[str, Any]]:
    """The policy's chat template arguments: train.chat_template_kwargs plus the weak solver's thinking switch (the
    trained model is the weak solver, so generate, train and eval prompt it in one reasoning mode)."""
    kwargs = template_kwargs(endpoint_for(cfg.models, "weak_solver").thinking, cfg.train.chat_template_kwargs)
    return kwargs or None


def lora_config(t: TrainConfig, exclude: Optional[str] = None):
    """peft's LoraConfig; ``exclude`` (a module-name regex) keeps adapters off a frozen vision tower."""
    if not t.lora.enabled:
        return None
    from peft import LoraConfig

    targets: Any = t.lora.target_modules
    if list(targets) == ["all-linear"]:
        targets = "all-linear"
    # exclude_modules is peft >= 0.14; only a vision-language policy passes it
    extra = {"exclude_modules": exclude} if exclude else {}
    return LoraConfig(r=t.lora.r, lora_alpha=t.lora.alpha, lora_dropout=t.lora.dropout, target_modules=targets,
                      task_type="CAUSAL_LM", **extra)


def refuse_foreign_data(cfg: RootConfig) -> None:
    """Data made under another domain, or for another weak model than the one trained, is refused."""
    found = [(path, p) for path in as_paths(cfg.train.dataset)
             for p in input_conflicts(Path(path), cfg, trained_model=cfg.train.model)]
    if found:
        lines = "\n".join(f"  - {path}: {what}" for path, what in found)
        raise DataError(f"train.dataset comes from another experiment:\n{lines}\nTrain on data generated for this "
                        "model and domain, add the matching domain=... / train.model=..., or set check_inputs=false "
                        "to train on it anyway")


def train(cfg: RootConfig, run_dir: Path, *, llm: Optional[LLM] = None, model: Any = None,
          tokenizer: Any = None) -> dict[str, Any]:
    """Run GRPO; ``llm`` (the judge), ``model`` and ``tokenizer`` may be injected by tests. Returns the summary."""
    t = cfg.train
    run_dir.mkdir(parents=True, exist_ok=True)
    domain = build_domain(cfg.domain)
    try:
        refuse_foreign_data(cfg)
        data = load_training_data(t.dataset, domain)
        check_enough(data, t.completions_per_step, t.group_size)
    except DataError as err:
        raise TrainAborted(str(err)) from err
    plan = batch_plan(t, num_processes())
    check_platform(t)
    output_dir = run_dir / CHECKPOINTS
    resume_from = resume_point(t, output_dir)
    log.info("train: %d examples from %d source(s); %d prompts x %d = %d completions per step = %d per device x %d "
             "processes x %d accumulation", len(data.rows), len(data.sources), plan.prompts_per_step, t.group_size,
             plan.completions_per_step, plan.per_device_batch_size, plan.num_processes,
             plan.gradient_accumulation_steps)

    judge = Judge(cfg, run_dir, llm)
    try:
        if t.check_judge:
            judge.check()
        return _train(cfg, run_dir, domain, data, plan, judge, resume_from, model, tokenizer)
    finally:
        judge.close()


def _train(cfg: RootConfig, run_dir: Path, domain: Domain, data: TrainingData, plan: BatchPlan, judge: Judge,
           resume_from: Optional[Path], model: Any, tokenizer: Any) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    from autodata.backends.embedded import resolve_model

    t = cfg.train
    cuda = torch.cuda.is_available()
    args = grpo_config(cfg, run_dir, plan, cuda)
    suffix = "" if rank() == 0 else f".rank{rank()}"
    rewards_out = JsonlWriter(run_dir / f"rewards{suffix}.jsonl")
    injections_out = JsonlWriter(run_dir / f"injections{suffix}.jsonl")
    # Every process monitors the completions it scores and writes its own alerts file
    alerts_out = JsonlWriter(run_dir / f"alerts{suffix}.jsonl")
    monitor = HackingMonitor.from_config(t, on_alert=alerts_out.write)
    reward = JudgeReward(
        domain, judge.llm, loop=judge.loop, strip_reasoning=t.strip_reasoning,
        injection_guard=t.injection_guard, max_completion_length=t.max_completion_length,
        on_outcome=rewards_out.write, on_injection=injections_out.write, max_failed_batches=t.judge_down_batches,
        failure_reward=t.judge_failure_reward, monitor=monitor,
        screen=judge.screen,
    )
    # The policy goes to TRL as a model, not a path: load_policy keeps the class the checkpoint names and freezes
    # a vision-language checkpoint's vision tower (Qwen3.5), so only the language model trains (training/policy.py
    # says why: DDP, vLLM weight sync, and a final/ that vLLM and transformers load).
    source = resolve_model(t.model) if model is None else model
    if isinstance(source, str):
        model = load_policy(source, "bfloat16" if args.bf16 else "float32")
    else:
        source = model.name_or_path
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.padding_side = "left"
    # Qwen3.5's template opens <think> inside the prompt: TRL's completions then start mid-reasoning, and one cut
    # off by max_completion_length has no closing tag. The reward reads them as opened (no answer, reward 0).
    reward.prompt_opens_reasoning = template_opens_reasoning(tokenizer, policy_template_kwargs(cfg) or {})
    if cfg.logger == "wandb" and rank() == 0:
        define_wandb_metrics(start_wandb(cfg, run_dir, job_type="train"))
    metrics = JsonlMetrics(run_dir / "metrics.jsonl")
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data.to_dataset(),
                          processing_class=tokenizer, callbacks=[metrics],
                          peft_config=lora_config(t, exclude=lora_exclude(model)))
    reward.eos_token_ids = list(trainer.eos_token_ids)
    try:
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except JudgeDown as err:
        raise TrainAborted(
            f"stopped at step {trainer.state.global_step}: {err}. Fix the judge endpoint "
            f"({endpoint_for(cfg.models, 'judge').base_url or endpoint_for(cfg.models, 'judge').model}), then rerun "
            f"the same command with train.resume=true and hydra.run.dir={run_dir}: training continues from the "
            f"newest checkpoint in {run_dir / 'checkpoints'}") from err
    finally:
        rewards_out.close()
        injections_out.close()
        alerts_out.close()

    final_dir = run_dir / FINAL
    save_final(trainer, tokenizer, source, final_dir)
    plot = run_dir / "monitor.png"
    if not (trainer.is_world_process_zero() and monitor.write_plot(plot)):
        plot = None
    summary = {
        "global_step": trainer.state.global_step,
        "resumed_from": str(resume_from) if resume_from else None,
        "training_loss": getattr(result, "training_loss", None),
        "batch": asdict(plan),
        "data": data.summary(),
        "judge": judge.name,
        "reward_function": reward.__name__,
        "judge_totals": dict(reward.totals),
        "judge_usage": judge.llm.usage_summary()["judge"],
        "metrics": metrics.last,
        "monitor": monitor.summary(),
        "command": command_line(),
        "git": git_commit(),
        "final_dir": str(final_dir),
    }
    if trainer.is_world_process_zero():
        write_model_card(final_dir, cfg, summary)
    if cfg.logger == "wandb" and rank() == 0:
        import wandb

        if wandb.run is not None:
            # The train/hacking/* series keep the max and last value define_wandb_metrics asked for
            wandb.run.summary.update({k: v for k, v in metrics.last.items() if k.startswith("train/")
                                      and not k.startswith("train/hacking/") and isinstance(v, (int, float))})
            wandb.run.log(wandb_panels(monitor, plot))
            wandb.finish()
    log.info("train: %d steps; final %s saved to %s", trainer.state.global_step,
             "adapter" if t.lora.enabled else "model", final_dir)
    return summary


def run(cfg: RootConfig, run_dir: Path) -> None:
    try:
        summary = train(cfg, run_dir)
    except TrainAborted as err:
        log.error("%s", err)
        raise SystemExit(3) from None
    print(f"trained {summary['global_step']} steps; final model, tokenizer and model card in {summary['final_dir']}")
