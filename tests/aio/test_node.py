"""Two real nodes over loopback TCP: upgrade, streams, faults (identify, ping and perf
have their modules under tests/services)."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Callable

import pytest

from aiop2p._aio.stream import Stream
from aiop2p.config import NodeConfig
from aiop2p.errors import (
    DialError,
    HandshakeTimeoutError,
    MessageTooLargeError,
    P2PError,
    PeerIdMismatchError,
    ProtocolNotSupportedError,
    StreamClosedError,
    StreamResetError,
)
from aiop2p.identity import KeyPair, PeerId
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node

from ..helpers import wait_for

ECHO = "/test/echo/1.0.0"


async def echo_handler(stream: Stream) -> None:
    data = await stream.read_message(1 << 20)
    await stream.write_message(data)


def addr_of(node: Node) -> Multiaddr:
    return node.listen_addrs[0].with_peer_id(node.peer_id)


async def test_dial_establishes_secure_muxed_connection(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    conn = await a.dial(addr_of(b))
    assert conn.remote_peer == b.peer_id
    assert a.is_connected(b.peer_id)
    await wait_for(lambda: b.is_connected(a.peer_id))
    # A second dial reuses the connection.
    assert await a.dial(addr_of(b)) is conn


async def test_request_response_on_new_streams(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    b.set_stream_handler(ECHO, echo_handler)
    for i in range(20):
        stream = await a.new_stream(addr_of(b), ECHO)
        payload = bytes([i]) * (i * 1000 + 1)
        await stream.write_message(payload)
        assert await stream.read_message(1 << 20) == payload
        await stream.close()

    # Concurrent requests on one connection.
    async def one(i: int) -> bytes:
        stream = await a.new_stream(b.peer_id, ECHO)
        await stream.write_message(str(i).encode())
        return await stream.read_message(100)

    results = await asyncio.gather(*(one(i) for i in range(64)))
    assert results == [str(i).encode() for i in range(64)]


async def test_unknown_protocol_is_refused(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    stream = await a.new_stream(addr_of(b), "/nobody/1.0.0")
    await stream.write(b"hello")
    with pytest.raises(ProtocolNotSupportedError):
        await stream.read()
    with pytest.raises(ProtocolNotSupportedError):
        await a.new_stream(addr_of(b), ["/nobody/1.0.0", "/nobody/2.0.0"])
    # The connection still serves other streams.
    assert len(await a.ping(b.peer_id)) == 1


async def test_wrong_peer_id_is_rejected(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    other = KeyPair.generate().peer_id
    with pytest.raises(PeerIdMismatchError):
        await a.dial(b.listen_addrs[0].with_peer_id(other))
    assert len(await a.ping(addr_of(b))) == 1


async def test_unreachable_address_raises_dial_error(node_pair: tuple[Node, Node]) -> None:
    a, _ = node_pair
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DialError):
        await a.dial(f"/ip4/127.0.0.1/tcp/{port}")


async def test_oversized_message_resets_stream(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    errors: list[BaseException] = []

    async def strict(stream: Stream) -> None:
        try:
            await stream.read_message(16)
        except P2PError as exc:
            errors.append(exc)
            raise

    b.set_stream_handler("/strict/1.0.0", strict)
    stream = await a.new_stream(addr_of(b), "/strict/1.0.0")
    await stream.write_message(b"x" * 100)
    with pytest.raises(StreamResetError):
        await stream.read()
    assert isinstance(errors[0], MessageTooLargeError)
    assert len(await a.ping(b.peer_id)) == 1


async def test_stalled_handshake_times_out_and_node_serves_others() -> None:
    config = NodeConfig(handshake_timeout=0.3)
    async with Node(config=config) as b, Node() as a:
        await b.listen("/ip4/127.0.0.1/tcp/0")
        target = b.listen_addrs[0]
        host, port = target.value_for("ip4"), int(target.value_for("tcp") or 0)
        reader, writer = await asyncio.open_connection(host, port)
        # Send nothing: the listener must drop us after its handshake timeout.
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        writer.close()
        assert len(await a.ping(addr_of(b))) == 1


async def test_handshake_timeout_on_dial() -> None:
    writers: list[asyncio.StreamWriter] = []  # a peer that accepts and never answers
    server = await asyncio.start_server(lambda r, w: writers.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Node(config=NodeConfig(handshake_timeout=0.3)) as a:
            with pytest.raises(DialError) as info:
                await a.dial(f"/ip4/127.0.0.1/tcp/{port}")
            assert isinstance(info.value.__cause__, HandshakeTimeoutError)
    finally:
        server.close()
        for writer in writers:  # from Python 3.12.1 wait_closed waits for them
            writer.close()
        await server.wait_closed()


async def test_garbage_instead_of_handshake(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    target = b.listen_addrs[0]
    reader, writer = await asyncio.open_connection("127.0.0.1", int(target.value_for("tcp") or 0))
    # A Noise message 1 too short to hold an ephemeral key.
    writer.write(b"\x13/multistream/1.0.0\n\x07/noise\n\x00\x05hello")
    async with asyncio.timeout(5):
        while await reader.read(4096):
            pass
    writer.close()
    assert len(await a.ping(addr_of(b))) == 1


async def test_connection_reset_mid_stream(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    started = asyncio.Event()

    async def slow(stream: Stream) -> None:
        started.set()
        await stream.read()

    b.set_stream_handler("/slow/1.0.0", slow)
    stream = await a.new_stream(addr_of(b), "/slow/1.0.0")
    await stream.write(b"x")
    await asyncio.wait_for(started.wait(), 5)
    conn = stream.connection
    conn.abort()
    with pytest.raises(P2PError):
        await stream.read()
    await wait_for(lambda: not b.is_connected(a.peer_id))
    assert len(await a.ping(addr_of(b))) == 1


async def test_write_after_close_and_read_to_eof(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    b.set_stream_handler(ECHO, echo_handler)
    stream = await a.new_stream(addr_of(b), ECHO)
    await stream.write_message(b"abc")
    await stream.close()
    with pytest.raises(StreamClosedError):
        await stream.write(b"more")
    assert await stream.read_message(10) == b"abc"
    assert await stream.read() == b""


async def test_ipv6_loopback() -> None:
    async with Node() as a, Node() as b:
        try:
            await b.listen("/ip6/::1/tcp/0")
        except P2PError as exc:  # pragma: no cover - machine without IPv6
            pytest.fail(f"IPv6 loopback unavailable: {exc}")
        assert len(await a.ping(addr_of(b))) == 1


async def test_half_open_inbound_stream_is_reset_after_linger() -> None:
    async with Node(config=NodeConfig(stream_linger_timeout=0.2)) as b, Node() as a:
        await b.listen("/ip4/127.0.0.1/tcp/0")
        b.set_stream_handler(ECHO, echo_handler)
        stream = await a.new_stream(addr_of(b), ECHO)
        await stream.write_message(b"no close from me")
        assert await stream.read_message(100) == b"no close from me"
        server_conn = b.connections_to(a.peer_id)[0]
        await wait_for(lambda: not server_conn.streams)
        await wait_for(lambda: stream.is_closed)
        with pytest.raises(StreamResetError):
            await stream.write(b"late")


async def test_lingering_stream_is_freed_once_the_requester_closes() -> None:
    """The linger queue holds a stream's id, not the stream: an answered stream the
    requester closes is freed at once (not after ``stream_linger_timeout``), while a
    stream left half-open by the requester is still reset when its grace period ends."""
    async with Node(config=NodeConfig(stream_linger_timeout=3600.0)) as b, Node() as a:
        await b.listen("/ip4/127.0.0.1/tcp/0")
        b.set_stream_handler(ECHO, echo_handler)
        polite = await a.new_stream(addr_of(b), ECHO)
        await polite.write_message(b"answered")
        assert await polite.read_message(100) == b"answered"
        rude = await a.new_stream(addr_of(b), ECHO)  # the same connection
        await rude.write_message(b"never closed")  # and it never closes: a hostile requester
        assert await rude.read_message(100) == b"never closed"
        await polite.close()
        server_conn = b.connections_to(a.peer_id)[0]
        await wait_for(lambda: len(server_conn.streams) == 1)  # the rude one lingers
        gc.collect()
        alive = [o for o in gc.get_objects() if type(o) is Stream and o.connection is server_conn]
        # The polite stream is freed, though its linger deadline is an hour away.
        assert [s.stream_id for s in alive] == [s.stream_id for s in server_conn.streams]


async def test_handler_tasks_end_by_themselves_and_report_their_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Handler tasks carry no done callback: each leaves the node's task set itself, and a
    handler that crashes is logged and its stream reset (the remote sees the reset)."""
    broken = "/test/broken/1.0.0"

    async def crash(stream: Stream) -> None:
        await stream.read_message(100)
        raise ValueError("handler bug")

    async with Node() as server, Node() as client:
        server.set_stream_handler(ECHO, echo_handler)
        server.set_stream_handler(broken, crash)
        await server.listen("/ip4/127.0.0.1/tcp/0")
        conn = await client.dial(addr_of(server))
        for i in range(5):
            stream = await conn.new_stream(ECHO)
            await stream.write_message(b"x%d" % i)
            assert await stream.read_message(100) == b"x%d" % i
            await stream.close()
        stream = await conn.new_stream(broken)
        await stream.write_message(b"boom")
        with pytest.raises(StreamResetError):
            await stream.read_message(100)
        await wait_for(lambda: not server._tasks, cap=10)
        assert any(
            "handler for /test/broken/1.0.0 failed" in r.getMessage()
            and r.exc_info is not None
            and isinstance(r.exc_info[1], ValueError)
            for r in caplog.records
        )


async def test_offers_are_asked_per_proposal_and_follow_later_changes() -> None:
    """The node's offer is a live view asked only about the proposed protocol: one offer
    call per inbound stream, not one per handler, and handlers or offers changed after the
    connection opened count for its next streams."""
    hidden = "/test/hidden/1.0.0"
    late = "/test/late/1.0.0"
    asked: list[str] = []
    allowed = {hidden: False, ECHO: True}

    def offer_of(protocol: str) -> Callable[[PeerId], bool]:
        def offer(peer: PeerId) -> bool:
            asked.append(protocol)
            return allowed[protocol]

        return offer

    async with Node() as server, Node() as client:
        server.set_stream_handler(ECHO, echo_handler, offer=offer_of(ECHO))
        server.set_stream_handler(hidden, echo_handler, offer=offer_of(hidden))
        await server.listen("/ip4/127.0.0.1/tcp/0")
        conn = await client.dial(addr_of(server))
        await wait_for(lambda: bool(server.connections_to(client.peer_id)), cap=10)
        asked.clear()
        for _ in range(3):
            stream = await conn.new_stream(ECHO)
            await stream.write_message(b"hi")
            assert await stream.read_message(100) == b"hi"
            await stream.close()
        assert asked == [ECHO] * 3  # never the other handler's offer
        with pytest.raises(ProtocolNotSupportedError):
            await conn.new_stream([hidden, "/test/none/1.0.0"])
        allowed[hidden] = True  # the offer changes: the same connection sees it
        assert await (await conn.new_stream([hidden, "/test/none/1.0.0"])).wait_negotiated()
        server.set_stream_handler(late, echo_handler)  # added after the connection opened
        stream = await conn.new_stream([late, "/test/none/1.0.0"])
        assert await stream.wait_negotiated() == late
        server.remove_stream_handler(late)
        with pytest.raises(ProtocolNotSupportedError):
            await conn.new_stream([late, "/test/none/1.0.0"])
        (server_conn,) = server.connections_to(client.peer_id)
        offered = server.supported_protocols(server_conn)
        assert set(offered) == {p for p in server.protocols if p != late}
        assert len(offered) == len(list(offered)) and late not in offered
