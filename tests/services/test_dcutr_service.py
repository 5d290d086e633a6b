"""DCUtR service on loopback with a relay in between (no real NAT): A listens via R, B
dials A via R, and the two hole-punch a direct TCP connection (each dialling from its
listen port) that then carries new streams while the relayed one is closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio

from aiop2p._aio.connection import Connection
from aiop2p._aio.stream import Stream
from aiop2p.config import NodeConfig
from aiop2p.errors import DialError, P2PError
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node
from aiop2p.protocols.role import Role
from aiop2p.services.dcutr import (
    DcutrConfig,
    DcutrService,
    DirectConnectionUpgraded,
    HolePunchEvent,
    HolePunchFailed,
    HolePunchStarted,
)
from aiop2p.services.relay.client import RelayClient
from aiop2p.services.relay.server import RelayServer
from aiop2p.transports.tcp import TcpTransport

from ..helpers import wait_for

ECHO = "/test/echo/1.0.0"
LOOPBACK = DcutrConfig(allow_loopback_addrs=True, unilateral_upgrade=False)

pytestmark = pytest.mark.timeout(30)


async def echo_handler(stream: Stream) -> None:
    await stream.write_message(await stream.read_message(1 << 20))


async def echo(node: Node, target: object, payload: bytes) -> tuple[bytes, Stream]:
    stream = await node.new_stream(target, ECHO)  # type: ignore[arg-type]
    async with stream:
        await stream.write_message(payload)
        return await stream.read_message(1 << 20), stream


@dataclass
class Peer:
    node: Node
    dcutr: DcutrService
    all_events: list[HolePunchEvent]

    @property
    def events(self) -> list[HolePunchEvent]:
        """Outcomes only (upgrades and failures), without the attempts started."""
        return [e for e in self.all_events if not isinstance(e, HolePunchStarted)]


@dataclass
class Setup:
    a: Peer
    b: Peer
    r: Node
    circuit: Multiaddr


@pytest_asyncio.fixture
async def make_setup() -> AsyncIterator[Callable[..., object]]:
    nodes: list[Node] = []

    async def make(config_a: DcutrConfig = LOOPBACK, config_b: DcutrConfig = LOOPBACK) -> Setup:
        r = Node()
        await r.start()
        nodes.append(r)
        await r.listen("/ip4/127.0.0.1/tcp/0")
        RelayServer(r).start()
        r_addr = r.listen_addrs[0].with_peer_id(r.peer_id)
        peers = []
        for config in (config_a, config_b):
            node = Node(transports=[TcpTransport()], config=NodeConfig(dial_timeout=3.0))
            await node.start()
            nodes.append(node)
            service = DcutrService(node, config=config)
            events: list[HolePunchEvent] = []
            service.events.subscribe(events.append)
            node.set_stream_handler(ECHO, echo_handler)
            await node.listen("/ip4/127.0.0.1/tcp/0")
            RelayClient(node)
            peers.append(Peer(node, service, events))
        a, b = peers
        assert isinstance(a.node.transports[0], TcpTransport)
        assert a.node.transports[0].port_reuse
        addr = (await a.node.listen(r_addr / "/p2p-circuit"))[0].with_peer_id(a.node.peer_id)
        # B knows R directly first (identify there tells B its observed address).
        await b.node.dial(r_addr)
        return Setup(a, b, r, addr)

    yield make
    for n in nodes:
        await n.close()


async def test_hole_punch_upgrades_and_moves_streams(make_setup) -> None:  # type: ignore[no-untyped-def]
    s: Setup = await make_setup()
    a, b = s.a, s.b
    # Port reuse: R observed each peer at its listen port.
    await wait_for(lambda: a.node.peer_store.info(s.r.peer_id).observed_addr is not None)
    assert a.node.peer_store.info(s.r.peer_id).observed_addr == a.node.listen_addrs[0]
    observed = await b.dcutr.observed_addrs()
    assert observed == [b.node.listen_addrs[0]]

    relayed = await b.node.dial(s.circuit)
    assert relayed.is_relayed
    await wait_for(lambda: bool(a.events) and bool(b.events), cap=15)
    assert isinstance(a.events[0], DirectConnectionUpgraded), a.events
    assert isinstance(b.events[0], DirectConnectionUpgraded), b.events
    assert a.events[0].attempts >= 1
    assert a.events[0].peer == b.node.peer_id and b.events[0].peer == a.node.peer_id

    # New streams take the direct connection, on both sides.
    data, stream = await echo(b.node, a.node.peer_id, b"direct")
    assert data == b"direct"
    assert not stream.connection.is_relayed
    data, stream = await echo(a.node, b.node.peer_id, b"back")
    assert data == b"back" and not stream.connection.is_relayed
    direct = stream.connection
    # A ran the upgrade as responder, B as initiator, whatever TCP said (DCUtR roles).
    assert a.node.connections_to(b.node.peer_id)[0].role is Role.RESPONDER
    assert b.node.connections_to(a.node.peer_id)[0].role is Role.INITIATOR
    # The direct connection runs between the two listen ports.
    ports = {str(direct.local_addr), str(direct.remote_addr).split("/p2p/")[0]}
    assert ports == {str(a.node.listen_addrs[0]), str(b.node.listen_addrs[0])}

    # The relayed connection is closed once its streams are done.
    await wait_for(lambda: relayed.is_closed, cap=10)
    await wait_for(lambda: all(not c.is_relayed for c in a.node.connections_to(b.node.peer_id)))
    assert (await echo(b.node, a.node.peer_id, b"still"))[0] == b"still"


async def test_unilateral_upgrade_when_the_peer_is_reachable(make_setup) -> None:  # type: ignore[no-untyped-def]
    config = DcutrConfig(allow_loopback_addrs=True)
    s: Setup = await make_setup(config, config)
    await s.b.node.dial(s.circuit)
    await wait_for(lambda: bool(s.a.events), cap=10)
    event = s.a.events[0]
    assert isinstance(event, DirectConnectionUpgraded) and event.attempts == 0
    # A's dial is ready one round trip before B has processed the handshake's last
    # message (early muxer negotiation); once B has the connection, its streams take it.
    await wait_for(lambda: any(not c.is_relayed for c in s.b.node.connections_to(s.a.node.peer_id)))
    _, stream = await echo(s.b.node, s.a.node.peer_id, b"x")
    assert not stream.connection.is_relayed


async def test_failure_keeps_the_relayed_connection(make_setup) -> None:  # type: ignore[no-untyped-def]
    # Loopback addresses are filtered out: nothing to offer, so no attempt can start.
    s: Setup = await make_setup(DcutrConfig(unilateral_upgrade=False), LOOPBACK)
    relayed = await s.b.node.dial(s.circuit)
    await wait_for(lambda: bool(s.a.events), cap=10)
    event = s.a.events[0]
    assert isinstance(event, HolePunchFailed)
    assert isinstance(event.error, DialError) and "no observed address" in str(event.error)
    assert not relayed.is_closed
    data, stream = await echo(s.b.node, s.a.node.peer_id, b"relayed")
    assert data == b"relayed" and stream.connection.is_relayed


FAST_FAIL = DcutrConfig(allow_loopback_addrs=True, unilateral_upgrade=False, connect_timeout=1.0)


async def relayed_to_closed_ports(s: Setup) -> Connection:
    """B's relayed connection to A once both closed their TCP listeners: each offers its
    observed address (its listen port, now closed on loopback), so every punch fails."""
    relayed = await s.b.node.dial(s.circuit)
    await wait_for(lambda: s.a.node.is_connected(s.b.node.peer_id))
    # Both close their TCP listeners: every direct dial is refused from now on.
    for peer in (s.a, s.b):
        for addr in list(peer.node.listen_addrs):
            if "p2p-circuit" not in str(addr):
                await peer.node.stop_listening_addr(addr)
    # A fresh relayed connection starts a fresh upgrade.
    await relayed.close()
    for peer in (s.a, s.b):
        peer.all_events.clear()
    await wait_for(lambda: not s.a.node.is_connected(s.b.node.peer_id))
    return await s.b.node.dial(s.circuit)


async def test_every_attempt_fails_when_the_peer_cannot_be_reached(make_setup) -> None:  # type: ignore[no-untyped-def]
    # B advertises its real observed address, but A's dials cannot succeed: B's listener
    # refuses them (closed) and B's own dials land on a closed port.  Three attempts.
    s: Setup = await make_setup(FAST_FAIL, FAST_FAIL)
    relayed = await relayed_to_closed_ports(s)
    await wait_for(lambda: bool(s.a.events), cap=20)
    event = s.a.events[-1]
    if isinstance(event, DirectConnectionUpgraded):
        pytest.fail(f"unexpected upgrade: {event}")
    assert isinstance(event, HolePunchFailed)
    assert event.attempts == 3
    assert set(event.error.causes) == {"attempt 1", "attempt 2", "attempt 3"}  # type: ignore[attr-defined]
    assert not relayed.is_closed


async def test_failed_punch_is_reported_on_both_sides_and_relayed_requests_work(  # type: ignore[no-untyped-def]
    make_setup,
) -> None:
    s: Setup = await make_setup(FAST_FAIL, FAST_FAIL)
    relayed = await relayed_to_closed_ports(s)
    a_id, b_id = s.a.node.peer_id, s.b.node.peer_id
    await wait_for(lambda: bool(s.a.events) and len(s.b.events) == 3, cap=20)
    # The initiator (A, reached through the relay): three attempts, one final failure.
    started_a = [e for e in s.a.all_events if isinstance(e, HolePunchStarted)]
    assert started_a == [HolePunchStarted(b_id, n, initiator=True) for n in (1, 2, 3)]
    (failed_a,) = s.a.events
    assert isinstance(failed_a, HolePunchFailed)
    assert (failed_a.peer, failed_a.attempts, failed_a.initiator) == (b_id, 3, True)
    # The responder (B): each exchange it answered started and failed, numbered.
    started_b = [e for e in s.b.all_events if isinstance(e, HolePunchStarted)]
    assert started_b == [HolePunchStarted(a_id, n, initiator=False) for n in (1, 2, 3)]
    for n, event in enumerate(s.b.events, start=1):
        assert isinstance(event, HolePunchFailed), event
        assert (event.peer, event.attempts, event.initiator) == (a_id, n, False)
        assert isinstance(event.error, P2PError) and event.remote_addrs
    # The relayed connection still carries requests, both ways.
    assert not relayed.is_closed
    data, stream = await echo(s.b.node, a_id, b"relayed")
    assert data == b"relayed" and stream.connection is relayed
    data, stream = await echo(s.a.node, b_id, b"back")
    assert data == b"back" and stream.connection.is_relayed


@pytest.mark.parametrize("garbage", [b"\x04\xff\xff\xff\xff", b"\xff" * 12, b""])
async def test_hostile_initiator_is_reported_by_the_responder(  # type: ignore[no-untyped-def]
    make_setup, garbage
) -> None:
    """A peer opens DCUtR and sends garbage (or nothing, then EOF): the answering side
    reports a failed punch, no traceback, and the relayed connection keeps working."""
    # A offers nothing (loopback filtered out), so it never starts a DCUtR exchange itself.
    s: Setup = await make_setup(DcutrConfig(unilateral_upgrade=False), LOOPBACK)
    relayed = await s.b.node.dial(s.circuit)
    await wait_for(lambda: bool(s.a.events), cap=10)
    inbound = next(c for c in s.a.node.connections_to(s.b.node.peer_id) if c.is_relayed)
    stream = await inbound.new_stream("/libp2p/dcutr")
    await stream.write(garbage)
    await stream.close()
    await wait_for(lambda: bool(s.b.events), cap=15)
    (failed,) = s.b.events
    assert isinstance(failed, HolePunchFailed) and not failed.initiator
    assert failed.attempts == 1 and isinstance(failed.error, P2PError)
    assert s.b.all_events[0] == HolePunchStarted(s.a.node.peer_id, 1, initiator=False)
    assert (await echo(s.b.node, s.a.node.peer_id, b"fine"))[0] == b"fine"
    assert not relayed.is_closed


async def test_dcutr_stream_on_a_direct_connection_is_refused(make_setup) -> None:  # type: ignore[no-untyped-def]
    s: Setup = await make_setup()
    conn = await s.b.node.dial(s.a.node.listen_addrs[0].with_peer_id(s.a.node.peer_id))
    stream = await conn.new_stream("/libp2p/dcutr")
    with pytest.raises(P2PError):
        await stream.write(b"\x00")
        await asyncio.wait_for(stream.read(10), 5)
        raise P2PError("not reset")


async def test_port_reuse_dials_from_the_listen_port() -> None:
    transport = TcpTransport(port_reuse=True)
    accepted: list[Multiaddr] = []

    def factory(local: Multiaddr, remote: Multiaddr) -> asyncio.Protocol:
        accepted.append(remote)
        return asyncio.Protocol()

    listener = await transport.listen(Multiaddr("/ip4/127.0.0.1/tcp/0"), factory)
    other = await TcpTransport().listen(Multiaddr("/ip4/127.0.0.1/tcp/0"), factory)
    target = other.addrs[0]
    await transport.dial(target, factory)
    await wait_for(lambda: len(accepted) == 2)
    assert listener.addrs[0] in accepted
    # Once the reusable listener is gone, dials leave from an ephemeral port.
    await listener.close()
    await transport.dial(target, factory)
    await wait_for(lambda: len(accepted) == 4)
    assert accepted[2:] != [listener.addrs[0]] * 2
    assert listener.addrs[0] not in accepted[2:]
    await other.close()
