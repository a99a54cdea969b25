"""The SLURM side of ``pipeline.launcher=slurm``: job sizes from the presets in conf/hydra/launcher/, the
``sbatch`` command line of one job and its line in a shell script, submission, and what the queue still holds
of an earlier submission.

    python -m autodata.run stage=pipeline experiment=cpu_mini pipeline.launcher=slurm pipeline.dry_run=true

A preset is a hydra-submitit-launcher option (the ones sweeps use: ``-m hydra/launcher=slurm_gpu``), read over
the plugin's own schema, so a field a preset leaves out has the value a sweep would use. The hand-run jobs
(slurm/generate.sbatch, train.sbatch, eval.sbatch) name their preset and carry its ``sbatch_header`` lines
(tests/test_pipeline_slurm.py checks them), so all three routes ask for the same sizes.
"""

from __future__ import annotations

import getpass
import logging
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from omegaconf import DictConfig, OmegaConf

from autodata.errors import lookup
from autodata.rundir import write_text_atomic

log = logging.getLogger(__name__)

PRESETS = Path(__file__).resolve().parents[2] / "conf" / "hydra" / "launcher"
# Written literally into an array job's command; slurm/stage.sbatch puts the task's id in its place
TASK_ID = "$SLURM_ARRAY_TASK_ID"
# Ids of the jobs last submitted for a step, one a line, in its run dir: a rerun does not submit a step twice
JOBS_FILE = "slurm_jobs.txt"
# Preset fields (submitit's names) passed as the sbatch option of the same meaning. The plugin hands a preset to
# submitit, which turns fields into #SBATCH lines in private code (SlurmExecutor._equivalence_dict,
# _make_sbatch_string): there is no public mapping to reuse. So this table (with job_options) is the one place
# autodata translates a preset: the pipeline's jobs and the hand-run slurm/*.sbatch headers (sbatch_header) both
# read it, and tests/test_pipeline_slurm.py checks it against what submitit writes for a sweep of every preset.
FLAGS = {"nodes": "nodes", "tasks_per_node": "ntasks-per-node", "cpus_per_task": "cpus-per-task",
         "gpus_per_node": "gpus-per-node", "cpus_per_gpu": "cpus-per-gpu", "gpus_per_task": "gpus-per-task",
         "mem_per_gpu": "mem-per-gpu", "mem_per_cpu": "mem-per-cpu", "partition": "partition",
         "account": "account", "qos": "qos", "constraint": "constraint", "exclude": "exclude", "gres": "gres",
         "comment": "comment"}
# A --dependency option whose ids are shell variables ($generate_cot): written unquoted so the shell expands them
DEPENDENCY = re.compile(r"--dependency=[A-Za-z0-9_:,$]+")
# squeue's reason for a job that waits on a job that failed: it can never start
NEVER = "DependencyNeverSatisfied"


class SlurmError(RuntimeError):
    pass


def load_preset(name: str) -> DictConfig:
    """``conf/hydra/launcher/<name>.yaml`` over hydra-submitit-launcher's SlurmQueueConf."""
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

    presets = {p.stem: p for p in PRESETS.glob("*.yaml")}
    path = lookup(presets, name, "launcher preset", key="pipeline.slurm.preset", error=SlurmError,
                  hint=f"add {PRESETS / f'{name}.yaml'} (a hydra-submitit-launcher option) for a new one")
    raw = OmegaConf.load(path)
    raw.pop("defaults", None)
    return OmegaConf.merge(OmegaConf.structured(SlurmQueueConf), raw)


def job_options(preset: DictConfig, partition: Optional[str] = None,
                account: Optional[str] = None) -> tuple[list[str], dict[str, str]]:
    """The sbatch options of a preset (``partition``/``account`` win over its own) and the variables the job
    script reads (AUTODATA_MAX_REQUEUES: requeues at the time limit, the preset's max_num_timeout).

    >>> options, env = job_options(OmegaConf.create({"gpus_per_node": 8, "mem_gb": 256, "timeout_min": 60,
    ...     "partition": "a", "max_num_timeout": 3, "additional_parameters": {"mail_type": "FAIL"}}), partition="gpu")
    >>> options
    ['--gpus-per-node=8', '--partition=gpu', '--mem=256G', '--time=60', '--mail-type=FAIL']
    >>> env
    {'AUTODATA_MAX_REQUEUES': '3'}
    """
    values = {key: preset.get(key) for key in FLAGS}
    values["partition"] = partition or values["partition"]
    values["account"] = account or values["account"]
    options = [f"--{flag}={values[key]}" for key, flag in FLAGS.items()
               if values[key] is not None and not (key == "gpus_per_node" and values[key] == 0)]
    if preset.get("mem_gb") is not None:
        options.append(f"--mem={preset.mem_gb}G")
    if preset.get("timeout_min") is not None:
        options.append(f"--time={preset.timeout_min}")
    if preset.get("signal_delay_s"):
        options.append(f"--signal=B:USR1@{preset.signal_delay_s}")
    for key, value in (preset.get("additional_parameters") or {}).items():
        options.append(f"--{key.replace('_', '-')}" + ("" if value is True else f"={value}"))
    if preset.get("setup"):
        log.warning("pipeline.slurm: the preset's setup lines are not run by slurm/stage.sbatch; a job inherits "
                    "the environment it is submitted from (load modules before stage=pipeline)")
    return options, {"AUTODATA_MAX_REQUEUES": str(preset.get("max_num_timeout") or 0)}


def shell_name(step: str) -> str:
    """A shell variable name for a step's job id.

    >>> shell_name("eval-base"), shell_name("2nd")
    ('eval_base', '_2nd')
    """
    name = re.sub(r"\W", "_", step)
    return f"_{name}" if name[0].isdigit() else name


@dataclass
class Job:
    """One ``sbatch`` submission: a step, the array of a sharded step's shards, or the merge after them."""

    # Its key among this invocation's jobs (the shell variable holding its id in a dry-run script)
    var: str
    job_name: str
    # What the job runs, word by word (slurm/stage.sbatch runs it as given)
    command: list[str]
    output: str
    options: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # Jobs of this invocation (var) or queued earlier (id) that must succeed first
    after_ok: list[str] = field(default_factory=list)
    # Jobs that must have started (model servers, which never end)
    after: list[str] = field(default_factory=list)
    # Task ids of an array job, e.g. 0-2
    array: Optional[str] = None

    def sbatch(self, ids: Mapping[str, str], script: str) -> list[str]:
        """The sbatch argv; ``ids`` maps a var of ``after_ok`` to its job id (or to "$var" in a script)."""
        deps = []
        if self.after_ok:
            deps.append("afterok:" + ":".join(ids.get(j, j) for j in self.after_ok))
        if self.after:
            deps.append("after:" + ":".join(self.after))
        env = ",".join(f"{k}={v}" for k, v in self.env.items())
        return ["sbatch", "--parsable", f"--job-name={self.job_name}", f"--output={self.output}",
                *([f"--array={self.array}"] if self.array else []), *self.options,
                *([f"--dependency={','.join(deps)}"] if deps else []), *([f"--export=ALL,{env}"] if env else []),
                script, *self.command]


def shell_word(word: str) -> str:
    """``word`` quoted for bash: in single quotes, or in double quotes when it holds single quotes (Hydra's lists)
    and nothing bash expands there.

    >>> print(shell_word("a=b"), shell_word("a b"), shell_word("x=['p','q']"), shell_word("x='$HOME'"))
    a=b 'a b' "x=['p','q']" 'x='"'"'$HOME'"'"''
    """
    if "'" in word and not re.search(r'["$`\\!]', word):
        return f'"{word}"'
    return shlex.quote(word)


def shell_line(argv: list[str]) -> str:
    """``argv`` quoted for bash, but a dependency on shell variables left for the shell to expand.

    >>> shell_line(["sbatch", "--dependency=afterok:$a:$b", "x=$SLURM_ARRAY_TASK_ID", "a b"])
    "sbatch --dependency=afterok:$a:$b 'x=$SLURM_ARRAY_TASK_ID' 'a b'"
    """
    return " ".join(a if DEPENDENCY.fullmatch(a) else shell_word(a) for a in argv)


def tool(name: str) -> str:
    """The path of a SLURM command, or an error that says where to run."""
    path = shutil.which(name)
    if path is None:
        raise SlurmError(f"pipeline.launcher=slurm: {name} is not on PATH; run stage=pipeline on a SLURM login "
                         "node, or add pipeline.dry_run=true to print the jobs as a script")
    return path


def submit(argv: list[str]) -> str:
    """Run ``sbatch --parsable ...``; return the job id."""
    proc = subprocess.run([tool("sbatch"), *argv[1:]], capture_output=True, text=True)
    job_id = proc.stdout.strip().split(";")[0]
    if proc.returncode != 0 or not job_id:
        raise SlurmError(f"sbatch failed (exit code {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}\n"
                         f"  the command: {shell_line(argv)}")
    return job_id


def queue() -> Optional[dict[str, list[tuple[str, str]]]]:
    """This user's queued and running jobs: job id (an array's own id for its tasks) -> [(state, reason)];
    None when squeue is not on PATH or fails."""
    if shutil.which("squeue") is None:
        return None
    proc = subprocess.run(["squeue", "--noheader", f"--user={getpass.getuser()}", "--format=%A|%T|%r"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        log.warning("squeue failed (%s): jobs of earlier submissions are not checked", proc.stderr.strip())
        return None
    jobs: dict[str, list[tuple[str, str]]] = {}
    for line in proc.stdout.splitlines():
        job_id, state, reason = (line.split("|") + ["", ""])[:3]
        jobs.setdefault(job_id.strip(), []).append((state.strip(), reason.strip()))
    return jobs


def recorded(run_dir: Path) -> list[str]:
    path = run_dir / JOBS_FILE
    return path.read_text().split() if path.exists() else []


def record(run_dir: Path, ids: list[str]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / JOBS_FILE, "".join(f"{i}\n" for i in ids))


def queued(run_dir: Path, jobs: Optional[dict[str, list[tuple[str, str]]]]) -> tuple[Optional[str], list[str]]:
    """Whether the jobs last submitted for ``run_dir`` are still queued or running: (the id later jobs wait on,
    or None; the ids to cancel: queued, but waiting on a job that failed, so they can never start)."""
    ids = recorded(run_dir)
    if jobs is None or not ids:
        if ids and jobs is None:
            log.warning("%s records jobs %s, but squeue cannot say whether they still run; submitting anew",
                        run_dir, " ".join(ids))
        return None, []
    waiting = [i for i in ids if i in jobs]
    if not waiting:
        return None, []
    if all(state == "PENDING" and reason == NEVER for i in waiting for state, reason in jobs[i]):
        return None, waiting
    return ids[-1], []


def cancel(ids: list[str]) -> None:
    proc = subprocess.run([tool("scancel"), *ids], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SlurmError(f"scancel {' '.join(ids)} failed: {proc.stderr.strip()}; cancel them by hand and rerun")


def sbatch_header(name: str) -> list[str]:
    """The ``#SBATCH`` lines of preset ``name``, as a hand-run job script carries them (partition and account
    left to the sbatch command line).

    >>> print("\\n".join(sbatch_header("slurm_small")))
    #SBATCH --nodes=1
    #SBATCH --ntasks-per-node=1
    #SBATCH --cpus-per-task=2
    #SBATCH --mem=8G
    #SBATCH --time=60
    #SBATCH --signal=B:USR1@120
    """
    options, _ = job_options(load_preset(name))
    return [f"#SBATCH {option}" for option in options]

