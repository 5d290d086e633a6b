"""Receive memory per connection is bounded by one budget, whatever the peer sends.

The hostile peer opens many ping streams and pushes data it knows will not be read (it
never reads the pongs, so the handler's echo stalls and stops reading).  Before the
budget, every stream was granted a 16 MiB window at open, so the server held ~16 MiB per
stream; now every window comes out of the budget, and the bytes held unread on a
connection stay within ``YamuxConfig.max_session_receive_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiop2p._aio.connection import Connection
from aiop2p._aio.stream import Stream
from aiop2p.config import NodeConfig
from aiop2p.errors import P2PError
from aiop2p.node import Node
from aiop2p.protocols.ping import PING_PROTOCOL_ID
from aiop2p.protocols.yamux import INITIAL_WINDOW_SIZE, YamuxConfig

from ..helpers import wait_for

MIB = 1 << 20
BULK = "/test/bulk/1.0.0"


def held_unread(conn: Connection) -> int:
    """Bytes the connection holds that its peer sent and nobody consumed yet."""
    yamux = conn._require_established()
    return yamux.buffered_bytes


def send_window(conn: Connection, stream: Stream) -> int:
    """The stream's send window; 0 once the stream is gone."""
    try:
        return conn._require_established().send_window(stream.stream_id)
    except P2PError:
        return 0


def write_blocked(conn: Connection, streams: list[Stream]) -> bool:
    return all(s.is_closed or send_window(conn, s) == 0 for s in streams)


async def push(stream: Stream, size: int) -> None:
    with contextlib.suppress(P2PError):
        await stream.write(bytes(size))


async def test_unread_ping_streams_cannot_make_the_server_buffer_more_than_the_budget() -> None:
    budget = 4 * MIB
    server_config = NodeConfig(yamux=YamuxConfig(max_session_receive_bytes=budget))
    async with Node(config=server_config) as server, Node() as client:
        (addr,) = await server.listen("/ip4/127.0.0.1/tcp/0")
        conn = await client.dial(addr.with_peer_id(server.peer_id))
        streams = [await conn.new_stream(PING_PROTOCOL_ID) for _ in range(32)]
        writers = [asyncio.create_task(push(s, 4 * MIB)) for s in streams]
        try:
            await wait_for(lambda: write_blocked(conn, streams), cap=20)
            (server_conn,) = server.connections_to(client.peer_id)
            await wait_for(lambda: held_unread(server_conn) > 0, cap=20)  # slow under load
            # Before the budget: every stream got a 16 MiB window, 32 x 4 MiB = 128 MiB held;
            # now the windows granted all come out of the budget.
            assert held_unread(server_conn) <= budget
            # The server still serves everyone else.
            async with Node() as other:
                await other.dial(addr.with_peer_id(server.peer_id))
                assert len(await other.ping(server.peer_id, count=2)) == 2
        finally:
            for task in writers:
                task.cancel()
            await asyncio.gather(*writers, return_exceptions=True)


async def test_over_committed_streams_are_reset_at_the_budget() -> None:
    """More unread streams than the budget can cover: the excess stream is reset, not held."""
    budget = 2 * MIB
    server_config = NodeConfig(yamux=YamuxConfig(max_session_receive_bytes=budget))
    never_read = asyncio.Event()

    async def sit(stream: Stream) -> None:
        await never_read.wait()

    async with Node(config=server_config) as server, Node() as client:
        server.set_stream_handler(BULK, sit)
        (addr,) = await server.listen("/ip4/127.0.0.1/tcp/0")
        conn = await client.dial(addr.with_peer_id(server.peer_id))
        streams = [await conn.new_stream(BULK) for _ in range(16)]  # 16 x 256 KiB = 4 MiB
        writers = [asyncio.create_task(push(s, INITIAL_WINDOW_SIZE)) for s in streams]
        try:
            await wait_for(
                lambda: all(
                    t.done() or send_window(conn, s) == 0
                    for t, s in zip(writers, streams, strict=True)
                ),
                cap=10,
            )
            (server_conn,) = server.connections_to(client.peer_id)
            await wait_for(lambda: sum(s.is_closed for s in streams) >= 1, cap=10)
            assert held_unread(server_conn) <= budget
            assert not server_conn.is_closed  # only streams pay, not the connection
        finally:
            never_read.set()
            for task in writers:
                task.cancel()
            await asyncio.gather(*writers, return_exceptions=True)


async def test_a_single_busy_stream_still_gets_a_large_window() -> None:
    received = asyncio.Event()
    total = 0

    async def drain(stream: Stream) -> None:
        nonlocal total
        while chunk := await stream.read(1 << 20):
            total += len(chunk)
        received.set()

    async with Node() as server, Node() as client:
        server.set_stream_handler(BULK, drain)
        (addr,) = await server.listen("/ip4/127.0.0.1/tcp/0")
        conn = await client.dial(addr.with_peer_id(server.peer_id))
        stream = await conn.new_stream(BULK)
        await stream.write(bytes(64 * MIB))
        (server_conn,) = server.connections_to(client.peer_id)
        server_yamux = server_conn._require_established()
        # The reader kept up, so the stream's window grew to the configured maximum.
        await wait_for(lambda: server_yamux.allotted_bytes >= YamuxConfig().receive_window_bytes)
        await stream.close()
        await asyncio.wait_for(received.wait(), 20)
        assert total == 64 * MIB
