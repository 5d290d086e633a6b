"""A lean builder for the 1-RTT packets of an established QUIC connection.

aioquic's ``datagrams_to_send`` builds every packet through its general machinery: a
packet builder object, a pass over a dozen frame writers (each checking something that
is settled once connected), a sent-packet record per packet, a delivery handler per frame.
For the packets an established connection sends nearly always (an ACK, credit updates,
STREAM frames) that is ~35-50 µs of Python per packet, which a small request pays on
each side.  :func:`build_one_rtt` builds those packets directly and registers them
exactly as aioquic would, so loss recovery, retransmission and congestion control
work as before; anything else (handshake epochs, closing, PINGs and probes, path
validation, connection ids, resets and STOP_SENDING, a stream blocked on the stream
limit, a logger) returns None, and aioquic builds as usual.

What it reaches in aioquic (checked against 1.7.2, like ``quic_adapter``; checked by
``tests/transports/test_quic_send.py``):

- to decide it may build: ``_state``, ``_close_pending``, ``_handshake_confirmed``,
  ``_quic_logger``, ``_network_paths`` (``is_validated``, ``remote_challenges``),
  ``_handshake_done_pending``, ``_retire_connection_ids``, ``_streams_blocked_pending``,
  ``_ping_pending``, ``_probe_pending``, ``_datagrams_pending``, ``_crypto_streams``,
  ``_host_cids`` (``was_sent``, looked at again only after ``LibP2PQuic.issued_cids_sent``
  was cleared), ``_remote_preferred_address``; of each stream in
  ``_streams_queue``: ``sender.reset_pending``, ``receiver.stop_pending``,
  ``is_finished``, ``is_blocked``, ``sender.buffer_is_empty``;
- to build: ``_cryptos`` (``key_phase``, ``encrypt_packet`` when a key update is due
  (``_update_key_requested``), else the packet protection done here with its parts:
  ``send.aead._aead``, ``send.aead._iv``, ``send.hp._mask``, or for AES
  ``send.hp._encryptor.update`` unless ``send.hp._is_chacha20``), ``_spaces`` (``ack_at``,
  ``ack_queue``, ``largest_received_packet``/``_time``), ``_local_ack_delay_exponent``,
  ``_peer_cid``, ``_spin_bit``, ``_packet_number``, ``_max_datagram_size``,
  ``_loss`` (``_cc.congestion_window``, ``_cc.bytes_in_flight``, ``_pacer.next_send_time``),
  ``_pacing_at``, ``_remote_max_data``/``_used``, of each stream
  ``max_stream_data_remote``/``_local``/``_local_sent`` and the sender's
  ``get_frame``, ``next_offset``, ``highest_offset``, ``_pending`` (a ``RangeSet``:
  ``len``, and its list ``_RangeSet__ranges``), ``_pending_eof``, ``_buffer``, ``_buffer_start``,
  ``_buffer_fin``;
  the limits ``_local_max_data``, ``_local_max_streams_bidi``/``_uni``
  (``value``, ``sent``, ``used``, ``frame_type``); ``push_ack_frame`` (an ACK of
  several ranges: the usual one-range ACK and the STREAM frame headers are packed by one
  ``struct`` call each, their varints in the shortest form ``Buffer.push_uint_var``
  writes, and a packet's frames joined once, without a ``Buffer`` call per field);
- to register what it sent, as ``_flush_builder`` does: a ``QuicSentPacket`` with
  aioquic's own delivery handlers (``_on_connection_limit_delivery``,
  ``_on_max_stream_data_delivery``) and, for ACK and STREAM frames, those of
  :mod:`.quic_ack` (aioquic's ``_on_ack_delivery`` and the sender's ``on_data_delivery``,
  their usual case without a range set's calls); the loss recovery's ``on_packet_sent``
  done here (the packet space's ``sent_packets`` and ``ack_eliciting_in_flight``,
  ``_time_of_last_sent_ack_eliciting_packet``, ``_cc.on_packet_sent``), and the
  pacer's ``update_after_send`` (``packet_time``, ``bucket_time``, ``bucket_max``,
  ``evaluation_time``); ``_close_at``, ``_idle_timeout`` (through the receiver's cache of
  it, ``OneRttReceiver.idle_timeout``),
  ``_ack_eliciting_sent_since_receipt``; finished streams are dropped as aioquic's
  ``_write_application`` drops them (``_streams``, the peer's stream limit ``value``).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from aioquic._buffer import Buffer
from aioquic.quic.congestion.reno import RenoCongestionControl
from aioquic.quic.connection import QuicConnectionState
from aioquic.quic.packet import QuicFrameType, QuicPacketType, push_ack_frame
from aioquic.quic.packet_builder import QuicSentPacket
from aioquic.tls import Epoch

from .quic_ack import ack_delivered, stream_data_delivered

if TYPE_CHECKING:
    from aioquic.quic.stream import QuicStream

LibP2PQuic = Any
"""``quic_adapter.LibP2PQuic``, which imports this module (no import back)."""

__all__ = ["build_one_rtt"]

MAX_FRAME_DATA_BYTES = 0x3FFF
"""The most data one STREAM frame holds here (its 2-byte varint length, as aioquic)."""
_MAX_FRAMES_PER_STREAM = 8  # per packet: 8 * 16383 > the largest UDP payload
_MAX_STREAM_HEADER_BYTES = 1 + 8 + 8 + 2
"""A STREAM frame's type, id and offset (varints of up to 8 bytes) and 2-byte length."""
_TAG_BYTES = 16  # the AEAD tag of every QUIC cipher suite
_MIN_PAYLOAD = 2  # RFC 9001 5.4.2: with 2-byte packet numbers, 4 bytes for the sample
_PING_FRAME = bytes((QuicFrameType.PING,))
_ACK = int(QuicFrameType.ACK)
_MAX_STREAM_DATA = int(QuicFrameType.MAX_STREAM_DATA)
_CONNECTED = QuicConnectionState.CONNECTED
_ONE_RTT = Epoch.ONE_RTT
_ONE_RTT_PACKET = QuicPacketType.ONE_RTT
_WAS_SENT = attrgetter("was_sent")
_new = object.__new__
_SIZE_CODES = tuple(
    0 if bits <= 6 else 1 if bits <= 14 else 2 if bits <= 30 else 3 for bits in range(63)
)
"""By a value's ``bit_length()``: the size code of its shortest QUIC variable-length
integer (0-3: 1, 2, 4, 8 bytes; RFC 9000 16), as ``Buffer.push_uint_var`` writes it."""
_VARINT_PREFIXES = (0, 0x4000, 0x8000_0000, 0xC000_0000_0000_0000)
"""By size code: the varint's two high bits."""
_STREAM_HEADS = tuple(
    tuple(struct.Struct(f">B{sid}{offset}H").pack for offset in ("", *"BHIQ")) for sid in "BHIQ"
)
"""By the stream id's size code, then 0 (no offset) or 1 + the offset's: what packs a
STREAM frame's type, id, offset and 2-byte length in one call."""
_ACK_HEADS = tuple(
    struct.Struct(f">B{largest}{delay}B{first}").pack
    for largest in "BHIQ"
    for delay in "BHIQ"
    for first in "BHIQ"
)
"""By ``16 * largest + 4 * delay + first`` (the size codes of an ACK frame's largest
acknowledged, delay and first range): what packs the one-range frame in one call."""


def _varints(*values: int) -> bytes:
    """``values`` as QUIC variable-length integers (the seldom frames: credit, limits)."""
    buf = Buffer(8 * len(values))
    for value in values:
        buf.push_uint_var(value)
    return buf.data


def _stream_head(kind: int, sid: int, offset: int, length: int) -> bytes:
    """A STREAM frame's header with a 2-byte length (``kind`` says whether an offset
    follows the id), its varints in their shortest form, packed in one ``struct`` call
    instead of one ``Buffer`` call per field (each parses its arguments from a tuple)."""
    sid_code = _SIZE_CODES[sid.bit_length()]
    sid |= _VARINT_PREFIXES[sid_code]
    if not offset:
        return _STREAM_HEADS[sid_code][0](kind, sid, length | 0x4000)
    code = _SIZE_CODES[offset.bit_length()]
    return _STREAM_HEADS[sid_code][code + 1](
        kind, sid, offset | _VARINT_PREFIXES[code], length | 0x4000
    )


def _may_build(quic: LibP2PQuic) -> bool:
    """Whether nothing but ACK, credit and STREAM frames can be due (see the module)."""
    if (
        quic._state is not _CONNECTED
        or quic._close_pending
        or not quic._handshake_confirmed
        or quic._quic_logger is not None
        or quic._handshake_done_pending
        or quic._retire_connection_ids
        or quic._streams_blocked_pending
        or quic._ping_pending
        or quic._probe_pending
        or quic._datagrams_pending
        or quic._remote_preferred_address is not None
    ):
        return False
    paths = quic._network_paths
    if len(paths) != 1 or not paths[0].is_validated or paths[0].remote_challenges:
        return False
    parts = quic._one_rtt
    if parts is None or parts[0] is not quic._cryptos:  # the lookup's own test, inline
        parts = quic.one_rtt_parts()
    if not parts[4].sender.buffer_is_empty:
        return False
    if quic.issued_cids_sent:
        return True  # as found last, and none made unsent since
    # In C: no Python step per connection id (but ~0.6 k instructions each).
    sent: bool = all(map(_WAS_SENT, quic._host_cids))
    quic.issued_cids_sent = sent
    return sent


def build_one_rtt(
    quic: LibP2PQuic, now: float, with_ack: bool = False
) -> list[tuple[bytes, Any]] | None:
    """The datagrams aioquic's ``datagrams_to_send`` would return, registered with its
    loss recovery; None (nothing done) where aioquic must build.  ``with_ack``: an ACK
    waiting for its delay goes in the first packet (``LibP2PQuic.ack_with_next_packet``
    had moved it to now)."""
    if not _may_build(quic):
        return None
    # The streams: finished ones go (as in aioquic's stream loop), a reset or
    # STOP_SENDING is aioquic's to write; credit and data are noted.
    ready: list[QuicStream] = []
    credit: list[QuicStream] = []
    kept: list[QuicStream] = []
    dropped = False
    queue = quic._streams_queue
    for stream in queue:
        sender = stream.sender
        receiver = stream.receiver
        if sender.reset_pending or receiver.stop_pending:
            if dropped:  # the queue as aioquic's loop expects it: no stream it dropped
                quic._streams_queue = kept + queue[queue.index(stream) :]
            return None  # aioquic builds
        if sender.is_finished and receiver.is_finished:
            _discard(quic, stream)  # in the one pass: no list of them, no second loop
            dropped = True
            continue
        kept.append(stream)
        # LibP2PQuic.stream_credit_due: consumed() raised the window as the data was read
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            credit.append(stream)
        if not sender.buffer_is_empty and not stream.is_blocked:
            ready.append(stream)
    if dropped:
        quic._streams_queue = kept
    limits = quic.connection_limits_due()  # None when none is
    parts = quic._one_rtt  # looked up by _may_build
    assert parts is not None
    _, crypto, _, space, _ = parts
    quic._pacing_at = None
    ack_at = space.ack_at
    ack_due = ack_at is not None and (with_ack or ack_at <= now)
    if not ready and not credit and not limits and not ack_due:
        return []  # nothing to send (what aioquic's pass would find out)

    loss = quic._loss
    pacer = loss._pacer
    cc = loss._cc
    header_bytes = 3 + len(quic._peer_cid.cid)
    datagram_bytes = quic._max_datagram_size
    addr = quic._network_paths[0].addr
    datagrams: list[tuple[bytes, Any]] = []
    packet_number = quic._packet_number
    while True:
        if not ack_due:
            pacing_at = pacer.next_send_time(now=now)
            if pacing_at is not None:
                quic._pacing_at = pacing_at
                break
        room = datagram_bytes - header_bytes - _TAG_BYTES  # payload bytes in the packet
        flight_room = cc.congestion_window - cc.bytes_in_flight
        if flight_room > datagram_bytes:
            flight_room = datagram_bytes
        flight_room -= header_bytes + _TAG_BYTES  # payload bytes in flight may reach
        # The frames, joined once the packet is done (``size``: their bytes so far).
        frames: list[bytes | bytearray] = []
        size = 0
        handlers: list[tuple[Any, Any]] = []
        eliciting = False
        if ack_due:
            ack_due = False  # one ACK per build: aioquic's next would find it not due
            ranges = _write_ack(quic, frames, space, room, now, handlers)
            size = len(frames[0])
            if ranges > 1 and packet_number % 8 == 0 and size < flight_room:
                frames.append(_PING_FRAME)  # aioquic's ACK-of-ACK trigger
                size += 1
                eliciting = True
        if limits:
            for limit in limits:
                if size + 9 > flight_room:
                    break
                frame = _varints(limit.frame_type, limit.value)
                frames.append(frame)
                size += len(frame)
                limit.sent = limit.value
                handlers.append((quic._on_connection_limit_delivery, (limit,)))
                eliciting = True
            limits = [limit for limit in limits if limit.sent != limit.value]
        if credit:
            for stream in credit:
                if size + 17 > flight_room:
                    break
                frame = _varints(
                    _MAX_STREAM_DATA,
                    stream.stream_id,  # type: ignore[arg-type]
                    stream.max_stream_data_local,
                )
                frames.append(frame)
                size += len(frame)
                stream.max_stream_data_local_sent = stream.max_stream_data_local
                handlers.append((quic._on_max_stream_data_delivery, (stream,)))
                eliciting = True
            credit = [s for s in credit if s.max_stream_data_local_sent != s.max_stream_data_local]
        if ready:
            sent, ready, size = _write_streams(quic, frames, size, ready, flight_room, handlers)
            if sent:
                eliciting = True
                queue = quic._streams_queue
                if queue[-len(sent) :] != sent:  # aioquic's service order: served ones last
                    quic._streams_queue = [s for s in queue if s not in sent] + sent
        if not size:
            break
        in_flight = eliciting
        if size < _MIN_PAYLOAD:
            frames.append(bytes(_MIN_PAYLOAD - size))  # PADDING
            in_flight = True
        data = _protect(quic, crypto, packet_number, b"".join(frames))
        # The record as the dataclass's constructor makes it, field by field in its
        # order (its call and default factories cost more than the fields).
        packet = _new(QuicSentPacket)
        packet.epoch = _ONE_RTT
        packet.in_flight = in_flight
        packet.is_ack_eliciting = eliciting
        packet.is_crypto_packet = False
        packet.packet_number = packet_number
        packet.packet_type = _ONE_RTT_PACKET
        packet.sent_time = now
        packet.sent_bytes = len(data)
        packet.delivery_handlers = handlers
        packet.quic_logger_frames = []
        # The loss recovery's on_packet_sent (its logger is the connection's: none here;
        # the handshake is confirmed).
        space.sent_packets[packet_number] = packet
        if eliciting:
            space.ack_eliciting_in_flight += 1
        if in_flight:
            if eliciting:
                loss._time_of_last_sent_ack_eliciting_packet = now
            if type(cc) is RenoCongestionControl:
                cc.bytes_in_flight += packet.sent_bytes  # all its on_packet_sent does
            else:
                cc.on_packet_sent(packet=packet)
        if eliciting and not quic._ack_eliciting_sent_since_receipt:
            # RFC 9000 10.1: the first ack-eliciting packet since one was received
            idle = quic._idle if quic._idle_rtt is loss._rtt_smoothed else quic.idle_timeout()
            quic._close_at = now + idle
            quic._ack_eliciting_sent_since_receipt = True
        packet_time = pacer.packet_time
        if packet_time is not None:  # the pacer's update_after_send and update_bucket
            if now > pacer.evaluation_time:
                bucket = pacer.bucket_time + (now - pacer.evaluation_time)
                pacer.bucket_time = bucket if bucket < pacer.bucket_max else pacer.bucket_max
                pacer.evaluation_time = now
            if pacer.bucket_time < packet_time:
                pacer.bucket_time = 0.0
            else:
                pacer.bucket_time -= packet_time
        datagrams.append((data, addr))
        packet_number += 1
        if not ready and not credit and not limits:
            break
    quic._packet_number = packet_number
    return datagrams


@functools.cache
def _header_packer(header_bytes: int) -> Callable[[int, bytes, int], bytes]:
    """What packs a short header of ``header_bytes``: its first byte, the connection
    id and a 2-byte packet number (one call)."""
    return struct.Struct(f">B{header_bytes - 3}sH").pack


def _send_keys(quic: LibP2PQuic, crypto: Any) -> tuple[Any, ...]:
    """What :func:`_protect` needs of the 1-RTT send keys and the peer's connection id,
    kept in ``LibP2PQuic._tx_keys`` until the AEAD is replaced (a key update or new
    keys, which set the header protection too) or the connection id changes: the
    AEAD, the connection id, the AEAD's encrypt and nonce base, the header protection
    mask (AES's: the sample encrypted, ``HeaderProtection._mask`` without its frame)
    and what packs the header (:func:`_header_packer`)."""
    aead, hp = crypto.send.aead, crypto.send.hp
    peer_cid = quic._peer_cid.cid
    keys: tuple[Any, ...] = (
        aead,
        peer_cid,
        aead._aead.encrypt,
        aead._iv,
        hp._mask if hp._is_chacha20 else hp._encryptor.update,
        _header_packer(3 + len(peer_cid)),
    )
    quic._tx_keys = keys
    return keys


def _protect(quic: LibP2PQuic, crypto: Any, number: int, payload: bytes) -> bytes:
    """The protected packet: the short header (2-byte packet number) and ``payload``,
    as ``CryptoPair.encrypt_packet`` makes it (RFC 9001 5.3, 5.4): the AEAD with the
    header as associated data, then the header protection mask from the sample 2
    bytes into the ciphertext (4 past the packet number's start), on the first byte's
    5 low bits and the 2 packet number bytes.  A key update due is aioquic's to do
    (the next packet finds the AEAD replaced and its keys renewed)."""
    keys = quic._tx_keys
    if keys is None or keys[0] is not crypto.send.aead or keys[1] is not quic._peer_cid.cid:
        keys = _send_keys(quic, crypto)
    _, peer_cid, encrypt, iv, header_mask, pack_header = keys
    spin_bit = quic._spin_bit
    truncated = number & 0xFFFF
    if crypto._update_key_requested:
        first = 0x40 | (spin_bit << 5) | (crypto.key_phase << 2) | 1
        return bytes(
            crypto.encrypt_packet(pack_header(first, peer_cid, truncated), payload, number)
        )
    first = 0x41 | (spin_bit << 5) | (crypto.recv.key_phase << 2)  # no update requested
    nonce = (iv ^ number).to_bytes(12, "big")
    protected: bytes = encrypt(nonce, payload, pack_header(first, peer_cid, truncated))
    mask: bytes = header_mask(protected[2:18])
    header: bytes = pack_header(
        first ^ (mask[0] & 0x1F), peer_cid, truncated ^ (mask[1] << 8 | mask[2])
    )
    return header + protected


def _discard(quic: LibP2PQuic, stream: QuicStream) -> None:
    """Drop a stream done both ways; one the peer opened lets it open another (RFC 9000
    4.6), which MAX_STREAMS announces by aioquic's batching rule."""
    sid: int = stream.stream_id  # type: ignore[assignment]
    quic._streams.pop(sid, None)
    if (sid & 1) == quic._is_client:  # opened by the peer
        limit = quic._local_max_streams_uni if sid & 2 else quic._local_max_streams_bidi
        limit.value += 1


def _write_ack(
    quic: LibP2PQuic,
    frames: list[bytes | bytearray],
    space: Any,
    room: int,
    now: float,
    handlers: list[tuple[Any, Any]],
) -> int:
    """The ACK frame, as aioquic's ``_write_ack_frame`` writes it, appended to
    ``frames``; returns how many ranges it holds (one, the usual case, packed here in
    one call)."""
    delay = int((now - space.largest_received_time) * 1_000_000) >> quic._local_ack_delay_exponent
    queue = space.ack_queue
    ranges = len(queue._RangeSet__ranges)  # the RangeSet's list, without its calls
    if ranges == 1:
        r = queue._RangeSet__ranges[0]
        largest = r.stop - 1  # the largest acknowledged
        first = largest - r.start  # the first range (and no more ranges)
        largest_code = _SIZE_CODES[largest.bit_length()]
        delay_code = _SIZE_CODES[delay.bit_length()]
        first_code = _SIZE_CODES[first.bit_length()]
        frames.append(
            _ACK_HEADS[16 * largest_code + 4 * delay_code + first_code](
                _ACK,
                largest | _VARINT_PREFIXES[largest_code],
                delay | _VARINT_PREFIXES[delay_code],
                0,
                first | _VARINT_PREFIXES[first_code],
            )
        )
    else:
        buf = Buffer(room)
        buf.push_uint8(_ACK)
        ranges = push_ack_frame(buf, queue, delay, room - 1)
        frames.append(buf.data)
    handlers.append((ack_delivered, (space, space.largest_received_packet)))
    space.ack_at = None
    return ranges


def _write_streams(
    quic: LibP2PQuic,
    frames: list[bytes | bytearray],
    size: int,
    ready: list[QuicStream],
    flight_room: int,
    handlers: list[tuple[Any, Any]],
) -> tuple[list[QuicStream], list[QuicStream], int]:
    """STREAM frames of the ready streams, in order, while the packet (``size`` bytes so
    far) and the congestion window have room and flow control allows; returns the
    streams that sent, those that still have data to send, and the packet's size."""
    sent: list[QuicStream] = []
    left: list[QuicStream] = []
    for stream in ready:
        if size + 4 > flight_room:  # not even a FIN-only frame fits (a full packet: rare)
            left.extend(ready[ready.index(stream) :])
            break
        sender = stream.sender
        sid: int = stream.stream_id  # type: ignore[assignment]
        before = sender.highest_offset
        # The connection's and the stream's credit (min() as a comparison: a call of
        # the builtin costs several times more).
        max_offset = before + quic._remote_max_data - quic._remote_max_data_used
        if stream.max_stream_data_remote < max_offset:
            max_offset = stream.max_stream_data_remote
        grown = _write_whole(sender, sid, frames, size, flight_room, max_offset, handlers)
        if not sender.buffer_is_empty:
            grown = _write_frames(sender, sid, frames, grown, flight_room, max_offset, handlers)
        if grown != size:  # a frame has at least 3 bytes
            sent.append(stream)
            size = grown
        quic._remote_max_data_used += sender.highest_offset - before
        if not sender.buffer_is_empty:
            left.append(stream)
    return sent, left, size


def _write_whole(
    sender: Any,
    sid: int,
    frames: list[bytes | bytearray],
    size: int,
    flight_room: int,
    max_offset: int,
    handlers: list[tuple[Any, Any]],
) -> int:
    """The usual case in one frame, as ``get_frame`` would cut it: all that is pending
    is one range (or only the FIN) and it fits; returns the packet's size (``size``:
    nothing done)."""
    pending = sender._pending._RangeSet__ranges  # the RangeSet's list, without its calls
    if len(pending) > 1:
        return size
    if pending:
        r = pending[0]
        start, stop = r.start, r.stop
        if stop - start > MAX_FRAME_DATA_BYTES or stop > max_offset:
            return size
    elif sender._pending_eof:
        start = stop = sender._buffer_fin
    else:
        return size
    if size + _MAX_STREAM_HEADER_BYTES + stop - start > flight_room:
        return size  # (near the end: _write_frames cuts it, with its exact header)
    fin = sender._buffer_fin == stop
    head = _stream_head(0x0A | (4 if start else 0) | (1 if fin else 0), sid, start, stop - start)
    frames.append(head)
    size += len(head) + stop - start
    if stop > start:
        origin = sender._buffer_start
        buffer = sender._buffer
        if start == origin and stop - origin == len(buffer) and type(buffer) is bytearray:
            # All it holds (a request's): joined into the packet before anything can
            # change it, so neither sliced nor copied first.
            frames.append(buffer)
        else:
            frames.append(buffer[start - origin : stop - origin])  # a copy (aioquic's own)
        del pending[0]
        if stop > sender.highest_offset:
            sender.highest_offset = stop
    handlers.append((stream_data_delivered, (sender, start, stop, fin)))
    if fin:
        sender._pending_eof = False
    elif sender._pending_eof:  # a FIN lost on its own, behind this lost data
        return size
    sender.buffer_is_empty = True  # all sent: what get_frame would find out
    return size


def _write_frames(
    sender: Any,
    sid: int,
    frames: list[bytes | bytearray],
    size: int,
    flight_room: int,
    max_offset: int,
    handlers: list[tuple[Any, Any]],
) -> int:
    """As many frames as fit, each of at most 16383 bytes, cut by ``get_frame``; returns
    the packet's size."""
    sid_bytes = 1 << _SIZE_CODES[sid.bit_length()]  # the size of its varint
    for _ in range(_MAX_FRAMES_PER_STREAM):
        start = sender.next_offset
        overhead = 3 + sid_bytes + (1 << _SIZE_CODES[start.bit_length()] if start else 0)
        frame = sender.get_frame(
            flight_room - size - overhead, min(max_offset, start + MAX_FRAME_DATA_BYTES)
        )
        if frame is None:
            break
        data = frame.data
        offset = frame.offset
        fin = frame.fin
        head = _stream_head(0x0A | (4 if offset else 0) | (1 if fin else 0), sid, offset, len(data))
        frames.append(head)
        frames.append(data)
        size += len(head) + len(data)
        handlers.append((stream_data_delivered, (sender, offset, offset + len(data), fin)))
        if not len(sender._pending) and not sender._pending_eof:
            sender.buffer_is_empty = True  # all sent: what get_frame would find out
            break
    return size
