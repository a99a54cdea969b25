"""What the Hugging Face hub accepts as a dataset repo id (``generate.push_to_hub=ORG/NAME``), written once.

Shared: validation checks the config with it before a run starts, and the generate stage checks it again (the
config may come from elsewhere) and uses it to tell a hub dataset name from a local path.
"""

from __future__ import annotations

import re
from typing import Optional

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def repo_id_problem(repo_id: str) -> Optional[str]:
    """Why ``repo_id`` cannot name a hub dataset repo, or None.

    >>> repo_id_problem("my-org/cs_agentic-v1") is None
    True
    >>> repo_id_problem("cs_agentic")
    "generate.push_to_hub ('cs_agentic') must be ORG/NAME (e.g. my-org/cs_agentic); add the organisation or user"
    """
    if _REPO_ID.match(repo_id):
        return None
    return (f"generate.push_to_hub ({repo_id!r}) must be ORG/NAME (e.g. my-org/cs_agentic); "
            "add the organisation or user")
