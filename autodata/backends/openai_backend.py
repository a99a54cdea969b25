"""Backend for any OpenAI-compatible chat endpoint (vllm serve, SGLang, llama.cpp, hosted APIs).

One shared ``aiohttp.ClientSession`` for all replica URLs, least-in-flight
balancing across replicas, one semaphore bounding the requests in flight for
the whole endpoint, and retries with tenacity that honour ``Retry-After``.
Selected with ``models.backend=openai``:

    python -m autodata.run stage=generate models=openai \
        models.base_url=http://localhost:8000/v1 models.model=Qwen/Qwen3-4B

Why aiohttp and not the openai SDK: one event loop keeps hundreds of requests in
flight, so the client's CPU per call caps throughput, and the SDK's HTTP layer
cost ~0.6 ms per call. At 512 requests in flight against a server answering in
1 s (bound 512 calls/s) the SDK path reached 74-81% of the bound; this path
reached 90-92% at ~0.2 ms per call, within a few points of bare aiohttp in the
same run (``python benchmarks/bench_openai_throughput.py``, 2 cores shared with
other jobs; heavier load pulls both lower). The protocol here is two plain-JSON
endpoints (POST /chat/completions, GET /models).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from autodata.backends.base import (
    BackendError,
    ChatRequest,
    Completion,
    EndpointUnreachable,
    ModelNotServed,
    estimate_tokens,
)
from autodata.config import EndpointConfig
from autodata.reasoning import TEMPLATE_SWITCH, thinking_suffix, with_reasoning
from autodata.secrets import Secret

log = logging.getLogger(__name__)

# A Retry-After larger than this is clipped: a run should not sleep for an hour on one header.
RETRY_AFTER_CAP_S = 300.0
# Below uvicorn's 5 s keep-alive (vLLM, SGLang, llama-cpp-python): reusing a socket the
# server is about to close costs a failed request and a retry.
KEEPALIVE_S = 4.0
# check() should fail within seconds, not after a generation-sized timeout_s.
CHECK_TIMEOUT_S = 15.0
BODY_EXCERPT_CHARS = 500
# First wait of the start-up check's backoff while a server that accepted the connection is busy (1c)
BUSY_BACKOFF_S = 2.0
# How servers word "prompt + max_tokens exceed the context": OpenAI's code, vLLM's and llama.cpp's messages
_CONTEXT_EXCEEDED = re.compile(r"context_length_exceeded|maximum context length|exceeds the available context", re.I)
# Numbers in such a body: vLLM "maximum context length is 4096 tokens ... (4187 in the messages, ...)";
# llama.cpp {"n_prompt_tokens": 4187, "n_ctx": 4096}
_CONTEXT_NUMBER = re.compile(r"maximum context length is (\d+)|\"n_ctx\"\s*:\s*(\d+)", re.I)
_PROMPT_NUMBER = re.compile(r"(\d+) in the messages|\"n_prompt_tokens\"\s*:\s*(\d+)", re.I)


@dataclass
class _Replica:
    url: str
    chat_url: str
    in_flight: int = 0


# How a JSON schema is sent, tried in this order until a server accepts one: the OpenAI form
# (vLLM, SGLang, llama.cpp's llama-server, hosted APIs), then llama-cpp-python's
# {"type": "json_object", "schema": ...}, then nothing (the caller repairs the JSON).
RESPONSE_FORMATS = ("json_schema", "json_object", None)


class _ResponseFormatRejected(BackendError):
    """The server refused a request because of its response_format."""


class _HTTPStatusError(Exception):
    """The server answered with a non-2xx status; ``text`` is its body."""

    def __init__(self, status: int, headers: Mapping[str, str], text: str):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers
        self.text = text


class _ConnectionFailed(Exception):
    """No answer: connection refused or dropped, or a timeout; raised from the aiohttp/OS error."""


class _InvalidBody(Exception):
    """A 2xx whose body is not a ChatCompletion (not JSON, cut short, no 'choices'): a proxy's or an
    overloaded server's hiccup, retried like a 5xx."""


class _ContextExceeded(BackendError):
    """HTTP 400: prompt + max_tokens do not fit the model's context; ``text`` is the server's body."""

    def __init__(self, message: str, text: str):
        super().__init__(message)
        self.text = text


def _api_key(env_name: Optional[str]) -> str:
    if not env_name:
        # Servers without auth ignore the header, but some proxies in front of them refuse a
        # request that has none; the OpenAI convention for "no key" is a placeholder.
        return "EMPTY"
    key = os.environ.get(env_name)
    if not key:
        raise ValueError(
            f"models.api_key_env names the environment variable {env_name!r}, but it is not set or empty; "
            f"export {env_name}=<your key>, or set api_key_env=null for a server without authentication"
        )
    return key


def _root_cause(err: BaseException) -> BaseException:
    """The aiohttp/OS error under our wrapper (and under aiohttp's own, e.g. the OSError of a refusal).

    Stops above a CancelledError: aiohttp raises its total timeout from the cancellation it used.
    """
    while err.__cause__ is not None and not isinstance(err.__cause__, asyncio.CancelledError):
        err = err.__cause__
    return err


def _describe(err: BaseException) -> str:
    root = _root_cause(err)
    return f"{type(root).__name__}: {root}".rstrip(": ")


def _is_timeout(err: BaseException) -> bool:
    # aiohttp's timeouts (its total timeout, ServerTimeoutError, SocketTimeoutError) are all
    # TimeoutError, somewhere in the chain under our wrapper.
    chain: Optional[BaseException] = err
    while chain is not None:
        if isinstance(chain, TimeoutError):
            return True
        chain = chain.__cause__
    return False


def _busy(err: Any) -> bool:
    """A timeout after the connection was made: the server is there but slow. A connect timeout is not."""
    return (isinstance(err, _ConnectionFailed) and _is_timeout(err)
            and not isinstance(_root_cause(err), aiohttp.ConnectionTimeoutError))


def _retryable(err: BaseException) -> bool:
    if isinstance(err, (_ConnectionFailed, _InvalidBody)):  # includes timeouts
        return True
    if isinstance(err, _HTTPStatusError):
        # 408 is the server's own request timeout, so it is retried like a client-side one.
        return err.status in (408, 429) or err.status >= 500
    return False


def retry_after_s(headers: Any, now: Optional[float] = None) -> Optional[float]:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or None.

    >>> retry_after_s({"retry-after": "3"})
    3.0
    >>> retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0)
    10.0
    >>> retry_after_s({}) is None
    True
    """
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_kind(err: Optional[BaseException]) -> str:
    """The key a retried fault is counted under in stats.json's ``retries``.

    >>> retry_kind(_HTTPStatusError(429, {}, ""))
    'http_429'
    >>> retry_kind(_InvalidBody("x"))
    'invalid_json'
    """
    if isinstance(err, _HTTPStatusError):
        return f"http_{err.status}"
    if isinstance(err, _InvalidBody):
        return "invalid_json"
    if err is not None and _is_timeout(err):
        return "timeout"
    return "connection"


def context_numbers(text: str) -> tuple[Optional[int], Optional[int]]:
    """(context length, prompt tokens) a context-exceeded body states; None where it does not.

    >>> context_numbers("This model's maximum context length is 4096 tokens. However, you requested 4187 "
    ...                 "tokens (91 in the messages, 4096 in the completion).")
    (4096, 91)
    >>> context_numbers('{"error": {"n_prompt_tokens": 4187, "n_ctx": 4096}}')
    (4096, 4187)
    """
    def first(pattern: re.Pattern) -> Optional[int]:
        match = pattern.search(text)
        return int(next(g for g in match.groups() if g)) if match else None

    return first(_CONTEXT_NUMBER), first(_PROMPT_NUMBER)


def split_by_weight(total: int, weights: list[int]) -> list[int]:
    """Integers proportional to ``weights`` that add up to ``total`` (largest remainder).

    Usage comes per response, not per choice; splitting it this way keeps the
    sums over a call's completions equal to what the server counted.

    >>> split_by_weight(10, [1, 1, 1])
    [4, 3, 3]
    >>> split_by_weight(7, [0, 0])
    [4, 3]
    >>> split_by_weight(9, [1, 2])
    [3, 6]
    """
    if not weights:
        return []
    if sum(weights) <= 0:
        weights = [1] * len(weights)
    scale = sum(weights)
    shares = [total * w // scale for w in weights]
    order = sorted(range(len(weights)), key=lambda i: -((total * weights[i]) % scale))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _seed_at(seed: Optional[int], offset: int) -> Optional[int]:
    # Stay in 31 bits: llama.cpp and some hosted APIs reject seeds beyond int32.
    return None if seed is None else (seed + offset) & 0x7FFFFFFF


class OpenAIBackend:
    """Chat completions against one model served at one or more replica URLs."""

    def __init__(self, endpoint: EndpointConfig, *, backoff_s: float = 1.0, backoff_max_s: float = 60.0,
                 origin: Optional[str] = None):
        """``backoff_s``/``backoff_max_s``: first and largest wait between retries (tests shrink them).

        ``origin``: where the replica set comes from when something outside the config keeps it (an endpoints
        file, ``autodata.endpoints``): then the set may be empty, and ``set_replicas`` replaces it while running.
        """
        urls = list(endpoint.base_urls or ([endpoint.base_url] if endpoint.base_url else []))
        if not urls and origin is None:
            raise ValueError(
                "backend=openai needs a server URL, found none; set models.base_url=http://HOST:PORT/v1 "
                "(or models.default.base_urls=[...] for replicas)"
            )
        if not endpoint.model:
            raise ValueError(
                "backend=openai needs the served model name, found none; "
                "set models.model=<a name the server lists at /v1/models>"
            )
        self.endpoint = endpoint
        self.model = endpoint.model
        self.origin = origin
        # Called before every attempt and start-up check, when set: lets the replica set follow its origin
        # (autodata.endpoints.EndpointsFollower.poll, which re-reads its file at most once a second)
        self.refresh: Optional[Callable[[], None]] = None
        self.thinking = endpoint.thinking
        # The thinking switch changes what the server renders, so answers of the two modes never share a cache entry
        self.cache_identity = f"openai:{endpoint.model}" + thinking_suffix(endpoint.thinking)
        self._max_concurrency = int(endpoint.max_concurrency or 64)
        timeout_s = float(endpoint.timeout_s or 600.0)
        self._api_key = Secret(_api_key(endpoint.api_key_env))
        # Sent with each request once set_replicas changed the key after the session was made; None otherwise
        self._auth_override: Optional[dict[str, str]] = None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._check_timeout = aiohttp.ClientTimeout(total=min(CHECK_TIMEOUT_S, timeout_s))
        # Made on first use, inside the event loop that uses this backend (aiohttp binds to it).
        self._session: Optional[aiohttp.ClientSession] = None
        self._replicas: list[_Replica] = []
        self._next = 0
        self.set_replicas(urls)
        self._slots = asyncio.Semaphore(self._max_concurrency)
        self._response_format: Optional[str] = RESPONSE_FORMATS[0] if endpoint.structured_output else None
        # Learned from the first short answer; later calls fan out n single-sample requests at once.
        self._ignores_n = False
        # max_model_len of this model per replica URL, from GET /models (check); None where a server does not say
        self._listed_context: dict[str, Optional[int]] = {}
        # The context a server's context-exceeded answer stated: later requests are clamped to it up front
        self._learned_context: Optional[int] = None
        # Retried faults by kind (retry_kind), read by LLM.retry_counts into stats.json's ``retries``
        self.retries: Counter = Counter()
        self._startup_wait_s = float(endpoint.startup_wait_s if endpoint.startup_wait_s is not None else 0.0)
        self._retry_policy = AsyncRetrying(
            stop=stop_after_attempt(int(endpoint.max_retries or 0) + 1),
            wait=self._wait_s,
            retry=retry_if_exception(_retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )
        self._backoff = wait_exponential_jitter(multiplier=backoff_s, max=backoff_max_s, jitter=backoff_s)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # The pool must allow max_concurrency sockets, to one replica or spread over several:
            # aiohttp's default of 100 would cap throughput below the semaphore, which stays the
            # one bound on requests in flight. limit_per_host=0: no second, per-replica cap.
            connector = aiohttp.TCPConnector(
                limit=self._max_concurrency, limit_per_host=0, keepalive_timeout=KEEPALIVE_S
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers={"Authorization": f"Bearer {self._api_key.value}"},
            )
            self._auth_override = None
        return self._session

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.name!r})"

    @property
    def replica_urls(self) -> list[str]:
        return [r.url for r in self._replicas]

    def set_replicas(self, urls: list[str], *, api_key: Optional[str] = None) -> None:
        """Serve from ``urls`` from now on (an endpoints file changed: a replica came up, went down or moved).

        Replicas that stay keep their in-flight counts. A request in flight to a removed replica finishes, or fails
        and is retried on the new set like any failure; with no replica at all, requests fail over to the retry
        backoff until one comes back or the attempts run out. ``api_key``: the key the new set wants (None: the
        current one).
        """
        current = {r.url: r for r in self._replicas}
        self._replicas = [current.get(url) or _Replica(url, url.rstrip("/") + "/chat/completions")
                          for url in dict.fromkeys(urls)]
        self._next = self._next % len(self._replicas) if self._replicas else 0
        if api_key is not None and api_key != self._api_key.value:
            self._api_key = Secret(api_key)
            if self._session is not None:
                self._auth_override = {"Authorization": f"Bearer {api_key}"}
        first = urls[0] if urls else "no replica"
        if self.origin is not None:
            self.name = f"openai:{self.model} from {self.origin} ({len(self._replicas)} live replicas)"
        else:
            self.name = f"openai:{self.model}@{first}" + (f" (+{len(urls) - 1} replicas)" if len(urls) > 1 else "")

    def _no_replica(self) -> EndpointUnreachable:
        return EndpointUnreachable(
            f"no live replica of model {self.model!r} in {self.origin}: every replica there is down, or none has "
            f"registered yet. Is the serving job running (squeue --me)? Wait until its log says a replica is up "
            f"(python -m autodata.endpoints show <file> lists them), or fix models.endpoints_file."
        )

    # -- public protocol -------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> list[Completion]:
        n, seed = request.n, request.sampling.seed
        if n > 1 and self._ignores_n:
            batches = await asyncio.gather(*(self._sample(request, 1, _seed_at(seed, i)) for i in range(n)))
            completions = [c for batch in batches for c in batch]
        else:
            completions = await self._sample(request, n, seed)
            if len(completions) < n:
                if len(completions) == 1 and not self._ignores_n:
                    self._ignores_n = True
                    log.warning(
                        "%s returned 1 choice for n=%d; sending one request per sample from now on", self.name, n
                    )
                got = len(completions)
                batches = await asyncio.gather(
                    *(self._sample(request, 1, _seed_at(seed, got + i)) for i in range(n - got))
                )
                completions += [c for batch in batches for c in batch]
        if len(completions) < n:
            raise BackendError(
                f"{self.name} returned {len(completions)} completions where {n} were asked for, even one "
                f"request per sample; the server answers with no choices, check its log"
            )
        return completions[:n]

    async def check(self) -> None:
        # A replica that accepted the connection but did not answer in time is busy (e.g. still finishing a killed
        # run's requests), not down: it is asked again with backoff for up to startup_wait_s. A refusal fails at once.
        deadline = time.monotonic() + self._startup_wait_s
        await self._wait_for_replicas(deadline)
        pause = BUSY_BACKOFF_S
        while True:
            replicas = list(self._replicas)
            results = await asyncio.gather(*(self._check_replica(r) for r in replicas), return_exceptions=True)
            busy = [r.url for r, err in zip(replicas, results) if _busy(err)]
            left = deadline - time.monotonic()
            if not busy or left <= 0:
                break
            if pause == BUSY_BACKOFF_S:
                log.warning("%s accepted the connection but did not answer GET /models within %.0f s: busy; waiting "
                            "up to %.0f s more for it (models.startup_wait_s)", ", ".join(busy),
                            self._check_timeout.total, left)
            await asyncio.sleep(min(pause, left))
            pause *= 2
        unreachable = [(r.url, err) for r, err in zip(replicas, results) if isinstance(err, _ConnectionFailed)]
        if unreachable and self.origin is not None and len(unreachable) < len(replicas):
            # A file-kept set: the others serve, and a request that lands on a dead one is retried on another.
            log.warning("%d of %d replicas listed up in %s did not answer GET /models (%s); serving from the others",
                        len(unreachable), len(replicas), self.origin, ", ".join(url for url, _ in unreachable))
            unreachable = []
            results = [None if isinstance(err, _ConnectionFailed) else err for err in results]
        if unreachable:
            lines = "\n".join(f"  {url}: {_describe(err)}" for url, err in unreachable)
            hint = ("Is the server running and listening there? Start it, or fix models.base_url / base_urls."
                    if not any(_busy(err) for _, err in unreachable) else
                    f"The server accepted the connection but stayed busy for models.startup_wait_s="
                    f"{self._startup_wait_s:g} s; wait for it to finish its requests (or raise startup_wait_s).")
            if self.origin is not None:
                hint = (f"The replicas are listed up in {self.origin}. Is the serving job still running "
                        f"(squeue --me)? Check its replica logs, or wait for it to register again after a requeue.")
            raise EndpointUnreachable(
                f"{len(unreachable)} of {len(replicas)} replicas of model {self.model!r} "
                f"did not answer GET /models:\n{lines}\n{hint}"
            )
        for replica, err in zip(replicas, results):
            if isinstance(err, _HTTPStatusError) and err.status in (401, 403):
                key = self.endpoint.api_key_env
                if self.origin is not None:
                    fix = (f"the server refused the key of the key file named in {self.origin}; a serving job "
                           f"writing another folder, or a key file replaced while the job ran? Requeue the serving "
                           f"job (scontrol requeue JOBID) so it starts with the key file's key")
                else:
                    fix = (f"the server refused the API key read from ${key} (api_key_env); export a valid key for "
                           f"it in {key}" if key else "the server wants an API key and none was sent; export it in a "
                           "variable and set models.api_key_env to that variable's name")
                raise BackendError(f"GET {replica.url}/models answered {err.status} ({_excerpt(err.text)}): {fix}") from err
            if isinstance(err, _HTTPStatusError):
                raise BackendError(
                    f"GET {replica.url}/models answered {err.status}: {_excerpt(err.text)}; "
                    f"check the URL ends in /v1 and api_key_env names the right key"
                ) from err
            if isinstance(err, BaseException):
                raise err

    async def _wait_for_replicas(self, deadline: float) -> None:
        """With a file-kept set: until the file lists a live replica (a server still starting), up to ``deadline``."""
        if self.refresh is not None:
            self.refresh()
        if self._replicas or self.origin is None:
            return
        log.warning("no live replica in %s yet; waiting up to %.0f s for one (models.startup_wait_s)", self.origin,
                    max(0.0, deadline - time.monotonic()))
        while not self._replicas:
            if time.monotonic() >= deadline:
                raise self._no_replica()
            await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            if self.refresh is not None:
                self.refresh()

    async def context_length(self) -> Optional[int]:
        """``max_model_len`` from GET /models (vLLM and SGLang list it; hosted APIs usually do not).

        The smallest over the replicas, since a request may land on any of them; None when a
        replica does not say.
        """
        if any(r.url not in self._listed_context for r in self._replicas):
            await self.check()
        # A file-kept set may hold a replica that did not answer (check() served from the others)
        lengths = [self._listed_context[r.url] for r in self._replicas if r.url in self._listed_context]
        return None if not lengths or any(n is None for n in lengths) else min(lengths)  # type: ignore[type-var]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- one sample batch --------------------------------------------------------------

    async def _sample(self, request: ChatRequest, n: int, seed: Optional[int]) -> list[Completion]:
        max_tokens = self._fitted_max_tokens(request)
        shrunk = False
        while True:
            mode = self._response_format if request.json_schema is not None else None
            try:
                response = await self._send(self._params(request, n, seed, mode, max_tokens))
                return _completions(response, thinking=self.thinking)
            except _ContextExceeded as err:
                # Shrunk and sent once more; a second refusal fails the document (the same request sent again, on
                # every resume, would be refused the same way).
                if shrunk:
                    raise BackendError(f"{err} (again after max_tokens was lowered to {max_tokens})") from err
                shrunk = True
                max_tokens = self._shrunk_max_tokens(request, max_tokens, err)
            except _ResponseFormatRejected as err:
                # Concurrent requests see the same refusal; only the first one moves down the ladder.
                if self._response_format == mode:
                    self._response_format = RESPONSE_FORMATS[RESPONSE_FORMATS.index(mode) + 1]
                    log.warning(
                        "%s refused response_format type %r (%s); using %s from now on",
                        self.name,
                        mode,
                        err,
                        f"type {self._response_format!r}" if self._response_format else "no response_format",
                    )

    def _context(self) -> Optional[int]:
        """The context length known without asking: config, the model listing, or a server's refusal."""
        if self.endpoint.context_length:
            return int(self.endpoint.context_length)
        listed = [self._listed_context.get(r.url) for r in self._replicas]
        known = [n for n in listed + [self._learned_context] if n]
        return min(known) if known else None

    def _fitted_max_tokens(self, request: ChatRequest) -> int:
        """``max_tokens`` clamped so prompt + answer fit the context, when it is known.

        The prompt is estimated as the document cap does (autodata.backends.base.estimate_tokens); a server's
        exact count can be higher, which a context-exceeded answer then corrects (``_shrunk_max_tokens``).
        """
        asked = int(request.sampling.max_tokens)
        context = self._context()
        if context is None:
            return asked
        room = context - estimate_tokens(request.messages)
        if room < 1:
            raise BackendError(
                f"the prompt alone (~{estimate_tokens(request.messages)} tokens) does not fit the {context}-token "
                f"context of {self.name}; lower models.*.max_document_tokens or generate.max_rounds"
            )
        return min(asked, room)

    def _shrunk_max_tokens(self, request: ChatRequest, sent: int, err: _ContextExceeded) -> int:
        context, prompt = context_numbers(err.text)
        if context is not None:
            self._learned_context = context
        if context is not None and prompt is not None:
            # Below what was refused, so the retry is never the same request
            room = min(context - prompt, sent - 1)
        else:
            # Without the server's counts: the clamp against what is now known, and at most half of what failed
            room = sent // 2 if context is None else context - estimate_tokens(request.messages)
            room = min(room, sent // 2)
        if room < 1:
            raise BackendError(
                f"the prompt alone does not fit the context of {self.name} (the server said: {_excerpt(err.text)}); "
                f"lower models.*.max_document_tokens or generate.max_rounds"
            ) from err
        log.warning("%s: prompt + max_tokens %d exceed the context; retrying once with max_tokens %d",
                    self.name, sent, room)
        return room

    def _params(self, request: ChatRequest, n: int, seed: Optional[int], mode: Optional[str],
                max_tokens: Optional[int] = None) -> dict[str, Any]:
        sampling = request.sampling
        params: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens if max_tokens is None else max_tokens,
            "n": n,
        }
        if seed is not None:
            params["seed"] = seed
        if mode == "json_schema":
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": request.json_schema, "strict": False},
            }
        elif mode == "json_object":
            params["response_format"] = {"type": "json_object", "schema": request.json_schema}
        if self.endpoint.extra_body:
            params.update(self.endpoint.extra_body)
        if self.thinking is not None:
            # vLLM and SGLang hand chat_template_kwargs to the chat template (Qwen3/Qwen3.5 read enable_thinking)
            kwargs = dict(params.get("chat_template_kwargs") or {})
            kwargs[TEMPLATE_SWITCH] = bool(self.thinking)
            params["chat_template_kwargs"] = kwargs
        return params

    # -- transport: retries, balancing, error mapping ----------------------------------

    async def _send(self, params: dict[str, Any]) -> dict[str, Any]:
        failed: list[str] = []
        try:
            try:
                # The first try skips tenacity: its per-call bookkeeping (a policy copy, thread-locals,
                # inspect calls per strategy) measured ~0.1 ms CPU per request, a third of this path,
                # and nearly every request succeeds first time. A retryable failure becomes the
                # policy's attempt 1, so waits, logs and the attempt count are as if it made it.
                return await self._attempt(params, failed)
            except (_HTTPStatusError, _ConnectionFailed, _InvalidBody) as err:
                if not _retryable(err):
                    raise
                first_failure = [err]
            return await self._retry_policy.copy()(self._attempt_after, first_failure, params, failed)
        except _InvalidBody as err:
            raise BackendError(f"{err} (after {int(self.endpoint.max_retries or 0) + 1} attempts)") from err
        except _HTTPStatusError as err:
            if err.status == 404:
                # Every later call would 404 too (the model is gone or misnamed): stop the run, do not skip documents.
                raise ModelNotServed(
                    f"{self.name} answered 404 to a chat request for model {self.model!r}: {_excerpt(err.text)}. "
                    f"The server does not serve this model (any more); check GET /models and models.model."
                ) from err
            if err.status == 400 and _CONTEXT_EXCEEDED.search(err.text):
                raise _ContextExceeded(
                    f"{self.name} refused a request as longer than the model's context (max_tokens "
                    f"{params.get('max_tokens')}): {_excerpt(err.text)}", err.text) from err
            raise BackendError(
                f"{self.name} answered {err.status} to a chat request: {_excerpt(err.text)}"
                + ("" if _retryable(err) else " (not retried: the request itself was refused; fix it or the config)")
            ) from err
        except _ConnectionFailed as err:
            raise self._unreachable(err, failed) from err

    async def _fetch(
        self, method: str, url: str, timeout: aiohttp.ClientTimeout, body: Optional[dict[str, Any]] = None
    ) -> tuple[int, bytes]:
        """Status and body of a 2xx answer; ``_HTTPStatusError`` for any other, ``_ConnectionFailed`` for none."""
        try:
            session = self._http()
            headers = self._auth_override
            async with session.request(method, url, json=body, timeout=timeout, headers=headers) as response:
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as err:
            # ClientError here is never a status (raise_for_status is off): refused, reset,
            # disconnected, a truncated body, or a URL aiohttp cannot use.
            raise _ConnectionFailed(_describe(err)) from err
        if not 200 <= response.status < 300:
            raise _HTTPStatusError(response.status, response.headers, raw.decode("utf-8", "replace"))
        return response.status, raw

    async def _attempt_after(
        self, first_failure: list[Exception], params: dict[str, Any], failed: list[str]
    ) -> dict[str, Any]:
        """``_attempt``, except that the first call re-raises the failure already seen."""
        if first_failure:
            raise first_failure.pop()
        return await self._attempt(params, failed)

    async def _attempt(self, params: dict[str, Any], failed: list[str]) -> dict[str, Any]:
        if self.refresh is not None:
            self.refresh()
        async with self._slots:
            if not self._replicas:
                # Retried with backoff like a refused connection: a requeued server registers again.
                raise _ConnectionFailed(f"no live replica in {self.origin}")
            replica = self._pick(failed)
            replica.in_flight += 1
            try:
                status, raw = await self._fetch("POST", replica.chat_url, self._timeout, params)
            except _HTTPStatusError as err:
                if "response_format" in params and _rejects_response_format(err):
                    # Not retried: the same body would be refused again.
                    raise _ResponseFormatRejected(f"HTTP {err.status}: {_excerpt(err.text)}") from err
                raise
            except _ConnectionFailed:
                # Remembered so the retry prefers another replica.
                if replica.url not in failed:
                    failed.append(replica.url)
                raise
            finally:
                replica.in_flight -= 1
        body = _json_or_none(raw)
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
            text = " ".join(raw.decode("utf-8", "replace").split())[:BODY_EXCERPT_CHARS]
            raise _InvalidBody(
                f"{replica.chat_url} answered {status} without a ChatCompletion "
                f"(no 'choices' list): {text!r}; is base_url the server's OpenAI API root (it usually ends in /v1)?"
            )
        return body

    def _pick(self, avoid: list[str]) -> _Replica:
        """Least requests in flight, ties round-robin; replicas that just failed this request last."""
        count = len(self._replicas)
        start = self._next
        self._next = (start + 1) % count
        best: Optional[_Replica] = None
        for i in range(count):
            replica = self._replicas[(start + i) % count]
            if replica.url in avoid and len(avoid) < count:
                continue
            if best is None or replica.in_flight < best.in_flight:
                best = replica
        assert best is not None
        return best

    def _wait_s(self, state: RetryCallState) -> float:
        err = state.outcome.exception() if state.outcome else None
        if isinstance(err, _HTTPStatusError):
            asked = retry_after_s(err.headers)
            if asked is not None:
                return min(asked, RETRY_AFTER_CAP_S)
        return self._backoff(state)

    def _log_retry(self, state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        self.retries[retry_kind(err)] += 1
        if isinstance(err, _HTTPStatusError):
            what = f"HTTP {err.status}"
        elif isinstance(err, _InvalidBody):
            what = "a 200 without a ChatCompletion"
        else:
            what = _describe(err) if err else "unknown error"
        wait = state.next_action.sleep if state.next_action else 0.0
        log.info("%s: attempt %d failed (%s); retrying in %.1f s", self.name, state.attempt_number, what, wait)

    def _unreachable(self, err: _ConnectionFailed, failed: list[str]) -> EndpointUnreachable:
        if self.origin is not None and not self._replicas:
            return self._no_replica()
        urls = ", ".join(failed) or ", ".join(r.url for r in self._replicas)
        attempts = int(self.endpoint.max_retries or 0) + 1
        if _is_timeout(err):
            return EndpointUnreachable(
                f"{urls} did not answer a chat request for model {self.model!r} "
                f"within timeout_s={self.endpoint.timeout_s} "
                f"in {attempts} attempts (last error: {_describe(err)}). Is the server overloaded or stuck? "
                f"Check its log, lower max_concurrency, or raise timeout_s."
            )
        return EndpointUnreachable(
            f"could not connect to {urls} for model {self.model!r} in {attempts} attempts "
            f"(last error: {_describe(err)}). Is the server running and listening there? "
            f"Start it, or fix models.base_url / base_urls."
        )

    async def _check_replica(self, replica: _Replica) -> None:
        url = replica.url.rstrip("/") + "/models"
        _, raw = await self._fetch("GET", url, self._check_timeout)
        page = _json_or_none(raw)
        if not isinstance(page, dict) or not isinstance(page.get("data"), list):
            raise BackendError(
                f"GET {url} answered without a model list (no 'data' list); "
                f"is base_url the server's OpenAI API root (it usually ends in /v1)?"
            )
        served = [m["id"] for m in page["data"] if isinstance(m, dict) and "id" in m]
        if served and self.model not in served:
            # Every chat call would 404: a run would finish with nothing generated and no error.
            raise BackendError(
                f"{replica.url} does not serve model {self.model!r}; GET {url} lists {served[:20]}. "
                f"Set models.model (or models.roles.<role>.model) to one of those names."
            )
        listed = next((m for m in page["data"] if isinstance(m, dict) and m.get("id") == self.model), {})
        length = listed.get("max_model_len")
        self._listed_context[replica.url] = length if isinstance(length, int) and length > 0 else None


def _rejects_response_format(err: _HTTPStatusError) -> bool:
    # vLLM answers 400, FastAPI validation 422, llama-cpp-python 500 (its validation error
    # escapes as an internal error); all name the field in the body.
    if err.status not in (400, 422, 500):
        return False
    text = err.text.lower()
    return "response_format" in text or "json_schema" in text


def _excerpt(text: str) -> str:
    """A body on one line, cut to BODY_EXCERPT_CHARS.

    >>> _excerpt('{"error":   {"message": "bad"}}')
    '{"error": {"message": "bad"}}'
    >>> len(_excerpt("x" * 600))
    503
    """
    text = " ".join(text.split())
    return text[:BODY_EXCERPT_CHARS] + ("..." if len(text) > BODY_EXCERPT_CHARS else "")


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:  # includes UnicodeDecodeError
        return None


def _completions(response: dict[str, Any], thinking: Optional[bool] = None) -> list[Completion]:
    """Completions from a ChatCompletion body; fields some servers omit default to empty.

    A server with a reasoning parser returns the reasoning apart from the answer (``reasoning_content``; newer vLLM
    names it ``reasoning``): it is put back in front of the answer inside explicit tags, so every backend's text
    reads alike (autodata/reasoning.py) and a reasoning that never closed leaves no answer.
    """
    choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
    texts = [_choice_text(c, thinking) for c in choices]
    usage = response.get("usage") or {}
    prompt = split_by_weight(int(usage.get("prompt_tokens") or 0), [1] * len(choices))
    completion = split_by_weight(int(usage.get("completion_tokens") or 0), [len(t) for t in texts])
    return [
        Completion(text=t, finish_reason=c.get("finish_reason") or "unknown", prompt_tokens=p, completion_tokens=k)
        for c, t, p, k in zip(choices, texts, prompt, completion)
    ]


def _choice_text(choice: dict[str, Any], thinking: Optional[bool]) -> str:
    message = choice.get("message") or {}
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content")
    if reasoning is None:
        reasoning = message.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, str):
        reasoning = str(reasoning)
    return with_reasoning(content, reasoning=reasoning, thinking=thinking, finish_reason=choice.get("finish_reason"))
