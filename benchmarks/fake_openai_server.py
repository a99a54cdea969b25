"""A fake OpenAI-compatible server: answers every chat request after a fixed delay.

It does no inference, so a client's throughput against it measures the client.
``/v1/chat/completions`` returns a valid ChatCompletion with ``n`` choices and
usage; ``/v1/models`` lists one model. Run it standalone:

    python benchmarks/fake_openai_server.py --port 8000 --latency 1.0

or from Python in its own process (so its CPU does not count against the
client being measured): ``with serve_in_subprocess(latency_s=0.05) as url: ...``.

Every answer is ``ANSWER`` unless the server runs with ``--schema-json`` (``serve_in_subprocess(...,
schema_json=True)``): then a request that carries a JSON schema in ``response_format`` gets a minimal object
valid for it (``schema_instance``), its strings salted with a digest of the request's messages so that another
prompt gets another answer while the same request always gets the same one. ``--schema-answers`` (a JSON
object: schema name -> answer text) answers the schemas it names with fixed texts instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any, Iterator, Optional

from aiohttp import web

MODEL = "fake-model"
ANSWER = "The answer is 42."
READY = "serving"


def schema_instance(schema: Any, salt: str = "", position: Optional[int] = None) -> Any:
    """A small value valid for ``schema`` (the subset the project's schemas use).

    Objects get every property; arrays ``minItems`` items (none without it); enums their first value; strings
    ``x<salt>`` plus the item's position, within minLength/maxLength; integers the 1-based position inside an
    array (so ids run 1..n), else 1, clamped to minimum/maximum; booleans true, but inside arrays only at odd
    positions (a rubric judge's verdicts then give a middling score, not a perfect one).

    >>> schema_instance({"type": "object", "properties": {"v": {"type": "array", "minItems": 2, "items": {
    ...     "type": "object", "properties": {"id": {"type": "integer"}, "met": {"type": "boolean"}}}}}})
    {'v': [{'id': 1, 'met': False}, {'id': 2, 'met': True}]}
    """
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return schema_instance(schema[key][0], salt, position)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        return {name: schema_instance(sub, salt, position) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [schema_instance(schema.get("items") or {}, salt, i) for i in range(int(schema.get("minItems") or 0))]
    if kind in ("integer", "number"):
        value = 1 if position is None else position + 1
        if schema.get("minimum") is not None:
            value = max(value, schema["minimum"])
        if schema.get("maximum") is not None:
            value = min(value, schema["maximum"])
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True if position is None else position % 2 == 1
    if kind == "null":
        return None
    text = f"x{salt}" + ("" if position is None else f"-{position}")
    if schema.get("maxLength") is not None:
        text = text[:max(int(schema["maxLength"]), 0)]
    return text.ljust(int(schema.get("minLength") or 0), "x")


def request_schema(body: dict[str, Any]) -> tuple[Optional[str], Optional[dict[str, Any]]]:
    """(schema name, schema) of a request's ``response_format`` (json_schema or json_object with a schema)."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        return spec.get("name"), spec.get("schema")
    if fmt.get("type") == "json_object" and isinstance(fmt.get("schema"), dict):
        return None, fmt["schema"]
    return None, None


def answer_for(body: dict[str, Any], schema_json: bool, schema_answers: dict[str, str]) -> str:
    if not schema_json:
        return ANSWER
    name, schema = request_schema(body)
    if name is not None and name in schema_answers:
        return schema_answers[name]
    if schema is None:
        return ANSWER
    salt = hashlib.sha1(json.dumps(body.get("messages"), sort_keys=True).encode()).hexdigest()[:8]
    return json.dumps(schema_instance(schema, salt))


def make_app(latency_s: float, schema_json: bool = False,
             schema_answers: Optional[dict[str, str]] = None) -> web.Application:
    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(latency_s)
        n = int(body.get("n") or 1)
        content = answer_for(body, schema_json, schema_answers or {})
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": content},
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


async def serve_app(app: web.Application, host: str, port: int, banner: str) -> None:
    """Serve ``app`` on host:port (0 picks a free port) until cancelled; print the ``READY`` line with the URL and
    ``banner``, which the parent reads to learn the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # The default backlog (128) drops SYNs when hundreds of clients connect at once,
    # and a dropped SYN costs the client a 1 s retransmit that would show up as latency.
    await web.SockSite(runner, sock, backlog=4096).start()
    print(f"{READY} http://{host}:{sock.getsockname()[1]}/v1 {banner}", flush=True)
    await asyncio.Event().wait()


async def _serve(host: str, port: int, latency_s: float, schema_json: bool = False,
                 schema_answers: Optional[dict[str, str]] = None) -> None:
    await serve_app(make_app(latency_s, schema_json, schema_answers), host, port, f"latency={latency_s}")


@contextlib.contextmanager
def serve_in_subprocess(latency_s: float, host: str = "127.0.0.1", schema_json: bool = False,
                        schema_answers: Optional[dict[str, str]] = None) -> Iterator[str]:
    """Start the server in a child process; yield its base URL (``http://host:port/v1``)."""
    argv = [sys.executable, os.path.abspath(__file__), "--host", host, "--port", "0", "--latency", str(latency_s)]
    if schema_json:
        argv.append("--schema-json")
    if schema_answers:
        argv += ["--schema-answers", json.dumps(schema_answers)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
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
    parser.add_argument("--schema-json", action="store_true",
                        help="answer a request with a JSON schema with a minimal object valid for it")
    parser.add_argument("--schema-answers", default="{}",
                        help="with --schema-json: a JSON object, schema name -> fixed answer text")
    args = parser.parse_args()
    asyncio.run(_serve(args.host, args.port, args.latency, args.schema_json, json.loads(args.schema_answers)))


if __name__ == "__main__":
    main()
