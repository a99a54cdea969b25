"""The error types every layer shares, and ``lookup``: a name in a registry, or an error that lists the known ones.

Kept apart from validation so that modules validation reads (the corpus, the registries) can raise them without
importing validation back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, TypeVar

V = TypeVar("V")


@dataclass
class Problem:
    """One broken rule of a config: the key path, the value found, the rule, and the fix."""

    key: str
    value: object
    rule: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key} ({self.value!r}) {self.rule}; {self.fix}"


class ConfigError(ValueError):
    """Every problem of a config at once; run.py exits 2 with it before any stage starts."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"the configuration has {len(problems)} problem(s):\n{lines}")


class InputError(ValueError):
    """An input the config names (a corpus, a data file) cannot be used; found by a stage once it reads it.
    run.py exits 2, as for a config error: the fix is the user's, and rerunning as is would fail again."""


class UnknownName(ValueError):
    """A name that no registry entry has (a stage, domain, backend, policy, corpus source)."""


def lookup(registry: Mapping[str, V], name: object, kind: str, *, key: Optional[str] = None, hint: str = "",
           error: type[Exception] = UnknownName) -> V:
    """``registry[name]``, or ``error`` saying what was asked for and listing the names the registry knows.

    ``key`` is the config key the name came from (shown as ``key='name'``), ``hint`` what to do besides picking a
    known name, and ``error`` the class callers already catch (a subclass of ValueError keeps run.py's exit 2).

    >>> lookup({"cs": 1, "legal": 2}, "legal", "domain")
    2
    >>> lookup({"legal": 2, "cs": 1}, "cz", "domain")
    Traceback (most recent call last):
    ...
    autodata.errors.UnknownName: unknown domain 'cz'; known: cs, legal
    >>> lookup({"cs": 1}, "cz", "domain", key="domain.name", hint="add a class to DOMAINS for a new one")
    Traceback (most recent call last):
    ...
    autodata.errors.UnknownName: unknown domain domain.name='cz'; known: cs; add a class to DOMAINS for a new one
    """
    try:
        return registry[name]  # type: ignore[index]
    except (KeyError, TypeError):
        pass
    shown = f"{key}={name!r}" if key else repr(name)
    known = ", ".join(sorted(registry)) or "none registered"
    raise error(f"unknown {kind} {shown}; known: {known}" + (f"; {hint}" if hint else ""))
