"""Role-level LLM access: endpoint binding, response cache, accounting, JSON repair.

The generate loop, the train reward and eval call ``LLM.chat`` with a role name
("challenger", "judge", ...). This layer picks the role's endpoint, serves the
call from the on-disk cache when it can, counts calls and tokens per role, and
turns model text into parsed JSON with one repair attempt.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Optional, Sequence, TypeVar

from autodata.backends import Backend, ChatRequest, Completion, Sampling, build_backend, endpoint_key
from autodata.cache import ResponseCache, request_key
from autodata.config import ROLES, EndpointConfig, ModelsConfig, endpoint_for, model_roles

T = TypeVar("T")


@dataclass
class RoleUsage:
    calls: int = 0
    cached_calls: int = 0
    samples: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: int = 0
    repairs: int = 0
    seconds: float = 0.0


@dataclass
class JsonResult(Generic[T]):
    value: Optional[T]
    # Raw model texts, in order (the first answer, then the repair answer if any)
    raw: list[str] = field(default_factory=list)
    error: Optional[str] = None
    repaired: bool = False
    # Every completion drawn for this answer (for token accounting by the caller)
    completions: list[Completion] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def derive_seed(base: int, key: str) -> int:
    """A stable 31-bit seed from the run seed and a call's identity (doc, round, role, index)."""
    digest = hashlib.blake2b(f"{base}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """Parse the JSON object a model wrote, tolerating code fences and chatter around it.

    >>> extract_json('Sure! ```json\\n{"a": 1}\\n``` done')
    {'a': 1}
    >>> extract_json('answer: {"a": {"b": 2}} trailing')
    {'a': {'b': 2}}
    """
    text = text.strip()
    # strict=False: some servers' grammars let raw newlines into JSON strings.
    try:
        return json.loads(text, strict=False)
    except json.JSONDecodeError:
        pass
    for block in _FENCE.findall(text):
        try:
            return json.loads(block.strip(), strict=False)
        except json.JSONDecodeError:
            continue
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object found in the model output")
    decoder = json.JSONDecoder(strict=False)
    try:
        obj, _ = decoder.raw_decode(text[start:])
        return obj
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON ({err.msg} at char {err.pos})") from None


class LLM:
    """One per run: binds roles to shared backend instances and accounts for every call."""

    def __init__(
        self,
        models: ModelsConfig,
        cache: Optional[ResponseCache] = None,
        seed: int = 0,
        backends: Optional[dict[str, Backend]] = None,
        roles: Optional[Sequence[str]] = None,
    ):
        """``roles``: the roles this run calls (default: the generate loop's); only they get a backend, so
        ``check()`` asks only the endpoints the stage uses.

        ``models.endpoints_file``: the roles named there run on that file's live replicas, followed while the
        stage runs (``autodata.endpoints``); an unusable file raises ``EndpointsFileError`` (a ValueError)."""
        self.seed = seed
        self.cache = cache
        self.endpoints: dict[str, EndpointConfig] = {role: endpoint_for(models, role) for role in model_roles(models)}
        self.endpoints_follower = None
        if models.endpoints_file:
            from autodata.endpoints import EndpointsFollower

            self.endpoints_follower = EndpointsFollower(models.endpoints_file)
            self.endpoints = self.endpoints_follower.bind(self.endpoints)
        self.usage: dict[str, RoleUsage] = {role: RoleUsage() for role in self.endpoints}
        if backends is not None:
            # Injected (tests, scripted runs): one backend per role name.
            self.backends = dict(backends)
        else:
            shared: dict[tuple, Backend] = {}
            self.backends = {}
            for role in roles if roles is not None else ROLES:
                endpoint = self.endpoints[role]
                if self.endpoints_follower is not None and role in self.endpoints_follower.served:
                    # Its own backend: the file moves its replicas, which no other role's backend should follow.
                    self.backends[role] = self.endpoints_follower.backend(role, endpoint)
                    continue
                key = endpoint_key(endpoint)
                if key not in shared:
                    shared[key] = build_backend(endpoint)
                self.backends[role] = shared[key]

    def endpoint(self, role: str) -> EndpointConfig:
        return self.endpoints[role]

    def unique_backends(self) -> list[Backend]:
        seen: dict[int, Backend] = {}
        for backend in self.backends.values():
            seen.setdefault(id(backend), backend)
        return list(seen.values())

    async def check(self) -> None:
        """Fail fast when an endpoint cannot serve (names the URL)."""
        for backend in self.unique_backends():
            await backend.check()

    async def aclose(self) -> None:
        for backend in self.unique_backends():
            await backend.aclose()

    def sampling(self, role: str, seed_key: str, max_tokens: Optional[int] = None) -> Sampling:
        endpoint = self.endpoints[role]
        return Sampling(
            temperature=float(endpoint.temperature),
            top_p=float(endpoint.top_p),
            max_tokens=int(max_tokens or endpoint.max_tokens),
            seed=derive_seed(self.seed, seed_key),
        )

    async def chat(
        self,
        role: str,
        messages: list[dict[str, str]],
        *,
        n: int = 1,
        schema: Optional[dict] = None,
        schema_name: str = "output",
        seed_key: str,
        max_tokens: Optional[int] = None,
    ) -> list[Completion]:
        """``n`` completions of ``messages`` from the role's endpoint (cached)."""
        backend = self.backends[role]
        endpoint = self.endpoints[role]
        request = ChatRequest(
            messages=messages,
            sampling=self.sampling(role, seed_key, max_tokens),
            n=n,
            json_schema=schema if endpoint.structured_output else None,
            schema_name=schema_name,
        )
        usage = self.usage[role]
        key = request_key(backend.cache_identity, request) if self.cache is not None else None
        if key is not None:
            hit = self.cache.get(key)
            if hit is not None:
                usage.cached_calls += 1
                return hit
        started = time.perf_counter()
        try:
            completions = await backend.complete(request)
        except Exception:
            usage.failures += 1
            raise
        usage.seconds += time.perf_counter() - started
        usage.calls += 1
        usage.samples += len(completions)
        for c in completions:
            usage.prompt_tokens += c.prompt_tokens
            usage.completion_tokens += c.completion_tokens
        if key is not None:
            self.cache.put(key, completions)
        return completions

    async def chat_json(
        self,
        role: str,
        messages: list[dict[str, str]],
        *,
        schema: dict,
        parse: Callable[[Any], T],
        seed_key: str,
        schema_name: str = "output",
        max_tokens: Optional[int] = None,
    ) -> JsonResult[T]:
        """One structured answer, parsed by ``parse``; one repair round on malformed output.

        A parse failure after the repair is returned (not raised) so the caller
        can count it as a failure reason and move on.
        """
        result: JsonResult[T] = JsonResult(value=None)
        attempt_messages = messages
        for attempt in range(2):
            completion = (
                await self.chat(
                    role,
                    attempt_messages,
                    schema=schema,
                    schema_name=schema_name,
                    seed_key=f"{seed_key}/json{attempt}",
                    max_tokens=max_tokens,
                )
            )[0]
            result.completions.append(completion)
            result.raw.append(completion.text)
            try:
                result.value = parse(extract_json(completion.text))
                result.error = None
                result.repaired = attempt > 0
                return result
            except (ValueError, TypeError, KeyError) as err:
                truncated = " (the answer hit the token limit)" if completion.finish_reason == "length" else ""
                result.error = f"{err}{truncated}"
            if attempt == 0:
                self.usage[role].repairs += 1
                attempt_messages = messages + [
                    {"role": "assistant", "content": completion.text},
                    {
                        "role": "user",
                        "content": (
                            f"Your answer could not be used: {result.error}. Reply again with only "
                            f"one JSON object that follows this schema, nothing else:\n"
                            f"{json.dumps(schema, separators=(',', ':'))}"
                        ),
                    },
                ]
        return result

    def usage_summary(self) -> dict[str, dict[str, Any]]:
        return {role: vars(u).copy() for role, u in self.usage.items()}

    def retry_counts(self) -> dict[str, int]:
        """Faults the backends retried in this process, by kind (``http_500``, ``http_429``, ``timeout``,
        ``invalid_json``, ``connection``), summed over endpoints; backends that do not retry count none."""
        total: dict[str, int] = {}
        for backend in self.unique_backends():
            for kind, n in (getattr(backend, "retries", None) or {}).items():
                total[kind] = total.get(kind, 0) + n
        return dict(sorted(total.items()))
