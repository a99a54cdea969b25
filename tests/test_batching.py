"""MicroBatcher: grouping by key, sequence budget, per-item errors, cancellation, closing."""

from __future__ import annotations

import asyncio
import doctest
import threading
import time

import pytest

from autodata.backends import batching
from autodata.backends.base import BackendError
from autodata.backends.batching import MicroBatcher


def test_module_doctest():
    assert doctest.testmod(batching).failed == 0


def test_batches_hold_one_key_and_respect_the_sequence_budget():
    calls: list[list[tuple[str, int]]] = []

    def run(batch):
        calls.append(list(batch))
        return [f"{key}{size}" for key, size in batch]

    async def main():
        batcher = MicroBatcher(run, batch_size=4, key=lambda p: p[0], size=lambda p: p[1])
        payloads = [("a", 2), ("b", 1), ("a", 2), ("a", 1), ("b", 3), ("a", 5)]
        return await asyncio.gather(*(batcher.submit(p) for p in payloads))

    results = asyncio.run(main())
    assert results == ["a2", "b1", "a2", "a1", "b3", "a5"]
    # Oldest key first, filled in arrival order up to 4 sequences; an item
    # larger than the budget runs alone rather than never.
    assert calls == [[("a", 2), ("a", 2)], [("b", 1), ("b", 3)], [("a", 1)], [("a", 5)]]


def test_event_loop_stays_responsive_while_a_batch_runs():
    release = threading.Event()

    def run(batch):
        release.wait(5)
        return batch

    async def main():
        batcher = MicroBatcher(run, batch_size=2)
        pending = asyncio.create_task(batcher.submit(1))
        # The loop keeps running other coroutines while the batch blocks its thread.
        ticks = 0
        for _ in range(5):
            await asyncio.sleep(0.01)
            ticks += 1
        release.set()
        return ticks, await pending

    assert asyncio.run(main()) == (5, 1)


def test_a_per_item_exception_reaches_only_its_caller():
    def run(batch):
        return [ValueError(f"bad {x}") if x < 0 else x for x in batch]

    async def main():
        batcher = MicroBatcher(run, batch_size=8)
        return await asyncio.gather(*(batcher.submit(x) for x in (1, -1, 2)), return_exceptions=True)

    ok1, err, ok2 = asyncio.run(main())
    assert (ok1, ok2) == (1, 2)
    assert isinstance(err, ValueError) and str(err) == "bad -1"


def test_a_failing_batch_fails_every_caller_and_the_worker_survives():
    def run(batch):
        if 0 in batch:
            raise RuntimeError("model crashed")
        return batch

    async def main():
        batcher = MicroBatcher(run, batch_size=8)
        failed = await asyncio.gather(batcher.submit(0), batcher.submit(1), return_exceptions=True)
        return failed, await batcher.submit(5)

    failed, later = asyncio.run(main())
    assert all(isinstance(f, RuntimeError) for f in failed)
    assert later == 5


def test_cancelled_requests_are_not_computed():
    seen: list[int] = []
    gate = threading.Event()

    def run(batch):
        gate.wait(5)
        seen.extend(batch)
        return batch

    async def main():
        batcher = MicroBatcher(run, batch_size=1)
        first = asyncio.create_task(batcher.submit(1))
        second = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0.05)
        second.cancel()
        gate.set()
        return await first, await batcher.submit(3)

    assert asyncio.run(main()) == (1, 3)
    assert seen == [1, 3]


def test_a_batcher_outlives_its_event_loop():
    batcher = MicroBatcher(lambda batch: [x + 1 for x in batch], batch_size=4)
    assert asyncio.run(batcher.submit(1)) == 2
    assert asyncio.run(batcher.submit(2)) == 3
    assert batcher.batches_run == 2


def test_aclose_fails_waiting_callers_and_refuses_new_ones():
    def run(batch):
        time.sleep(0.2)
        return batch

    async def main():
        batcher = MicroBatcher(run, batch_size=1)
        waiting = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
        await asyncio.sleep(0.05)
        await batcher.aclose()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        with pytest.raises(BackendError, match="closed"):
            await batcher.submit(9)
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, BackendError) for r in results)


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size"):
        MicroBatcher(lambda b: b, batch_size=0)
