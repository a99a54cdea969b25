"""What every run writes into its run dir besides its outputs (resolved config and provenance), and the JSONL
helpers its outputs are written, read and resumed with."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from omegaconf import OmegaConf

from autodata.config import RootConfig, endpoint_for, to_typed

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty}


def write_provenance(cfg: RootConfig, run_dir: Path, argv: list[str] | None = None,
                     overrides: list[str] | None = None) -> None:
    """Resolved config and git commit; API keys never appear (only the names of their env vars)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    info = {
        "git": git_commit(),
        "argv": argv if argv is not None else sys.argv,
        # The Hydra overrides of this run: in a sweep job (submitit) argv is the launcher's, these are the point's
        "overrides": overrides,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
    # A resumed run keeps the history of its starts.
    path = run_dir / "run_info.json"
    history = []
    if path.exists():
        try:
            history = json.loads(path.read_text()).get("starts", [])
        except (json.JSONDecodeError, AttributeError):
            history = []
    path.write_text(json.dumps({"starts": history + [info]}, indent=2))


def producer_config(path: Path) -> Optional[RootConfig]:
    """The config of the run that wrote ``path`` (a run dir, a file in it, or its dataset/ folder); None when
    ``path`` was not written by a run (a hand-made or downloaded set)."""
    for folder in (path, path.parent, path.parent.parent):
        if (folder / "config.yaml").exists() and (folder / "run_info.json").exists():
            try:
                return to_typed(OmegaConf.load(folder / "config.yaml"))
            except Exception:  # noqa: BLE001 - an unreadable config is not an input's identity; nothing to compare
                return None
    return None


def input_conflicts(path: Path, cfg: RootConfig, trained_model: Optional[str] = None) -> list[str]:
    """How the run that made an input differs from this one where it matters: the domain, and, for data that
    will be trained on, the model it was made for (its weak solver) against ``trained_model``.

    Empty when they agree, when ``path`` came from no run, or when ``cfg.check_inputs`` is false.
    """
    other = producer_config(path) if cfg.check_inputs else None
    if other is None:
        return []
    problems = []
    if other.domain.name != cfg.domain.name:
        problems.append(f"domain.name is {other.domain.name!r} there and {cfg.domain.name!r} here")
    if trained_model is not None and other.stage in ("generate", "merge"):
        made_for = endpoint_for(other.models, "weak_solver").model
        if made_for != trained_model:
            problems.append(f"the data was made for weak solver {made_for!r}, and this run trains {trained_model!r}")
    if problems:
        problems.append(f"(that run's experiment: {other.experiment.name or '(none)'}; this one's: "
                        f"{cfg.experiment.name or '(none)'})")
    return problems


def mark_finished(run_dir: Path) -> None:
    """Record that the latest start of this run dir returned normally (stage=pipeline skips such steps)."""
    path = run_dir / "run_info.json"
    info = json.loads(path.read_text())
    info["starts"][-1]["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path.write_text(json.dumps(info, indent=2))


def finished(run_dir: Path) -> bool:
    """Did the latest start of this run dir finish? False for a missing, unreadable or interrupted one."""
    try:
        starts = json.loads((run_dir / "run_info.json").read_text()).get("starts", [])
    except (OSError, json.JSONDecodeError, AttributeError):
        return False
    return bool(starts) and bool(starts[-1].get("finished_at"))


class JsonlWriter:
    """Append-only JSONL, flushed and fsynced per row so a kill loses at most the row being written."""

    def __init__(self, path: Path):
        self.path = path
        torn = _lacks_final_newline(path)
        self._fh = path.open("a", encoding="utf-8")
        if torn:
            # A kill mid-write left a last line without its newline: the first row appended here would be glued
            # onto it and both would be unreadable. Ending the torn line first costs that one row only.
            self._fh.write("\n")

    def write(self, row: dict[str, Any]) -> None:
        self.write_many([row])

    def write_many(self, rows: Iterable[dict[str, Any]]) -> None:
        """Several rows, one flush and fsync (a kill loses at most these rows, never an earlier one)."""
        self._fh.write("".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def _lacks_final_newline(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


def jsonl_lines(path: Path) -> Iterator[tuple[int, int, bytes, Optional[dict[str, Any]]]]:
    """(line number, byte offset of the line, raw line, its row or None when the line is not a JSON object) for
    each non-blank line; nothing when the file does not exist."""
    if not path.exists():
        return
    offset = 0
    # Bytes, decoded line by line: one damaged byte makes its line unreadable, not the whole file.
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                row = None
            yield line_no, start, raw, row if isinstance(row, dict) else None


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file. An unreadable line (torn by a kill mid-write, or damaged) is skipped with a
    warning naming the file and line; before a run rewrites one of its own files it reads it with
    ``salvage_jsonl``, which keeps such lines in a side file instead."""
    for line_no, _, _, row in jsonl_lines(path):
        if row is None:
            log.warning("%s line %d is not a JSON object (torn by a kill, or damaged); skipped", path, line_no)
            continue
        yield row


def salvage_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's own JSONL file, with every unreadable line moved out of it first.

    Resume rewrites a run's files from the rows it could read, so an unreadable line would be gone for good.
    Each one is appended instead to ``<file>.corrupt`` next to it, as a JSON object with its line number, the
    time it was moved and its text (bytes that are not UTF-8 kept as ``\\udcXX`` escapes, so nothing is lost),
    a warning names the file and the lines, and the file is rewritten without them. Deciding what the lost
    rows held (and redoing it) is the caller's job.
    """
    rows: list[dict[str, Any]] = []
    bad: list[tuple[int, bytes]] = []
    for line_no, _, raw, row in jsonl_lines(path):
        if row is None:
            bad.append((line_no, raw))
        else:
            rows.append(row)
    if not bad:
        return rows
    side = path.with_name(path.name + ".corrupt")
    moved_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    # Written (and synced) before the rewrite: a kill in between leaves a line in both files, never in neither.
    with side.open("a", encoding="utf-8") as fh:
        for line_no, raw in bad:
            text = raw.rstrip(b"\r\n").decode("utf-8", errors="surrogateescape")
            fh.write(json.dumps({"line": line_no, "moved_at": moved_at, "text": text}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    rewrite_jsonl(path, rows)
    shown = ", ".join(str(n) for n, _ in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
    log.warning("%s: %d unreadable line(s) (line %s: torn by a kill, or damaged) moved to %s", path, len(bad),
                shown, side)
    return rows


def rewrite_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Atomically replace a JSONL file (write a temp file, then rename).

    Rewrite a run's own file only from rows read with ``salvage_jsonl``: ``read_jsonl`` skips unreadable lines,
    and a rewrite from its rows would delete them.
    """
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
