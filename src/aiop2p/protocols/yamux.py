"""Yamux (``/yamux/1.0.0``) stream multiplexer as a sans-IO machine.

Wire format (libp2p ``yamux/README.md``, hashicorp ``spec.md``): every frame starts with a
12-byte big-endian header ``version u8 | type u8 | flags u16 | stream id u32 | length u32``.
Data frames carry ``length`` payload bytes; for window updates ``length`` is a window delta,
for pings an opaque value and for GoAway an error code.  The dialer (client) opens odd
stream ids, the listener even ones; id 0 is the session.  Each stream starts with a
256 KiB window per direction, and we ACK every inbound stream at once (so the peer's ACK
backlog drains without waiting for the application).

Data payloads are handed up as they arrive, in slices of the input chunks: a 1 MiB frame that
arrives in 64 KiB pieces yields several ``StreamDataReceived`` events and is never buffered
whole here.  Only a partial 12-byte header is ever kept between calls.  Small writes on one
stream queued with nothing between them leave as one data frame (``send_data``): the peer
parses one header for a multistream proposal and the first message.

Rules where the spec is silent (each a deliberate choice):

* Session-fatal (GoAway(protocol error) is queued, ``SessionTerminated`` carries the error,
  later input is ignored): version != 0; unknown frame type; SYN on an id that is open, on
  id 0 or on an id of our own parity; a data frame longer than
  ``max_inbound_frame_bytes`` (``MessageTooLargeError``), longer than the stream's remaining
  receive window, or, for an unknown stream, longer than ``receive_window_bytes`` (both
  ``FlowControlError``); a window update that lifts the send window above ``2**32 - 1``
  (``FlowControlError``).
* Stream-level: data after the peer's FIN resets that stream (we send RST and emit
  ``StreamReset``); a SYN beyond ``max_streams`` or after our GoAway is refused with RST.
* Tolerated: frames (other than the above) for unknown or forgotten ids, a repeated FIN,
  zero-length data frames, ACK on a stream already acknowledged, pings/GoAway on a
  non-zero id, ping frames with neither SYN nor ACK.
* A GoAway with a non-zero code from the peer ends the session at once
  (``ConnectionClosedError``); a normal GoAway only forbids new outbound streams.  EOF is
  clean (``SessionTerminated(None)``) after a normal GoAway in either direction, a
  ``ConnectionLostError`` inside a frame, a ``ConnectionClosedError`` otherwise.

A stream is forgotten once FIN went both ways or it was reset.

Receive memory is one budget per session, ``max_session_receive_bytes``.  A stream's
*allotment* is what the peer may still send on it plus what it sent that the application
has not consumed yet.  At open a stream is allotted the protocol's 256 KiB plus a quarter
of the budget's free room, up to ``receive_window_bytes`` (the raise travels on the SYN/ACK
window update).  Allotments then grow as the application reads: each window update (sent
once half the allotment was consumed) doubles the allotment, up to ``receive_window_bytes``
and only while the sum of all allotments stays within the budget.  So a single busy stream
gets a large window, raises never over-allot the budget, and allotments above 256 KiB
shrink back (credit not returned) while the session is over budget.  Allotments are given
back when streams end.  Because every stream is owed its first 256 KiB, many streams can
over-commit the budget: the bytes actually held are then capped by resetting a stream whose
data frame would take the unconsumed total above the budget (``StreamReset`` with
``FlowControlError``).  Received, unread data of a session is thus never more than
``max_session_receive_bytes``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, NamedTuple, NewType, NoReturn

from aiop2p.errors import (
    ConnectionClosedError,
    ConnectionLostError,
    FlowControlError,
    InvalidArgumentError,
    InvalidStateError,
    LimitExceededError,
    LocalProtocolError,
    MessageTooLargeError,
    P2PError,
    RemoteProtocolError,
    StreamClosedError,
    StreamResetError,
)

from .role import Role

__all__ = [
    "FLAG_ACK",
    "FLAG_FIN",
    "FLAG_RST",
    "FLAG_SYN",
    "HEADER_SIZE",
    "INITIAL_WINDOW_SIZE",
    "MAX_WINDOW_SIZE",
    "TYPE_DATA",
    "TYPE_GO_AWAY",
    "TYPE_PING",
    "TYPE_WINDOW_UPDATE",
    "YAMUX_PROTOCOL_ID",
    "FrameHeader",
    "GoAwayCode",
    "GoAwayReceived",
    "PongReceived",
    "SessionTerminated",
    "StreamDataReceived",
    "StreamEnded",
    "StreamId",
    "StreamOpened",
    "StreamReset",
    "StreamWindowUpdated",
    "YamuxConfig",
    "YamuxEvent",
    "YamuxSession",
    "decode_frame_header",
    "encode_frame_header",
]

YAMUX_PROTOCOL_ID: Final = "/yamux/1.0.0"

StreamId = NewType("StreamId", int)

HEADER_SIZE: Final = 12
INITIAL_WINDOW_SIZE: Final = 256 * 1024
MAX_WINDOW_SIZE: Final = 2**32 - 1
_MAX_STREAM_ID: Final = 2**32 - 1

TYPE_DATA: Final = 0
TYPE_WINDOW_UPDATE: Final = 1
TYPE_PING: Final = 2
TYPE_GO_AWAY: Final = 3

FLAG_SYN: Final = 0x1
FLAG_ACK: Final = 0x2
FLAG_FIN: Final = 0x4
FLAG_RST: Final = 0x8
_LOOKUP_FLAGS: Final = FLAG_SYN | FLAG_ACK | FLAG_RST


class GoAwayCode(IntEnum):
    """Error codes carried in the length field of a GoAway frame."""

    NORMAL = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


_HEADER: Final = struct.Struct(">BBHII")
_pack = struct.Struct(">xBHII").pack  # version 0 as a pad byte: one argument less a frame
_unpack_from = _HEADER.unpack_from


class FrameHeader(NamedTuple):
    """A decoded 12-byte Yamux frame header."""

    version: int
    type: int
    flags: int
    stream_id: int
    length: int


def encode_frame_header(frame_type: int, flags: int, stream_id: int, length: int) -> bytes:
    """Encode a version-0 header; raises ``InvalidArgumentError`` for out-of-range fields."""
    try:
        return _pack(frame_type, flags, stream_id, length)
    except struct.error as exc:
        raise InvalidArgumentError(f"yamux header field out of range: {exc}") from exc


def decode_frame_header(data: bytes | bytearray | memoryview, offset: int = 0) -> FrameHeader:
    """Decode the header at ``offset`` (no validation: the session checks version and type)."""
    try:
        return FrameHeader(*_unpack_from(data, offset))
    except struct.error as exc:
        raise InvalidArgumentError(f"need {HEADER_SIZE} bytes for a yamux header") from exc


@dataclass(frozen=True, slots=True)
class YamuxConfig:
    """Limits and window sizes of one session (sizes in bytes, counts as ``max_*``)."""

    receive_window_bytes: int = 16 * 1024 * 1024
    """Per-stream receive window we grant (>= 256 KiB); raised by a window update at open."""
    max_streams: int = 1024
    """Concurrently open streams, both directions; an inbound SYN beyond it is reset."""
    max_frame_bytes: int = 1024 * 1024
    """Largest data frame payload we send; larger writes are split."""
    max_ack_backlog: int = 256
    """Outbound streams not yet acknowledged by the peer (the spec's ACK backlog)."""
    max_session_receive_bytes: int = 32 * 1024 * 1024
    """Receive budget of the whole session, bytes: the sum of every stream's window and unread
    data stays within it (see the module docstring); also the hard cap on unread bytes."""
    max_inbound_frame_bytes: int = 16 * 1024 * 1024
    """Largest data frame payload accepted; a longer one is a protocol error."""

    def __post_init__(self) -> None:
        if not INITIAL_WINDOW_SIZE <= self.receive_window_bytes <= MAX_WINDOW_SIZE:
            raise InvalidArgumentError(
                f"receive_window_bytes must be in [{INITIAL_WINDOW_SIZE}, {MAX_WINDOW_SIZE}]"
            )
        for name in (
            "max_streams",
            "max_frame_bytes",
            "max_ack_backlog",
            "max_session_receive_bytes",
            "max_inbound_frame_bytes",
        ):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"{name} must be positive")


_DEFAULT_CONFIG: Final = YamuxConfig()
_INITIATOR: Final = Role.INITIATOR  # a global: an enum class's attributes cost more


# -- events ---------------------------------------------------------------------------------
#
# Not frozen: a frozen dataclass sets each field through ``object.__setattr__``, and the
# session builds several events per request (client and server of a sequential 64 B echo:
# 444 k -> 429 k instructions per request, cachegrind).  Treat them as read-only.


@dataclass(slots=True)
class StreamOpened:
    """The peer opened a stream (SYN); we have already acknowledged it."""

    stream_id: StreamId


@dataclass(slots=True)
class StreamDataReceived:
    """Payload bytes for a stream; call ``acknowledge_received_data`` once consumed."""

    stream_id: StreamId
    data: bytes


@dataclass(slots=True)
class StreamEnded:
    """The peer half-closed the stream (FIN): no more data will arrive on it."""

    stream_id: StreamId


@dataclass(slots=True)
class StreamReset:
    """The stream was reset by the peer (``error`` None) or by us because of what the peer
    sent (``error`` says why: data after FIN, the session's receive budget exceeded)."""

    stream_id: StreamId
    error: P2PError | None = None


@dataclass(slots=True)
class StreamWindowUpdated:
    """Our send window on the stream grew from empty: a writer that waited may continue.

    Only then: a writer waits only once ``send_data`` took less than it was given, which
    leaves the window at 0; updates to a window with room (the ACK of every stream we
    open) need nobody woken."""

    stream_id: StreamId


@dataclass(slots=True)
class PongReceived:
    """The peer answered one of our pings."""

    opaque: int


@dataclass(slots=True)
class GoAwayReceived:
    """The peer will accept no new streams; ``code`` is a ``GoAwayCode`` value."""

    code: int


@dataclass(slots=True)
class SessionTerminated:
    """Terminal event: ``error`` is None for a clean end, else why the session died."""

    error: P2PError | None


YamuxEvent = (
    StreamOpened
    | StreamDataReceived
    | StreamEnded
    | StreamReset
    | StreamWindowUpdated
    | PongReceived
    | GoAwayReceived
    | SessionTerminated
)


# -- per-stream state ----------------------------------------------------------------------
#
# A stream's state is two bits, one per direction's FIN, so that each check on the hot path
# is one ``&``: sending data is refused once ``_LOCAL_CLOSED`` is set (``StreamClosedError``),
# data from the peer once ``_REMOTE_CLOSED`` is (the stream is reset), and a FIN sets its
# bit (a repeated FIN changes nothing).  RST is not a state: it always forgets the stream.

_OPEN: Final = 0  # both directions open
_LOCAL_CLOSED: Final = 1  # we sent FIN
_REMOTE_CLOSED: Final = 2  # the peer sent FIN
_CLOSED: Final = 3  # both FINs: the stream is forgotten


class _Stream:
    """Book-keeping of one live stream (flow-control counters are in bytes)."""

    __slots__ = (
        "acked",
        "allotment",
        "credit",
        "recv_window",
        "send_window",
        "state",
        "unconsumed",
    )

    def __init__(self, acked: bool, allotment: int) -> None:
        self.state = _OPEN
        # Streams the peer opened are ACKed as soon as they are seen; ours wait for it.
        self.acked = acked
        self.send_window = INITIAL_WINDOW_SIZE  # bytes we may still send
        self.recv_window = allotment  # bytes the peer may still send
        self.unconsumed = 0  # delivered to the driver, not yet acknowledged
        self.credit = 0  # acknowledged, not yet returned to the peer in a window update
        self.allotment = allotment  # recv_window + unconsumed + credit


class YamuxSession:
    """One side of a Yamux session: feed bytes in, read events and bytes to send out.

    Commands (``open_stream``, ``send_data``, ...) only queue frames; the driver flushes
    ``data_to_send()`` after each call batch and dispatches ``events_received()``.
    """

    __slots__ = (
        "_ack_backlog",
        "_allotted",
        "_budget",
        "_buffered",
        "_config",
        "_events",
        "_header_buf",
        "_local_go_away",
        "_max_frame",
        "_max_inbound",
        "_max_raise",
        "_max_window",
        "_next_id",
        "_out",
        "_payload_deliver",
        "_payload_fin",
        "_payload_remaining",
        "_payload_sid",
        "_remote_go_away",
        "_remote_resets",
        "_role",
        "_streams",
        "_tail_end",
        "_tail_header",
        "_tail_length",
        "_tail_sid",
        "_terminated",
    )

    def __init__(self, *, role: Role, config: YamuxConfig = _DEFAULT_CONFIG) -> None:
        self._role = role
        self._config = config
        self._streams: dict[int, _Stream] = {}
        self._next_id = 1 if role is _INITIATOR else 2
        self._events: list[YamuxEvent] = []
        self._out: list[bytes | memoryview] = []
        # The last small data frame queued: its stream, the index of its header in
        # ``_out``, its length, and ``len(_out)`` after it (-1: none since the last
        # hand-out).  A write on the same stream with nothing queued between joins it (see
        # send_data).  Its header is packed once, when the frame can no longer grow: when
        # another small data frame starts or ``_out`` is handed out.
        self._tail_sid = 0
        self._tail_header = 0
        self._tail_length = 0
        self._tail_end = -1
        self._ack_backlog = 0
        self._buffered = 0  # unconsumed bytes of live streams
        self._allotted = 0  # sum of the allotments of live streams
        self._remote_resets: dict[int, None] = {}  # recent ids reset by the peer (bounded)
        self._header_buf = bytearray()  # a header split across receive_data calls
        self._payload_remaining = 0
        self._payload_sid = StreamId(0)
        self._payload_deliver = False
        self._payload_fin = False
        self._terminated = False
        self._local_go_away: int | None = None
        self._remote_go_away: int | None = None
        self._max_frame = config.max_frame_bytes
        self._max_inbound = config.max_inbound_frame_bytes
        self._budget = config.max_session_receive_bytes
        self._max_window = config.receive_window_bytes
        self._max_raise = self._max_window - INITIAL_WINDOW_SIZE  # of a new stream's window

    # -- queries ----------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        """INITIATOR: the client side (odd stream ids)."""
        return self._role

    @property
    def config(self) -> YamuxConfig:
        return self._config

    @property
    def open_stream_count(self) -> int:
        """Streams not yet forgotten, both directions."""
        return len(self._streams)

    @property
    def stream_ids(self) -> frozenset[StreamId]:
        return frozenset(StreamId(sid) for sid in self._streams)

    @property
    def is_terminated(self) -> bool:
        return self._terminated

    @property
    def ack_backlog(self) -> int:
        """Outbound streams the peer has not acknowledged yet."""
        return self._ack_backlog

    @property
    def buffered_bytes(self) -> int:
        """Received bytes of live streams that the application has not acknowledged."""
        return self._buffered

    @property
    def allotted_bytes(self) -> int:
        """Sum over live streams of what the peer may still send plus what is unread."""
        return self._allotted

    def receive_window(self, stream_id: StreamId) -> int:
        """Bytes the peer may still send on the stream before our next window update."""
        return self._live_stream(stream_id).recv_window

    @property
    def go_away_sent(self) -> int | None:
        """The code of the GoAway we sent, or None."""
        return self._local_go_away

    @property
    def go_away_received(self) -> int | None:
        """The code of the GoAway the peer sent, or None."""
        return self._remote_go_away

    def send_window(self, stream_id: StreamId) -> int:
        """Bytes ``send_data`` would accept now; raises like ``send_data`` for a dead stream."""
        return self._live_stream(stream_id).send_window

    # -- commands ---------------------------------------------------------------------------

    def open_stream(self) -> StreamId:
        """Open an outbound stream (SYN on a window update that raises our window)."""
        if self._terminated:
            raise InvalidStateError("the yamux session is terminated")
        if self._local_go_away is not None:
            raise InvalidStateError("cannot open a stream after sending GoAway")
        if self._remote_go_away is not None:
            raise InvalidStateError("cannot open a stream after the peer sent GoAway")
        if len(self._streams) >= self._config.max_streams:
            raise LimitExceededError(f"max_streams ({self._config.max_streams}) reached")
        if self._ack_backlog >= self._config.max_ack_backlog:
            raise LimitExceededError(
                f"max_ack_backlog ({self._config.max_ack_backlog}) streams await an ACK"
            )
        sid = self._next_id
        if sid > _MAX_STREAM_ID:
            raise LimitExceededError("yamux stream ids exhausted on this session")
        self._next_id = sid + 2
        raise_ = self._open_raise()
        self._streams[sid] = _Stream(False, INITIAL_WINDOW_SIZE + raise_)
        self._ack_backlog += 1
        self._out.append(_pack(TYPE_WINDOW_UPDATE, FLAG_SYN, sid, raise_))
        return StreamId(sid)

    def send_data(self, stream_id: StreamId, data: bytes | memoryview) -> int:
        """Queue as much of ``data`` as the send window allows; return the count queued.

        Wait for ``StreamWindowUpdated`` before sending the rest.  ``bytes`` input is
        referenced, not copied; other buffers are copied (the caller may reuse them).
        """
        stream = self._streams.get(stream_id)
        if stream is None:
            self._raise_unusable(stream_id)
        if stream.state & _LOCAL_CLOSED:
            raise StreamClosedError(f"yamux stream {stream_id} is closed for writing")
        window = stream.send_window
        if type(data) is bytes:
            total = len(data)
            if total <= window and total <= self._max_frame:
                if total:
                    out = self._out
                    n = len(out)
                    tail_end = self._tail_end
                    if n == tail_end and stream_id == self._tail_sid:
                        # Nothing was queued since this stream's last frame: grow that
                        # frame (one header for a proposal and its first message, or a
                        # multistream echo and the response) instead of adding one.
                        merged = self._tail_length + total
                        if merged <= self._max_frame:
                            out.append(data)
                            self._tail_end = n + 1
                            self._tail_length = merged
                            stream.send_window = window - total
                            return total
                    if tail_end >= 0:
                        self._pack_tail_header()  # that frame is complete
                    out.append(b"")  # this frame's header: packed once it is complete
                    out.append(data)
                    self._tail_sid = stream_id
                    self._tail_header = n
                    self._tail_length = total
                    self._tail_end = n + 2
                    stream.send_window = window - total
                return total
            view = memoryview(data)
        else:
            view = memoryview(data).cast("B")
            total = view.nbytes
        count = total if total < window else window
        if count == 0:
            return 0
        if not (view.readonly and isinstance(view.obj, bytes)):
            view = memoryview(view[:count].tobytes())  # the caller may mutate its buffer
        out = self._out
        max_frame = self._max_frame
        pos = 0
        while pos < count:
            size = count - pos
            if size > max_frame:
                size = max_frame
            out.append(_pack(TYPE_DATA, 0, stream_id, size))
            out.append(view[pos : pos + size])
            pos += size
        stream.send_window = window - count
        return count

    def close_stream(self, stream_id: StreamId) -> None:
        """Half-close our direction (FIN); a no-op if already closed, reset or unknown."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.state == _LOCAL_CLOSED:
            return
        self._out.append(_pack(TYPE_DATA, FLAG_FIN, stream_id, 0))
        state = stream.state | _LOCAL_CLOSED
        stream.state = state
        if state == _CLOSED:
            self._forget(stream_id, stream)

    def reset_stream(self, stream_id: StreamId) -> None:
        """Abort the stream both ways (RST) and forget it; a no-op if unknown."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        self._out.append(_pack(TYPE_WINDOW_UPDATE, FLAG_RST, stream_id, 0))
        self._forget(stream_id, stream)

    def acknowledge_received_data(self, stream_id: StreamId, size: int) -> bool:
        """The application consumed ``size`` bytes of the stream: return them as credit.

        Credit goes out once it reaches half the stream's allotment (keeps update frames
        rare); the update also grows or shrinks the allotment (module docstring).  True
        if a window update may have been queued: False tells a driver that there is
        nothing to flush (most small reads).
        """
        if size < 0:
            raise InvalidArgumentError("size must not be negative")
        stream = self._streams.get(stream_id)
        if stream is None:
            return False  # forgotten: its bytes were already taken off the session count
        if size > stream.unconsumed:
            raise LocalProtocolError(
                f"acknowledging {size} bytes, but only {stream.unconsumed} are unacknowledged"
            )
        stream.unconsumed -= size
        self._buffered -= size
        if not stream.state & _REMOTE_CLOSED:
            credit = stream.credit + size
            stream.credit = credit
            if credit >= stream.allotment >> 1:
                self._send_credit(stream_id, stream)
                return True
        else:  # the peer sends no more on it: the consumed bytes leave the allotment
            stream.allotment -= size
            self._allotted -= size
        return False

    def ping(self, opaque: int) -> None:
        """Send a ping; the answer arrives as ``PongReceived(opaque)``."""
        if self._terminated:
            raise InvalidStateError("the yamux session is terminated")
        if not 0 <= opaque <= 0xFFFFFFFF:
            raise InvalidArgumentError("ping opaque value must fit in 32 bits")
        self._out.append(_pack(TYPE_PING, FLAG_SYN, 0, opaque))

    def go_away(self, code: int = GoAwayCode.NORMAL) -> None:
        """Tell the peer we accept no new streams; sent once, later calls are no-ops."""
        if not 0 <= code <= 0xFFFFFFFF:
            raise InvalidArgumentError("GoAway code must fit in 32 bits")
        if self._terminated or self._local_go_away is not None:
            return
        self._local_go_away = code
        self._out.append(_pack(TYPE_GO_AWAY, 0, 0, code))

    # -- I/O --------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Hand out (and forget) every byte queued for the peer."""
        out = self.buffers_to_send()
        if len(out) == 1:
            return bytes(out[0])
        return b"".join(out)

    def buffers_to_send(self) -> list[bytes | memoryview]:
        """:meth:`data_to_send` unjoined: the queued frame headers and payloads, in order.

        Payloads are the ``bytes`` given to ``send_data`` or read-only views of them, so a
        driver can encrypt large writes without first copying them into one buffer.
        """
        out = self._out
        if self._tail_end >= 0:
            self._pack_tail_header()
            self._tail_end = -1  # the next frames go to a new list
        self._out = []
        return out

    def events_received(self) -> list[YamuxEvent]:
        """Hand out (and forget) the events produced so far."""
        events = self._events
        self._events = []
        return events

    def receive_eof(self) -> None:
        """The peer closed the connection: end the session (``SessionTerminated``)."""
        if self._terminated:
            return
        error: P2PError | None
        if self._payload_remaining or self._header_buf:
            error = ConnectionLostError("connection closed inside a yamux frame")
        elif self._remote_go_away == GoAwayCode.NORMAL or self._local_go_away == 0:
            error = None
        else:
            error = ConnectionClosedError("connection closed without a yamux GoAway")
        self._terminate(error)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Parse bytes from the peer; never raises for anything the peer sends."""
        if self._terminated:
            return
        if type(data) is not bytes:
            data = bytes(data)
        pos = 0
        # What the last input left unfinished comes first: only at the start of an input
        # (within one, a payload is delivered whole or runs to its end, and so does a header).
        if self._payload_remaining:
            pos = self._continue_payload(data)
        header_buf = self._header_buf
        if header_buf:
            data = bytes(header_buf) + data[pos:]  # rare: a header split between inputs
            header_buf.clear()
            pos = 0
        end = len(data)
        streams = self._streams
        while end - pos >= 12:  # HEADER_SIZE, as a literal: this loop runs per frame
            version, ftype, flags, sid, length = _unpack_from(data, pos)
            pos += 12
            if version:
                self._fail(RemoteProtocolError(f"unsupported yamux version {version}"))
                return
            if ftype == TYPE_DATA:
                if length > self._max_inbound:
                    self._fail(MessageTooLargeError(length, self._max_inbound, "yamux data frame"))
                    return
                # A FIN alone needs no _lookup (it applies RST, SYN and ACK).
                stream = self._lookup(flags, sid) if flags & _LOOKUP_FLAGS else streams.get(sid)
                if stream is None:
                    if self._terminated:
                        return
                    if length > self._config.receive_window_bytes:
                        self._fail(
                            FlowControlError(f"{length}-byte data frame for unknown stream {sid}")
                        )
                        return
                elif length > stream.recv_window:
                    self._fail(
                        FlowControlError(
                            f"{length}-byte data frame exceeds the {stream.recv_window}-byte "
                            f"window of stream {sid}"
                        )
                    )
                    return
                elif length:
                    stream.recv_window -= length
                    if stream.state & _REMOTE_CLOSED:
                        self._reset_for_peer_error(
                            sid, stream, RemoteProtocolError(f"data after FIN on stream {sid}")
                        )
                    elif self._buffered + length > self._budget:
                        self._reset_for_peer_error(
                            sid,
                            stream,
                            FlowControlError(
                                f"stream {sid} reset: {self._buffered + length} unread bytes "
                                f"would exceed the session's receive budget of {self._budget}"
                            ),
                        )
                    else:  # delivered: whole if it is all here, else its start
                        avail = end - pos
                        take = length if length <= avail else avail
                        if take:
                            chunk = data[pos : pos + take] if take < end else data
                            pos += take
                            stream.unconsumed += take
                            self._buffered += take
                            self._events.append(StreamDataReceived(sid, chunk))
                        if take == length:
                            if flags & FLAG_FIN:
                                self._on_fin(sid, stream)
                            continue
                        self._payload_remaining = length - take
                        self._payload_deliver = True
                        self._payload_sid = sid
                        self._payload_fin = bool(flags & FLAG_FIN)
                        return
                else:
                    if flags & FLAG_FIN:
                        self._on_fin(sid, stream)
                    continue
                # A payload that is not delivered (unknown or just reset stream): skipped.
                avail = end - pos
                if length <= avail:
                    pos += length
                    continue
                self._payload_remaining = length - avail
                self._payload_deliver = False
                return
            elif ftype == TYPE_WINDOW_UPDATE:
                if not flags & _LOOKUP_FLAGS:
                    stream = streams.get(sid)
                elif flags == FLAG_SYN:  # a new stream (as a rule on a window update)
                    stream = self._accept(sid)
                else:
                    stream = self._lookup(flags, sid)
                if stream is None:
                    if self._terminated:
                        return
                    continue
                if length:  # the delta
                    before = stream.send_window
                    window = before + length
                    if window > MAX_WINDOW_SIZE:
                        self._fail(
                            FlowControlError(f"send window of stream {sid} overflows 2**32-1")
                        )
                        return
                    stream.send_window = window
                    # Only a writer that found the window empty waits for it to grow.
                    if not before and not stream.state & _LOCAL_CLOSED:
                        self._events.append(StreamWindowUpdated(sid))
                if flags & FLAG_FIN:
                    self._on_fin(sid, stream)
            elif ftype == TYPE_PING:
                if flags & FLAG_SYN:
                    self._out.append(_pack(TYPE_PING, FLAG_ACK, 0, length))
                elif flags & FLAG_ACK:
                    self._events.append(PongReceived(length))
            elif ftype == TYPE_GO_AWAY:
                self._remote_go_away = length
                self._events.append(GoAwayReceived(length))
                if length != GoAwayCode.NORMAL:
                    self._terminate(
                        ConnectionClosedError(f"the peer sent GoAway with error code {length}")
                    )
                    return
            else:
                self._fail(RemoteProtocolError(f"unknown yamux frame type {ftype}"))
                return
        if pos < end:
            header_buf += data[pos:]

    def _pack_tail_header(self) -> None:
        self._out[self._tail_header] = _pack(TYPE_DATA, 0, self._tail_sid, self._tail_length)

    def _continue_payload(self, data: bytes) -> int:
        """Take the rest of a payload the last input began (delivered or skipped); return
        how many bytes of ``data`` it used."""
        remaining = self._payload_remaining
        end = len(data)
        take = remaining if remaining < end else end
        remaining -= take
        self._payload_remaining = remaining
        if self._payload_deliver and take:
            sid = self._payload_sid
            stream = self._streams.get(sid)
            if stream is not None:
                stream.unconsumed += take
                self._buffered += take
                self._events.append(StreamDataReceived(sid, data if take == end else data[:take]))
                if not remaining and self._payload_fin:
                    self._on_fin(sid, stream)
        return take

    # -- internals --------------------------------------------------------------------------

    def _lookup(self, flags: int, sid: StreamId) -> _Stream | None:
        """Apply RST / SYN / ACK of a stream frame; return the live stream, if any."""
        if flags & FLAG_RST:
            stream = self._streams.get(sid)
            if stream is not None:
                self._forget(sid, stream)
                self._remember_remote_reset(sid)
                self._events.append(StreamReset(sid))
            return None
        if flags & FLAG_SYN:
            return self._accept(sid)
        stream = self._streams.get(sid)
        if stream is not None and flags & FLAG_ACK and not stream.acked:
            stream.acked = True
            self._ack_backlog -= 1
        return stream

    def _accept(self, sid: StreamId) -> _Stream | None:
        """Handle an inbound SYN: accept (ACK now), refuse (RST) or fail the session."""
        if sid in self._streams:
            self._fail(RemoteProtocolError(f"SYN for already open yamux stream {sid}"))
            return None
        if sid == 0 or (sid & 1) == (self._role is _INITIATOR):
            self._fail(RemoteProtocolError(f"SYN with stream id {sid} of the wrong parity"))
            return None
        if self._local_go_away is not None or len(self._streams) >= self._config.max_streams:
            self._out.append(_pack(TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0))
            return None
        self._remote_resets.pop(sid, None)
        raise_ = self._open_raise()
        stream = _Stream(True, INITIAL_WINDOW_SIZE + raise_)
        self._streams[sid] = stream
        self._events.append(StreamOpened(sid))
        self._out.append(_pack(TYPE_WINDOW_UPDATE, FLAG_ACK, sid, raise_))
        return stream

    def _on_fin(self, sid: StreamId, stream: _Stream) -> None:
        state = stream.state
        if state == _REMOTE_CLOSED:
            return  # a repeated FIN changes nothing
        self._events.append(StreamEnded(sid))
        state |= _REMOTE_CLOSED
        stream.state = state
        # The peer sends no more: only its unread bytes stay allotted.
        unconsumed = stream.unconsumed
        self._allotted -= stream.allotment - unconsumed
        stream.allotment = unconsumed
        stream.credit = 0
        if state == _CLOSED:
            self._forget(sid, stream)

    def _reset_for_peer_error(self, sid: StreamId, stream: _Stream, error: P2PError) -> None:
        """Reset just this stream because of what the peer sent on it."""
        self._out.append(_pack(TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0))
        self._forget(sid, stream)
        self._remember_remote_reset(sid)
        self._events.append(StreamReset(sid, error))

    def _send_credit(self, sid: int, stream: _Stream) -> None:
        """Queue a window update returning ``stream.credit``, resized to fit the budget.

        Within budget the allotment doubles (up to ``receive_window_bytes``); over budget an
        allotment above 256 KiB gives up to the excess back by returning less credit.
        """
        credit = stream.credit
        allotment = stream.allotment
        room = self._budget - self._allotted
        if room > 0:
            grow = min(allotment, self._max_window - allotment, room)
            if grow > 0:
                credit += grow
                allotment += grow
                self._allotted += grow
        elif room < 0:
            shrink = min(-room, allotment - INITIAL_WINDOW_SIZE, credit)
            if shrink > 0:
                credit -= shrink
                allotment -= shrink
                self._allotted -= shrink
        stream.allotment = allotment
        stream.credit = 0
        if credit:
            stream.recv_window += credit
            self._out.append(_pack(TYPE_WINDOW_UPDATE, 0, sid, credit))

    def _open_raise(self) -> int:
        """Allot a new stream its 256 KiB plus a quarter of the budget's free room (up to
        receive_window_bytes) and return the raise beyond 256 KiB.  A quarter, not all:
        short-lived streams (identify, ping) opened first must not leave the next bulk
        stream at 256 KiB; streams opened while the budget is taken start at 256 KiB and
        grow as they are read."""
        quarter = (self._budget - self._allotted - INITIAL_WINDOW_SIZE) >> 2
        raise_ = self._max_raise
        if quarter < raise_:
            raise_ = quarter if quarter > 0 else 0
        self._allotted += INITIAL_WINDOW_SIZE + raise_
        return raise_

    def _forget(self, sid: int, stream: _Stream) -> None:
        del self._streams[sid]
        stream.state = _CLOSED
        self._buffered -= stream.unconsumed
        self._allotted -= stream.allotment
        stream.unconsumed = 0
        stream.allotment = 0
        if not stream.acked:
            self._ack_backlog -= 1

    def _remember_remote_reset(self, sid: int) -> None:
        resets = self._remote_resets
        resets[sid] = None
        if len(resets) > self._config.max_streams:
            del resets[next(iter(resets))]

    def _live_stream(self, stream_id: StreamId) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            self._raise_unusable(stream_id)
        return stream

    def _raise_unusable(self, stream_id: StreamId) -> NoReturn:
        if self._terminated:
            raise InvalidStateError("the yamux session is terminated")
        if stream_id in self._remote_resets:
            raise StreamResetError(f"yamux stream {stream_id} was reset by the peer")
        raise StreamClosedError(f"yamux stream {stream_id} is closed or unknown")

    def _fail(self, error: RemoteProtocolError) -> None:
        """The peer broke the protocol: queue GoAway(protocol error) and terminate."""
        self._out.append(_pack(TYPE_GO_AWAY, 0, 0, GoAwayCode.PROTOCOL_ERROR))
        self._terminate(error)

    def _terminate(self, error: P2PError | None) -> None:
        self._terminated = True
        self._streams.clear()
        self._ack_backlog = 0
        self._buffered = 0
        self._allotted = 0
        self._payload_remaining = 0
        self._header_buf.clear()
        self._events.append(SessionTerminated(error))
