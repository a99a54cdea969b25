"""Domain registry: ``domain.name`` -> the class that knows its tasks and prompts.

The one list of domain names: validation reads it, and the rest of the code asks the class for its facts
(``grading``, ``has_loop_judge``, ``has_extractor``), so a new domain is a class added here.
"""

from __future__ import annotations

from autodata.config import DomainConfig
from autodata.domains.base import (
    Criterion,
    Domain,
    FailedAttempt,
    Grade,
    OutputFormatError,
    Task,
    TaskFormatError,
)
from autodata.domains.cs import CSDomain
from autodata.domains.legal import LegalDomain
from autodata.domains.principia import PrincipiaDomain
from autodata.errors import lookup

DOMAINS: dict[str, type[Domain]] = {
    "cs": CSDomain,
    "legal": LegalDomain,
    "principia": PrincipiaDomain,
}


def build_domain(cfg: DomainConfig) -> Domain:
    """The domain ``cfg.name`` names; templates are compiled here, once."""
    cls = lookup(DOMAINS, cfg.name, "domain", key="domain.name",
                 hint="add a class to autodata.domains.DOMAINS for a new one")
    return cls(cfg)


__all__ = [
    "DOMAINS",
    "Criterion",
    "Domain",
    "FailedAttempt",
    "Grade",
    "OutputFormatError",
    "Task",
    "TaskFormatError",
    "build_domain",
]
