"""An asyncio micro-batcher: many concurrent requests, one blocking model call.

In-process backends (transformers, the vLLM offline engine) are fastest when
they decode many sequences at once, but the generate loop issues requests one
coroutine at a time. ``MicroBatcher.submit`` queues a payload and awaits its
result; one worker task drains the queue into batches of at most
``batch_size`` sequences (a payload's ``size``, e.g. its number of samples),
runs the blocking ``run_batch`` function in a worker thread so the event loop
keeps serving other coroutines, and resolves each payload's future.

Payloads that cannot share a model call (say, different sampling settings on a
backend that needs them equal) get different ``key`` values; a batch only
holds payloads with the key of the oldest waiting payload, so nothing starves.

>>> import asyncio
>>> calls = []
>>> def run(batch):
...     calls.append(list(batch))
...     return [x * 10 for x in batch]
>>> async def main():
...     batcher = MicroBatcher(run, batch_size=4)
...     return await asyncio.gather(*(batcher.submit(i) for i in range(6)))
>>> asyncio.run(main())
[0, 10, 20, 30, 40, 50]
>>> calls
[[0, 1, 2, 3], [4, 5]]
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Generic, Hashable, Optional, Sequence, TypeVar

from autodata.backends.base import BackendError

P = TypeVar("P")
R = TypeVar("R")


@dataclass
class _Item:
    payload: Any
    key: Hashable
    size: int
    future: asyncio.Future


class MicroBatcher(Generic[P, R]):
    """Collects concurrent ``submit`` calls into batched ``run_batch`` calls.

    ``run_batch(payloads)`` runs in a worker thread and returns one result per
    payload, in order; a result that is an ``Exception`` instance is raised to
    that payload's caller only. An exception raised by ``run_batch`` itself
    fails every payload of the batch.
    """

    def __init__(
        self,
        run_batch: Callable[[list[P]], Sequence[R | BaseException]],
        batch_size: int,
        *,
        key: Callable[[P], Hashable] = lambda payload: None,
        size: Callable[[P], int] = lambda payload: 1,
        max_wait_s: float = 0.005,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.run_batch = run_batch
        self.batch_size = batch_size
        self.key = key
        self.size = size
        # A short pause after the first payload arrives lets callers that are a
        # few awaits behind join the same batch; negligible next to a decode.
        self.max_wait_s = max_wait_s
        self.batches_run = 0
        # One model, one call at a time, even when two event loops share a backend.
        self._run_lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._queue: Optional[asyncio.Queue[_Item]] = None
        # Items taken off the queue but not yet in a batch (kept here so aclose can fail them)
        self._waiting: deque[_Item] = deque()
        self._worker: Optional[asyncio.Task] = None
        self._closed = False

    async def submit(self, payload: P) -> R:
        if self._closed:
            raise BackendError("the backend was closed (aclose) and cannot take new requests")
        self._ensure_worker()
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(payload, self.key(payload), max(1, self.size(payload)), future))
        return await future

    def _ensure_worker(self) -> None:
        loop = asyncio.get_running_loop()
        # A backend may outlive one event loop (tests, repeated asyncio.run):
        # queue and worker belong to a loop, so start fresh ones per loop.
        if self._loop is not loop or self._worker is None or self._worker.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._waiting = deque()
            self._worker = loop.create_task(self._work(self._queue, self._waiting), name="autodata-microbatcher")

    async def _work(self, queue: asyncio.Queue[_Item], waiting: deque[_Item]) -> None:
        while True:
            if not waiting:
                waiting.append(await queue.get())
                await asyncio.sleep(self.max_wait_s)
            while not queue.empty():
                waiting.append(queue.get_nowait())
            batch = self._take_batch(waiting)
            if not batch:
                continue
            await self._run(batch)

    def _take_batch(self, waiting: deque[_Item]) -> list[_Item]:
        """Oldest live item's key first; fill up to batch_size in arrival order."""
        while waiting and waiting[0].future.done():
            # Its caller gave up (cancelled); do not spend compute on it.
            waiting.popleft()
        if not waiting:
            return []
        key = waiting[0].key
        batch: list[_Item] = []
        used = 0
        kept: deque[_Item] = deque()
        while waiting:
            item = waiting.popleft()
            if item.future.done():
                continue
            # The first item always goes in, even when it alone exceeds
            # batch_size; run_batch splits it into chunks itself.
            fits = not batch or used + item.size <= self.batch_size
            if item.key == key and fits:
                batch.append(item)
                used += item.size
            else:
                kept.append(item)
        waiting.extend(kept)
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        payloads = [item.payload for item in batch]
        try:
            results = await asyncio.to_thread(self._run_locked, payloads)
            if len(results) != len(batch):
                raise BackendError(
                    f"batched model call returned {len(results)} results for {len(batch)} requests"
                )
        except asyncio.CancelledError:
            _fail(batch, BackendError("the backend was closed while this request ran"))
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
            _fail(batch, exc)
            return
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)

    def _run_locked(self, payloads: list[P]) -> Sequence[R | BaseException]:
        with self._run_lock:
            self.batches_run += 1
            return self.run_batch(payloads)

    async def aclose(self) -> None:
        """Stop the worker; callers still waiting get a BackendError."""
        self._closed = True
        worker, queue, waiting = self._worker, self._queue, self._waiting
        self._worker = None
        if worker is not None and not worker.done():
            worker.cancel()
            try:
                await worker
            except (asyncio.CancelledError, RuntimeError):
                pass
        left = list(waiting)
        waiting.clear()
        while queue is not None and not queue.empty():
            left.append(queue.get_nowait())
        _fail(left, BackendError("the backend was closed while this request waited"))


def _fail(items: list[_Item], exc: BaseException) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(exc)
