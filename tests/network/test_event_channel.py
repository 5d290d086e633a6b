"""EventChannel: the seed's channel tests (compat: channel capacities), close/cancel
semantics, and a model check."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiop2p.errors import InvalidArgumentError, LimitExceededError
from aiop2p.network.event_channel import ChannelClosedError, ChannelSinkConfig, EventChannel

CAP = 5
COUNT = 10
CAP_S = 2.0

BLOCK = ChannelSinkConfig.BLOCK
DROP_LATEST = ChannelSinkConfig.DROP_LATEST
BUFFER_LATEST = ChannelSinkConfig.BUFFER_LATEST


def make_data(seed: int) -> list[bytes]:
    """COUNT random byte strings of length (rand % 31) + 1, as in the seed's tests."""
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(256) % 31 + 1) for _ in range(COUNT)]


async def send_all(ch: EventChannel[bytes], items: list[bytes], sent: list[bytes]) -> None:
    """Send sequentially within CAP_S, else fail "Send Blocked"; ``sent`` records progress."""
    try:
        async with asyncio.timeout(CAP_S):
            for item in items:
                await ch.send(item)
                sent.append(item)
    except TimeoutError:
        pytest.fail("Send Blocked")


async def receive(ch: EventChannel[bytes], n: int) -> list[bytes]:
    """Read exactly n items within CAP_S (else "Receive Blocked"); then nothing more is there."""
    try:
        async with asyncio.timeout(CAP_S):
            got = [await ch.receive() for _ in range(n)]
    except TimeoutError:
        pytest.fail("Receive Blocked")
    assert ch.receive_nowait() is None
    return got


async def settle() -> None:
    """Let every ready task run until the loop has nothing left to do right now."""
    for _ in range(10):
        await asyncio.sleep(0)


# -- the seed's channel tests ------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_drop_latest_channel_keeps_the_first_messages(seed: int) -> None:
    data = make_data(seed)
    ch: EventChannel[bytes] = EventChannel(CAP, DROP_LATEST)
    await send_all(ch, data, [])
    # The seed drives the channel in a background task here; ours needs no driver.
    assert await receive(ch, 6) == data[0:6]
    assert ch.dropped == 4


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_buffer_latest_channel_keeps_the_first_and_the_latest(seed: int) -> None:
    data = make_data(seed)
    ch: EventChannel[bytes] = EventChannel(CAP, BUFFER_LATEST)
    await send_all(ch, data, [])
    got = await receive(ch, 6)
    assert got[0] == data[0]
    assert got[1:] == data[5:10]
    assert ch.dropped == 4


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_block_channel_delivers_everything_when_read(seed: int) -> None:
    data = make_data(seed)
    ch: EventChannel[bytes] = EventChannel(CAP, BLOCK)
    received: list[bytes] = []
    for batch in (data[:5], data[5:]):
        await send_all(ch, batch, [])
        received += await receive(ch, 5)
    assert received == data
    assert ch.dropped == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_block_channel_blocks_the_seventh_send_when_unread(seed: int) -> None:
    """The 7th send blocks.  Checked deterministically instead of waiting out the 2 s cap:
    once the loop is idle, send_all has completed exactly 6 sends and is still waiting."""
    data = make_data(seed)
    ch: EventChannel[bytes] = EventChannel(CAP, BLOCK)
    sent: list[bytes] = []
    task = asyncio.create_task(send_all(ch, data, sent))
    await settle()
    assert not task.done(), "send_all should be blocked"
    assert sent == data[:6]
    assert len(ch) == 6
    task.cancel()  # what the 2 s cap would do: "Send Blocked"
    with pytest.raises(asyncio.CancelledError):
        await task
    # The blocked 7th item was never delivered.
    assert [ch.receive_nowait() for _ in range(6)] == data[:6]
    assert ch.receive_nowait() is None


# -- capacities and return values --------------------------------------------------------


async def test_drop_latest_returns_false_for_dropped_items() -> None:
    ch: EventChannel[int] = EventChannel(1, DROP_LATEST)
    assert [await ch.send(i) for i in range(4)] == [True, True, False, False]
    assert ch.send_nowait(9) is False
    assert ch.dropped == 3
    assert len(ch) == 2


async def test_buffer_latest_keeps_head_and_newest() -> None:
    ch: EventChannel[int] = EventChannel(2, BUFFER_LATEST)
    assert all([ch.send_nowait(i) for i in range(6)])  # evictions still accept the new item
    assert [ch.receive_nowait() for _ in range(3)] == [0, 4, 5]
    # After a receive the head slot is refilled from the ring, and the ring has room again.
    ch.send_nowait(6)
    ch.send_nowait(7)
    ch.send_nowait(8)
    assert [ch.receive_nowait() for _ in range(3)] == [6, 7, 8]


async def test_zero_capacity() -> None:
    for config in ChannelSinkConfig:
        ch: EventChannel[int] = EventChannel(0, config)
        assert ch.send_nowait(1) is True
        if config is BLOCK:
            with pytest.raises(LimitExceededError):
                ch.send_nowait(2)
            assert ch.dropped == 0
        else:
            assert ch.send_nowait(2) is False
            assert ch.dropped == 1
        assert ch.receive_nowait() == 1
        assert ch.receive_nowait() is None


def test_invalid_arguments() -> None:
    with pytest.raises(InvalidArgumentError):
        EventChannel(-1, BLOCK)
    with pytest.raises(InvalidArgumentError):
        EventChannel(True, BLOCK)
    with pytest.raises(InvalidArgumentError):
        EventChannel(1, "block")  # type: ignore[arg-type]


def test_new_returns_both_sides() -> None:
    tx, rx = EventChannel[int].new(3, DROP_LATEST)
    assert tx is rx
    assert tx.capacity == 3 and tx.config is DROP_LATEST
    assert "DROP_LATEST" in repr(tx)


async def test_send_nowait_block_when_full_keeps_item_uncounted() -> None:
    ch: EventChannel[int] = EventChannel(0, BLOCK)
    ch.send_nowait(1)
    with pytest.raises(LimitExceededError):
        ch.send_nowait(2)
    assert ch.dropped == 0
    assert ch.receive_nowait() == 1


# -- close semantics ---------------------------------------------------------------------


async def test_close_drains_then_ends() -> None:
    ch: EventChannel[int] = EventChannel(5, BLOCK)
    for i in range(3):
        await ch.send(i)
    ch.close()
    ch.close()  # idempotent
    assert ch.closed
    assert await ch.send(99) is False
    assert ch.send_nowait(98) is False  # even BLOCK: closed drops rather than raising
    assert ch.dropped == 2
    assert [item async for item in ch] == [0, 1, 2]
    with pytest.raises(ChannelClosedError):
        await ch.receive()
    with pytest.raises(ChannelClosedError):
        ch.receive_nowait()


async def test_close_wakes_waiting_receivers() -> None:
    ch: EventChannel[int] = EventChannel(1, DROP_LATEST)
    readers = [asyncio.create_task(ch.receive()) for _ in range(2)]
    iterated = asyncio.create_task(anext(aiter(ch), -1))
    await settle()
    ch.close()
    for r in readers:
        with pytest.raises(ChannelClosedError):
            await r
    assert await iterated == -1


async def test_close_releases_blocked_senders() -> None:
    ch: EventChannel[int] = EventChannel(0, BLOCK)
    await ch.send(1)
    blocked = [asyncio.create_task(ch.send(i)) for i in (2, 3)]
    await settle()
    ch.close()
    assert [await t for t in blocked] == [False, False]
    assert ch.dropped == 2
    assert [item async for item in ch] == [1]


async def test_close_receiver_drops_queued_and_later_items() -> None:
    ch: EventChannel[int] = EventChannel(1, BUFFER_LATEST)
    ch.send_nowait(1)
    ch.send_nowait(2)
    ch.close_receiver()
    ch.close_receiver()  # idempotent
    assert ch.receiver_closed
    assert ch.dropped == 2
    assert await ch.send(3) is False
    assert ch.send_nowait(4) is False
    assert ch.dropped == 4
    with pytest.raises(ChannelClosedError):
        ch.receive_nowait()
    assert [item async for item in ch] == []


async def test_close_receiver_releases_blocked_senders_and_readers() -> None:
    full: EventChannel[int] = EventChannel(0, BLOCK)
    await full.send(1)
    sender = asyncio.create_task(full.send(2))
    empty: EventChannel[int] = EventChannel(0, BLOCK)
    reader = asyncio.create_task(empty.receive())
    await settle()
    full.close_receiver()
    empty.close_receiver()
    assert await sender is False
    assert full.dropped == 2  # the queued item and the blocked one
    with pytest.raises(ChannelClosedError):
        await reader


# -- cancellation, fairness, concurrency -------------------------------------------------


async def test_cancelled_blocked_send_leaks_nothing() -> None:
    ch: EventChannel[str] = EventChannel(1, BLOCK)
    await ch.send("a")
    await ch.send("b")
    task = asyncio.create_task(ch.send("x"))
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [ch.receive_nowait(), ch.receive_nowait(), ch.receive_nowait()] == ["a", "b", None]
    # The slot is free again for the next sender; "x" never shows up.
    assert await ch.send("c") is True
    assert ch.receive_nowait() == "c"
    assert ch.receive_nowait() is None
    assert ch.dropped == 0


async def test_send_cancelled_after_wakeup_hands_its_slot_on() -> None:
    ch: EventChannel[str] = EventChannel(0, BLOCK)
    await ch.send("a")
    first = asyncio.create_task(ch.send("x"))
    second = asyncio.create_task(ch.send("y"))
    await settle()
    assert ch.receive_nowait() == "a"  # wakes `first` (slot reserved for it)...
    first.cancel()  # ...which is cancelled before it gets to run
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second is True
    assert ch.receive_nowait() == "y"
    assert ch.receive_nowait() is None


async def test_blocked_senders_enter_in_fifo_order() -> None:
    ch: EventChannel[int] = EventChannel(0, BLOCK)
    await ch.send(0)
    senders = [asyncio.create_task(ch.send(i)) for i in range(1, 8)]
    await settle()
    assert ch.receive_nowait() == 0
    # The freed slot is reserved for the oldest waiter: a newcomer cannot overtake.
    with pytest.raises(LimitExceededError):
        ch.send_nowait(100)
    late = asyncio.create_task(ch.send(8))
    got = [await ch.receive() for _ in range(8)]
    assert got == list(range(1, 9))
    assert all([await t for t in senders]) and await late


async def test_several_receives_wake_several_senders() -> None:
    ch: EventChannel[int] = EventChannel(2, BLOCK)
    for i in range(3):
        await ch.send(i)
    senders = [asyncio.create_task(ch.send(i)) for i in range(3, 6)]
    await settle()
    assert [ch.receive_nowait() for _ in range(2)] == [0, 1]  # two slots, two wakeups
    newcomer = asyncio.create_task(ch.send(6))
    await settle()
    assert len(ch) == 3
    assert [ch.receive_nowait() for _ in range(3)] == [2, 3, 4]
    await settle()
    assert [ch.receive_nowait() for _ in range(3)] == [5, 6, None]
    assert all([await t for t in [*senders, newcomer]])


async def test_concurrent_receivers_each_get_one() -> None:
    ch: EventChannel[int] = EventChannel(3, BLOCK)
    readers = [asyncio.create_task(ch.receive()) for _ in range(3)]
    await settle()
    for i in range(3):
        await ch.send(i)
    assert sorted([await r for r in readers]) == [0, 1, 2]


async def test_cancelled_receiver_passes_its_item_on() -> None:
    ch: EventChannel[int] = EventChannel(3, DROP_LATEST)
    r1 = asyncio.create_task(ch.receive())
    r2 = asyncio.create_task(ch.receive())
    await settle()
    ch.send_nowait(7)  # wakes r1
    r1.cancel()  # cancelled before it takes the item
    with pytest.raises(asyncio.CancelledError):
        await r1
    assert await r2 == 7


async def test_drops_are_logged_once_per_burst(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aiop2p.network.event_channel")
    ch: EventChannel[int] = EventChannel(1, DROP_LATEST, name="events")
    for i in range(10):
        ch.send_nowait(i)
    assert len(caplog.records) == 1
    assert "events" in caplog.records[0].getMessage()
    ch.receive_nowait()
    ch.send_nowait(10)  # burst over: one summary line
    assert len(caplog.records) == 2
    assert "dropped 8 item(s)" in caplog.records[1].getMessage()
    assert ch.dropped == 8


# -- model check -------------------------------------------------------------------------


@dataclass
class Model:
    """The reference semantics, written plainly."""

    config: ChannelSinkConfig
    capacity: int
    items: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)  # blocked BLOCK senders, FIFO
    results: dict[int, bool | None] = field(default_factory=dict)  # None = cancelled
    dropped: int = 0
    closed: bool = False
    receiver_closed: bool = False

    @property
    def limit(self) -> int:
        return self.capacity + 1

    def fill(self) -> None:
        while self.pending and len(self.items) < self.limit:
            v = self.pending.pop(0)
            self.items.append(v)
            self.results[v] = True

    def send(self, v: int) -> None:
        if self.closed or self.receiver_closed:
            self.dropped += 1
            self.results[v] = False
        elif len(self.items) < self.limit and not self.pending:
            self.items.append(v)
            self.results[v] = True
        elif self.config is BLOCK:
            self.pending.append(v)
        elif self.config is DROP_LATEST:
            self.dropped += 1
            self.results[v] = False
        else:
            if self.capacity:
                del self.items[1]
                self.items.append(v)
                self.results[v] = True
            else:
                self.results[v] = False
            self.dropped += 1

    def release(self) -> None:
        for v in self.pending:
            self.results[v] = False
            self.dropped += 1
        self.pending.clear()


OPS = st.lists(
    st.sampled_from(
        ["send", "send", "send", "recv", "recv", "cancel", "recv_cancel", "close", "close_rx"]
    ),
    max_size=40,
)


async def run_model(config: ChannelSinkConfig, capacity: int, ops: list[str]) -> None:
    ch: EventChannel[int] = EventChannel(capacity, config)
    m = Model(config, capacity)
    tasks: dict[int, asyncio.Task[bool]] = {}
    next_value = 0
    for op in ops:
        if op == "send":
            v, next_value = next_value, next_value + 1
            tasks[v] = asyncio.create_task(ch.send(v))
            m.send(v)
        elif op in ("recv", "recv_cancel"):
            if m.items:
                assert ch.receive_nowait() == m.items.pop(0)
                if op == "recv_cancel" and m.pending:
                    # Cancel the sender just woken, before it runs: its slot moves on.
                    v = m.pending.pop(0)
                    tasks[v].cancel()
                    m.results[v] = None
                m.fill()
            elif m.closed or m.receiver_closed:
                with pytest.raises(ChannelClosedError):
                    ch.receive_nowait()
            else:
                assert ch.receive_nowait() is None
        elif op == "cancel":
            if m.pending:
                v = m.pending.pop()
                tasks[v].cancel()
                m.results[v] = None
        elif op == "close":
            ch.close()
            m.closed = True
            m.release()
        else:
            ch.close_receiver()
            if not m.receiver_closed:
                m.receiver_closed = True
                m.dropped += len(m.items)
                m.items.clear()
                m.release()
        await settle()
        assert len(ch) == len(m.items)
        assert ch.dropped == m.dropped
        for v, expected in m.results.items():
            task = tasks[v]
            assert task.done()
            if expected is None:
                assert task.cancelled()
            else:
                assert task.result() is expected
        assert {v for v, t in tasks.items() if not t.done()} == set(m.pending)
    # Drain: what is left comes out in model order, then the end (once closed).
    ch.close()
    m.release()
    await settle()
    assert [item async for item in ch] == (m.items if not m.receiver_closed else [])
    assert ch.dropped == m.dropped


@settings(max_examples=200, deadline=None)
@given(config=st.sampled_from(list(ChannelSinkConfig)), capacity=st.integers(0, 3), ops=OPS)
def test_matches_model(config: ChannelSinkConfig, capacity: int, ops: list[str]) -> None:
    asyncio.run(run_model(config, capacity, ops))


def test_a_channel_waits_on_whichever_loop_runs_after_the_first_closed() -> None:
    """The channel finds the running loop once (a getpid syscall each time in CPython
    3.11), and again once that loop is closed: waiting works in a later loop too."""
    channel: EventChannel[int] = EventChannel(4, ChannelSinkConfig.BLOCK)

    async def round_trip(value: int) -> int:
        reader = asyncio.ensure_future(channel.receive())
        await asyncio.sleep(0)  # the reader waits on a future of this loop
        assert not reader.done()
        channel.send_nowait(value)
        return await asyncio.wait_for(reader, 10)

    assert asyncio.run(round_trip(1)) == 1
    assert asyncio.run(round_trip(2)) == 2
