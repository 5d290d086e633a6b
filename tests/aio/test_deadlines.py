"""DeadlineQueue: many same-timeout deadlines on one timer."""

from __future__ import annotations

import asyncio
import gc

import pytest

from aiop2p._aio.deadlines import DeadlineQueue

pytestmark = pytest.mark.timeout(10)


async def test_expired_task_is_cancelled_and_marked() -> None:
    queue = DeadlineQueue(0.05)
    started = asyncio.Event()

    async def slow() -> str:
        task = asyncio.current_task()
        assert task is not None
        deadline = queue.start(task)
        started.set()
        try:
            await asyncio.Event().wait()  # never set: only the deadline ends it
        except asyncio.CancelledError:
            assert deadline.expired
            task.uncancel()
            return "timed out"
        finally:
            deadline.finish()
        return "not reached"

    assert await asyncio.wait_for(slow(), 5) == "timed out"
    queue.close()


async def test_finished_entries_are_dropped_and_hold_no_task() -> None:
    queue = DeadlineQueue(60.0)

    async def quick() -> None:
        task = asyncio.current_task()
        assert task is not None
        queue.start(task).finish()

    for _ in range(100):
        await asyncio.create_task(quick())
    assert len(queue._entries) <= 1  # finished heads are popped on the next start
    assert all(entry.task is None for entry in queue._entries)
    gc.collect()
    queue.close()
