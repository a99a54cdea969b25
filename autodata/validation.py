"""Validate a typed config once and report every problem in one error.

Each line names the key path, the value found, the rule, and the fix:

    acceptance.strong_min (0.4) must be >= acceptance.weak_max (0.5); raise strong_min or lower weak_max
"""

from __future__ import annotations

from dataclasses import dataclass

from autodata.config import ROLES, RootConfig, endpoint_for


@dataclass
class Problem:
    key: str
    value: object
    rule: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key} ({self.value!r}) {self.rule}; {self.fix}"


class ConfigError(ValueError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"the configuration has {len(problems)} problem(s):\n{lines}")


KNOWN_BACKENDS = ("local", "openai", "vllm")
KNOWN_DOMAINS = ("cs", "legal", "principia")
KNOWN_METHODS = ("agentic", "cot")
KNOWN_POLICIES = ("cs_paper", "cs_deployed", "legal", "verifiable")
KNOWN_SOURCES = ("pydoc", "folder", "jsonl", "parquet", "hf")
KNOWN_LOGGERS = ("none", "wandb")


def _choice(problems: list[Problem], key: str, value: object, known: tuple[str, ...]) -> None:
    if value not in known:
        problems.append(Problem(key, value, f"must be one of {', '.join(known)}", f"set {key} to one of them"))


def _positive(problems: list[Problem], key: str, value: object, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        problems.append(Problem(key, value, f"must be {bound}", f"set {key} to a number {bound}"))


def _unit(problems: list[Problem], key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        problems.append(Problem(key, value, "must lie in [0, 1] (scores are clipped to [0, 1])", f"set {key} between 0 and 1"))


def check_generate(cfg: RootConfig) -> list[Problem]:
    problems: list[Problem] = []
    _choice(problems, "domain.name", cfg.domain.name, KNOWN_DOMAINS)
    _choice(problems, "method.name", cfg.method.name, KNOWN_METHODS)
    _choice(problems, "corpus.source", cfg.corpus.source, KNOWN_SOURCES)
    _choice(problems, "logger", cfg.logger, KNOWN_LOGGERS)

    acc = cfg.domain.acceptance
    _choice(problems, "domain.acceptance.policy", acc.policy, KNOWN_POLICIES)
    for name in ("strong_min", "weak_max", "min_gap", "weak_run_max", "strong_max"):
        _unit(problems, f"domain.acceptance.{name}", getattr(acc, name))
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
    _positive(problems, "generate.heldout_size", gen.heldout_size, allow_zero=True)
    _unit(problems, "generate.heldout_max_fraction", gen.heldout_max_fraction)
    if cfg.corpus.limit is not None:
        _positive(problems, "corpus.limit", cfg.corpus.limit)
    if cfg.corpus.source != "pydoc" and not cfg.corpus.path:
        problems.append(Problem("corpus.path", cfg.corpus.path, f"is required for corpus.source={cfg.corpus.source}",
                                "set corpus.path to the file, folder or dataset"))
    problems.extend(check_models(cfg))
    return problems


def check_models(cfg: RootConfig) -> list[Problem]:
    problems: list[Problem] = []
    unknown_roles = sorted(set(cfg.models.roles) - set(ROLES))
    for role in unknown_roles:
        problems.append(Problem(f"models.roles.{role}", role, f"is not a role (roles: {', '.join(ROLES)})",
                                "fix the spelling or remove it"))
    for role in ROLES:
        ep = endpoint_for(cfg.models, role)
        prefix = f"models.roles.{role}"
        _choice(problems, f"{prefix}.backend", ep.backend, KNOWN_BACKENDS)
        if ep.backend == "openai" and not ep.base_urls:
            problems.append(Problem(f"{prefix}.base_url", None, "is required for the openai backend",
                                    "set models.base_url=http://HOST:PORT/v1 (all roles) or models.roles.<role>.base_url"))
        if ep.backend == "openai" and ep.model in (None, "", "embedded"):
            problems.append(Problem(f"{prefix}.model", ep.model, "must name the model the server serves",
                                    "set models.model=NAME (as listed by GET /v1/models)"))
        for key in ("max_concurrency", "max_tokens", "timeout_s", "batch_size", "max_document_tokens"):
            _positive(problems, f"{prefix}.{key}", getattr(ep, key))
        _positive(problems, f"{prefix}.max_retries", ep.max_retries, allow_zero=True)
        if not 0.0 <= float(ep.temperature) <= 2.0:
            problems.append(Problem(f"{prefix}.temperature", ep.temperature, "must lie in [0, 2]", "pick a sampling temperature in [0, 2]"))
        if not 0.0 < float(ep.top_p) <= 1.0:
            problems.append(Problem(f"{prefix}.top_p", ep.top_p, "must lie in (0, 1]", "set top_p in (0, 1]"))
    return problems


CHECKS = {"generate": check_generate}


def validate(cfg: RootConfig) -> None:
    """Raise one ConfigError listing every problem the chosen stage would hit."""
    check = CHECKS.get(cfg.stage)
    problems = check(cfg) if check else []
    if problems:
        raise ConfigError(problems)
