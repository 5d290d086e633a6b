"""Streams opened without aioquic's general lookups: our next bidirectional stream as a
write opens it (``LibP2PQuic._open_next_stream``) and the peer's next one as its first
STREAM frame opens it (``quic_receive``), each against aioquic's own way of opening
(``_get_or_create_stream_for_send``, ``_get_or_create_stream``): the same streams,
limits, queues and blocked lists; a peer beyond the limit gets aioquic's error."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aioquic.quic.connection import QuicConnection as AioquicConnection
from aioquic.quic.packet import QuicErrorCode
from aioquic.quic.stream import QuicStream

from aiop2p._aio.quic_adapter import LibP2PQuic
from aiop2p._aio.quic_receive import new_bidi_stream

from .quic_memory import ADDR, connected_pair, one_rtt, varints

MAX_STREAMS = 3


def _distinct_limits(machine: LibP2PQuic) -> None:
    """Stream credit limits all different, so that a stream opened with the wrong one
    shows (the configuration sets one value for all)."""
    machine._local_max_stream_data_bidi_local = 5001
    machine._local_max_stream_data_bidi_remote = 5002
    machine._remote_max_stream_data_bidi_local = 5003
    machine._remote_max_stream_data_bidi_remote = 5004


def _streams(machine: LibP2PQuic) -> dict[str, Any]:
    return {
        "streams": {
            sid: (
                s.stream_id,
                s.max_stream_data_local,
                s.max_stream_data_local_sent,
                s.max_stream_data_remote,
                s.is_blocked,
                s.receiver.is_finished,
                s.sender.is_finished,
                s.receiver._stream_id,
                s.sender._stream_id,
            )
            for sid, s in machine._streams.items()
        },
        "queue": [s.stream_id for s in machine._streams_queue],
        "blocked": [s.stream_id for s in machine._streams_blocked_bidi],
        "next": machine._local_next_stream_id_bidi,
        "used": machine._local_max_streams_bidi.used,
        "close": None if machine._close_event is None else machine._close_event.error_code,
    }


def _opened(ours: bool, ids: list[int]) -> dict[str, Any]:
    """A client writing to ``ids`` (ours: through LibP2PQuic.write, else aioquic's own
    send_stream_data), the server allowing MAX_STREAMS."""
    client, _ = connected_pair(max_streams=MAX_STREAMS)
    _distinct_limits(client)
    refused = []
    for sid in ids:
        try:
            if ours:
                client.write(sid, b"x")
            else:
                AioquicConnection.send_stream_data(client, sid, b"x")
        except ValueError as exc:
            refused.append((sid, str(exc)))
    return {**_streams(client), "refused": refused}


@pytest.mark.parametrize(
    "ids",
    [
        [0],
        [0, 4, 8, 12, 16],  # beyond the peer's limit: blocked
        [4, 0],  # not the next: aioquic's, which opens no lower one (nor writes it)
        [0, 0, 4],
    ],
)
def test_our_streams_open_as_through_aioquic(ids: list[int]) -> None:
    ours = _opened(True, ids)
    assert ours == _opened(False, ids)
    assert len(ours["refused"]) == (ids == [4, 0])


def test_a_stream_of_the_peer_we_may_not_write_is_refused_as_by_aioquic() -> None:
    client, _ = connected_pair()
    with pytest.raises(ValueError, match="unknown peer-initiated"):
        client.write(1, b"x")


def _received(short: bool, ids: list[int]) -> dict[str, Any]:
    """A server getting one STREAM frame per id, each in a packet of its own."""
    client, server = connected_pair(max_streams=MAX_STREAMS)
    _distinct_limits(server)
    for step, sid in enumerate(ids):
        data = one_rtt(client, varints(0x0A, sid, 1) + b"y")
        if short:
            assert server._receive_one_rtt(data, ADDR, now=1.0 + step * 0.001)
        else:
            AioquicConnection.receive_datagram(server, data, ADDR, now=1.0 + step * 0.001)
    while server.next_event() is not None:
        pass
    return _streams(server)


@pytest.mark.parametrize(
    "ids",
    [
        [0],
        [0, 4, 8],
        [8, 0],  # the lower ones opened with it: aioquic's
        [0, 4, 8, 12],  # one beyond the limit: a misbehaving peer
        [4 * MAX_STREAMS],
    ],
)
def test_the_peers_streams_open_as_through_aioquic(ids: list[int]) -> None:
    short, aioquic = _received(True, ids), _received(False, ids)
    assert short == aioquic
    assert short["used"] == min(max(ids) // 4 + 1, MAX_STREAMS) or short["close"] is not None
    if max(ids) // 4 >= MAX_STREAMS:
        assert short["close"] == QuicErrorCode.STREAM_LIMIT_ERROR


def test_aioquics_debug_log_of_a_peers_stream_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="quic"):
        _received(True, [0])
    assert any("Stream 0 created by peer" in r.getMessage() for r in caplog.records)


def _layout(obj: Any) -> list[tuple[str, Any]]:
    """An object's attributes in the order they were set, each nested object's (the
    receiver, the sender, their range sets) as its own layout."""
    return [
        (name, _layout(value) if hasattr(value, "__dict__") else value)
        for name, value in vars(obj).items()
    ]


def test_a_new_stream_is_made_as_aioquics_constructors_make_it() -> None:
    """``new_bidi_stream`` sets the attributes aioquic's ``QuicStream``, its receiver,
    sender and range sets set, to the same values and in the same order (the order
    keeps their instances' shared-key layout); an aioquic upgrade that adds, drops or
    reorders one fails here."""
    ours = new_bidi_stream(4, 5001, 5002)
    theirs = QuicStream(stream_id=4, max_stream_data_local=5001, max_stream_data_remote=5002)
    assert _layout(ours) == _layout(theirs)
    assert type(ours) is QuicStream
    assert type(ours.receiver) is type(theirs.receiver)
    assert type(ours.sender) is type(theirs.sender)
    # Nothing shared between two streams (each has its own buffers and range sets).
    other = new_bidi_stream(8, 1, 2)
    assert other.sender._pending is not ours.sender._pending
    ranges = "_RangeSet__ranges"
    assert getattr(other.sender._pending, ranges) is not getattr(ours.sender._pending, ranges)
    assert other.receiver._buffer is not ours.receiver._buffer


def test_the_aioquic_internals_opening_needs() -> None:
    """Fails loudly if an aioquic upgrade moves what opening a stream here touches."""
    for machine in connected_pair():
        for name in (
            "_local_next_stream_id_bidi",
            "_local_max_stream_data_bidi_local",
            "_local_max_stream_data_bidi_remote",
            "_remote_max_stream_data_bidi_local",
            "_remote_max_stream_data_bidi_remote",
            "_remote_max_streams_bidi",
        ):
            assert isinstance(getattr(machine, name), int), name
        assert isinstance(machine._streams_blocked_bidi, list)
        assert isinstance(machine._streams_queue, list)
        assert isinstance(machine._logger.logger, logging.Logger)
        limit = machine._local_max_streams_bidi
        assert isinstance(limit.used, int) and isinstance(limit.value, int)
