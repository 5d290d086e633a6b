"""The request exchange, both directions: one stream per request, one message each way.

:class:`RequestExchange` sends requests (``send``) and serves inbound ones (``serve``:
read, ask the firewall gate, deliver an :class:`InboundRequest` to the application,
write its answer), with the load-shedding bounds and one deadline queue for both.

Two framings:

* ``LENGTH_PREFIXED`` (the seed's, default): unsigned-varint length + body; the
  requester keeps its write side open until it has read the response.
* ``EOF_DELIMITED`` (rust-libp2p ``request_response`` json/cbor codecs): the body is
  sent unframed and the writer half-closes; the reader reads to EOF.

Errors are mapped to the seed's outbound failure kinds (see :mod:`aiop2p.errors`); how
the remote ended the stream tells the requester why: closed unanswered is
``ResponseOmittedError`` (firewall, dropped), reset is ``RequestRefusedError`` (overload,
unreadable request).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from .._aio.connection import Connection
from .._aio.deadlines import DeadlineQueue
from .._aio.stream import ConnectionId, Stream
from ..errors import (
    ConnectionClosedError,
    InvalidStateError,
    MessageTooLargeError,
    P2PError,
    ProtocolNotSupportedError,
    RelayLimitReachedError,
    RemoteProtocolError,
    RequestConnectionClosedError,
    RequestDialError,
    RequestRefusedError,
    RequestRelayLimitError,
    RequestTimeoutError,
    RequestTooLargeError,
    ResponseOmittedError,
    ResponseTooLargeError,
    ShutdownError,
    StreamClosedError,
    StreamError,
    StreamResetError,
    UnsupportedProtocolsError,
)
from ..events import InboundFailure, InboundRequestFailed, NetworkEvent, RequestId
from ..identity import PeerId
from .codecs import Codec, CodecError, RequestResponseCodec, codec_functions
from .config import Framing, NetworkConfig
from .event_channel import EventChannel
from .firewall import RejectReason
from .gate import FirewallGate

__all__ = [
    "InboundRequest",
    "RequestExchange",
    "read_request",
    "send_request_on",
    "write_response",
]

log = logging.getLogger(__name__)

Rq = TypeVar("Rq")
Rs = TypeVar("Rs")


async def send_request_on(
    conn: Connection,
    protocols: tuple[str, ...],
    payload: bytes,
    *,
    framing: Framing,
    max_request_bytes: int,
    max_response_bytes: int,
) -> bytes:
    """Send ``payload`` on a new stream of ``conn`` and return the response body."""
    if len(payload) > max_request_bytes:
        raise RequestTooLargeError(
            f"request of {len(payload)} bytes exceeds max_request_bytes ({max_request_bytes})"
        )
    try:
        stream = conn.open_stream(protocols)
    except (ConnectionClosedError, StreamError) as exc:
        raise _closed_error(exc, str(exc)) from exc
    try:
        try:
            if len(protocols) > 1:
                await stream.wait_negotiated()
            if framing is Framing.LENGTH_PREFIXED:
                await stream.write_message(payload)
                response = await stream.read_message(max_response_bytes)
            else:
                await stream.write(payload)
                await stream.close()
                response = await stream.read_until_eof(max_response_bytes)
        except BaseException:
            stream.reset()  # no-op when already closed or reset
            raise
        await stream.close()
        return response
    except ProtocolNotSupportedError as exc:
        raise UnsupportedProtocolsError() from exc
    except MessageTooLargeError as exc:
        raise ResponseTooLargeError(f"response too large: {exc}") from exc
    except StreamClosedError as exc:
        raise ResponseOmittedError(
            "Connection was closed before a response was received"
            " (the remote closed the stream without answering)"
        ) from exc
    except StreamResetError as exc:
        raise RequestRefusedError(
            "Connection was closed before a response was received"
            " (the remote reset the stream: it refused the request, e.g. overloaded)"
        ) from exc
    except RemoteProtocolError as exc:
        raise RequestConnectionClosedError(f"invalid response: {exc}") from exc
    except (StreamError, ConnectionClosedError) as exc:
        raise _closed_error(exc) from exc


def _closed_error(exc: P2PError, message: str | None = None) -> RequestConnectionClosedError:
    """A relay's limit keeps its name (and ``limit_name``): the requester can tell a
    relay quota from a peer that went away."""
    if isinstance(exc, RelayLimitReachedError):
        return RequestRelayLimitError(exc)
    return RequestConnectionClosedError(message)


async def read_request(stream: Stream, *, framing: Framing, max_request_bytes: int) -> bytes:
    """Read one request body from an inbound stream."""
    if framing is Framing.LENGTH_PREFIXED:
        return await stream.read_message(max_request_bytes)
    return await stream.read_until_eof(max_request_bytes)


async def write_response(stream: Stream, payload: bytes, *, framing: Framing) -> None:
    """Write the response body and close our side."""
    if framing is Framing.LENGTH_PREFIXED:
        await stream.write_message(payload)
    else:
        await stream.write(payload)
    await stream.close()


class _Omitted(P2PError):
    """The application dropped an inbound request without answering (internal)."""


class _ConnectionGone(P2PError):
    """The connection of a delivered, unanswered inbound request closed (internal)."""


class InboundRequest(Generic[Rq, Rs]):
    """A request the firewall approved; answer it exactly once with :meth:`respond`.

    Dropping it unanswered (:meth:`drop`, or losing every reference) closes the stream
    without a response and is reported as ``InboundFailure.RESPONSE_OMISSION``.
    """

    __slots__ = ("__weakref__", "_encode", "_response", "_written", "peer", "request", "request_id")

    def __init__(
        self,
        peer: PeerId,
        request_id: RequestId,
        request: Rq,
        response: asyncio.Future[bytes],
        written: asyncio.Future[None],
        encode: Callable[[Rs], bytes],
    ) -> None:
        self.peer = peer
        self.request_id = request_id
        self.request = request
        self._response = response
        self._written = written
        self._encode = encode

    @property
    def answered(self) -> bool:
        return self._response.done()

    async def respond(self, value: Rs) -> None:
        """Send ``value`` as the response and wait until it is written.

        Raises :class:`InvalidStateError` if the request already ended (timed out, its
        connection closed, already answered), :class:`CodecError` if ``value`` cannot
        be encoded.
        """
        if self._response.done():
            raise InvalidStateError(f"request {self.request_id} already ended")
        data = self._encode(value)
        self._response.set_result(data)
        await asyncio.shield(self._written)

    def respond_nowait(self, value: Rs) -> None:
        """Like :meth:`respond` without waiting for the write (for busy servers); a
        failure to send is reported as an ``InboundRequestFailed`` event."""
        if self._response.done():
            raise InvalidStateError(f"request {self.request_id} already ended")
        self._response.set_result(self._encode(value))

    def drop(self) -> None:
        """Do not answer: the requester sees its stream closed without a response."""
        if not self._response.done():
            self._response.set_exception(_Omitted())

    def __del__(self) -> None:
        response = self._response
        if not response.done():
            loop = response.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._drop_if_pending, response)

    @staticmethod
    def _drop_if_pending(response: asyncio.Future[bytes]) -> None:
        if not response.done():
            response.set_exception(_Omitted())

    def __repr__(self) -> str:
        return f"<InboundRequest {self.request_id} from {self.peer}: {self.request!r}>"


class RequestExchange(Generic[Rq, Rs]):
    """Both directions of the request exchange for one network.

    ``emit`` reports a failed inbound request; ``linger_timeout`` bounds how long a
    stream we gave up on is kept open for its requester (see :func:`_linger_then_reset`).
    """

    def __init__(
        self,
        config: NetworkConfig,
        codec: Codec | RequestResponseCodec,
        firewall_view: Callable[[Rq], Any],
        gate: FirewallGate,
        *,
        emit: Callable[[NetworkEvent], None],
        linger_timeout: float,
    ) -> None:
        self._config = config
        self._codec = codec_functions(codec)
        self._firewall_view = firewall_view
        self._gate = gate
        self._emit = emit
        self._linger_timeout = linger_timeout
        self.requests: EventChannel[InboundRequest[Rq, Rs]] = EventChannel(
            config.requests_channel.capacity, config.requests_channel.policy, name="requests"
        )
        """Approved inbound requests, for the application."""
        self._ids = itertools.count(1)
        self._deadlines = DeadlineQueue(config.request_timeout)
        """``request_timeout`` for every exchange, both directions, on one timer."""
        self._outbound_tasks: set[asyncio.Task[Any]] = set()
        # Response slots of delivered, unanswered requests, per connection: failed at
        # once when the connection closes (not only at the request timeout).
        self._delivered: dict[ConnectionId, set[asyncio.Future[bytes]]] = {}
        # Inbound requests in flight, per connection and in all (the load-shedding bounds).
        self._inflight: dict[ConnectionId, int] = {}
        self._inflight_total = 0
        self._closing = False

    def _next_id(self) -> RequestId:
        return RequestId(next(self._ids))

    def connection_closed(self, conn_id: ConnectionId) -> None:
        """Fail the delivered, unanswered requests of a closed connection at once."""
        for response in self._delivered.pop(conn_id, ()):
            if not response.done():
                response.set_exception(_ConnectionGone())

    def cancel_outbound(self) -> None:
        """The network is closing: every pending ``send`` fails with ``ShutdownError``."""
        self._closing = True
        for task in list(self._outbound_tasks):
            task.cancel()

    async def close(self) -> None:
        """Once the node is closed: stop the deadlines, wait for the sends, end ``requests``."""
        self._deadlines.close()
        if self._outbound_tasks:
            await asyncio.gather(*self._outbound_tasks, return_exceptions=True)
        self.requests.close()

    # -- outbound requests ---------------------------------------------------------------

    async def send(
        self, peer: PeerId, request: Rq, connect: Callable[[PeerId], Awaitable[Connection]]
    ) -> Rs:
        """Send ``request`` to ``peer`` on a connection from ``connect``; its response."""
        payload = self._codec.encode_request(request)
        request_id = self._next_id()
        task = asyncio.current_task()
        assert task is not None
        self._outbound_tasks.add(task)
        try:
            try:
                conn = await connect(peer)
            except ShutdownError:
                raise
            except P2PError as exc:
                raise RequestDialError(f"Failed to dial the requested peer: {exc}") from exc
            deadline = self._deadlines.start(task)
            try:
                body = await send_request_on(
                    conn,
                    self._config.protocols,
                    payload,
                    framing=self._config.framing,
                    max_request_bytes=self._config.max_request_bytes,
                    max_response_bytes=self._config.max_response_bytes,
                )
            except asyncio.CancelledError:
                if deadline.expired:
                    task.uncancel()
                    raise RequestTimeoutError(request_id=request_id) from None
                raise
            finally:
                deadline.finish()
            try:
                response: Rs = self._codec.decode_response(body)
            except CodecError as exc:
                raise RequestConnectionClosedError(f"invalid response: {exc}") from exc
            return response
        except asyncio.CancelledError:
            if self._closing:
                task.uncancel()
                raise ShutdownError(request_id=request_id) from None
            raise
        finally:
            self._outbound_tasks.discard(task)

    # -- inbound requests ----------------------------------------------------------------

    async def serve(self, stream: Stream) -> None:
        """The stream handler of the request protocols."""
        request_id = self._next_id()
        conn_id = stream.connection.id
        config = self._config
        count = self._inflight.get(conn_id, 0)
        if (
            count >= config.max_concurrent_inbound_requests_per_connection
            or self._inflight_total >= config.max_concurrent_inbound_requests
        ):
            # Shed load before doing any work: the requester sees a reset at once
            # (RequestRefusedError) instead of a timeout later.
            stream.reset()
            failure: InboundFailure | None = InboundFailure.OVERLOADED
        else:
            self._inflight[conn_id] = count + 1
            self._inflight_total += 1
            try:
                failure = await self._serve_admitted(stream, request_id)
            finally:
                self._inflight_total -= 1
                left = self._inflight[conn_id] - 1
                if left:
                    self._inflight[conn_id] = left
                else:
                    del self._inflight[conn_id]
        if failure is None:
            return
        self._emit(InboundRequestFailed(request_id, stream.connection.remote_peer, failure))
        if failure in _GAVE_UP and config.framing is Framing.LENGTH_PREFIXED:
            await _linger_then_reset(stream, self._linger_timeout)
        elif failure in _CLOSE_UNANSWERED and config.framing is Framing.LENGTH_PREFIXED:
            await _close(stream)
        else:
            # Reset: overload, unreadable request, stalled write; and every failure with
            # EOF framing, where a clean close would read as an empty response.
            stream.reset()

    async def _serve_admitted(self, stream: Stream, request_id: RequestId) -> InboundFailure | None:
        """Read, decide, deliver, answer; the failure, if any, exactly as it happened."""
        conn = stream.connection
        peer = conn.remote_peer
        config = self._config
        loop = asyncio.get_running_loop()
        response: asyncio.Future[bytes] = loop.create_future()
        written: asyncio.Future[None] = loop.create_future()
        task = asyncio.current_task()
        assert task is not None
        # What the deadline means if it strikes now: the phase of the exchange.
        phase = InboundFailure.TIMEOUT
        failure: InboundFailure | None = None
        deadline = self._deadlines.start(task)
        try:
            body = await read_request(
                stream, framing=config.framing, max_request_bytes=config.max_request_bytes
            )
            try:
                value: Rq = self._codec.decode_request(body)
                view = self._firewall_view(value)
            except (P2PError, ValueError, TypeError) as exc:
                log.debug("invalid request from %s: %s", peer, exc)
                return InboundFailure.INVALID_REQUEST
            phase = InboundFailure.RESPONSE_TIMEOUT
            outcome = await self._answer(
                stream, request_id, conn.id, peer, value, view, response, written
            )
            if isinstance(outcome, InboundFailure):
                failure = outcome
                return failure
            phase = InboundFailure.SEND_TIMEOUT
            await write_response(stream, outcome, framing=config.framing)
            written.set_result(None)
            return None
        except asyncio.CancelledError:
            if not deadline.expired:
                raise
            task.uncancel()
            failure = phase
            return failure
        except P2PError as exc:
            failure = _stream_failure(stream, exc, phase)
            return failure
        finally:
            deadline.finish()
            self._gate.request_finished(request_id)
            # A late respond() must fail, not wait forever.
            if not response.done():
                response.set_exception(_Omitted())
                response.exception()
            if not written.done():
                ended = failure.value if failure is not None else "request ended"
                written.set_exception(InvalidStateError(ended))
                written.exception()

    async def _answer(
        self,
        stream: Stream,
        request_id: RequestId,
        conn_id: ConnectionId,
        peer: PeerId,
        value: Rq,
        view: Any,
        response: asyncio.Future[bytes],
        written: asyncio.Future[None],
    ) -> bytes | InboundFailure:
        """The firewall's decision, then the application's answer (or why there is none)."""
        reason = await self._gate.decide(request_id, peer, conn_id, view)
        if reason is RejectReason.NOT_PERMITTED:
            return InboundFailure.NOT_PERMITTED
        if reason is not None:
            return InboundFailure.CONNECTION_CLOSED
        if not stream.connection.is_established:
            return InboundFailure.CONNECTION_CLOSED  # closed while the decision was queued
        inbound: InboundRequest[Rq, Rs] = InboundRequest(
            peer, request_id, value, response, written, self._codec.encode_response
        )
        delivered = self._delivered.get(conn_id)
        if delivered is None:
            delivered = self._delivered[conn_id] = set()
        delivered.add(response)
        try:
            if not await self.requests.send(inbound):
                inbound.drop()
            del inbound  # the application holds the only reference now
            return await response
        except _Omitted:
            return InboundFailure.RESPONSE_OMISSION
        except _ConnectionGone:
            return InboundFailure.CONNECTION_CLOSED
        finally:
            delivered.discard(response)
            if not delivered and self._delivered.get(conn_id) is delivered:
                del self._delivered[conn_id]


_GAVE_UP = frozenset({InboundFailure.TIMEOUT, InboundFailure.RESPONSE_TIMEOUT})
"""We gave up waiting: keep the stream open so the requester meets its own deadline."""

_CLOSE_UNANSWERED = frozenset(
    {
        InboundFailure.NOT_PERMITTED,
        InboundFailure.RESPONSE_OMISSION,
        InboundFailure.CONNECTION_CLOSED,
        InboundFailure.CANCELLED,
    }
)
"""Deliberate non-answers: a clean close (the requester's ``ResponseOmittedError``)."""


def _stream_failure(stream: Stream, exc: P2PError, phase: InboundFailure) -> InboundFailure:
    """Why a stream operation of an inbound request failed."""
    if not stream.connection.is_established:
        return InboundFailure.CONNECTION_CLOSED
    if isinstance(exc, StreamResetError):
        return InboundFailure.CANCELLED  # the requester reset its stream
    if phase is InboundFailure.TIMEOUT:
        return InboundFailure.INVALID_REQUEST  # early EOF, bad length prefix, too large
    return InboundFailure.CONNECTION_CLOSED


async def _linger_then_reset(stream: Stream, linger: float) -> None:
    """After our deadline: no FIN (a clean close would read as "omitted"), but wait for
    the requester to give up on its own deadline (it started first), at most
    ``linger`` seconds, discarding what it sends; then reset."""
    with contextlib.suppress(TimeoutError, P2PError):
        async with asyncio.timeout(linger):
            while await stream.read(1 << 16):
                pass
    stream.reset()


async def _close(stream: Stream) -> None:
    try:
        await stream.close()
    except P2PError:
        stream.reset()
