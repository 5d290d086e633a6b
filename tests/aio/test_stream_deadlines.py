"""Streams that stall are reset on time: negotiation, and the built-in ping and perf handlers.

Before, ``NodeConfig.negotiation_timeout`` was never read: 800 streams stalled halfway
through multistream-select stayed open for good and kept their connection from going idle.
"""

from __future__ import annotations

import asyncio

import pytest

from aiop2p.config import NodeConfig
from aiop2p.errors import NegotiationTimeoutError, StreamResetError
from aiop2p.node import Node
from aiop2p.protocols.multistream import MULTISTREAM_PROTOCOL_ID, encode_message
from aiop2p.protocols.perf import PERF_PROTOCOL_ID, encode_perf_header
from aiop2p.protocols.ping import PING_PROTOCOL_ID

from ..helpers import wait_for


async def test_streams_stalled_in_negotiation_are_reset_and_the_connection_goes_idle() -> None:
    config = NodeConfig(negotiation_timeout=0.5, idle_connection_timeout=0.5)
    async with Node(config=config) as server, Node() as client:
        (addr,) = await server.listen("/ip4/127.0.0.1/tcp/0")
        conn = await client.dial(addr.with_peer_id(server.peer_id))
        yamux = conn._require_established()
        header_only = encode_message(MULTISTREAM_PROTOCOL_ID)  # ... and no proposal, ever
        for _ in range(8):
            for _ in range(100):
                sid = yamux.open_stream()
                yamux.send_data(sid, header_only)
            conn._flush()
            await wait_for(lambda: yamux.ack_backlog == 0)
        (server_conn,) = server.connections_to(client.peer_id)
        await wait_for(lambda: len(server_conn.streams) >= 100, cap=10)
        # All of them are reset once the deadline passes (before: all 800 still open).
        await wait_for(lambda: not server_conn.streams, cap=15)
        # Nothing else keeps the connection: it closes as idle.
        await wait_for(lambda: server_conn.is_closed, cap=15)
        assert not server.connections_to(client.peer_id)


async def test_outbound_negotiation_times_out() -> None:
    async with (
        Node() as server,
        Node(config=NodeConfig(negotiation_timeout=0.3)) as client,
    ):
        (addr,) = await server.listen("/ip4/127.0.0.1/tcp/0")
        conn = await client.dial(addr.with_peer_id(server.peer_id))
        (server_conn,) = server.connections_to(client.peer_id)
        assert server_conn._transport is not None
        server_conn._transport.pause_reading()  # the listener never answers
        with pytest.raises(NegotiationTimeoutError):
            await asyncio.wait_for(conn.new_stream(["/a/1.0.0", PING_PROTOCOL_ID]), 10)
        server_conn._transport.resume_reading()
        assert len(await client.ping(server.peer_id)) == 1  # the connection is fine


@pytest.mark.parametrize("first_bytes", [b"", b"\x00" * 31])
async def test_ping_handler_resets_a_silent_stream(first_bytes: bytes) -> None:
    async with Node(config=NodeConfig(protocol_idle_timeout=0.3)) as server, Node() as client:
        (addr,) = await server.listen("/ip4/127.0.0.1/tcp/0")
        stream = await client.new_stream(addr.with_peer_id(server.peer_id), PING_PROTOCOL_ID)
        await stream.write(first_bytes)
        await stream.wait_negotiated()
        with pytest.raises(StreamResetError):
            await asyncio.wait_for(stream.read(), 10)


async def test_perf_handler_resets_a_stalled_upload() -> None:
    async with Node(config=NodeConfig(protocol_idle_timeout=0.3)) as server, Node() as client:
        (addr,) = await server.listen("/ip4/127.0.0.1/tcp/0")
        stream = await client.new_stream(addr.with_peer_id(server.peer_id), PERF_PROTOCOL_ID)
        await stream.write(encode_perf_header(1024) + b"some upload, then nothing")
        with pytest.raises(StreamResetError):
            await asyncio.wait_for(stream.read(), 10)
