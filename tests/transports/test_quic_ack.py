"""The short way for one-range ACK frames (``quic_ack``) against aioquic's own handler:
two in-memory server machines send the same 1-RTT packets and get the same ACK frames,
written by hand as a peer (or a misbehaving one) would, one through the short way of
``quic_receive``, the other through aioquic's ``receive_datagram``; they must end with
the same loss-recovery, congestion, stream and connection state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aioquic import tls
from aioquic.quic.connection import QuicConnection as AioquicConnection
from aioquic.quic.packet import QuicErrorCode

from aiop2p._aio.quic_adapter import LibP2PQuic

from .quic_memory import ADDR, connected_pair, one_rtt, varints

SERVER_STREAM = 1  # the server's first bidirectional stream
SENT_AT = 1.0
ACK_STEP = 0.03  # between ACKs (30 ms: each one an RTT sample of its own)


def ack(largest: int, first_range: int = 0, delay: int = 0, *more: int) -> bytes:
    """An ACK frame; ``more``: gap and length pairs of further ranges."""
    return varints(0x02, largest, delay, len(more) // 2, first_range, *more)


def _state(machine: LibP2PQuic) -> dict[str, Any]:
    loss = machine._loss
    cc = loss._cc
    space = machine._spaces[tls.Epoch.ONE_RTT]
    stream = machine._streams.get(SERVER_STREAM)
    close = machine._close_event
    return {
        "rtt": (
            loss._rtt_initialized,
            loss._rtt_latest,
            loss._rtt_min,
            loss._rtt_smoothed,
            loss._rtt_variance,
        ),
        "pto_count": loss._pto_count,
        "validated": loss.peer_completed_address_validation,
        "cc": (cc.congestion_window, cc.bytes_in_flight, cc.ssthresh),
        "pacer": (loss._pacer.packet_time, loss._pacer.bucket_max, loss._pacer.bucket_time),
        "sent": list(space.sent_packets),
        "largest_acked": space.largest_acked_packet,
        "eliciting_in_flight": space.ack_eliciting_in_flight,
        "loss_time": space.loss_time,
        "loss_at": loss.get_loss_detection_time(amplification_limited=False),
        "ack_queue": list(space.ack_queue),
        "sender": None
        if stream is None
        else (
            stream.sender._buffer_start,
            list(stream.sender._acked),
            list(stream.sender._pending),
            stream.sender.buffer_is_empty,
            stream.sender.is_finished,
        ),
        "state": machine._state,
        "close": None if close is None else (close.error_code, close.reason_phrase),
    }


def _count_aioquic_acks(machine: LibP2PQuic) -> list[None]:
    calls: list[None] = []
    handle = machine._handle_ack_frame

    def counting(*args: Any) -> None:
        calls.append(None)
        handle(*args)

    machine._handle_ack_frame = counting  # type: ignore[method-assign,assignment]
    return calls


Frames = Callable[[list[int]], bytes]
"""The frames of one packet to the server, given the numbers of the packets it sent."""


def _both_ways(
    acks: list[Frames], *, packets: int = 5, first_sample: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """The server sends ``packets`` packets of stream data (one every ms), then gets each
    of ``acks`` 30 ms apart; the states after each, through the short way and through
    aioquic, and how many ACK frames the short way left to aioquic's handler."""
    results = []
    handed = 0
    for short in (True, False):
        client, server = connected_pair()
        if first_sample:  # as before any RTT sample
            server._loss._rtt_initialized = False
        assert server._loss._rtt_initialized is not first_sample
        calls = _count_aioquic_acks(server)
        sent = []
        for step in range(packets):
            server.write(SERVER_STREAM, bytes([step]) * 100, end_stream=step == packets - 1)
            sent.append(server._packet_number)
            assert len(server.datagrams_to_send(now=SENT_AT + step * 0.001)) == 1
        states = []
        for step, frames in enumerate(acks):
            data = one_rtt(client, frames(sent))
            now = SENT_AT + 0.05 + step * ACK_STEP
            if short:
                assert server._receive_one_rtt(data, ADDR, now=now)
            else:
                AioquicConnection.receive_datagram(server, data, ADDR, now=now)
            states.append(_state(server))
        results.append(states)
        if short:
            handed = len(calls)
    return results[0], results[1], handed


def _ack_up_to(index: int) -> Frames:
    """An ACK of the packets sent up to ``index``."""
    return lambda sent: ack(sent[index], index)


TAKEN: dict[str, list[Frames]] = {
    "all at once": [lambda sent: ack(sent[-1], len(sent) - 1, 100)],
    "one by one, each an RTT sample": [_ack_up_to(i) for i in range(5)],
    "the newest only (older ones lost or late)": [lambda sent: ack(sent[-1])],
    "the rest after a loss": [lambda sent: ack(sent[-1]), lambda sent: ack(sent[-1], 4)],
    "the oldest only (no sample for the newest)": [lambda sent: ack(sent[0])],
    "a duplicate": [lambda sent: ack(sent[2], 2), lambda sent: ack(sent[2], 2)],
    "an ACK delay beyond max_ack_delay": [lambda sent: ack(sent[-1], 4, 1 << 20)],
    "an ACK delay above the RTT": [lambda sent: ack(sent[-1], 4, 10_000)],
    "packets never sent (a misbehaving peer)": [lambda sent: ack(sent[-1] + 50, 54)],
    "nothing sent in the range": [lambda sent: ack(sent[0] - 1)],
    "with a PING": [lambda sent: varints(0x01) + ack(sent[-1], 4)],
}

HANDED: dict[str, tuple[list[Frames], int | None]] = {
    "two ranges": ([lambda sent: ack(sent[-1], 0, 0, 1, 1)], None),
    "ACK_ECN": ([lambda sent: varints(0x03, sent[-1], 0, 0, 4, 1, 2, 3)], None),
    "a range below packet 0 (a misbehaving peer)": (
        [lambda sent: ack(3, 4)],
        QuicErrorCode.FRAME_ENCODING_ERROR,
    ),
    "cut short": ([lambda sent: varints(0x02, sent[-1], 0)], QuicErrorCode.FRAME_ENCODING_ERROR),
}


@pytest.mark.parametrize("acks", list(TAKEN.values()), ids=list(TAKEN))
def test_one_range_acks_end_as_through_aioquic(acks: list[Frames]) -> None:
    short, aioquic, handed = _both_ways(acks)
    assert short == aioquic
    assert handed == 0
    assert short[-1]["state"] is not None and short[-1]["close"] is None


@pytest.mark.parametrize("case", list(HANDED.values()), ids=list(HANDED))
def test_other_acks_go_to_aioquic(case: tuple[list[Frames], int | None]) -> None:
    acks, error = case
    short, aioquic, handed = _both_ways(acks)
    assert short == aioquic
    if error is None:
        assert handed == len(acks)
        assert short[-1]["close"] is None
    else:
        assert short[-1]["close"] is not None and short[-1]["close"][0] == error


def test_the_first_rtt_sample_is_aioquics() -> None:
    short, aioquic, handed = _both_ways([lambda sent: ack(sent[-1], 4)], first_sample=True)
    assert short == aioquic
    assert handed == 1
    assert short[-1]["rtt"][0]  # initialized by aioquic's handler


def test_a_lost_packet_is_sent_again_after_the_short_way_declares_it() -> None:
    """The newest packets acknowledged, the oldest lost by the packet threshold: its
    data is pending again, and the next flush sends it."""
    client, server = connected_pair()
    calls = _count_aioquic_acks(server)
    sent = []
    for step in range(5):
        server.write(SERVER_STREAM, bytes([step]) * 100)
        sent.append(server._packet_number)
        server.datagrams_to_send(now=SENT_AT + step * 0.001)
    assert server._receive_one_rtt(one_rtt(client, ack(sent[-1], 3)), ADDR, now=1.05)
    assert not calls
    sender = server._streams[SERVER_STREAM].sender
    assert list(sender._pending) == [range(0, 100)]  # packet sent[0]: lost, again pending
    assert list(server._spaces[tls.Epoch.ONE_RTT].sent_packets) == []
    (datagram,) = server.datagrams_to_send(now=1.06)
    assert not len(sender._pending) and datagram
