"""Read back what a stage logged to an offline W&B run, so tests check the logged values themselves.

An offline run keeps its records in ``RUN_DIR/wandb/offline-run-*/run-ID.wandb``:
a 7-byte header (``:W&B``, magic, version), then LevelDB-style log blocks of
32 KiB whose records (checksum, length, type) carry serialized ``Record``
protobufs from ``wandb.proto``.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any, Iterator

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file (starts {data[:8]!r})"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # block trailer too short for a record header: zero padding
            pos += room
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0:  # zero padding up to the next block
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def run_file(run_dir: Path, wait_s: float = 30.0) -> Path:
    """The offline run file of ``run_dir``, once it holds the run's exit record: wandb's service writes the file
    after ``finish()`` returns, so a reader right after it may find only the 7-byte header."""
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    (path,) = (run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    deadline = time.monotonic() + wait_s
    while not any(r.WhichOneof("record_type") == "exit" for r in records(path)):
        assert time.monotonic() < deadline, f"{path} has no exit record after {wait_s} s: the run did not finish"
        time.sleep(0.1)
    # Under load the service may still append the final summary after the exit record: wait until the file
    # stops growing for a moment
    size = -1
    while path.stat().st_size != size and time.monotonic() < deadline:
        size = path.stat().st_size
        time.sleep(0.5)
    return path


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, history rows) of the one offline W&B run in ``run_dir``."""
    path = run_file(run_dir)
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
    return summary, history


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """The run record of the one offline W&B run in ``run_dir``: group, job_type, tags and display name
    (the last record wins: a resumed run writes it again)."""
    path = run_file(run_dir)
    info: dict[str, Any] = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "run":
            run = record.run
            info = {"group": run.run_group, "job_type": run.job_type, "tags": list(run.tags),
                    "name": run.display_name}
    return info
