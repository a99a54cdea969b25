"""On-disk response cache: a killed run pays nothing again for finished LLM calls.

Keyed by the backend's cache identity, the messages, the sampling parameters
(seed included), ``n`` and the JSON schema. SQLite in WAL mode, one commit per
write, so every completed call is on disk the moment it returns.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from autodata.backends.base import ChatRequest, Completion


def request_key(identity: str, request: ChatRequest) -> str:
    payload = {
        "id": identity,
        "m": request.messages,
        "s": asdict(request.sampling),
        "n": request.n,
        "j": request.json_schema,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the event loop thread; the lock covers the
        # rare call from a worker thread.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def get(self, key: str) -> Optional[list[Completion]]:
        with self._lock:
            row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return [Completion(**c) for c in json.loads(row[0])]

    def put(self, key: str, completions: list[Completion]) -> None:
        value = json.dumps([asdict(c) for c in completions], ensure_ascii=False)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", (key, value))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
