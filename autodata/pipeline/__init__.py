"""``stage=pipeline``: run every stage of an experiment's table, in order, each in its own run dir.

    python -m autodata.run stage=pipeline experiment=cpu_mini                       # the CS table on a CPU
    python -m autodata.run stage=pipeline experiment=paper_cs pipeline.dry_run=true  # print the commands
    python -m autodata.run stage=pipeline experiment=cpu_mini pipeline.only=[eval,report]

The experiment selects the steps (``conf/pipeline/<table>.yaml``). Each step is one
``python -m autodata.run stage=...`` process with the pipeline's own overrides (the experiment, the
endpoints, anything but ``stage`` and ``pipeline.*``), the stage's extra overrides and the step's, and
``hydra.run.dir=<pipeline run dir>/<step>``. ``{{step}}`` in an override is that step's run dir, so each
stage reads what the earlier ones wrote. A step whose run dir records a finished start is skipped, and
every stage resumes inside its own run dir, so running the same command again continues a killed pipeline.

``pipeline.launcher=slurm`` submits every step as a SLURM job of ``slurm/stage.sbatch`` instead (sized by the
presets of conf/hydra/launcher/ that ``pipeline.slurm.presets`` names), each with ``--dependency=afterok`` on
the jobs of the steps it reads, and returns; with ``pipeline.dry_run=true`` it prints the ``sbatch`` lines as a
shell script. This is the documented route to a cluster; sweeps (``-m hydra/launcher=slurm_gpu``) and the
hand-run ``slurm/*.sbatch`` jobs are sized by the same presets. ``pipeline.shards=N`` runs every generate step as
N shards (a SLURM array) and a merge into the step's run dir, which later steps read as before.

    python -m autodata.run stage=pipeline experiment=paper_cs pipeline.launcher=slurm pipeline.slurm.partition=gpu pipeline.dry_run=true

The package: this module (the steps, the local launcher, the SLURM submission, ``run``), ``slurm.py`` (presets
to sbatch options, one job's sbatch line, the queue) and ``checks.py`` (``check_pipeline``, the stage's input
checks).
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from autodata.config import RootConfig
from autodata.pipeline import slurm
from autodata.rundir import finished

log = logging.getLogger(__name__)

REF = re.compile(r"\{\{([A-Za-z0-9_]+)\}\}")
# Overrides of the pipeline process that are not passed on to its steps
OWN_KEYS = re.compile(r"^[+~]*(stage|pipeline(\.|=)|hydra\.)")


class PipelineError(RuntimeError):
    pass


@dataclass
class Step:
    name: str
    stage: str
    run_dir: Path
    argv: list[str]
    # Earlier steps whose run dirs this one reads
    needs: list[str]
    # A generate step of a sharded pipeline: the corpus parts it runs as (pipeline.shards) and the command that
    # merges their run dirs into its own
    shards: int = 1
    merge_argv: Optional[list[str]] = None

    def shard_dir(self, shard: object) -> Path:
        return self.run_dir / f"shard_{shard}"

    def shard_argv(self, shard: object) -> list[str]:
        """The step's command for one shard (``shard``: its index, or slurm.TASK_ID in an array job). A shard
        never pushes to the hub: the merge does, once."""
        return [*self.argv[:-1], f"corpus.num_shards={self.shards}", f"corpus.shard={shard}",
                "generate.push_to_hub=null", f"hydra.run.dir={self.shard_dir(shard)}"]

    def commands(self) -> list[tuple[str, Path, list[str]]]:
        """What the local launcher runs for this step, in order: (label, run dir, argv)."""
        if self.merge_argv is None:
            return [(self.name, self.run_dir, self.argv)]
        shards = [(f"{self.name}/shard_{i}", self.shard_dir(i), self.shard_argv(i)) for i in range(self.shards)]
        return [*shards, (f"{self.name}/merge", self.run_dir, self.merge_argv)]


def passed_on(overrides: list[str]) -> list[str]:
    """The pipeline's command-line overrides that every step gets (the experiment, endpoints, sizes).

    >>> passed_on(["stage=pipeline", "experiment=paper_cs", "pipeline.dry_run=true", "models.base_url=http://h/v1"])
    ['experiment=paper_cs', 'models.base_url=http://h/v1']
    """
    return [o for o in overrides if not OWN_KEYS.match(o)]


def substitute(text: str, refs: dict[str, str], where: str) -> tuple[str, list[str]]:
    """Replace every ``{{name}}``; return the text and the names used.

    >>> substitute("train.dataset={{generate_cot}}", {"generate_cot": "runs/x/generate_cot"}, "step")
    ('train.dataset=runs/x/generate_cot', ['generate_cot'])
    """
    used: list[str] = []

    def one(match: re.Match) -> str:
        name = match.group(1)
        if name not in refs:
            raise PipelineError(f"pipeline: {where} refers to {{{{{name}}}}}, which is neither a step nor a "
                                f"pipeline.inputs entry (known: {', '.join(sorted(refs))})")
        used.append(name)
        return refs[name]

    return REF.sub(one, text), used


def steps(cfg: RootConfig, run_dir: Path, overrides: list[str], python: str = sys.executable) -> list[Step]:
    """Every step of the experiment with its command, in order (nothing runs)."""
    p = cfg.pipeline
    if not p.steps:
        raise PipelineError(
            f"pipeline: experiment {cfg.experiment.name or '(none)'} declares no steps; pick an experiment with a "
            "table, e.g. experiment=cpu_mini or experiment=paper_cs (conf/experiment/)")
    refs = {name: str(run_dir / name) for name in p.steps}
    clash = sorted(set(refs) & set(p.inputs))
    if clash:
        raise PipelineError(f"pipeline.inputs {clash} have the names of steps; rename the inputs")
    refs.update(p.inputs)
    common = passed_on(overrides)

    def launcher(stage: str) -> list[str]:
        return shlex.split(p.launchers[stage]) if stage in p.launchers else [python]

    planned: list[Step] = []
    for name, step in p.steps.items():
        argv_tail: list[str] = []
        needs: list[str] = []
        for override in [*p.stage_overrides.get(step.stage, []), *step.overrides]:
            text, used = substitute(override, refs, f"step {name}")
            argv_tail.append(text)
            needs += [u for u in dict.fromkeys(used) if u in p.steps and u not in needs]
        later = [n for n in needs if list(p.steps).index(n) >= list(p.steps).index(name)]
        if later:
            raise PipelineError(f"pipeline: step {name} reads {later}, which run after it; order the steps so "
                                "every step comes after the ones it reads")
        resume = ["train.resume=true"] if step.stage == "train" else []
        argv = [*launcher(step.stage), "-m", "autodata.run", f"stage={step.stage}", *common, *argv_tail, *resume,
                f"hydra.run.dir={run_dir / name}"]
        planned.append(Step(name, step.stage, run_dir / name, argv, needs))
        if step.stage == "generate" and p.shards > 1:
            # The merge needs none of the shards' overrides (it takes their config), but gets them all the same:
            # generate.push_to_hub, for one, applies to it
            shard_dirs = ",".join(f"'{planned[-1].shard_dir(i)}'" for i in range(p.shards))
            planned[-1].shards = p.shards
            planned[-1].merge_argv = [*launcher("merge"), "-m", "autodata.run", "stage=merge", *common, *argv_tail,
                                      f"merge.runs=[{shard_dirs}]", f"hydra.run.dir={run_dir / name}"]
    return planned


def selected(every: list[Step], only: list[str]) -> list[Step]:
    if not only:
        return every
    known = {s.name for s in every} | {s.stage for s in every}
    unknown = sorted(set(only) - known)
    if unknown:
        raise PipelineError(f"pipeline.only names {unknown}, which are neither steps nor stages of this pipeline "
                            f"(steps: {', '.join(s.name for s in every)})")
    return [s for s in every if s.name in only or s.stage in only]


def resume_command() -> str:
    return shlex.join(["python", "-m", "autodata.run", *sys.argv[1:]])


def run_pipeline(cfg: RootConfig, run_dir: Path, overrides: list[str]) -> list[Step]:
    """Run (or submit) the steps ``pipeline.only`` selects with the launcher ``pipeline.launcher`` names; return
    them."""
    every = steps(cfg, run_dir, overrides)
    todo = selected(every, cfg.pipeline.only)
    LAUNCHERS[cfg.pipeline.launcher](cfg, run_dir, every, todo)
    return todo


def run_local(cfg: RootConfig, run_dir: Path, every: list[Step], todo: list[Step]) -> None:
    """Run every step of ``todo`` here, one after another, skipping the finished ones (a dry run prints them)."""
    by_name = {s.name: s for s in every}
    chosen = {s.name for s in todo}
    force = cfg.pipeline.force
    for i, step in enumerate(todo, 1):
        header = f"pipeline {cfg.experiment.name}: step {i} of {len(todo)}, {step.name} (stage={step.stage})"
        done = finished(step.run_dir)
        if cfg.pipeline.dry_run:
            print(f"# {header}{' (finished: skipped)' if done and not force else ''}")
            for _, _, argv in step.commands():
                print(shlex.join(argv))
            continue
        if done and not force:
            log.info("%s: finished earlier in %s, skipped (pipeline.force=true reruns it)", header, step.run_dir)
            continue
        missing = [n for n in step.needs if not finished(by_name[n].run_dir)]
        if missing:
            hint = ("add them to pipeline.only" if any(n not in chosen for n in missing)
                    else "they did not finish")
            raise PipelineError(f"pipeline: step {step.name} reads {missing}, which have not finished ({hint}); "
                                f"its inputs would be missing or partial")
        for label, where, argv in step.commands():
            if where != step.run_dir and finished(where) and not force:
                log.info("%s: %s finished earlier, skipped", header, label)
                continue
            log.info("%s: running %s; logs in %s", header, label, where / "run.log")
            log.info("  %s", shlex.join(argv))
            started = time.time()
            code = subprocess.call(argv)
            if code != 0:
                raise PipelineError(
                    f"pipeline {cfg.experiment.name}: step {label} (stage={step.stage}) failed with exit code {code}.\n"
                    f"  its run dir: {where} (logs: {where / 'run.log'})\n"
                    f"  the step alone: {shlex.join(argv)}\n"
                    f"  fix the cause, then resume the pipeline (finished steps are skipped, this one resumes in its "
                    f"run dir): {resume_command()}")
            log.info("%s: %s done in %.0f s", header, label, time.time() - started)


# ---------------------------------------------------------------- pipeline.launcher=slurm
def step_jobs(cfg: RootConfig, step: Step, after_ok: list[str]) -> list[slurm.Job]:
    """The sbatch jobs of one step: itself; or, sharded, an array of its unfinished shards and the merge."""
    s = cfg.pipeline.slurm
    # The serving jobs write their endpoints files when they start: a job started after them waits for the ones
    # its stage reads (the step's models.endpoints_file, e.g. from pipeline.stage_overrides, or the pipeline's)
    served = [a.split("=", 1)[1] for a in step.argv if a.lstrip("+").startswith("models.endpoints_file=")]
    served_at = served[-1] if served else cfg.models.endpoints_file
    wait = {"AUTODATA_WAIT_FOR": served_at, "AUTODATA_WAIT_COUNT": str(len(s.serve_jobs))} \
        if s.serve_jobs and served_at not in (None, "", "null") else {}

    def sized(*keys: str) -> tuple[list[str], dict[str, str], int]:
        preset = slurm.load_preset(next((s.presets[k] for k in keys if k in s.presets), s.preset))
        options, env = slurm.job_options(preset, s.partition, s.account)
        return [*options, *s.sbatch_args], {**env, **wait}, preset.array_parallelism

    prefix, var = f"{cfg.experiment.name or 'autodata'}-{step.name}", slurm.shell_name(step.name)
    options, env, parallel = sized(step.name, step.stage)
    if step.merge_argv is None:
        return [slurm.Job(var, prefix, step.argv, f"{step.run_dir}/slurm-%j.out", options, env, after_ok,
                          s.serve_jobs)]
    jobs = []
    shards = [i for i in range(step.shards) if cfg.pipeline.force or not finished(step.shard_dir(i))]
    if shards:
        array = f"0-{step.shards - 1}" if len(shards) == step.shards else ",".join(map(str, shards))
        array += f"%{parallel}" if parallel < len(shards) else ""
        jobs.append(slurm.Job(f"{var}_shards", prefix, step.shard_argv(slurm.TASK_ID),
                              f"{step.run_dir}/slurm-%A_%a.out", options, env, after_ok, s.serve_jobs, array))
    options, env, _ = sized("merge")
    jobs.append(slurm.Job(var, f"{prefix}-merge", step.merge_argv, f"{step.run_dir}/slurm-%j.out", options, env,
                          [f"{var}_shards"] if shards else after_ok, s.serve_jobs))
    return jobs


def submit_pipeline(cfg: RootConfig, run_dir: Path, every: list[Step], todo: list[Step]) -> None:
    """Submit every step of ``todo`` neither finished nor queued from an earlier submission, each with afterok
    dependencies on the jobs of the steps it reads; a dry run writes the same sbatch lines as a script."""
    p, dry = cfg.pipeline, cfg.pipeline.dry_run
    if not dry:
        slurm.tool("sbatch")
    by_name, chosen = {s.name: s for s in every}, {s.name for s in todo}
    queue = slurm.queue()
    # Step name -> the job id later steps wait on ("$var" in a dry run's script)
    waits: dict[str, str] = {}
    command = " ".join(a for a in resume_command().split(" ") if not a.startswith("pipeline.dry_run"))
    script = ["#!/usr/bin/env bash", f"# The SLURM jobs of: {command}", "set -euo pipefail",
              f"cd {shlex.quote(str(Path.cwd()))}"]
    submitted: list[str] = []

    def note(text: str) -> None:
        if dry:
            script.append(f"# {text}")
        else:
            log.info("%s", text)

    for i, step in enumerate(todo, 1):
        header = f"step {i} of {len(todo)}: {step.name} (stage={step.stage})"
        if finished(step.run_dir) and not p.force:
            note(f"{header}: finished earlier in {step.run_dir}, skipped (pipeline.force=true reruns it)")
            continue
        live, stale = slurm.queued(step.run_dir, queue)
        if live:
            waits[step.name] = live
            note(f"{header}: job {live} of an earlier submission is queued or running; not submitted again")
            continue
        after_ok = []
        for need in step.needs:
            if need not in waits and need not in chosen and not finished(by_name[need].run_dir):
                waits[need] = slurm.queued(by_name[need].run_dir, queue)[0] or ""
            if waits.get(need):
                after_ok.append(waits[need])
            elif not finished(by_name[need].run_dir):
                raise PipelineError(f"pipeline: step {step.name} reads {need}, which has not finished and has no "
                                    f"queued job (add it to pipeline.only); its inputs would be missing or partial")
        jobs = step_jobs(cfg, step, after_ok)
        if dry:
            ids = {job.var: f"${job.var}" for job in jobs}
            script.append(f"# {header}")
            if stale:
                script.append(f"# jobs {' '.join(stale)} of an earlier submission wait on a failed job: cancel them")
                script.append(f"scancel {' '.join(stale)}")
            script.append(f"mkdir -p {shlex.quote(str(step.run_dir))}")
            script += [f"{job.var}=$({slurm.shell_line(job.sbatch(ids, p.slurm.script))})" for job in jobs]
            script.append(f"printf '%s\\n' {' '.join(ids.values())} > "
                          f"{shlex.quote(str(step.run_dir / slurm.JOBS_FILE))}")
            submitted += ids.values()
            waits[step.name] = ids[jobs[-1].var]
            continue
        if stale:
            log.info("%s: cancelling jobs %s of an earlier submission (they wait on a failed job)", header,
                     " ".join(stale))
            slurm.cancel(stale)
        step.run_dir.mkdir(parents=True, exist_ok=True)
        ids = {}
        for job in jobs:
            try:
                ids[job.var] = slurm.submit(job.sbatch(ids, p.slurm.script))
            except slurm.SlurmError as err:
                slurm.record(step.run_dir, list(ids.values()))
                raise PipelineError(f"pipeline {cfg.experiment.name}: {header}: {err}\n  submitted before it: "
                                    f"{' '.join([*submitted, *ids.values()]) or 'nothing'}. Fix the cause and run "
                                    f"the same command again (queued steps are not submitted twice): "
                                    f"{resume_command()}") from None
            log.info("%s: job %s (%s)", header, ids[job.var], job.job_name)
        slurm.record(step.run_dir, list(ids.values()))
        submitted += ids.values()
        waits[step.name] = ids[jobs[-1].var]
    if dry:
        script.append(f"echo \"submitted jobs: {' '.join(submitted)}\"")
        text = "\n".join(script) + "\n"
        (run_dir / "slurm_submit.sh").parent.mkdir(parents=True, exist_ok=True)
        (run_dir / "slurm_submit.sh").write_text(text)
        print(text, end="")
        log.info("dry run: nothing submitted; the script above is also in %s (bash it to submit)",
                 run_dir / "slurm_submit.sh")
    elif submitted:
        log.info("submitted %d jobs; watch them: squeue --jobs=%s; cancel them: scancel %s. Running this command "
                 "again submits only the steps neither finished nor queued.", len(submitted), ",".join(submitted),
                 " ".join(submitted))
    else:
        log.info("nothing to submit: every step finished or is queued")


# pipeline.launcher -> what runs the selected steps (the stage's checks, checks.py, read its names here)
LAUNCHERS = {"local": run_local, "slurm": submit_pipeline}


def hydra_overrides() -> list[str]:
    """The overrides this process was started with (what its steps inherit)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def run(cfg: RootConfig, run_dir: Path) -> None:
    # Relative to where the command was started, when below it: shorter commands in logs and dry runs
    if run_dir.is_absolute() and run_dir.is_relative_to(Path.cwd()):
        run_dir = run_dir.relative_to(Path.cwd())
    try:
        run_pipeline(cfg, run_dir, hydra_overrides())
    except (PipelineError, slurm.SlurmError) as err:
        log.error("%s", err)
        raise SystemExit(1) from None
