"""A js-libp2p peer that holds a connection keeps it: its pings count as use of it.

js-libp2p closes no idle connection of its own; its connection monitor pings every
connected peer every 10 s (on a new ping stream each time).  Our idle timeout must never
race those pings: inbound streams are use, and the default idle timeout is well above
the js ping interval.  Scaled down here: js pings every 300 ms, our idle timeout is 1 s,
and the connection must survive a dozen pings, three idle timeouts.
"""

from __future__ import annotations

import asyncio

import pytest

from aiop2p._aio.stream import Stream
from aiop2p.config import NodeConfig
from aiop2p.identity import PeerId
from aiop2p.network import NetworkConfig
from aiop2p.node import Node
from aiop2p.protocols.ping import PING_PROTOCOL_ID
from aiop2p.services.ping import serve_ping

from .peers import js_command, start_peer

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

JS_PING_INTERVAL_MS = 300
IDLE_TIMEOUT = 1.0
PINGS = 12  # 3.6 s of pings: three idle timeouts


async def test_js_pings_keep_an_idle_connection_open() -> None:
    pinged = asyncio.Event()
    count = 0

    async def counting_ping(stream: Stream) -> None:
        nonlocal count
        count += 1
        if count >= PINGS:
            pinged.set()
        await serve_ping(stream)

    command = [*js_command(), "--ping-interval-ms", str(JS_PING_INTERVAL_MS)]
    async with (
        start_peer(command) as peer,
        Node(config=NodeConfig(idle_connection_timeout=IDLE_TIMEOUT)) as node,
    ):
        node.set_stream_handler(PING_PROTOCOL_ID, counting_ping)
        conn = await node.dial(peer.addr)
        await asyncio.wait_for(pinged.wait(), 60)
        assert not conn.is_closed
        assert node.connections_to(PeerId.from_string(peer.peer_id)) == [conn]


def test_default_idle_timeout_is_above_the_js_ping_interval() -> None:
    """js-libp2p pings every 10 s; go-libp2p keeps new connections for a 1-minute grace."""
    assert NetworkConfig().connection_timeout >= 60.0
