"""One inbound request, served where it arrives: no task unless something has to wait.

:class:`InboundExchange` is the request stream's sink (``Stream.set_sink``): the request is
parsed as the connection dispatches its bytes, the firewall decides at once when a rule
answers, the approved request is handed to the application (``requests()`` or a serve
handler), and :meth:`InboundRequest.respond` writes the response and the FIN into the
stream synchronously.  An application that answers before it next waits therefore
answers in the same flush, the same Noise frame, as the Yamux ACK of the request
(``Connection._flush_after_wakeups``).  A task starts only to wait: for room in a full
``BLOCK`` channel, or for send window and socket room on a large response.

Its deadline (``request_timeout``) and every way the request ends are one state machine
(``_READING`` → ``_DECIDING`` → ``_DELIVERED`` → ``_WRITING`` → ended), so each request
ends exactly once, with the failure that names what happened (``InboundFailure``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final, Generic, Protocol, TypeVar

from .._aio.deadlines import Deadline, DeadlineQueue
from .._aio.stream import Stream
from .._wire.varint import decode_uvarint, encode_uvarint
from ..errors import (
    InvalidArgumentError,
    InvalidStateError,
    P2PError,
    ResultCode,
    StreamResetError,
)
from ..events import InboundFailure, RequestId
from ..identity import PeerId
from .codecs import CodecFunctions
from .config import MAX_ERROR_MESSAGE_BYTES, Framing
from .firewall import RejectReason

__all__ = ["ExchangeOwner", "InboundExchange", "InboundRequest"]

# Framing's members as globals: read per request, while an enum class's attributes go
# through EnumType.__getattr__'s slot (several times the cost).
_LENGTH_PREFIXED: Final = Framing.LENGTH_PREFIXED
_EOF_DELIMITED: Final = Framing.EOF_DELIMITED
_CHUNKED: Final = Framing.CHUNKED
_NOT_PERMITTED: Final = RejectReason.NOT_PERMITTED  # read per request by ``decided``, likewise

log = logging.getLogger("aiop2p.network.exchange")

Rq = TypeVar("Rq")
Rs = TypeVar("Rs")

_READING = 0
_DECIDING = 1
_DELIVERED = 2
_WRITING = 3
_LINGERING = 4  # ended; the stream is kept open (discarding input) until the requester gives up
_ENDED = 5

_DEADLINE_FAILURE = {
    _READING: InboundFailure.TIMEOUT,
    _DECIDING: InboundFailure.RESPONSE_TIMEOUT,
    _DELIVERED: InboundFailure.RESPONSE_TIMEOUT,
    _WRITING: InboundFailure.SEND_TIMEOUT,
}
"""What the deadline means when it strikes in each state."""

CHUNKS_PER_TURN = 16
"""A streamed response yields to the event loop after this many chunks (fairness)."""

_GAVE_UP = frozenset({InboundFailure.TIMEOUT, InboundFailure.RESPONSE_TIMEOUT})
"""We gave up waiting: keep the stream open so the requester meets its own deadline."""

_CLOSE_UNANSWERED = frozenset(
    {
        InboundFailure.NOT_PERMITTED,
        InboundFailure.RESPONSE_OMISSION,
        InboundFailure.CONNECTION_CLOSED,
        InboundFailure.CANCELLED,
        InboundFailure.HANDLER_ERROR,
    }
)
"""Deliberate non-answers: a clean close (the requester's ``ResponseOmittedError``)."""


class ExchangeOwner(Protocol):
    """What an :class:`InboundExchange` needs from the network's request exchange
    (``RequestExchange`` implements it; declared here so that this module does not
    import the module that creates exchanges)."""

    codec: CodecFunctions
    framing: Framing
    max_request_bytes: int
    linger_timeout: float
    deadlines: DeadlineQueue
    firewall_view: Callable[[Any], Any] | None

    def decide(self, exchange: InboundExchange, value: Any, view: Any) -> None: ...

    def deliver(self, exchange: InboundExchange, value: Any) -> None: ...

    def request_ended(self, exchange: InboundExchange) -> None: ...

    def failed(self, exchange: InboundExchange, failure: InboundFailure) -> None: ...


class InboundRequest(Generic[Rq, Rs]):
    """A request the firewall approved; answer it exactly once with :meth:`respond`.

    Dropping it unanswered (:meth:`drop`, or losing every reference) closes the stream
    without a response and is reported as ``InboundFailure.RESPONSE_OMISSION``.
    """

    __slots__ = ("__weakref__", "_encode", "_exchange", "peer", "request", "request_id")

    def __init__(
        self,
        peer: PeerId,
        request_id: RequestId,
        request: Rq,
        exchange: InboundExchange,
        encode: Callable[[Rs], bytes],
    ) -> None:
        self.peer = peer
        self.request_id = request_id
        self.request = request
        self._exchange = exchange
        self._encode = encode

    @property
    def encode(self) -> Callable[[Rs], bytes]:
        """The protocol codec's response encoder."""
        return self._encode

    @property
    def answered(self) -> bool:
        """True once answered, dropped, or ended (timed out, connection closed, reset)."""
        return self._exchange.state != _DELIVERED

    async def respond(self, value: Rs) -> None:
        """Send ``value`` as the response and wait until it is written.

        Raises :class:`InvalidStateError` if the request already ended (timed out, its
        connection closed, already answered) or the write failed, :class:`CodecError`
        if ``value`` cannot be encoded.
        """
        exchange = self._exchange
        if exchange.state != _DELIVERED:
            raise InvalidStateError(f"request {self.request_id} already ended")
        written = exchange.answer(self._encode(value))
        if written is not None:
            await asyncio.shield(written)

    def respond_nowait(self, value: Rs) -> None:
        """Like :meth:`respond` without waiting for the write (for busy servers); a
        failure to send is reported as an ``InboundRequestFailed`` event."""
        exchange = self._exchange
        if exchange.state != _DELIVERED:
            raise InvalidStateError(f"request {self.request_id} already ended")
        written = exchange.answer(self._encode(value))
        if written is not None:
            written.add_done_callback(_retrieve)

    def respond_error(self, code: ResultCode, message: str) -> None:
        """Answer with an error chunk (chunked framing only), as a serve handler that
        raises ``RemoteError(code, message)`` does: the requester's ``send_request`` or
        ``request_stream`` raises :class:`~aiop2p.errors.RemoteError` with them, and the
        request is reported as ``InboundFailure.HANDLER_ERROR``.  ``message`` is cut to
        256 bytes.  When the stream cannot take the chunk at once, it is closed without
        one (the requester's ``ResponseOmittedError``).

        Raises :class:`InvalidArgumentError` if the protocol is not chunked or ``code`` is
        not an error code, :class:`InvalidStateError` if the request already ended.
        """
        exchange = self._exchange
        if exchange.framing is not _CHUNKED:
            raise InvalidArgumentError(
                f"{exchange.protocol} is {exchange.framing.value}: only the chunked framing "
                "carries error codes (drop() closes the stream without a response)"
            )
        if not isinstance(code, ResultCode) or code is ResultCode.SUCCESS:
            raise InvalidArgumentError(f"not an error result code: {code!r}")
        if not isinstance(message, str):
            raise InvalidArgumentError(f"an error message is a str, not {message!r}")
        if exchange.state != _DELIVERED:
            raise InvalidStateError(f"request {self.request_id} already ended")
        exchange.fail(code, message, InboundFailure.HANDLER_ERROR)

    def drop(self) -> None:
        """Do not answer: the requester sees its stream closed without a response."""
        exchange = self._exchange
        if exchange.state == _DELIVERED:
            exchange.end(InboundFailure.RESPONSE_OMISSION)

    def __del__(self) -> None:
        exchange = self._exchange
        if exchange.state == _DELIVERED:
            loop = exchange.loop
            if not loop.is_closed():
                loop.call_soon_threadsafe(exchange.omitted)

    def __repr__(self) -> str:
        return f"<InboundRequest {self.request_id} from {self.peer}: {self.request!r}>"


def error_chunk(code: ResultCode, message: str) -> bytes:
    """An error chunk of the chunked framing; the message is cut to
    ``MAX_ERROR_MESSAGE_BYTES`` (at a character boundary)."""
    data = message.encode("utf-8")[:MAX_ERROR_MESSAGE_BYTES].decode("utf-8", "ignore").encode()
    return bytes((code,)) + encode_uvarint(len(data)) + data


def _send_now(stream: Stream, data: bytes) -> bool:
    """Write ``data`` into the stream if it takes it whole at once (True)."""
    conn = stream.connection
    if len(data) > conn.write_piece_size or conn.write_paused:
        return False
    try:
        return conn.send_stream_data(stream.stream_id, data) == len(data)
    except P2PError:
        return False


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class InboundExchange:
    """Serves one inbound request stream as its sink (see the module doc).

    ``state`` is read by :class:`InboundRequest`; everything else is the exchange's own.
    The application's :class:`InboundRequest` refers to this object, never the other
    way round, so losing the request unanswered is noticed (``InboundRequest.__del__``).
    """

    __slots__ = (
        "_body",
        "_deadline",
        "_eof",
        "_error_sent",
        "_mid_chunk",
        "_owner",
        "_received",
        "_size",
        "_start",
        "_stream_failed",
        "_streaming",
        "_waiter",
        "_written",
        "conn_id",
        "loop",
        "peer",
        "protocol",
        "request_id",
        "state",
        "stream",
    )

    def __init__(self, owner: ExchangeOwner, stream: Stream, request_id: RequestId) -> None:
        self._owner = owner
        self.stream: Stream | None = stream
        """Dropped once the request is over: the stream holds this sink, and keeping the
        stream here too would be a reference cycle per request (freed only by the
        cyclic garbage collector)."""
        conn = stream.connection
        self.conn_id = conn.id
        self.peer = conn.remote_peer
        self.request_id = request_id
        self.protocol = stream.protocol or ""
        self.loop = conn.loop
        self.state = _READING
        self._error_sent = False
        self._mid_chunk = False  # a streamed chunk is being written (no error chunk now)
        self._streaming = False  # the response is a stream (stream_responses)
        self._body = bytearray()
        self._received = 0  # bytes of the request taken so far (length prefix included)
        self._size = -1  # the request's full size once known (length prefix included)
        self._start = 0  # where the body starts (after the length prefix)
        self._eof = False
        self._stream_failed = False
        self._waiter: asyncio.Task[None] | None = None
        self._written: asyncio.Future[None] | None = None
        self._deadline: Deadline = owner.deadlines.start(self)

    # -- StreamSink ----------------------------------------------------------------------

    def sink_data(self, data: bytes) -> None:
        state = self.state
        if state == _READING:
            self._read(data)
        elif state == _LINGERING and self.stream is not None:
            self.stream.consume(len(data))  # discarded; the requester may keep sending
        # Otherwise: bytes after the request are neither read nor credited, so a requester
        # that keeps sending stalls on its window.

    def sink_eof(self) -> None:
        self._eof = True
        state = self.state
        if state == _READING:
            if self._owner.framing is _EOF_DELIMITED:
                self._got_request(bytes(self._body))
            else:
                self.end(InboundFailure.INVALID_REQUEST)  # EOF before the whole request
        elif state == _LINGERING:
            self.state = _ENDED
            stream = self.stream
            self.stream = None
            if stream is not None:
                stream.reset()

    def sink_failed(self, error: P2PError) -> None:
        state = self.state
        if state >= _LINGERING:
            self.state = _ENDED
            self.stream = None
            return
        self._stream_failed = True
        stream = self.stream
        assert stream is not None
        if not stream.connection.is_established:
            # Reported after the network's ConnectionClosed event, as the seed orders them.
            self.loop.call_soon(self.end, InboundFailure.CONNECTION_CLOSED)
            return
        if isinstance(error, StreamResetError):
            failure = InboundFailure.CANCELLED  # the requester reset its stream
        elif state == _READING:
            failure = InboundFailure.INVALID_REQUEST
        else:
            failure = InboundFailure.CONNECTION_CLOSED
        self.end(failure)

    def sink_writable(self) -> None:
        pass  # a large response is written by a task (Stream.write), woken by the stream

    # -- reading -------------------------------------------------------------------------

    def _read(self, data: bytes) -> None:
        owner = self._owner
        stream = self.stream
        assert stream is not None
        if owner.framing is _EOF_DELIMITED:
            self._received += len(data)
            if self._received > owner.max_request_bytes:
                self.end(InboundFailure.INVALID_REQUEST)
                return
            stream.consume(len(data))
            self._body += data
            return
        size = self._size
        if size < 0 and not self._body:
            # The common case: the whole request in one piece.
            try:
                got = decode_uvarint(data)
            except P2PError:
                self.end(InboundFailure.INVALID_REQUEST)
                return
            if got is not None:
                length, start = got
                if length > owner.max_request_bytes:
                    self.end(InboundFailure.INVALID_REQUEST)
                    return
                size = start + length
                if len(data) >= size:  # no count kept: nothing more is read
                    stream.consume(size)
                    self._got_request(data[start:size])
                    return
                self._size = size
                self._start = start
        self._body += data
        if size < 0:
            try:
                got = decode_uvarint(self._body)
            except P2PError:
                self.end(InboundFailure.INVALID_REQUEST)
                return
            if got is None:  # at most 9 bytes of length prefix so far
                self._received = len(self._body)
                stream.consume(len(data))
                return
            length, start = got
            if length > owner.max_request_bytes:
                self.end(InboundFailure.INVALID_REQUEST)
                return
            size = self._size = start + length
            self._start = start
        taken = min(len(data), size - self._received)
        self._received += taken
        stream.consume(taken)
        if self._received == size:
            self._got_request(bytes(self._body[self._start : size]))

    def _got_request(self, body: bytes) -> None:
        owner = self._owner
        if self._body:  # a request read in pieces: free them (a whole one left it empty)
            self._body = bytearray()
        try:
            value = owner.codec.decode_request(body)
            view_of = owner.firewall_view
            view = value if view_of is None else view_of(value)
        except (P2PError, ValueError, TypeError) as exc:
            log.debug("invalid request from %s: %s", self.peer, exc)
            self.fail(ResultCode.INVALID_REQUEST, str(exc), InboundFailure.INVALID_REQUEST)
            return
        except Exception:
            log.exception("firewall_view failed on a request from %s", self.peer)
            self.end(InboundFailure.INVALID_REQUEST)
            return
        self.state = _DECIDING
        owner.decide(self, value, view)

    # -- the application's side -----------------------------------------------------------

    def decided(self, reason: RejectReason | None, value: Any) -> None:
        """The firewall's verdict (``None``: deliver ``value``)."""
        if self.state != _DECIDING:
            return
        if reason is _NOT_PERMITTED:
            self.end(InboundFailure.NOT_PERMITTED)
        elif reason is not None or self.stream is None or not self.stream.connection.is_established:
            self.end(InboundFailure.CONNECTION_CLOSED)
        else:
            self.state = _DELIVERED
            self._owner.deliver(self, value)

    def wait_in(self, task: asyncio.Task[None]) -> None:
        """``task`` waits on the request's behalf; it is cancelled when the request ends."""
        self._waiter = task

    def done_waiting(self, task: asyncio.Task[Any] | None) -> None:
        """``task`` no longer waits for the request (it must not be cancelled by its end)."""
        if self._waiter is task:
            self._waiter = None

    def answer(self, payload: bytes) -> asyncio.Future[None] | None:
        """Write the encoded response and the FIN: ``None`` when that is done already,
        otherwise a future done when it is (failed if the write does not complete)."""
        assert self.state == _DELIVERED
        self.state = _WRITING
        framing = self._owner.framing
        if framing is _LENGTH_PREFIXED:
            payload = encode_uvarint(len(payload)) + payload
        elif framing is _CHUNKED:
            payload = b"\x00" + encode_uvarint(len(payload)) + payload
        stream = self.stream
        assert stream is not None
        conn = stream.connection
        if len(payload) <= conn.write_piece_size and not conn.write_paused:
            try:
                sent = conn.send_stream_data(stream.stream_id, payload)
            except P2PError as exc:
                self.end(InboundFailure.CONNECTION_CLOSED)
                raise InvalidStateError(f"request {self.request_id} ended: {exc}") from exc
            if sent == len(payload):
                self.end(None)
                return None
            payload = payload[sent:]
        written = self._written = self.loop.create_future()
        self._waiter = self.loop.create_task(self._write_rest(payload))
        return written

    async def _write_rest(self, payload: bytes) -> None:
        stream = self.stream
        assert stream is not None
        try:
            await stream.write(payload)
        except asyncio.CancelledError:
            return  # ended meanwhile (deadline, reset, connection closed)
        except P2PError:
            if self.state == _WRITING:
                self._waiter = None
                self.end(InboundFailure.CONNECTION_CLOSED)
            return
        if self.state == _WRITING:
            self._waiter = None
            self.end(None)

    @property
    def framing(self) -> Framing:
        return self._owner.framing

    @property
    def ended(self) -> bool:
        return self.state >= _LINGERING

    @property
    def failable(self) -> bool:
        """Not answered yet, or its responses are still being streamed: :meth:`fail`
        ends it (a single response being written is left to finish)."""
        state = self.state
        return state < _WRITING or (state == _WRITING and self._streaming)

    def fail(self, code: ResultCode, message: str, failure: InboundFailure) -> None:
        """End with ``failure`` unless it is not :attr:`failable`; with the chunked
        framing, first tell the requester ``code`` and ``message`` in an error chunk (when
        the stream takes it at once)."""
        if not self.failable:
            return
        stream = self.stream
        if (
            self._owner.framing is _CHUNKED
            and stream is not None
            and not self._stream_failed
            and not self._mid_chunk
        ):
            self._error_sent = _send_now(stream, error_chunk(code, message))
        self.end(failure)

    async def stream_responses(self, items: Any, encode: Callable[[Any], bytes]) -> None:
        """Write each item of the async iterator ``items`` as a success chunk, then the
        FIN (chunked framing; the caller's task is this request's waiter).

        The next item is asked for only once the previous chunk is written whole, so a
        requester that does not read stalls ``items`` on the send window: the server
        holds at most one chunk per stream.  The deadline restarts with every chunk (so
        ``request_timeout`` bounds each one).  The request's end (a reset by the
        requester, the deadline, the connection) cancels the caller, which closes
        ``items``."""
        assert self.state == _DELIVERED
        self.state = _WRITING
        self._streaming = True
        stream = self.stream
        assert stream is not None
        owner = self._owner
        written = 0
        try:
            async for item in items:
                payload = encode(item)  # a codec error goes to the caller, as the handler's
                self._mid_chunk = True
                try:
                    await stream.write(b"\x00" + encode_uvarint(len(payload)) + payload)
                    self._mid_chunk = False
                except P2PError as exc:
                    log.debug("response stream %s ended: %s", self.request_id, exc)
                    self.end(InboundFailure.CONNECTION_CLOSED)  # no-op if it ended already
                    return
                if self.state != _WRITING:
                    return
                written += 1
                if written % CHUNKS_PER_TURN == 0:
                    # A write the window takes at once does not yield: an iterator that
                    # never awaits would hold the loop until the window fills.
                    await asyncio.sleep(0)
                    if self.state != _WRITING:
                        return
                self._deadline.finish()
                self._deadline = owner.deadlines.start(self)
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()
        if self.state == _WRITING:
            self.end(None)

    def omitted(self) -> None:
        """The application lost the request unanswered."""
        if self.state == _DELIVERED:
            self.end(InboundFailure.RESPONSE_OMISSION)

    def cancel(self) -> None:
        """The deadline struck (``DeadlineQueue``)."""
        failure = _DEADLINE_FAILURE.get(self.state)
        if failure is not None:
            self.end(failure)

    # -- the end -------------------------------------------------------------------------

    def end(self, failure: InboundFailure | None) -> None:
        """End the request (``None``: answered, FIN sent), once; report a failure and end
        the stream the way that tells the requester why."""
        if self.state >= _LINGERING:
            return
        self.state = _ENDED
        self._deadline.finish()
        owner = self._owner
        owner.request_ended(self)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.cancel()
        written = self._written
        if written is not None and not written.done():
            if failure is None:
                written.set_result(None)
            else:
                written.set_exception(InvalidStateError(failure.value))
                written.exception()  # retrieved: the responder may not be waiting
        stream = self.stream
        assert stream is not None
        if failure is None:
            self.stream = None
            closed = stream.close_write()  # whether the requester had closed its side too
        else:
            owner.failed(self, failure)
            if self._stream_failed:
                self.stream = None
                return
            length_prefixed = owner.framing is not _EOF_DELIMITED
            if self._error_sent:
                self.stream = None
                closed = stream.close_write()  # after the error chunk
            elif failure in _GAVE_UP and length_prefixed and not self._eof:
                self.state = _LINGERING  # keeps the stream until EOF, reset or linger
                stream.connection.linger(stream, owner.linger_timeout)
                return
            elif failure in _CLOSE_UNANSWERED and length_prefixed:
                self.stream = None
                closed = stream.close_write()
            else:
                # Reset: overload, unreadable request, stalled write; and every failure
                # with EOF framing, where a clean close would read as an empty response.
                self.stream = None
                stream.reset()
                return
        if not closed:
            # Done, but the requester has not closed its side: reset the stream if it
            # lingers, so a peer that never closes cannot pin it forever.
            stream.connection.linger(stream, owner.linger_timeout)
