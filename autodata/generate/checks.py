"""Input checks of the generate and merge stages (``stage=generate``, ``stage=merge``), beside the stages.

validation.validate() finds them through the stage registry (autodata/stages.py ``checks``); what several stages
check alike (endpoints, templates, API key names) stays in autodata/validation.py.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

# The registries are the lists of valid names: a new policy, corpus source, logger or domain needs no change here
from autodata.acceptance import POLICIES
from autodata.config import GenerateConfig, RootConfig
from autodata.corpus import LOADERS
from autodata.domains import DOMAINS, Domain, domain_class
from autodata.generate.recorder import PROMPT_MODES
from autodata.hub_ids import repo_id_problem
from autodata.tracking import LOGGERS
from autodata.validation import (
    Problem,
    check_models,
    check_templates,
    methods_of,
    require_choice,
    require_positive,
    require_unit,
)

# Not a registry: the loop branches on each filter by name (autodata/generate/loop.py, cot_filter)
KNOWN_COT_FILTERS = ("none", "answer_consistency", "rip")


def _domains_where(has: Callable[[type[Domain]], bool]) -> list[str]:
    """Registered domain names whose class has a property, for hints that name the alternatives."""
    return [name for name, cls in sorted(DOMAINS.items()) if has(cls)]


def _domain_class(cfg: RootConfig) -> Optional[type[Domain]]:
    """The class of cfg's domain (a folder domain's, read from its folder), or None for a name no domain has."""
    return domain_class(cfg.domain) if cfg.domain.name in DOMAINS else None


def _threshold_policies() -> list[str]:
    """Registered policies that decide without a loop judge.

    >>> _threshold_policies()
    ['cs_paper', 'cs_deployed', 'verifiable']
    """
    return [name for name, cls in POLICIES.items() if not cls.needs_loop_judge]


def _card_license(problems: list[Problem], gen: GenerateConfig) -> None:
    """The dataset card's license: the hub wants a name and the license's text for ``other``."""
    if gen.license == "other":
        for key in ("license_name", "license_link"):
            if not getattr(gen, key):
                problems.append(Problem(f"generate.{key}", getattr(gen, key), "is required with generate.license=other",
                                        f"set generate.{key} (name: lowercase with dashes; link: a URL or LICENSE in "
                                        "the repo), or use a hub license id such as generate.license=cc-by-4.0"))


def _push_to_hub(problems: list[Problem], gen: GenerateConfig) -> None:
    """generate and merge both push: the repo id is checked before either runs (autodata/hub_ids.py)."""
    if gen.push_to_hub is not None and repo_id_problem(gen.push_to_hub):
        problems.append(Problem("generate.push_to_hub", gen.push_to_hub, "must be a hub repo id ORG/NAME",
                                "set generate.push_to_hub=my-org/my-dataset"))


def check_cot_filter(cfg: RootConfig) -> list[Problem]:
    m = cfg.method
    problems: list[Problem] = []
    require_choice(problems, "method.cot_filter", m.cot_filter, KNOWN_COT_FILTERS)
    require_unit(problems, "method.rip_min_score", m.rip_min_score)
    if m.cot_filter == "none":
        return problems
    if m.name != "cot":
        problems.append(Problem("method.cot_filter", m.cot_filter, "applies to method=cot only",
                                "set method=cot, or method.cot_filter=none (the agentic loop filters by its gap rule)"))
    if not m.score_solvers:
        problems.append(Problem("method.cot_filter", m.cot_filter, "needs the strong solver's runs, but "
                                "method.score_solvers is false", "set method.score_solvers=true"))
    domain = _domain_class(cfg)
    if m.cot_filter == "answer_consistency" and (domain is None or domain.grading != "equivalence"):
        verifiable = " or ".join(f"domain={n}" for n in _domains_where(lambda d: d.grading == "equivalence"))
        problems.append(Problem("method.cot_filter", m.cot_filter,
                                f"needs verifiable answers, but domain={cfg.domain.name} is rubric-graded",
                                f"use method.cot_filter=rip for rubric domains, or {verifiable}"))
    return problems


def check_generate(cfg: RootConfig, env: Optional[Mapping[str, str]] = None) -> list[Problem]:
    problems: list[Problem] = []
    require_choice(problems, "domain.name", cfg.domain.name, tuple(sorted(DOMAINS)))
    require_choice(problems, "method.name", cfg.method.name, methods_of(cfg.domain.name))
    problems.extend(check_cot_filter(cfg))
    require_choice(problems, "corpus.source", cfg.corpus.source, tuple(LOADERS))
    require_choice(problems, "logger", cfg.logger, tuple(LOGGERS))

    acc = cfg.domain.acceptance
    require_choice(problems, "domain.acceptance.policy", acc.policy, tuple(sorted(POLICIES)))
    policy = POLICIES.get(acc.policy)
    if policy is not None and policy.needs_loop_judge:
        domain = _domain_class(cfg)
        if domain is not None and not domain.has_loop_judge:
            problems.append(Problem("domain.acceptance.policy", acc.policy,
                                    f"leaves the verdict to a loop judge, but domain={cfg.domain.name} has none",
                                    f"pick a threshold policy ({', '.join(_threshold_policies())}) or a domain "
                                    f"with a loop judge ({', '.join(_domains_where(lambda d: d.has_loop_judge))})"))
        if acc.policy == "loop_judge" and not acc.require_loop_judge_accept:
            problems.append(Problem("domain.acceptance.require_loop_judge_accept", False,
                                    "must be true with policy=loop_judge, which has no threshold: every task "
                                    "would be accepted", "set it to true, or policy=legal_gap for the gap rule alone"))
    for name in ("strong_min", "weak_max", "weak_run_max", "strong_max"):
        require_unit(problems, f"domain.acceptance.{name}", getattr(acc, name))
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
        require_positive(problems, f"generate.{key}", getattr(gen, key))
    if gen.challengers_per_round is not None:
        require_positive(problems, "generate.challengers_per_round", gen.challengers_per_round)
    require_positive(problems, "generate.heldout_size", gen.heldout_size, allow_zero=True)
    require_choice(problems, "generate.prompts_in_rounds", gen.prompts_in_rounds, PROMPT_MODES)
    require_unit(problems, "generate.heldout_max_fraction", gen.heldout_max_fraction)
    if gen.target_accepted is not None:
        require_positive(problems, "generate.target_accepted", gen.target_accepted, allow_zero=True)
    _push_to_hub(problems, gen)
    _card_license(problems, gen)
    if cfg.corpus.limit is not None:
        require_positive(problems, "corpus.limit", cfg.corpus.limit)
    problems.extend(check_shards(cfg))
    if cfg.corpus.source != "pydoc" and not cfg.corpus.path:
        problems.append(Problem("corpus.path", cfg.corpus.path, f"is required for corpus.source={cfg.corpus.source}",
                                "set corpus.path to the file, folder or dataset"))
    problems.extend(check_templates(cfg))
    problems.extend(check_models(cfg, env=env))
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
    _push_to_hub(problems, cfg.generate)
    _card_license(problems, cfg.generate)
    return problems
