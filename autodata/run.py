"""The one entry point: ``autodata stage=<name> [overrides...]``, the same as ``python -m autodata.run ...``.

    autodata --help                                       # the stages, the experiments, examples
    autodata new-domain medicine                          # a starting folder domain in ./medicine (domain=folder)
    autodata stage=generate                               # embedded model, embedded corpus
    autodata stage=generate method=cot                    # CoT Self-Instruct baseline
    autodata stage=generate models=openai models.base_url=http://localhost:8000/v1 models.model=Qwen/Qwen3.5-4B
    autodata stage=generate hydra.run.dir=runs/cs_agentic   # same dir again = resume

``--help`` is answered here, from the stage registry and conf/experiment/, before Hydra composes anything (a
stage is required to compose); every other flag is Hydra's: ``--hydra-help``, ``--cfg job``, ``-m`` (sweeps),
``--shell-completion`` (``eval "$(autodata -sc install=bash)"``).

The composed config is converted to typed objects and validated once here;
stages receive a ``RootConfig`` and the run dir. A rejected config changes no
file of the run dir (conf/config.yaml keeps Hydra from writing .hydra/ and
delays its log file; config.yaml and recipe.json are written after validation).

One process works in a run dir at a time: a valid start takes the run dir's lock
(``<run dir>/.lock``, autodata/rundir.py ``lock_run_dir``; the ranks of one
torchrun/accelerate launch share it) and a second start on it is refused, naming
the holder, with nothing written.

Exit codes: 0 done; 2 the config, or an input it names (the corpus), cannot be
used, or another process holds the run dir; 3 an endpoint cannot serve (a
stage's own errors, see its module); 4 the generated dataset is written but its
push to the hub failed.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from autodata import provenance, variants
from autodata.config import register_configs, to_typed
from autodata.domains import DOMAINS, resolve_config
from autodata.rundir import RunDirBusy, lock_run_dir, mark_finished, write_provenance
from autodata.stages import STAGES, resolve_stage
from autodata.validation import ConfigError, InputError, validate

log = logging.getLogger("autodata")

register_configs()
# One INFO line per HTTP request floods the run log at hundreds of requests per second.
for _noisy in ("httpx", "httpx2", "urllib3"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


def main() -> None:
    """The console script ``autodata`` and ``python -m autodata.run``: a subcommand (``new-domain``) runs on its
    own, ``-h``/``--help`` prints the CLI's help, anything else goes to Hydra."""
    # Before --help: `autodata new-domain --help` is the subcommand's own help
    if sys.argv[1:2] and sys.argv[1] in COMMANDS:
        sys.exit(run_command(sys.argv[1], sys.argv[2:]))
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(help_text())
        return
    compose_and_run()


# An absolute path: the console script imports this module by name, where Hydra would read a relative path as a
# package (pkg://conf), and conf/ is no package.
@hydra.main(version_base=None, config_path=str(provenance.CONF_DIR), config_name="config")
def compose_and_run(dcfg: DictConfig) -> None:
    cfg = to_typed(dcfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        stage = resolve_stage(cfg.stage)
        # domain=folder: the folder's domain.yaml applies over the domain group; a bad folder stops here (exit 2)
        cfg.domain = resolve_config(cfg.domain)
        # A harness variant (domain.variant) sets task-shaping knobs: applied once, before validation sees them
        if cfg.domain.variant and cfg.domain.name in DOMAINS:
            cfg.domain = variants.resolve(cfg.domain, DOMAINS[cfg.domain.name])
        validate(cfg, env=os.environ)
    except (ConfigError, ValueError) as err:
        # To the console only: the run dir of a rejected start (an existing run's, maybe) stays as it was.
        detach_log_files()
        log.error("%s", err)
        sys.exit(2)
    try:
        # Held until this process exits; a stage reads other run dirs (its inputs) without their locks
        lock_run_dir(run_dir)
    except RunDirBusy as err:
        # The run dir's log file is the holder's: the refusal goes to the console only
        detach_log_files()
        log.error("%s", err)
        sys.exit(2)
    write_provenance(cfg, run_dir, overrides=list(HydraConfig.get().overrides.task))
    provenance.record(cfg, run_dir)
    try:
        stage(cfg, run_dir)
    except InputError as err:
        log.error("%s", err)
        sys.exit(2)
    mark_finished(run_dir)


# Subcommands that are not stages (they compose no config): name -> the module whose ``main(argv)`` runs it and
# returns the exit code, and whose ``SUMMARY`` --help shows. Imported only when used: no Hydra or stage code.
COMMANDS = {"new-domain": "autodata.new_domain", "show": "autodata.generate.show"}


def run_command(name: str, argv: list[str]) -> int:
    return importlib.import_module(COMMANDS[name]).main(argv)


# (command, what it does) shown by --help
EXAMPLES = [
    ("autodata stage=generate", "the default run: every role on the embedded 135M model, about 10 min on 2 cores"),
    ("autodata stage=pipeline experiment=cpu_mini", "the CS table end to end on a CPU (numbers meaningless)"),
    ("autodata stage=train experiment=smoke", "two GRPO steps on a CPU"),
    ("autodata stage=generate method=cot hydra.run.dir=runs/cs_cot", "the CoT baseline into a named run dir (the "
     "same command again resumes it)"),
    ("autodata stage=pipeline experiment=paper_cs pipeline.dry_run=true", "print every command of a paper table"),
    ("autodata stage=generate --cfg job", "print the composed config; run nothing"),
    ("autodata -m stage=generate method=cot,agentic", "a sweep: one run per point, in multirun/"),
]


def help_text(conf_dir: Path = provenance.CONF_DIR) -> str:
    """The CLI's help: stages from the registry, experiments from conf/experiment/ with their descriptions."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.to_container(OmegaConf.load(conf_dir / "config.yaml"))["defaults"]
    default_experiment = next((d["experiment"] for d in defaults if isinstance(d, dict) and "experiment" in d), None)
    experiments = {}
    for path in sorted((conf_dir / "experiment").glob("*.yaml")):
        described = OmegaConf.select(OmegaConf.load(path), "experiment.description", default="")
        experiments[path.stem] = described or ""
    width = max(map(len, [*STAGES, *experiments]))
    lines = ["autodata: synthetic training data at the right difficulty (Agentic Self-Instruct), GRPO training and "
             "evaluation.", "",
             "usage: autodata stage=<stage> [experiment=<experiment>] [key=value ...]",
             "       python -m autodata.run ... is the same command", "", "stages (stage=<name>):"]
    lines += [f"  {name:<{width}}  {stage.summary}" for name, stage in STAGES.items()]
    lines += ["", f"experiments (experiment=<name>; default {default_experiment}):"]
    lines += [f"  {name:<{width}}  {text}" for name, text in experiments.items()]
    lines += ["", "commands (no stage; autodata <command> --help):"]
    lines += [f"  {importlib.import_module(module).SUMMARY}" for module in COMMANDS.values()]
    lines += ["", "examples:"]
    lines += [f"  {command}\n      {what}" for command, what in EXAMPLES]
    lines += ["", "Every default lives in autodata/config.py; conf/ holds the options (README.md, \"Experiments\").",
              "Hydra's own flags: autodata --hydra-help. Tab completion (bash): eval \"$(autodata -sc install=bash)\""]
    return "\n".join(lines)


def detach_log_files() -> None:
    """Close the root logger's file handlers (Hydra's ``<run dir>/<job>.log``), which opens its file lazily
    (hydra.job_logging.handlers.file.delay in conf/config.yaml)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()


if __name__ == "__main__":
    main()
