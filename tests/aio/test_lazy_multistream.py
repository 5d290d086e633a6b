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

import pytest

from aiop2p._aio.connection import Connection
from aiop2p._aio.stream import Stream
from aiop2p._wire.varint import encode_uvarint
from aiop2p.errors import ProtocolNotSupportedError
from aiop2p.node import Node
from aiop2p.protocols.multistream import single_proposal
from aiop2p.protocols.ping import PING_PROTOCOL_ID
from aiop2p.protocols.role import Role

from ..helpers import wait_for

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
            assert yamux.send_data(sid, part) == len(part)
            conn._flush()  # one data frame each: the session joins data frames queued together
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


def served_side(a: Node, b: Node) -> Connection:
    (conn,) = b.connections_to(a.peer_id)
    return conn


async def test_syn_request_and_fin_in_one_read_are_served_and_credited_once(
    node_pair: tuple[Node, Node],
) -> None:
    """SYN, proposal, request and FIN in one Noise frame: answered, and every byte the
    server received is credited (its session holds no unread bytes and no stream after)."""
    a, b = node_pair
    b.set_stream_handler(ECHO, echo_handler)
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    server = served_side(a, b)
    payload = encode_uvarint(3) + b"one"
    for _ in range(5):
        stream = open_in_one_read(conn, payload)
        conn._require_established().close_stream(stream.stream_id)  # FIN behind the data
        stream._write_closed = True
        conn._flush()  # one Noise frame: one read on the server
        assert await stream.read_message(16) == b"one"
        await wait_for(lambda: not server._streams)
        assert server._require_established().buffered_bytes == 0
    assert not conn.is_closed and not server.is_closed


def open_in_one_read(conn: Connection, payload: bytes, protocol: str = ECHO) -> Stream:
    """A stream whose SYN, proposal and ``payload`` are queued, not flushed."""
    yamux = conn._require_established()
    sid = yamux.open_stream()
    negotiator = single_proposal(protocol, conn.max_negotiation_message_bytes)
    stream = Stream(conn, sid, role=Role.INITIATOR, negotiator=negotiator)
    conn._streams[sid] = stream
    wire = negotiator.wire + payload
    assert yamux.send_data(sid, wire) == len(wire)
    return stream


async def test_a_request_reset_in_its_opening_read_leaves_nothing_behind(
    node_pair: tuple[Node, Node],
) -> None:
    """SYN, proposal, request and RST in one read: the stream is gone, its bytes leave the
    session's count, the connection serves the next request."""
    a, b = node_pair
    b.set_stream_handler(ECHO, echo_handler)
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    server = served_side(a, b)
    payload = encode_uvarint(4) + b"gone"
    for _ in range(5):
        stream = open_in_one_read(conn, payload)
        stream.reset()  # RST queued behind the data: one flush, one read on the server
        conn._flush()
    await wait_for(lambda: not server._streams)
    assert server._require_established().buffered_bytes == 0
    stream = open_lazy_stream(conn, ECHO, encode_uvarint(2) + b"ok", 0)
    assert await stream.read_message(16) == b"ok"
    assert not conn.is_closed and not server.is_closed


async def test_an_unsupported_proposal_with_request_and_fin_in_one_read_is_refused(
    node_pair: tuple[Node, Node],
) -> None:
    """The full listener answers ``na``; the dialer's stream fails, the server keeps
    nothing of it and the connection serves the next request."""
    a, b = node_pair
    b.set_stream_handler(ECHO, echo_handler)
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    server = served_side(a, b)
    stream = open_in_one_read(conn, encode_uvarint(2) + b"no", "/test/unknown/1.0.0")
    conn._require_established().close_stream(stream.stream_id)
    stream._write_closed = True
    conn._flush()
    with pytest.raises(ProtocolNotSupportedError):
        await stream.read_message(16)
    await wait_for(lambda: not server._streams)
    assert server._require_established().buffered_bytes == 0
    stream = open_lazy_stream(conn, ECHO, encode_uvarint(2) + b"ok", 0)
    assert await stream.read_message(16) == b"ok"
    assert not conn.is_closed and not server.is_closed
