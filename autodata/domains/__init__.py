"""Domain registry: ``domain.name`` -> the class that knows its tasks and prompts.

The one list of domain names: validation reads it, and the rest of the code asks the class for its facts
(``grading``, ``has_loop_judge``, ``has_extractor``), so a new domain is a class added here, or a folder
(``domain=folder domain.path=PATH``, autodata/domains/folder.py) with no Python at all.
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
from autodata.domains.folder import FolderDomain, FolderDomainError, configured
from autodata.domains.legal import LegalDomain
from autodata.domains.principia import PrincipiaDomain
from autodata.errors import lookup

DOMAINS: dict[str, type[Domain]] = {
    "cs": CSDomain,
    "legal": LegalDomain,
    "principia": PrincipiaDomain,
    # Reads its task format, grading and templates from domain.path
    "folder": FolderDomain,
}


def _registered(cfg: DomainConfig) -> type[Domain]:
    return lookup(DOMAINS, cfg.name, "domain", key="domain.name",
                  hint="add a class to autodata.domains.DOMAINS for a new one")


def domain_class(cfg: DomainConfig) -> type[Domain]:
    """The class ``cfg`` builds, for code that asks a domain's facts (``grading``, ``challengers_per_round``)
    before building one: the registered class, or for domain=folder one whose attributes are the folder's."""
    cls = _registered(cfg)
    if cls is FolderDomain:
        return FolderDomain.for_spec(configured(cfg)[1])
    return cls


def resolve_config(cfg: DomainConfig) -> DomainConfig:
    """``cfg`` as the domain will run it: for domain=folder, the folder's rubric limits, quality rules and
    acceptance applied (``folder_spec.configure``, which also checks domain.yaml and the templates); other
    domains unchanged. run.py calls it once, before validation, so every stage reads one acceptance rule from
    ``cfg.domain``, and a bad folder exits 2 there."""
    resolve = getattr(DOMAINS.get(cfg.name), "resolve_config", None)
    return resolve(cfg) if resolve is not None else cfg


def build_domain(cfg: DomainConfig) -> Domain:
    """The domain ``cfg.name`` names; templates are compiled here, once."""
    return _registered(cfg)(cfg)


__all__ = [
    "DOMAINS",
    "Criterion",
    "Domain",
    "FailedAttempt",
    "FolderDomain",
    "FolderDomainError",
    "Grade",
    "OutputFormatError",
    "Task",
    "TaskFormatError",
    "build_domain",
    "domain_class",
    "resolve_config",
]
