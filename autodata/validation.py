"""Validate a typed config once and report every problem in one error.

Each line names the key path, the value found, the rule, and the fix:

    acceptance.strong_min (0.4) must be >= acceptance.weak_max (0.5); raise strong_min or lower weak_max

Each stage's own checks live beside the stage (its ``checks`` entry in autodata/stages.py, e.g.
autodata/generate/checks.py); this module holds what several stages check alike (endpoints, API key names,
templates), the helpers the checks share, and validate(), which runs the chosen stage's checks.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

# Valid domain and backend names are read from their registries at check time (no second list here), so
# registering a class is all a new domain or backend needs.
from autodata.backends import BACKENDS
from autodata.config import META_ROLES, ROLES, SCREEN_ROLE, RootConfig, endpoint_for, is_judge_role
from autodata.domains import DOMAINS, Domain
# The error types live in autodata/errors.py (the corpus raises them without importing validation); imported
# from here too by callers written before the move
from autodata.errors import ConfigError, InputError, Problem  # noqa: F401
from autodata.reasoning import TEMPLATE_SWITCH
from autodata.stages import STAGES, resolve_checks
from autodata.variants import VariantError, protected_overrides, read_folder


class Hidden:
    """Stands in a Problem for a value that must not be shown or stored (a pasted API key)."""

    def __init__(self, value: str):
        self.chars = len(value)

    def __repr__(self) -> str:
        return f"<not shown: {self.chars} characters>"


# What an environment variable's name may hold; anything else in api_key_env is most likely the key itself
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# The rules every stage's checks share: each appends a Problem naming the key, the rule and the fix.
def require_choice(problems: list[Problem], key: str, value: object, known: tuple[str, ...]) -> None:
    if value not in known:
        problems.append(Problem(key, value, f"must be one of {', '.join(known)}", f"set {key} to one of them"))


def require_positive(problems: list[Problem], key: str, value: object, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        problems.append(Problem(key, value, f"must be {bound}", f"set {key} to a number {bound}"))


def require_unit(problems: list[Problem], key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        problems.append(Problem(key, value, "must lie in [0, 1] (scores are clipped to [0, 1])", f"set {key} between 0 and 1"))


def methods_of(domain: str) -> tuple[str, ...]:
    """The generation methods (``method.name``) a domain offers: its class's ``METHODS``, the one list of them
    (the base class's for an unknown domain, which is reported on its own).

    >>> methods_of("cs")
    ('agentic', 'cot')
    """
    return tuple(DOMAINS.get(domain, Domain).METHODS)


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
                                "or serve the evaluated model (sbatch slurm/serve.sbatch weak EVAL_MODEL DIR)"))
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
        require_choice(problems, f"{prefix}.backend", ep.backend, tuple(sorted(BACKENDS)))
        # A served role may have no live replica yet: the stage waits for one
        if ep.backend == "openai" and not ep.base_urls and role not in served:
            problems.append(Problem(f"{prefix}.base_url", None, "is required for the openai backend",
                                    "set models.base_url=http://HOST:PORT/v1 (all roles) or models.roles.<role>.base_url"))
        if ep.backend == "openai" and ep.model in (None, "", "embedded"):
            problems.append(Problem(f"{prefix}.model", ep.model, "must name the model the server serves",
                                    "set models.model=NAME (as listed by GET /v1/models)"))
        for key in ("max_concurrency", "max_tokens", "timeout_s", "batch_size"):
            require_positive(problems, f"{prefix}.{key}", getattr(ep, key))
        # null derives the document cap from the context length, which null asks the backend for
        for key in ("max_document_tokens", "context_length"):
            if getattr(ep, key) is not None:
                require_positive(problems, f"{prefix}.{key}", getattr(ep, key))
        require_positive(problems, f"{prefix}.max_retries", ep.max_retries, allow_zero=True)
        require_positive(problems, f"{prefix}.startup_wait_s", ep.startup_wait_s, allow_zero=True)
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


def validate(cfg: RootConfig, env: Optional[Mapping[str, str]] = None) -> None:
    """Raise one ConfigError listing every problem the chosen stage would hit.

    ``env``: the environment the stage will run in (run.py passes os.environ), to check that the API key
    variables the stage reads are set; None leaves that out (tests that compose configs without the keys).
    The stage's own checks are the function its registry entry names (``Stage.checks``).
    """
    problems = check_api_key_names(cfg)
    if cfg.stage in STAGES:
        problems += resolve_checks(cfg.stage)(cfg, env)
    if problems:
        raise ConfigError(problems)
