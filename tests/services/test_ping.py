"""Ping: round trips on one stream, and a peer that echoes the wrong bytes."""

from __future__ import annotations

import pytest

from aiop2p._aio.stream import Stream
from aiop2p.errors import RemoteProtocolError
from aiop2p.node import Node
from aiop2p.protocols.ping import PING_PAYLOAD_SIZE, PING_PROTOCOL_ID


async def test_ping_returns_one_round_trip_per_ping(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    rtts = await a.ping(b.listen_addrs[0].with_peer_id(b.peer_id), count=3)
    assert len(rtts) == 3 and all(r > 0 for r in rtts)


async def test_a_wrong_echo_is_a_protocol_error(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair

    async def liar(stream: Stream) -> None:
        await stream.readexactly(PING_PAYLOAD_SIZE)
        await stream.write(bytes(PING_PAYLOAD_SIZE))

    b.set_stream_handler(PING_PROTOCOL_ID, liar)
    with pytest.raises(RemoteProtocolError, match="echoed different bytes"):
        await a.ping(b.listen_addrs[0].with_peer_id(b.peer_id))
