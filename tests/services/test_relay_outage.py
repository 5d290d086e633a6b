"""Relayed listening survives relay outages: lost reservations are re-reserved with capped
backoff, against a restarted relay and against relays that misbehave meanwhile."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from aiop2p._aio.stream import Stream
from aiop2p.errors import DialError, InvalidArgumentError, P2PError
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node
from aiop2p.protocols.relay_v2 import (
    HOP_PROTOCOL_ID,
    HopMessage,
    HopType,
    Status,
    encode_frame,
)
from aiop2p.services.relay.client import (
    RelayClient,
    RelayClientConfig,
    RelayClientEvent,
    ReservationFailed,
    ReservationLost,
    ReservationRestored,
    backoff_delay,
)
from aiop2p.services.relay.server import RelayServer

from ..helpers import serve_silently, wait_for
from .test_relay import ECHO, echo, echo_handler

pytestmark = pytest.mark.timeout(60)

FAST = RelayClientConfig(
    reservation_timeout=0.5,
    refresh_backoff_initial_seconds=0.05,
    refresh_backoff_max_seconds=0.4,
)


@dataclass
class Setup:
    a: Node
    b: Node
    r: Node
    client_a: RelayClient
    events: list[RelayClientEvent]
    delays: list[float] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)

    def count(self, kind: type) -> int:
        return sum(isinstance(e, kind) for e in self.events)

    async def restart_relay(self, addr: Multiaddr | None = None) -> Node:
        """Close R; start a relay with R's key on R's address (what a restart does)."""
        key, addr = self.r.key, addr or self.r.listen_addrs[0]
        await self.r.close()
        r2 = Node(key)
        self.nodes.append(r2)
        await r2.start()
        await r2.listen(addr)
        RelayServer(r2).start()
        self.r = r2
        return r2


@pytest_asyncio.fixture
async def setup() -> AsyncIterator[Callable[[], Awaitable[Setup]]]:
    made: list[Setup] = []

    async def make() -> Setup:
        a, b, r = Node(), Node(), Node()
        for n in (a, b, r):
            await n.start()
        await r.listen("/ip4/127.0.0.1/tcp/0")
        RelayServer(r).start()
        client_a = RelayClient(a, config=FAST)
        RelayClient(b)
        a.set_stream_handler(ECHO, echo_handler)
        events: list[RelayClientEvent] = []
        client_a.events.subscribe(events.append)
        s = Setup(a, b, r, client_a, events, nodes=[a, b, r])
        original = client_a._retry_delay

        def recorded(attempt: int) -> float:
            delay = original(attempt)
            s.delays.append(delay)
            return delay

        client_a._retry_delay = recorded  # type: ignore[method-assign]
        made.append(s)
        return s

    yield make
    for s in made:
        for n in s.nodes:
            await n.close()


def circuit_of(s: Setup) -> Multiaddr:
    return s.r.listen_addrs[0].with_peer_id(s.r.peer_id) / f"/p2p-circuit/p2p/{s.a.peer_id}"


async def test_listener_comes_back_after_relay_restart(setup) -> None:  # type: ignore[no-untyped-def]
    s: Setup = await setup()
    await s.client_a.listen(s.r.peer_id, s.r.listen_addrs[0].with_peer_id(s.r.peer_id))
    relay_id = s.r.peer_id
    key, addr = s.r.key, s.r.listen_addrs[0]
    await s.r.close()
    await wait_for(lambda: s.count(ReservationLost) == 1, cap=5)
    assert relay_id not in s.client_a.reservations
    # Re-reserving continues while the relay is down (connection refused each time).
    await wait_for(lambda: s.count(ReservationFailed) >= 3, cap=10)
    assert not any(e.final for e in s.events if isinstance(e, ReservationFailed))
    r2 = Node(key)
    s.nodes.append(r2)
    await r2.start()
    await r2.listen(addr)
    RelayServer(r2).start()
    await wait_for(lambda: s.count(ReservationRestored) == 1, cap=10)
    restored = next(e for e in s.events if isinstance(e, ReservationRestored))
    assert restored.relay == relay_id and restored.attempts >= 4
    assert relay_id in s.client_a.reservations
    # A peer reaches the listener through the restarted relay; no listen call was made.
    conn = await s.b.dial(addr.with_peer_id(relay_id) / f"/p2p-circuit/p2p/{s.a.peer_id}")
    assert await echo(await conn.new_stream(ECHO), b"back") == b"back"


async def _never_answers(stream: Stream) -> None:
    await serve_silently(stream)


async def _answers_garbage(stream: Stream) -> None:
    await stream.write(b"\x05\xff\xff\xff\xff\xff")
    await stream.close()


async def _refuses(stream: Stream) -> None:
    refusal = HopMessage(HopType.STATUS, status=Status.RESERVATION_REFUSED)
    await stream.write(encode_frame(refusal))
    await stream.close()


@pytest.mark.parametrize("hostile", [_never_answers, _answers_garbage, _refuses])
async def test_hostile_relay_meanwhile_backoff_continues(  # type: ignore[no-untyped-def]
    setup, hostile, caplog
) -> None:
    """The relay comes back misbehaving: every retry fails cleanly, the delays double up to
    the cap (never faster), and once a working relay is back the listener is restored."""
    caplog.set_level(logging.DEBUG)
    s: Setup = await setup()
    await s.client_a.listen(s.r.peer_id, s.r.listen_addrs[0].with_peer_id(s.r.peer_id))
    s.r.set_stream_handler(HOP_PROTOCOL_ID, hostile)
    for conn in s.r.connections_to(s.a.peer_id):
        await conn.close()
    await wait_for(lambda: s.count(ReservationLost) == 1, cap=5)
    await wait_for(lambda: s.count(ReservationFailed) >= 6, cap=20)
    failures = [e for e in s.events if isinstance(e, ReservationFailed)]
    assert [e.attempt for e in failures] == list(range(1, len(failures) + 1))
    assert not any(e.final for e in failures)
    assert all(isinstance(e.error, P2PError) for e in failures)
    # One retry scheduled per failure, each at least the previous one's base delay
    # (jitter aside) and never beyond the cap: bounded attempts per interval.
    assert len(s.delays) >= len(failures)
    assert max(s.delays) <= FAST.refresh_backoff_max_seconds
    jitter = FAST.refresh_backoff_jitter
    for attempt, delay in enumerate(s.delays[1 : len(failures) + 1], start=1):
        assert delay >= backoff_delay(FAST, attempt, 1 - jitter)
    assert s.delays[len(failures)] >= FAST.refresh_backoff_max_seconds * (1 - jitter)
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
    # A working relay is back: the listener is restored and reachable.
    await s.restart_relay()
    await wait_for(lambda: s.count(ReservationRestored) == 1, cap=10)
    conn = await s.b.dial(circuit_of(s))
    assert await echo(await conn.new_stream(ECHO), b"restored") == b"restored"


async def test_listen_again_during_the_outage_keeps_retrying(setup) -> None:  # type: ignore[no-untyped-def]
    """Listening again while the relay is down fails at once, and the automatic retries
    go on: the listener comes back when the relay does."""
    s: Setup = await setup()
    relay, addr = s.r.peer_id, s.r.listen_addrs[0]
    await s.client_a.listen(relay, addr.with_peer_id(relay))
    await s.r.close()
    await wait_for(lambda: s.count(ReservationLost) == 1, cap=5)
    with pytest.raises(DialError):
        await s.client_a.listen(relay, addr.with_peer_id(relay))
    await s.restart_relay(addr)
    await wait_for(lambda: s.count(ReservationRestored) == 1, cap=10)
    conn = await s.b.dial(circuit_of(s))
    assert await echo(await conn.new_stream(ECHO), b"again") == b"again"


async def test_stop_listening_cancels_re_reserving(setup) -> None:  # type: ignore[no-untyped-def]
    s: Setup = await setup()
    relay, addr = s.r.peer_id, s.r.listen_addrs[0]
    await s.client_a.listen(relay, addr.with_peer_id(relay))
    await s.r.close()
    await wait_for(lambda: s.count(ReservationFailed) >= 1, cap=5)
    assert await s.client_a.stop_listening(relay)
    failed = s.count(ReservationFailed)
    scheduled = len(s.delays)
    # The relay comes back: nothing reserves on it any more.
    r2 = await s.restart_relay(addr)
    assert s.client_a._slots == {}
    assert r2.peer_id not in s.client_a.reservations
    assert (s.count(ReservationFailed), len(s.delays)) == (failed, scheduled)


def test_backoff_is_capped_and_config_checked() -> None:
    config = RelayClientConfig(refresh_backoff_initial_seconds=1, refresh_backoff_max_seconds=8)
    assert [backoff_delay(config, n, 1.0) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]
    assert backoff_delay(config, 10_000, 1.2) == 8
    for bad in (
        {"refresh_backoff_initial_seconds": 0},
        {"refresh_backoff_initial_seconds": 5, "refresh_backoff_max_seconds": 1},
        {"refresh_backoff_jitter": 1.0},
        {"max_listen_attempts": 0},
        {"max_refresh_attempts": 0},
    ):
        with pytest.raises(InvalidArgumentError):
            RelayClientConfig(**bad)


async def test_max_listen_attempts_bounds_re_reserving(setup) -> None:  # type: ignore[no-untyped-def]
    s: Setup = await setup()
    s.client_a.config = RelayClientConfig(
        reservation_timeout=0.5,
        refresh_backoff_initial_seconds=0.05,
        refresh_backoff_max_seconds=0.1,
        max_listen_attempts=3,
    )
    await s.client_a.listen(s.r.peer_id, s.r.listen_addrs[0].with_peer_id(s.r.peer_id))
    await s.r.close()
    await wait_for(lambda: any(isinstance(e, ReservationFailed) and e.final for e in s.events))
    assert [e.attempt for e in s.events if isinstance(e, ReservationFailed)] == [1, 2, 3]
