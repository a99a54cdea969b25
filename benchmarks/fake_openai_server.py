"""A fake OpenAI-compatible server: answers every chat request after a fixed delay.

It does no inference, so a client's throughput against it measures the client.
``/v1/chat/completions`` returns a valid ChatCompletion with ``n`` choices and
usage; ``/v1/models`` lists one model. Run it standalone:

    python benchmarks/fake_openai_server.py --port 8000 --latency 1.0

or from Python in its own process (so its CPU does not count against the
client being measured): ``with serve_in_subprocess(latency_s=0.05) as url: ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from typing import Iterator

from aiohttp import web

MODEL = "fake-model"
ANSWER = "The answer is 42."
READY = "serving"


def make_app(latency_s: float) -> web.Application:
    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(latency_s)
        n = int(body.get("n") or 1)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": ANSWER},
                "finish_reason": "stop",
                "logprobs": None,
            }
            for i in range(n)
        ]
        return web.json_response(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", MODEL),
                "choices": choices,
                "usage": {"prompt_tokens": 12, "completion_tokens": 5 * n, "total_tokens": 12 + 5 * n},
            }
        )

    async def models(request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}]}
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    return app


async def _serve(host: str, port: int, latency_s: float) -> None:
    runner = web.AppRunner(make_app(latency_s), access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # The default backlog (128) drops SYNs when hundreds of clients connect at once,
    # and a dropped SYN costs the client a 1 s retransmit that would show up as latency.
    await web.SockSite(runner, sock, backlog=4096).start()
    # The parent reads this line to learn the port (port 0 picks a free one).
    print(f"{READY} http://{host}:{sock.getsockname()[1]}/v1 latency={latency_s}", flush=True)
    await asyncio.Event().wait()


@contextlib.contextmanager
def serve_in_subprocess(latency_s: float, host: str = "127.0.0.1") -> Iterator[str]:
    """Start the server in a child process; yield its base URL (``http://host:port/v1``)."""
    process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--host", host, "--port", "0", "--latency", str(latency_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        if not line.startswith(READY):
            raise RuntimeError(
                f"fake OpenAI server did not start (exit code {process.poll()}, said {line!r}); "
                f"run python {__file__} --port 0 to see why"
            )
        yield line.split()[1]
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds before each chat answer")
    args = parser.parse_args()
    asyncio.run(_serve(args.host, args.port, args.latency))


if __name__ == "__main__":
    main()
