"""``Secret``: a value that must never reach a log line, a traceback or a written file (an API key, the key of a
served model's endpoints file). Read it with ``.value`` at the one place it is sent.
"""

from __future__ import annotations


class Secret:
    """A secret string, kept out of ``repr()`` and ``str()`` so it never reaches a log line or a traceback's locals.

    >>> key = Secret("sk-abc")
    >>> key, f"{key}", key.value
    (Secret('***'), "Secret('***')", 'sk-abc')
    """

    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value

    def __repr__(self) -> str:
        return "Secret('***')"
