"""Circuit relay v2 with three real nodes on loopback TCP: A listens via R, B dials A via R."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from aiop2p._aio.connection import RelayedVia
from aiop2p._aio.stream import Stream
from aiop2p.errors import (
    CircuitRefusedError,
    DialError,
    P2PError,
    RelayLimitReachedError,
    ReservationRefusedError,
)
from aiop2p.identity import KeyPair
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node
from aiop2p.protocols.relay_v2 import Limit, Status
from aiop2p.services.relay import splice
from aiop2p.services.relay.client import (
    RelayClient,
    RelayClientEvent,
    ReservationFailed,
    ReservationLost,
    ReservationRenewed,
)
from aiop2p.services.relay.server import CircuitClosed, RelayServer, RelayServerConfig

from ..helpers import wait_for

ECHO = "/test/echo/1.0.0"


async def echo_handler(stream: Stream) -> None:
    while True:
        try:
            data = await stream.read_message(1 << 20)
        except P2PError:
            return
        await stream.write_message(data)


@dataclass
class Trio:
    a: Node
    b: Node
    r: Node
    server: RelayServer
    client_a: RelayClient
    client_b: RelayClient
    events: list[RelayClientEvent]

    @property
    def r_addr(self) -> Multiaddr:
        return self.r.listen_addrs[0].with_peer_id(self.r.peer_id)


@pytest_asyncio.fixture
async def make_trio() -> AsyncIterator[object]:
    nodes: list[Node] = []

    async def make(config: RelayServerConfig | None = None) -> Trio:
        a, b, r = Node(), Node(), Node()
        for n in (a, b, r):
            await n.start()
            nodes.append(n)
        await r.listen("/ip4/127.0.0.1/tcp/0")
        server = RelayServer(r, config=config or RelayServerConfig())
        server.start()
        client_a, client_b = RelayClient(a), RelayClient(b)
        a.set_stream_handler(ECHO, echo_handler)
        events: list[RelayClientEvent] = []
        client_a.events.subscribe(events.append)
        return Trio(a, b, r, server, client_a, client_b, events)

    yield make
    for n in nodes:
        await n.close()


async def echo(stream: Stream, payload: bytes) -> bytes:
    await stream.write_message(payload)
    return await stream.read_message(1 << 20)


async def test_listen_dial_ping_echo_identify_end_to_end(make_trio) -> None:  # type: ignore[no-untyped-def]
    t: Trio = await make_trio()
    tapped = bytearray()
    original = splice.Circuit.forward

    def tap(self: splice.Circuit, half: splice._Half, data: bytes) -> None:
        tapped.extend(data)
        original(self, half, data)

    splice.Circuit.forward = tap  # type: ignore[method-assign]
    try:
        addr = await t.client_a.listen(t.r.peer_id, t.r_addr)
        assert str(addr) == f"{t.r.listen_addrs[0]}/p2p/{t.r.peer_id}/p2p-circuit/p2p/{t.a.peer_id}"
        assert t.client_a.reservations[t.r.peer_id].voucher_valid
        assert any("p2p-circuit" in str(x) for x in t.a.listen_addrs)

        conn = await t.b.dial(addr)
        assert conn.remote_peer == t.a.peer_id
        assert conn.relay == RelayedVia(t.r.peer_id, RelayServerConfig().limit)
        assert conn.remote_addr == addr
        # R holds one (direct) connection to each of A and B and none between them.
        assert {c.remote_peer for c in t.r.connections} == {t.a.peer_id, t.b.peer_id}
        await wait_for(lambda: t.a.is_connected(t.b.peer_id))
        inbound = t.a.connections_to(t.b.peer_id)[0]
        assert inbound.is_relayed
        assert "p2p-circuit" in str(inbound.remote_addr)

        assert await t.b.ping(conn, 3)
        secret = b"the relay must never see this plaintext" * 10
        stream = await conn.new_stream(ECHO)
        assert await echo(stream, secret) == secret
        info = await t.b.identify_peer(conn)
        assert ECHO in info.protocols
        assert tapped and secret not in bytes(tapped)
        assert t.server.circuit_count == 1
    finally:
        splice.Circuit.forward = original  # type: ignore[method-assign]


async def test_reservation_refused(make_trio) -> None:  # type: ignore[no-untyped-def]
    t: Trio = await make_trio(RelayServerConfig(max_reservations=0))
    with pytest.raises(ReservationRefusedError) as info:
        await t.client_a.listen(t.r.peer_id, t.r_addr)
    assert info.value.status == Status.RESERVATION_REFUSED
    assert not t.client_a.reservations


async def test_relay_unreachable_is_a_dial_error(make_trio) -> None:  # type: ignore[no-untyped-def]
    t: Trio = await make_trio()
    stranger = KeyPair.generate().peer_id
    with pytest.raises(DialError):
        await t.client_a.listen(stranger, Multiaddr("/ip4/127.0.0.1/tcp/1"))


async def test_circuit_refused_without_reservation(make_trio) -> None:  # type: ignore[no-untyped-def]
    t: Trio = await make_trio()
    target = f"{t.r_addr}/p2p-circuit/p2p/{t.a.peer_id}"
    with pytest.raises(CircuitRefusedError) as info:
        await t.b.dial(target)
    assert info.value.status == Status.NO_RESERVATION
    assert isinstance(info.value, DialError)


async def test_data_limit_gives_clear_error_and_relay_keeps_serving(make_trio) -> None:  # type: ignore[no-untyped-def]
    t: Trio = await make_trio(RelayServerConfig(circuit_data_bytes=64 * 1024))
    closed: list[CircuitClosed] = []
    t.server.circuit_closed.subscribe(closed.append)
    addr = await t.client_a.listen(t.r.peer_id, t.r_addr)
    conn = await t.b.dial(addr)
    stream = await conn.new_stream(ECHO)
    with pytest.raises(RelayLimitReachedError, match="data limit"):
        for _ in range(100):
            await asyncio.wait_for(echo(stream, b"x" * 4000), 5)
    await asyncio.wait_for(conn.wait_closed(), 5)
    assert isinstance(conn.error, RelayLimitReachedError)
    await wait_for(lambda: bool(closed))
    assert closed[0].reason == "data limit reached"
    # The relay still serves: a new circuit works.
    conn2 = await t.b.dial(addr)
    assert await echo(await conn2.new_stream(ECHO), b"again") == b"again"


async def test_duration_limit(make_trio) -> None:  # type: ignore[no-untyped-def]
    t: Trio = await make_trio(RelayServerConfig(circuit_duration_seconds=1))
    addr = await t.client_a.listen(t.r.peer_id, t.r_addr)
    conn = await t.b.dial(addr)
    assert conn.relay is not None
    limit = conn.relay.limit
    assert isinstance(limit, Limit) and limit.duration == 1
    await asyncio.wait_for(conn.wait_closed(), 5)
    assert isinstance(conn.error, RelayLimitReachedError)
    assert "duration" in str(conn.error)


async def test_refresh_before_expiry(make_trio) -> None:  # type: ignore[no-untyped-def]
    t: Trio = await make_trio(RelayServerConfig(reservation_duration_seconds=2))
    await t.client_a.listen(t.r.peer_id, t.r_addr)
    first = t.client_a.reservations[t.r.peer_id]
    await wait_for(lambda: any(isinstance(e, ReservationRenewed) for e in t.events), cap=5)
    renewed = next(e for e in t.events if isinstance(e, ReservationRenewed))
    assert renewed.reservation.expire >= first.expire
    # The relay never saw the reservation lapse.
    assert t.a.peer_id in t.server.reservations


async def test_relay_restart_then_listen_again(make_trio) -> None:  # type: ignore[no-untyped-def]
    t: Trio = await make_trio()
    r_key = t.r.key
    port_addr = t.r.listen_addrs[0]
    await t.client_a.listen(t.r.peer_id, t.r_addr)
    await t.r.close()
    await wait_for(lambda: any(isinstance(e, ReservationLost) for e in t.events), cap=5)
    await wait_for(lambda: any(isinstance(e, ReservationFailed) for e in t.events), cap=5)
    assert t.r.peer_id not in t.client_a.reservations
    r2 = Node(r_key)
    await r2.start()
    try:
        await r2.listen(port_addr)
        RelayServer(r2).start()
        addr = await t.client_a.listen(r2.peer_id, port_addr.with_peer_id(r2.peer_id))
        conn = await t.b.dial(addr)
        assert await echo(await conn.new_stream(ECHO), b"back") == b"back"
    finally:
        await r2.close()


async def test_100_concurrent_circuits(make_trio) -> None:  # type: ignore[no-untyped-def]
    t: Trio = await make_trio(
        RelayServerConfig(max_circuits=128, max_circuits_per_peer=128, circuit_data_bytes=0)
    )
    addr = await t.client_a.listen(t.r.peer_id, t.r_addr)
    conns = list(await asyncio.gather(*(t.b.dial(addr, force=True) for _ in range(100))))
    assert len({c.id for c in conns}) == 100
    assert t.server.circuit_count == 100

    async def run(i: int) -> None:
        stream = await conns[i].new_stream(ECHO)
        for j in range(10):
            payload = os.urandom(100 + j) + i.to_bytes(4, "big")
            assert await echo(stream, payload) == payload
        await stream.close()

    await asyncio.gather(*(run(i) for i in range(100)))

    def relay_objects() -> int:
        gc.collect()
        kinds = (splice.Circuit, splice._Half)
        return sum(1 for o in gc.get_objects() if isinstance(o, kinds))

    # R's per-circuit state: one circuit and two halves each, nothing else growing.
    assert relay_objects() == 300
    for c in conns:
        await c.close()
    conns.clear()
    await wait_for(lambda: t.server.circuit_count == 0)
    assert relay_objects() == 0
    assert not t.server._circuits_per_peer and t.server._pending_circuits == 0
