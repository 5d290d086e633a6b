"""Socket-free tests of the sans-IO Yamux session: two machines joined by ``transfer``."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiop2p.errors import (
    ConnectionClosedError,
    ConnectionLostError,
    FlowControlError,
    InvalidArgumentError,
    InvalidStateError,
    LimitExceededError,
    LocalProtocolError,
    MessageTooLargeError,
    RemoteProtocolError,
    StreamClosedError,
    StreamResetError,
)
from aiop2p.protocols import yamux
from aiop2p.protocols.role import Role
from aiop2p.protocols.yamux import (
    FLAG_ACK,
    FLAG_FIN,
    FLAG_RST,
    FLAG_SYN,
    INITIAL_WINDOW_SIZE,
    TYPE_DATA,
    TYPE_GO_AWAY,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    YAMUX_PROTOCOL_ID,
    FrameHeader,
    GoAwayReceived,
    PongReceived,
    SessionTerminated,
    StreamDataReceived,
    StreamEnded,
    StreamId,
    StreamOpened,
    StreamReset,
    StreamWindowUpdated,
    YamuxConfig,
    YamuxEvent,
    YamuxSession,
    decode_frame_header,
    encode_frame_header,
)

from ._pair import transfer

KIB = 1024
MIB = 1024 * 1024
_BUDGET = YamuxConfig().max_session_receive_bytes
FIRST_RAISE = (_BUDGET - INITIAL_WINDOW_SIZE) // 4
"""What the default config raises a session's first stream by (a quarter of the free budget)."""
SECOND_RAISE = (_BUDGET - INITIAL_WINDOW_SIZE - FIRST_RAISE - INITIAL_WINDOW_SIZE) // 4
GO_AWAY_PROTOCOL_ERROR = struct.pack(">BBHII", 0, TYPE_GO_AWAY, 0, 0, 1)


def frame(ftype: int, flags: int, sid: int, length: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BBHII", 0, ftype, flags, sid, length) + payload


def data_frame(sid: int, payload: bytes, flags: int = 0) -> bytes:
    return frame(TYPE_DATA, flags, sid, len(payload), payload)


def parse_frames(data: bytes) -> list[tuple[int, int, int, int, bytes]]:
    """Split bytes into (type, flags, sid, length, payload) tuples."""
    frames = []
    pos = 0
    while pos < len(data):
        version, ftype, flags, sid, length = struct.unpack_from(">BBHII", data, pos)
        assert version == 0
        pos += 12
        payload = b""
        if ftype == TYPE_DATA:
            payload = data[pos : pos + length]
            pos += length
        frames.append((ftype, flags, sid, length, payload))
    return frames


def pair(
    client_config: YamuxConfig | None = None, server_config: YamuxConfig | None = None
) -> tuple[YamuxSession, YamuxSession]:
    client = YamuxSession(role=Role.INITIATOR, config=client_config or YamuxConfig())
    server = YamuxSession(role=Role.RESPONDER, config=server_config or YamuxConfig())
    return client, server


def collect(events: list[YamuxEvent], sid: int) -> bytes:
    return b"".join(
        e.data for e in events if isinstance(e, StreamDataReceived) and e.stream_id == sid
    )


def open_pair() -> tuple[YamuxSession, YamuxSession, StreamId]:
    client, server = pair()
    sid = client.open_stream()
    assert transfer(client, server) == [StreamOpened(sid)]
    assert transfer(server, client) == []  # the ACK: no writer can be waiting yet
    return client, server, sid


# -- header codec ---------------------------------------------------------------------------


def test_protocol_id() -> None:
    assert YAMUX_PROTOCOL_ID == "/yamux/1.0.0"


def test_header_known_bytes() -> None:
    assert encode_frame_header(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0x3C0000) == bytes.fromhex(
        "00 01 0001 00000001 003c0000"
    )
    assert decode_frame_header(bytes.fromhex("00 02 0002 00000000 0000002a")) == FrameHeader(
        0, TYPE_PING, FLAG_ACK, 0, 42
    )


def test_header_codec_errors() -> None:
    with pytest.raises(InvalidArgumentError):
        encode_frame_header(0, 0x10000, 1, 0)
    with pytest.raises(InvalidArgumentError):
        decode_frame_header(b"\x00" * 11)


@given(
    ftype=st.integers(0, 255),
    flags=st.integers(0, 0xFFFF),
    sid=st.integers(0, 2**32 - 1),
    length=st.integers(0, 2**32 - 1),
    prefix=st.binary(max_size=5),
)
def test_header_round_trip(ftype: int, flags: int, sid: int, length: int, prefix: bytes) -> None:
    encoded = encode_frame_header(ftype, flags, sid, length)
    assert len(encoded) == yamux.HEADER_SIZE
    assert decode_frame_header(prefix + encoded, len(prefix)) == (0, ftype, flags, sid, length)


# -- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"receive_window_bytes": INITIAL_WINDOW_SIZE - 1},
        {"receive_window_bytes": 2**32},
        {"max_streams": 0},
        {"max_frame_bytes": 0},
        {"max_ack_backlog": 0},
        {"max_session_receive_bytes": 0},
        {"max_inbound_frame_bytes": 0},
    ],
)
def test_config_validation(kwargs: dict[str, int]) -> None:
    with pytest.raises(InvalidArgumentError):
        YamuxConfig(**kwargs)


# -- opening, data, closing -----------------------------------------------------------------


def test_open_raises_window_and_accept_acks() -> None:
    client, server = pair()
    assert client.role is Role.INITIATOR and server.role is Role.RESPONDER
    sid = client.open_stream()
    assert sid == 1
    assert client.open_stream() == 3
    out = client.data_to_send()
    assert parse_frames(out) == [
        (TYPE_WINDOW_UPDATE, FLAG_SYN, 1, FIRST_RAISE, b""),
        (TYPE_WINDOW_UPDATE, FLAG_SYN, 3, SECOND_RAISE, b""),
    ]
    assert client.ack_backlog == 2
    server.receive_data(out)
    assert server.events_received() == [StreamOpened(StreamId(1)), StreamOpened(StreamId(3))]
    reply = server.data_to_send()
    assert parse_frames(reply) == [
        (TYPE_WINDOW_UPDATE, FLAG_ACK, 1, FIRST_RAISE, b""),
        (TYPE_WINDOW_UPDATE, FLAG_ACK, 3, SECOND_RAISE, b""),
    ]
    client.receive_data(reply)
    assert client.events_received() == []  # no writer waits on a window that was not empty
    assert client.ack_backlog == 0
    assert client.send_window(sid) == INITIAL_WINDOW_SIZE + FIRST_RAISE
    assert server.open_stream() == 2
    assert server.stream_ids == {1, 2, 3}
    assert server.open_stream_count == 3


def test_no_raise_with_minimal_window() -> None:
    config = YamuxConfig(receive_window_bytes=INITIAL_WINDOW_SIZE)
    client, _server = pair(config, config)
    client.open_stream()
    assert parse_frames(client.data_to_send()) == [(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0, b"")]


def test_data_both_ways_fin_and_forget() -> None:
    client, server, sid = open_pair()
    assert client.send_data(sid, b"hello") == 5
    assert client.send_data(sid, memoryview(b"world")) == 5
    events = transfer(client, server)
    assert collect(events, sid) == b"helloworld"
    assert server.buffered_bytes == 10
    assert server.send_data(sid, b"back") == 4
    server.close_stream(sid)
    server.close_stream(sid)  # idempotent
    assert transfer(server, client) == [
        StreamDataReceived(sid, b"back"),
        StreamEnded(sid),
    ]
    with pytest.raises(StreamClosedError):
        server.send_data(sid, b"x")
    assert client.send_data(sid, b"more") == 4  # the other direction is still open
    client.close_stream(sid)
    assert client.open_stream_count == 0  # FIN both ways: forgotten
    assert transfer(client, server) == [StreamDataReceived(sid, b"more"), StreamEnded(sid)]
    assert server.open_stream_count == 0
    assert server.buffered_bytes == 0
    server.acknowledge_received_data(sid, 14)  # forgotten stream: ignored
    with pytest.raises(StreamClosedError):
        client.send_data(sid, b"late")
    client.close_stream(sid)
    client.reset_stream(sid)
    assert client.data_to_send() == b""


def test_syn_on_data_frame_with_fin() -> None:
    _client, server = pair()
    server.receive_data(data_frame(1, b"request", FLAG_SYN | FLAG_FIN))
    assert server.events_received() == [
        StreamOpened(StreamId(1)),
        StreamDataReceived(StreamId(1), b"request"),
        StreamEnded(StreamId(1)),
    ]
    assert server.send_data(StreamId(1), b"response") == 8
    server.close_stream(StreamId(1))
    assert server.open_stream_count == 0
    frames = parse_frames(server.data_to_send())
    assert frames[0] == (TYPE_WINDOW_UPDATE, FLAG_ACK, 1, FIRST_RAISE, b"")
    assert frames[1][4] == b"response"
    assert frames[2] == (TYPE_DATA, FLAG_FIN, 1, 0, b"")


def test_fin_on_window_update_and_duplicate_fin() -> None:
    client, _server, sid = open_pair()
    client.receive_data(frame(TYPE_WINDOW_UPDATE, FLAG_FIN, sid, 0))
    client.receive_data(frame(TYPE_WINDOW_UPDATE, FLAG_FIN, sid, 0))
    client.receive_data(data_frame(sid, b"", FLAG_FIN))
    assert client.events_received() == [StreamEnded(sid)]
    assert client.send_data(sid, b"still writable") == 14
    window = client.send_window(sid)
    assert client.send_data(sid, bytes(window + 1)) == window
    client.receive_data(frame(TYPE_WINDOW_UPDATE, 0, sid, 10))
    assert client.events_received() == [StreamWindowUpdated(sid)]


def test_reset_both_sides() -> None:
    client, server, sid = open_pair()
    client.send_data(sid, b"abc")
    transfer(client, server)
    client.reset_stream(sid)
    client.reset_stream(sid)  # idempotent
    assert client.open_stream_count == 0
    assert parse_frames(client.data_to_send()) == [(TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0, b"")]
    with pytest.raises(StreamClosedError):
        client.send_data(sid, b"x")
    client.receive_data(frame(TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0))
    assert client.events_received() == []

    client2, server2, sid2 = open_pair()
    transfer(client2, server2)
    client2.reset_stream(sid2)
    assert transfer(client2, server2) == [StreamReset(sid2)]
    with pytest.raises(StreamResetError):
        server2.send_data(sid2, b"x")
    with pytest.raises(StreamResetError):
        server2.send_window(sid2)
    server2.close_stream(sid2)  # no-op
    assert server2.data_to_send() == b""


def test_rst_on_data_frame_discards_payload() -> None:
    _client, server, sid = open_pair()
    server.receive_data(data_frame(sid, b"ignored", FLAG_RST) + data_frame(sid, b"too"))
    assert server.events_received() == [StreamReset(sid)]
    assert not server.is_terminated


def test_data_after_peer_fin_resets_stream() -> None:
    _client, server, sid = open_pair()
    server.receive_data(data_frame(sid, b"", FLAG_FIN))
    server.events_received()
    server.receive_data(data_frame(sid, b"oops") + frame(TYPE_PING, FLAG_SYN, 0, 1))
    (event,) = server.events_received()
    assert isinstance(event, StreamReset) and event.stream_id == sid
    assert isinstance(event.error, RemoteProtocolError)
    assert parse_frames(server.data_to_send()) == [
        (TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0, b""),
        (TYPE_PING, FLAG_ACK, 0, 1, b""),
    ]
    assert not server.is_terminated


def test_unknown_stream_frames_ignored() -> None:
    _client, server = pair()
    server.receive_data(
        data_frame(7, b"stray")
        + frame(TYPE_WINDOW_UPDATE, FLAG_ACK, 9, 100)
        + frame(TYPE_WINDOW_UPDATE, FLAG_RST, 11, 0)
        + data_frame(13, b"", FLAG_FIN)
    )
    assert server.events_received() == []
    assert server.data_to_send() == b""
    assert not server.is_terminated


def test_payloads_and_headers_split_between_inputs_resume_where_they_stopped() -> None:
    """A payload or a header cut by the end of an input resumes at the start of the next:
    a stray stream's payload is skipped, a live stream's is delivered in pieces with its FIN
    applied after the last one, and the frames after them in the same input count."""
    _client, server, sid = open_pair()
    wire = (
        data_frame(7, b"stray payload")  # no such stream: skipped
        + data_frame(sid, b"first part, second part", FLAG_FIN)
        + frame(TYPE_PING, FLAG_SYN, 0, 5)
    )
    stray_end = 12 + len(b"stray payload")
    cuts = [
        0,
        12 + 4,  # inside the stray payload
        stray_end + 5,  # inside the live frame's header
        stray_end + 12 + len(b"first part, "),  # inside its payload
        len(wire) - 3,  # inside the ping's header
        len(wire),
    ]
    events: list[YamuxEvent] = []
    for start, stop in itertools.pairwise(cuts):
        server.receive_data(wire[start:stop])
        events += server.events_received()
    assert events == [
        StreamDataReceived(sid, b"first part, "),
        StreamDataReceived(sid, b"second part"),
        StreamEnded(sid),
    ]
    assert parse_frames(server.data_to_send()) == [(TYPE_PING, FLAG_ACK, 0, 5, b"")]
    assert not server.is_terminated
    assert server.buffered_bytes == len(b"first part, second part")


def test_split_byte_by_byte() -> None:
    client, server = pair()
    sid = client.open_stream()
    client.send_data(sid, b"x" * 1000)
    client.close_stream(sid)
    client.ping(7)
    stream = client.data_to_send()
    for i in range(len(stream)):
        server.receive_data(stream[i : i + 1])
    events = server.events_received()
    assert events[0] == StreamOpened(sid)
    assert collect(events, sid) == b"x" * 1000
    assert events[-1] == StreamEnded(sid)
    assert parse_frames(server.data_to_send())[-1] == (TYPE_PING, FLAG_ACK, 0, 7, b"")


def test_large_frame_delivered_incrementally() -> None:
    client, server, sid = open_pair()
    payload = bytes(range(256)) * 4096  # 1 MiB
    assert client.send_data(sid, payload) == len(payload)
    wire = client.data_to_send()
    assert len(wire) == len(payload) + 12
    events: list[YamuxEvent] = []
    for i in range(0, len(wire), 65535):
        server.receive_data(wire[i : i + 65535])
        events += server.events_received()
    assert len(events) > 1
    assert collect(events, sid) == payload


def test_send_splits_at_max_frame_size() -> None:
    config = YamuxConfig(max_frame_bytes=1000)
    client, _server = pair(config)
    sid = client.open_stream()
    client.data_to_send()
    assert client.send_data(sid, b"a" * 2500) == 2500
    frames = parse_frames(client.data_to_send())
    assert [f[3] for f in frames] == [1000, 1000, 500]
    buf = bytearray(b"b" * 1500)
    assert client.send_data(sid, memoryview(buf)) == 1500
    buf[:] = b"c" * 1500  # the session copied mutable input
    assert [f[4] for f in parse_frames(client.data_to_send())] == [b"b" * 1000, b"b" * 500]
    assert client.send_data(sid, b"") == 0
    assert client.data_to_send() == b""


def test_small_writes_queued_together_join_one_data_frame() -> None:
    """A stream's small writes with nothing queued between them leave as one data frame
    (a proposal and the first message, an echo and the response): the peer parses one
    header and gets one event.  Anything queued between them, another stream, a flush,
    the frame size limit or the window keeps them apart, in order."""
    config = YamuxConfig(max_frame_bytes=10)
    client, server = pair(config, config)
    sid = client.open_stream()
    other = client.open_stream()
    transfer(client, server)
    transfer(server, client)
    assert client.send_data(sid, b"abc") == 3
    assert client.send_data(sid, b"de") == 2
    assert client.send_data(sid, b"fghij") == 5  # exactly the frame limit: joined
    assert client.send_data(sid, b"k") == 1  # above it: a new frame
    assert client.send_data(other, b"xy") == 2  # another stream: a new frame
    assert client.send_data(sid, b"lm") == 2  # not joined across the other stream's frame
    client.ping(1)
    assert client.send_data(sid, b"n") == 1  # nor across a ping
    sent = client.data_to_send()
    assert client.send_data(sid, b"o") == 1  # nor across a flush
    client.close_stream(sid)
    assert client.send_data(other, b"z") == 1  # nor across a FIN
    frames = parse_frames(sent) + parse_frames(client.data_to_send())
    assert [(f[0], f[1], f[2], f[4]) for f in frames] == [
        (TYPE_DATA, 0, sid, b"abcdefghij"),
        (TYPE_DATA, 0, sid, b"k"),
        (TYPE_DATA, 0, other, b"xy"),
        (TYPE_DATA, 0, sid, b"lm"),
        (TYPE_PING, FLAG_SYN, 0, b""),
        (TYPE_DATA, 0, sid, b"n"),
        (TYPE_DATA, 0, sid, b"o"),
        (TYPE_DATA, FLAG_FIN, sid, b""),
        (TYPE_DATA, 0, other, b"z"),
    ]
    assert client.send_window(sid) == INITIAL_WINDOW_SIZE + FIRST_RAISE - 15
    server.receive_data(sent)
    events = server.events_received()
    assert events[0] == StreamDataReceived(sid, b"abcdefghij")  # one event for the joined frame
    assert collect(events, sid) == b"abcdefghijklmn"


def test_a_joined_frame_never_exceeds_the_send_window() -> None:
    client, server = pair(server_config=YamuxConfig(receive_window_bytes=INITIAL_WINDOW_SIZE))
    sid = client.open_stream()
    transfer(client, server)
    transfer(server, client)
    assert client.send_data(sid, b"a" * (INITIAL_WINDOW_SIZE - 1)) == INITIAL_WINDOW_SIZE - 1
    assert client.send_data(sid, b"bc") == 1  # the rest of the window, as a view: not joined
    assert client.send_data(sid, b"d") == 0
    frames = parse_frames(client.data_to_send())
    assert [f[3] for f in frames] == [INITIAL_WINDOW_SIZE - 1, 1]
    server.receive_data(b"".join(frame(TYPE_DATA, 0, sid, f[3], f[4]) for f in frames))
    assert not server.is_terminated and server.receive_window(sid) == 0


def test_buffers_to_send_hands_out_the_frames_unjoined_and_uncopied() -> None:
    config = YamuxConfig(max_frame_bytes=1000)
    client, server = pair(config)
    sid = client.open_stream()
    payload = bytes(range(256)) * 10
    assert client.send_data(sid, payload) == 2560
    client.ping(7)
    pieces = client.buffers_to_send()
    assert client.buffers_to_send() == [] and client.data_to_send() == b""
    # SYN, then header + payload view per frame of at most 1000 bytes, then the ping
    assert [len(p) for p in pieces] == [12, 12, 1000, 12, 1000, 12, 560, 12]
    views = [p for p in pieces if isinstance(p, memoryview)]
    assert views and all(v.readonly and v.obj is payload for v in views)  # not copied
    server.receive_data(b"".join(pieces))
    events = server.events_received()
    assert collect(events, sid) == payload
    assert parse_frames(server.data_to_send())[-1][:2] == (TYPE_PING, FLAG_ACK)


# -- flow control ---------------------------------------------------------------------------


def test_window_exhaustion_before_and_after_raise() -> None:
    client, server = pair()
    sid = client.open_stream()
    transfer(client, server)
    # The server's ACK (with the window raise) has not arrived yet: only 256 KiB fit.
    assert client.send_window(sid) == INITIAL_WINDOW_SIZE
    assert client.send_data(sid, b"x" * MIB) == INITIAL_WINDOW_SIZE
    assert client.send_data(sid, b"x" * MIB) == 0
    assert transfer(server, client) == [StreamWindowUpdated(sid)]
    assert client.send_data(sid, b"y" * MIB) == MIB
    assert client.send_window(sid) == FIRST_RAISE - MIB
    events = transfer(client, server)
    assert collect(events, sid) == b"x" * INITIAL_WINDOW_SIZE + b"y" * MIB


def test_window_updated_only_for_a_window_that_was_empty() -> None:
    """Only a writer that found the send window empty waits for it: updates that grow a
    window with room left emit nothing, however many a peer sends."""
    client, _server, sid = open_pair()
    for _ in range(100):  # a peer flooding window updates on a stream with room
        client.receive_data(frame(TYPE_WINDOW_UPDATE, 0, sid, 1))
    assert client.events_received() == []
    window = client.send_window(sid)
    assert client.send_data(sid, bytes(window + 10)) == window  # now empty: a writer waits
    client.receive_data(frame(TYPE_WINDOW_UPDATE, 0, sid, 5) * 2)
    assert client.events_received() == [StreamWindowUpdated(sid)]  # once: then it had room
    assert client.send_data(sid, bytes(10)) == 10


def test_window_update_after_half_consumed() -> None:
    config = YamuxConfig(receive_window_bytes=INITIAL_WINDOW_SIZE)
    client, server = pair(config, config)
    sid = client.open_stream()
    transfer(client, server)
    transfer(server, client)
    assert client.send_data(sid, b"z" * MIB) == INITIAL_WINDOW_SIZE
    assert client.send_data(sid, b"z") == 0
    transfer(client, server)
    server.acknowledge_received_data(sid, 64 * KIB)
    assert server.data_to_send() == b""  # below half the window: no update yet
    server.acknowledge_received_data(sid, 64 * KIB)
    assert parse_frames(server.data_to_send()) == [(TYPE_WINDOW_UPDATE, 0, sid, 128 * KIB, b"")]
    server.receive_data(b"")
    client.receive_data(frame(TYPE_WINDOW_UPDATE, 0, sid, 128 * KIB))
    assert client.events_received() == [StreamWindowUpdated(sid)]
    assert client.send_data(sid, b"z" * MIB) == 128 * KIB
    with pytest.raises(LocalProtocolError):
        server.acknowledge_received_data(sid, 10**9)
    with pytest.raises(InvalidArgumentError):
        server.acknowledge_received_data(sid, -1)


def test_open_raise_is_a_quarter_of_the_free_budget() -> None:
    window = INITIAL_WINDOW_SIZE
    server_config = YamuxConfig(
        receive_window_bytes=4 * window, max_session_receive_bytes=17 * window
    )
    client, server = pair(server_config=server_config)
    a, b, c = client.open_stream(), client.open_stream(), client.open_stream()
    server.receive_data(client.data_to_send())
    server.events_received()
    # Free room after the first window: 16, then 12, then 8 windows; a quarter of it is
    # raised, capped at the 4-window maximum.
    assert parse_frames(server.data_to_send()) == [
        (TYPE_WINDOW_UPDATE, FLAG_ACK, a, 3 * window, b""),
        (TYPE_WINDOW_UPDATE, FLAG_ACK, b, 3 * window, b""),
        (TYPE_WINDOW_UPDATE, FLAG_ACK, c, 2 * window, b""),
    ]
    assert server.allotted_bytes == 11 * window


def test_window_grows_as_the_app_reads_until_the_budget() -> None:
    window = INITIAL_WINDOW_SIZE
    config = YamuxConfig(receive_window_bytes=16 * window, max_session_receive_bytes=9 * window)
    client, server = pair(server_config=config)
    sid = client.open_stream()  # 1 + 8 // 4 = 3 windows at open
    transfer(client, server)
    transfer(server, client)
    windows = []
    received = 0
    for _ in range(4):
        windows.append(client.send_window(sid))
        assert client.send_data(sid, b"x" * (32 * MIB)) == windows[-1]
        received += len(collect(transfer(client, server), sid))
        server.acknowledge_received_data(sid, server.buffered_bytes)
        transfer(server, client)
    # Doubling (3 -> 6), then only what the budget has left (9), then credit alone.
    assert windows == [3 * window, 6 * window, 9 * window, 9 * window]
    assert received == sum(windows)
    assert server.allotted_bytes == 9 * window


def test_over_budget_allotments_shrink_back() -> None:
    window = INITIAL_WINDOW_SIZE
    config = YamuxConfig(receive_window_bytes=16 * window, max_session_receive_bytes=9 * window)
    client, server = pair(server_config=config)
    a = client.open_stream()
    transfer(client, server)
    transfer(server, client)
    for _ in range(2):  # a grows to the whole budget: 3 -> 6 -> 9 windows
        client.send_data(a, b"a" * (32 * MIB))
        transfer(client, server)
        server.acknowledge_received_data(a, server.buffered_bytes)
        transfer(server, client)
    assert server.allotted_bytes == 9 * window
    others = [client.open_stream() for _ in range(3)]  # each owed its first window
    transfer(client, server)
    transfer(server, client)
    assert server.allotted_bytes == 12 * window
    client.send_data(a, b"a" * (32 * MIB))
    transfer(client, server)
    server.acknowledge_received_data(a, server.buffered_bytes)
    # 9 windows read, but the session is 3 over: a returns 6 and keeps a 6-window allotment.
    assert parse_frames(server.data_to_send()) == [(TYPE_WINDOW_UPDATE, 0, a, 6 * window, b"")]
    assert server.allotted_bytes == 9 * window
    for sid in others:
        client.reset_stream(sid)
    transfer(client, server)
    assert server.allotted_bytes == 6 * window


def test_allotment_returned_when_stream_ends() -> None:
    window = INITIAL_WINDOW_SIZE
    server_config = YamuxConfig(
        receive_window_bytes=4 * window, max_session_receive_bytes=13 * window
    )
    client, server = pair(server_config=server_config)
    a = client.open_stream()  # 1 + 12 // 4 = 4 windows
    transfer(client, server)
    transfer(server, client)
    assert server.allotted_bytes == 4 * window
    client.send_data(a, b"a" * window)
    client.close_stream(a)
    transfer(client, server)
    assert server.allotted_bytes == window  # only the unread bytes stay allotted
    server.acknowledge_received_data(a, window)
    assert server.allotted_bytes == 0


def test_unread_bytes_above_the_budget_reset_the_stream() -> None:
    window = INITIAL_WINDOW_SIZE
    server_config = YamuxConfig(max_session_receive_bytes=window + window // 2)
    client, server = pair(server_config=server_config)
    a, b = client.open_stream(), client.open_stream()  # 1 + 1/8 window, then 1 window
    transfer(client, server)
    transfer(server, client)
    assert client.send_data(a, b"a" * (window + window // 2)) == window + window // 8
    transfer(client, server)
    assert client.send_data(b, b"b" * window) == window  # lawful for b, too much for us
    events = transfer(client, server)
    assert collect(events, b) == b""
    (reset,) = [e for e in events if isinstance(e, StreamReset)]
    assert reset.stream_id == b and isinstance(reset.error, FlowControlError)
    assert server.buffered_bytes == window + window // 8  # a's bytes stay; b's never held
    assert parse_frames(server.data_to_send()) == [(TYPE_WINDOW_UPDATE, FLAG_RST, b, 0, b"")]
    assert not server.is_terminated


def test_ack_backlog_limit() -> None:
    client, server = pair(YamuxConfig(max_ack_backlog=2))
    client.open_stream()
    client.open_stream()
    with pytest.raises(LimitExceededError):
        client.open_stream()
    transfer(client, server)
    transfer(server, client)
    assert client.ack_backlog == 0
    client.open_stream()
    client.open_stream()
    assert client.ack_backlog == 2
    client.reset_stream(StreamId(7))  # an unacknowledged stream leaves the backlog
    assert client.ack_backlog == 1


def test_max_streams_local_and_inbound() -> None:
    client, server = pair(YamuxConfig(max_streams=2), YamuxConfig(max_streams=1))
    a = client.open_stream()
    b = client.open_stream()
    with pytest.raises(LimitExceededError):
        client.open_stream()
    assert transfer(client, server) == [StreamOpened(a)]
    assert transfer(server, client) == [StreamReset(b)]
    assert client.ack_backlog == 0
    with pytest.raises(StreamResetError):
        client.send_data(b, b"x")


def test_window_overflow_is_fatal() -> None:
    client, _server, sid = open_pair()
    client.receive_data(frame(TYPE_WINDOW_UPDATE, 0, sid, 2**32 - 1))
    (event,) = client.events_received()
    assert isinstance(event, SessionTerminated)
    assert isinstance(event.error, FlowControlError)
    assert client.data_to_send() == GO_AWAY_PROTOCOL_ERROR


# -- ping and GoAway ------------------------------------------------------------------------


def test_ping_pong() -> None:
    client, server = pair()
    client.ping(0xDEADBEEF)
    assert client.data_to_send() == frame(TYPE_PING, FLAG_SYN, 0, 0xDEADBEEF)
    client.ping(1)
    assert transfer(client, server) == []
    assert transfer(server, client) == [PongReceived(1)]
    server.receive_data(frame(TYPE_PING, 0, 0, 5))  # neither SYN nor ACK: ignored
    assert server.data_to_send() == b""
    with pytest.raises(InvalidArgumentError):
        client.ping(2**32)


def test_go_away_sent() -> None:
    client, server, sid = open_pair()
    client.go_away()
    client.go_away(2)  # sent once only
    assert client.go_away_sent == 0
    assert transfer(client, server) == [GoAwayReceived(0)]
    assert server.go_away_received == 0
    with pytest.raises(InvalidStateError):
        server.open_stream()
    with pytest.raises(InvalidStateError):
        client.open_stream()
    # Existing streams keep working.
    server.send_data(sid, b"still here")
    assert transfer(server, client) == [StreamDataReceived(sid, b"still here")]
    # A SYN after our GoAway is refused.
    client.receive_data(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 2, 0))
    assert client.events_received() == []
    assert parse_frames(client.data_to_send()) == [(TYPE_WINDOW_UPDATE, FLAG_RST, 2, 0, b"")]
    server.receive_eof()
    assert server.events_received() == [SessionTerminated(None)]
    client.receive_eof()
    assert client.events_received() == [SessionTerminated(None)]
    with pytest.raises(InvalidArgumentError):
        client.go_away(-1)


def test_go_away_with_error_terminates() -> None:
    client, _server = pair()
    client.open_stream()
    client.receive_data(frame(TYPE_GO_AWAY, 0, 0, 2) + frame(TYPE_PING, FLAG_SYN, 0, 1))
    events = client.events_received()
    assert events[0] == GoAwayReceived(2)
    assert isinstance(events[1], SessionTerminated)
    assert isinstance(events[1].error, ConnectionClosedError)
    assert len(events) == 2
    assert client.is_terminated and client.open_stream_count == 0
    assert client.data_to_send() == frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, FIRST_RAISE)
    client.go_away()  # no-op after termination
    assert client.data_to_send() == b""


# -- EOF ------------------------------------------------------------------------------------


def test_eof_without_go_away_is_unclean() -> None:
    client, _server = pair()
    client.receive_eof()
    client.receive_eof()
    (event,) = client.events_received()
    assert isinstance(event, SessionTerminated)
    assert type(event.error) is ConnectionClosedError
    with pytest.raises(InvalidStateError):
        client.open_stream()
    with pytest.raises(InvalidStateError):
        client.ping(1)
    with pytest.raises(InvalidStateError):
        client.send_data(StreamId(1), b"x")
    client.receive_data(frame(TYPE_PING, FLAG_SYN, 0, 1))
    assert client.data_to_send() == b"" and client.events_received() == []


@pytest.mark.parametrize(
    "partial", [b"\x00\x00", frame(TYPE_DATA, FLAG_SYN, 2, 10, b"abc")], ids=["header", "payload"]
)
def test_eof_inside_frame_is_lost_connection(partial: bytes) -> None:
    client, _server = pair()
    client.receive_data(frame(TYPE_GO_AWAY, 0, 0, 0) + partial)
    client.events_received()
    client.receive_eof()
    (event,) = client.events_received()
    assert isinstance(event, SessionTerminated)
    assert isinstance(event.error, ConnectionLostError)


# -- protocol violations --------------------------------------------------------------------


def _established_server() -> YamuxSession:
    server = YamuxSession(role=Role.RESPONDER)
    server.receive_data(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
    server.events_received()
    server.data_to_send()
    return server


VIOLATIONS = {
    "bad version": (b"\x01" + frame(TYPE_PING, FLAG_SYN, 0, 1)[1:], RemoteProtocolError),
    "unknown type": (frame(4, 0, 0, 0), RemoteProtocolError),
    "SYN on open id": (frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0), RemoteProtocolError),
    "SYN wrong parity": (frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 2, 0), RemoteProtocolError),
    "SYN on id 0": (frame(TYPE_DATA, FLAG_SYN, 0, 0), RemoteProtocolError),
    "frame too large": (frame(TYPE_DATA, 0, 1, 2**32 - 1), MessageTooLargeError),
    "SYN frame too large": (frame(TYPE_DATA, FLAG_SYN, 3, 16 * MIB + 1), MessageTooLargeError),
    "window overflow": (
        frame(TYPE_WINDOW_UPDATE, 0, 1, 2**32 - INITIAL_WINDOW_SIZE),
        FlowControlError,
    ),
}


@pytest.mark.parametrize("violation", list(VIOLATIONS), ids=list(VIOLATIONS))
def test_protocol_violation(violation: str) -> None:
    wire, error_type = VIOLATIONS[violation]
    server = _established_server()
    server.receive_data(wire + frame(TYPE_PING, FLAG_SYN, 0, 9))
    events = server.events_received()
    assert len(events) == 1
    assert isinstance(events[0], SessionTerminated)
    assert isinstance(events[0].error, error_type)
    assert server.data_to_send() == GO_AWAY_PROTOCOL_ERROR
    assert server.is_terminated and server.open_stream_count == 0
    server.receive_data(frame(TYPE_PING, FLAG_SYN, 0, 9))
    server.receive_eof()
    assert server.events_received() == [] and server.data_to_send() == b""


def test_flow_control_violations_below_frame_limit() -> None:
    config = YamuxConfig(receive_window_bytes=INITIAL_WINDOW_SIZE)
    for wire in (
        frame(TYPE_DATA, FLAG_SYN, 1, INITIAL_WINDOW_SIZE + 1),
        frame(TYPE_DATA, 0, 5, INITIAL_WINDOW_SIZE + 1),
    ):
        server = YamuxSession(role=Role.RESPONDER, config=config)
        server.receive_data(wire)
        events = server.events_received()
        assert isinstance(events[-1], SessionTerminated)
        assert isinstance(events[-1].error, FlowControlError)
        assert server.data_to_send().endswith(GO_AWAY_PROTOCOL_ERROR)


def test_cumulative_window_violation() -> None:
    config = YamuxConfig(receive_window_bytes=INITIAL_WINDOW_SIZE)
    server = YamuxSession(role=Role.RESPONDER, config=config)
    half = b"h" * (INITIAL_WINDOW_SIZE // 2)
    server.receive_data(data_frame(1, half, FLAG_SYN) + data_frame(1, half))
    assert not server.is_terminated
    server.receive_data(data_frame(1, b"!"))
    assert server.is_terminated
    error = server.events_received()[-1]
    assert isinstance(error, SessionTerminated) and isinstance(error.error, FlowControlError)


# -- per-stream state table: every (state, input) pair ----------------------------------------


def _stream_in(state: str) -> tuple[YamuxSession, YamuxSession, StreamId]:
    client, server, sid = open_pair()
    if state == "local_closed":
        client.close_stream(sid)
        transfer(client, server)
    elif state == "remote_closed":
        server.close_stream(sid)
        transfer(server, client)
    return client, server, sid


@pytest.mark.parametrize("state", ["open", "local_closed", "remote_closed"])
@pytest.mark.parametrize("action", ["send_data", "send_fin", "recv_data", "recv_fin"])
def test_state_table(state: str, action: str) -> None:
    client, server, sid = _stream_in(state)
    expect_open = {"open": True, "local_closed": False, "remote_closed": True}[state]
    if action == "send_data":
        if state == "local_closed":
            with pytest.raises(StreamClosedError):
                client.send_data(sid, b"x")
        else:
            assert client.send_data(sid, b"x") == 1
            assert sid in client.stream_ids
    elif action == "send_fin":
        client.close_stream(sid)
        assert (sid in client.stream_ids) == (state != "remote_closed")
    elif action == "recv_data":
        if state == "remote_closed":
            wire = data_frame(sid, b"x")  # the peer writes after its own FIN
        else:
            server.send_data(sid, b"x")
            wire = server.data_to_send()
        client.receive_data(wire)
        events = client.events_received()
        if state == "remote_closed":
            (reset,) = events
            assert type(reset) is StreamReset and reset.stream_id == sid
            assert isinstance(reset.error, RemoteProtocolError)
            assert sid not in client.stream_ids
        else:
            assert events == [StreamDataReceived(sid, b"x")]
    else:
        client.receive_data(data_frame(sid, b"", FLAG_FIN))
        events = client.events_received()
        assert events == ([] if state == "remote_closed" else [StreamEnded(sid)])
        assert (sid in client.stream_ids) == expect_open
    assert not client.is_terminated


# -- hypothesis: arbitrary input never raises -----------------------------------------------

header_frames = st.builds(
    lambda ftype, flags, sid, length, payload: frame(ftype, flags, sid, length) + payload,
    st.sampled_from([0, 0, 1, 1, 2, 3, 4]),
    st.integers(0, 15) | st.integers(0, 0xFFFF),
    st.integers(0, 8) | st.integers(0, 2**32 - 1),
    st.integers(0, 300) | st.integers(0, 2**32 - 1),
    st.binary(max_size=300),
)


@settings(max_examples=300)
@given(
    role=st.sampled_from(Role),
    chunks=st.lists(header_frames | st.binary(max_size=40), max_size=12),
    eof=st.booleans(),
)
def test_arbitrary_input_never_raises(role: Role, chunks: list[bytes], eof: bool) -> None:
    config = YamuxConfig(receive_window_bytes=INITIAL_WINDOW_SIZE, max_streams=3)
    session = YamuxSession(role=role, config=config)
    session.open_stream()
    events: list[YamuxEvent] = []
    unacked: dict[int, int] = {}
    for chunk in chunks:
        session.receive_data(chunk)
        new = session.events_received()
        events += new
        for event in new:
            if isinstance(event, StreamOpened):
                unacked[event.stream_id] = 0
            elif isinstance(event, StreamDataReceived):
                unacked[event.stream_id] = unacked.get(event.stream_id, 0) + len(event.data)
            elif isinstance(event, StreamReset):
                unacked.pop(event.stream_id, None)
        for sid in session.stream_ids:
            session.acknowledge_received_data(sid, unacked.pop(sid, 0))
        session.data_to_send()
    if eof:
        session.receive_eof()
    events += session.events_received()
    terminal = [i for i, e in enumerate(events) if isinstance(e, SessionTerminated)]
    assert len(terminal) <= 1
    if terminal:
        assert terminal[0] == len(events) - 1
        assert session.is_terminated
    assert session.buffered_bytes >= 0
    assert session.open_stream_count <= 3


# -- hypothesis: random interleavings keep every stream's bytes in order ----------------------


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_interleaving_preserves_stream_data(data: st.DataObject) -> None:
    config = YamuxConfig(receive_window_bytes=INITIAL_WINDOW_SIZE, max_frame_bytes=50_000)
    sessions = (
        YamuxSession(role=Role.INITIATOR, config=config),
        YamuxSession(role=Role.RESPONDER, config=config),
    )
    sent: list[dict[int, bytearray]] = [{}, {}]  # per side: what it queued on each stream
    received: list[dict[int, bytearray]] = [{}, {}]
    unacked: list[dict[int, int]] = [{}, {}]
    closed: list[set[int]] = [set(), set()]
    ended: list[set[int]] = [set(), set()]
    pending: list[bytes] = [b"", b""]  # bytes in flight towards side i
    counter = 0

    def absorb(side: int) -> None:
        for event in sessions[side].events_received():
            assert not isinstance(event, (SessionTerminated, StreamReset))
            if isinstance(event, StreamOpened):
                sent[side].setdefault(event.stream_id, bytearray())
            elif isinstance(event, StreamDataReceived):
                assert event.stream_id not in ended[side]
                received[side].setdefault(event.stream_id, bytearray()).extend(event.data)
                unacked[side][event.stream_id] = unacked[side].get(event.stream_id, 0) + len(
                    event.data
                )
            elif isinstance(event, StreamEnded):
                ended[side].add(event.stream_id)

    def deliver(side: int, amount: int | None) -> None:
        take = len(pending[side]) if amount is None else min(amount, len(pending[side]))
        chunk, pending[side] = pending[side][:take], pending[side][take:]
        sessions[side].receive_data(chunk)
        absorb(side)

    def acknowledge(side: int) -> None:
        for sid, size in list(unacked[side].items()):
            sessions[side].acknowledge_received_data(StreamId(sid), size)
            unacked[side][sid] = 0

    steps = data.draw(st.integers(1, 60))
    for _ in range(steps):
        side = data.draw(st.integers(0, 1))
        session = sessions[side]
        op = data.draw(st.sampled_from(["open", "send", "send", "close", "deliver", "ack"]))
        writable = [s for s in sent[side] if s not in closed[side] and s in session.stream_ids]
        if op == "open" and session.open_stream_count < 10:
            sent[side][session.open_stream()] = bytearray()
        elif op == "send" and writable:
            target = data.draw(st.sampled_from(writable))
            size = data.draw(st.integers(1, 200_000))
            counter += 1
            chunk = bytes([counter % 256]) * size
            count = session.send_data(StreamId(target), chunk)
            assert 0 <= count <= size
            sent[side][target].extend(chunk[:count])
        elif op == "close" and writable:
            target = data.draw(st.sampled_from(writable))
            session.close_stream(StreamId(target))
            closed[side].add(target)
        elif op == "deliver":
            pending[side] += sessions[1 - side].data_to_send()
            deliver(side, data.draw(st.none() | st.integers(0, 70_000)))
        elif op == "ack":
            acknowledge(side)
    # Drain: deliver everything queued (window updates included) until both sides are quiet.
    for _ in range(100):
        pending[1] += sessions[0].data_to_send()
        pending[0] += sessions[1].data_to_send()
        if not (pending[0] or pending[1]):
            break
        deliver(0, None)
        deliver(1, None)
        acknowledge(0)
        acknowledge(1)
    else:
        raise AssertionError("the sessions never went quiet")
    for side in (0, 1):
        for target, queued in sent[side].items():
            assert received[1 - side].get(target, bytearray()) == queued  # all, in order
            if target in closed[side]:
                assert target in ended[1 - side]


# -- odds and ends --------------------------------------------------------------------------


def test_queries_and_buffer_inputs() -> None:
    config = YamuxConfig(max_streams=7)
    client, server = pair(config)
    assert client.config is config
    sid = client.open_stream()
    server.receive_data(bytearray(client.data_to_send()))  # any bytes-like input is accepted
    assert server.events_received() == [StreamOpened(sid)]


def test_stream_ids_exhausted() -> None:
    client, _server = pair()
    client._next_id = 2**32 + 1  # as if 2**31 streams had been opened
    with pytest.raises(LimitExceededError):
        client.open_stream()


def test_remote_reset_memory_is_bounded() -> None:
    client, server = pair(YamuxConfig(max_streams=1))
    first = client.open_stream()
    transfer(client, server)
    server.reset_stream(first)
    transfer(server, client)
    second = client.open_stream()
    transfer(client, server)
    server.reset_stream(second)
    assert transfer(server, client) == [StreamReset(second)]
    with pytest.raises(StreamResetError):
        client.send_data(second, b"x")
    with pytest.raises(StreamClosedError) as info:
        client.send_data(first, b"x")  # forgotten: only the newest reset is remembered
    assert not isinstance(info.value, StreamResetError)
