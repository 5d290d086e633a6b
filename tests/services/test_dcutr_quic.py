"""DCUtR over QUIC on loopback, with a relay in between (no real NAT): addresses offered
for both transports, QUIC tried first, only the answering side dials while the initiator
sends punch packets from its listening socket; a peer that never dials leaves the
initiator punching only until the connect timeout, then reporting the failure.  Through
real NATs: ``tests/netns/test_cli_punch.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aiop2p._aio.quic_connection import QuicConnection
from aiop2p._aio.quic_transport import QuicTransport
from aiop2p._aio.stream import Stream
from aiop2p._aio.webtransport_transport import WebTransportTransport
from aiop2p.config import NodeConfig
from aiop2p.errors import DialError, InvalidMultiaddrError, PortUnreachableError
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node
from aiop2p.protocols.dcutr import DCUTR_PROTOCOL_ID, DcutrResponder
from aiop2p.services.dcutr import (
    DcutrConfig,
    DcutrService,
    DirectConnectionUpgraded,
    HolePunchEvent,
    HolePunchFailed,
    direct_kind,
)
from aiop2p.services.relay.client import RelayClient
from aiop2p.services.relay.server import RelayServer
from aiop2p.transports.tcp import TcpTransport

from ..helpers import wait_for

pytestmark = pytest.mark.timeout(30)

LOOPBACK = DcutrConfig(allow_loopback_addrs=True, unilateral_upgrade=False)
TCP = "/ip4/127.0.0.1/tcp/0"
QUIC = "/ip4/127.0.0.1/udp/0/quic-v1"


def test_direct_kind() -> None:
    assert direct_kind(Multiaddr("/ip4/1.2.3.4/tcp/5")) == ("tcp", 5)
    assert direct_kind(Multiaddr("/ip6/::1/udp/7/quic-v1")) == ("quic", 7)
    peer = "/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
    assert direct_kind(Multiaddr("/ip4/1.2.3.4/udp/7/quic-v1" + peer)) == ("quic", 7)
    for other in ("/ip4/1.2.3.4/tcp/5/ws", "/dns4/x.org/tcp/5", "/ip4/1.2.3.4/udp/5",
                  "/ip4/1.2.3.4/tcp/5" + peer + "/p2p-circuit"):  # fmt: skip
        assert direct_kind(Multiaddr(other)) is None, other


class Nodes:
    def __init__(self) -> None:
        self.all: list[Node] = []

    async def relay(self) -> Multiaddr:
        r = Node()
        await r.start()
        self.all.append(r)
        await r.listen(TCP)
        RelayServer(r).start()
        return r.listen_addrs[0].with_peer_id(r.peer_id)

    async def peer(
        self, config: DcutrConfig | None, *, webtransport: bool = False
    ) -> tuple[Node, list[HolePunchEvent]]:
        # WebTransport (a QuicTransport subclass with sockets of its own) first, when
        # asked: the punch must still leave from the QUIC socket.
        first = [WebTransportTransport()] if webtransport else []
        node = Node(
            transports=[*first, TcpTransport(), QuicTransport()],
            config=NodeConfig(dial_timeout=3.0),
        )
        await node.start()
        self.all.append(node)
        events: list[HolePunchEvent] = []
        if config is not None:
            DcutrService(node, config=config).events.subscribe(events.append)
        await node.listen(TCP)
        await node.listen(QUIC)
        if webtransport:
            await node.listen(QUIC + "/webtransport")
        RelayClient(node)
        return node, events


@pytest.fixture
async def nodes() -> AsyncIterator[Nodes]:
    made = Nodes()
    yield made
    for node in made.all:
        await node.close()


def _outcomes(events: list[HolePunchEvent]) -> list[HolePunchEvent]:
    return [e for e in events if isinstance(e, DirectConnectionUpgraded | HolePunchFailed)]


async def test_send_punch_needs_a_quic_address_and_a_listener() -> None:
    transport = QuicTransport()
    with pytest.raises(InvalidMultiaddrError):
        transport.send_punch(Multiaddr("/ip4/127.0.0.1/tcp/1"), b"x")
    assert transport.send_punch(Multiaddr("/ip4/127.0.0.1/udp/1/quic-v1"), b"x") is False


async def test_hole_punch_prefers_quic_and_the_initiator_does_not_dial(nodes: Nodes) -> None:
    r_addr = await nodes.relay()
    a, a_events = await nodes.peer(LOOPBACK)
    b, b_events = await nodes.peer(LOOPBACK)
    circuit = (await a.listen(r_addr / "/p2p-circuit"))[0].with_peer_id(a.peer_id)
    await b.dial(r_addr)  # over TCP: r observes b at its TCP listen port
    relayed = await b.dial(circuit)
    assert relayed.is_relayed
    await wait_for(lambda: bool(_outcomes(a_events)) and bool(_outcomes(b_events)), cap=15)
    (done_a,) = _outcomes(a_events)
    (done_b,) = _outcomes(b_events)
    assert isinstance(done_a, DirectConnectionUpgraded) and done_a.attempts >= 1, a_events
    assert isinstance(done_b, DirectConnectionUpgraded), b_events
    # The NAT-less loopback "kept" the TCP port, so both offered their QUIC listen
    # address too; QUIC went first and won.  b (the answering side) dialled; a (the
    # initiator) only sent punch packets and took b's dial on its listener.
    quic_a = next(x for x in a.listen_addrs if (direct_kind(x) or ("",))[0] == "quic")
    assert done_b.addr is not None and done_b.addr.without_peer_id() == quic_a
    direct = [c for c in a.connections_to(b.peer_id) if not c.is_relayed]
    assert direct and isinstance(direct[0], QuicConnection), direct
    assert direct[0].direction.name == "INBOUND", direct[0]
    await wait_for(lambda: relayed.is_closed, cap=10)


async def test_punches_a_peer_that_never_dials_then_gives_up(nodes: Nodes) -> None:
    """b answers the DCUtR exchange with a QUIC address where only a bare UDP socket
    listens, and never dials: a sends punch packets there (random, from its QUIC listen
    port) until its connect timeout, stops, and reports the failure; the relayed
    connection stays."""
    loop = asyncio.get_running_loop()
    received: list[tuple[bytes, tuple[str, int]]] = []

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            received.append((data, addr))

    sink, _ = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    try:
        port = sink.get_extra_info("sockname")[1]
        trap = Multiaddr(f"/ip4/127.0.0.1/udp/{port}/quic-v1")
        r_addr = await nodes.relay()
        config = DcutrConfig(
            allow_loopback_addrs=True, unilateral_upgrade=False, max_attempts=1,
            connect_timeout=1.0,
        )  # fmt: skip
        a, a_events = await nodes.peer(config, webtransport=True)
        b, _ = await nodes.peer(None)

        async def answer_and_never_dial(stream: Stream) -> None:
            machine = DcutrResponder([trap])
            while not machine.events_received():
                data = await stream.read(8192)
                if not data:
                    machine.receive_eof()
                else:
                    machine.receive_data(data)
                if out := machine.data_to_send():
                    await stream.write(out)

        b.set_stream_handler(DCUTR_PROTOCOL_ID, answer_and_never_dial)
        circuit = (await a.listen(r_addr / "/p2p-circuit"))[0].with_peer_id(a.peer_id)
        relayed = await b.dial(circuit)
        await wait_for(lambda: bool(_outcomes(a_events)), cap=15)
        (failed,) = _outcomes(a_events)
        assert isinstance(failed, HolePunchFailed), a_events
        assert isinstance(failed.error, DialError) and "within 1.0 s" in str(failed.error)
        assert failed.remote_addrs == (trap,)
        # Punched from the QUIC listening socket, random bytes, none like the other.
        quic_port = next(p for x in a.listen_addrs if (p := direct_kind(x)) and p[0] == "quic")[1]
        assert len(received) >= 2, received
        assert {src for _, src in received} == {("127.0.0.1", quic_port)}
        assert all(len(data) == 64 for data, _ in received)
        assert len({data for data, _ in received}) == len(received)
        # Punching stopped with the attempt; the relayed connection is untouched.
        await wait_for(
            lambda: not any(t.get_name().startswith("dcutr punch") for t in asyncio.all_tasks())
        )
        assert not relayed.is_closed
    finally:
        sink.close()


async def test_offered_addresses_follow_a_port_keeping_nat(nodes: Nodes) -> None:
    """An observed port equal to the connection's local port (the NAT kept it): the
    observed IP with each listen port, TCP and QUIC.  Another port (a NAT that changes
    ports), or no listen address of the observed IP's family: the observation as is."""
    node, _ = await nodes.peer(None)
    service = DcutrService(node, config=LOOPBACK)
    kinds = dict(kind for x in node.listen_addrs if (kind := direct_kind(x)) is not None)
    kept = service._mapped(Multiaddr("/ip4/1.2.3.4/tcp/5555"), Multiaddr("/ip4/127.0.0.1/tcp/5555"))
    assert kept == [
        Multiaddr(f"/ip4/1.2.3.4/tcp/{kinds['tcp']}"),
        Multiaddr(f"/ip4/1.2.3.4/udp/{kinds['quic']}/quic-v1"),
    ]
    changed = Multiaddr("/ip4/1.2.3.4/tcp/6666")
    assert service._mapped(changed, Multiaddr("/ip4/127.0.0.1/tcp/5555")) == [changed]
    v6 = Multiaddr("/ip6/2001:db8::1/tcp/5555")
    assert service._mapped(v6, Multiaddr("/ip4/127.0.0.1/tcp/5555")) == [v6]
    assert service._mapped(changed, None) == [changed]
    await service.close()


async def test_the_answering_side_dials_again_while_the_peers_nat_refuses(
    nodes: Nodes,
) -> None:
    """A NAT that answers unsolicited datagrams with ICMP port unreachable (a Linux
    router with no drop rule does) refuses b's first QUIC dials until a's punch packets
    have opened it: b dials again instead of giving up on QUIC."""
    r_addr = await nodes.relay()
    a, a_events = await nodes.peer(LOOPBACK)
    b, b_events = await nodes.peer(LOOPBACK)
    quic_dials: list[Multiaddr] = []
    dial = b.dial

    async def refused_twice(addr: Multiaddr | str, **kwargs: Any) -> Any:
        addr = Multiaddr(addr) if isinstance(addr, str) else addr
        if (direct_kind(addr) or ("",))[0] == "quic":
            quic_dials.append(addr)
            if len(quic_dials) <= 2:
                raise PortUnreachableError("QUIC dial refused: Connection refused (ICMP)")
        return await dial(addr, **kwargs)

    b.dial = refused_twice  # type: ignore[method-assign]
    circuit = (await a.listen(r_addr / "/p2p-circuit"))[0].with_peer_id(a.peer_id)
    await dial(r_addr)
    await dial(circuit)
    await wait_for(lambda: bool(_outcomes(a_events)) and bool(_outcomes(b_events)), cap=15)
    (done_b,) = _outcomes(b_events)
    assert isinstance(done_b, DirectConnectionUpgraded), b_events
    quic_a = next(x for x in a.listen_addrs if (direct_kind(x) or ("",))[0] == "quic")
    assert done_b.addr is not None and done_b.addr.without_peer_id() == quic_a
    assert len(quic_dials) >= 3
