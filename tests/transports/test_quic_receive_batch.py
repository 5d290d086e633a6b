"""The datagrams of one read taken in one call (``LibP2PQuic.receive_datagrams``, the
endpoint's ``_receive_segments``) against the same datagrams one by one
(``receive_datagram``): two in-memory servers get the same frames, one in runs as the
endpoint delivers a GRO read, the other a datagram at a time, and must end with the same
events, handled after the same datagram, the same data handed to the readers and the same
stream, credit, ACK and connection state, whatever a misbehaving peer puts mid-batch."""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypedDict

import pytest
from aioquic import tls
from aioquic.quic.connection import QuicConnection as AioquicConnection
from aioquic.quic.events import PingAcknowledged, StreamDataReceived
from aioquic.quic.packet import QuicErrorCode
from aioquic.tls import CipherSuite

from aiop2p._aio.quic_adapter import LibP2PQuic
from aiop2p._aio.quic_connection import QuicConfig, QuicConnection, SockAddr
from aiop2p._aio.quic_transport import QuicEndpoint, QuicTransport
from aiop2p._aio.stream import Stream
from aiop2p.node import Node

from .quic_memory import ADDR, connected_pair, one_rtt
from .test_quic_receive_frames import (
    MAX_DATA,
    PING,
    _random_packets,
    _Reader,
    _state,
    ack,
    reset_stream,
    stream,
)

Segment = Callable[[LibP2PQuic, LibP2PQuic], bytes]
"""A datagram made for a (client, server) pair: the client's packet, or anything."""

CHUNK = 1100  # a 1200 B datagram's data, about
STREAM_WINDOW = 64 * CHUNK


CONNECTION_WINDOW = 100 * CHUNK  # less than two streams' windows


def _pair(suites: list[CipherSuite] | None = None) -> tuple[LibP2PQuic, LibP2PQuic]:
    return connected_pair(
        stream_window=STREAM_WINDOW, connection_window=CONNECTION_WINDOW, suites=suites
    )


def data(sid: int, index: int, *, fin: bool = False) -> Segment:
    """Chunk ``index`` of stream ``sid`` (byte i is ``i % 251``) in a packet of its own."""
    body = bytes((index * CHUNK + i) % 251 for i in range(CHUNK))
    return lambda client, _: one_rtt(client, stream(sid, index * CHUNK, body, fin=fin))


def tiny(index: int) -> Segment:
    """Ten bytes of stream 0 at ``10 * index`` in a packet of its own."""
    return lambda client, _: one_rtt(client, stream(0, 10 * index, bytes([index % 256]) * 10))


def _varint(value: int, size: int) -> bytes:
    """``value`` as a QUIC varint of ``size`` bytes, not necessarily the shortest (RFC 9000
    16 lets a sender pick any size that holds it)."""
    return (value | {1: 0, 2: 1, 4: 2, 8: 3}[size] << (8 * size - 2)).to_bytes(size, "big")


def encoded(
    sid: int,
    index: int,
    *,
    sid_bytes: int = 1,
    offset_bytes: int = 4,
    length_bytes: int = 2,
    number_bytes: int = 4,
    length: int | None = None,
    after: bytes = b"",
) -> Segment:
    """``data(sid, index)`` with its STREAM frame's fields in these sizes (``length_bytes``
    0: no length field; ``length``: the one it claims), ``after`` behind the frame, and a
    packet number of ``number_bytes``."""
    body = bytes((index * CHUNK + i) % 251 for i in range(CHUNK))
    frame = bytes([0x0C | (2 if length_bytes else 0)])
    frame += _varint(sid, sid_bytes) + _varint(index * CHUNK, offset_bytes)
    if length_bytes:
        frame += _varint(len(body) if length is None else length, length_bytes)
    packet = frame + body + after
    return lambda client, _: one_rtt(client, packet, number_bytes=number_bytes)


def frames(payload: bytes) -> Segment:
    return lambda client, _: one_rtt(client, payload)


def frames_numbered(payload: bytes, *, number_bytes: int) -> Segment:
    return lambda client, _: one_rtt(client, payload, number_bytes=number_bytes)


def corrupted(segment: Segment) -> Segment:
    def make(client: LibP2PQuic, server: LibP2PQuic) -> bytes:
        packet = bytearray(segment(client, server))
        packet[-1] ^= 0x01
        return bytes(packet)

    return make


def garbage(size: int = 1200) -> Segment:
    """Random bytes behind a short header to the server's connection id."""
    tail = os.urandom(size)  # the same for both servers
    return lambda _, server: bytes([0x40]) + server.host_cid + tail[: size - 9]


def other_connection() -> Segment:
    """A packet of another connection (its own keys and connection id)."""

    def make(_: LibP2PQuic, __: LibP2PQuic) -> bytes:
        other_client, _other_server = _pair()
        return one_rtt(other_client, stream(0, 0, b"elsewhere"))

    return make


def switched(segment: Segment) -> Segment:
    """``segment`` and what follows sent to another connection id the server issued (a
    peer may switch at any time; aioquic's ``receive_datagram`` takes the switch)."""

    def make(client: LibP2PQuic, server: LibP2PQuic) -> bytes:
        client._peer_cid.cid = server._host_cids[1].cid
        return segment(client, server)

    return make


def key_updated(segment: Segment) -> Segment:
    """``segment`` and what follows sent with the client's next 1-RTT keys (a key update,
    RFC 9001 6: new packet protection keys, the same header protection)."""

    def make(client: LibP2PQuic, server: LibP2PQuic) -> bytes:
        crypto = client._cryptos[tls.Epoch.ONE_RTT]
        phase = crypto.key_phase
        client.request_key_update()
        assert crypto.key_phase != phase
        return segment(client, server)

    return make


def replay(index: int) -> Segment:
    """The datagram made at position ``index`` again (a duplicate)."""
    return lambda client, server: made[id(server)][index]


made: dict[int, list[bytes]] = {}


def _both(
    segments: list[Segment],
    *,
    readers: bool = True,
    refusing: tuple[int, ...] = (),
    suites: list[CipherSuite] | None = None,
) -> tuple[dict[str, Any], ...]:
    """The segments one by one to a server and in runs to another; for each, the events
    with the index of the datagram after which they were handled, the readers' data and
    the state left, and the number of calls the runs took.  A third server takes them
    through aioquic's own receive: the state the runs store once must be what aioquic
    stores packet by packet."""
    results: list[dict[str, Any]] = []
    for way in ("one by one", "runs", "aioquic"):
        client, server = _pair(suites)
        log: list[Any] = []  # events and the data readers took, in order
        taking = {sid: _LogReader(log, sid, takes=sid not in refusing) for sid in (0, 4)}
        if readers and way != "aioquic":
            server.stream_readers = taking
        packets = made[id(server)] = []
        for segment in segments:
            packets.append(segment(client, server))
        handled: list[tuple[int, Any]] = []
        calls = 0
        now = 2.0
        if way == "runs":
            index = 0
            while index < len(packets):
                index = server.receive_datagrams(packets, index, ADDR, now)
                calls += 1
                while (event := server.next_event()) is not None:
                    handled.append((index - 1, event))
                    log.append(event)
        else:
            receive = server.receive_datagram
            if way == "aioquic":
                receive = partial(AioquicConnection.receive_datagram, server)
            for index, packet in enumerate(packets):
                receive(packet, ADDR, now=now)
                calls += 1
                while (event := server.next_event()) is not None:
                    handled.append((index, event))
                    log.append(event)
        del made[id(server)]
        state = _state(server) | _bookkeeping(server)
        results.append(
            {
                "handled": handled,
                "read": [r.data for r in taking.values()],
                "log": log,
                "state": state,
                "calls": calls,
            }
        )
    single, batch, aioquic = results
    # The same data (each stream's bytes in order) and the same state as through aioquic.
    assert _stream_bytes(batch) == _stream_bytes(aioquic)
    assert batch["state"] | {"events": None} == aioquic["state"] | {"events": None}
    return single, batch


class _LogReader(_Reader):
    """A stream's reader that also logs what it takes among the events."""

    def __init__(self, log: list[Any], stream_id: int, *, takes: bool = True) -> None:
        super().__init__(takes=takes)
        self.log = log
        self.stream_id = stream_id

    def _feed_buffered(self, data: bytes) -> bool:
        if self.takes:
            self.log.append(
                StreamDataReceived(data=data, end_stream=False, stream_id=self.stream_id)
            )
        return super()._feed_buffered(data)

    def _feed_chunks(self, chunks: list[bytes], size: int) -> None:
        for data in chunks:
            self.log.append(
                StreamDataReceived(data=data, end_stream=False, stream_id=self.stream_id)
            )
        super()._feed_chunks(chunks, size)


def _stream_bytes(result: dict[str, Any]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for event in result["log"]:
        if isinstance(event, StreamDataReceived):
            out[event.stream_id] = out.get(event.stream_id, b"") + event.data
    return out


def _bookkeeping(server: LibP2PQuic) -> dict[str, Any]:
    """What a run stores once at its end, beyond what ``_state`` holds."""
    space = server._spaces[tls.Epoch.ONE_RTT]
    window = space.received_packets
    issued = [c.cid for c in server._host_cids]
    return {
        "host_cid": issued.index(server.host_cid),
        "expected": space.expected_packet_number,
        "window": (window._lower, sorted(pn for pn in window._received if pn >= window._lower)),
        "received_at": space.largest_received_time,
        "ack_at": space.ack_at,
        "spin": (server._spin_bit, server._spin_highest_pn),
        "eliciting_sent": server._ack_eliciting_sent_since_receipt,
    }


def _same(one_by_one: dict[str, Any], batched: dict[str, Any]) -> None:
    for key in ("handled", "read", "state"):
        assert batched[key] == one_by_one[key], key


def test_in_order_data_is_taken_in_one_call() -> None:
    single, batch = _both([data(0, i) for i in range(10)])
    _same(single, batch)
    assert batch["calls"] == 1 and single["calls"] == 10
    assert len(batch["read"][0]) == 10 and not batch["handled"]


CASES: dict[str, tuple[list[Segment], int]] = {
    # The segments, and the most calls the runs may take.
    "a duplicate mid-batch": ([data(0, 0), data(0, 1), replay(0), data(0, 2)], 1),
    "reordered packets": ([data(0, 0), data(0, 2), data(0, 1), data(0, 3)], 3),
    "a corrupted packet mid-batch": (
        [data(0, 0), data(0, 1), corrupted(data(0, 2)), data(0, 3), data(0, 4)],
        4,  # the data behind the lost one is out of order: aioquic's
    ),
    "another connection's packet mid-batch": (
        [data(0, 0), data(0, 1), other_connection(), data(0, 2)],
        3,
    ),
    "frames that need aioquic mid-batch": (
        [data(0, 0), frames(MAX_DATA + PING), data(0, 1), frames(reset_stream(4, 0)), data(0, 2)],
        4,
    ),
    "a key update mid-batch": (
        [data(0, 0), data(0, 1), key_updated(data(0, 2)), data(0, 3), data(0, 4)],
        3,  # aioquic takes the first packet with the new keys
    ),
    "a switch of connection id mid-batch": (
        [data(0, 0), data(0, 1), switched(data(0, 2)), data(0, 3)],
        3,
    ),
    "an ACK mid-batch": ([data(0, 0), frames(ack(0)), data(0, 1)], 1),
    "two open streams' runs of chunks in turn": (
        [data(0, 0), data(4, 0)]  # opened through aioquic's frames
        + [encoded(sid, i) for sid, i in ((0, 1), (0, 2), (4, 1), (4, 2), (0, 3), (4, 3))],
        1,
    ),
    "in-order data for the reader through aioquic's frames behind a run of chunks": (
        [data(0, i) for i in range(3)] + [frames(stream(0, 3 * CHUNK, b"x" * 10) + PING)],
        1,
    ),
    "a new stream's data (an event) mid-batch": ([data(0, 0), data(8, 0), data(0, 1)], 2),
    "a FIN mid-batch": ([data(0, 0), data(0, 1, fin=True), data(4, 0)], 2),
    "more packets than the duplicate window, then one from below it": (
        [tiny(i) for i in range(300)] + [replay(20), tiny(300)],
        1,
    ),
    "a GRO-sized burst of garbage": ([data(0, 0)] + [garbage()] * 62 + [data(0, 1)], 64),
    "garbage too short to sample": ([data(0, 0), garbage(20), data(0, 1)], 3),
    "a length field short of the packet's end mid-batch": (
        [encoded(0, 0), encoded(0, 1, after=PING), encoded(0, 2)],
        1,
    ),
    "a length field beyond the packet's end mid-batch": (
        [encoded(0, 0), encoded(0, 1, length=CHUNK + 1), encoded(0, 2)],
        3,  # aioquic closes the connection: FRAME_ENCODING_ERROR
    ),
    "one-byte packet numbers across their window, a duplicate from 80 back": (
        [
            frames_numbered(stream(0, 10 * i, bytes([i % 256]) * 10), number_bytes=1)
            for i in range(600)
        ]
        + [replay(520), frames_numbered(stream(0, 6000, b"z" * 10), number_bytes=1)],
        1,
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_a_batch_ends_as_its_datagrams_one_by_one(case: tuple[list[Segment], int]) -> None:
    segments, most_calls = case
    single, batch = _both(segments)
    _same(single, batch)
    assert batch["calls"] <= most_calls
    closes = segments is CASES["a length field beyond the packet's end mid-batch"][0]
    close = batch["state"]["close"]
    assert close is None if not closes else close[0] == QuicErrorCode.FRAME_ENCODING_ERROR


@pytest.mark.parametrize(
    "suite",
    [
        CipherSuite.AES_128_GCM_SHA256,
        CipherSuite.AES_256_GCM_SHA384,
        CipherSuite.CHACHA20_POLY1305_SHA256,
    ],
)
def test_runs_end_as_one_by_one_with_each_cipher_suite(suite: CipherSuite) -> None:
    """Header protection is AES (the masks of a read at once) or ChaCha20 (a mask per
    packet): in-order data, a duplicate, frames for aioquic and data again, in runs."""
    segments = [data(0, 0), data(0, 1), replay(0), data(0, 2), frames(MAX_DATA + PING)]
    segments += [data(0, 3), data(8, 0), data(0, 4), data(0, 5)]
    single, batch = _both(segments, suites=[suite])
    _same(single, batch)
    assert batch["calls"] <= 2 and batch["state"]["close"] is None


class _Sizes(TypedDict, total=False):
    sid_bytes: int
    offset_bytes: int
    length_bytes: int
    number_bytes: int


ENCODINGS: dict[str, _Sizes] = {
    "4-byte offsets, 2-byte lengths": {},
    "no length field": {"length_bytes": 0},
    "8-byte offsets": {"offset_bytes": 8},
    "8-byte offsets, no length field": {"offset_bytes": 8, "length_bytes": 0},
    "2-byte offsets": {"offset_bytes": 2},
    "2-byte stream ids": {"sid_bytes": 2},
    "4-byte lengths": {"length_bytes": 4},
    "1-byte packet numbers": {"number_bytes": 1},
    "2-byte packet numbers": {"number_bytes": 2},
    "3-byte packet numbers": {"number_bytes": 3},
}


@pytest.mark.parametrize("encoding", list(ENCODINGS.values()), ids=list(ENCODINGS))
def test_in_order_data_in_any_encoding_is_taken_in_one_call(encoding: _Sizes) -> None:
    """A sender picks its varints' and packet numbers' sizes: whichever, two streams'
    data in order is taken in one call, as one by one and as through aioquic."""
    segments = [encoded(0, i, **encoding) for i in range(10)]
    segments += [encoded(4, i, **encoding) for i in range(3)]
    single, batch = _both(segments)
    _same(single, batch)
    assert batch["calls"] == 1 and not batch["handled"]
    assert [len(chunks) for chunks in batch["read"]] == [10, 3]


@pytest.mark.parametrize("seed", range(40))
def test_random_frames_in_runs_end_as_one_by_one(seed: int) -> None:
    """Data in and out of order on three streams (two with readers), FIN, resets, ACK,
    PADDING, PING, as one run: as one by one, and as through aioquic."""
    packets = _random_packets(random.Random(seed))
    single, batch = _both([frames(p) for p in packets])
    _same(single, batch)


def test_a_protocol_violation_mid_batch_closes_as_one_by_one() -> None:
    """Data beyond the stream's credit in the third datagram: the connection closes
    there with aioquic's error, and what follows is taken (or not) as it is today."""
    beyond = stream(0, 2 * CHUNK, b"x" * STREAM_WINDOW)
    segments = [data(0, 0), data(0, 1), frames(beyond), data(0, 3), data(4, 0)]
    single, batch = _both(segments)
    _same(single, batch)
    assert batch["state"]["close"] is not None
    assert batch["state"]["close"][0] == QuicErrorCode.FLOW_CONTROL_ERROR


def test_data_beyond_the_connections_credit_mid_batch_closes_as_one_by_one() -> None:
    """Each stream within its window, both together beyond the connection's."""
    segments = [data(0, i) for i in range(60)] + [data(4, i) for i in range(41)]
    single, batch = _both(segments)
    _same(single, batch)
    assert batch["state"]["close"] is not None
    assert batch["state"]["close"][0] == QuicErrorCode.FLOW_CONTROL_ERROR


def test_data_beyond_a_final_size_mid_batch_closes_as_one_by_one() -> None:
    """A FIN ahead of the data (an empty frame at the final size), the data up to it,
    then data beyond it."""
    fin = frames(stream(0, 2 * CHUNK, b"", fin=True))
    single, batch = _both([data(0, 0), fin, data(0, 1), data(0, 2), data(0, 3)])
    _same(single, batch)
    assert batch["state"]["close"] is not None
    assert batch["state"]["close"][0] == QuicErrorCode.FINAL_SIZE_ERROR


def test_data_behind_a_pending_event_is_an_event() -> None:
    """Events the caller has not handled yet keep data behind them (the order of events):
    a reader gets nothing while one waits."""
    client, server = _pair()
    reader = _Reader()
    server.stream_readers = {0: reader}
    server._events.append(PingAcknowledged(uid=1))
    packets = [data(0, 0)(client, server), data(0, 1)(client, server)]
    assert server.receive_datagrams(packets, 0, ADDR, now=2.0) == 1  # then the events
    assert server.receive_datagrams(packets, 1, ADDR, now=2.0) == 2
    assert not reader.data
    events = []
    while (event := server.next_event()) is not None:
        events.append(event)
    assert events[0] == PingAcknowledged(uid=1)
    assert [type(e) for e in events[1:]] == [StreamDataReceived, StreamDataReceived]


def test_reserved_bits_mid_batch_close_as_one_by_one() -> None:
    segments = [data(0, 0), lambda c, _: one_rtt(c, stream(0, CHUNK, b"r"), first=0x4B)]
    single, batch = _both([*segments, data(0, 2)])
    _same(single, batch)
    assert batch["state"]["close"] is not None
    assert batch["state"]["close"][0] == QuicErrorCode.PROTOCOL_VIOLATION


def test_a_reader_that_refuses_data_mid_batch_gets_events_as_one_by_one() -> None:
    """Stream 4's reader refuses (a stream still negotiating): its data is an event, which
    ends the run, and stream 0's chunks before and after it reach its reader in order."""
    segments = [data(4, 0)] + [encoded(0, i) for i in range(3)] + [encoded(4, 1)]
    segments += [encoded(0, 3), encoded(0, 4)]
    single, batch = _both(segments, refusing=(4,))
    _same(single, batch)
    assert batch["calls"] == 3 and [i for i, _ in batch["handled"]] == [0, 4]
    assert [len(chunks) for chunks in batch["read"]] == [5, 0]


def test_without_readers_every_chunk_is_an_event_after_its_datagram() -> None:
    single, batch = _both([data(0, i) for i in range(5)], readers=False)
    _same(single, batch)
    assert [index for index, _ in batch["handled"]] == [0, 1, 2, 3, 4]
    assert all(isinstance(event, StreamDataReceived) for _, event in batch["handled"])


# -- the endpoint's runs ------------------------------------------------------------------


class _Conn:
    """A connection as the endpoint sees it: takes every segment to its id that follows."""

    def __init__(self, cid: bytes, *, closes_at: int | None = None) -> None:
        self.cid = cid
        self.closes_at = closes_at
        self.runs: list[list[bytes]] = []
        self.is_closed = False

    def receive_run(self, segments: Sequence[bytes], start: int, addr: SockAddr) -> int:
        end = start
        while end < len(segments) and segments[end][1:9] == self.cid:
            end += 1
            if end - 1 == self.closes_at:
                self.is_closed = True
                break
        self.runs.append(list(segments[start:end]))
        return end


def test_the_endpoint_routes_each_run_afresh() -> None:
    endpoint = QuicEndpoint(QuicConfig(), on_empty=lambda _: None)
    one, two = _Conn(b"1" * 8), _Conn(b"2" * 8, closes_at=5)
    three = _Conn(b"3" * 8, closes_at=8)
    endpoint._cids = {c.cid: c for c in (one, two, three)}  # type: ignore[misc]

    def to(conn: _Conn, tag: int) -> bytes:
        return bytes([0x40]) + conn.cid + bytes([tag]) * 91

    unknown = bytes([0x40]) + b"?" * 8 + bytes(91)
    segments = [to(one, 0), to(one, 1), to(two, 2), unknown, to(one, 3), to(two, 4)]
    segments += [to(two, 5), to(two, 6), to(three, 7)]
    touched: list[Any] = []
    taken = endpoint._receive_segments(b"".join(segments), 100, ADDR, touched)
    assert taken == len(segments)
    assert one.runs == [segments[0:2], segments[4:5]]
    # Its run ends where it closed; the next datagram is routed again (here: still it).
    assert two.runs == [segments[2:3], segments[5:6], segments[6:8]]
    assert three.runs == [segments[8:9]]
    assert touched == [one, two]  # as each took one open; not the one that closed at once


async def test_bulk_in_1200_byte_datagrams_arrives_intact_in_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """quinn's datagram size on loopback, sent in GSO bursts and read with GRO where the
    kernel has both: the data arrives intact, and the receiver takes most datagrams in
    runs of several (else one by one, each a run of one)."""
    runs: list[int] = []
    receive_run = QuicConnection.receive_run

    def spy(conn: QuicConnection, segments: list[bytes], start: int, addr: SockAddr) -> int:
        end = receive_run(conn, segments, start, addr)
        runs.append(end - start)
        return end

    monkeypatch.setattr(QuicConnection, "receive_run", spy)
    payload = os.urandom(2 << 20)
    config = QuicConfig(loopback_datagram_bytes=1200, max_datagram_bytes=1200)
    transports = [QuicTransport(config), QuicTransport(config)]
    received = bytearray()
    done = asyncio.Event()

    async def sink(stream: Stream) -> None:
        while chunk := await stream.read(1 << 20):
            received.extend(chunk)
        done.set()

    async with Node(transports=[transports[0]]) as a, Node(transports=[transports[1]]) as b:
        b.set_stream_handler("/test/sink/1.0.0", sink)
        (addr,) = await b.listen("/ip4/127.0.0.1/udp/0/quic-v1")
        stream = await a.new_stream(addr.with_peer_id(b.peer_id), "/test/sink/1.0.0")
        await stream.write(payload)
        await stream.close()
        async with asyncio.timeout(30):
            await done.wait()
        assert bytes(received) == payload
        (endpoint,) = transports[1]._listening
        assert endpoint.gro and transports[0]._dialing[socket.AF_INET].gso  # this kernel's
        assert sum(n for n in runs if n > 1) > sum(runs) // 2
        # The connection kept no read's datagrams (the header masks' cache) after it.
        assert b.connections
        for conn in b.connections:
            assert isinstance(conn, QuicConnection) and conn._quic is not None
            assert conn._quic._masks is None


def _offset_packet(offset: int, body: bytes, *, offset_bytes: int, length_bytes: int) -> bytes:
    """A STREAM frame of stream 0 at ``offset`` in these field sizes."""
    frame = bytes([0x0C | (2 if length_bytes else 0)]) + _varint(0, 1)
    frame += _varint(offset, offset_bytes)
    if length_bytes:
        frame += _varint(len(body), length_bytes)
    return frame + body


CONTINUED: dict[str, tuple[list[Segment], int]] = {
    # Packets whose head is the one the run expects after the last bulk packet (the same
    # frame type, stream and size, the offset where it ended): the segments and the most
    # calls the runs may take.  Each with and without a length field (quinn sends none).
    "continuations beyond the stream's credit": ([encoded(0, i) for i in range(66)], 2),
    "continuations beyond the stream's credit, no length field": (
        [encoded(0, i, length_bytes=0) for i in range(66)],
        2,
    ),
    "continuations beyond the connection's credit": (
        [encoded(4, i) for i in range(40)] + [encoded(0, i) for i in range(62)],
        2,
    ),
    "a continuation after a FIN at its offset": (
        [
            encoded(0, 0),
            encoded(0, 1),
            frames(stream(0, 2 * CHUNK, b"", fin=True)),
            encoded(0, 2),
            encoded(0, 3),
        ],
        3,  # aioquic closes the connection: FINAL_SIZE_ERROR
    ),
    "a continuation after a reset of its stream": (
        [
            encoded(0, 0),
            encoded(0, 1),
            frames(reset_stream(0, 2 * CHUNK)),
            encoded(0, 2),
            encoded(0, 3),
        ],
        3,
    ),
    "a retransmission of the last chunk (the same offset, a new packet number)": (
        [encoded(0, 0), encoded(0, 1), encoded(0, 1), encoded(0, 2)],
        1,
    ),
    "a longer packet, then one that overlaps its end": (
        [
            encoded(0, 0, length_bytes=0),
            encoded(0, 1, length_bytes=0, after=b"+"),
            encoded(0, 2, length_bytes=0),
            encoded(0, 3, length_bytes=0),
        ],
        2,
    ),
    "the length field of a continuation short of the packet's end": (
        [encoded(0, 0), encoded(0, 1), encoded(0, 2, after=PING), encoded(0, 3)],
        1,
    ),
    "a small in-order frame between continuations, then the old head again": (
        [
            encoded(0, 0),
            encoded(0, 1),
            frames(stream(0, 2 * CHUNK, b"xyz")),
            encoded(0, 2),
            encoded(0, 3),
        ],
        3,  # the data under the old head overlaps: aioquic's
    ),
    "another stream's packet between continuations": (
        [encoded(0, 0), encoded(4, 0), encoded(0, 1), encoded(4, 1), encoded(0, 2)],
        1,
    ),
    "continuations around a duplicate, a corrupted packet and garbage": (
        [
            encoded(0, 0),
            encoded(0, 1),
            replay(1),
            corrupted(encoded(0, 2)),
            garbage(),
            encoded(0, 2),
            encoded(0, 3),
        ],
        4,
    ),
    "continuations across a switch of connection id": (
        [encoded(0, 0), encoded(0, 1), switched(encoded(0, 2)), encoded(0, 3)],
        3,
    ),
}


@pytest.mark.parametrize("case", list(CONTINUED.values()), ids=list(CONTINUED))
def test_continuations_end_as_their_datagrams_one_by_one(
    case: tuple[list[Segment], int],
) -> None:
    """The run takes a packet that continues the last bulk one on what it checked of
    that one: whatever breaks the continuation (credit, a FIN or reset in between,
    other data, other sizes) ends as one by one and as through aioquic."""
    segments, most_calls = case
    single, batch = _both(segments)
    _same(single, batch)
    assert batch["calls"] <= most_calls


@pytest.mark.parametrize("length_bytes", [0, 2])
def test_offsets_across_four_bytes_are_taken_as_aioquic_takes_them(length_bytes: int) -> None:
    """At 2**30 a stream's offset needs 8 bytes: the packet there is no continuation of
    the one before, whose 4-byte offset ended at it, though its first bytes and its size
    (a sender fills its datagrams: 4 bytes less data) are alike."""
    start = (1 << 30) - 2 * CHUNK
    body = bytes(range(251)) * 4 + bytes(CHUNK - 4 * 251)
    bodies = [body, body, body[4:], body[4:]]
    offsets = [start, start + CHUNK, 1 << 30, (1 << 30) + CHUNK - 4]
    read: list[list[bytes]] = []
    states = []
    for runs in (True, False):
        client, server = connected_pair(stream_window=1 << 31, connection_window=1 << 31)
        reader = _Reader()
        if runs:
            server.stream_readers = {0: reader}
        server.receive_datagram(one_rtt(client, stream(0, 0, b"")), ADDR, now=2.0)
        receiver = server._streams[0].receiver
        receiver._buffer_start = receiver.highest_offset = start  # as if read up to there
        server._local_max_data.used = start
        packets = [
            one_rtt(
                client,
                _offset_packet(
                    offset,
                    chunk,
                    offset_bytes=4 if offset < 1 << 30 else 8,
                    length_bytes=length_bytes,
                ),
            )
            for offset, chunk in zip(offsets, bodies, strict=True)
        ]
        assert len({len(packet) for packet in packets}) == 1
        if runs:
            assert server.receive_datagrams(packets, 0, ADDR, now=2.0) == 4
            read.append(reader.data)
        else:
            events = []
            for packet in packets:
                AioquicConnection.receive_datagram(server, packet, ADDR, now=2.0)
                while (event := server.next_event()) is not None:
                    events.append(event)
            read.append([e.data for e in events if isinstance(e, StreamDataReceived)])
        states.append(_state(server) | {"events": None} | _bookkeeping(server))
    assert read[0] == read[1] == bodies
    assert states[0] == states[1]


@pytest.mark.parametrize("sizes", [(100, 100, 37), (1200,) * 10, (9, 9), (50,) * 70 + (3,)])
def test_the_endpoint_cuts_a_read_into_its_datagrams(sizes: tuple[int, ...]) -> None:
    """A GRO read is cut at the segment size, the last datagram maybe shorter; past the
    most the kernel coalesces (64) the rest is dropped."""
    endpoint = QuicEndpoint(QuicConfig(), on_empty=lambda _: None)
    conn = _Conn(b"1" * 8)
    endpoint._cids = {conn.cid: conn}  # type: ignore[dict-item]
    datagrams = [
        bytes([0x40]) + conn.cid + bytes([n % 256]) * (size - 9) for n, size in enumerate(sizes)
    ]
    taken = endpoint._receive_segments(b"".join(datagrams), sizes[0], ADDR, [])
    assert taken == min(len(sizes), 64)
    assert conn.runs == [datagrams[:64]]


@pytest.mark.parametrize("length_bytes", [0, 2])
def test_data_past_the_largest_offset_closes_as_through_aioquic(length_bytes: int) -> None:
    """A frame whose end passes 2**62 - 1 (the largest varint) is aioquic's error, not
    data for the reader, whatever credit the stream has (here: up to 2**62)."""
    start = (1 << 62) - CHUNK
    states = []
    for runs in (True, False):
        client, server = connected_pair()
        reader = _Reader()
        if runs:
            server.stream_readers = {0: reader}
        server.receive_datagram(one_rtt(client, stream(0, 0, b"")), ADDR, now=2.0)
        opened = server._streams[0]
        opened.receiver._buffer_start = opened.receiver.highest_offset = start
        opened.max_stream_data_local = 1 << 62
        server._local_max_data.used, server._local_max_data.value = start, 1 << 62
        packet = one_rtt(
            client, _offset_packet(start, bytes(CHUNK), offset_bytes=8, length_bytes=length_bytes)
        )
        if runs:
            server.receive_datagrams([packet, packet], 0, ADDR, now=2.0)
        else:
            AioquicConnection.receive_datagram(server, packet, ADDR, now=2.0)
        assert not reader.data
        states.append(_state(server) | {"events": None} | _bookkeeping(server))
    assert states[0] == states[1]
    assert states[0]["close"] is not None
