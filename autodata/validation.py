"""Validate a typed config once and report every problem in one error.

Each line names the key path, the value found, the rule, and the fix:

    acceptance.strong_min (0.4) must be >= acceptance.weak_max (0.5); raise strong_min or lower weak_max
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

from autodata import grpo
from autodata.acceptance import POLICIES
# Valid domain and backend names are read from their registries at check time (no second list here), so
# registering a class is all a new domain or backend needs.
from autodata.backends import BACKENDS
from autodata.config import (
    META_ROLES,
    ROLES,
    SCREEN_ROLE,
    GenerateConfig,
    RootConfig,
    TrainConfig,
    apply_eval_shortcuts,
    endpoint_for,
    has_screen,
    is_judge_role,
)
from autodata.domains import DOMAINS, Domain
from autodata.reasoning import TEMPLATE_SWITCH
from autodata.variants import VariantError, protected_overrides, read_folder


@dataclass
class Problem:
    key: str
    value: object
    rule: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key} ({self.value!r}) {self.rule}; {self.fix}"


class Hidden:
    """Stands in a Problem for a value that must not be shown or stored (a pasted API key)."""

    def __init__(self, value: str):
        self.chars = len(value)

    def __repr__(self) -> str:
        return f"<not shown: {self.chars} characters>"


class ConfigError(ValueError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"the configuration has {len(problems)} problem(s):\n{lines}")


class InputError(ValueError):
    """An input the config names (a corpus, a data file) cannot be used; found by a stage once it reads it.
    run.py exits 2, as for a config error: the fix is the user's, and rerunning as is would fail again."""


KNOWN_METHODS = ("agentic", "cot")
KNOWN_COT_FILTERS = ("none", "answer_consistency", "rip")
KNOWN_SOURCES = ("pydoc", "folder", "jsonl", "parquet", "hf")
KNOWN_LOGGERS = ("none", "wandb")
# What an environment variable's name may hold; anything else in api_key_env is most likely the key itself
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _choice(problems: list[Problem], key: str, value: object, known: tuple[str, ...]) -> None:
    if value not in known:
        problems.append(Problem(key, value, f"must be one of {', '.join(known)}", f"set {key} to one of them"))


def _domains_where(has: Callable[[type[Domain]], bool]) -> list[str]:
    """Registered domain names whose class has a property, for hints that name the alternatives."""
    return [name for name, cls in sorted(DOMAINS.items()) if has(cls)]


def _card_license(problems: list[Problem], gen: GenerateConfig) -> None:
    """The dataset card's license: the hub wants a name and the license's text for ``other``."""
    if gen.license == "other":
        for key in ("license_name", "license_link"):
            if not getattr(gen, key):
                problems.append(Problem(f"generate.{key}", getattr(gen, key), "is required with generate.license=other",
                                        f"set generate.{key} (name: lowercase with dashes; link: a URL or LICENSE in "
                                        "the repo), or use a hub license id such as generate.license=cc-by-4.0"))


def _positive(problems: list[Problem], key: str, value: object, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        problems.append(Problem(key, value, f"must be {bound}", f"set {key} to a number {bound}"))


def _unit(problems: list[Problem], key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        problems.append(Problem(key, value, "must lie in [0, 1] (scores are clipped to [0, 1])", f"set {key} between 0 and 1"))


def check_cot_filter(cfg: RootConfig) -> list[Problem]:
    m = cfg.method
    problems: list[Problem] = []
    _choice(problems, "method.cot_filter", m.cot_filter, KNOWN_COT_FILTERS)
    _unit(problems, "method.rip_min_score", m.rip_min_score)
    if m.cot_filter == "none":
        return problems
    if m.name != "cot":
        problems.append(Problem("method.cot_filter", m.cot_filter, "applies to method=cot only",
                                "set method=cot, or method.cot_filter=none (the agentic loop filters by its gap rule)"))
    if not m.score_solvers:
        problems.append(Problem("method.cot_filter", m.cot_filter, "needs the strong solver's runs, but "
                                "method.score_solvers is false", "set method.score_solvers=true"))
    domain = DOMAINS.get(cfg.domain.name)
    if m.cot_filter == "answer_consistency" and (domain is None or domain.grading != "equivalence"):
        verifiable = " or ".join(f"domain={n}" for n in _domains_where(lambda d: d.grading == "equivalence"))
        problems.append(Problem("method.cot_filter", m.cot_filter,
                                f"needs verifiable answers, but domain={cfg.domain.name} is rubric-graded",
                                f"use method.cot_filter=rip for rubric domains, or {verifiable}"))
    return problems


def check_generate(cfg: RootConfig, env: Optional[Mapping[str, str]] = None) -> list[Problem]:
    problems: list[Problem] = []
    _choice(problems, "domain.name", cfg.domain.name, tuple(sorted(DOMAINS)))
    _choice(problems, "method.name", cfg.method.name, KNOWN_METHODS)
    problems.extend(check_cot_filter(cfg))
    _choice(problems, "corpus.source", cfg.corpus.source, KNOWN_SOURCES)
    _choice(problems, "logger", cfg.logger, KNOWN_LOGGERS)

    acc = cfg.domain.acceptance
    _choice(problems, "domain.acceptance.policy", acc.policy, tuple(sorted(POLICIES)))
    policy = POLICIES.get(acc.policy)
    if policy is not None and policy.needs_loop_judge:
        domain = DOMAINS.get(cfg.domain.name)
        if domain is not None and not domain.has_loop_judge:
            problems.append(Problem("domain.acceptance.policy", acc.policy,
                                    f"leaves the verdict to a loop judge, but domain={cfg.domain.name} has none",
                                    "pick a threshold policy (cs_paper, cs_deployed, verifiable) or a domain with "
                                    f"a loop judge ({', '.join(_domains_where(lambda d: d.has_loop_judge))})"))
        if acc.policy == "loop_judge" and not acc.require_loop_judge_accept:
            problems.append(Problem("domain.acceptance.require_loop_judge_accept", False,
                                    "must be true with policy=loop_judge, which has no threshold: every task "
                                    "would be accepted", "set it to true, or policy=legal_gap for the gap rule alone"))
    for name in ("strong_min", "weak_max", "weak_run_max", "strong_max"):
        _unit(problems, f"domain.acceptance.{name}", getattr(acc, name))
    # A gap lies in [-1, 1]; a negative min_gap also accepts tasks the strong solver scored lower (wiring runs)
    if not -1.0 <= acc.min_gap <= 1.0:
        problems.append(Problem("domain.acceptance.min_gap", acc.min_gap, "must lie in [-1, 1] (a gap of two "
                                "clipped scores)", "set domain.acceptance.min_gap between -1 and 1"))
    if acc.policy == "cs_paper" and acc.strong_min < acc.weak_max:
        problems.append(Problem(
            "domain.acceptance.strong_min", acc.strong_min,
            f"must be >= domain.acceptance.weak_max ({acc.weak_max}), or no task can separate the models",
            "raise strong_min or lower weak_max",
        ))
    if acc.policy == "cs_deployed" and acc.strong_max <= acc.strong_min:
        problems.append(Problem(
            "domain.acceptance.strong_max", acc.strong_max,
            f"must be > domain.acceptance.strong_min ({acc.strong_min})", "raise strong_max",
        ))
    gen = cfg.generate
    if acc.policy == "verifiable":
        if acc.strong_min_correct > gen.strong_samples:
            problems.append(Problem(
                "domain.acceptance.strong_min_correct", acc.strong_min_correct,
                f"must be <= generate.strong_samples ({gen.strong_samples})",
                "lower strong_min_correct or raise generate.strong_samples",
            ))
        if acc.weak_max_correct >= gen.weak_samples:
            problems.append(Problem(
                "domain.acceptance.weak_max_correct", acc.weak_max_correct,
                f"must be < generate.weak_samples ({gen.weak_samples}), or the weak criterion always holds",
                "lower weak_max_correct or raise generate.weak_samples",
            ))

    d = cfg.domain
    if d.rubric_min > d.rubric_max:
        problems.append(Problem("domain.rubric_min", d.rubric_min, f"must be <= domain.rubric_max ({d.rubric_max})",
                                "lower rubric_min or raise rubric_max"))
    for key in ("max_rounds", "weak_samples", "strong_samples", "solver_wave", "max_docs_in_flight"):
        _positive(problems, f"generate.{key}", getattr(gen, key))
    if gen.challengers_per_round is not None:
        _positive(problems, "generate.challengers_per_round", gen.challengers_per_round)
    _positive(problems, "generate.heldout_size", gen.heldout_size, allow_zero=True)
    _unit(problems, "generate.heldout_max_fraction", gen.heldout_max_fraction)
    if gen.target_accepted is not None:
        _positive(problems, "generate.target_accepted", gen.target_accepted, allow_zero=True)
    if gen.push_to_hub is not None:
        from autodata.generate.hub import repo_id_problem

        if repo_id_problem(gen.push_to_hub):
            problems.append(Problem("generate.push_to_hub", gen.push_to_hub, "must be a hub repo id ORG/NAME",
                                    "set generate.push_to_hub=my-org/my-dataset"))
    _card_license(problems, gen)
    if cfg.corpus.limit is not None:
        _positive(problems, "corpus.limit", cfg.corpus.limit)
    problems.extend(check_shards(cfg))
    if cfg.corpus.source != "pydoc" and not cfg.corpus.path:
        problems.append(Problem("corpus.path", cfg.corpus.path, f"is required for corpus.source={cfg.corpus.source}",
                                "set corpus.path to the file, folder or dataset"))
    problems.extend(check_templates(cfg))
    problems.extend(check_models(cfg, env=env))
    return problems


def check_templates(cfg: RootConfig) -> list[Problem]:
    """A template_dir may replace only editable templates (unless allowed), and a variant folder must be one."""
    cls = DOMAINS.get(cfg.domain.name)
    d = cfg.domain
    if cls is None:
        return []
    problems: list[Problem] = []
    overridden = protected_overrides(d.template_dir, cls.editable_templates, cls.protected_templates)
    if overridden and not d.allow_protected_templates:
        problems.append(Problem(
            "domain.template_dir", d.template_dir,
            f"replaces protected template(s) {', '.join(overridden)} (the solver and judge prompts decide what a "
            "score means; a change there can widen the gap without a better task)",
            "remove them from the folder, or set domain.allow_protected_templates=true if you mean it (the run dir "
            "records it)"))
    if d.variant:
        try:
            read_folder(d.variant, d.name, cls.editable_templates)
        except VariantError as err:
            problems.append(Problem("domain.variant", d.variant, "is not a usable variant folder",
                                    str(err).replace("\n", " ")))
    return problems


def check_meta(cfg: RootConfig, env: Optional[Mapping[str, str]] = None) -> list[Problem]:
    """stage=meta_optimize runs the generate loop (its rules apply) and calls the analyzer and implementer."""
    problems = check_generate(cfg, env)
    m = cfg.meta
    for key in ("iterations", "concurrency", "validation_documents", "minibatch_size", "history_chars",
                "trajectory_chars"):
        _positive(problems, f"meta.{key}", getattr(m, key))
    _positive(problems, "meta.train_documents", m.train_documents)
    _positive(problems, "meta.temperature", m.temperature)
    _choice(problems, "meta.score", m.score, META_SCORES)
    _choice(problems, "meta.parent_reeval", m.parent_reeval, META_PARENT_REEVALS)
    if isinstance(m.minibatch_size, int) and isinstance(m.train_documents, int) and m.minibatch_size > m.train_documents:
        problems.append(Problem("meta.minibatch_size", m.minibatch_size,
                                f"must be <= meta.train_documents ({m.train_documents}), the documents it is drawn from",
                                "lower meta.minibatch_size or raise meta.train_documents"))
    if cfg.method.name != "agentic":
        problems.append(Problem("method.name", cfg.method.name, "must be agentic for stage=meta_optimize (it "
                                "evolves the agentic loop's harness; a variant's challenger_cot still applies to "
                                "CoT runs that use it)", "drop method=cot"))
    for key in ("min_weak_length_ratio", "max_weak_share_rise", "max_strong_drop"):
        _unit(problems, f"meta.{key}", getattr(m, key))
    problems.extend(check_models(cfg, roles=META_ROLES, env=env))
    return problems


META_SCORES = ("pass_rate_rounds", "pass_rate", "mean_gap")
META_PARENT_REEVALS = ("fresh", "cached", "none")


def check_endpoints_file(cfg: RootConfig) -> tuple[list[Problem], dict]:
    """``models.endpoints_file`` must be readable, with key files only their owner can read, and name known roles;
    returns the problems and the roles it serves (role -> ``autodata.endpoints.Served``). A role with no live
    replica is not a config problem: the stage waits for one at start, then stops with exit code 3."""
    path = cfg.models.endpoints_file
    if not path:
        return [], {}
    from autodata.endpoints import EndpointsFileError, load

    try:
        served = load(path)
    except EndpointsFileError as err:
        return [Problem("models.endpoints_file", path, "cannot be used", str(err))], {}
    known = ROLES + META_ROLES + (SCREEN_ROLE,)
    problems = [Problem("models.endpoints_file", path, f"serves role {role!r} ({entry.file}), which is not a role",
                        f"serve one of {', '.join(known)} (the serving job's ROLE), or judge_<name>")
                for role, entry in served.items() if role not in known and not is_judge_role(role)]
    weak = served.get("weak_solver")
    if cfg.stage == "eval" and cfg.eval.model and weak is not None and weak.model != cfg.eval.model:
        # The file's role wins over the config: the run would grade the served model under eval.model's name.
        problems.append(Problem("models.endpoints_file", path, f"serves weak_solver as {weak.model!r} "
                                f"({weak.file}), but stage=eval evaluates eval.model={cfg.eval.model!r} in that role",
                                "point models.endpoints_file at the judge's file alone (<dir>/judge.endpoints.json), "
                                "or serve the evaluated model (sbatch slurm/serve_weak.sbatch EVAL_MODEL DIR)"))
    return problems, served


def check_models(cfg: RootConfig, roles: tuple[str, ...] = ROLES,
                 env: Optional[Mapping[str, str]] = None) -> list[Problem]:
    """Endpoint rules for ``roles`` (the roles the stage calls); with ``env``, also that each API key variable
    they read is set there."""
    problems: list[Problem] = []
    # variable -> the roles that read their key from it (one line per variable, not per role)
    unset_keys: dict[str, list[str]] = {}
    known = ROLES + META_ROLES + (SCREEN_ROLE,)
    unknown_roles = sorted(r for r in cfg.models.roles if r not in known and not is_judge_role(r))
    for role in unknown_roles:
        problems.append(Problem(f"models.roles.{role}", role,
                                f"is not a role (roles: {', '.join(known)}, or judge_<name> for a further judge)",
                                "fix the spelling or remove it"))
    file_problems, served = check_endpoints_file(cfg)
    problems.extend(file_problems)
    for role in roles:
        ep = endpoint_for(cfg.models, role)
        if role in served:
            ep = served[role].bind(ep)
        prefix = f"models.roles.{role}"
        _choice(problems, f"{prefix}.backend", ep.backend, tuple(sorted(BACKENDS)))
        # A served role may have no live replica yet: the stage waits for one
        if ep.backend == "openai" and not ep.base_urls and role not in served:
            problems.append(Problem(f"{prefix}.base_url", None, "is required for the openai backend",
                                    "set models.base_url=http://HOST:PORT/v1 (all roles) or models.roles.<role>.base_url"))
        if ep.backend == "openai" and ep.model in (None, "", "embedded"):
            problems.append(Problem(f"{prefix}.model", ep.model, "must name the model the server serves",
                                    "set models.model=NAME (as listed by GET /v1/models)"))
        for key in ("max_concurrency", "max_tokens", "timeout_s", "batch_size"):
            _positive(problems, f"{prefix}.{key}", getattr(ep, key))
        # null derives the document cap from the context length, which null asks the backend for
        for key in ("max_document_tokens", "context_length"):
            if getattr(ep, key) is not None:
                _positive(problems, f"{prefix}.{key}", getattr(ep, key))
        _positive(problems, f"{prefix}.max_retries", ep.max_retries, allow_zero=True)
        _positive(problems, f"{prefix}.startup_wait_s", ep.startup_wait_s, allow_zero=True)
        if not 0.0 <= float(ep.temperature) <= 2.0:
            problems.append(Problem(f"{prefix}.temperature", ep.temperature, "must lie in [0, 2]", "pick a sampling temperature in [0, 2]"))
        if not 0.0 < float(ep.top_p) <= 1.0:
            problems.append(Problem(f"{prefix}.top_p", ep.top_p, "must lie in (0, 1]", "set top_p in (0, 1]"))
        if TEMPLATE_SWITCH in ((ep.extra_body or {}).get("chat_template_kwargs") or {}):
            problems.append(Problem(f"{prefix}.extra_body.chat_template_kwargs.{TEMPLATE_SWITCH}",
                                    ep.extra_body["chat_template_kwargs"][TEMPLATE_SWITCH],
                                    "is a second thinking switch beside models.roles.<role>.thinking",
                                    f"remove it and set {prefix}.thinking (true, false, or null for the template's "
                                    "default)"))
        key = ep.api_key_env
        # A name that is not one is refused by check_api_key_names, without being shown
        if env is not None and ep.backend == "openai" and key and ENV_NAME.fullmatch(key) and not env.get(key):
            unset_keys.setdefault(key, []).append(role)
    for key, key_roles in unset_keys.items():
        where = key_roles[0] if len(key_roles) == 1 else "{" + ",".join(key_roles) + "}"
        problems.append(Problem(f"models.roles.{where}.api_key_env", key,
                                "names an environment variable that is not set (or is empty), so no API key "
                                "would be sent", f"export {key}=<your key> in this shell or job script, or set "
                                "api_key_env=null for a server that needs no key"))
    return problems


def check_api_key_names(cfg: RootConfig) -> list[Problem]:
    """Every ``api_key_env`` must name a variable, for every stage: config.yaml and run_info.json record every
    role, and a key pasted there would be written into them. The value is not repeated in the message."""
    models = cfg.models
    places = [("models.api_key_env", models.api_key_env), ("models.default.api_key_env", models.default.api_key_env)]
    places += [(f"models.roles.{role}.api_key_env", ep.api_key_env) for role, ep in models.roles.items()]
    return [Problem(key, Hidden(str(value)), "is not an environment variable's name (letters, digits and _): it "
                    "looks like the API key itself; it was not written to any file",
                    f"export the key (export MY_API_KEY=...) and set {key}=MY_API_KEY")
            for key, value in places if value and not ENV_NAME.fullmatch(str(value))]


KNOWN_BATCH_UNITS = ("prompts", "completions")
KNOWN_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
KNOWN_REWARD_SCALING = ("group", "batch", "none")
KNOWN_VLLM_MODES = ("colocate", "server")


def check_train(cfg: RootConfig, env: Optional[Mapping[str, str]] = None) -> list[Problem]:
    """Rules of stage=train that need no file or process: the data and the world size are checked at start."""
    problems: list[Problem] = []
    t = cfg.train
    _choice(problems, "domain.name", cfg.domain.name, tuple(sorted(DOMAINS)))
    _choice(problems, "logger", cfg.logger, KNOWN_LOGGERS)
    if TEMPLATE_SWITCH in (t.chat_template_kwargs or {}):
        problems.append(Problem(f"train.chat_template_kwargs.{TEMPLATE_SWITCH}", t.chat_template_kwargs[TEMPLATE_SWITCH],
                                "is a second thinking switch: the trained model is the weak solver, whose reasoning "
                                "mode is models.roles.weak_solver.thinking (the same in generate, train and eval)",
                                "remove it and set models.roles.weak_solver.thinking"))
    paths = [t.dataset] if isinstance(t.dataset, str) else t.dataset
    if not paths or not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        problems.append(Problem(
            "train.dataset", t.dataset, "must name a generate run's output (a path, or a list of paths)",
            "set train.dataset=runs/<generate run>/accepted.jsonl, or train.dataset='[RUN_A,RUN_B]' for the combined "
            "arm (python -m autodata.run stage=generate hydra.run.dir=runs/<name> makes one)",
        ))
    if not t.model:
        problems.append(Problem("train.model", t.model, "must name the policy", "set train.model to a hub id, a "
                                "checkpoint dir or embedded"))
    _choice(problems, "train.batch_unit", t.batch_unit, KNOWN_BATCH_UNITS)
    _choice(problems, "train.loss_type", t.loss_type, KNOWN_LOSS_TYPES)
    _choice(problems, "train.scale_rewards", t.scale_rewards, KNOWN_REWARD_SCALING)
    for key in ("batch_size", "per_device_batch_size", "learning_rate", "epochs", "max_completion_length",
                "num_iterations", "save_steps", "save_total_limit", "logging_steps"):
        _positive(problems, f"train.{key}", getattr(t, key))
    _positive(problems, "train.judge_down_batches", t.judge_down_batches, allow_zero=True)
    failure = t.judge_failure_reward
    if failure is not None and (isinstance(failure, bool) or not isinstance(failure, (int, float))
                                or not 0.0 <= failure <= 1.0):
        problems.append(Problem(
            "train.judge_failure_reward", failure,
            "must lie in [0, 1] like every judge reward, or be null (TRL then leaves the completion out)",
            "set train.judge_failure_reward=0.0 (the policy gains nothing by making the judge fail) or =null"))
    if not isinstance(t.hacking_alert_window, int) or isinstance(t.hacking_alert_window, bool) \
            or t.hacking_alert_window < 1:
        problems.append(Problem("train.hacking_alert_window", t.hacking_alert_window, "must be an integer >= 1 (steps "
                                "in the rolling mean)", "set train.hacking_alert_window=5, or 1 for no smoothing"))
    for key, low in (("guard_share", 0.0), ("screen_share", 0.0), ("judge_failure_share", 0.0),
                     ("truncation_share", 0.0), ("length_corr", -1.0)):
        value = getattr(t, f"hacking_alert_{key}")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not low <= value <= 1.0):
            problems.append(Problem(f"train.hacking_alert_{key}", value, f"must lie in [{low:g}, 1] like the metric "
                                    "it watches, or be null (no alert for it)",
                                    f"set train.hacking_alert_{key} in [{low:g}, 1] or =null"))
    _positive(problems, "train.beta", t.beta, allow_zero=True)
    _positive(problems, "train.epsilon", t.epsilon)
    if t.max_steps is not None:
        _positive(problems, "train.max_steps", t.max_steps)
    if not isinstance(t.group_size, int) or t.group_size < 2:
        problems.append(Problem("train.group_size", t.group_size,
                                "must be >= 2 (GRPO's advantage compares completions of one prompt)",
                                "set train.group_size to 2 or more (paper: 8)"))
    elif t.batch_unit == "completions" and isinstance(t.batch_size, int) and t.batch_size % t.group_size:
        problems.append(Problem(
            "train.batch_size", t.batch_size,
            f"must be divisible by train.group_size ({t.group_size}) when train.batch_unit=completions, or a step "
            "would hold a partial group",
            f"set train.batch_size to a multiple of {t.group_size}, or count prompts with train.batch_unit=prompts",
        ))
    elif (t.batch_unit in KNOWN_BATCH_UNITS and isinstance(t.per_device_batch_size, int) and t.per_device_batch_size > 0
          and t.batch_size > 0 and t.completions_per_step % t.per_device_batch_size):
        problems.append(Problem(
            "train.per_device_batch_size", t.per_device_batch_size,
            f"must divide the completions per step ({t.completions_per_step} = train.batch_size x train.group_size)",
            "pick a divisor; gradient accumulation makes up the rest",
        ))
    if not 0.0 < float(t.temperature) <= 2.0:
        problems.append(Problem("train.temperature", t.temperature, "must lie in (0, 2]",
                                "set a sampling temperature in (0, 2] (paper: 1.0)"))
    if not 0.0 < float(t.top_p) <= 1.0:
        problems.append(Problem("train.top_p", t.top_p, "must lie in (0, 1]", "set train.top_p in (0, 1]"))
    v = t.vllm
    if v.enabled:
        _choice(problems, "train.vllm.mode", v.mode, KNOWN_VLLM_MODES)
        if v.mode == "server" and not v.server_base_url:
            problems.append(Problem("train.vllm.server_base_url", v.server_base_url, "is required in server mode",
                                    "start `trl vllm-serve --model MODEL` on a spare GPU and set "
                                    "train.vllm.server_base_url=http://HOST:8000"))
        if not 0.0 < float(v.gpu_memory_utilization) < 1.0:
            problems.append(Problem("train.vllm.gpu_memory_utilization", v.gpu_memory_utilization, "must lie in (0, 1)",
                                    "leave room for training, e.g. 0.3"))
    if t.lora.enabled:
        _positive(problems, "train.lora.r", t.lora.r)
        _positive(problems, "train.lora.alpha", t.lora.alpha)
        if not t.lora.target_modules:
            problems.append(Problem("train.lora.target_modules", t.lora.target_modules, "must not be empty",
                                    "name the modules to adapt, or [all-linear]"))
    problems.extend(check_grpo(t))
    problems.extend(check_templates(cfg))
    # Training calls the reward judge, and the screen when it is declared.
    problems.extend(check_models(cfg, roles=("judge", SCREEN_ROLE) if has_screen(cfg.models) else ("judge",), env=env))
    return problems


def check_grpo(t: TrainConfig, fields: Optional[Callable[[], list[str]]] = None) -> list[Problem]:
    """Each train.grpo key must be a GRPOConfig field no setting already sets; TRL's name of a renamed setting
    must agree with it. ``fields`` lists GRPOConfig's fields (default: the installed TRL's, imported only when a
    key is none of the stage's)."""
    problems: list[Problem] = []
    unknown = []
    for key, value in t.grpo.items():
        where = f"train.grpo.{key}"
        if key in grpo.ALIASES:
            path = grpo.ALIASES[key]
            if grpo.setting(t, path) != value:
                problems.append(Problem(where, value, f"is TRL's name for train.{path}, which is "
                                        f"{grpo.setting(t, path)!r} here: two values for one setting",
                                        f"keep one: drop {where}, or set train.{path}={value} in its place"))
        elif key in grpo.SETTINGS:
            problems.append(Problem(where, value, f"duplicates the setting train.{key}",
                                    f"set train.{key}={value} instead"))
        elif key in grpo.STAGE_SET:
            problems.append(Problem(where, value, f"is set by the stage from {grpo.STAGE_SET[key]}",
                                    "drop it and change that instead"))
        else:
            unknown.append((key, value))
    if unknown:
        known = (fields or grpo.config_fields)()
        for key, value in unknown:
            if key in known:
                continue
            near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            named = key in {f.name for f in dataclasses.fields(TrainConfig)}
            fix = (f"set train.{key} (a train setting, not a GRPOConfig field)" if named
                   else f"did you mean train.grpo.{near[0]}?" if near
                   else "use a field name of TRL's GRPOConfig (python -c \"from trl import GRPOConfig; "
                        "help(GRPOConfig)\")")
            problems.append(Problem(f"train.grpo.{key}", value, "is not a field of TRL's GRPOConfig", fix))
    return problems


def check_eval(cfg: RootConfig, env: Optional[Mapping[str, str]] = None) -> list[Problem]:
    """Rules of stage=eval that need no file: the sets themselves are read and checked at start."""
    problems: list[Problem] = []
    # The endpoint rules see the evaluated model as the stage will run it.
    cfg = copy.deepcopy(cfg)
    apply_eval_shortcuts(cfg)
    e = cfg.eval
    _choice(problems, "domain.name", cfg.domain.name, tuple(sorted(DOMAINS)))
    if not isinstance(e.n, int) or e.n < 1:
        problems.append(Problem("eval.n", e.n, "must be >= 1 (completions per prompt)",
                                "set eval.n=3 for the paper's mean@3 / best@3, or 8 for avg@8"))
    # A k above eval.n is not an error: the default ks must still run with eval.n=1 (PRBench); the stage drops it
    # with a warning. A k below 1 means nothing.
    ks = list(e.ks) if isinstance(e.ks, list) else None
    if ks is None:
        problems.append(Problem("eval.ks", e.ks, "must be a list of integers", "set eval.ks=[1,3]"))
    for k in ks or []:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            problems.append(Problem("eval.ks", k, "must be an integer >= 1 (samples per prompt a metric reads)",
                                    "list ks like eval.ks=[1,3]; eval.n is always added"))
    _positive(problems, "eval.max_prompts_in_flight", e.max_prompts_in_flight)
    if e.max_tokens is not None:
        _positive(problems, "eval.max_tokens", e.max_tokens)
    if e.temperature is not None and not 0.0 <= float(e.temperature) <= 2.0:
        problems.append(Problem("eval.temperature", e.temperature, "must lie in [0, 2]",
                                "use 0 for greedy decoding, about 0.6-1.0 for sampling"))
    if e.limit is not None:
        _positive(problems, "eval.limit", e.limit)
    _unit(problems, "eval.pass_threshold", e.pass_threshold)
    if not isinstance(e.datasets, list) or not all(isinstance(p, str) and p for p in e.datasets):
        problems.append(Problem("eval.datasets", e.datasets, "must be a list of paths",
                                "set eval.datasets=[runs/cs_agentic] (a generate run dir or a .jsonl file)"))
    judges = list(e.judges) if isinstance(e.judges, list) else []
    if not judges:
        problems.append(Problem("eval.judges", e.judges, "must list at least one judge role",
                                "set eval.judges=[judge], or [judge,judge_kimi] with +judges=kimi"))
    for role in judges:
        if not is_judge_role(role):
            problems.append(Problem("eval.judges", role, "is not a judge role (judge, or judge_<name>)",
                                    "name a further judge judge_<name> and configure it under models.roles.judge_<name>"))
        elif role != "judge" and role not in cfg.models.roles:
            problems.append(Problem("eval.judges", role, f"has no endpoint: models.roles.{role} is not set",
                                    f"declare it: +judges=kimi (conf/judges/*.yaml) or roles.{role} in a models/*.yaml of your own"))
    if len(set(judges)) != len(judges):
        problems.append(Problem("eval.judges", judges, "names a judge twice", "list each judge role once"))
    problems.extend(check_templates(cfg))
    # Eval calls the evaluated model (weak_solver) and every judge.
    problems.extend(check_models(cfg, roles=("weak_solver", *[j for j in judges if is_judge_role(j)]), env=env))
    return problems


def check_report(cfg: RootConfig, env: Optional[Mapping[str, str]] = None) -> list[Problem]:
    """``env`` is unused: the report calls no endpoint."""
    problems: list[Problem] = []
    for key, labels in (("report.runs", cfg.report.runs), ("report.paper", cfg.report.paper)):
        for label in labels:
            row, sep, column = label.rpartition("/")
            if not (sep and row and column):
                problems.append(Problem(f"{key}.{label}", label, "must be a ROW/COLUMN label",
                                        "name it like base/cot_test"))
    for label, specs in cfg.report.flips.items():
        if not isinstance(specs, list) or len(specs) != 2:
            problems.append(Problem(f"report.flips.{label}", specs, "must name two eval runs, [BASE, TRAINED]",
                                    "e.g. '+report.flips={validation: [runs/eval_sci_base, runs/eval_sci_agentic]}'"))
    _unit(problems, "report.flip_threshold", cfg.report.flip_threshold)
    for label, path in cfg.report.meta_runs.items():
        if not label or not path:
            problems.append(Problem(f"report.meta_runs.{label}", path, "must map a label to a meta_optimize run dir",
                                    "e.g. '+report.meta_runs={ours: runs/meta_cs}'"))
    known = ("baseline_score", "best_score", "iterations", "kept", "kept_other_source", "rejected_by_guard",
             "flagged")
    for key in cfg.report.meta_paper:
        if key not in known:
            problems.append(Problem(f"report.meta_paper.{key}", cfg.report.meta_paper[key],
                                    "is not a meta-optimization measure", f"use one of {', '.join(known)}"))
    if not cfg.report.metrics:
        problems.append(Problem("report.metrics", cfg.report.metrics, "must not be empty",
                                "list the metrics to show, e.g. [mean_at_3, best_at_3]"))
    return problems


def check_plan(cfg: RootConfig, env: Optional[Mapping[str, str]] = None) -> list[Problem]:
    """``env`` is unused: the planner calls no endpoint, so no URL or API key is needed. The pilot run dir and the
    target (plan.target or generate.target_accepted) are checked when the stage starts."""
    problems: list[Problem] = []
    p, gen = cfg.plan, cfg.generate
    _choice(problems, "domain.name", cfg.domain.name, tuple(sorted(DOMAINS)))
    _choice(problems, "method.name", cfg.method.name, KNOWN_METHODS)
    _choice(problems, "logger", cfg.logger, KNOWN_LOGGERS)
    if p.target is not None:
        _positive(problems, "plan.target", p.target)
    if p.rounds_per_accepted is not None and not (isinstance(p.rounds_per_accepted, (int, float))
                                                  and p.rounds_per_accepted >= 1):
        problems.append(Problem("plan.rounds_per_accepted", p.rounds_per_accepted, "must be >= 1 (the accepting "
                                "round counts)", "set it to a pilot's mean_rounds_per_accepted, or null for the "
                                "paper's 6.59"))
    if not 0.0 <= p.too_easy_share <= 1.0:
        problems.append(Problem("plan.too_easy_share", p.too_easy_share, "must lie in [0, 1] (a share of the "
                                "rejected rounds)", "set 0.8 (paper CS) or 0 for the upper bound"))
    _positive(problems, "plan.orchestrator_calls_per_s", p.orchestrator_calls_per_s)
    for key in ("weak_samples", "strong_samples", "solver_wave", "max_docs_in_flight"):
        _positive(problems, f"generate.{key}", getattr(gen, key))
    if gen.challengers_per_round is not None:
        _positive(problems, "generate.challengers_per_round", gen.challengers_per_round)
    for group in ("tokens", "roles"):
        for role in getattr(p, group):
            if role not in ROLES:
                problems.append(Problem(f"plan.{group}.{role}", role, f"is not a generate role ({', '.join(ROLES)})",
                                        "fix the spelling or remove it"))
    for role, size in p.tokens.items():
        for key in ("input", "output"):
            _positive(problems, f"plan.tokens.{role}.{key}", getattr(size, key), allow_zero=True)
    for role, rc in p.roles.items():
        prefix = f"plan.roles.{role}"
        for key in ("replica_tokens_per_s", "latency_s"):
            if getattr(rc, key) is not None:
                _positive(problems, f"{prefix}.{key}", getattr(rc, key))
        for key in ("price_in_per_mtok", "price_out_per_mtok"):
            if getattr(rc, key) is not None:
                _positive(problems, f"{prefix}.{key}", getattr(rc, key), allow_zero=True)
        for key in ("replicas", "gpus_per_replica"):
            if not isinstance(getattr(rc, key), int) or getattr(rc, key) < 1:
                problems.append(Problem(f"{prefix}.{key}", getattr(rc, key), "must be an integer >= 1",
                                        f"set {prefix}.{key} to a count"))
    return problems


def check_shards(cfg: RootConfig) -> list[Problem]:
    """corpus.num_shards / corpus.shard name one part of the corpus; a sharded run pushes once, after stage=merge."""
    c = cfg.corpus
    problems: list[Problem] = []
    if not isinstance(c.num_shards, int) or c.num_shards < 1:
        problems.append(Problem("corpus.num_shards", c.num_shards, "must be an integer >= 1",
                                "set it to the number of processes the corpus is split over (1: no split)"))
        return problems
    if not isinstance(c.shard, int) or not 0 <= c.shard < c.num_shards:
        problems.append(Problem("corpus.shard", c.shard, f"must lie in 0 .. corpus.num_shards-1 ({c.num_shards - 1})",
                                f"run shards 0 to {c.num_shards - 1}, e.g. corpus.shard=$SLURM_ARRAY_TASK_ID with "
                                f"sbatch --array=0-{c.num_shards - 1}"))
    if c.num_shards > 1 and cfg.stage == "generate" and cfg.generate.push_to_hub:
        problems.append(Problem("generate.push_to_hub", cfg.generate.push_to_hub,
                                f"would be pushed by each of the {c.num_shards} shards, each replacing the repo's data "
                                "with its part", "drop it from the shards and set it on the merge: python -m "
                                "autodata.run stage=merge merge.runs=[...] generate.push_to_hub=ORG/NAME"))
    return problems


def check_merge(cfg: RootConfig, env: Optional[Mapping[str, str]] = None) -> list[Problem]:
    """stage=merge calls no endpoint (``env`` is unused); the runs it names are checked when it reads them (an
    empty merge.runs included, as for eval.datasets)."""
    problems: list[Problem] = []
    runs = cfg.merge.runs
    if not isinstance(runs, list) or not all(isinstance(p, str) and p for p in runs):
        problems.append(Problem("merge.runs", runs, "must be a list of run dirs",
                                "set merge.runs=[runs/big/shard_0,runs/big/shard_1], or merge.runs=[runs/big] for "
                                "the shard_* run dirs in runs/big"))
    if cfg.generate.push_to_hub is not None:
        from autodata.generate.hub import repo_id_problem

        if repo_id_problem(cfg.generate.push_to_hub):
            problems.append(Problem("generate.push_to_hub", cfg.generate.push_to_hub, "must be a hub repo id ORG/NAME",
                                    "set generate.push_to_hub=my-org/my-dataset"))
    _card_license(problems, cfg.generate)
    return problems


PIPELINE_LAUNCHERS = ("local", "slurm")


def check_pipeline(cfg: RootConfig, env: Optional[Mapping[str, str]] = None) -> list[Problem]:
    """How stage=pipeline launches its steps (``env`` is unused; each step checks its own config when it starts)."""
    from pathlib import Path

    from autodata.slurm import PRESETS

    p, s = cfg.pipeline, cfg.pipeline.slurm
    problems: list[Problem] = []
    _choice(problems, "pipeline.launcher", p.launcher, PIPELINE_LAUNCHERS)
    if not isinstance(p.shards, int) or p.shards < 1:
        problems.append(Problem("pipeline.shards", p.shards, "must be >= 1",
                                "set pipeline.shards=1 (no sharding) or the number of corpus parts per generate step"))
    if p.launcher != "slurm":
        return problems
    known = sorted(f.stem for f in PRESETS.glob("*.yaml"))
    keys = {*p.steps, *(step.stage for step in p.steps.values()), "merge"}
    named = [("pipeline.slurm.preset", None, s.preset),
             *((f"pipeline.slurm.presets.{k}", k, v) for k, v in s.presets.items())]
    for key, of, name in named:
        if name not in known:
            problems.append(Problem(key, name, f"names no preset in {PRESETS}", f"use one of {', '.join(known)}"))
        if of is not None and of not in keys:
            problems.append(Problem(key, name, "is keyed by neither a step nor a stage of this pipeline (nor merge)",
                                    f"key it by one of {', '.join(sorted(keys))}"))
    for job in s.serve_jobs:
        if not re.fullmatch(r"[0-9]+", str(job)):
            problems.append(Problem("pipeline.slurm.serve_jobs", job, "must be a SLURM job id",
                                    "pass the ids sbatch printed for the servers, e.g. "
                                    "pipeline.slurm.serve_jobs=[1234]"))
    if not Path(s.script).exists():
        problems.append(Problem("pipeline.slurm.script", s.script, "does not exist here (the directory stage=pipeline "
                                "starts in, which is every job's working directory)",
                                "start the pipeline from the repository root, or give the script's absolute path"))
    return problems


CHECKS = {"generate": check_generate, "train": check_train, "eval": check_eval, "report": check_report,
          "meta_optimize": check_meta, "plan": check_plan, "merge": check_merge, "pipeline": check_pipeline}


def validate(cfg: RootConfig, env: Optional[Mapping[str, str]] = None) -> None:
    """Raise one ConfigError listing every problem the chosen stage would hit.

    ``env``: the environment the stage will run in (run.py passes os.environ), to check that the API key
    variables the stage reads are set; None leaves that out (tests that compose configs without the keys).
    """
    check = CHECKS.get(cfg.stage)
    problems = check_api_key_names(cfg) + (check(cfg, env) if check else [])
    if problems:
        raise ConfigError(problems)
