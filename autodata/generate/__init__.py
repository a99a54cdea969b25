"""The generate stage: Agentic Self-Instruct and the CoT Self-Instruct baseline.

Its public API, the only names another stage imports (``from autodata.generate import ...``):

- ``run(cfg, run_dir)``: ``stage=generate``, with its exit codes (``stage.py`` lists them);
- ``generate(cfg, run_dir, llm=None)``: the same work without exit codes, returning the stats (tests inject a
  scripted LLM);
- ``score_documents(cfg, run_dir, docs, llm)``: the loop on given documents with the caller's LLM and no
  dataset export (the meta-optimizer scores a harness variant with it);
- ``GenerateAborted``: an endpoint or the setup stopped the run;
- ``check_generate(cfg, env=None)``: the stage's input checks (the meta-optimizer checks its knobs with them).

Each is imported on first use: importing the package (as ``import autodata.generate.card`` does) stays as cheap
as an empty one, not the stage's ~0.4 s of imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autodata.generate.checks import check_generate
    from autodata.generate.stage import GenerateAborted, generate, run, score_documents

# name -> the module that defines it
_PUBLIC = {"run": "autodata.generate.stage", "generate": "autodata.generate.stage",
           "score_documents": "autodata.generate.stage", "GenerateAborted": "autodata.generate.stage",
           "check_generate": "autodata.generate.checks"}

__all__ = ["GenerateAborted", "check_generate", "generate", "run", "score_documents"]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        # AttributeError (not KeyError): ``from autodata.generate import card`` falls back to the submodule
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value
