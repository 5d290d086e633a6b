"""One suite every transport must pass, run through real nodes (Noise + Yamux on top;
QUIC and WebTransport bring their own streams).

Parametrised by transport; a new transport (relay, ...) joins by adding a ``Kind``.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio

from aiop2p._aio.quic_transport import QuicTransport
from aiop2p._aio.stream import Stream
from aiop2p._aio.webtransport_transport import WebTransportTransport
from aiop2p.errors import DialError, P2PError
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node
from aiop2p.transports._base import Transport
from aiop2p.transports.memory import MemoryHub, MemoryTransport
from aiop2p.transports.tcp import TcpTransport
from aiop2p.transports.websocket import WebSocketTransport

from ..helpers import wait_for

ECHO = "/test/echo-to-eof/1.0.0"
READ_CHUNK_BYTES = 1 << 20
LARGE_BYTES = 8 << 20


@dataclass(frozen=True)
class Kind:
    name: str
    make: Callable[[], list[Transport]]
    ip4: str
    ip6: str | None  # None: the transport has no IPv6 form
    suffix: str
    port_protocol: str = "tcp"  # the component whose value port 0 resolves


MEMORY_HUB = MemoryHub()

KINDS = [
    Kind("tcp", lambda: [TcpTransport()], "/ip4/127.0.0.1/tcp/0", "/ip6/::1/tcp/0", ""),
    Kind(
        "ws",
        lambda: [TcpTransport(), WebSocketTransport()],
        "/ip4/127.0.0.1/tcp/0/ws",
        "/ip6/::1/tcp/0/ws",
        "/ws",
    ),
    Kind("memory", lambda: [MemoryTransport(MEMORY_HUB)], "/memory/0", None, "", "memory"),
    Kind(
        "quic",
        lambda: [QuicTransport()],
        "/ip4/127.0.0.1/udp/0/quic-v1",
        "/ip6/::1/udp/0/quic-v1",
        "/quic-v1",
        "udp",
    ),
    Kind(
        "webtransport",
        lambda: [WebTransportTransport()],
        "/ip4/127.0.0.1/udp/0/quic-v1/webtransport",
        "/ip6/::1/udp/0/quic-v1/webtransport",
        "/quic-v1/webtransport",
        "udp",
    ),
]


def without_certhashes(addr: Multiaddr) -> Multiaddr:
    """A WebTransport listener reports its address with ``/certhash``; binds have none."""
    return Multiaddr(str(addr).split("/certhash/", 1)[0])


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


async def echo_to_eof(stream: Stream) -> None:
    """Send back everything until the remote closes its side."""
    while chunk := await stream.read(READ_CHUNK_BYTES):
        await stream.write(chunk)


async def read_to_eof(stream: Stream) -> bytes:
    parts = []
    while chunk := await stream.read(READ_CHUNK_BYTES):
        parts.append(chunk)
    return b"".join(parts)


@pytest.fixture(params=KINDS, ids=[k.name for k in KINDS])
def kind(request: pytest.FixtureRequest) -> Kind:
    kind: Kind = request.param
    return kind


@pytest_asyncio.fixture
async def pair(kind: Kind) -> AsyncIterator[tuple[Node, Node, Multiaddr]]:
    """(dialer, listener, the listener's address with its peer id)."""
    async with Node(transports=kind.make()) as a, Node(transports=kind.make()) as b:
        b.set_stream_handler(ECHO, echo_to_eof)
        (addr,) = await b.listen(kind.ip4)
        yield a, b, addr.with_peer_id(b.peer_id)
    current = asyncio.current_task()
    leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not leftover, f"tasks left behind: {leftover}"


async def echo(node: Node, addr: Multiaddr, payload: bytes) -> bytes:
    stream = await node.new_stream(addr, ECHO)
    await stream.write(payload)
    await stream.close()
    return await read_to_eof(stream)


async def test_listen_on_port_zero_reports_dialable_address(
    kind: Kind, pair: tuple[Node, Node, Multiaddr]
) -> None:
    a, b, addr = pair
    full = addr.without_peer_id()
    bare = without_certhashes(full)
    port = kind.port_protocol
    assert int(bare.value_for(port) or 0) != 0
    assert str(bare).endswith(f"/{port}/{bare.value_for(port)}{kind.suffix}")
    assert b.listen_addrs == [full]
    conn = await a.dial(addr)
    assert conn.remote_peer == b.peer_id
    await wait_for(lambda: b.is_connected(a.peer_id))
    (inbound,) = b.connections
    assert inbound.local_addr == bare
    assert inbound.remote_addr is not None and str(inbound.remote_addr).endswith(kind.suffix)


async def test_dial_and_ping(pair: tuple[Node, Node, Multiaddr]) -> None:
    a, b, addr = pair
    rtts = await a.ping(addr, count=3)
    assert len(rtts) == 3 and all(r >= 0 for r in rtts)
    assert len(await b.ping(a.peer_id, count=1)) == 1  # and back over the same connection


@pytest.mark.parametrize(
    "size", [0, 1, 2, 125, 126, 127, 65535, 65536, 65537, 262144, 262145, 1 << 20, 3 << 20]
)
async def test_echo_sizes(pair: tuple[Node, Node, Multiaddr], size: int) -> None:
    a, _, addr = pair
    payload = random.Random(size).randbytes(size)
    assert await echo(a, addr, payload) == payload


async def test_64_concurrent_streams(pair: tuple[Node, Node, Multiaddr]) -> None:
    a, _, addr = pair
    await a.dial(addr)
    payloads = [random.Random(i).randbytes(i * 997) for i in range(64)]
    results = await asyncio.gather(*(echo(a, addr, p) for p in payloads))
    assert results == payloads
    assert len(a.connections) == 1


async def test_large_transfer_both_ways(pair: tuple[Node, Node, Multiaddr]) -> None:
    a, b, addr = pair
    up = random.Random(1).randbytes(LARGE_BYTES)
    down = random.Random(2).randbytes(LARGE_BYTES)
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def exchange(stream: Stream) -> None:
        writer = asyncio.ensure_future(stream.write(down))
        received.set_result(await read_to_eof(stream))
        await writer

    b.set_stream_handler("/test/exchange/1.0.0", exchange)
    stream = await a.new_stream(addr, "/test/exchange/1.0.0")

    async def send() -> None:
        await stream.write(up)
        await stream.close()

    got, _ = await asyncio.gather(read_to_eof(stream), send())
    assert got == down
    assert await received == up


async def test_remote_close_is_seen(pair: tuple[Node, Node, Multiaddr]) -> None:
    a, b, addr = pair
    conn = await a.dial(addr)
    await wait_for(lambda: b.is_connected(a.peer_id))
    (theirs,) = b.connections
    stream = await b.new_stream(a.peer_id, "/nothing/1.0.0")
    await conn.close()
    await asyncio.wait_for(theirs.wait_closed(), 5)
    assert theirs.is_closed and not b.connections
    with pytest.raises(P2PError):
        await stream.read()


async def test_remote_abort_is_seen(pair: tuple[Node, Node, Multiaddr]) -> None:
    a, b, addr = pair
    conn = await a.dial(addr)
    await wait_for(lambda: b.is_connected(a.peer_id))
    (theirs,) = b.connections
    conn.abort()
    await asyncio.wait_for(theirs.wait_closed(), 5)
    assert not b.connections


async def test_listener_close_refuses_new_dials(pair: tuple[Node, Node, Multiaddr]) -> None:
    a, b, addr = pair
    assert await b.stop_listening_addr(addr.without_peer_id())
    assert b.listen_addrs == []
    with pytest.raises(DialError):
        await a.dial(addr)


async def test_listener_close_keeps_the_connections_it_accepted(
    pair: tuple[Node, Node, Multiaddr],
) -> None:
    a, b, addr = pair
    conn = await a.dial(addr)
    await wait_for(lambda: b.is_connected(a.peer_id))
    assert await asyncio.wait_for(b.stop_listening_addr(addr.without_peer_id()), 5)
    assert len(await a.ping(b.peer_id, count=1)) == 1  # still over the same connection
    assert a.connections_to(b.peer_id) == [conn]
    assert len(await b.ping(a.peer_id, count=1)) == 1


IP_KINDS = [k for k in KINDS if k.ip6 is not None]  # memory has no IPv6 form


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
@pytest.mark.parametrize("ip_kind", IP_KINDS, ids=[k.name for k in IP_KINDS])
async def test_ipv6_loopback(ip_kind: Kind) -> None:
    kind = ip_kind
    assert kind.ip6 is not None
    async with Node(transports=kind.make()) as a, Node(transports=kind.make()) as b:
        b.set_stream_handler(ECHO, echo_to_eof)
        (addr,) = await b.listen(kind.ip6)
        assert addr.protocol_names()[0] == "ip6"
        assert str(without_certhashes(addr)).endswith(kind.suffix)
        addr = addr.with_peer_id(b.peer_id)
        assert len(await a.ping(addr)) == 1
        assert await echo(a, addr, b"over ipv6") == b"over ipv6"
