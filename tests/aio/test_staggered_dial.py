"""Staggered parallel dialing of a peer's addresses (``Node._first_reachable``): an
address that never answers costs the stagger, not ``dial_timeout``; the first connection
wins and nothing else stays open."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from aiop2p._aio.connection import Connection
from aiop2p.config import ConnectionLimits, NodeConfig
from aiop2p.errors import BannedPeerError, DialError, InvalidArgumentError, ShutdownError
from aiop2p.identity import PeerId
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node

from ..helpers import wait_for

pytestmark = pytest.mark.timeout(20)

Dial = Callable[[Multiaddr, PeerId | None, Any], Coroutine[Any, Any, Connection]]


class BlackHoles:
    """TCP listeners that accept and never speak; they count the sockets they hold."""

    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []
        self.accepted = 0
        self.open = 0

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        try:
            while await reader.read(4096):  # until the dialer closes its socket
                pass
        except OSError:
            pass
        finally:
            self.open -= 1
            writer.close()

    async def add(self, peer: PeerId) -> Multiaddr:
        server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        self.servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return Multiaddr(f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer}")

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        await wait_for(lambda: self.open == 0)
        for server in self.servers:
            await server.wait_closed()


@asynccontextmanager
async def black_holes() -> AsyncIterator[BlackHoles]:
    holes = BlackHoles()
    try:
        yield holes
    finally:
        await holes.close()


def counting(node: Node, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the node's address dials in flight: ``[now, most]``."""
    counts = [0, 0]
    real: Dial = node._dial_addr

    async def dial(addr: Multiaddr, peer: PeerId | None, role: Any = None) -> Connection:
        counts[0] += 1
        counts[1] = max(counts)
        try:
            return await real(addr, peer, role)
        finally:
            counts[0] -= 1

    monkeypatch.setattr(node, "_dial_addr", dial)
    return counts


async def test_black_hole_first_does_not_cost_the_dial_timeout() -> None:
    config = NodeConfig(dial_timeout=30, handshake_timeout=30)
    async with Node() as b, Node(config=config) as a, black_holes() as holes:
        await b.listen("/ip4/127.0.0.1/tcp/0")
        real = b.listen_addrs[0].with_peer_id(b.peer_id)
        learned: list[tuple[Multiaddr, list[Multiaddr]]] = []
        a.dial_succeeded = lambda peer, addr, failed: learned.append((addr, failed))
        hole = await holes.add(b.peer_id)
        async with asyncio.timeout(10):  # far below dial_timeout
            conn = await a.connect(b.peer_id, [hole, real])
        assert conn.remote_peer == b.peer_id
        assert holes.accepted == 1
        # The black hole was cancelled, not failed; its socket is closed.
        assert learned == [(real, [])]
        await wait_for(lambda: holes.open == 0)
        assert a._pending_outgoing == 0


async def test_a_banned_peer_ends_the_whole_dial_at_once() -> None:
    config = NodeConfig(dial_timeout=30, handshake_timeout=30, dial_stagger_seconds=0.01)
    async with Node() as b, Node(config=config) as a, black_holes() as holes:
        await b.listen("/ip4/127.0.0.1/tcp/0")
        real = b.listen_addrs[0].with_peer_id(b.peer_id)
        a.connection_gate = lambda conn: BannedPeerError(conn.remote_peer)
        hanging = [await holes.add(b.peer_id) for _ in range(2)]
        async with asyncio.timeout(10):  # far below dial_timeout
            with pytest.raises(BannedPeerError):
                await a.connect(b.peer_id, [hanging[0], real, hanging[1]])
        await wait_for(lambda: holes.open == 0)
        assert a._pending_outgoing == 0
        assert not a.connections_to(b.peer_id)


async def test_failed_address_starts_the_next_at_once() -> None:
    # A stagger longer than the test's cap: only the refusal can start the next address.
    config = NodeConfig(dial_stagger_seconds=60)
    async with Node() as b, Node(config=config) as a:
        await b.listen("/ip4/127.0.0.1/tcp/0")
        real = b.listen_addrs[0].with_peer_id(b.peer_id)
        refused = Multiaddr(f"/ip4/127.0.0.1/tcp/1/p2p/{b.peer_id}")
        learned: list[list[Multiaddr]] = []
        a.dial_succeeded = lambda peer, addr, failed: learned.append(failed)
        conn = await a.connect(b.peer_id, [refused, real])
        assert conn.remote_peer == b.peer_id
        assert learned == [[refused]]


async def test_fifty_hanging_addresses_stay_within_the_parallel_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = NodeConfig(dial_timeout=0.2, dial_stagger_seconds=0.01, max_parallel_dials_per_peer=4)
    async with Node(config=config) as a, black_holes() as holes:
        peer = Node().peer_id
        addrs = [await holes.add(peer) for _ in range(50)]
        counts = counting(a, monkeypatch)
        with pytest.raises(DialError) as info:
            await a.connect(peer, addrs)
        assert set(info.value.causes) == {str(addr) for addr in addrs}
        assert all("timed out" in str(cause) for cause in info.value.causes.values())
        assert counts == [0, 4]
        assert holes.accepted == 50
        await wait_for(lambda: holes.open == 0)
        assert a._pending_outgoing == 0


async def test_pending_outgoing_limit_holds_back_parallel_dials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = NodeConfig(
        dial_timeout=0.2,
        dial_stagger_seconds=0.01,
        limits=ConnectionLimits(max_pending_outgoing=2),
    )
    async with Node(config=config) as a, black_holes() as holes:
        peer = Node().peer_id
        addrs = [await holes.add(peer) for _ in range(6)]
        counts = counting(a, monkeypatch)
        with pytest.raises(DialError) as info:
            await a.connect(peer, addrs)
        # Every address was tried (none refused by the limit), two at a time.
        assert all("timed out" in str(cause) for cause in info.value.causes.values())
        assert len(info.value.causes) == 6
        assert counts == [0, 2]


async def test_a_connection_ready_after_the_winner_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = NodeConfig(dial_stagger_seconds=0.01)
    async with Node() as b, Node(config=config) as a:
        await b.listen("/ip4/127.0.0.1/tcp/0")
        await b.listen("/ip4/127.0.0.1/tcp/0")
        first, second = (addr.with_peer_id(b.peer_id) for addr in b.listen_addrs[:2])
        real: Dial = a._dial_addr
        late: list[Connection] = []

        async def dial(addr: Multiaddr, peer: PeerId | None, role: Any = None) -> Connection:
            conn = await real(addr, peer, role)
            if addr == first:
                # Win only once the second address has connected too.
                await wait_for(lambda: bool(late))
                return conn
            late.append(conn)
            # Until the dialer cancels this one; then hand it a connection anyway, as a
            # dial that finished just as it was cancelled does.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
            return conn

        monkeypatch.setattr(a, "_dial_addr", dial)
        conn = await a.connect(b.peer_id, [first, second])
        assert conn.remote_addr == first
        assert late[0] is not conn and late[0].is_closed
        assert a.connections_to(b.peer_id) == [conn]
        await wait_for(lambda: len(b.connections_to(a.peer_id)) == 1)


async def test_cancelling_the_dial_leaves_no_dial_or_socket() -> None:
    config = NodeConfig(dial_timeout=30, handshake_timeout=30, dial_stagger_seconds=0.01)
    async with Node(config=config) as a, black_holes() as holes:
        peer = Node().peer_id
        addrs = [await holes.add(peer) for _ in range(6)]
        dialing = asyncio.create_task(
            a._first_reachable(str(peer), addrs, lambda addr: a._dial_addr(addr, peer))
        )
        await wait_for(lambda: holes.open == 4)
        dialing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dialing
        assert a._pending_outgoing == 0
        await wait_for(lambda: holes.open == 0)


async def test_closing_the_node_ends_a_staggered_dial() -> None:
    config = NodeConfig(dial_timeout=30, handshake_timeout=30, dial_stagger_seconds=0.01)
    async with black_holes() as holes:
        async with Node(config=config) as a:
            peer = Node().peer_id
            addrs = [await holes.add(peer) for _ in range(3)]
            waiter = asyncio.ensure_future(a.connect(peer, addrs))
            await wait_for(lambda: holes.open == 3)
        with pytest.raises(ShutdownError):
            await waiter
        await wait_for(lambda: holes.open == 0)


def test_config_rejects_no_stagger_or_no_dial() -> None:
    with pytest.raises(InvalidArgumentError):
        NodeConfig(dial_stagger_seconds=0)
    with pytest.raises(InvalidArgumentError):
        NodeConfig(max_parallel_dials_per_peer=0)
