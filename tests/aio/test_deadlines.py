"""DeadlineQueue and ConnectionDeadlines: many deadlines on one timer."""

from __future__ import annotations

import asyncio
import gc

import pytest

from aiop2p._aio.deadlines import ConnectionDeadlines, DeadlineQueue, Expired

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


# -- ConnectionDeadlines: no loop, time is an argument ------------------------------------------


def deadlines(idle: float | None = 60.0) -> ConnectionDeadlines[int, str]:
    return ConnectionDeadlines(negotiation_timeout=10.0, idle_timeout=idle)


def due(d: ConnectionDeadlines[int, str], now: float, *, busy: bool = False) -> Expired[int, str]:
    return d.handle_timer(now, busy=busy, keep_alive=False)


def test_nothing_scheduled_means_no_timer() -> None:
    d = deadlines()
    assert d.get_timer() is None
    assert due(d, 1e9) == Expired()


def test_negotiations_expire_in_order_and_finished_ones_never() -> None:
    d = deadlines(idle=None)
    assert d.start_negotiation(1, 0.0) == 10.0
    d.start_negotiation(2, 1.0)
    d.start_negotiation(3, 2.0)
    d.end_negotiation(2)
    d.end_negotiation(99)  # unknown: ignored
    assert d.get_timer() == 10.0
    assert due(d, 9.9) == Expired()
    assert due(d, 12.0).negotiations == [1, 3]
    assert d.get_timer() is None


def test_lingering_items_expire_once_their_deadline_passes() -> None:
    d = deadlines(idle=None)
    d.linger("a", 5.0)
    d.linger("b", 7.0)
    assert d.get_timer() == 5.0
    assert due(d, 6.0).lingering == ["a"]
    assert d.get_timer() == 7.0
    assert due(d, 7.0).lingering == ["b"]
    assert d.get_timer() is None


def test_the_timer_is_the_earliest_of_all_kinds() -> None:
    d = deadlines()
    d.became_idle(0.0)
    assert d.get_timer() == 60.0
    d.linger("a", 30.0)
    assert d.get_timer() == 30.0
    d.start_negotiation(1, 5.0)
    assert d.get_timer() == 15.0


def test_idle_connection_expires_after_the_whole_timeout() -> None:
    d = deadlines()
    assert d.became_idle(100.0) == 160.0
    assert not due(d, 159.0).idle
    assert due(d, 160.0).idle
    assert d.get_timer() is None  # reported once


def test_busy_connection_is_left_alone_until_it_is_idle_again() -> None:
    d = deadlines()
    d.became_idle(0.0)
    assert not due(d, 60.0, busy=True).idle
    assert d.get_timer() is None
    assert d.became_idle(70.0) == 130.0  # the count starts again
    assert not due(d, 129.0).idle
    assert due(d, 130.0).idle


def test_keep_alive_postpones_the_check_by_one_timeout() -> None:
    d = deadlines()
    d.became_idle(0.0)
    assert not d.handle_timer(60.0, busy=False, keep_alive=True).idle
    assert d.get_timer() == 120.0
    # Released later: idle since 0, so the next check closes it.
    assert d.handle_timer(120.0, busy=False, keep_alive=False).idle


def test_no_idle_timeout_never_closes() -> None:
    d = deadlines(idle=None)
    assert d.became_idle(0.0) is None
    assert d.get_timer() is None
    assert not due(d, 1e9).idle


def test_clear_forgets_everything() -> None:
    d = deadlines()
    d.start_negotiation(1, 0.0)
    d.linger("a", 1.0)
    d.became_idle(0.0)
    d.clear()
    assert d.get_timer() is None
    assert due(d, 1e9) == Expired()
