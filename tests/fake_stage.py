"""Stands in for ``python -m autodata.run`` in pipeline tests: it records its command line, writes
``run_info.json`` as a real stage does (finished unless told to fail) and exits 5 in the step named by
FAKE_STAGE_FAIL. Used as ``pipeline.launchers`` so the pipeline's order, skips and resume run in seconds."""

import json
import os
import sys
from pathlib import Path

args = sys.argv[1:]
run_dir = Path(next(a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")))
run_dir.mkdir(parents=True, exist_ok=True)
with open(os.environ["FAKE_STAGE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
failing = run_dir.name == os.environ.get("FAKE_STAGE_FAIL")
start = {"argv": args} if failing else {"argv": args, "finished_at": "2026-01-01T00:00:00"}
(run_dir / "run_info.json").write_text(json.dumps({"starts": [start]}))
sys.exit(5 if failing else 0)
