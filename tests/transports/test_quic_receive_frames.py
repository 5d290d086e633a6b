"""The frames the short way for 1-RTT packets takes itself (``quic_receive``), against
aioquic's own receive: two in-memory connections get the same frames, one through the
short way, the other through aioquic's ``receive_datagram``, and must end with the same
events (stream data, resets, the connection error a misbehaving peer gets) and the same
stream, credit and ACK state.  The frames are written by hand, as a hostile peer would."""

from __future__ import annotations

import dataclasses
import inspect
import random
from typing import Any

import pytest
from aioquic import tls
from aioquic.quic.connection import QuicConnection as AioquicConnection
from aioquic.quic.events import StreamDataReceived, StreamReset
from aioquic.quic.packet import QuicErrorCode
from aioquic.quic.rangeset import RangeSet
from aioquic.quic.recovery import QuicPacketNumberWindow
from aioquic.tls import CipherSuite

from aiop2p._aio.quic_adapter import LibP2PQuic
from aiop2p._aio.quic_receive import OneRttReceiver

from .quic_memory import ADDR, connected_pair, one_rtt, varints

STREAM_WINDOW = 4096
CONNECTION_WINDOW = 6000
MAX_STREAMS = 4


def _pair(suites: list[CipherSuite] | None = None) -> tuple[LibP2PQuic, LibP2PQuic]:
    return connected_pair(
        stream_window=STREAM_WINDOW,
        connection_window=CONNECTION_WINDOW,
        max_streams=MAX_STREAMS,
        suites=suites,
    )


# -- frames, written by hand -------------------------------------------------------------


def stream(sid: int, offset: int, data: bytes, *, fin: bool = False, length: bool = True) -> bytes:
    kind = 0x08 | (4 if offset else 0) | (2 if length else 0) | (1 if fin else 0)
    fields = [kind, sid] + ([offset] if offset else []) + ([len(data)] if length else [])
    return varints(*fields) + data


def ack(largest: int) -> bytes:
    return varints(0x02, largest, 0, 0, 0)  # largest, delay, no more ranges, first range


def reset_stream(sid: int, final_size: int) -> bytes:
    return varints(0x04, sid, 0, final_size)


PADDING = bytes(24)
PING = varints(0x01)
MAX_DATA = varints(0x10, 1 << 30)
UNKNOWN = varints(0x3F)


# -- the same frames both ways -----------------------------------------------------------


def _state(machine: LibP2PQuic) -> dict[str, Any]:
    """What the receive leaves behind: events, streams' receive state, credit, ACKs."""
    events = []
    while (event := machine.next_event()) is not None:
        events.append(event)
    space = machine._spaces[tls.Epoch.ONE_RTT]
    close = machine._close_event
    return {
        "events": events,
        "state": machine._state,
        "close": None
        if close is None
        else (close.error_code, close.frame_type, close.reason_phrase),
        "streams": {
            sid: (
                s.receiver.highest_offset,
                s.receiver._buffer_start,
                bytes(s.receiver._buffer),
                s.receiver._final_size,
                s.receiver.is_finished,
            )
            for sid, s in machine._streams.items()
        },
        "max_data_used": machine._local_max_data.used,
        "streams_used": machine._local_max_streams_bidi.used,
        "ack_queue": list(space.ack_queue),
        "ack_due": space.ack_at is not None,
        "idle_deadline": machine._close_at,
        "largest": space.largest_received_packet,
    }


def _count_payload_received(machine: LibP2PQuic) -> list[None]:
    """A list that grows by one per call of the machine's ``_payload_received``."""
    calls: list[None] = []
    payload_received = machine._payload_received

    def counting(*args: Any, **kwargs: Any) -> tuple[bool, bool]:
        calls.append(None)
        return payload_received(*args, **kwargs)

    machine._payload_received = counting  # type: ignore[method-assign]
    return calls


def _both_ways(packets: list[bytes], **first: int) -> tuple[dict[str, Any], dict[str, Any], int]:
    """The frames of each packet to a server through the short way and to another
    through aioquic; their states, and how often the short way handed frames to
    aioquic's ``_payload_received``."""
    states = []
    handed = 0
    for short in (True, False):
        client, server = _pair()
        calls = _count_payload_received(server)
        for step, frames in enumerate(packets):
            data = one_rtt(client, frames, **first)
            now = 1.0 + step * 0.001
            if short:
                assert server._receive_one_rtt(data, ADDR, now=now)
            else:
                AioquicConnection.receive_datagram(server, data, ADDR, now=now)
        states.append(_state(server))
        if short:
            handed = len(calls)
    return states[0], states[1], handed


def _closed_with(state: dict[str, Any], code: int) -> None:
    assert state["close"] is not None and state["close"][0] == code


A = b"a" * 1000
B = b"b" * 1000

TAKEN = {
    # In-order data, each frame taken by the short way (nothing handed to aioquic).
    "ids, offsets and lengths of 1, 2, 4 and 8 bytes": [
        stream(0, 0, b"x" * 63) + stream(0, 63, b"y" * 64) + stream(0, 127, b"z" * 1000),
        varints(0x0E) + bytes([0x80, 0, 0, 0]) + varints(1127, 3) + b"abc",
        varints(0x0E) + bytes([0xC0, 0, 0, 0, 0, 0, 0, 0]) + varints(1130) + b"\x40\x02de",
    ],
    "in order, then FIN": [stream(0, 0, A), stream(0, 1000, B), stream(0, 2000, b"c", fin=True)],
    "without a length field": [stream(0, 0, A, length=False), stream(0, 1000, B, length=False)],
    "coalesced frames, two streams": [stream(0, 0, A) + stream(4, 0, B) + stream(0, 1000, b"z")],
    "ACK then STREAM": [ack(0) + stream(0, 0, A)],
    "STREAM then ACK": [stream(0, 0, A) + ack(0)],
    "padding": [stream(0, 0, b"p") + PADDING, PADDING + stream(0, 1, b"q")],
    "a FIN alone": [stream(0, 0, b"abc"), stream(0, 3, b"", fin=True)],
    "a new stream opens the ones below": [stream(8, 0, b"n"), stream(0, 0, b"m")],
    "data then FIN in one frame on a new stream": [stream(4, 0, b"ask", fin=True)],
}

HANDED = {
    # Each case: the packets, the connection error it ends with (or None).
    "out of order": ([stream(0, 1000, B), stream(0, 0, A), stream(0, 2000, b"next")], None),
    "duplicate data": ([stream(0, 0, A), stream(0, 0, A), stream(0, 500, A)], None),
    "data beyond the stream's credit": (
        [stream(0, 0, A), stream(0, 1000, b"x" * (STREAM_WINDOW - 999))],
        QuicErrorCode.FLOW_CONTROL_ERROR,
    ),
    "data beyond the connection's credit": (
        [stream(0, 0, A * 4), stream(4, 0, A * 2 + b"x" * 1)],
        QuicErrorCode.FLOW_CONTROL_ERROR,
    ),
    "data beyond the final size": (
        [stream(0, 0, b"ab", fin=True), stream(0, 2, b"c")],
        QuicErrorCode.FINAL_SIZE_ERROR,
    ),
    "a FIN moving the final size": (
        [stream(0, 0, b"ab", fin=True), stream(0, 0, b"abc", fin=True)],
        QuicErrorCode.FINAL_SIZE_ERROR,
    ),
    "a FIN below data received": (
        [stream(0, 0, b"abcdef"), stream(0, 2, b"c", fin=True)],
        QuicErrorCode.FINAL_SIZE_ERROR,
    ),
    "data after a reset": ([reset_stream(0, 3), stream(0, 0, b"abc")], None),
    "data beyond a reset's final size": (
        [stream(0, 0, b"a"), reset_stream(0, 3), stream(0, 1, b"abc")],
        QuicErrorCode.FINAL_SIZE_ERROR,
    ),
    "a stream of ours never opened": ([stream(1, 0, b"x")], QuicErrorCode.STREAM_STATE_ERROR),
    "a unidirectional stream (none allowed)": (
        [stream(2, 0, b"x")],
        QuicErrorCode.STREAM_LIMIT_ERROR,
    ),
    "an unknown frame after data": (
        [stream(0, 0, b"u") + UNKNOWN],
        QuicErrorCode.FRAME_ENCODING_ERROR,
    ),
    "a truncated STREAM frame": (
        [varints(0x0A, 0, 50) + b"short"],
        QuicErrorCode.FRAME_ENCODING_ERROR,
    ),
    "a STREAM frame cut before its id": ([bytes([0x0F])], QuicErrorCode.FRAME_ENCODING_ERROR),
    "a STREAM frame cut before its offset": (
        [varints(0x0D, 0)],
        QuicErrorCode.FRAME_ENCODING_ERROR,
    ),
    "a STREAM frame cut in its offset": (
        [bytes([0x0E, 0x00, 0x80, 0x01])],
        QuicErrorCode.FRAME_ENCODING_ERROR,
    ),
    "a STREAM frame cut in its length": (
        [bytes([0x0A, 0x00, 0x41])],
        QuicErrorCode.FRAME_ENCODING_ERROR,
    ),
    "a STREAM frame cut in its 2-byte id": (
        [bytes([0x0A, 0x40])],
        QuicErrorCode.FRAME_ENCODING_ERROR,
    ),
    "a STREAM frame cut in its 2-byte offset": (
        [bytes([0x0E, 0x00, 0x40])],
        QuicErrorCode.FRAME_ENCODING_ERROR,
    ),
    "a STREAM frame cut after its length": (
        [bytes([0x0B, 0x00])],
        QuicErrorCode.FRAME_ENCODING_ERROR,
    ),
    "no frames": ([b""], QuicErrorCode.PROTOCOL_VIOLATION),
    "PING and MAX_DATA around data": (
        [MAX_DATA + stream(0, 0, b"m") + PING, stream(0, 1, b"n")],
        None,
    ),
    "an empty frame without FIN": ([stream(0, 0, b""), stream(0, 0, b"e")], None),
    "a stream reset in the packet before its data": (
        [reset_stream(4, 0) + stream(0, 0, b"r")],
        None,
    ),
}


REFUSED = {
    # Misbehaviour the short way meets itself, with aioquic's checks and errors.
    "a stream beyond the limit": (
        [stream(4 * MAX_STREAMS, 0, b"x")],
        QuicErrorCode.STREAM_LIMIT_ERROR,
    ),
    "a truncated ACK frame": (
        [stream(0, 0, b"x") + varints(0x02, 5)],
        QuicErrorCode.FRAME_ENCODING_ERROR,
    ),
}


@pytest.mark.parametrize("packets", list(TAKEN.values()), ids=list(TAKEN))
def test_the_short_way_takes_in_order_data_as_aioquic_does(packets: list[bytes]) -> None:
    short, aioquic, handed = _both_ways(packets)
    assert short == aioquic
    assert handed == 0
    assert short["close"] is None
    assert any(isinstance(e, StreamDataReceived) for e in short["events"])


@pytest.mark.parametrize("case", list(HANDED.values()), ids=list(HANDED))
def test_the_short_way_hands_the_rest_to_aioquic(case: tuple[list[bytes], int | None]) -> None:
    """Out-of-order and duplicate data, frames it does not take and every misbehaviour
    end exactly as through aioquic: the same events, the same connection error."""
    packets, error = case
    short, aioquic, handed = _both_ways(packets)
    assert short == aioquic
    assert handed >= 1
    if error is None:
        assert short["close"] is None
    else:
        _closed_with(short, error)


@pytest.mark.parametrize("case", list(REFUSED.values()), ids=list(REFUSED))
def test_the_short_way_refuses_as_aioquic_does(case: tuple[list[bytes], int]) -> None:
    packets, error = case
    short, aioquic, handed = _both_ways(packets)
    assert short == aioquic
    assert handed == 0
    _closed_with(short, error)


def _random_packets(rng: random.Random) -> list[bytes]:
    """Packets of one to three frames on three streams: data in and out of order,
    repeated, with FIN, resets, ACK, PADDING, PING (byte i of a stream is ``i % 251``)."""
    content = bytes(i % 251 for i in range(STREAM_WINDOW + 100))
    sent = {0: 0, 4: 0, 8: 0}
    packets = []
    for _ in range(rng.randrange(1, 12)):
        frames = b""
        for _ in range(rng.randrange(1, 4)):
            sid = rng.choice((0, 4, 8))
            kind = rng.random()
            if kind < 0.55:  # the next data, mostly
                offset = sent[sid]
            elif kind < 0.8:  # elsewhere: ahead, behind or overlapping
                offset = max(0, sent[sid] + rng.randrange(-1500, 1500))
            elif kind < 0.85:
                frames += reset_stream(sid, sent[sid] + rng.randrange(0, 3))
                continue
            else:
                frames += rng.choice((ack(0), PADDING, PING, MAX_DATA))
                continue
            size = rng.randrange(0, 1500)
            data = content[offset : offset + size]
            last = rng.random() < 0.3  # the frame fills the packet: no length
            frames += stream(sid, offset, data, fin=rng.random() < 0.1, length=not last)
            sent[sid] = max(sent[sid], offset + len(data))
            if last:
                break
        packets.append(frames)
    return packets


@pytest.mark.parametrize("seed", range(60))
def test_random_frames_end_as_through_aioquic(seed: int) -> None:
    short, aioquic, _ = _both_ways(_random_packets(random.Random(seed)))
    assert short == aioquic


@pytest.mark.parametrize("reserved", [0x08, 0x10, 0x18])
def test_reserved_bits_close_the_connection_as_aioquic_does(reserved: int) -> None:
    """A packet with reserved bits set is left to aioquic (the short way's header check
    refuses it before decrypting), which closes the connection; a duplicate of a packet
    already taken is dropped first, as aioquic drops it, and closes nothing."""
    states = []
    for short in (True, False):
        client, server = _pair()
        good = one_rtt(client, stream(0, 0, b"x"))
        client._packet_number -= 1  # the same packet number again, reserved bits set
        duplicate = one_rtt(client, stream(0, 0, b"x"), first=0x43 | reserved)
        bad = one_rtt(client, stream(0, 1, b"y"), first=0x43 | reserved)
        for step, data in enumerate((good, duplicate, bad)):
            now = 1.0 + step * 0.001
            if short:
                assert server._receive_one_rtt(data, ADDR, now) == (data is good)
                if data is not good:
                    server.receive_datagram(data, ADDR, now)  # aioquic's, after the refusal
            else:
                AioquicConnection.receive_datagram(server, data, ADDR, now=now)
            if data is duplicate:
                assert server._close_event is None
        states.append(_state(server))
    assert states[0] == states[1]
    _closed_with(states[0], QuicErrorCode.PROTOCOL_VIOLATION)


@pytest.mark.parametrize(
    "suite", [CipherSuite.AES_256_GCM_SHA384, CipherSuite.CHACHA20_POLY1305_SHA256]
)
def test_other_cipher_suites_take_the_short_way(suite: CipherSuite) -> None:
    """Header protection and AEAD of each TLS 1.3 suite (AES-128-GCM is the default)."""
    client, server = _pair([suite])
    assert server.tls.key_schedule is not None
    assert server.tls.key_schedule.cipher_suite is suite
    calls = _count_payload_received(server)
    for number, chunk in enumerate((A, B)):
        data = one_rtt(client, stream(0, number * 1000, chunk))
        assert server._receive_one_rtt(data, ADDR, now=1.0)
    assert _state(server)["events"] == [
        StreamDataReceived(data=A, end_stream=False, stream_id=0),
        StreamDataReceived(data=B, end_stream=False, stream_id=0),
    ]
    assert not calls
    forged = bytearray(one_rtt(client, stream(0, 2000, b"x")))
    forged[-1] ^= 1
    assert not server._receive_one_rtt(bytes(forged), ADDR, now=1.0)  # left to aioquic


def test_the_idle_deadline_follows_rtt_samples() -> None:
    """The idle timeout is at least three probe timeouts (aioquic's ``_idle_timeout``):
    a new RTT sample moves the deadline of the next packet."""
    client, server = _pair()
    assert server._receive_one_rtt(one_rtt(client, stream(0, 0, b"a")), ADDR, now=1.0)
    assert server._close_at == 1.0 + server._idle_timeout() == 1.0 + 60.0
    server._loss._rtt_smoothed, server._loss._rtt_variance = 30.0, 1.0  # a long one
    assert server._receive_one_rtt(one_rtt(client, stream(0, 1, b"b")), ADDR, now=2.0)
    assert server._close_at == 2.0 + server._idle_timeout() == 2.0 + 3 * (34.0 + 0.025)


@pytest.mark.parametrize(
    "numbers",
    [
        [0, 1, 2, 3],  # each grows the last range
        [0, 1, None, 2, 3, None, 4],  # after the peer acknowledged our ACK: none left
        [0, 3, 4, 9, 10],  # after gaps: a range of its own at the end
        [0, 5, 2, 3, 1, None, 7, 6, 4],  # below the last range: aioquic's RangeSet.add
    ],
    ids=["in order", "queue emptied", "gaps", "reordered"],
)
def test_the_ack_queue_grows_as_through_aioquic(numbers: list[int | None]) -> None:
    """The packet numbers the short way takes land in the ACK queue as aioquic's
    ``RangeSet.add`` puts them (None: the queue emptied, as an ACK of our ACK leaves
    it), after each packet."""
    queues = []
    for short in (True, False):
        client, server = _pair()
        queue = server._spaces[tls.Epoch.ONE_RTT].ack_queue
        seen = []
        for step, number in enumerate(numbers):
            if number is None:
                queue._RangeSet__ranges.clear()  # type: ignore[attr-defined]
                continue
            client._packet_number = number
            data = one_rtt(client, PING)
            if short:
                assert server._receive_one_rtt(data, ADDR, now=1.0 + step * 0.001)
            else:
                AioquicConnection.receive_datagram(server, data, ADDR, now=1.0 + step * 0.001)
            seen.append(list(queue))
        queues.append(seen)
    assert queues[0] == queues[1]


# -- straight to the stream's reader -----------------------------------------------------


class _Reader:
    def __init__(self, *, takes: bool = True) -> None:
        self.takes = takes
        self.data: list[bytes] = []

    def _feed_buffered(self, data: bytes) -> bool:
        if self.takes:
            self.data.append(data)
        return self.takes

    def _feed_chunks(self, chunks: list[bytes], size: int) -> None:
        assert self.data and size == sum(map(len, chunks)), "after data it took"
        self.data += chunks


def test_in_order_data_goes_to_the_reader_without_events() -> None:
    client, server = _pair()
    taking, refusing = _Reader(), _Reader(takes=False)
    server.stream_readers = {0: taking, 4: refusing}
    frames = stream(0, 0, A) + stream(4, 0, b"ev") + stream(0, 1000, b"tail")
    assert server._receive_one_rtt(one_rtt(client, frames), ADDR, now=1.0)
    assert taking.data == [A]  # the rest of stream 0 comes after the event before it
    assert _state(server)["events"] == [
        StreamDataReceived(data=b"ev", end_stream=False, stream_id=4),
        StreamDataReceived(data=b"tail", end_stream=False, stream_id=0),
    ]
    assert server._receive_one_rtt(one_rtt(client, stream(0, 1004, B)), ADDR, now=1.1)
    assert taking.data == [A, B]
    # A FIN, a reset before the data and out-of-order data come as events.
    frames = reset_stream(4, 2) + stream(0, 2004, b"!")
    assert server._receive_one_rtt(one_rtt(client, frames), ADDR, now=1.2)
    assert server._receive_one_rtt(
        one_rtt(client, stream(0, 2010, b"gap", fin=True)), ADDR, now=1.3
    )
    assert server._receive_one_rtt(one_rtt(client, stream(0, 2005, b"12345")), ADDR, now=1.4)
    assert _state(server)["events"] == [
        StreamReset(error_code=0, stream_id=4),
        StreamDataReceived(data=b"!", end_stream=False, stream_id=0),
        StreamDataReceived(data=b"12345gap", end_stream=True, stream_id=0),
    ]
    assert taking.data == [A, B]
    assert server._local_max_data.used == 2013 + 2


def test_the_client_takes_the_servers_packets_the_short_way() -> None:
    """To a client, the server may use any connection id the client issued."""
    client, server = _pair()
    sid = client.get_next_available_stream_id()
    client.write(sid, b"ask")
    for data, _ in client.datagrams_to_send(now=1.0):
        server.receive_datagram(data, ADDR, now=1.0)
    _state(server)
    _state(client)  # its events so far (data behind them would queue as events)
    reader = _Reader()
    client.stream_readers = {sid: reader}
    issued = [c.cid for c in client._host_cids]
    assert len(issued) > 1
    for number, cid in enumerate(issued):
        server._peer_cid.cid = cid
        data = one_rtt(server, stream(sid, number, b"x"))
        assert client._receive_one_rtt(data, ADDR, now=1.1)
    assert reader.data == [b"x"] * len(issued)


# -- what the short way relies on --------------------------------------------------------


def test_the_short_way_reaches_the_aioquic_internals_it_needs() -> None:
    """Fails loudly if an aioquic upgrade moves what ``quic_receive`` touches."""
    client, server = _pair()
    assert issubclass(LibP2PQuic, OneRttReceiver)
    for machine in (client, server):
        for name in (
            "_state",
            "_quic_logger",
            "_close_at",
            "_configuration",
            "_is_client",
            "_host_cids",
            "host_cid",
            "_network_paths",
            "_cryptos",
            "_spaces",
            "_spin_bit",
            "_spin_highest_pn",
            "_ack_eliciting_sent_since_receipt",
            "_ack_delay",
            "_streams",
            "_events",
            "_close_pending",
        ):
            assert hasattr(machine, name), name
        assert machine._network_paths[0].is_validated and machine._network_paths[0].addr
        assert isinstance(machine._local_max_streams_bidi.used, int)
        assert isinstance(machine._local_max_data.used + machine._local_max_data.value, int)
        recv = machine._cryptos[tls.Epoch.ONE_RTT].recv
        assert recv.hp is not None and recv.aead is not None
        assert len(recv.hp._mask(bytes(16))) >= 5
        assert recv.hp._is_chacha20 is False  # AES-128-GCM: the mask is one block
        assert recv.hp._encryptor.update(bytes(range(16))) == recv.hp._mask(bytes(range(16)))
        assert isinstance(recv.aead._iv, int) and hasattr(recv.aead._aead, "decrypt")
        assert recv.key_phase == 0
        assert machine._cryptos[tls.Epoch.ZERO_RTT].recv.aead is None
        space = machine._spaces[tls.Epoch.ONE_RTT]
        for name in ("expected_packet_number", "largest_received_packet", "ack_at", "discarded"):
            assert hasattr(space, name), name
        assert isinstance(space.received_packets, QuicPacketNumberWindow)
        assert isinstance(space.received_packets._lower, int)
        assert isinstance(space.received_packets._received, set)
        assert isinstance(space.received_packets._size, int)
        assert isinstance(space.ack_queue, RangeSet)
        assert isinstance(space.ack_queue._RangeSet__ranges, list)  # type: ignore[attr-defined]
    assert isinstance(server._loss._rtt_smoothed, float)
    assert "self._rtt_smoothed" in inspect.getsource(type(server._loss).get_probe_timeout)
    for name in (
        "_idle_timeout",
        "_payload_received",
        "_handle_ack_frame",
        "_get_or_create_stream",
    ):
        assert callable(getattr(AioquicConnection, name)), name
    sid = client.get_next_available_stream_id()
    client.write(sid, b"x")
    receiver = client._streams[sid].receiver
    for name in ("_buffer", "_buffer_start", "_final_size", "highest_offset", "is_finished"):
        assert hasattr(receiver, name), name
    assert client._streams[sid].max_stream_data_local == STREAM_WINDOW
    # The steps after the frames are aioquic's own for a received packet.
    source = inspect.getsource(AioquicConnection.receive_datagram)
    for step in (
        "self._close_at = now + self._idle_timeout()",
        "self._ack_eliciting_sent_since_receipt = False",
        "space.ack_queue.add(packet_number)",
        "space.received_packets.add(packet_number)",
        "space.ack_at = now + self._ack_delay",
        "if packet_number > space.expected_packet_number:",
    ):
        assert step in source, step


def test_the_short_ways_events_are_made_as_the_dataclass_makes_them() -> None:
    """A ``StreamDataReceived`` of the short way (data with a FIN) is made field by
    field: the dataclass's fields in its order and its values, equal to aioquic's."""
    client, server = _pair()
    assert server._receive_one_rtt(one_rtt(client, stream(0, 0, b"ask", fin=True)), ADDR, 1.0)
    (event,) = server._events
    assert type(event) is StreamDataReceived
    assert list(vars(event)) == [f.name for f in dataclasses.fields(StreamDataReceived)]
    assert event == StreamDataReceived(data=b"ask", end_stream=True, stream_id=0)
    assert event.end_stream is True
