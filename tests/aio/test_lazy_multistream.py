"""Lazy multistream dialers: the proposal and the first data in one Yamux frame, or split anywhere.

rust-libp2p's ``V1Lazy`` and go-libp2p's lazy client write their first protocol bytes right
behind the proposal, often in the same Yamux data frame.  Every split of
``header + proposal + data`` into two frames must reach the handler intact, with each byte
credited to the receive window exactly once (a double credit raised
``LocalProtocolError`` and reset the stream).  The listener takes its fast path when the
first frame holds the whole proposal and falls back to the full machine otherwise.
"""

from __future__ import annotations

import os

from aiop2p._aio.connection import Connection
from aiop2p._aio.stream import Stream
from aiop2p._wire.varint import encode_uvarint
from aiop2p.node import Node
from aiop2p.protocols.multistream import single_proposal
from aiop2p.protocols.ping import PING_PROTOCOL_ID
from aiop2p.protocols.role import Role

ECHO = "/test/echo/1.0.0"


async def echo_handler(stream: Stream) -> None:
    await stream.write_message(await stream.read_message(1 << 16))


def open_lazy_stream(conn: Connection, protocol: str, payload: bytes, split: int) -> Stream:
    """Open a stream whose proposal and ``payload`` go out as two frames cut at ``split``.

    ``split == len(proposal + payload)`` sends everything in one frame (the lazy case).
    """
    yamux = conn._require_established()
    sid = yamux.open_stream()
    negotiator = single_proposal(protocol, conn.max_negotiation_message_bytes)
    stream = Stream(conn, sid, role=Role.INITIATOR, negotiator=negotiator)
    conn._streams[sid] = stream
    wire = negotiator.wire + payload
    for part in (wire[:split], wire[split:]):
        if part:
            assert yamux.send_data(sid, part) == len(part)  # one data frame each
    conn._flush()
    return stream


async def test_every_split_of_proposal_and_request_is_served(
    node_pair: tuple[Node, Node],
) -> None:
    a, b = node_pair
    b.set_stream_handler(ECHO, echo_handler)
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    message = b"lazy request"
    payload = encode_uvarint(len(message)) + message
    total = len(single_proposal(ECHO, 1024).wire + payload)
    for split in range(total + 1):
        stream = open_lazy_stream(conn, ECHO, payload, split)
        assert await stream.read_message(1 << 16) == message, f"split at {split}"
        await stream.close()
    assert not conn.is_closed
    assert conn.remote_peer == b.peer_id


async def test_ping_data_in_the_proposal_frame_is_echoed(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    for round_ in range(32):
        payload = os.urandom(32)
        total = len(single_proposal(PING_PROTOCOL_ID, 1024).wire)
        stream = open_lazy_stream(conn, PING_PROTOCOL_ID, payload, total + 32 - round_ % 3)
        assert await stream.readexactly(32) == payload
        await stream.close()
    assert not conn.is_closed


async def test_proposal_and_reset_in_one_batch_leave_the_connection_up(
    node_pair: tuple[Node, Node],
) -> None:
    """The listener's echo for a stream the same input already reset is dropped quietly
    (it used to raise out of ``data_received`` and kill the connection)."""
    a, b = node_pair
    b.set_stream_handler(ECHO, echo_handler)
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    for _ in range(20):
        stream = open_lazy_stream(conn, ECHO, b"", 0)
        stream.reset()
        conn._flush()
    stream = open_lazy_stream(conn, ECHO, encode_uvarint(2) + b"ok", 0)
    assert await stream.read_message(16) == b"ok"
    assert not conn.is_closed
