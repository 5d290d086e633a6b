"""Where aiop2p reaches past aioquic's public API: this module, :mod:`.quic_send` (the
lean 1-RTT packet builder) and, for the receive path of 1-RTT packets,
:mod:`.quic_receive`.

Checked against aioquic 1.7.2 (``pyproject.toml`` allows ``>=1.7.2,<1.8``).  aioquic (the
sans-IO QUIC machine the QUIC transport drives) lacks what follows, so
:class:`LibP2PQuic` subclasses its ``QuicConnection`` and touches these non-public
members, each checked by ``tests/transports/test_quic.py`` so an
aioquic upgrade that moves them fails loudly instead of silently weakening a check:

- the server requests the client certificate (libp2p ``tls.md``: servers MUST require
  client authentication): ``tls.Context._request_client_certificate``, set as the TLS
  context is made (``_initialize``);
- the certificate the peer presented: ``tls.Context._peer_certificate`` and
  ``_peer_certificate_chain``;
- the two places where aioquic makes a connection id we issued unannounced (new ones:
  ``_replenish_connection_ids``; a NEW_CONNECTION_ID frame lost:
  ``_on_new_connection_id_delivery``) clear :attr:`LibP2PQuic.issued_cids_sent`, so that
  the lean builder looks at each id's ``was_sent`` only then, not on every packet (eight
  ids: ~5 k instructions per packet);
- receive credit follows what the application *read*, not what arrived: aioquic doubles
  a stream's window whenever half of it has arrived, so a peer could make an unread
  stream buffer without bound.  ``_write_stream_limits`` and ``_write_connection_limits``
  are wrapped to grant ``consumed + window`` instead;
- how many streams the peer may open: ``_local_max_streams_bidi`` (aioquic fixes 128)
  and ``_local_max_streams_uni`` (0: libp2p has no use for them);
- HTTP/3 for WebTransport: the server may leave the client certificate unrequested,
  the peer allows a few unidirectional streams, and ``H3Connection._stream`` records a
  WebTransport stream we open (:func:`open_webtransport_stream`) and forgets one we
  are done with (:func:`forget_h3_stream`);
- how much of a stream's written data has not left yet (send backpressure):
  ``_streams``, and of each stream ``sender._buffer_stop`` (all it was given),
  ``.highest_offset``, ``.buffer_is_empty`` and ``.reset_pending``;
- a stream's send buffer (``sender._buffer``, a bytearray aioquic appends to, slices
  for each frame and trims from the front once acknowledged) is replaced by a
  :class:`SendBuffer` of the written chunks once it would hold 16 KiB: a bytearray
  trimmed from the front copies all it holds into a new allocation on every append,
  about 1.7 ms per MiB of bulk (a request's small writes stay in the bytearray);
- ACKs ride on the packets we send anyway (:meth:`LibP2PQuic.ack_with_next_packet`):
  aioquic writes an ACK frame only once its 1 ms ACK delay is over, so an answer sent
  sooner goes without it and a separate ACK-only packet follows; this sets the 1-RTT
  space's ``ack_at`` (``_spaces``) to now;
- a short way for 1-RTT packets (:meth:`LibP2PQuic.receive_datagram`): a peer that
  sends small datagrams (js-libp2p's quinn: 1200 B) costs us per packet.  It lives in
  :mod:`.quic_receive` (:class:`~.quic_receive.OneRttReceiver`, this class's base),
  whose docstring lists the internals it touches; anything it does not take goes to
  ``receive_datagram`` unchanged (``tests/transports/test_quic_receive.py``);
- datagrams beyond 16 KiB once the handshake is done (:meth:`LibP2PQuic.use_datagram_size`,
  for loopback, where aioquic's per-packet work is what bounds bulk transfer):
  ``_max_datagram_size``, the peer's ``max_udp_payload_size`` read again from the
  transport parameters (``_parse_transport_parameters``), and ``_write_stream_frame``
  called once per 16383 bytes, the most aioquic's 2-byte STREAM frame length field holds
  (it writes one frame per stream and packet, and long-header packets carry the same
  2-byte length, which is why the handshake keeps the configured size).

The 1-RTT packets of an established connection (ACK, credit and STREAM frames: nearly
all it sends) are built by :func:`~.quic_send.build_one_rtt` instead of aioquic's
``datagrams_to_send`` (:meth:`LibP2PQuic.datagrams_to_send`); that module lists what it
reaches in aioquic (``tests/transports/test_quic_send.py`` checks it).  The MAX_DATA,
MAX_STREAMS and MAX_STREAM_DATA rules it shares with the wrappers below are here
(:meth:`LibP2PQuic.connection_limits_due`, :meth:`LibP2PQuic.stream_credit_due`).

Per small request (the sequential echo: one packet each way), aioquic's own per-call
work is trimmed where it only finds out that nothing is left (where aioquic still
builds):

- one 1-RTT packet per flush (:meth:`LibP2PQuic._after_application_packet`): aioquic's
  ``_write_application`` starts a second packet after every non-empty one, runs all its
  frame writers again and drops it empty.  The pacer's ``update_after_send``
  (``_loss._pacer``), which it calls after each non-empty packet, is wrapped to raise
  ``QuicPacketBuilderStop`` when nothing is left (``_streams_queue``, each stream's
  ``is_blocked`` and ``sender.buffer_is_empty``, ``_crypto_streams``, ``_ping_pending``,
  ``_probe_pending``, ``_datagrams_pending``, and no MAX_STREAMS due by aioquic's
  batching rule on ``_local_max_streams_bidi``/``_uni``: ``value``, ``sent``, ``used``);
- a stream's sender is marked empty as its last frame is written (``sender._pending``,
  ``_pending_eof``, ``buffer_is_empty``) instead of by one more ``get_frame`` call;
- a write to a bidirectional stream aioquic holds goes to the sender directly
  (``send_stream_data`` is ``_get_or_create_stream_for_send``, whose checks pass for
  it, then ``sender.write``), and a small one is ``sender.write`` inline (``_buffer``,
  ``_buffer_stop``, ``_buffer_fin``, ``_reset_error_code``, ``_pending_eof``,
  ``buffer_is_empty``, the last of ``_pending._RangeSet__ranges`` extended in place);
  our next bidirectional stream is opened by the write itself
  (:meth:`LibP2PQuic._open_next_stream`: ``_local_next_stream_id_bidi``,
  ``_local_max_stream_data_bidi_local``, ``_remote_max_stream_data_bidi_remote``,
  ``_remote_max_streams_bidi``, ``_streams_blocked_bidi``, ``_streams_queue``;
  ``tests/transports/test_quic_open.py`` compares it with aioquic's);
- ``_write_stream_limits`` returns at once when no MAX_STREAM_DATA is due
  (``max_stream_data_local_sent``);
- the timer the driver asks for after every flush (:meth:`LibP2PQuic.get_timer`) is
  computed in one call once the handshake is confirmed on a validated path: ``_close_at``,
  ``_pacing_at``, ``_loss_at``, and of ``_loss``: ``spaces`` (``ack_at``, ``loss_time``,
  ``ack_eliciting_in_flight``; only the 1-RTT space's once the other two are
  ``discarded``, as ``discard_space`` clears theirs for good), ``handshake_confirmed``,
  ``peer_completed_address_validation``, ``_time_of_last_sent_ack_eliciting_packet``,
  ``_pto_count``, and the probe timeout as ``get_probe_timeout`` has it (``_rtt_initialized``,
  ``_rtt_initial``, ``_rtt_smoothed``, ``_rtt_variance``, ``max_ack_delay``), cached
  with the idle timeout;
  ``tests/transports/test_quic_send.py`` compares it with aioquic's ``get_timer``);
- the idle timeout, asked again after every RTT sample (once per request), is
  ``_idle_timeout`` without its ``min``, ``max`` and probe timeout calls
  (``_configuration.idle_timeout``, ``_remote_max_idle_timeout``; compared with
  aioquic's in the same tests); it and the probe timeout are computed once per RTT
  sample and again after the peer's transport parameters (``_parse_transport_parameters``).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

from aioquic import tls
from aioquic._buffer import Buffer
from aioquic.h3.connection import FrameType, H3Connection, H3Stream
from aioquic.quic.connection import QuicConnectionState
from aioquic.quic.packet import pull_quic_transport_parameters
from aioquic.quic.packet_builder import QuicPacketBuilderStop
from aioquic.quic.stream import QuicStream
from cryptography import x509

from .quic_receive import OneRttReceiver
from .quic_send import build_one_rtt

__all__ = [
    "MAX_FRAME_DATA_BYTES",
    "LibP2PQuic",
    "SendBuffer",
    "forget_h3_stream",
    "open_webtransport_stream",
]

_CONNECTED = QuicConnectionState.CONNECTED
MAX_FRAME_DATA_BYTES = 0x3FFF
"""The most data aioquic writes into one STREAM frame (its 2-byte varint length)."""
_MAX_FRAMES_PER_PACKET = 8  # 8 * 16383 > the largest UDP payload
_DEFAULT_MAX_UDP_PAYLOAD = 65527  # RFC 9000 18.2: the peer's limit when it sends none
_COALESCE_BYTES = 4096
"""Writes smaller than this join the last chunk (so that tiny writes make few chunks)."""
_CHUNKED_BUFFER_BYTES = 0x4000
"""A stream's send buffer becomes a :class:`SendBuffer` once it would hold this much:
below it aioquic's bytearray costs less (a request's few small writes, all in C)."""
_COMPACT_CHUNKS = 64
"""Dropped chunks' slots are reclaimed once there are this many, and half the list."""


class SendBuffer:
    """The unacknowledged bytes of a stream as the chunks written, for aioquic's sender:
    ``+=`` keeps a reference (no copy), a slice is copied once (its first chunk found by
    bisection: aioquic slices each frame out of a buffer of many chunks), ``del b[:n]``
    drops whole chunks from the front."""

    __slots__ = ("_chunks", "_dropped", "_ends", "_first", "_origin", "_size")

    def __init__(self, initial: bytes = b"") -> None:
        self._chunks: list[bytes | bytearray] = []
        self._ends: list[int] = []  # each chunk's end, counted from the first byte ever
        self._first = 0  # index of the first live chunk
        self._origin = 0  # where chunk 0 starts, counted as the ends are
        self._dropped = 0  # bytes dropped from the front, ever
        self._size = 0
        if initial:
            self += initial

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def __iadd__(self, data: bytes | bytearray | memoryview) -> SendBuffer:
        size = len(data)
        if not size:
            return self
        chunks, ends = self._chunks, self._ends
        if size < _COALESCE_BYTES and len(chunks) > self._first:
            last = chunks[-1]
            if isinstance(last, bytearray) and len(last) < 16 * _COALESCE_BYTES:
                last += data
                ends[-1] += size
                self._size += size
                return self
        if size < _COALESCE_BYTES:
            chunks.append(bytearray(data))
        else:
            chunks.append(data if isinstance(data, bytes) else bytes(data))
        ends.append((ends[-1] if ends else self._origin) + size)
        self._size += size
        return self

    def __getitem__(self, key: slice) -> bytes:
        start, stop, step = key.indices(self._size)
        if step != 1:
            raise ValueError("SendBuffer slices have no step")
        if stop <= start:
            return b""
        chunks, ends = self._chunks, self._ends
        lo, hi = start + self._dropped, stop + self._dropped  # counted from the first byte
        i = bisect.bisect_right(ends, lo, self._first)
        chunk_start = ends[i - 1] if i else self._origin
        chunk = chunks[i]
        if hi <= ends[i]:  # within one chunk, the usual case
            if lo == chunk_start and hi == ends[i] and isinstance(chunk, bytes):
                return chunk
            return bytes(memoryview(chunk)[lo - chunk_start : hi - chunk_start])
        pieces: list[bytes | bytearray | memoryview] = [memoryview(chunk)[lo - chunk_start :]]
        for j in range(i + 1, len(chunks)):
            chunk_start = ends[j - 1]
            if hi <= ends[j]:
                pieces.append(memoryview(chunks[j])[: hi - chunk_start])
                break
            pieces.append(chunks[j])
        return b"".join(pieces)

    def __delitem__(self, key: slice) -> None:
        if key.start is not None or key.step is not None or key.stop is None:
            raise ValueError("SendBuffer only drops from the front")
        size = min(key.stop, self._size)
        self._size -= size
        self._dropped += size
        chunks, ends = self._chunks, self._ends
        first = self._first
        while first < len(chunks) and ends[first] <= self._dropped:
            chunks[first] = b""  # released now; the slot goes at the next compaction
            first += 1
        if first >= _COMPACT_CHUNKS and first * 2 >= len(chunks):
            self._origin = ends[first - 1]
            del chunks[:first], ends[:first]
            first = 0
        self._first = first


class LibP2PQuic(OneRttReceiver):
    """aioquic's connection with client-certificate requests and read-driven credit."""

    def __init__(
        self,
        *,
        stream_window_bytes: int,
        connection_window_bytes: int,
        max_streams: int,
        max_uni_streams: int = 0,
        request_client_certificate: bool = True,
        **kwargs: Any,
    ) -> None:
        """``max_uni_streams``: 0 for libp2p over QUIC (it uses none), a few for HTTP/3
        (WebTransport), whose control streams are unidirectional;
        ``request_client_certificate``: False for WebTransport (browsers send none)."""
        super().__init__(**kwargs)
        self._request_client_certificate = request_client_certificate
        for limit, value in (
            (self._local_max_streams_bidi, max_streams),
            (self._local_max_streams_uni, max_uni_streams),
        ):
            limit.value = limit.sent = value
        self._stream_window = stream_window_bytes
        self._connection_window = connection_window_bytes
        self._consumed: dict[int, int] = {}
        self._consumed_total = 0
        self.lean_send = True
        """Whether :meth:`datagrams_to_send` may use the lean builder (tests compare)."""
        self.peer_max_udp_payload = _DEFAULT_MAX_UDP_PAYLOAD
        """The peer's ``max_udp_payload_size`` transport parameter (once received)."""
        self._tx_keys: tuple[Any, ...] | None = None  # quic_send._send_keys
        self._timer_space: Any = None
        """The 1-RTT packet space, once the other two are discarded (:meth:`get_timer`)."""
        self.issued_cids_sent = False
        """Whether every connection id we issued was announced (its NEW_CONNECTION_ID
        sent), as the lean builder last found; cleared where aioquic makes one unsent
        (:meth:`_replenish_connection_ids`, :meth:`_on_new_connection_id_delivery`)."""
        pacer = self._loss._pacer
        self._pacer_after_send = pacer.update_after_send
        pacer.update_after_send = self._after_application_packet  # type: ignore[method-assign]

    # -- connection ids we issued ------------------------------------------------------

    def _replenish_connection_ids(self) -> None:
        self.issued_cids_sent = False  # new ones, to announce
        super()._replenish_connection_ids()

    def _on_new_connection_id_delivery(self, delivery: Any, connection_id: Any) -> None:
        self.issued_cids_sent = False  # lost: to announce again (acknowledged: no matter)
        super()._on_new_connection_id_delivery(delivery, connection_id)

    # -- one packet per flush ---------------------------------------------------------

    def _after_application_packet(self, now: float) -> None:
        """aioquic's ``_write_application`` calls this after each 1-RTT packet it filled
        with something, then starts another packet, finds nothing and drops it: a whole
        second pass over its frame writers per flush.  When nothing can be left for that
        pass, :class:`QuicPacketBuilderStop` ends the build here (``datagrams_to_send``
        catches it, as when a datagram is full).

        Nothing is left when no MAX_STREAMS is due (a stream discarded during the packet
        frees a slot; aioquic's own batching rule says when to announce it) and no
        stream, the 1-RTT crypto stream, pings or datagrams hold anything unsent: every
        other frame ``_write_application`` writes was either written in this packet or,
        had it not fit, aioquic's builder already raised the same exception."""
        self._pacer_after_send(now)
        for limit in (self._local_max_streams_bidi, self._local_max_streams_uni):
            if limit.value != limit.sent and limit.sent - limit.used < limit.value - limit.sent:
                return  # a MAX_STREAMS due (aioquic's batching rule), once a stream went
        if self._ping_pending or self._probe_pending or self._datagrams_pending:
            return
        crypto = self._crypto_streams.get(tls.Epoch.ONE_RTT)
        if crypto is not None and not crypto.sender.buffer_is_empty:
            return
        for stream in self._streams_queue:
            if not stream.sender.buffer_is_empty and not stream.is_blocked:
                return
        raise QuicPacketBuilderStop

    def datagrams_to_send(self, now: float, with_ack: bool = False) -> list[tuple[bytes, Any]]:
        """An established connection's ACK, credit and STREAM packets come from the lean
        builder (:func:`~.quic_send.build_one_rtt`), everything else from aioquic;
        ``with_ack``: :meth:`ack_with_next_packet` first (the lean builder's first packet
        takes the ACK due itself)."""
        datagrams = build_one_rtt(self, now, with_ack) if self.lean_send else None
        if datagrams is None:
            if with_ack:
                self.ack_with_next_packet(now)
            return super().datagrams_to_send(now)
        return datagrams

    # -- ACKs -------------------------------------------------------------------------

    def ack_with_next_packet(self, now: float) -> None:
        """A due ACK goes in the next 1-RTT packet (called when data is about to leave)."""
        parts = self._one_rtt
        if parts is None or parts[0] is not self._cryptos:  # the lookup's own test, inline
            if not self._spaces:
                return  # before the first packet: no packet spaces yet
            parts = self.one_rtt_parts()
        space = parts[3]
        if space.ack_at is not None and space.ack_at > now:
            space.ack_at = now

    # -- the timer --------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """aioquic's ``get_timer`` once the handshake is confirmed on a validated path,
        computed in one call (the driver asks after every flush): the idle or closing
        deadline, the earliest ACK delay, the loss-detection time as
        ``QuicPacketRecovery.get_loss_detection_time`` has it (an earliest ``loss_time``,
        else the probe timeout after the last ack-eliciting packet while any is in
        flight), and pacing; no anti-amplification limit and no path validation apply
        there.  Anything else is aioquic's."""
        paths = self._network_paths
        loss = self._loss
        if (
            self._state is not _CONNECTED
            or not loss.handshake_confirmed
            or len(paths) != 1
            or not paths[0].is_validated
            or self._close_at is None
        ):
            return super().get_timer()
        timer_at = self._close_at
        spaces = loss.spaces
        space = self._timer_space
        if space is None and len(spaces) == 3 and spaces[0].discarded and spaces[1].discarded:
            # Initial and Handshake discarded (as confirming the handshake does): their
            # timers are cleared for good (discard_space), only 1-RTT's count, from
            # now on (found once).
            space = self._timer_space = spaces[2]
        if space is not None:
            ack_at = space.ack_at
            if ack_at is not None and ack_at < timer_at:
                timer_at = ack_at
            loss_at: float | None = space.loss_time
            in_flight = space.ack_eliciting_in_flight
        else:
            loss_at = None  # _get_loss_space's loss_time
            in_flight = 0
            for space in spaces:
                ack_at = space.ack_at
                if ack_at is not None and ack_at < timer_at:
                    timer_at = ack_at
                loss_time = space.loss_time
                if loss_time is not None and (loss_at is None or loss_time < loss_at):
                    loss_at = loss_time
                in_flight += space.ack_eliciting_in_flight
        if loss_at is None and (in_flight or not loss.peer_completed_address_validation):
            if loss._rtt_smoothed is not self._idle_rtt:
                self.idle_timeout()  # the probe timeout with it
            loss_at = loss._time_of_last_sent_ack_eliciting_packet + self._pto * (
                2**loss._pto_count
            )
        self._loss_at = loss_at
        if loss_at is not None and loss_at < timer_at:
            timer_at = loss_at
        pacing_at = self._pacing_at
        if pacing_at is not None and pacing_at < timer_at:
            timer_at = pacing_at
        return timer_at

    # -- 1-RTT receive ----------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        """A datagram: a 1-RTT packet on the established path takes the short way below,
        anything else (long headers, another path or connection id, a decryption
        failure, a logger) aioquic's ``receive_datagram``."""
        if not self._receive_one_rtt_run((data,), 0, addr, now):
            super().receive_datagram(data, addr, now)

    def receive_datagrams(
        self, segments: Sequence[bytes], start: int, addr: Any, now: float
    ) -> int:
        """``segments[start]`` and the datagrams after it that take the short way with
        it (one read's, for one connection id): returns the index of the first one left
        (at least ``start + 1``)."""
        end = self._receive_one_rtt_run(segments, start, addr, now)
        if end == start:
            super().receive_datagram(segments[start], addr, now)
            return start + 1
        return end

    # -- datagram size ----------------------------------------------------------------

    def _parse_transport_parameters(self, data: bytes, from_session_ticket: bool = False) -> None:
        super()._parse_transport_parameters(data, from_session_ticket)
        self._idle_rtt = None  # the idle and probe timeouts follow the peer's parameters
        limit = pull_quic_transport_parameters(Buffer(data=data)).max_udp_payload_size
        if limit is not None:
            self.peer_max_udp_payload = limit

    @property
    def datagram_size(self) -> int:
        """The largest datagram sent now."""
        return int(self._max_datagram_size)

    def use_datagram_size(self, size: int) -> int:
        """Send datagrams of up to ``size`` bytes from now on (after the handshake), but no
        more than the peer said it takes and never less than configured; returns the size.

        Configured wins: on loopback the handshake's 16 KiB stays even where the peer
        announced less.  js-libp2p's quinn announces 1472 B and takes 16 KiB datagrams on
        loopback; held to 1472 B, bulk to it costs us ~28 ms of CPU per MiB instead of ~3.5
        (aioquic's per-packet work) and runs at a third of the rate (docs/transports.md)."""
        size = max(self._max_datagram_size, min(size, self.peer_max_udp_payload))
        self._max_datagram_size = size
        return size

    def _write_stream_frame(self, builder: Any, space: Any, stream: Any, max_offset: int) -> int:
        # One frame per 16383 bytes while the packet has room: capping each frame's end
        # offset keeps aioquic's 2-byte length field valid in packets above 16 KiB.
        write = super()._write_stream_frame
        sender = stream.sender
        used = 0
        for _ in range(_MAX_FRAMES_PER_PACKET):
            start = sender.next_offset
            used += write(builder, space, stream, min(max_offset, start + MAX_FRAME_DATA_BYTES))
            if not len(sender._pending) and not sender._pending_eof:
                # All sent: what aioquic's next get_frame call would only find out.
                sender.buffer_is_empty = True
                break
            if sender.buffer_is_empty or sender.next_offset == start:
                break
        return used

    # -- TLS --------------------------------------------------------------------------

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        if not self._is_client and self._request_client_certificate:
            self.tls._request_client_certificate = True

    @property
    def requests_client_certificate(self) -> bool:
        return bool(self.tls._request_client_certificate)

    def peer_certificates(self) -> list[x509.Certificate]:
        """The certificate chain the peer sent (empty if it sent none)."""
        tls = getattr(self, "tls", None)
        if tls is None or tls._peer_certificate is None:
            return []
        return [tls._peer_certificate, *tls._peer_certificate_chain]

    # -- receive credit ---------------------------------------------------------------

    def consumed(self, stream_id: int, size: int) -> bool:
        """The application read ``size`` bytes of the stream: they may be re-credited.

        True when that makes a credit update due (a quarter of a window was read); the
        stream's and the connection's windows are raised at once (``consumed + window``:
        the lean builder finds a stream's update due from its two fields alone, and
        MAX_DATA from the limit's ``value`` and ``sent``), the only place where what was
        read grows.
        """
        total = self._consumed[stream_id] = self._consumed.get(stream_id, 0) + size
        consumed_total = self._consumed_total = self._consumed_total + size
        max_data = self._local_max_data
        target = consumed_total + self._connection_window
        due = target - max_data.value >= self._connection_window // 4
        if due:
            max_data.value = target
        stream = self._streams.get(stream_id)
        window = self._stream_window
        if (
            stream is not None
            and stream.max_stream_data_local
            and total + window - stream.max_stream_data_local >= window // 4
        ):
            stream.max_stream_data_local = total + window
            return True
        return due

    def forget(self, stream_id: int) -> None:
        self._consumed.pop(stream_id, None)

    def stream_credit_due(self, stream: Any) -> bool:
        """Whether the stream's MAX_STREAM_DATA is due: its window follows what was read
        (``consumed + window``, once a quarter of a window was read), or an update was
        lost (aioquic's handler then clears ``max_stream_data_local_sent``)."""
        local = stream.max_stream_data_local
        if local:
            target = self._consumed.get(stream.stream_id, 0) + self._stream_window
            if target - local >= self._stream_window // 4:  # one frame per quarter read
                stream.max_stream_data_local = local = target
        return bool(stream.max_stream_data_local_sent != local)

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        if not self.stream_credit_due(stream):
            return  # nothing to announce (aioquic's own doubling is what we skip)
        receiver = stream.receiver
        highest, receiver.highest_offset = receiver.highest_offset, 0  # no doubling
        try:
            super()._write_stream_limits(builder, space, stream)
        finally:
            receiver.highest_offset = highest

    def connection_limits_due(self) -> list[Any] | None:
        """The MAX_DATA and MAX_STREAMS limits to announce now (None if none): credit
        as :meth:`consumed` raised it, stream slots by aioquic's batching rule (once the
        peer has fewer left to open than the update grants)."""
        max_data = self._local_max_data
        due = [max_data] if max_data.value != max_data.sent else None
        bidi, uni = self._local_max_streams_bidi, self._local_max_streams_uni
        if bidi.value != bidi.sent and bidi.sent - bidi.used < bidi.value - bidi.sent:
            due = [bidi] if due is None else [*due, bidi]
        if uni.value != uni.sent and uni.sent - uni.used < uni.value - uni.sent:
            due = [uni] if due is None else [*due, uni]
        return due

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        max_data = self._local_max_data  # raised by consumed()
        used, max_data.used = max_data.used, 0  # no doubling
        try:
            super()._write_connection_limits(builder, space)
        finally:
            max_data.used = used

    # -- send backpressure ------------------------------------------------------------

    def write(
        self,
        stream_id: int,
        data: bytes | memoryview,
        end_stream: bool = False,
        limit: int | None = None,
    ) -> int:
        """aioquic's ``send_stream_data``; returns how many bytes of ``data`` it took: all,
        unless ``limit`` (bytes written to the stream and not sent yet: send backpressure)
        leaves room for fewer (then no FIN either)."""
        # aioquic's send_stream_data is _get_or_create_stream_for_send then sender.write;
        # a bidirectional stream it holds passes that method's checks (may send, not
        # discarded), so only a new one, a unidirectional one or a dropped one needs it.
        stream = None if stream_id & 2 else self._streams.get(stream_id)
        if stream is None:
            if stream_id == self._local_next_stream_id_bidi:  # our next: opened here
                stream = self._open_next_stream(stream_id)
            else:
                stream = self._get_or_create_stream_for_send(stream_id)
        sender: Any = stream.sender  # _buffer is typed bytearray; SendBuffer stands in
        size = len(data)
        if limit is not None:
            room = limit - (sender._buffer_stop - sender.highest_offset)  # unsent_bytes
            if size > room:
                if room <= 0:
                    return 0
                data = data[:room]
                size = room
                end_stream = False
        buffer = sender._buffer
        if (
            type(buffer) is not bytearray
            or sender._buffer_fin is not None
            or sender._reset_error_code is not None
        ):
            sender.write(data, end_stream)  # bulk, or aioquic's error
        elif len(buffer) + size >= _CHUNKED_BUFFER_BYTES:
            sender._buffer = SendBuffer(bytes(buffer))  # from now on: bulk
            sender.write(data, end_stream)
        else:
            # aioquic's sender.write, without its call and RangeSet.add's: the pending
            # ranges lie below _buffer_stop, so the new one joins or follows the last.
            if size:
                sender.buffer_is_empty = False
                stop = sender._buffer_stop
                ranges = sender._pending._RangeSet__ranges
                if ranges and ranges[-1].stop == stop:
                    ranges[-1] = range(ranges[-1].start, stop + size)
                else:
                    ranges.append(range(stop, stop + size))
                buffer += data
                sender._buffer_stop = stop + size
            if end_stream:
                sender.buffer_is_empty = False
                sender._buffer_fin = sender._buffer_stop
                sender._pending_eof = True
        return size

    def write_fin(self, stream_id: int) -> None:
        """``write(stream_id, b"", end_stream=True)``: the FIN after what was written,
        as aioquic's ``sender.write`` sets it (a stream it holds; anything else, or a
        FIN after a FIN or a reset, goes through :meth:`write`: aioquic's error)."""
        stream = None if stream_id & 2 else self._streams.get(stream_id)
        if stream is None:
            self.write(stream_id, b"", True)
            return
        sender = stream.sender
        if sender._buffer_fin is not None or sender._reset_error_code is not None:
            sender.write(b"", True)  # raises aioquic's error
        sender.buffer_is_empty = False
        sender._buffer_fin = sender._buffer_stop
        sender._pending_eof = True

    def _open_next_stream(self, stream_id: int) -> QuicStream:
        """Our next bidirectional stream, as aioquic's ``_get_or_create_stream_for_send``
        opens it (whose checks pass for it): one we may send on, not opened before;
        blocked while beyond the peer's stream limit."""
        stream = self._add_bidi_stream(
            stream_id,
            self._local_max_stream_data_bidi_local,
            self._remote_max_stream_data_bidi_remote,
        )
        self._local_next_stream_id_bidi = stream_id + 4
        if stream_id // 4 >= self._remote_max_streams_bidi:
            stream.is_blocked = True
            self._streams_blocked_bidi.append(stream)
        return stream

    def has_unsent(self) -> bool:
        """Whether some stream holds data, a FIN or a reset not sent yet, which an ACK
        or new credit may let go (lost data counts again once declared lost)."""
        for stream in self._streams.values():
            sender = stream.sender
            if not sender.buffer_is_empty or sender.reset_pending:
                return True
        return False

    def sends_pending(self, stream_id: int) -> bool:
        """Whether the stream holds written data that has not been sent once yet (also
        after :meth:`forget`)."""
        stream = self._streams.get(stream_id)
        return stream is not None and not stream.sender.buffer_is_empty

    def unsent_bytes(self, stream_id: int) -> int:
        """Bytes written to the stream that have not been sent once yet (the sender's
        ``_buffer_stop``: all it was given)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return int(sender._buffer_stop - sender.highest_offset)


def forget_h3_stream(h3: H3Connection, quic: LibP2PQuic, stream_id: int) -> None:
    """Drop aioquic's HTTP/3 record of a WebTransport stream we are done with
    (``H3Connection._stream``): it keeps one per stream until it saw both directions
    end through its own send calls, which WebTransport stream data bypasses.

    Only once nothing more can arrive on the stream (its receiving part finished, or
    QUIC dropped it: ``_streams``, ``receiver.is_finished``): later data would find no
    record and be parsed as HTTP/3 frames.
    """
    stream = quic._streams.get(stream_id)
    if stream is None or stream.receiver.is_finished:
        h3._stream.pop(stream_id, None)


def open_webtransport_stream(h3: H3Connection, session_id: int) -> int:
    """A new bidirectional WebTransport stream of ours in ``session_id``.

    ``H3Connection.create_webtransport_stream`` writes the stream's header but keeps no
    record (``H3Connection._stream``) saying it is a WebTransport stream, so the peer's
    data on it would be parsed as HTTP/3 frames: the record is added here.
    """
    stream_id = h3.create_webtransport_stream(session_id)
    record = H3Stream(stream_id)
    record.frame_type = FrameType.WEBTRANSPORT_STREAM
    record.session_id = session_id
    h3._stream[stream_id] = record
    return stream_id
