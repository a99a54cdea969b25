"""pipeline.launcher=slurm without SLURM: fake sbatch/squeue/scancel/scontrol on PATH record what they are asked.
Each step is one job with afterok on the jobs of the steps it reads; sizes come from conf/hydra/launcher/ presets;
finished and still-queued steps are not submitted again; the dry run's script submits exactly what the pipeline
does; sharded generate steps are an array and a merge; slurm/stage.sbatch runs its command word for word and
requeues itself near the time limit; pipeline.shards runs locally too."""

from __future__ import annotations

import doctest
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from autodata import pipeline
from autodata.config import RootConfig, register_configs, to_typed
from autodata.pipeline import run_pipeline, slurm
from autodata.pipeline.checks import check_pipeline
from autodata.validation import ConfigError, validate

ROOT = Path(__file__).resolve().parents[1]
FAKE_STAGE = f"{sys.executable} {ROOT / 'tests' / 'fake_stage.py'}"
BASE = ["stage=pipeline", "experiment=cpu_mini", "pipeline.launcher=slurm"]
register_configs()

# Each fake records its argv (one JSON list a line) in $FAKE_SLURM/<name>.jsonl. sbatch prints the next job id
# (100, 101, ...), or fails at $FAKE_SBATCH_FAIL; squeue prints $FAKE_SLURM/queue (lines "ID|STATE|REASON").
FAKE_TOOL = """#!{python}
import json, os, sys
from pathlib import Path
home = Path(os.environ["FAKE_SLURM"])
with open(home / "{name}.jsonl", "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if "{name}" == "sbatch":
    counter = home / "next_id"
    job_id = int(counter.read_text()) if counter.exists() else 100
    counter.write_text(str(job_id + 1))
    if str(job_id) == os.environ.get("FAKE_SBATCH_FAIL"):
        sys.exit("sbatch: error: Batch job submission failed: Invalid account or account/partition combination")
    print(job_id)
if "{name}" == "squeue" and (home / "queue").exists():
    print((home / "queue").read_text(), end="")
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    home = tmp_path / "slurm"
    (home / "bin").mkdir(parents=True)
    for name in ("sbatch", "squeue", "scancel", "scontrol"):
        tool = home / "bin" / name
        tool.write_text(FAKE_TOOL.format(python=sys.executable, name=name))
        tool.chmod(0o755)
    monkeypatch.setenv("FAKE_SLURM", str(home))
    monkeypatch.setenv("PATH", f"{home / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return home


def calls(home: Path, name: str = "sbatch") -> list[list[str]]:
    path = home / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_pipeline_process(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "autodata.run", *BASE, *overrides, f"hydra.run.dir={run_dir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def option(argv: list[str], name: str) -> str | None:
    return next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")), None)


def jobs_by_name(submitted: list[list[str]]) -> dict[str, list[str]]:
    """job name -> its sbatch argv, for jobs submitted once each (sbatch printed 100, 101, ... in order)."""
    names = [option(argv, "job-name") for argv in submitted]
    assert len(names) == len(set(names)), names
    return dict(zip(names, submitted))


def dependencies(argv: list[str], names_of: dict[str, str]) -> dict[str, set[str]]:
    """{'afterok': {job names}, 'after': {ids}} of one sbatch argv."""
    deps: dict[str, set[str]] = {"afterok": set(), "after": set()}
    for part in (option(argv, "dependency") or "").split(","):
        if part:
            kind, *ids = part.split(":")
            deps[kind] |= {names_of.get(i, i) for i in ids}
    return deps


def command(argv: list[str]) -> list[str]:
    """What the job runs: the words after the job script."""
    return argv[argv.index("slurm/stage.sbatch") + 1:]


def mark_finished(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run_info.json").write_text(json.dumps({"starts": [{"finished_at": "2026-01-01T00:00:00"}]}))


def composed(overrides: list[str]) -> RootConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return to_typed(compose(config_name="config", overrides=overrides))


# ---------------------------------------------------------------- one job per step, chained by afterok
def test_each_step_is_one_job_after_the_jobs_of_the_steps_it_reads(fake_slurm, tmp_path):
    exp = tmp_path / "exp"
    overrides = ["pipeline.slurm.partition=cpuq", "pipeline.slurm.account=acct",
                 "++pipeline.slurm.presets.train=slurm_gpu",
                 "pipeline.slurm.serve_jobs=[77]"]
    run_pipeline_process(exp, *overrides)
    jobs = jobs_by_name(calls(fake_slurm))
    steps = list(composed(BASE).pipeline.steps)
    assert sorted(jobs) == sorted(f"cpu_mini-{s}" for s in steps)
    names_of = {str(100 + i): option(argv, "job-name").removeprefix("cpu_mini-")
                for i, argv in enumerate(calls(fake_slurm))}
    deps = {name.removeprefix("cpu_mini-"): dependencies(argv, names_of) for name, argv in jobs.items()}
    assert deps["generate_cot"]["afterok"] == deps["generate_agentic"]["afterok"] == set()
    assert deps["train_cot"]["afterok"] == {"generate_cot"}
    assert deps["eval_base"]["afterok"] == {"generate_cot", "generate_agentic"}
    assert deps["eval_grpo_agentic"]["afterok"] == {"generate_cot", "generate_agentic", "train_agentic"}
    assert deps["report"]["afterok"] == {"eval_base", "eval_grpo_cot", "eval_grpo_agentic", "generate_cot",
                                         "generate_agentic"}
    # Started model servers: every job waits for them to start, not to end
    assert all(d["after"] == {"77"} for d in deps.values())
    # Sizes from the presets (slurm for every stage, slurm_gpu for train), partition and account over them
    for name, argv in jobs.items():
        assert option(argv, "partition") == "cpuq" and option(argv, "account") == "acct"
        gpu = name.startswith("cpu_mini-train_")
        assert option(argv, "gpus-per-node") == ("8" if gpu else None), name
        assert (option(argv, "cpus-per-task"), option(argv, "mem"), option(argv, "time")) == \
            (("32", "256G", "1440") if gpu else ("8", "32G", "1440"))
        assert argv[:2] == ["--parsable", f"--job-name={name}"]
    # Each job runs its step's command word for word, logs into the step's run dir, and is recorded there
    expected = {s.name: s for s in pipeline.steps(composed(BASE + overrides), exp, BASE + overrides)}
    for i, argv in enumerate(calls(fake_slurm)):
        step = expected[names_of[str(100 + i)]]
        assert command(argv) == step.argv
        assert option(argv, "output") == f"{step.run_dir}/slurm-%j.out" and step.run_dir.is_dir()
        assert slurm.recorded(step.run_dir) == [str(100 + i)]


def test_finished_steps_are_skipped_and_queued_ones_not_submitted_twice(fake_slurm, tmp_path):
    exp = tmp_path / "exp"
    mark_finished(exp / "generate_cot")
    run_pipeline_process(exp)
    first = jobs_by_name(calls(fake_slurm))
    ids = {name.removeprefix("cpu_mini-"): str(100 + i) for i, name in enumerate(first)}
    names_of = {v: k for k, v in ids.items()}
    assert "generate_cot" not in ids and len(ids) == 7
    # A finished step is no dependency: train_cot starts at once, eval_base waits for generate_agentic only
    assert option(first["cpu_mini-train_cot"], "dependency") is None
    assert dependencies(first["cpu_mini-eval_base"], names_of)["afterok"] == {"generate_agentic"}

    # Everything still queued or running: nothing is submitted again
    (fake_slurm / "queue").write_text("".join(f"{i}|PENDING|Dependency\n" for i in ids.values()))
    run_pipeline_process(exp)
    assert len(calls(fake_slurm)) == 7 and calls(fake_slurm, "scancel") == []

    # generate_agentic failed: what waited on it can never start. train_cot still runs.
    never = [ids[s] for s in ("train_agentic", "eval_base", "eval_grpo_cot", "eval_grpo_agentic", "report")]
    (fake_slurm / "queue").write_text(f"{ids['train_cot']}|RUNNING|None\n" +
                                      "".join(f"{i}|PENDING|DependencyNeverSatisfied\n" for i in never))
    run_pipeline_process(exp)
    assert sorted(i for argv in calls(fake_slurm, "scancel") for i in argv) == sorted(never)
    again = jobs_by_name(calls(fake_slurm)[7:])
    assert sorted(again) == sorted(f"cpu_mini-{s}" for s in ["generate_agentic", "train_agentic", "eval_base",
                                                              "eval_grpo_cot", "eval_grpo_agentic", "report"])
    new_ids = {option(argv, "job-name").removeprefix("cpu_mini-"): str(107 + i)
               for i, argv in enumerate(calls(fake_slurm)[7:])}
    names_of = {**{v: k for k, v in new_ids.items()}, ids["train_cot"]: "train_cot (queued)"}
    assert dependencies(again["cpu_mini-eval_grpo_cot"], names_of)["afterok"] == {"generate_agentic",
                                                                                  "train_cot (queued)"}


def test_the_dry_run_script_submits_exactly_what_the_pipeline_submits(fake_slurm, tmp_path):
    exp = tmp_path / "exp"
    # Words the shell must pass on untouched: spaces, quotes, $, braces (the report's overrides have the last three)
    overrides = ["pipeline.shards=2", "pipeline.slurm.serve_jobs=[5,6]",
                 """models.roles.judge.model='judge "big" $HOME {x}'"""]
    proc = run_pipeline_process(exp, *overrides, "pipeline.dry_run=true")
    assert calls(fake_slurm) == []
    script = (exp / "slurm_submit.sh").read_text()
    assert script in proc.stdout
    assert "generate_cot=$(sbatch --parsable" in script and "--dependency=afterok:$generate_cot" in script

    subprocess.run(["bash", str(exp / "slurm_submit.sh")], check=True, capture_output=True, cwd=tmp_path)
    from_script = calls(fake_slurm)
    (fake_slurm / "sbatch.jsonl").unlink()
    (fake_slurm / "next_id").unlink()
    run_pipeline_process(exp, *overrides)
    assert calls(fake_slurm) == from_script and len(from_script) == 10
    judge = [a for a in command(from_script[0]) if a.startswith("models.roles.judge.model=")]
    assert judge == ["""models.roles.judge.model='judge "big" $HOME {x}'"""]


def test_a_sharded_generate_step_is_an_array_then_a_merge_into_its_run_dir(fake_slurm, tmp_path):
    exp = tmp_path / "exp"
    mark_finished(exp / "generate_cot" / "shard_1")
    run_pipeline_process(exp, "pipeline.shards=3", "++pipeline.slurm.presets.merge=slurm_small")
    submitted = calls(fake_slurm)
    jobs = jobs_by_name(submitted)
    names_of = {str(100 + i): option(argv, "job-name").removeprefix("cpu_mini-") for i, argv in enumerate(submitted)}
    array, merge = jobs["cpu_mini-generate_cot"], jobs["cpu_mini-generate_cot-merge"]
    # Only the shards that have not finished; every task its own shard and run dir below the step's
    assert option(array, "array") == "0,2"
    assert option(jobs["cpu_mini-generate_agentic"], "array") == "0-2"
    shard_args = command(array)[-4:]
    assert shard_args == ["corpus.num_shards=3", "corpus.shard=$SLURM_ARRAY_TASK_ID", "generate.push_to_hub=null",
                          f"hydra.run.dir={exp / 'generate_cot'}/shard_$SLURM_ARRAY_TASK_ID"]
    assert option(array, "output") == f"{exp / 'generate_cot'}/slurm-%A_%a.out"
    # The merge waits for the whole array and writes the step's own run dir, which later steps read unchanged
    assert dependencies(merge, names_of)["afterok"] == {"generate_cot"}
    shards = ",".join(f"'{exp / 'generate_cot'}/shard_{i}'" for i in range(3))
    assert command(merge)[3:4] == ["stage=merge"]
    assert command(merge)[-2:] == [f"merge.runs=[{shards}]", f"hydra.run.dir={exp / 'generate_cot'}"]
    assert (option(merge, "cpus-per-task"), option(merge, "mem")) == ("2", "8G")
    assert dependencies(jobs["cpu_mini-train_cot"], names_of)["afterok"] == {"generate_cot-merge"}
    assert f"train.dataset={exp / 'generate_cot'}" in command(jobs["cpu_mini-train_cot"])
    assert slurm.recorded(exp / "generate_cot") == [str(100 + submitted.index(job)) for job in (array, merge)]


# ---------------------------------------------------------------- the job script
def test_stage_sbatch_runs_the_command_word_for_word_with_the_task_id(tmp_path):
    words = ["a b", "x='y'", 'q="z"', "shard_$SLURM_ARRAY_TASK_ID", "$HOME", "{c: 'd'}", "*", ""]
    echo = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]
    line = slurm.shell_line(["bash", str(ROOT / "slurm" / "stage.sbatch"), *echo, *words])
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "2", "SLURM_SUBMIT_DIR": str(tmp_path)}
    proc = subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [*words[:3], "shard_2", *words[4:]]


def test_stage_sbatch_requeues_itself_when_the_time_limit_nears(fake_slurm, tmp_path):
    started = tmp_path / "started"
    stage = [sys.executable, "-c", f"import pathlib, time; pathlib.Path({str(started)!r}).touch(); time.sleep(1.5)"]

    def job(restarts: str) -> int:
        env = {**os.environ, "SLURM_JOB_ID": "42", "SLURM_RESTART_COUNT": restarts, "AUTODATA_MAX_REQUEUES": "3"}
        started.unlink(missing_ok=True)
        proc = subprocess.Popen(["bash", str(ROOT / "slurm" / "stage.sbatch"), *stage], env=env, cwd=tmp_path,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 20
        while not started.exists() and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGUSR1)
        _, err = proc.communicate(timeout=20)
        assert "time limit near" in err
        return proc.returncode

    # The stage keeps running to its end (SLURM kills it when it requeues the job); its exit code is the job's
    assert job("0") == 0
    assert calls(fake_slurm, "scontrol") == [["requeue", "42"]]
    assert job("3") == 0
    assert calls(fake_slurm, "scontrol") == [["requeue", "42"]]


def test_stage_sbatch_waits_for_the_endpoints_files_of_the_serving_jobs(tmp_path):
    served = tmp_path / "endpoints"
    served.mkdir()
    (served / "weak_solver.endpoints.json").write_text("{}")
    stage = [sys.executable, "-c", f"import os; print(len(os.listdir({str(served)!r})))"]
    env = {**os.environ, "AUTODATA_WAIT_FOR": str(served), "AUTODATA_WAIT_COUNT": "2"}
    job = subprocess.Popen(["bash", str(ROOT / "slurm" / "stage.sbatch"), *stage], env=env, cwd=tmp_path,
                           stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    # The second serving job registers its file a moment later; only then does the stage start
    (served / "strong_solver.endpoints.json").write_text("{}")
    out, _ = job.communicate(timeout=30)
    assert job.returncode == 0 and out.strip() == "2"


def test_jobs_after_serving_jobs_are_told_which_endpoints_to_wait_for(fake_slurm, tmp_path):
    # Generate reads the served weak and strong solvers; train and eval only the judge's file (their weak solver
    # is the model being trained or evaluated); report reads none
    overrides = [*BASE, "pipeline.slurm.serve_jobs=[7,8]", "models.endpoints_file=runs/endpoints/judge.endpoints.json",
                 "++pipeline.stage_overrides.generate=['models.endpoints_file=runs/endpoints']",
                 "++pipeline.stage_overrides.report=['models.endpoints_file=null']"]
    run_pipeline(composed(overrides), tmp_path / "exp", overrides)
    waits = {}
    for argv in calls(fake_slurm):
        assert option(argv, "dependency").endswith("after:7:8")
        waits[option(argv, "job-name").split("-")[1].split("_")[0]] = option(argv, "export")
    assert waits == {
        "generate": "ALL,AUTODATA_MAX_REQUEUES=3,AUTODATA_WAIT_FOR=runs/endpoints,AUTODATA_WAIT_COUNT=2",
        "train": "ALL,AUTODATA_MAX_REQUEUES=3,AUTODATA_WAIT_FOR=runs/endpoints/judge.endpoints.json,"
                 "AUTODATA_WAIT_COUNT=2",
        "eval": "ALL,AUTODATA_MAX_REQUEUES=3,AUTODATA_WAIT_FOR=runs/endpoints/judge.endpoints.json,"
                "AUTODATA_WAIT_COUNT=2",
        "report": "ALL,AUTODATA_MAX_REQUEUES=3"}


# ---------------------------------------------------------------- sharding with the local launcher
def test_local_shards_run_one_after_another_then_the_merge(tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_STAGE_LOG", str(log))
    monkeypatch.setenv("FAKE_STAGE_FAIL", "shard_1")
    cfg = composed(["stage=pipeline", "experiment=cpu_mini", "pipeline.shards=3", "pipeline.only=[generate_cot]"])
    cfg.pipeline.launchers = {stage: FAKE_STAGE for stage in ("generate", "merge")}
    exp = tmp_path / "exp"

    def run_dirs() -> list[str]:
        argvs = [json.loads(line) for line in log.read_text().splitlines()]
        return [str(Path(a[-1].split("=", 1)[1]).relative_to(exp)) for a in argvs]

    with pytest.raises(pipeline.PipelineError, match=r"step generate_cot/shard_1 \(stage=generate\) failed"):
        run_pipeline(cfg, exp, ["experiment=cpu_mini"])
    monkeypatch.delenv("FAKE_STAGE_FAIL")
    run_pipeline(cfg, exp, ["experiment=cpu_mini"])
    assert run_dirs() == ["generate_cot/shard_0", "generate_cot/shard_1", "generate_cot/shard_1",
                          "generate_cot/shard_2", "generate_cot"]
    merge = json.loads(log.read_text().splitlines()[-1])
    assert merge[merge.index("autodata.run") + 1] == "stage=merge"
    assert merge[-2] == "merge.runs=[" + ",".join(f"'{exp}/generate_cot/shard_{i}'" for i in range(3)) + "]"


# ---------------------------------------------------------------- settings and errors
def test_launcher_settings_are_validated_with_a_fix_each(monkeypatch):
    monkeypatch.chdir(ROOT)
    validate(composed([*BASE, "pipeline.shards=4"]))
    with pytest.raises(ConfigError) as info:
        validate(composed(["stage=pipeline", "experiment=paper_cs", "pipeline.launcher=slurm", "pipeline.shards=0",
                           "pipeline.slurm.presets.train=slurm_gpus", "++pipeline.slurm.presets.eval_bse=slurm",
                           "pipeline.slurm.serve_jobs=[http://n1:8000]", "pipeline.slurm.script=nowhere.sbatch"]))
    text = str(info.value)
    assert "pipeline.shards (0) must be >= 1" in text
    assert "pipeline.slurm.presets.train ('slurm_gpus') names no preset" in text and "slurm_gpu_1" in text
    assert "pipeline.slurm.presets.eval_bse ('slurm') is keyed by neither a step nor a stage" in text
    assert "eval_base" in text and "pipeline.slurm.serve_jobs ('http://n1:8000') must be a SLURM job id" in text
    assert "pipeline.slurm.script ('nowhere.sbatch') does not exist" in text
    with pytest.raises(ConfigError, match=r"pipeline.launcher \('ssh'\) must be one of local, slurm"):
        validate(composed(["stage=pipeline", "experiment=cpu_mini", "pipeline.launcher=ssh"]))


def test_the_pipeline_checks_beside_the_stage_name_its_launchers(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert check_pipeline(composed([*BASE, "pipeline.shards=4"])) == []
    problems = check_pipeline(composed(["stage=pipeline", "experiment=cpu_mini", "pipeline.launcher=ssh"]))
    assert [str(p) for p in problems] == [
        "pipeline.launcher ('ssh') must be one of local, slurm; set pipeline.launcher to one of them"]
    assert tuple(pipeline.LAUNCHERS) == ("local", "slurm")


def test_without_sbatch_the_error_says_where_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    cfg = composed(BASE)
    with pytest.raises(slurm.SlurmError, match="sbatch is not on PATH.*pipeline.dry_run=true"):
        run_pipeline(cfg, tmp_path / "exp", BASE)


def test_a_failed_submission_says_what_was_submitted_and_a_rerun_goes_on(fake_slurm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SBATCH_FAIL", "102")
    cfg = composed(BASE)
    with pytest.raises(pipeline.PipelineError) as info:
        run_pipeline(cfg, tmp_path / "exp", BASE)
    text = str(info.value)
    assert "step 3 of 8: train_cot (stage=train): sbatch failed (exit code 1): sbatch: error: Batch job" in text
    assert "submitted before it: 100 101." in text and "run the same command again" in text
    monkeypatch.delenv("FAKE_SBATCH_FAIL")
    (fake_slurm / "queue").write_text("100|RUNNING|None\n101|PENDING|Priority\n")
    run_pipeline(cfg, tmp_path / "exp", BASE)
    again = calls(fake_slurm)[3:]
    assert [option(a, "job-name") for a in again][:1] == ["cpu_mini-train_cot"] and len(again) == 6
    assert option(again[0], "dependency") == "afterok:100"


def test_every_launcher_preset_gives_sbatch_options():
    for path in sorted(slurm.PRESETS.glob("*.yaml")):
        options, env = slurm.job_options(slurm.load_preset(path.stem))
        assert any(o.startswith("--time=") for o in options) and env["AUTODATA_MAX_REQUEUES"], path.name
    with pytest.raises(slurm.SlurmError, match="unknown launcher preset .*'slurm_huge'.*known: .*slurm_gpu"):
        slurm.load_preset("slurm_huge")


# ---------------------------------------------------------------- one set of presets for every route
# The options a preset's fields become (FLAGS, and mem, time and signal after them)
SIZED = {f"--{flag}" for flag in slurm.FLAGS.values()} | {"--mem", "--time", "--signal"}


def sbatch_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#SBATCH ")]


@pytest.mark.parametrize("script, preset", [("generate.sbatch", "slurm"), ("train.sbatch", "slurm_gpu"),
                                            ("eval.sbatch", "slurm_gpu_1")])
def test_hand_run_jobs_ask_for_the_size_of_the_preset_the_pipeline_gives_their_stage(script, preset):
    text = (ROOT / "slurm" / script).read_text()
    assert f"# Job size: conf/hydra/launcher/{preset}.yaml" in text, script
    sized = [line for line in sbatch_lines(text) if line.split()[1].split("=")[0] in SIZED]
    expected = slurm.sbatch_header(preset)
    assert sized == expected, f"{script}: replace its size lines with\n" + "\n".join(expected)
    # ... and it is the preset the paper experiments' pipelines give that stage
    stage = script.split(".")[0]
    for experiment in ("paper_cs", "paper_legal", "paper_science"):
        assert composed(["stage=pipeline", f"experiment={experiment}"]).pipeline.slurm.presets[stage] == preset


@pytest.mark.parametrize("preset", sorted(p.stem for p in slurm.PRESETS.glob("*.yaml")))
def test_pipeline_jobs_ask_for_what_a_sweep_on_the_same_preset_asks_for(preset, tmp_path, monkeypatch):
    """FLAGS against submitit's own translation (the sweeps' route): the same preset, the same job size."""
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    # submitit's SLURM executor refuses to start without srun on PATH; it is never run here
    (tmp_path / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    params = OmegaConf.to_container(slurm.load_preset(preset), resolve=False)
    # As the plugin's SlurmLauncher.launch hands a preset to submitit
    executor = submitit.AutoExecutor(cluster="slurm", folder=tmp_path / "submitit",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    params = {k: v for k, v in params.items() if k not in ("_target_", "submitit_folder")} | {"name": "x"}
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    # submitit writes its #SBATCH lines in private code only (no public mapping to reuse; see slurm.FLAGS)
    theirs = {}
    for line in sbatch_lines(executor._executor._make_submission_file_text("true", "uid")):
        flag, _, value = line.split()[1].partition("=")
        theirs[flag] = value
    ours = dict(option.partition("=")[::2] for option in slurm.job_options(slurm.load_preset(preset))[0])
    # Same sizes, written alike but for: GB as G, no --gpus-per-node=0, and USR1 to the batch shell (which
    # slurm/stage.sbatch traps to requeue) for submitit's USR2, at the same delay
    theirs["--mem"] = theirs["--mem"].replace("GB", "G")
    if theirs.get("--gpus-per-node") == "0":
        del theirs["--gpus-per-node"]
    assert ours.pop("--signal").split("@")[1] == theirs.pop("--signal").split("@")[1]
    assert ours == {flag: value for flag, value in theirs.items() if flag in SIZED}


@pytest.mark.parametrize("module", [slurm, pipeline], ids=lambda m: m.__name__)
def test_module_doctests(module):
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0
