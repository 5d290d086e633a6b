"""A short way for 1-RTT QUIC packets, for :class:`~.quic_adapter.LibP2PQuic`.

A peer that sends small datagrams costs the receiver per packet: js-libp2p's quinn sends
1200 B, ~900 packets per MiB, and aioquic's generic receive (``receive_datagram``, then
``_payload_received``'s frame dispatch, the stream receiver, one ``StreamDataReceived``
event per frame, ACK bookkeeping in Python range sets) came to ~10-12 µs per packet.
Nearly all of them are one packet to our connection id on the path in use, carrying
in-order data of an open stream: that case is done here with aioquic's own state
updates and checks in a few lines, and everything else goes to aioquic unchanged.

The aioquic 1.7.2 internals touched, each checked by
``tests/transports/test_quic_receive_frames.py``
(``test_the_short_way_reaches_the_aioquic_internals_it_needs``) so that an upgrade that
moves them fails loudly, and the frames taken compared with aioquic's own receive there:

- the connection: ``_state``, ``_quic_logger``, ``_close_at``, ``_configuration``,
  ``_is_client``, ``_host_cids``, ``host_cid``, ``_network_paths`` (``addr``,
  ``is_validated``), ``_cryptos``, ``_spaces`` and ``_crypto_streams`` (looked up once,
  shared with the lean builder: :meth:`OneRttReceiver.one_rtt_parts`; their keys are an
  ``Enum`` whose hash is a Python call), ``_spin_bit``, ``_spin_highest_pn``,
  ``_idle_timeout`` (again only after an RTT sample: ``_loss._rtt_smoothed``),
  ``_ack_eliciting_sent_since_receipt``, ``_ack_delay``,
  ``_payload_received``, ``_handle_ack_frame``, ``_get_or_create_stream``, ``_streams``,
  ``_local_max_streams_bidi`` (``used``, ``value``), ``_local_max_data`` (``used``,
  ``value``), ``_events``; to open the peer's next stream as ``_get_or_create_stream``
  does (``tests/transports/test_quic_open.py``): ``_local_max_stream_data_bidi_remote``,
  ``_remote_max_stream_data_bidi_local``, ``_streams_queue``, ``_logger.logger``;
- packet protection: a ``CryptoContext``'s ``hp._mask`` (the header-protection mask;
  for AES, ``hp._encryptor.update`` directly, unless ``hp._is_chacha20``),
  ``aead._aead`` and ``aead._iv`` (the AEAD and its nonce base), ``key_phase``;
- a packet space's ``expected_packet_number``, ``largest_received_packet``,
  ``largest_received_time``, ``ack_queue`` (a ``RangeSet``, whose last range is extended
  in place: ``_RangeSet__ranges``), ``received_packets`` (``_lower``, ``_received``,
  ``_size``: its ``add`` is done inline, once per run of packets), ``ack_at``,
  ``discarded``;
- a stream receiver's ``_buffer``, ``_buffer_start``, ``_final_size``, ``highest_offset``,
  ``is_finished``, and the stream's ``max_stream_data_local``.

What a packet holds is taken frame by frame: STREAM frames with the next in-order data
of a bidirectional stream (a new one the peer opens included: aioquic creates it and
checks the stream limit), ACK (one range: :mod:`.quic_ack`, else aioquic's handler) and
PADDING.  At the first frame of any other kind or state (out of order or duplicate data,
data beyond the stream's or the connection's credit, after a FIN or a reset, on a stream
we may not receive on, a truncated frame, MAX_DATA, RESET_STREAM, ...) the rest of the
packet goes to aioquic's ``_payload_received``, which checks and raises exactly as for
any packet.  In-order data (no FIN) goes straight to the stream's reader
(:attr:`OneRttReceiver.stream_readers`) when no event waits before it (the order of
events is kept) and the reader only buffers it, else it is queued as aioquic's event.

The datagrams of one read (a peer's GSO burst the kernel coalesced with UDP GRO) come
in one call (:meth:`OneRttReceiver._receive_one_rtt_run`): what holds for all of them
is looked up once, what they change in the packet space once after them, and a bulk
sender's usual packet (one STREAM frame that fills it with the next data for a reader)
is taken in that loop itself, without a call per packet: their AES header-protection
masks come from one call (:meth:`OneRttReceiver._header_masks`), a packet that continues
the last one taken (the same frame type, stream and size, its offset where that one
ended) is known by its first bytes and skips the checks that nothing since can have
changed, and a reader gets the chunks after its first one at once (``_feed_chunks``).
"""

from __future__ import annotations

import functools
import logging
import operator
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from aioquic import tls
from aioquic._buffer import Buffer, BufferReadError
from aioquic.quic.congestion.base import K_GRANULARITY
from aioquic.quic.connection import QuicConnection as _AioquicConnection
from aioquic.quic.connection import (
    QuicConnectionError,
    QuicConnectionState,
    QuicReceiveContext,
)
from aioquic.quic.events import StreamDataReceived
from aioquic.quic.packet import QuicErrorCode, QuicFrameType, decode_packet_number
from aioquic.quic.rangeset import RangeSet
from aioquic.quic.recovery import MAX_ACK_RANGES
from aioquic.quic.stream import QuicStream, QuicStreamReceiver, QuicStreamSender
from cryptography.exceptions import InvalidTag

from .quic_ack import receive_one_range_ack

__all__ = ["BufferedReader", "OneRttReceiver"]


class BufferedReader(Protocol):
    """What in-order stream data is handed to at once (:class:`~.stream.Stream`)."""

    def _feed_buffered(self, data: bytes) -> bool:
        """Take ``data`` (no FIN) now; False: it must come as an event instead."""
        ...

    def _feed_chunks(self, chunks: list[bytes], size: int) -> None:
        """Take ``chunks`` (``size`` bytes in all), which follow data it took in the same
        input (:meth:`_feed_buffered` true): a run of packets hands them over at once."""
        ...


_UINT_VAR_MAX = (1 << 62) - 1
_FRAME_HEAD = struct.Struct(">Q").unpack_from
"""A packet's first 8 bytes as one number: a STREAM frame's type, a 1-byte stream id, the
first 4 bytes of its offset and the 2 bytes after them (its length field, after a 4-byte
offset)."""
_PADDING = int(QuicFrameType.PADDING)
_ACK = int(QuicFrameType.ACK)
_ACK_ECN = int(QuicFrameType.ACK_ECN)
_SAMPLE_OFFSET = 4  # RFC 9001 5.4.2: the sample starts 4 bytes after the packet number
_SAMPLE_BYTES = 16
_ONE_RTT = tls.Epoch.ONE_RTT
_CONNECTED = QuicConnectionState.CONNECTED
_QUICK_DECODE_BELOW = 1 << 61
"""Below it at a run's start, a packet number within half a window above the one expected
stays below 2**62 (RFC 9000 A.3's limit) through the run: each datagram moves it up by
at most 2**31, and 2**29 of them would be needed to pass it."""


_new = object.__new__


def new_bidi_stream(stream_id: int, max_local: int, max_remote: int) -> QuicStream:
    """``QuicStream(stream_id, max_local, max_remote)`` (readable and writable) as
    aioquic's constructors make it, attribute by attribute in their order, without
    their six calls (the stream, its receiver and sender, three ``RangeSet``): one per
    request on each side.  Set one by one, the attributes keep CPython's shared-key
    layout of instances (a ``__dict__.update`` loses it: every later access costs more).
    ``tests/transports/test_quic_open.py`` compares the objects with aioquic's."""
    receiver = _new(QuicStreamReceiver)
    receiver.highest_offset = 0
    receiver.is_finished = False
    receiver.stop_pending = False
    receiver._buffer = bytearray()
    receiver._buffer_start = 0
    receiver._final_size = None
    ranges = _new(RangeSet)
    ranges._RangeSet__ranges = []  # type: ignore[attr-defined]
    receiver._ranges = ranges
    receiver._stream_id = stream_id
    receiver._stop_error_code = None
    sender = _new(QuicStreamSender)
    sender.buffer_is_empty = True
    sender.highest_offset = 0
    sender.is_finished = False
    sender.reset_pending = False
    ranges = _new(RangeSet)
    ranges._RangeSet__ranges = []  # type: ignore[attr-defined]
    sender._acked = ranges
    sender._acked_fin = False
    sender._buffer = bytearray()
    sender._buffer_fin = None
    sender._buffer_start = 0
    sender._buffer_stop = 0
    ranges = _new(RangeSet)
    ranges._RangeSet__ranges = []  # type: ignore[attr-defined]
    sender._pending = ranges
    sender._pending_eof = False
    sender._reset_error_code = None
    sender._stream_id = stream_id
    stream: QuicStream = _new(QuicStream)
    stream.is_blocked = False
    stream.max_stream_data_local = max_local
    stream.max_stream_data_local_sent = max_local
    stream.max_stream_data_remote = max_remote
    stream.receiver = receiver
    stream.sender = sender
    stream.stream_id = stream_id
    return stream


@functools.cache
def _sampler(sample_start: int) -> Callable[[bytes], bytes]:
    """What takes a datagram's header-protection sample, in C (``map`` calls it for the
    datagrams of a read without a Python loop turn each)."""
    return operator.itemgetter(slice(sample_start, sample_start + _SAMPLE_BYTES))


HeaderPacker = Callable[[int, bytes, int], bytes]
"""A short header from its first byte, connection id and truncated packet number."""


@functools.cache
def _pn_windows(cid_end: int, quick: bool) -> tuple[tuple[int, int, int, HeaderPacker], ...]:
    """By a packet number's length less one: its mask, the largest distance above the
    expected one decoded by adding it (-1: none, ``quick`` false), the header's end and
    what packs the header (one struct call; no struct code holds 3 bytes)."""
    cid_bytes = cid_end - 1

    def pack_24(first: int, cid: bytes, truncated: int) -> bytes:
        return bytes((first,)) + cid + truncated.to_bytes(3)

    packers = [struct.Struct(f">B{cid_bytes}s{code}").pack for code in "BH"]
    packers += [pack_24, struct.Struct(f">B{cid_bytes}sI").pack]
    return tuple(
        ((1 << bits) - 1, (1 << (bits - 1)) if quick else -1, cid_end + bits // 8, pack)
        for bits, pack in zip((8, 16, 24, 32), packers, strict=True)
    )


class OneRttReceiver(_AioquicConnection):
    """aioquic's connection with the short way for 1-RTT packets (module docstring)."""

    stream_readers: Mapping[Any, BufferedReader] | None = None
    """Where in-order stream data goes at once, by stream id (the connection's streams)."""

    _one_rtt: tuple[Any, Any, Any, Any, Any] | None = None
    """What :meth:`one_rtt_parts` looked up."""

    _masks: tuple[Sequence[bytes], Any, int, bytes | None] | None = None
    """The datagrams of a read, the header protection, an index and the masks of the
    datagrams from there on (None: one was too short to sample): :meth:`_header_masks`."""

    _rx_keys: tuple[Any, ...] | None = None
    """What a run needs of the 1-RTT keys in use (:meth:`_receive_keys`)."""

    _idle_rtt: float | None = None
    """The smoothed RTT (the object) that :attr:`_idle` and :attr:`_pto` were computed
    with (None: compute them again)."""
    _idle = 0.0
    _pto = 0.0

    def one_rtt_parts(self) -> tuple[Any, Any, Any, Any, Any]:
        """``_cryptos`` and its 1-RTT crypto pair, the 0-RTT pair, the 1-RTT packet space
        and crypto stream, looked up once per connection for the short ways in and out
        (their keys are an ``Enum``, whose hash is a Python call); ``_initialize`` makes
        all these dictionaries at once."""
        parts = self._one_rtt
        cryptos = self._cryptos
        if parts is None or parts[0] is not cryptos:
            parts = self._one_rtt = (
                cryptos,
                cryptos[_ONE_RTT],
                cryptos[tls.Epoch.ZERO_RTT],
                self._spaces[_ONE_RTT],
                self._crypto_streams[_ONE_RTT],
            )
        return parts

    def idle_timeout(self) -> float:
        """aioquic's ``_idle_timeout()`` (RFC 9000 10.1: the smaller of both peers' idle
        timeouts, at least three probe timeouts), with the probe timeout as
        ``QuicPacketRecovery.get_probe_timeout()`` has it (RFC 9002 6.2.1, with the
        peer's ``max_ack_delay``; kept as ``_pto`` for the timer), their ``min`` and
        ``max`` as comparisons, in one call: computed again only after an RTT sample
        (each sets a new smoothed RTT object, once per request) or new transport
        parameters (the peer's limit and ACK delay)."""
        loss = self._loss
        smoothed = loss._rtt_smoothed
        if smoothed is not self._idle_rtt:
            self._idle_rtt = smoothed
            if loss._rtt_initialized:
                variance = 4 * loss._rtt_variance
                pto: float = smoothed + (variance if variance > K_GRANULARITY else K_GRANULARITY)
                pto += loss.max_ack_delay
            else:
                pto = 2 * loss._rtt_initial
            self._pto = pto
            idle: float = self._configuration.idle_timeout
            remote = self._remote_max_idle_timeout
            if remote is not None and remote < idle:
                idle = remote
            floor = 3 * pto
            self._idle = idle if idle >= floor else floor
        return self._idle

    def _idle_timeout(self) -> float:
        """aioquic's ``_idle_timeout``, computed afresh (what aioquic's own paths ask):
        :meth:`idle_timeout` with its cache renewed first."""
        self._idle_rtt = None
        return self.idle_timeout()

    def _receive_keys(self, recv: Any) -> tuple[Any, ...]:
        """What :meth:`_receive_one_rtt_run` needs of ``recv`` (the 1-RTT receive
        context), kept until its AEAD is replaced (a new key phase or new keys, which
        set the header protection too: aioquic's ``setup`` and ``apply_key_phase``):
        the AEAD and its decrypt and nonce base, the header protection and its mask
        (AES's: the sample encrypted, without ``_mask``'s Python frame; ChaCha20's needs
        the sample as nonce), what bits 0xDC of a first byte must be (the fixed bit, this
        key phase, reserved bits clear), and the header's layout for our connection id
        length: its end, the sample's span, the packet number's second byte, and the
        packet number windows (:func:`_pn_windows`, the quick ones)."""
        aead, hp = recv.aead, recv.hp
        cid_end = 1 + self._configuration.connection_id_length
        sample_start = cid_end + _SAMPLE_OFFSET
        keys = self._rx_keys = (
            aead,
            aead._aead.decrypt,
            aead._iv,
            hp,
            hp._mask if hp._is_chacha20 else hp._encryptor.update,
            0x40 | recv.key_phase << 2,
            cid_end,
            sample_start,
            sample_start + _SAMPLE_BYTES,
            _pn_windows(cid_end, True),
        )
        return keys

    def _header_masks(
        self, segments: Sequence[bytes], start: int, hp: Any, sample_start: int
    ) -> tuple[bytes, int] | None:
        """AES header-protection masks for ``segments[start:]`` and the index of the
        first: one ECB call for the samples of all the datagrams of a read (a call per
        packet costs more than the block), kept for this connection's next run in the
        same read, which does not compute them again; None if one is too short to
        sample (the run takes a mask per packet)."""
        cached = self._masks
        if cached is not None and cached[0] is segments and cached[1] is hp and cached[2] <= start:
            return None if cached[3] is None else (cached[3], cached[2])
        samples = b"".join(map(_sampler(sample_start), segments[start:]))
        masks = None
        if len(samples) == (len(segments) - start) * _SAMPLE_BYTES:
            masks = hp._encryptor.update(samples)
        self._masks = (segments, hp, start, masks)
        return None if masks is None else (masks, start)

    def _add_bidi_stream(self, stream_id: int, max_local: int, max_remote: int) -> QuicStream:
        """A bidirectional stream opened as aioquic's ``_get_or_create_stream`` and
        ``_get_or_create_stream_for_send`` open one whose checks passed: kept and queued
        (``_streams``, ``_streams_queue``), with its two initial credit limits."""
        stream = self._streams[stream_id] = new_bidi_stream(stream_id, max_local, max_remote)
        self._streams_queue.append(stream)
        return stream

    def _receive_one_rtt(self, data: bytes, addr: Any, now: float) -> bool:
        """One datagram the short way (:meth:`_receive_one_rtt_run`); False (nothing
        done) when it does not take it."""
        return self._receive_one_rtt_run((data,), 0, addr, now) == 1

    def _receive_one_rtt_run(
        self, segments: Sequence[bytes], start: int, addr: Any, now: float
    ) -> int:
        """aioquic's receive steps for short-header packets to our current connection
        id from the validated path in use, once connected, without the checks that
        cannot apply there (version, packet type, long-header lengths, path changes),
        for ``segments[start:]`` (the datagrams of one read, from ``addr``) one after
        the other while each is such a packet to the connection id of the first;
        returns the index of the first one not taken (``start``: none).

        What holds for the whole run is looked up once: the path, keys and packet
        space change only in aioquic's ``receive_datagram`` (a new path, a key update)
        or with an event (a connection id retired), and the run stops before a packet
        that goes there, and after one that queued an event or closed the connection,
        so that its caller handles that first, as after any datagram.  A packet that
        does not decrypt with the keys in use stops the run too (aioquic then handles
        key updates, stateless resets and drops).

        The header each packet is authenticated with (the AEAD's associated data) is
        made from the first one's connection id, not read from the packet: a packet to
        another id (another connection's, or a switch to another id we issued) does
        not decrypt, and stops the run there as a different id did before."""
        if self._state is not _CONNECTED or self._quic_logger is not None or self._close_at is None:
            return start
        paths = self._network_paths
        if not paths or paths[0].addr != addr or not paths[0].is_validated:
            return start
        path = paths[0]
        cached = self._one_rtt
        if cached is None or cached[0] is not self._cryptos:
            cached = self.one_rtt_parts()
        _, pair, zero_rtt, space, _ = cached
        if space.discarded:
            return start
        recv = pair.recv
        keys = self._rx_keys
        if keys is None or keys[0] is not recv.aead:
            if recv.aead is None or recv.hp is None:
                return start
            keys = self._receive_keys(recv)
        _, decrypt, iv, hp, header_mask, key_bits, cid_end, sample_start, sample_end, windows = keys
        cid = segments[start][1:cid_end]
        if self._is_client:  # the server may use any of the ids we issued (quinn does)
            for issued in self._host_cids:
                if issued.cid == cid:
                    break
            else:
                return start
        elif cid != self.host_cid or zero_rtt.recv.aead is not None:
            return start  # a switch of id (aioquic answers it), or 0-RTT keys to drop
        # The header-protection masks of a read's datagrams at once (AES: at ``mask_at``
        # in ``masks``, _header_masks), else one per packet (``header_mask``).
        count = len(segments)
        batch = None
        if count - start > 1 and not hp._is_chacha20:
            batch = self._header_masks(segments, start, hp, sample_start)
        from_bytes = int.from_bytes
        received = space.received_packets
        events = self._events
        streams = self._streams
        readers: Mapping[Any, BufferedReader] = self.stream_readers or {}
        max_data = self._local_max_data
        pn_second = cid_end + 1
        # What the packets taken change in the packet space, the duplicate window and
        # the timers, kept here and stored once after the run (below): nothing the run
        # calls reads it (aioquic's ACK handler, its frame handlers).  The ACK queue's
        # last range is grown here too (``ack_stop``), and stored before aioquic's
        # frame handlers run (a peer's ACK of our ACKs trims it: _on_ack_delivery).
        expected = space.expected_packet_number
        if expected >= _QUICK_DECODE_BELOW:
            windows = _pn_windows(cid_end, False)
        lower = received._lower
        seen = received._received
        window_span = received._size - 1
        spin_pn = self._spin_highest_pn
        spin_first = -1  # the first byte of the highest packet, if it moves the spin bit
        largest = space.largest_received_packet
        queue: Any = space.ack_queue
        ranges = queue._RangeSet__ranges
        ack_stop = ranges[-1].stop if ranges else -1  # the last range's end, grown here
        # No bulk packet behind an event (the order of events); the run stops after a
        # packet that queues one, so only one already waiting at its start matters.
        bulk_end = 0x4000 if readers and not events else 0  # payload bytes
        grown = False  # whether ack_stop is ahead of the stored range
        taken = False  # whether a packet was taken that the bookkeeping counts
        eliciting = False
        last_sid = -1  # the stream id of the last bulk packet, its stream and reader:
        stream: Any = None  # the bulk path alone changes neither mapping
        reader: Any = None
        receiver: Any = None
        # The continuation of the last bulk packet (below): the size, the head (shifted
        # right by ``cont_shift``) and the offset of the packet that would continue it,
        # where its data starts and how its head moves per packet (-1: none expected).
        cont_size = -1
        cont_key = cont_shift = cont_step = cont_offset = cont_pos = 0
        # The reader that took a bulk packet's chunk, and the chunks for it after that
        # one, handed over at once (its _feed_chunks) before anything else can read it:
        # _one_rtt_frames (below) and the run's end.
        fed: Any = None
        fed_chunks: list[bytes] = []
        fed_bytes = 0
        index = start
        if batch is not None:
            masks, mask_at = batch
            mask_at = (start - mask_at) * _SAMPLE_BYTES - _SAMPLE_BYTES
        while index < count:
            data = segments[index]
            # Header protection off, then the payload (aioquic's
            # CryptoContext.decrypt_packet for the key phase in use, without its copies
            # of the packet).
            if batch is None:
                if len(data) < sample_end:
                    break  # too short to sample
                masks = header_mask(data[sample_start:sample_end])
                mask_at = 0
            else:  # each was long enough to sample
                mask_at += _SAMPLE_BYTES
            first = data[0] ^ masks[mask_at] & 0x1F
            if first & 0xDC != key_bits:
                # Not a short header with its fixed bit, a key update (or garbage), or
                # reserved bits set: aioquic's receive_datagram (which drops a duplicate
                # and closes the connection for the reserved bits, in that order).
                break
            length_bits = first & 3
            pn_mask, half_window, header_end, pack_header = windows[length_bits]
            if length_bits == 1:
                truncated = (data[cid_end] ^ masks[mask_at + 1]) << 8 | (
                    data[pn_second] ^ masks[mask_at + 2]
                )
            elif not length_bits:
                truncated = data[cid_end] ^ masks[mask_at + 1]
            else:
                truncated = from_bytes(data[cid_end:header_end]) ^ from_bytes(
                    masks[mask_at + 1 : mask_at + length_bits + 2]
                )
            # RFC 9000 A.3: the packet number closest to the next one expected; the
            # usual one is within half a window above it (_pn_windows).
            delta = (truncated - expected) & pn_mask
            if delta <= half_window:
                packet_number = expected + delta
            else:
                packet_number = decode_packet_number(truncated, (length_bits + 1) * 8, expected)
            try:
                payload = decrypt(
                    (iv ^ packet_number).to_bytes(12),
                    data[header_end:],
                    pack_header(first, cid, truncated),
                )
            except InvalidTag:
                break
            index += 1

            if packet_number < lower or packet_number in seen:
                continue  # a duplicate
            if packet_number > expected:  # as aioquic does
                expected = packet_number + 1
            if packet_number > spin_pn:
                spin_pn = packet_number
                spin_first = first
            # A bulk sender's usual packet: one STREAM frame with an offset (no FIN), in
            # the usual encoding (a 1-byte stream id, a 4- or 8-byte offset, a 2-byte
            # length or none), that fills it with the next data of a bidirectional
            # stream whose reader takes it, taken here with _one_rtt_frames' checks and
            # updates for that case alone; any other packet goes there.  The packet
            # after one taken so usually continues it: the same frame type, stream and
            # size (and length field), its offset where that one ended.  Its first 8
            # bytes (``head``; 6 without a length field) are then known in advance
            # (``cont_key``), and what was checked of that frame's stream holds still:
            # nothing else ran since (_one_rtt_frames ends the continuation).
            size = len(payload)
            chunk = None
            if size == cont_size or 11 < size < bulk_end:  # (cont_size: within them)
                head = _FRAME_HEAD(payload)[0]
                if size == cont_size and head >> cont_shift == cont_key:
                    offset = cont_offset
                    pos = cont_pos
                    fits = True
                else:
                    cont_size = -1
                    kind = head >> 56
                    stream_id = head >> 48 & 0xFF
                    raw = head >> 16 & 0xFFFF_FFFF
                    field = head & 0xFFFF
                    fits = False
                    if kind | 2 == 0x0E and stream_id < 0x40 and raw >= 0x8000_0000:
                        if raw < 0xC000_0000:
                            offset = raw & 0x3FFF_FFFF
                            pos = 6
                        else:
                            offset = (raw & 0x3FFF_FFFF) << 32 | from_bytes(payload[6:10])
                            field = payload[10] << 8 | payload[11]
                            # Its end may pass the largest varint (aioquic's error):
                            # none of it is taken here then (below: pos == size).
                            pos = 10 if offset + size <= _UINT_VAR_MAX else size
                        if kind == 0x0E:  # a length field: the frame must end the packet
                            pos += 2
                            if field != 0x4000 | (size - pos):
                                pos = size  # no data: not taken here
                        if stream_id != last_sid:
                            stream = streams.get(stream_id)
                            reader = readers.get(stream_id)
                            last_sid = stream_id
                        if (
                            pos < size
                            and not stream_id & 2
                            and stream is not None
                            and reader is not None
                        ):
                            receiver = stream.receiver
                            fits = (
                                offset == receiver._buffer_start
                                and not receiver._buffer
                                and not receiver.is_finished
                                and receiver._final_size is None
                            )
                if fits:
                    length = size - pos
                    end = offset + length
                    highest = receiver.highest_offset
                    newly = end - highest if end > highest else 0
                    if (
                        end <= stream.max_stream_data_local
                        and max_data.used + newly <= max_data.value
                    ):
                        chunk = payload[pos:]
                        if newly:
                            receiver.highest_offset = end
                            max_data.used += newly
                        receiver._buffer_start = end
                        if reader is fed:
                            fed_chunks.append(chunk)
                            fed_bytes += length
                        else:
                            if fed_chunks:
                                fed._feed_chunks(fed_chunks, fed_bytes)
                                fed_chunks = []
                                fed_bytes = 0
                            if reader._feed_buffered(chunk):
                                fed = reader
                            else:
                                fed = None
                                events.append(
                                    StreamDataReceived(
                                        data=chunk, end_stream=False, stream_id=last_sid
                                    )
                                )
                        if cont_size < 0 and pos < 10 and end < 0x4000_0000:
                            # The next packet's head if it continues this one (a 4-byte
                            # offset: 10 bytes of it, with one, take the general way).
                            cont_shift = 0 if pos == 8 else 16
                            cont_key = head >> cont_shift
                            cont_step = length << (16 - cont_shift)
                            cont_pos = pos
                            cont_size = size
                        cont_key += cont_step
                        cont_offset = end
                        if end >= 0x4000_0000:
                            cont_size = -1  # the next offset takes 8 bytes
            if chunk is not None:
                eliciting = True  # nothing above closes the connection (a reader buffers)
            else:
                if grown:  # the ACK queue as aioquic's handlers must find it
                    ranges[-1] = range(ranges[-1].start, ack_stop)
                    grown = False
                if fed_chunks:  # the readers as aioquic's handlers must find them
                    fed._feed_chunks(fed_chunks, fed_bytes)
                    fed_chunks = []
                    fed_bytes = 0
                fed = None
                last_sid = -1  # streams and readers may change there
                cont_size = -1
                try:
                    if self._one_rtt_frames(payload, cid, path, now):
                        eliciting = True
                except QuicConnectionError as exc:
                    self._logger.warning(exc)
                    self.close(
                        error_code=exc.error_code,
                        frame_type=exc.frame_type,
                        reason_phrase=exc.reason_phrase,
                    )
                ack_stop = ranges[-1].stop if ranges else -1
                if self._state is not _CONNECTED or self._close_pending:
                    break
            taken = True
            if packet_number > largest:
                largest = packet_number
            # aioquic's QuicPacketNumberWindow.add (the set is pruned below).
            seen.add(packet_number)
            if packet_number - window_span > lower:
                lower = packet_number - window_span
            if packet_number == ack_stop:  # the next one, as usual: the last range grows
                ack_stop += 1
                grown = True
            else:
                if grown:
                    ranges[-1] = range(ranges[-1].start, ack_stop)
                    grown = False
                if packet_number > ack_stop:
                    # After all ranges (none left, as once the peer acknowledged our
                    # ACK, or a gap): RangeSet.add appends it.
                    ranges.append(range(packet_number, packet_number + 1))
                    ack_stop = packet_number + 1
                else:
                    queue.add(packet_number)
                    ack_stop = ranges[-1].stop
                if len(ranges) > MAX_ACK_RANGES:
                    queue.shift()
            if events:
                break  # the caller handles them before the next datagram

        if grown:
            ranges[-1] = range(ranges[-1].start, ack_stop)
        if fed_chunks:
            fed._feed_chunks(fed_chunks, fed_bytes)
        if index == count and batch is not None:
            self._masks = None  # the read is done with (no datagram of it kept)
        space.expected_packet_number = expected
        if spin_first >= 0:
            spin = bool(spin_first & 0x20)
            self._spin_bit = not spin if self._is_client else spin
            self._spin_highest_pn = spin_pn
        if taken:
            self._close_at = now + self.idle_timeout()
            self._ack_eliciting_sent_since_receipt = False
            if largest > space.largest_received_packet:
                space.largest_received_packet = largest
                space.largest_received_time = now
            if lower > received._lower:
                received._lower = lower
                if len(seen) > 2 * received._size:
                    # {pn for pn in seen if pn >= lower}, in C: none lies above the
                    # highest taken, lower + window_span (lower moved with it).
                    received._received = seen.intersection(range(lower, lower + window_span + 1))
            if eliciting and space.ack_at is None:
                space.ack_at = now + self._ack_delay
        return index

    def _one_rtt_frames(self, payload: bytes, cid: bytes, path: Any, now: float) -> bool:
        """The frames of a 1-RTT packet (module docstring); whether one elicits an ACK.
        Raises :class:`QuicConnectionError` as aioquic's ``_payload_received`` does.

        A field that runs past the end hands the frame to aioquic, which says why."""
        size = len(payload)
        streams = self._streams
        events = self._events
        readers = self.stream_readers
        is_ack_eliciting = False
        context: QuicReceiveContext | None = None
        buf: Buffer | None = None
        pos = 0
        rest: int | None = 0 if not size else None  # aioquic's "no frames" error
        at = -1  # where buf stands, when known
        while rest is None and pos < size:
            start = pos
            frame_type = payload[pos]
            if frame_type == _PADDING:
                pos = size - len(payload[pos:].lstrip(b"\x00"))
                continue
            is_stream = 0x08 <= frame_type <= 0x0F  # STREAM, its type in one byte
            if not is_stream and frame_type != _ACK and frame_type != _ACK_ECN:
                rest = start
                break
            # Its fields: varints, read in C (a Buffer over the packet, made once for
            # its frames), past the type byte: read where the Buffer stands there (at
            # the packet's start, after an ACK frame), else a seek (which costs twice
            # as much); a field cut short is aioquic's error to raise.
            if buf is None:
                buf = Buffer(0, payload)  # capacity (unused), data: by position
                at = 0
            if at == pos:
                buf.pull_uint8()
            else:
                buf.seek(pos + 1)
            if is_stream:
                try:
                    stream_id = buf.pull_uint_var()
                    offset = buf.pull_uint_var() if frame_type & 4 else 0
                    if frame_type & 2:
                        length = buf.pull_uint_var()
                        pos = buf.tell()
                    else:
                        pos = buf.tell()
                        length = size - pos
                except BufferReadError:
                    rest = start
                    break
                end = offset + length
                if pos + length > size or end > _UINT_VAR_MAX or stream_id & 2:
                    rest = start  # too far, or unidirectional: aioquic
                    break
                stream = streams.get(stream_id)
                if stream is None:
                    if (stream_id & 1) != self._is_client or (
                        stream_id // 4 < self._local_max_streams_bidi.used
                    ):
                        rest = start  # ours, or one discarded: aioquic's checks
                        break
                    # New from the peer: the next one within the limit is opened here
                    # as aioquic opens it; aioquic opens any other and the lower ones,
                    # or raises (stream limit), and logs each at DEBUG.
                    limit = self._local_max_streams_bidi
                    if (
                        stream_id // 4 == limit.used < limit.value
                        and not self._logger.logger.isEnabledFor(logging.DEBUG)
                    ):
                        stream = self._add_bidi_stream(
                            stream_id,
                            self._local_max_stream_data_bidi_remote,
                            self._remote_max_stream_data_bidi_local,
                        )
                        limit.used += 1
                    else:
                        stream = self._get_or_create_stream(frame_type, stream_id)
                receiver = stream.receiver
                highest = receiver.highest_offset
                fin = frame_type & 1
                if (
                    offset != receiver._buffer_start
                    or receiver._buffer
                    or receiver.is_finished
                    or receiver._final_size is not None
                    or end > stream.max_stream_data_local
                    or (fin and end < highest)
                    or not (length or fin)
                ):
                    rest = start
                    break
                newly = end - highest if end > highest else 0
                max_data = self._local_max_data
                if max_data.used + newly > max_data.value:
                    rest = start
                    break
                chunk = payload[pos:] if pos + length == size else payload[pos : pos + length]
                pos += length
                if newly:
                    receiver.highest_offset = end
                    max_data.used += newly
                receiver._buffer_start = end
                if fin:
                    receiver._final_size = end
                    receiver.is_finished = True
                is_ack_eliciting = True
                reader = None if readers is None else readers.get(stream_id)
                if fin or events or reader is None or not reader._feed_buffered(chunk):
                    # The event as its dataclass makes it, field by field (its call
                    # costs more than the fields).
                    event = _new(StreamDataReceived)
                    event.data = chunk
                    event.end_stream = fin == 1
                    event.stream_id = stream_id
                    events.append(event)
            else:  # ACK
                cached = self._one_rtt
                space = cached[3] if cached is not None else self._spaces[_ONE_RTT]
                try:
                    if frame_type != _ACK or not receive_one_range_ack(self, buf, space, now):
                        if context is None:
                            context = self._one_rtt_context(cid, path, now)
                        buf.seek(pos + 1)
                        self._handle_ack_frame(context, frame_type, buf)
                except BufferReadError:
                    raise QuicConnectionError(
                        error_code=QuicErrorCode.FRAME_ENCODING_ERROR,
                        frame_type=frame_type,
                        reason_phrase="Failed to parse frame",
                    ) from None
                pos = at = buf.tell()
        if rest is not None:
            if context is None:
                context = self._one_rtt_context(cid, path, now)
            eliciting, _ = self._payload_received(context, payload[rest:] if rest else payload)
            is_ack_eliciting = is_ack_eliciting or eliciting
        return is_ack_eliciting

    @staticmethod
    def _one_rtt_context(cid: bytes, path: Any, now: float) -> QuicReceiveContext:
        return QuicReceiveContext(
            epoch=_ONE_RTT,
            host_cid=cid,
            network_path=path,
            quic_logger_frames=None,
            time=now,
            version=None,
        )
