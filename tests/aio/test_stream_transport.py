"""A Connection (Noise + Yamux) upgraded over one stream of another connection."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from aiop2p._aio.connection import Connection, Direction
from aiop2p._aio.stream import Stream
from aiop2p._aio.stream_transport import StreamTransport
from aiop2p.errors import ConnectionClosedError, P2PError, StreamResetError
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node

from ..helpers import wait_for

TUNNEL = "/test/tunnel/1.0.0"
ECHO = "/test/echo/1.0.0"
BULK = "/test/bulk/1.0.0"
SIZE = 8 * 1024 * 1024
ADDR = Multiaddr("/ip4/127.0.0.1/tcp/1")


async def echo_handler(stream: Stream) -> None:
    data = await stream.read_message(1 << 20)
    await stream.write_message(data)


async def bulk_handler(stream: Stream) -> None:
    """Read everything, answer with its digest, then send SIZE bytes of our own."""
    digest = hashlib.sha256()
    total = 0
    while chunk := await stream.read(1 << 20):
        digest.update(chunk)
        total += len(chunk)
    await stream.write(total.to_bytes(8, "big") + digest.digest())
    payload = bytes(range(256)) * (SIZE // 256)
    for i in range(0, SIZE, 1 << 20):
        await stream.write(payload[i : i + (1 << 20)])


class Tunnel:
    """``outer_b`` serves TUNNEL; every tunnel stream carries an inbound inner connection."""

    def __init__(self, a: Node, b: Node) -> None:
        self.a, self.b = a, b
        self.inner_b: list[Connection] = []
        self.b_transports: list[StreamTransport] = []
        b.set_stream_handler(TUNNEL, self._serve)

    async def _serve(self, stream: Stream) -> None:
        conn = self.b._make_factory(Direction.INBOUND)(ADDR, ADDR)
        self.b_transports.append(StreamTransport(stream, conn))
        self.inner_b.append(conn)
        await conn.wait_closed()

    async def open(self) -> tuple[Connection, StreamTransport]:
        addr = self.b.listen_addrs[0].with_peer_id(self.b.peer_id)
        stream = await self.a.new_stream(addr, TUNNEL)
        await stream.wait_negotiated()
        conn = self.a._make_factory(Direction.OUTBOUND, self.b.peer_id)(ADDR, ADDR)
        transport = StreamTransport(stream, conn, extra={"peername": ADDR})
        await asyncio.wait_for(conn.wait_ready(), 5)
        return conn, transport


async def test_connection_over_a_stream(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    b.set_stream_handler(ECHO, echo_handler)
    tunnel = Tunnel(a, b)
    inner, transport = await tunnel.open()
    assert inner.remote_peer == b.peer_id
    assert transport.get_extra_info("peername") == ADDR
    # Two connections a -> b now: the TCP one and the tunnelled one.
    await wait_for(lambda: len(a.connections_to(b.peer_id)) == 2)
    for i in range(10):
        stream = await inner.new_stream(ECHO)
        await stream.write_message(bytes([i]) * 1000)
        assert await stream.read_message(1 << 20) == bytes([i]) * 1000
    assert await a.ping(inner)


async def test_bulk_both_ways_8mib(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    b.set_stream_handler(BULK, bulk_handler)
    tunnel = Tunnel(a, b)
    inner, _ = await tunnel.open()
    stream = await inner.new_stream(BULK)
    payload = os.urandom(SIZE)
    for i in range(0, SIZE, 256 * 1024):
        await stream.write(payload[i : i + 256 * 1024])
    await stream.close()
    header = await stream.readexactly(40)
    assert int.from_bytes(header[:8], "big") == SIZE
    assert header[8:] == hashlib.sha256(payload).digest()
    back = await stream.read()
    assert back == bytes(range(256)) * (SIZE // 256)


async def test_close_propagates(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    tunnel = Tunnel(a, b)
    inner, _ = await tunnel.open()
    await wait_for(lambda: bool(tunnel.inner_b) and tunnel.inner_b[0].is_established)
    await inner.close()
    await asyncio.wait_for(tunnel.inner_b[0].wait_closed(), 5)
    assert isinstance(tunnel.inner_b[0].error, ConnectionClosedError)
    # The outer connection survives.
    assert a.connections_to(b.peer_id)


async def test_abort_resets_the_carrying_stream(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    b.set_stream_handler(ECHO, echo_handler)
    tunnel = Tunnel(a, b)
    inner, _ = await tunnel.open()
    await wait_for(lambda: bool(tunnel.inner_b) and tunnel.inner_b[0].is_established)
    inner.abort()
    await asyncio.wait_for(tunnel.inner_b[0].wait_closed(), 5)
    assert tunnel.inner_b[0].error is not None
    await asyncio.wait_for(inner.wait_closed(), 5)


async def test_reset_of_outer_stream_fails_inner_streams(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    started = asyncio.Event()

    async def hang(stream: Stream) -> None:
        started.set()
        await stream.read()

    b.set_stream_handler(ECHO, hang)
    tunnel = Tunnel(a, b)
    inner, _ = await tunnel.open()
    stream = await inner.new_stream(ECHO)
    await stream.write(b"x")
    await asyncio.wait_for(started.wait(), 5)
    await wait_for(lambda: bool(tunnel.b_transports))
    tunnel.b_transports[0].get_extra_info("stream").reset()
    with pytest.raises(P2PError):
        await asyncio.wait_for(stream.read(), 5)
    await asyncio.wait_for(inner.wait_closed(), 5)
    assert isinstance(inner.error, StreamResetError | ConnectionClosedError)


async def test_pause_reading_holds_window(node_pair: tuple[Node, Node]) -> None:
    """A paused reader stops crediting the window: the sender blocks instead of buffering."""
    a, b = node_pair
    received = bytearray()

    class Sink(asyncio.Protocol):
        def __init__(self) -> None:
            self.transport: StreamTransport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, StreamTransport)
            self.transport = transport
            transport.pause_reading()

        def data_received(self, data: bytes) -> None:
            received.extend(data)

        def eof_received(self) -> bool:
            return False

        def connection_lost(self, exc: Exception | None) -> None:
            pass

        def pause_writing(self) -> None:
            pass

        def resume_writing(self) -> None:
            pass

    sink = Sink()
    done = asyncio.Event()

    async def serve(stream: Stream) -> None:
        StreamTransport(stream, sink)
        await done.wait()

    b.set_stream_handler(TUNNEL, serve)
    stream = await a.new_stream(b.listen_addrs[0].with_peer_id(b.peer_id), TUNNEL)
    window = a.config.yamux.receive_window_bytes
    writer = asyncio.ensure_future(stream.write(b"y" * (window + 4096)))
    writer.add_done_callback(lambda f: f.cancelled() or f.exception())
    await wait_for(lambda: sink.transport is not None)
    yamux = a.connections_to(b.peer_id)[0]._yamux
    assert yamux is not None
    # The whole window is in flight and nothing was credited back: the writer must wait.
    await wait_for(lambda: yamux.send_window(stream.stream_id) == 0)
    assert not writer.done()
    assert not received
    assert sink.transport is not None
    sink.transport.resume_reading()
    await asyncio.wait_for(writer, 5)
    await wait_for(lambda: len(received) == window + 4096)
    done.set()
