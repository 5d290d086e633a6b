"""Closing a TCP or WebSocket listener stops accepting at once and leaves the connections
it accepted open: from Python 3.12.1, ``asyncio.Server.wait_closed`` waits until every
such connection has ended, so a listener that awaited it would hang a node that closes
its listeners before its connections (``Node.close``)."""

from __future__ import annotations

import asyncio

import pytest

from aiop2p.transports._base import ServerListener


class Server3121:
    """An ``asyncio.Server`` as from Python 3.12.1: ``wait_closed`` returns once every
    connection it accepted has ended (here: never)."""

    def __init__(self) -> None:
        self.closed = False
        self.connections_ended = asyncio.Event()

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        await self.connections_ended.wait()


@pytest.mark.timeout(10)
async def test_closing_a_listener_does_not_wait_for_its_connections() -> None:
    server = Server3121()
    listener = ServerListener(server, [])  # type: ignore[arg-type]
    await asyncio.wait_for(listener.close(), 5)
    assert server.closed
