"""Input checks of the meta-optimizer (``stage=meta_optimize``), beside the stage.

It runs the generate loop, so generate's rules apply too; validation.validate() finds check_meta through the
stage registry (autodata/stages.py ``checks``).
"""

from __future__ import annotations

from typing import Mapping, Optional

from autodata.config import META_ROLES, RootConfig
from autodata.generate import check_generate
from autodata.validation import Problem, check_models, require_choice, require_positive, require_unit

META_SCORES = ("pass_rate_rounds", "pass_rate", "mean_gap")
META_PARENT_REEVALS = ("fresh", "cached", "none")


def check_meta(cfg: RootConfig, env: Optional[Mapping[str, str]] = None) -> list[Problem]:
    """stage=meta_optimize runs the generate loop (its rules apply) and calls the analyzer and implementer."""
    problems = check_generate(cfg, env)
    m = cfg.meta
    for key in ("iterations", "concurrency", "validation_documents", "minibatch_size", "history_chars",
                "trajectory_chars"):
        require_positive(problems, f"meta.{key}", getattr(m, key))
    require_positive(problems, "meta.train_documents", m.train_documents)
    require_positive(problems, "meta.temperature", m.temperature)
    require_choice(problems, "meta.score", m.score, META_SCORES)
    require_choice(problems, "meta.parent_reeval", m.parent_reeval, META_PARENT_REEVALS)
    if isinstance(m.minibatch_size, int) and isinstance(m.train_documents, int) and m.minibatch_size > m.train_documents:
        problems.append(Problem("meta.minibatch_size", m.minibatch_size,
                                f"must be <= meta.train_documents ({m.train_documents}), the documents it is drawn from",
                                "lower meta.minibatch_size or raise meta.train_documents"))
    if cfg.method.name != "agentic":
        problems.append(Problem("method.name", cfg.method.name, "must be agentic for stage=meta_optimize (it "
                                "evolves the agentic loop's harness; a variant's challenger_cot still applies to "
                                "CoT runs that use it)", "drop method=cot"))
    for key in ("min_weak_length_ratio", "max_weak_share_rise", "max_strong_drop"):
        require_unit(problems, f"meta.{key}", getattr(m, key))
    problems.extend(check_models(cfg, roles=META_ROLES, env=env))
    return problems
