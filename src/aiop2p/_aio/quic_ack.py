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
``_pacer.update_rate``, ``_detect_loss``), and a packet space's ``sent_packets``,
``largest_acked_packet``, ``ack_eliciting_in_flight`` and ``loss_time``.
"""

from __future__ import annotations

from typing import Any

from aioquic._buffer import Buffer, BufferReadError
from aioquic.quic.packet_builder import QuicDeliveryState

__all__ = ["receive_one_range_ack"]

_ACKED = QuicDeliveryState.ACKED


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
        loss._pacer.update_rate(
            congestion_window=cc.congestion_window, smoothed_rtt=loss._rtt_smoothed
        )
    # Loss detection looks only at packets at or below the largest acknowledged.
    if sent and next(iter(sent)) <= space.largest_acked_packet:
        loss._detect_loss(now=now, space=space)
    else:
        space.loss_time = None
    loss._pto_count = 0
    return True
