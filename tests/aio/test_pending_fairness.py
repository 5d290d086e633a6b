"""Pending handshakes are bounded per source as well as globally (issue 8, item 7).

Real loopback sockets: a flood of stalled TCP connections (connect, send nothing) from
127.0.0.2 must leave room for a peer on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiop2p._aio.connection import Connection
from aiop2p.config import ConnectionLimits, NodeConfig
from aiop2p.errors import ConnectionLimitError
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node
from aiop2p.transports._base import Transport
from aiop2p.transports.pending import FairPending, Source, pending_source
from aiop2p.transports.websocket import WebSocketConfig, WebSocketTransport

from ..helpers import wait_for

FLOOD = 300
"""Stalled connections from one address: more than the global bound (256)."""
HANDSHAKE_TIMEOUT = 30.0
"""Long enough that no flood connection times out while the test runs."""
CAP = 5.0
"""How long the legitimate client may take: well below the handshake timeout."""


@asynccontextmanager
async def stalled(host: str, port: int, count: int) -> AsyncIterator[list[socket.socket]]:
    """``count`` sockets bound to ``host`` that connect to loopback ``port`` and stay silent."""
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setblocking(False)
            sock.bind((host, 0))
            await loop.sock_connect(sock, ("127.0.0.1", port))
        yield socks
    finally:
        for sock in socks:
            sock.close()


def from_host(host: str) -> Callable[[Connection], bool]:
    def match(conn: Connection) -> bool:
        return conn.remote_addr is not None and conn.remote_addr.components()[0][1] == host

    return match


class Refusals:
    """Counts inbound connections the server refused at a connection limit, per host."""

    def __init__(self, node: Node) -> None:
        self.by_host: dict[str, int] = {}
        node.incoming_failed.subscribe(self._on_error)

    def _on_error(self, conn: Connection) -> None:
        if isinstance(conn.error, ConnectionLimitError) and conn.remote_addr is not None:
            host = conn.remote_addr.components()[0][1] or ""
            self.by_host[host] = self.by_host.get(host, 0) + 1

    def __getitem__(self, host: str) -> int:
        return self.by_host.get(host, 0)


def pending_from(node: Node, host: str) -> int:
    match = from_host(host)
    return sum(1 for c in node._pending if c.direction.name == "INBOUND" and match(c))


def port_of(node: Node) -> int:
    return int(node.listen_addrs[0].components()[1][1] or 0)


async def test_flood_from_one_address_leaves_room_for_others() -> None:
    config = NodeConfig(handshake_timeout=HANDSHAKE_TIMEOUT)
    async with Node(config=config) as server, Node() as client:
        await server.listen("/ip4/127.0.0.1/tcp/0")
        refusals = Refusals(server)
        target: Multiaddr = server.listen_addrs[0].with_peer_id(server.peer_id)
        async with stalled("127.0.0.2", port_of(server), FLOOD):
            # Every flood connection was accepted, and either admitted or refused.
            await wait_for(
                lambda: refusals["127.0.0.2"] + pending_from(server, "127.0.0.2") == FLOOD,
                cap=CAP,
            )
            admitted = pending_from(server, "127.0.0.2")
            print(f"flood of {FLOOD}: {admitted} admitted, {refusals['127.0.0.2']} refused")
            async with asyncio.timeout(CAP):
                rtts = await client.ping(target)
            assert len(rtts) == 1
            assert refusals["127.0.0.1"] == 0
            assert admitted == config.limits.max_pending_incoming_per_ip
            assert refusals["127.0.0.2"] == FLOOD - config.limits.max_pending_incoming_per_ip


async def test_full_global_bound_evicts_from_the_busiest_source() -> None:
    """Many sources, each under its own bound, fill the global bound: a newcomer from a
    fresh address still gets in, at the cost of the oldest handshake of the busiest one."""
    config = NodeConfig(
        handshake_timeout=HANDSHAKE_TIMEOUT,
        limits=ConnectionLimits(max_pending_incoming=8, max_pending_incoming_per_ip=5),
    )
    async with Node(config=config) as server, Node() as client:
        await server.listen("/ip4/127.0.0.1/tcp/0")
        refusals = Refusals(server)
        port = port_of(server)
        async with (
            stalled("127.0.0.2", port, 5) as busy,
            stalled("127.0.0.3", port, 3),
        ):
            await wait_for(lambda: len(server._pending) == 8, cap=CAP)
            # Global bound reached: 127.0.0.3 (3 held) takes the place of 127.0.0.2's oldest.
            async with stalled("127.0.0.3", port, 1):
                await wait_for(
                    lambda: pending_from(server, "127.0.0.3") == 4 and refusals["127.0.0.2"] == 1,
                    cap=CAP,
                )  # evicted, not the newcomer refused
                assert pending_from(server, "127.0.0.2") == 4
                assert refusals["127.0.0.3"] == 0
                await wait_for(lambda: _closed_by_peer(busy[0]), cap=CAP)
                assert not any(_closed_by_peer(s) for s in busy[1:])
                # 4 and 4: a fifth from 127.0.0.3 would not make things fairer, so it is refused.
                async with stalled("127.0.0.3", port, 1):
                    await wait_for(lambda: refusals["127.0.0.3"] == 1, cap=CAP)
                    assert pending_from(server, "127.0.0.2") == 4
                    # A peer from a third address always gets in.
                    target = server.listen_addrs[0].with_peer_id(server.peer_id)
                    async with asyncio.timeout(CAP):
                        assert len(await client.ping(target)) == 1
                    assert refusals["127.0.0.1"] == 0


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


async def test_websocket_upgrade_flood_from_one_address_leaves_room_for_others() -> None:
    """The WebSocket listener's HTTP-upgrade stage is bounded per source too."""
    ws_config = WebSocketConfig(max_pending_upgrades=8, max_pending_upgrades_per_ip=4)
    server_transports: list[Transport] = [WebSocketTransport(config=ws_config)]
    async with (
        Node(transports=server_transports) as server,
        Node(transports=[WebSocketTransport()]) as client,
    ):
        (addr,) = await server.listen("/ip4/127.0.0.1/tcp/0/ws")
        port = int(addr.components()[1][1] or 0)
        async with stalled("127.0.0.2", port, 10) as flood:
            await wait_for(lambda: sum(_closed_by_peer(s) for s in flood) == 6, cap=CAP)
            async with asyncio.timeout(CAP):
                assert len(await client.ping(addr.with_peer_id(server.peer_id))) == 1


def test_sources() -> None:
    relay = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
    target = "12D3KooWQYBwrH1UWXpT8uihxNmFPq4hDH3pTb9cSPBgjvEKYMsS"
    assert pending_source(Multiaddr("/ip4/10.0.0.1/tcp/1")) == Source("10.0.0.1", capped=True)
    assert pending_source(Multiaddr("/ip4/10.0.0.1/tcp/1/ws")) == Source("10.0.0.1", capped=True)
    a = pending_source(Multiaddr("/ip6/2001:db8::1/tcp/1"))
    b = pending_source(Multiaddr("/ip6/2001:db8::ffff:2/tcp/1"))
    c = pending_source(Multiaddr("/ip6/2001:db8:0:1::1/tcp/1"))
    assert a == b == Source("2001:db8::/64", capped=True)
    assert c != a
    mapped = pending_source(Multiaddr("/ip6/::ffff:10.0.0.1/tcp/1"))
    assert mapped == Source("10.0.0.1", capped=True)
    circuit = Multiaddr(f"/ip4/10.0.0.1/tcp/1/p2p/{relay}/p2p-circuit/p2p/{target}")
    assert pending_source(circuit) == Source(f"relay {relay}", capped=False)
    assert not pending_source(Multiaddr("/memory/7")).capped
    assert not pending_source(None).capped


def test_fair_pending_rules() -> None:
    ip = [Source(f"10.0.0.{i}", capped=True) for i in range(4)]
    relay = Source("relay R", capped=False)
    fair = FairPending[str](max_total=6, max_per_source=3)
    assert fair.admit("a1", ip[1]) == (None, None)
    assert fair.admit("a2", ip[1]) == (None, None)
    assert fair.admit("a3", ip[1]) == (None, None)
    refused, evicted = fair.admit("a4", ip[1])
    assert isinstance(refused, ConnectionLimitError) and evicted is None  # per source
    for i in range(3):
        assert fair.admit(f"r{i}", relay) == (None, None)  # uncapped, but counted
    assert len(fair) == 6
    # Full: the newcomer (0 held) takes the oldest of the busiest (3 held; first by age).
    assert fair.admit("b1", ip[2]) == (None, "a1")
    assert "a1" not in fair and fair.held(ip[1].key) == 2
    assert fair.admit("b2", ip[2]) == (None, "r0")  # the relay now holds the most
    # 2, 2, 2: no move makes it fairer, so the newcomer is refused, even from a new source.
    refused, evicted = fair.admit("b3", ip[2])
    assert isinstance(refused, ConnectionLimitError) and evicted is None
    assert fair.admit("c1", ip[3]) == (None, "a2")  # 1, 2, 2, 1 after
    refused, _ = fair.admit("c2", ip[3])
    assert refused is not None
    fair.discard("b1")
    fair.discard("b1")  # idempotent
    assert fair.admit("c2", ip[3]) == (None, None)
    assert fair.held(ip[3].key) == 2 and len(fair) == 6


def _quic_initials(count: int, port: int) -> list[bytes]:
    """First datagrams of ``count`` QUIC clients that will never send a second one."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection as RawQuic

    now = asyncio.get_running_loop().time()
    initials: list[bytes] = []
    for _ in range(count):
        raw = RawQuic(configuration=QuicConfiguration(is_client=True, alpn_protocols=["libp2p"]))
        raw.connect(("127.0.0.1", port), now=now)
        initials.extend(data for data, _ in raw.datagrams_to_send(now=now))
    return initials


async def test_quic_initial_flood_from_one_address_leaves_room_for_others() -> None:
    """QUIC handshakes are admitted by the same per-source bound: an inbound connection
    refused by the node never reaches the QUIC handshake (no CPU spent on it)."""
    config = NodeConfig(
        handshake_timeout=HANDSHAKE_TIMEOUT,
        limits=ConnectionLimits(max_pending_incoming_per_ip=4),
    )
    async with Node(config=config) as server, Node() as client:
        (addr,) = await server.listen("/ip4/127.0.0.1/udp/0/quic-v1")
        refusals = Refusals(server)
        port = port_of(server)
        flood = 10
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.2", 0))
            for datagram in _quic_initials(flood, port):
                sock.sendto(datagram, ("127.0.0.1", port))
            await wait_for(lambda: refusals["127.0.0.2"] == flood - 4, cap=CAP)
            assert pending_from(server, "127.0.0.2") == 4
            async with asyncio.timeout(CAP):
                assert len(await client.ping(addr.with_peer_id(server.peer_id))) == 1
            assert refusals["127.0.0.1"] == 0
            assert pending_from(server, "127.0.0.2") == 4
        finally:
            sock.close()
