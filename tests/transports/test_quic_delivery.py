"""The lean builder's delivery handlers (``quic_ack.stream_data_delivered``,
``quic_ack.ack_delivered``) against aioquic's own (``QuicStreamSender.on_data_delivery``,
``QuicConnection._on_ack_delivery``): the same deliveries, in order, out of order,
duplicated, lost and sent again, after a reset, must leave the same state."""

from __future__ import annotations

import random
from typing import Any

import pytest
from aioquic.quic.connection import QuicConnection as AioquicConnection
from aioquic.quic.packet_builder import QuicDeliveryState
from aioquic.quic.rangeset import RangeSet
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStreamSender

from aiop2p._aio.quic_ack import ack_delivered, stream_data_delivered
from aiop2p._aio.quic_adapter import SendBuffer

ACKED, LOST = QuicDeliveryState.ACKED, QuicDeliveryState.LOST
FRAME = 100  # bytes per frame; the stream holds five and a FIN
Delivery = tuple[QuicDeliveryState, int, int, bool]


def _sent_sender(chunked: bool) -> QuicStreamSender:
    """A sender that wrote 500 bytes and its FIN and sent them all (five frames)."""
    sender = QuicStreamSender(stream_id=0, writable=True)
    if chunked:
        sender._buffer = SendBuffer()  # type: ignore[assignment]
    sender.write(bytes(range(250)) * 2, end_stream=True)
    while sender.get_frame(FRAME) is not None:
        pass
    return sender


def _frames() -> list[tuple[int, int, bool]]:
    return [(i * FRAME, (i + 1) * FRAME, i == 4) for i in range(5)]


def _state(sender: QuicStreamSender) -> tuple[Any, ...]:
    return (
        sender._buffer_start,
        bytes(sender._buffer[0 : len(sender._buffer)]),
        list(sender._acked),
        sender._acked_fin,
        list(sender._pending),
        sender._pending_eof,
        sender.buffer_is_empty,
        sender.is_finished,
    )


def _ends_alike(deliveries: list[Delivery], *, chunked: bool = False, reset: int = -1) -> None:
    ours, theirs = _sent_sender(chunked), _sent_sender(chunked)
    for index, (delivery, start, stop, fin) in enumerate(deliveries):
        if index == reset:
            ours.reset(0)
            theirs.reset(0)
        stream_data_delivered(delivery, ours, start, stop, fin)
        theirs.on_data_delivery(delivery, start, stop, fin)
        assert _state(ours) == _state(theirs), (index, deliveries)


F = _frames()
CASES: dict[str, list[Delivery]] = {
    "in order": [(ACKED, *f) for f in F],
    "reversed": [(ACKED, *f) for f in reversed(F)],
    "a gap filled later": [(ACKED, *F[0]), (ACKED, *F[2]), (ACKED, *F[1]), (ACKED, *F[3])],
    "duplicates (a peer acknowledging again)": [(ACKED, *F[0]), (ACKED, *F[0]), (ACKED, *F[1])],
    "lost, then acknowledged": [(LOST, *F[0]), (ACKED, *F[1]), (ACKED, *F[0])],
    "the FIN alone": [(ACKED, *f) for f in F[:4]] + [(ACKED, 500, 500, True)],
    "the FIN lost": [(ACKED, *f) for f in F[:4]] + [(LOST, *F[4]), (ACKED, *F[4])],
}


@pytest.mark.parametrize("chunked", [False, True], ids=["bytearray", "SendBuffer"])
@pytest.mark.parametrize("deliveries", list(CASES.values()), ids=list(CASES))
def test_stream_data_delivery_ends_as_aioquics(deliveries: list[Delivery], chunked: bool) -> None:
    _ends_alike(deliveries, chunked=chunked)


def test_stream_data_delivery_after_a_reset_is_aioquics() -> None:
    _ends_alike([(ACKED, *f) for f in F], reset=2)


@pytest.mark.parametrize("seed", range(40))
def test_stream_data_delivery_in_random_orders_is_aioquics(seed: int) -> None:
    rng = random.Random(seed)
    deliveries: list[Delivery] = [
        (rng.choice((ACKED, ACKED, LOST)), *rng.choice(F)) for _ in range(12)
    ]
    _ends_alike(deliveries, chunked=bool(seed % 2))


def _space(ranges: list[range]) -> QuicPacketSpace:
    space = QuicPacketSpace(is_application_data=True)
    space.ack_queue = RangeSet(ranges)
    return space


@pytest.mark.parametrize(
    "ranges",
    [[], [range(3, 4)], [range(0, 10)], [range(2, 5), range(7, 9)], [range(5, 6), range(8, 20)]],
)
@pytest.mark.parametrize("highest", [0, 3, 4, 6, 8, 12, 25])
@pytest.mark.parametrize("delivery", [ACKED, LOST])
def test_ack_delivery_is_aioquics(
    ranges: list[range], highest: int, delivery: QuicDeliveryState
) -> None:
    ours, theirs = _space(ranges), _space(ranges)
    ack_delivered(delivery, ours, highest)
    AioquicConnection._on_ack_delivery(None, delivery, theirs, highest)  # type: ignore[arg-type]
    assert list(ours.ack_queue) == list(theirs.ack_queue)
