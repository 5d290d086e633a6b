"""Ping service: echo ``/ipfs/ping/1.0.0`` payloads; measure round trips to a peer."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from .._aio.connection import Connection
from .._aio.stream import Stream
from ..errors import RemoteProtocolError, StreamClosedError
from ..protocols.ping import PING_PAYLOAD_SIZE, PING_PROTOCOL_ID

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["ping", "serve_ping"]


async def serve_ping(stream: Stream) -> None:
    """Echo each 32-byte payload until the dialer closes the stream."""
    while True:
        try:
            payload = await stream.readexactly(PING_PAYLOAD_SIZE)
        except StreamClosedError:
            return
        await stream.write(payload)


async def ping(node: Node, conn: Connection, count: int = 1) -> list[float]:
    """Send ``count`` pings on one stream; return each round-trip time in seconds."""
    rtts: list[float] = []
    stream = await node.new_stream(conn, PING_PROTOCOL_ID)
    async with stream:
        for _ in range(count):
            payload = os.urandom(PING_PAYLOAD_SIZE)
            started = time.perf_counter()
            await stream.write(payload)
            echoed = await stream.readexactly(PING_PAYLOAD_SIZE)
            rtts.append(time.perf_counter() - started)
            if echoed != payload:
                raise RemoteProtocolError("ping: the peer echoed different bytes")
    return rtts
