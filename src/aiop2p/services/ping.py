"""Ping service: echo ``/ipfs/ping/1.0.0`` payloads; measure round trips to a peer."""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

from .._aio.connection import Connection
from .._aio.stream import Stream
from ..errors import RemoteProtocolError, StreamClosedError, StreamTimeoutError
from ..protocols.ping import PING_PAYLOAD_SIZE, PING_PROTOCOL_ID

if TYPE_CHECKING:
    from .host import Host

__all__ = ["ping", "serve_ping"]


async def serve_ping(stream: Stream, idle_timeout: float = 60.0) -> None:
    """Echo each 32-byte payload until the dialer closes the stream.

    A dialer may keep one ping stream and ping on it now and then; one that sends no ping
    (or does not take our echo) for ``idle_timeout`` seconds has its stream reset, so a
    peer cannot pin handlers with streams it forgets.
    """
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                payload = await stream.readexactly(PING_PAYLOAD_SIZE)
                await stream.write(payload)
        except StreamClosedError:
            return
        except TimeoutError as exc:
            raise StreamTimeoutError(f"ping: nothing from the peer for {idle_timeout} s") from exc


async def ping(node: Host, conn: Connection, count: int = 1) -> list[float]:
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
