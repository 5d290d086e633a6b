"""Outbound backpressure: a peer that sends but never reads cannot grow our write buffer.

Two ways a peer used to make us queue without bound: Yamux pings whose pongs it never
reads (answered inside ``data_received``, so reading more meant answering more), and
requests whose responses it never reads (each handler wrote a whole window into the
socket buffer).  Now answers to input stop our reading once
``NodeConfig.max_reply_backlog_bytes`` of them wait for the peer, and stream writes hand
the socket one piece at a time, only while it is not paused.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiop2p._aio.connection import Connection
from aiop2p._aio.stream import Stream
from aiop2p.config import NodeConfig
from aiop2p.errors import P2PError
from aiop2p.node import Node

from ..helpers import wait_for

KIB = 1 << 10
MIB = 1 << 20
BIG = "/test/big-answer/1.0.0"


def write_buffer(conn: Connection) -> int:
    assert conn._transport is not None
    return conn._transport.get_write_buffer_size()


async def test_ping_flood_without_reading_pauses_our_reading() -> None:
    backlog = 64 * KIB
    async with Node(config=NodeConfig(max_reply_backlog_bytes=backlog)) as server, Node() as client:
        (addr,) = await server.listen("/ip4/127.0.0.1/tcp/0")
        conn = await client.dial(addr.with_peer_id(server.peer_id))
        (server_conn,) = server.connections_to(client.peer_id)
        assert conn._transport is not None
        conn._transport.pause_reading()  # the hostile peer never reads our pongs
        yamux = conn._require_established()
        sent_pings = 0
        for _batch in range(400):  # at most 48 MiB of pings
            for _ in range(10_000):
                yamux.ping(sent_pings & 0xFFFFFFFF)
                sent_pings += 1
            conn._flush()
            await wait_for(
                lambda: server_conn._reading_paused or write_buffer(conn) < 4 * MIB, cap=10
            )
            if server_conn._reading_paused:
                break
        # Before: the server read all 48 MiB of pings and queued every pong (tens of MiB).
        assert server_conn._reading_paused
        assert write_buffer(server_conn) < 2 * MIB
        async with Node() as other:  # everyone else is still served
            assert len(await other.ping(addr.with_peer_id(server.peer_id), count=2)) == 2
        conn._transport.resume_reading()  # the peer reads again: everything recovers
        await wait_for(lambda: not server_conn._reading_paused, cap=30)
        assert await asyncio.wait_for(conn.ping(), 30) >= 0
        assert not server_conn.is_closed


async def test_unread_responses_do_not_fill_our_write_buffer() -> None:
    async def big_answer(stream: Stream) -> None:
        await stream.readexactly(1)
        await stream.write(bytes(8 * MIB))

    async with Node() as server, Node() as client:
        server.set_stream_handler(BIG, big_answer)
        (addr,) = await server.listen("/ip4/127.0.0.1/tcp/0")
        conn = await client.dial(addr.with_peer_id(server.peer_id))
        # The server has answered once: a dialer that agreed its muxer early holds a burst
        # of new streams until then, and this one stops reading below.
        await conn.ping()
        (server_conn,) = server.connections_to(client.peer_id)
        streams = [await conn.new_stream(BIG) for _ in range(32)]
        for stream in streams:
            await stream.write(b"?")
        assert conn._transport is not None
        conn._transport.pause_reading()  # ... and never reads an answer
        try:
            await wait_for(lambda: server_conn.write_paused, cap=10)
            peak = 0

            def settled() -> bool:
                nonlocal peak
                size = write_buffer(server_conn)
                peak = max(peak, size)
                return size > 0 and all(
                    s.is_closed or s._write_waiter is not None or server_conn.write_paused
                    for s in server_conn.streams
                )

            await wait_for(settled, cap=10)
            # Before: each handler put its whole send window into the socket buffer, the
            # session's receive budget in all (~32 MiB); now about one piece per writer.
            assert peak < 4 * MIB
            async with Node() as other:
                assert len(await other.ping(addr.with_peer_id(server.peer_id), count=1)) == 1
        finally:
            conn._transport.resume_reading()
            for stream in streams:
                with contextlib.suppress(P2PError):
                    stream.reset()
