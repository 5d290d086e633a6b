"""``Stream.close_write`` tells whether the stream is closed both ways after its FIN.

A handler's end reads it instead of asking ``is_closed`` again, to decide whether the
stream lingers (``Node``'s handler task).
"""

from __future__ import annotations

import asyncio

from aiop2p._aio.stream import Stream
from aiop2p.node import Node

PROTOCOL = "/test/close-write/1.0.0"
CAP_S = 5.0


async def test_close_write_reports_whether_the_peer_had_closed_too(
    node_pair: tuple[Node, Node],
) -> None:
    a, b = node_pair
    loop = asyncio.get_running_loop()
    outcomes: asyncio.Future[list[bool]] = loop.create_future()
    peer_closed = asyncio.Event()

    async def handler(stream: Stream) -> None:
        seen = [stream.close_write(), stream.close_write()]  # the peer is still open
        await peer_closed.wait()
        assert await stream.read() == b""  # its FIN
        seen.append(stream.close_write())  # already closed here; now both ways
        seen.append(stream.is_closed)
        outcomes.set_result(seen)

    b.set_stream_handler(PROTOCOL, handler)
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    async with asyncio.timeout(CAP_S):
        stream = await conn.new_stream(PROTOCOL)
        assert await stream.read() == b""  # the handler's FIN
        await stream.close()
        peer_closed.set()
        assert await outcomes == [False, False, True, True]


async def test_close_write_on_a_reset_stream_reports_it_closed(
    node_pair: tuple[Node, Node],
) -> None:
    a, b = node_pair
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[tuple[bool, bool]] = loop.create_future()

    async def handler(stream: Stream) -> None:
        stream.reset()
        outcome.set_result((stream.close_write(), stream.is_closed))

    b.set_stream_handler(PROTOCOL, handler)
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    async with asyncio.timeout(CAP_S):
        await conn.new_stream(PROTOCOL)
        assert await outcome == (True, True)
