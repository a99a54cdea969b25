"""Endpoints files: where a serving job's replicas of one role are, and the key they want.

A serving job (``sbatch slurm/serve.sbatch weak|strong|judge MODEL DIR``) keeps one file per
role, ``<dir>/<role>.endpoints.json``, next to a key file ``<dir>/<role>.key`` (mode 0600). Each vLLM replica
registers itself once it answers GET /v1/models and is marked down when its process exits. A stage started with
``models.endpoints_file=<file or folder>`` binds every role named there to the file's live replicas and follows the
file while it runs, so a requeued server on a new node is picked up without a restart (``EndpointsFollower``).

    python -m autodata.endpoints show runs/endpoints
    python -m autodata.endpoints init --file F --role R --model M [--job-id J]
    python -m autodata.endpoints register --file F --role R --model M --url U [--node N] [--key-file K]
    python -m autodata.endpoints deregister --file F --url U
    python -m autodata.endpoints wait --url U --key-file K [--model M] [--pid P] [--timeout S]

The file (``"format": 1``)::

    {"format": 1, "role": "weak_solver", "model": "Qwen/Qwen3.5-4B", "job_id": "4242", "key_file": "weak_solver.key",
     "replicas": [{"url": "http://10.1.2.3:8000/v1", "node": "gpu017", "state": "up",
                   "updated_at": "2026-01-02T03:04:05Z"}]}

``key_file`` is relative to the endpoints file's folder. The key itself is never printed, logged, or written
anywhere but the key file; a key file that others may read is refused.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import logging
import os
import secrets
import stat
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from autodata.secrets import Secret

if TYPE_CHECKING:
    from autodata.backends.openai_backend import OpenAIBackend
    from autodata.config import EndpointConfig

log = logging.getLogger(__name__)

FORMAT = 1
SUFFIX = ".endpoints.json"
STATES = ("up", "down")
# The file is re-read at most this often while a stage runs (a stat per call otherwise; NFS caches attributes
# for a few seconds anyway)
REREAD_INTERVAL_S = 1.0
# A lock folder (the stand-in where flock is refused) older than this was left by a killed process
STALE_LOCK_S = 60.0
LOCK_TIMEOUT_S = 120.0
# flock refused by the filesystem (Lustre mounted without -o flock, some FUSE mounts)
_NO_FLOCK = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL)
# Sent as the bearer token to a server without a key file (the OpenAI convention for "no key")
NO_KEY = "EMPTY"


class EndpointsFileError(ValueError):
    """An endpoints file, or its key file, cannot be used; the message names the file and the fix."""


# -- writing (serving side: the sbatch scripts and slurm/serve_node.sh) ------------------------------------------


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive lock for a read-modify-write of ``path``: several nodes write one file on a shared filesystem.

    fcntl.flock holds across NFS clients (Linux maps it to a POSIX lock there); where the filesystem refuses it
    (Lustre without -o flock), a lock folder stands in (mkdir is atomic everywhere), broken when stale.
    """
    handle = open(path.with_name(path.name + ".lock"), "a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            flocked = True
        except OSError as err:
            if err.errno not in _NO_FLOCK:
                raise
            flocked = False
        if flocked:
            yield
        else:
            with _lock_folder(path.with_name(path.name + ".lock.d")):
                yield
    finally:
        # Closing releases the flock.
        handle.close()


@contextmanager
def _lock_folder(folder: Path) -> Iterator[None]:
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    while True:
        try:
            folder.mkdir()
            break
        except FileExistsError:
            try:
                if time.time() - folder.stat().st_mtime > STALE_LOCK_S:
                    folder.rmdir()
                    continue
            except FileNotFoundError:
                continue
            if time.monotonic() > deadline:
                raise EndpointsFileError(f"{folder} has been held for {LOCK_TIMEOUT_S:.0f} s; if no serving job is "
                                         f"writing, remove it (rmdir {folder})") from None
            time.sleep(0.05)
    try:
        yield
    finally:
        folder.rmdir()


def _write(path: Path, doc: dict[str, Any]) -> None:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_for_update(path: Path) -> Optional[dict[str, Any]]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        # Written atomically, so only a hand edit gets here; the serving job owns the file and starts it again.
        print(f"autodata.endpoints: {path} is not JSON; writing it anew", file=sys.stderr)
        return None
    return doc if isinstance(doc, dict) else None


def create_key(path: Path) -> bool:
    """Make a random API key at ``path`` (mode 0600, made under umask 077) unless one is there; True if made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    finally:
        os.umask(old)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return True


def read_key(path: Path) -> str:
    """The key in ``path``; refused when the file is missing, empty, or readable by anyone but its owner."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise EndpointsFileError(f"key file {path} does not exist; the serving job makes it at start "
                                 f"(python -m autodata.endpoints init), so start it, or fix key_file") from None
    if mode & 0o077:
        raise EndpointsFileError(f"key file {path} has mode {mode:04o}: others may read the API key; it must be 0600. "
                                 f"Run chmod 600 {path} (and, if others could read it, delete it and requeue the "
                                 f"serving job to make a new key)")
    key = path.read_text().strip()
    if not key:
        raise EndpointsFileError(f"key file {path} is empty; delete it and requeue the serving job to make a new key")
    return key


def init(file: Path, role: str, model: str, job_id: Optional[str] = None) -> Path:
    """At a serving job's start (also after a requeue): make the key if absent and start the file with no replica,
    so replicas of an earlier run of the job (maybe on other nodes) are not offered; each registers again when up."""
    key_path = file.with_name(f"{role}.key")
    create_key(key_path)
    # A kept key that others could read is refused here, before any replica starts with it
    read_key(key_path)
    with _locked(file):
        _write(file, {"format": FORMAT, "role": role, "model": model, "job_id": job_id,
                      "key_file": key_path.name, "replicas": []})
    return key_path


def register(file: Path, role: str, model: str, url: str, node: Optional[str] = None,
             key_file: Optional[Path] = None, job_id: Optional[str] = None) -> None:
    """Mark the replica at ``url`` up (added if new)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    with _locked(file):
        doc = _read_for_update(file) or {"format": FORMAT, "role": role, "replicas": []}
        if doc.get("role") != role:
            raise EndpointsFileError(f"{file} lists replicas of role {doc.get('role')!r}, not {role!r}; give each "
                                     f"role its own file (<dir>/<role>{SUFFIX})")
        doc["format"] = FORMAT
        doc["model"] = model
        if job_id is not None:
            doc["job_id"] = job_id
        if key_file is not None:
            doc["key_file"] = os.path.relpath(key_file, file.parent)
        doc.setdefault("key_file", f"{role}.key")
        replicas = [r for r in doc.get("replicas") or [] if isinstance(r, dict) and r.get("url") != url]
        replicas.append({"url": url, "node": node, "state": "up", "updated_at": _now()})
        doc["replicas"] = sorted(replicas, key=lambda r: str(r.get("url")))
        _write(file, doc)


def deregister(file: Path, url: str) -> None:
    """Mark the replica at ``url`` down (its process exited); nothing when the file or the replica is not there."""
    with _locked(file):
        doc = _read_for_update(file)
        if doc is None:
            return
        for replica in doc.get("replicas") or []:
            if isinstance(replica, dict) and replica.get("url") == url:
                replica["state"] = "down"
                replica["updated_at"] = _now()
        _write(file, doc)


# -- reading (client side: LLM, validation) --------------------------------------------------------------------


@dataclass
class Served:
    """One role as an endpoints file describes it."""

    role: str
    model: str
    # Base URLs of the replicas marked up, in file order
    urls: list[str]
    file: Path
    # The key the replicas want (from the key file; None: the file names none)
    key: Optional[Secret] = None

    def bind(self, endpoint: "EndpointConfig") -> "EndpointConfig":
        """The role's endpoint on these replicas: an OpenAI-compatible server of this model, with the key file's
        key instead of ``api_key_env``; every other setting (sampling, concurrency, timeouts) stays."""
        return replace(endpoint, backend="openai", model=self.model, base_url=None, base_urls=list(self.urls),
                       api_key_env=None)


def endpoint_files(path: Path) -> list[Path]:
    """``path`` itself, or the *.endpoints.json files of a folder."""
    if path.is_dir():
        files = sorted(path.glob(f"*{SUFFIX}"))
        if not files:
            raise EndpointsFileError(f"{path} holds no *{SUFFIX} file; start a serving job that writes there "
                                     f"(sbatch slurm/serve.sbatch weak MODEL {path}), or point at the file itself")
        return files
    if not path.exists():
        raise EndpointsFileError(f"{path} does not exist; start the serving job that writes it (sbatch "
                                 f"slurm/serve.sbatch weak|strong|judge MODEL {path.parent}), or fix the path")
    return [path]


def read_file(path: Path) -> Served:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise EndpointsFileError(f"{path} cannot be read as JSON ({err}); the serving job rewrites it on its next "
                                 f"registration, or delete it and requeue the job") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise EndpointsFileError(f"{path} is not an endpoints file of format {FORMAT} (found format {found!r}); "
                                 f"point models.endpoints_file at a file a serving job wrote")
    role, model, replicas = doc.get("role"), doc.get("model"), doc.get("replicas")
    if not isinstance(role, str) or not role or not isinstance(model, str) or not model \
            or not isinstance(replicas, list):
        raise EndpointsFileError(f"{path} lacks a role, a model or a replicas list; delete it and requeue the "
                                 f"serving job that wrote it")
    urls = []
    for replica in replicas:
        if not isinstance(replica, dict) or not isinstance(replica.get("url"), str) \
                or replica.get("state") not in STATES:
            raise EndpointsFileError(f"{path}: replica {replica!r} needs a url and a state in {STATES}; delete the "
                                     f"file and requeue the serving job")
        if replica["state"] == "up" and replica["url"] not in urls:
            urls.append(replica["url"])
    key_file = doc.get("key_file")
    key = Secret(read_key(path.parent / key_file)) if key_file else None
    return Served(role=role, model=model, urls=urls, file=path, key=key)


def load(path: "str | Path") -> dict[str, Served]:
    """Every role the file (or the folder's files) serves; one file per role."""
    served: dict[str, Served] = {}
    for file in endpoint_files(Path(path)):
        entry = read_file(file)
        if entry.role in served:
            raise EndpointsFileError(f"role {entry.role!r} is served by both {served[entry.role].file} and {file}; "
                                     f"keep one file per role in the folder")
        served[entry.role] = entry
    return served


def signature(path: Path) -> tuple:
    """Changes whenever a file is replaced or rewritten (os.replace makes a new inode)."""
    try:
        files = sorted(path.glob(f"*{SUFFIX}")) if path.is_dir() else [path]
        return tuple((f.name, s.st_ino, s.st_mtime_ns, s.st_size) for f in files for s in [f.stat()])
    except OSError:
        return ("unreadable",)


class EndpointsFollower:
    """Binds the roles of an endpoints file (or folder) to their replicas, and keeps their backends on the live
    ones while a stage runs: ``poll`` (called by the backends on every request, cheap between re-reads) re-reads
    the file when it changed, at most once per ``interval_s``."""

    def __init__(self, path: "str | Path", interval_s: float = REREAD_INTERVAL_S):
        self.path = Path(path)
        self.interval_s = interval_s
        self._signature = signature(self.path)
        self.served = load(self.path)
        self._polled_at = time.monotonic()
        self._backends: dict[str, "OpenAIBackend"] = {}

    def __repr__(self) -> str:
        return f"EndpointsFollower({str(self.path)!r}, roles={sorted(self.served)})"

    def bind(self, endpoints: dict[str, "EndpointConfig"]) -> dict[str, "EndpointConfig"]:
        """``endpoints`` with every role this file serves moved onto its replicas."""
        return {role: self.served[role].bind(ep) if role in self.served else ep for role, ep in endpoints.items()}

    def backend(self, role: str, endpoint: "EndpointConfig") -> "OpenAIBackend":
        """The role's backend, following the file from now on."""
        from autodata.backends.openai_backend import OpenAIBackend

        served = self.served[role]
        backend = OpenAIBackend(endpoint, origin=f"{served.file} (role {role})")
        backend.set_replicas(served.urls, api_key=served.key.value if served.key else NO_KEY)
        backend.refresh = self.poll
        self._backends[role] = backend
        return backend

    def poll(self) -> None:
        now = time.monotonic()
        if now - self._polled_at < self.interval_s:
            return
        self._polled_at = now
        seen = signature(self.path)
        if seen == self._signature:
            return
        try:
            served = load(self.path)
        except EndpointsFileError as err:
            # Kept as it was: the next poll reads the file again.
            log.warning("%s changed but cannot be used (%s); keeping the replicas read before", self.path, err)
            return
        self._signature = seen
        for role, backend in self._backends.items():
            entry = served.get(role)
            if entry is None:
                log.warning("%s no longer serves role %s; its requests wait for a replica to come back",
                            self.path, role)
                backend.set_replicas([])
                continue
            if entry.model != backend.model:
                log.warning("%s now serves model %r for role %s, but this run started with %r; requests keep "
                            "asking for %r (restart the stage to change the model)", entry.file, entry.model, role,
                            backend.model, backend.model)
            before = backend.replica_urls
            backend.set_replicas(entry.urls, api_key=entry.key.value if entry.key else NO_KEY)
            if before != entry.urls:
                log.info("role %s: %d live replicas in %s (was %d)", role, len(entry.urls), entry.file, len(before))
        self.served = served


# -- readiness (serving side) -----------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A zombie (exited, not yet reaped by its parent) still answers kill 0.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def ready(url: str, key: str, model: Optional[str], timeout_s: float = 5.0) -> bool:
    """GET <url>/models answers 200 with a model list (naming ``model``, when given), with this key."""
    request = urllib.request.Request(url.rstrip("/") + "/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            page = json.loads(response.read())
    except (OSError, ValueError):  # refused, timeout, HTTP errors (401: not our server), not JSON
        return False
    served = [m.get("id") for m in page.get("data") or [] if isinstance(m, dict)] if isinstance(page, dict) else []
    return bool(served) and (model is None or model in served)


def wait_ready(url: str, key: str, model: Optional[str], pid: Optional[int], timeout_s: float,
               interval_s: float) -> int:
    """0 once the server answers; 1 when its process exits first; 2 after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if ready(url, key, model):
            return 0
        if pid is not None and not _alive(pid):
            return 1
        if time.monotonic() > deadline:
            return 2
        time.sleep(interval_s)


# -- command line -------------------------------------------------------------------------------------------------


def show(path: Path) -> str:
    lines = []
    for role, entry in sorted(load(path).items()):
        key = "with its key file's key" if entry.key else "without a key"
        lines.append(f"{role}: {entry.model}, {len(entry.urls)} live replicas, {key}, in {entry.file}")
        lines += [f"  {url}" for url in entry.urls]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autodata.endpoints", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("init", help="start a serving job's file (no replica) and make its key if absent")
    p.add_argument("--file", type=Path, required=True)
    p.add_argument("--role", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--job-id", default=os.environ.get("SLURM_JOB_ID"))
    p = commands.add_parser("register", help="mark a replica up")
    p.add_argument("--file", type=Path, required=True)
    p.add_argument("--role", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--node")
    p.add_argument("--key-file", type=Path)
    p.add_argument("--job-id", default=os.environ.get("SLURM_JOB_ID"))
    p = commands.add_parser("deregister", help="mark a replica down")
    p.add_argument("--file", type=Path, required=True)
    p.add_argument("--url", required=True)
    p = commands.add_parser("wait", help="wait until a server answers GET /models (exit 0), its process exits "
                                         "(1) or time runs out (2)")
    p.add_argument("--url", required=True)
    p.add_argument("--key-file", type=Path, required=True)
    p.add_argument("--model")
    p.add_argument("--pid", type=int)
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--interval", type=float, default=5.0)
    p = commands.add_parser("show", help="the live replicas of each role (never the key)")
    p.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "init":
            key_path = init(args.file, args.role, args.model, args.job_id)
            print(f"{args.file}: role {args.role}, model {args.model}, no replica yet; key in {key_path}")
        elif args.command == "register":
            register(args.file, args.role, args.model, args.url, args.node, args.key_file, args.job_id)
        elif args.command == "deregister":
            deregister(args.file, args.url)
        elif args.command == "wait":
            return wait_ready(args.url, read_key(args.key_file), args.model, args.pid, args.timeout, args.interval)
        elif args.command == "show":
            print(show(args.path))
    except EndpointsFileError as err:
        print(f"autodata.endpoints: {err}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
