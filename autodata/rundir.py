"""What every run writes into its run dir besides its outputs (resolved config and provenance), the lock that
keeps one process (or one multi-process launch) per run dir, the atomic writer of its small state files, and the
JSONL helpers its outputs are written, read and resumed with."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

from omegaconf import OmegaConf

from autodata.config import RootConfig, endpoint_for, to_typed

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]

LOCK_FILE = ".lock"
# How long a start keeps trying before it is refused: a holder writes its details just after it takes the lock,
# a launch's first rank turns the lock shared just after it takes it, and an earlier holder may be exiting
LOCK_SETTLE_S = 2.0
# flock refused by the filesystem (Lustre mounted without -o flock, some FUSE mounts)
_NO_FLOCK = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL)


class RunDirBusy(RuntimeError):
    """Another process, or another launch, works in the run dir; the message names it and says what to do."""


@dataclass
class RunDirLock:
    path: Path
    fd: int
    holder: dict[str, Any]

    def release(self) -> None:
        """Give the lock back before the process ends (the end of the process gives it back anyway)."""
        _HELD.pop(self.path.parent.resolve(), None)
        os.close(self.fd)


# The locks this process holds, by run dir: an open file is a held lock, so they stay open until the process ends
_HELD: dict[Path, RunDirLock] = {}


def launch_id(env: Mapping[str, str]) -> Optional[str]:
    """The multi-process launch (torchrun, accelerate launch, deepspeed) this process is one rank of; None for a
    process on its own.

    Every rank of a launch sees the same rendezvous: MASTER_ADDR, MASTER_PORT and TORCHELASTIC_RUN_ID. A loopback
    MASTER_ADDR (a one-node launch) gets the host name, so one-node launches on two hosts of a shared filesystem
    are not taken for one.

    >>> launch_id({"WORLD_SIZE": "16", "MASTER_ADDR": "n7", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "42"})
    'n7:29500/42'
    >>> launch_id({"WORLD_SIZE": "1", "MASTER_ADDR": "n7", "MASTER_PORT": "29500"}) is None
    True
    """
    addr, port = env.get("MASTER_ADDR"), env.get("MASTER_PORT")
    if not addr or not port or not env.get("WORLD_SIZE", "1").isdigit() or int(env.get("WORLD_SIZE", "1")) < 2:
        return None
    if addr == "localhost" or addr == "::1" or addr.startswith("127."):
        addr = f"{platform.node()}/{addr}"
    return f"{addr}:{port}/{env.get('TORCHELASTIC_RUN_ID', '')}"


def lock_run_dir(run_dir: Path, env: Optional[Mapping[str, str]] = None) -> Optional[RunDirLock]:
    """Hold ``<run dir>/.lock`` for the rest of this process, or raise RunDirBusy naming its holder.

    The lock is the kernel's (fcntl.flock), dropped when the process ends however it ends, kill -9 included, so a
    resume after a crash needs no cleanup; the file stays, and what it says (the holder's pid, host, start time
    and command) counts only while it is locked. A process on its own holds it exclusively. The ranks of one
    launch (``launch_id``) hold it shared: the first to arrive takes it and records the launch, the others join
    only a lock whose recorded launch is theirs, and it is held until the last of them exits. None, with a
    warning, where the filesystem has no flock.
    """
    run_dir = Path(run_dir)
    if run_dir.resolve() in _HELD:
        # Hydra's basic launcher runs a sweep's jobs in one process; two of them may name one dir
        return _HELD[run_dir.resolve()]
    env = os.environ if env is None else env
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    me = {"pid": os.getpid(), "host": platform.node(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
          "command": shlex.join(sys.orig_argv),
          "launch": launch_id(env), "rank": env.get("RANK")}
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        held = _acquire(fd, path, me)
    except BaseException:
        os.close(fd)
        raise
    if not held:
        os.close(fd)
        return None
    _HELD[run_dir.resolve()] = RunDirLock(path, fd, me)
    return _HELD[run_dir.resolve()]


def _acquire(fd: int, path: Path, me: dict[str, Any]) -> bool:
    deadline = time.monotonic() + LOCK_SETTLE_S
    holder = None
    while True:
        try:
            if _flock(fd, fcntl.LOCK_EX):
                _write_holder(fd, me)
                # A launch's first rank turns the lock shared, for the other ranks to join
                if me["launch"] is None or _flock(fd, fcntl.LOCK_SH):
                    return True
            else:
                holder = read_lock_holder(path)
                if me["launch"] and holder and holder.get("launch") == me["launch"] and _flock(fd, fcntl.LOCK_SH):
                    return True
        except OSError as err:
            if err.errno not in _NO_FLOCK:
                raise
            log.warning("%s: this filesystem refuses file locks (%s); nothing keeps a second process out of %s, "
                        "so start one process per run dir", path, os.strerror(err.errno), path.parent)
            return False
        # Not yet: the holder may have taken it a moment ago and not written its details (what the file says is
        # then an earlier holder's), a rank of this launch may be turning it shared, or the holder may be exiting
        if time.monotonic() > deadline:
            raise RunDirBusy(busy_message(path, holder))
        time.sleep(0.02)


def _flock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _write_holder(fd: int, holder: dict[str, Any]) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    os.fsync(fd)


def read_lock_holder(path: Path) -> Optional[dict[str, Any]]:
    """What a run dir's lock file says about its holder; None when it says nothing readable."""
    try:
        holder = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and "pid" in holder else None


def busy_message(path: Path, holder: Optional[dict[str, Any]]) -> str:
    run_dir = path.parent
    if holder is None:
        return (f"{run_dir} is in use by another process (its lock, {path}, is held, and the holder has not written "
                f"who it is). Two processes in one run dir would write the same files, so this one stopped and "
                f"changed nothing. Find the holder with `fuser -v {path}` on the machines that share this folder; "
                f"wait for it to finish or stop it, then rerun this command; or give this run its own "
                f"hydra.run.dir=...")
    pid, host = holder.get("pid"), holder.get("host")
    launch = f", rank {holder.get('rank')} of launch {holder['launch']}" if holder.get("launch") else ""
    lines = [f"{run_dir} is in use by pid {pid} on host {host}{launch}, started {holder.get('started_at')}:",
             f"  {holder.get('command')}",
             "Two processes in one run dir would write the same files, so this one stopped and changed nothing."]
    if host == platform.node() and not _alive(pid):
        others = ("the other ranks of its launch (or a process it started) still hold" if launch else
                  "a process it started (a worker it forked) still holds")
        lines.append(f"pid {pid} has exited, but {others} {path}: find the holder with `fuser -v {path}`, stop it, "
                     "then rerun this command to resume.")
    else:
        lines.append(f"Wait for it to finish, or stop it (`kill {pid}` on {host}) and rerun this command to resume "
                     "the run; to run both at once, give this one its own hydra.run.dir=...")
    return "\n".join(lines)


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) in one step: a temporary file in the same folder, flushed and
    fsynced, then renamed over it, so a kill at any moment leaves the old file or the new one, never a torn one.
    For a run's small state files (run_info.json, stats.json, plan.json, ...); JSONL logs are appended instead."""
    # Unique per process and call: the ranks of a launch, and threads, may write one file at once
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        # Created like write_text creates a file (mode 0o666 less the umask), not mkstemp's 0o600
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any, **dumps: Any) -> None:
    """``obj`` as indented JSON, written with ``write_text_atomic``; ``dumps`` go to json.dumps."""
    write_text_atomic(path, json.dumps(obj, indent=2, **dumps))


def read_json_state(path: Path, redone: str) -> Any:
    """The JSON of one of a run's own state files; None when it is missing or unreadable.

    An unreadable one (torn by a kill under a version that wrote it in place, or damaged) is moved to
    ``<file>.corrupt`` next to it, and a warning names it and says what is redone (``redone``); the caller
    rebuilds the file. Read another run's files with plain json instead: moving them is not this run's business.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as err:
        side = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, side)
        except FileNotFoundError:
            # Another rank of this launch moved it first
            pass
        log.warning("%s is not valid JSON (%s: torn by a kill, or damaged); moved to %s, %s", path,
                    type(err).__name__, side, redone)
        return None


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
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))
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
    earlier = read_json_state(path, "and the history of earlier starts begins again with this one")
    history = earlier.get("starts", []) if isinstance(earlier, dict) else []
    write_json_atomic(path, {"starts": history + [info]})


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
    write_json_atomic(path, info)


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


def salvage_jsonl(path: Path, view: Optional[Callable[[dict[str, Any]], Any]] = None) -> list[Any]:
    """The rows of a run's own JSONL file (each passed through ``view`` when given), with every unreadable line
    moved out of it first.

    Resume rewrites a run's files from the rows it could read, so an unreadable line would be gone for good.
    Each one is appended instead to ``<file>.corrupt`` next to it, as a JSON object with its line number, the
    time it was moved and its text (bytes that are not UTF-8 kept as ``\\udcXX`` escapes, so nothing is lost),
    a warning names the file and the lines, and the file is rewritten without them. Deciding what the lost
    rows held (and redoing it) is the caller's job.

    ``view`` keeps only what the caller needs of each row (resume keeps a round row's document and round, not its
    answers), so the memory this takes does not grow with the rows' size; the file is streamed either way.
    """
    rows: list[Any] = []
    bad: list[tuple[int, bytes]] = []
    for line_no, _, raw, row in jsonl_lines(path):
        if row is None:
            bad.append((line_no, raw))
        else:
            rows.append(row if view is None else view(row))
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
    bad_lines = {n for n, _ in bad}
    _copy_lines(path, lambda line_no, _index: line_no not in bad_lines)
    shown = ", ".join(str(n) for n, _ in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
    log.warning("%s: %d unreadable line(s) (line %s: torn by a kill, or damaged) moved to %s", path, len(bad),
                shown, side)
    return rows


def keep_rows(path: Path, keep: Callable[[int], bool]) -> None:
    """Atomically rewrite a JSONL file (read with ``salvage_jsonl`` first, so every line is a row) keeping the
    rows whose 0-based position passes ``keep``. Lines are copied as they are, never parsed again, so rewriting a
    large rounds file costs one streamed pass."""
    _copy_lines(path, lambda _line_no, index: keep(index))


def _copy_lines(path: Path, keep: Callable[[int, int], bool]) -> None:
    """Stream ``path`` into a temp file keeping the non-blank lines for which keep(line number, position among
    non-blank lines) holds, then rename it over ``path``."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    index = 0
    with path.open("rb") as src, tmp.open("wb") as dst:
        for line_no, raw in enumerate(src, 1):
            if not raw.strip():
                continue
            if keep(line_no, index):
                dst.write(raw if raw.endswith(b"\n") else raw + b"\n")
            index += 1
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)


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
