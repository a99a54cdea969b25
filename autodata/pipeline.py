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

from autodata.config import RootConfig
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

    def command(self) -> str:
        return shlex.join(self.argv)


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


def plan(cfg: RootConfig, run_dir: Path, overrides: list[str], python: str = sys.executable) -> list[Step]:
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
    steps: list[Step] = []
    for name, step in p.steps.items():
        argv_tail: list[str] = []
        needs: list[str] = []
        for override in [*p.stage_overrides.get(step.stage, []), *step.overrides]:
            text, used = substitute(override, refs, f"step {name}")
            argv_tail.append(text)
            needs += [u for u in used if u in p.steps and u not in needs]
        later = [n for n in needs if list(p.steps).index(n) >= list(p.steps).index(name)]
        if later:
            raise PipelineError(f"pipeline: step {name} reads {later}, which run after it; order the steps so "
                                "every step comes after the ones it reads")
        launcher = shlex.split(p.launchers[step.stage]) if step.stage in p.launchers else [python]
        resume = ["train.resume=true"] if step.stage == "train" else []
        argv = [*launcher, "-m", "autodata.run", f"stage={step.stage}", *common, *argv_tail, *resume,
                f"hydra.run.dir={run_dir / name}"]
        steps.append(Step(name, step.stage, run_dir / name, argv, needs))
    return steps


def selected(steps: list[Step], only: list[str]) -> list[Step]:
    if not only:
        return steps
    known = {s.name for s in steps} | {s.stage for s in steps}
    unknown = sorted(set(only) - known)
    if unknown:
        raise PipelineError(f"pipeline.only names {unknown}, which are neither steps nor stages of this pipeline "
                            f"(steps: {', '.join(s.name for s in steps)})")
    return [s for s in steps if s.name in only or s.stage in only]


def resume_command() -> str:
    return shlex.join(["python", "-m", "autodata.run", *sys.argv[1:]])


def run_pipeline(cfg: RootConfig, run_dir: Path, overrides: list[str]) -> list[Step]:
    steps = plan(cfg, run_dir, overrides)
    todo = selected(steps, cfg.pipeline.only)
    by_name = {s.name: s for s in steps}
    chosen = {s.name for s in todo}
    for i, step in enumerate(todo, 1):
        header = f"pipeline {cfg.experiment.name}: step {i} of {len(todo)}, {step.name} (stage={step.stage})"
        done = finished(step.run_dir)
        if cfg.pipeline.dry_run:
            print(f"# {header}{' (finished: skipped)' if done and not cfg.pipeline.force else ''}")
            print(step.command())
            continue
        if done and not cfg.pipeline.force:
            log.info("%s: finished earlier in %s, skipped (pipeline.force=true reruns it)", header, step.run_dir)
            continue
        missing = [n for n in step.needs if not finished(by_name[n].run_dir)]
        if missing:
            hint = ("add them to pipeline.only" if any(n not in chosen for n in missing)
                    else "they did not finish")
            raise PipelineError(f"pipeline: step {step.name} reads {missing}, which have not finished ({hint}); "
                                f"its inputs would be missing or partial")
        log.info("%s: running; logs in %s", header, step.run_dir / "run.log")
        log.info("  %s", step.command())
        started = time.time()
        code = subprocess.call(step.argv)
        if code != 0:
            raise PipelineError(
                f"pipeline {cfg.experiment.name}: step {step.name} (stage={step.stage}) failed with exit code {code}.\n"
                f"  its run dir: {step.run_dir} (logs: {step.run_dir / 'run.log'})\n"
                f"  the step alone: {step.command()}\n"
                f"  fix the cause, then resume the pipeline (finished steps are skipped, this one resumes in its "
                f"run dir): {resume_command()}")
        log.info("%s: done in %.0f s", header, time.time() - started)
    return todo


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
    except PipelineError as err:
        log.error("%s", err)
        raise SystemExit(1) from None
