"""Shared test fixtures.

``llama_server``: a real OpenAI-compatible server (llama-cpp-python's) serving
the embedded SmolLM2-135M-Instruct GGUF, started once per test session.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Iterator, NamedTuple

import pytest

LLAMA_MODEL_NAME = "smollm2-135m-instruct"
LLAMA_STARTUP_TIMEOUT_S = 120.0
# llama_cpp.server imports these at startup; llama_cpp alone is not enough.
LLAMA_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
LLAMA_INSTALL_HINT = "pip install 'llama-cpp-python[server]>=0.3' (or pip install -e '.[server]')"


class LlamaServer(NamedTuple):
    base_url: str  # http://127.0.0.1:PORT/v1
    model: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> Iterator[LlamaServer]:
    missing = [m for m in LLAMA_SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        message = f"llama-cpp-python's server is not installed (missing {', '.join(missing)}); {LLAMA_INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}. CI must run these tests.")
        pytest.skip(message)

    from autodata.backends.embedded import find_gguf

    port = _free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    log_path = str(tmp_path_factory.mktemp("llama_server") / "server.log")
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(find_gguf()),
        "--model_alias", LLAMA_MODEL_NAME,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "4096",
        "--n_threads", str(min(4, os.cpu_count() or 1)),
        "--verbose", "False",
    ]  # fmt: skip
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + LLAMA_STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"llama_cpp.server exited with code {process.returncode} before answering; "
                    f"log {log_path}:\n{_log_tail(log_path)}"
                )
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"llama_cpp.server did not answer GET {base_url}/models within {LLAMA_STARTUP_TIMEOUT_S:.0f} s; "
                    f"log {log_path}:\n{_log_tail(log_path)}"
                )
            time.sleep(0.25)
        yield LlamaServer(base_url, LLAMA_MODEL_NAME)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
