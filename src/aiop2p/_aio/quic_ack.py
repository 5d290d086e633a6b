"""A short way for the usual ACK frame of an established QUIC connection.

A sequential small request costs each side one ACK frame (riding on the peer's next
packet), and aioquic's way through it (``_handle_ack_frame``: ``pull_ack_frame`` into a
``RangeSet``, then ``QuicPacketRecovery.on_ack_received`` with its loss detection and
persistent-congestion checks) came to ~46 Python calls per frame, about a tenth of all
a request costs both sides.  :func:`receive_one_range_ack` takes the frame that holds
one range (no gaps: the usual case) once an RTT sample exists, and does what
``on_ack_received`` does for it with the same state and the same calls to the
congestion controller, the pacer and the packets' delivery handlers; anything else
(more ranges, a range below packet 0, a frame cut short, the first RTT sample) is left
untouched to aioquic's handler.

What it reaches in aioquic 1.7.2 (``tests/transports/test_quic_ack.py`` compares the
result with aioquic's handler): ``_remote_ack_delay_exponent``, ``_loss``
(``peer_completed_address_validation``, ``max_ack_delay``, ``_rtt_initialized``,
``_rtt_latest``, ``_rtt_min``, ``_rtt_smoothed``, ``_rtt_variance``, ``_pto_count``,
``_cc`` with ``on_packet_acked``, ``on_rtt_measurement`` and ``congestion_window``,
the pacer's ``update_rate`` done here on ``_pacer`` (``_max_datagram_size``,
``packet_time``, ``bucket_max``, ``bucket_time``), ``_detect_loss``), and a packet
space's ``sent_packets``, ``largest_acked_packet``, ``ack_eliciting_in_flight`` and
``loss_time``.

The delivery handlers the lean builder (:mod:`.quic_send`) gives its ACK and STREAM
frames are here too (:func:`ack_delivered`, :func:`stream_data_delivered`): each packet
of a small request acknowledges one of each, which aioquic's handlers take through
range-set calls (``tests/transports/test_quic_delivery.py`` compares them).
"""

from __future__ import annotations

from typing import Any

from aioquic._buffer import Buffer, BufferReadError
from aioquic.quic.packet_builder import QuicDeliveryState
from aioquic.quic.recovery import K_MICRO_SECOND, K_SECOND

__all__ = ["ack_delivered", "receive_one_range_ack", "stream_data_delivered"]

_ACKED = QuicDeliveryState.ACKED


def stream_data_delivered(
    delivery: QuicDeliveryState, sender: Any, start: int, stop: int, fin: bool
) -> None:
    """The delivery handler of a STREAM frame the lean builder wrote: aioquic's
    ``QuicStreamSender.on_data_delivery``, whose usual case (the oldest unacknowledged
    data acknowledged, nothing acknowledged out of order before it) is done here without
    its range set (``_acked``: ``_RangeSet__ranges``, ``_buffer_start``, ``_buffer``,
    ``_buffer_fin``, ``_acked_fin``, ``_reset_error_code``, ``is_finished``)."""
    if (
        delivery is not _ACKED
        or sender._reset_error_code is not None
        or start != sender._buffer_start
        or sender._acked._RangeSet__ranges
    ):
        sender.on_data_delivery(delivery, start, stop, fin)
        return
    assert not fin or stop == sender._buffer_fin, "inconsistent fin / stop"
    if stop > start:
        sender._buffer_start = stop
        del sender._buffer[: stop - start]
    if fin:
        sender._acked_fin = True
    if sender._acked_fin and stop == sender._buffer_fin:
        sender.is_finished = True


def ack_delivered(delivery: QuicDeliveryState, space: Any, highest_acked: int) -> None:
    """The delivery handler of an ACK frame the lean builder wrote: aioquic's
    ``QuicConnection._on_ack_delivery`` (once acknowledged, the peer knows of the packets
    up to ``highest_acked``: they leave the ACK queue), the range set's ``subtract``
    done on its list (``ack_queue``, ``_RangeSet__ranges``)."""
    if delivery is not _ACKED:
        return
    ranges = space.ack_queue._RangeSet__ranges
    stop = highest_acked + 1
    while ranges and ranges[0].stop <= stop:
        del ranges[0]
    if ranges and ranges[0].start < stop:
        ranges[0] = range(stop, ranges[0].stop)


def receive_one_range_ack(quic: Any, buf: Buffer, space: Any, now: float) -> bool:
    """An ACK frame's fields from ``buf`` (after its type byte), acknowledging packets of
    ``space`` (the 1-RTT space); False, with nothing changed but ``buf``'s position,
    where aioquic's ``_handle_ack_frame`` must take the frame instead (also a frame
    cut short, whose error aioquic's handler raises)."""
    try:
        largest = buf.pull_uint_var()
        delay = buf.pull_uint_var()
        more_ranges = buf.pull_uint_var()
        first_range = buf.pull_uint_var()
    except BufferReadError:
        return False  # cut short: aioquic's handler words the error
    loss = quic._loss
    if more_ranges or first_range > largest or not loss._rtt_initialized:
        return False
    # An ACK in a 1-RTT packet: the peer validated our address (RFC 9000 8.1).
    loss.peer_completed_address_validation = True
    if largest > space.largest_acked_packet:
        space.largest_acked_packet = largest
    sent = space.sent_packets
    if not sent:
        return True  # nothing newly acknowledged
    # Sent in order, so ascending; walked from the oldest, as an ACK usually starts
    # there (no copy of a large window per frame).
    low = largest - first_range
    numbers: list[int] = []
    for number in sent:
        if number > largest:
            break
        if number >= low:
            numbers.append(number)
    if not numbers:
        return True
    cc = loss._cc
    is_ack_eliciting = False
    packet: Any = None
    for number in numbers:
        packet = sent.pop(number)
        if packet.is_ack_eliciting:
            is_ack_eliciting = True
            space.ack_eliciting_in_flight -= 1
        if packet.in_flight:
            cc.on_packet_acked(packet=packet, now=now)
        for handler, args in packet.delivery_handlers:
            handler(_ACKED, *args)
    if numbers[-1] == largest and is_ack_eliciting:
        # An RTT sample, as on_ack_received takes it (RFC 9002 5): at least 1 ms, the
        # peer's ACK delay (capped at max_ack_delay) taken off unless below the minimum.
        latest_rtt = now - packet.sent_time
        ack_delay = (delay << quic._remote_ack_delay_exponent) / 1_000_000
        if ack_delay > loss.max_ack_delay:
            ack_delay = loss.max_ack_delay
        rtt = latest_rtt if latest_rtt > 0.001 else 0.001
        if rtt < loss._rtt_min:
            loss._rtt_min = rtt
        if rtt > loss._rtt_min + ack_delay:
            rtt -= ack_delay
        loss._rtt_latest = rtt
        loss._rtt_variance = 3 / 4 * loss._rtt_variance + 1 / 4 * abs(loss._rtt_min - rtt)
        loss._rtt_smoothed = 7 / 8 * loss._rtt_smoothed + 1 / 8 * rtt
        cc.on_rtt_measurement(now=now, rtt=latest_rtt)
        # The pacer's update_rate, its max and min calls as comparisons.
        pacer = loss._pacer
        window = cc.congestion_window
        smoothed = loss._rtt_smoothed
        rate = window / (smoothed if smoothed > K_MICRO_SECOND else K_MICRO_SECOND)
        size = pacer._max_datagram_size
        packet_time = size / rate
        if packet_time > K_SECOND:
            packet_time = K_SECOND
        pacer.packet_time = packet_time if packet_time > K_MICRO_SECOND else K_MICRO_SECOND
        burst = window // 4
        if burst > 16 * size:
            burst = 16 * size
        bucket_max = pacer.bucket_max = (burst if burst > 2 * size else 2 * size) / rate
        if pacer.bucket_time > bucket_max:
            pacer.bucket_time = bucket_max
    # Loss detection looks only at packets at or below the largest acknowledged.
    if sent and next(iter(sent)) <= space.largest_acked_packet:
        loss._detect_loss(now=now, space=space)
    else:
        space.loss_time = None
    loss._pto_count = 0
    return True
