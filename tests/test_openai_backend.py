"""OpenAIBackend against a real local HTTP server whose answers each test scripts.

The server is aiohttp.web on 127.0.0.1 in the test's own event loop: requests go
through the backend's aiohttp session and real sockets; only the answers are
scripted. Retries and timeouts are kept tiny so the file runs in seconds.
"""

from __future__ import annotations

import asyncio
import doctest
import json
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import pytest
from aiohttp import web

from autodata.backends import openai_backend
from autodata.backends.base import BackendError, ChatRequest, EndpointUnreachable, Sampling
from autodata.backends.openai_backend import OpenAIBackend
from autodata.config import DEFAULT_ENDPOINT, EndpointConfig

MESSAGES = [{"role": "user", "content": "What is 6 x 7?"}]
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    # JSON body; None sends a generic error object
    body: Optional[dict[str, Any]] = None
    # Sent as is instead of JSON (a proxy's HTML page, say)
    raw: Optional[str] = None
    # Close the connection without answering (a server that crashed mid-request)
    drop: bool = False


class ScriptedServer:
    """Answers scripted replies in order, then valid completions; records every request."""

    def __init__(self, *, delay_s: float = 0.0, honours_n: bool = True, accepts: tuple[str, ...] = ("json_schema",)):
        self.script: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self.headers: list[dict[str, str]] = []
        self.delay_s = delay_s
        # Delays of the first requests, in order of arrival, before delay_s applies
        self.delays: list[float] = []
        self.honours_n = honours_n
        # response_format types this server understands; others get a 400 naming the field
        self.accepts = accepts
        self.in_flight = 0
        self.max_in_flight = 0
        # Scripted answers to GET /models, in order, before the real model list
        self.models_script: list[Reply] = []
        # Delays of the first GET /models answers, in order (a busy server)
        self.models_delays: list[float] = []
        self.models_requests = 0
        self.url = ""
        self._runner: Optional[web.AppRunner] = None

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.arrivals.append(time.monotonic())
        self.headers.append(dict(request.headers))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delays.pop(0) if self.delays else self.delay_s)
        finally:
            self.in_flight -= 1
        if self.script:
            return _scripted(request, self.script.pop(0))
        response_format = body.get("response_format")
        if response_format and response_format["type"] not in self.accepts:
            message = f"response_format type {response_format['type']!r} is not supported"
            return web.json_response({"error": {"message": message}}, status=400)
        n = int(body.get("n") or 1) if self.honours_n else 1
        choices = [
            {"index": i, "message": {"role": "assistant", "content": f"answer {i}: 42"}, "finish_reason": "stop"}
            for i in range(n)
        ]
        usage = {"prompt_tokens": 11, "completion_tokens": 7 * n, "total_tokens": 11 + 7 * n}
        return web.json_response(
            {"id": "x", "object": "chat.completion", "model": body["model"], "choices": choices, "usage": usage}
        )

    async def _models(self, request: web.Request) -> web.Response:
        self.models_requests += 1
        if self.models_delays:
            await asyncio.sleep(self.models_delays.pop(0))
        if self.models_script:
            return _scripted(request, self.models_script.pop(0))
        return web.json_response({"object": "list", "data": [{"id": "test-model", "object": "model", "owned_by": "t"}]})

    async def __aenter__(self) -> "ScriptedServer":
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.SockSite(self._runner, _bound_socket())
        await site.start()
        self.url = site.name.rstrip("/") + "/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def _scripted(request: web.Request, reply: Reply) -> web.Response:
    if reply.drop:
        assert request.transport is not None
        request.transport.close()
    if reply.raw is not None:
        return web.Response(text=reply.raw, status=reply.status, content_type="text/html")
    body = reply.body or {"error": {"message": "scripted"}}
    return web.json_response(body, status=reply.status, headers=reply.headers)


def _bound_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def _closed_port_url() -> str:
    """A URL nobody listens on: bind a free port, then close it."""
    sock = _bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/v1"


def endpoint(*urls: str, **overrides: Any) -> EndpointConfig:
    values: dict[str, Any] = dict(
        backend="openai", model="test-model", base_urls=list(urls), max_retries=2, timeout_s=5.0, max_concurrency=8
    )
    values.update(overrides)
    return replace(DEFAULT_ENDPOINT, **values)


def backend(ep: EndpointConfig) -> OpenAIBackend:
    return OpenAIBackend(ep, backoff_s=0.01, backoff_max_s=0.05)


def chat(n: int = 1, seed: Optional[int] = 7, schema: Optional[dict] = None) -> ChatRequest:
    sampling = Sampling(temperature=0.5, top_p=0.9, max_tokens=32, seed=seed)
    return ChatRequest(messages=MESSAGES, sampling=sampling, n=n, json_schema=schema)


def run(coro):
    return asyncio.run(coro)


def one_call(script: list = (), delays: list = (), models_script: list = (), request: Optional[ChatRequest] = None,
             check: bool = False, models_delays: list = (), **endpoint_overrides: Any) -> tuple[ScriptedServer, Any]:
    """One chat request (or, with ``check``, the start-up check) against a ScriptedServer playing ``script`` and
    ``models_script``: (server, the completions or the BackendError raised)."""
    async def main():
        async with ScriptedServer() as server:
            server.script, server.delays, server.models_script = list(script), list(delays), list(models_script)
            server.models_delays = list(models_delays)
            b = backend(endpoint(server.url, **endpoint_overrides))
            server.backend = b
            try:
                return server, await (b.check() if check else b.complete(request or chat()))
            except BackendError as err:
                return server, err
            finally:
                await b.aclose()

    return run(main())


def test_success_sends_sampling_and_returns_usage():
    server, out = one_call(request=chat(n=2), thinking=False, extra_body={"chat_template_kwargs": {"tools": None}})
    assert [c.text for c in out] == ["answer 0: 42", "answer 1: 42"]
    assert [c.finish_reason for c in out] == ["stop", "stop"]
    # Usage comes once per response; split so the sums are what the server counted.
    assert sum(c.prompt_tokens for c in out) == 11 and sum(c.completion_tokens for c in out) == 14
    sent = server.requests[0]
    assert sent["model"] == "test-model" and sent["messages"] == MESSAGES
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"], sent["seed"], sent["n"]) == (0.5, 0.9, 32, 7, 2)
    # The role's thinking switch joins the template arguments extra_body sends
    assert sent["chat_template_kwargs"] == {"tools": None, "enable_thinking": False}
    assert "response_format" not in sent
    assert server.headers[0]["Authorization"] == "Bearer EMPTY"


def test_429_waits_for_retry_after_then_succeeds():
    server, out = one_call([Reply(429, {"Retry-After": "1"})])
    assert out[0].text == "answer 0: 42"
    assert len(server.requests) == 2
    waited = server.arrivals[1] - server.arrivals[0]
    # The exponential backoff here is 0.01 s, so a 1 s gap can only come from the header.
    assert 0.95 <= waited < 1.5, waited


def test_500_is_retried():
    server, out = one_call([Reply(500), Reply(503)])
    assert out[0].text == "answer 0: 42" and len(server.requests) == 3


@pytest.mark.parametrize("status", [408, 429, 502])
def test_server_timeouts_rate_limits_and_gateway_errors_are_retried(status, caplog):
    caplog.set_level("INFO", logger=openai_backend.__name__)
    server, out = one_call([Reply(status)])
    assert out[0].text == "answer 0: 42" and len(server.requests) == 2
    [retry] = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert f"attempt 1 failed (HTTP {status})" in retry


def test_dropped_connection_is_retried():
    server, out = one_call([Reply(drop=True)])
    assert out[0].text == "answer 0: 42" and len(server.requests) == 2


def test_500_after_last_retry_raises_backend_error_with_body():
    server, err = one_call([Reply(500, body={"error": {"message": "CUDA out of memory"}})] * 3, max_retries=2)
    assert isinstance(err, BackendError)
    assert len(server.requests) == 3
    assert "500" in str(err) and "CUDA out of memory" in str(err)
    assert not isinstance(err, EndpointUnreachable)


def test_400_is_not_retried():
    server, err = one_call([Reply(400, body={"error": {"message": "max_tokens is too large"}})])
    assert isinstance(err, BackendError)
    assert len(server.requests) == 1
    assert "400" in str(err) and "max_tokens is too large" in str(err)


def test_a_200_that_is_not_a_chat_completion_is_retried_like_a_5xx():
    server, out = one_call([Reply(200, raw="<html>Welcome to nginx!</html>"), Reply(200, raw='{"choices": [')])
    assert out[0].text == "answer 0: 42" and len(server.requests) == 3
    assert server.backend.retries == {"invalid_json": 2}


def test_a_200_that_is_never_a_chat_completion_says_what_came_back():
    server, err = one_call([Reply(200, raw="<html>Welcome to nginx!</html>")] * 3, max_retries=2)
    assert isinstance(err, BackendError) and not isinstance(err, EndpointUnreachable)
    message = str(err)
    assert "Welcome to nginx" in message and "/v1" in message and "3 attempts" in message
    assert len(server.requests) == 3


def test_retried_faults_are_counted_by_kind():
    server, out = one_call([Reply(500), Reply(429, {"Retry-After": "0"}), Reply(200, raw="oops")], max_retries=3)
    assert out[0].text == "answer 0: 42"
    assert server.backend.retries == {"http_500": 1, "http_429": 1, "invalid_json": 1}


def test_a_404_during_a_run_stops_the_run_naming_the_model():
    server, err = one_call([Reply(404, body={"error": {"message": "The model `test-model` does not exist."}})])
    # An EndpointUnreachable stops the generate stage with the resume hint instead of skipping the document
    assert isinstance(err, EndpointUnreachable) and len(server.requests) == 1
    assert "404" in str(err) and "'test-model'" in str(err) and "does not exist" in str(err)


def test_check_fails_when_the_server_does_not_serve_the_model():
    listing = Reply(body={"object": "list", "data": [{"id": "qwen-a"}, {"id": "qwen-b"}]})
    server, err = one_call(models_script=[listing], check=True)
    assert isinstance(err, BackendError)
    message = str(err)
    assert "'test-model'" in message and server.url in message and "'qwen-a'" in message and "'qwen-b'" in message


def test_check_waits_for_a_busy_server(monkeypatch, caplog):
    """A server that accepts the connection but answers GET /models late is waited for (with one log line)."""
    monkeypatch.setattr(openai_backend, "BUSY_BACKOFF_S", 0.05)
    caplog.set_level("WARNING", logger=openai_backend.__name__)
    server, out = one_call(models_delays=[1.0, 1.0], check=True, timeout_s=0.3, startup_wait_s=10.0)
    assert out is None and server.models_requests == 3
    assert sum("busy; waiting" in r.getMessage() for r in caplog.records) == 1


def test_check_gives_up_on_a_busy_server_after_startup_wait_s(monkeypatch):
    monkeypatch.setattr(openai_backend, "BUSY_BACKOFF_S", 0.05)
    started = time.monotonic()
    server, err = one_call(models_delays=[1.0] * 20, check=True, timeout_s=0.2, startup_wait_s=0.5)
    assert isinstance(err, EndpointUnreachable) and "startup_wait_s" in str(err) and "busy" in str(err)
    assert time.monotonic() - started < 3.0 and server.models_requests >= 2


def test_max_tokens_is_clamped_to_the_context():
    server, _ = one_call(request=chat(), context_length=20)
    # MESSAGES is ~4 tokens by the documents module's estimate; max_tokens 32 does not fit 20
    assert server.requests[0]["max_tokens"] == 20 - openai_backend.estimate_tokens(MESSAGES)


def test_context_exceeded_shrinks_max_tokens_and_retries_once():
    vllm = {"error": {"message": "This model's maximum context length is 30 tokens. However, you requested 42 "
                                 "tokens (10 in the messages, 32 in the completion).", "code": "context_length_exceeded"}}
    server, out = one_call([Reply(400, body=vllm)])
    assert out[0].text == "answer 0: 42"
    assert [r["max_tokens"] for r in server.requests] == [32, 20]
    # A second refusal fails the request instead of sending it again
    server, err = one_call([Reply(400, body=vllm)] * 2)
    assert isinstance(err, BackendError) and "again" in str(err) and len(server.requests) == 2


def test_context_exceeded_by_the_prompt_alone_fails_without_resending():
    llamacpp = {"error": {"code": 400, "message": "the request exceeds the available context size",
                          "type": "exceed_context_size_error", "n_prompt_tokens": 4187, "n_ctx": 4096}}
    server, err = one_call([Reply(400, body=llamacpp)])
    assert isinstance(err, BackendError) and "does not fit" in str(err) and len(server.requests) == 1


def test_connection_refused_raises_endpoint_unreachable_naming_the_url():
    url = _closed_port_url()

    async def main():
        b = backend(endpoint(url, max_retries=1, timeout_s=2.0))
        try:
            with pytest.raises(EndpointUnreachable) as info:
                await b.complete(chat())
            with pytest.raises(EndpointUnreachable) as checked:
                await b.check()
        finally:
            await b.aclose()
        return info, checked

    started = time.monotonic()
    info, checked = run(main())
    assert time.monotonic() - started < 3
    assert url in str(info.value) and "server running" in str(info.value)
    assert url in str(checked.value)


def test_timeout_raises_endpoint_unreachable_saying_so():
    async def main():
        async with ScriptedServer(delay_s=0.6) as server:
            b = backend(endpoint(server.url, max_retries=0, timeout_s=0.2))
            try:
                with pytest.raises(EndpointUnreachable) as info:
                    await b.complete(chat())
            finally:
                await b.aclose()
        return server, info

    server, info = run(main())
    assert server.url in str(info.value) and "timeout_s=0.2" in str(info.value)


def test_timeout_is_retried():
    # The first attempt times out; the retry gets a quick answer.
    server, out = one_call(delays=[0.6], max_retries=1, timeout_s=0.3)
    assert out[0].text == "answer 0: 42" and len(server.requests) == 2


def test_fewer_choices_than_n_are_filled_with_more_requests():
    async def main():
        async with ScriptedServer(honours_n=False) as server:
            b = backend(endpoint(server.url))
            try:
                first = await b.complete(chat(n=3, seed=100))
                asked_first = len(server.requests)
                second = await b.complete(chat(n=2, seed=200))
            finally:
                await b.aclose()
        return server, first, asked_first, second

    server, first, asked_first, second = run(main())
    assert len(first) == 3 and len(second) == 2
    assert asked_first == 3
    assert sorted(r["seed"] for r in server.requests[:3]) == [100, 101, 102]
    # Once learned, n is not sent to this server again: one request per sample straight away.
    assert [r["n"] for r in server.requests[3:]] == [1, 1]
    assert sorted(r["seed"] for r in server.requests[3:]) == [200, 201]


def test_rejected_response_format_falls_back_and_stays_off():
    async def main():
        async with ScriptedServer(accepts=()) as server:
            b = backend(endpoint(server.url))
            try:
                first = await b.complete(chat(schema=SCHEMA))
                second = await b.complete(chat(schema=SCHEMA))
            finally:
                await b.aclose()
        return server, first, second

    server, first, second = run(main())
    assert first[0].text == "answer 0: 42" and second[0].text == "answer 0: 42"
    formats = [(r.get("response_format") or {}).get("type") for r in server.requests]
    # json_schema, then llama-cpp-python's json_object form, then none; later calls go straight to none.
    assert formats == ["json_schema", "json_object", None, None]
    assert server.requests[0]["response_format"]["json_schema"]["schema"] == SCHEMA


def test_json_object_form_is_kept_when_that_is_what_the_server_takes():
    async def main():
        async with ScriptedServer(accepts=("json_object",)) as server:
            b = backend(endpoint(server.url))
            try:
                await b.complete(chat(schema=SCHEMA))
                await b.complete(chat(schema=SCHEMA))
            finally:
                await b.aclose()
        return server

    server = run(main())
    formats = [(r.get("response_format") or {}).get("type") for r in server.requests]
    assert formats == ["json_schema", "json_object", "json_object"]
    assert server.requests[-1]["response_format"]["schema"] == SCHEMA


def test_structured_output_off_sends_no_response_format():
    async def main():
        async with ScriptedServer() as server:
            b = backend(endpoint(server.url, structured_output=False))
            try:
                await b.complete(chat(schema=SCHEMA))
            finally:
                await b.aclose()
        return server

    assert "response_format" not in run(main()).requests[0]


def test_requests_spread_across_replicas():
    async def main():
        async with ScriptedServer(delay_s=0.05) as a, ScriptedServer(delay_s=0.05) as b_server:
            b = backend(endpoint(a.url, b_server.url, max_concurrency=8))
            try:
                for _ in range(4):
                    await b.complete(chat())
                sequential = (len(a.requests), len(b_server.requests))
                await asyncio.gather(*(b.complete(chat()) for _ in range(16)))
            finally:
                await b.aclose()
        return a, b_server, sequential

    a, b_server, sequential = run(main())
    # Idle replicas tie, and ties go round-robin.
    assert sequential == (2, 2)
    # Concurrent calls go to the replica with fewer in flight: with 8 slots neither holds more than 4.
    assert a.max_in_flight == b_server.max_in_flight == 4
    assert len(a.requests) + len(b_server.requests) == 20 and 8 <= len(a.requests) <= 12


def test_connection_error_moves_to_another_replica():
    dead = _closed_port_url()

    async def main():
        async with ScriptedServer() as alive:
            b = backend(endpoint(dead, alive.url, max_retries=1))
            try:
                out = await asyncio.gather(*(b.complete(chat()) for _ in range(6)))
            finally:
                await b.aclose()
        return alive, out

    alive, out = run(main())
    assert len(out) == 6 and len(alive.requests) == 6


def test_max_concurrency_bounds_requests_in_flight():
    async def main():
        async with ScriptedServer(delay_s=0.1) as server:
            b = backend(endpoint(server.url, max_concurrency=3))
            try:
                await asyncio.gather(*(b.complete(chat()) for _ in range(12)))
            finally:
                await b.aclose()
        return server

    server = run(main())
    assert len(server.requests) == 12
    assert server.max_in_flight == 3


def test_missing_api_key_env_names_the_variable(monkeypatch):
    monkeypatch.delenv("AUTODATA_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="AUTODATA_TEST_KEY"):
        backend(endpoint("http://127.0.0.1:1/v1", api_key_env="AUTODATA_TEST_KEY"))


def test_api_key_is_sent_but_never_shown(monkeypatch):
    secret = "sk-test-do-not-print-0123456789"
    monkeypatch.setenv("AUTODATA_TEST_KEY", secret)

    async def main():
        async with ScriptedServer() as server:
            b = backend(endpoint(server.url, api_key_env="AUTODATA_TEST_KEY"))
            try:
                await b.complete(chat())
                shown = [repr(b), str(b), b.name, b.cache_identity, repr(vars(b))]
                shown.append(json.dumps(vars(b.endpoint), default=str))
            finally:
                await b.aclose()
        return server, shown

    server, shown = run(main())
    assert server.headers[0]["Authorization"] == f"Bearer {secret}"
    assert all(secret not in text for text in shown)


def test_identity_names_model_not_urls():
    b = backend(endpoint("http://node1:8000/v1", "http://node2:8000/v1"))
    assert b.cache_identity == "openai:test-model"
    assert b.name.startswith("openai:test-model@http://node1:8000/v1")


def test_check_passes_against_a_live_server():
    async def main():
        async with ScriptedServer() as server:
            b = backend(endpoint(server.url))
            try:
                await b.check()
            finally:
                await b.aclose()

    run(main())


def test_context_length_is_max_model_len_from_the_model_list():
    """vLLM lists max_model_len per model; the smallest over the replicas counts, and a server that lists none
    (a hosted API, llama.cpp) leaves it unknown."""
    def listing(length: Optional[int]) -> Reply:
        mine = {"id": "test-model", "object": "model", **({"max_model_len": length} if length else {})}
        return Reply(body={"object": "list", "data": [{"id": "other", "max_model_len": 8}, mine]})

    async def main(lengths: list[Optional[int]]):
        servers = [ScriptedServer() for _ in lengths]
        for server, length in zip(servers, lengths):
            await server.__aenter__()
            server.models_script = [listing(length)]
        b = backend(endpoint(*(s.url for s in servers)))
        try:
            return await b.context_length()  # asks GET /models itself when check() has not run yet
        finally:
            await b.aclose()
            for server in servers:
                await server.__aexit__(None, None, None)

    assert run(main([32768])) == 32768
    assert run(main([32768, 16384])) == 16384
    assert run(main([None])) is None and run(main([32768, None])) is None


def test_check_reports_a_refusal_with_status_and_body():
    server, err = one_call(models_script=[Reply(401, body={"error": {"message": "invalid api key"}})], check=True)
    assert isinstance(err, BackendError)
    message = str(err)
    assert not isinstance(err, EndpointUnreachable)
    assert f"{server.url}/models answered 401" in message and "invalid api key" in message
    assert "/v1" in message and "api_key_env" in message


def test_check_on_a_page_that_is_not_a_model_list_says_so():
    _, err = one_call(models_script=[Reply(200, raw="<html>Welcome to nginx!</html>")], check=True)
    assert isinstance(err, BackendError)
    message = str(err)
    assert "model list" in message and "/v1" in message


def test_aclose_closes_the_session_and_a_later_call_opens_a_new_one():
    async def main():
        async with ScriptedServer() as server:
            b = backend(endpoint(server.url))
            try:
                await b.complete(chat())
                first = b._session
                await b.aclose()
                assert first is not None and first.closed and b._session is None
                out = await b.complete(chat())
            finally:
                await b.aclose()
        return out

    assert run(main())[0].text == "answer 0: 42"


def test_module_doctests():
    assert doctest.testmod(openai_backend).failed == 0
