"""The request exchange, both directions: one stream per request, one message each way.

:class:`RequestExchange` sends requests (``send``) and serves inbound ones (``accept``,
an inline stream handler: each admitted stream is served by an
:class:`~aiop2p.network.inbound.InboundExchange`, which reads the request, asks the
firewall gate, delivers an :class:`InboundRequest` to the application and writes its
answer without a task of its own), with the load-shedding bounds and one deadline
queue for both.

Two framings:

* ``LENGTH_PREFIXED`` (the seed's, default): unsigned-varint length + body; the
  requester keeps its write side open until it has read the response.
* ``EOF_DELIMITED`` (rust-libp2p ``request_response`` json/cbor codecs): the body is
  sent unframed and the writer half-closes; the reader reads to EOF.
* ``CHUNKED`` (in the style of the Ethereum consensus req/resp): a length-prefixed
  request, the requester half-closes; the response is chunks of one result byte
  (:class:`~aiop2p.errors.ResultCode`) and a length-prefixed payload (the value, or an
  error message), ended by the responder's FIN.  ``send_request`` takes the first chunk,
  :class:`ResponseStream` reads them all (docs/network.md, "Chunked framing").

Errors are mapped to the seed's outbound failure kinds (see :mod:`aiop2p.errors`); how
the remote ended the stream tells the requester why: closed unanswered is
``ResponseOmittedError`` (firewall, dropped), reset is ``RequestRefusedError`` (overload,
unreadable request).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, Generic, Self, TypeVar

from .._aio.connection import Connection
from .._aio.deadlines import Deadline, DeadlineQueue
from .._aio.stream import ConnectionId, Stream
from ..errors import (
    ConnectionClosedError,
    InvalidArgumentError,
    InvalidStateError,
    LimitExceededError,
    MessageTooLargeError,
    P2PError,
    ProtocolNotSupportedError,
    RelayLimitReachedError,
    RemoteError,
    RemoteProtocolError,
    RequestConnectionClosedError,
    RequestDialError,
    RequestRefusedError,
    RequestRelayLimitError,
    RequestTimeoutError,
    RequestTooLargeError,
    ResponseOmittedError,
    ResponseTooLargeError,
    ResultCode,
    ShutdownError,
    StreamClosedError,
    StreamError,
    StreamResetError,
    UnsupportedProtocolsError,
)
from ..events import InboundFailure, InboundRequestFailed, NetworkEvent, RequestId
from ..identity import PeerId
from .codecs import Codec, CodecError, RequestResponseCodec, codec_functions
from .config import MAX_ERROR_MESSAGE_BYTES, Framing, NetworkConfig, ProtocolConfig
from .event_channel import EventChannel
from .gate import FirewallGate
from .inbound import InboundExchange, InboundRequest
from .server import RequestServer

__all__ = [
    "ExchangeBudget",
    "RequestExchange",
    "ResponseStream",
    "Route",
    "send_request_on",
]

# Framing's members as globals: read per request, while an enum class's attributes go
# through EnumType.__getattr__'s slot (several times the cost).
_LENGTH_PREFIXED: Final = Framing.LENGTH_PREFIXED
_EOF_DELIMITED: Final = Framing.EOF_DELIMITED
_CHUNKED: Final = Framing.CHUNKED

log = logging.getLogger(__name__)

Rq = TypeVar("Rq")
Rs = TypeVar("Rs")


async def send_request_on(
    conn: Connection,
    protocols: tuple[str, ...],
    payload: bytes,
    framing: Framing,
    max_request_bytes: int,
    max_response_bytes: int,
) -> bytes:
    """Send ``payload`` on a new stream of ``conn`` and return the response body
    (positional arguments: matched without keyword lookups, once per request)."""
    try:
        stream = _open(conn, protocols, payload, max_request_bytes)
        try:
            if len(protocols) > 1:
                await stream.wait_negotiated()
            if framing is _LENGTH_PREFIXED:
                await stream.write_message(payload)
                response = await stream.read_message(max_response_bytes)
            elif framing is _CHUNKED:
                await stream.write_message(payload)
                await stream.close()
                chunk = await read_chunk(stream, max_response_bytes)
                if chunk is None:
                    raise StreamClosedError("stream ended before a response")
                response = chunk
            else:
                await stream.write(payload)
                await stream.close()
                response = await stream.read_until_eof(max_response_bytes)
        except BaseException:
            stream.reset()  # no-op when already closed or reset
            raise
        stream.close_write()  # a response came, so the stream is negotiated: Stream.close
    except P2PError as exc:
        error = _as_request_error(exc)
        if error is None:
            raise
        raise error from exc
    return response


def _open(conn: Connection, protocols: tuple[str, ...], payload: bytes, limit: int) -> Stream:
    if len(payload) > limit:
        raise RequestTooLargeError(
            f"request of {len(payload)} bytes exceeds max_request_bytes ({limit})"
        )
    try:
        return conn.open_stream(protocols)
    except (ConnectionClosedError, StreamError) as exc:
        raise _closed_error(exc, str(exc)) from exc


def _as_request_error(exc: P2PError) -> P2PError | None:
    """A stream or negotiation error as the requester's :class:`RequestError` kind
    (``None``: it stays as it is).  A function, not a context manager: it runs only when
    something failed, not twice per request."""
    if isinstance(exc, ProtocolNotSupportedError):
        return UnsupportedProtocolsError()
    if isinstance(exc, MessageTooLargeError):
        return ResponseTooLargeError(f"response too large: {exc}")
    if isinstance(exc, StreamClosedError):
        return ResponseOmittedError(
            "Connection was closed before a response was received"
            " (the remote closed the stream without answering)"
        )
    if isinstance(exc, StreamResetError):
        return RequestRefusedError(
            "Connection was closed before a response was received"
            " (the remote reset the stream: it refused the request, e.g. overloaded)"
        )
    if isinstance(exc, RemoteProtocolError):
        return RequestConnectionClosedError(f"invalid response: {exc}")
    if isinstance(exc, StreamError | ConnectionClosedError):
        return _closed_error(exc)
    return None


async def read_chunk(stream: Stream, max_bytes: int) -> bytes | None:
    """One response chunk of the chunked framing: its payload, ``None`` at the clean end
    of the response; an error chunk raises :class:`RemoteError`, an unknown result code
    or a chunk above ``max_bytes`` resets the stream and raises."""
    code = await stream.read(1)
    if not code:
        return None
    result = code[0]
    if result == ResultCode.SUCCESS:
        return await stream.read_message(max_bytes)
    if result > ResultCode.RESOURCE_UNAVAILABLE:
        stream.reset()
        raise RemoteProtocolError(f"unknown result code {result}")
    message = await stream.read_message(MAX_ERROR_MESSAGE_BYTES)
    stream.reset()  # an error chunk ends the response; nothing after it is read
    raise RemoteError(result, message.decode("utf-8", "replace"))


def _closed_error(exc: P2PError, message: str | None = None) -> RequestConnectionClosedError:
    """A relay's limit keeps its name (and ``limit_name``): the requester can tell a
    relay quota from a peer that went away."""
    if isinstance(exc, RelayLimitReachedError):
        return RequestRelayLimitError(exc)
    return RequestConnectionClosedError(message)


class ExchangeBudget:
    """What every request protocol of a Network shares: the request ids (one sequence,
    so the firewall never sees two requests with one id), the load-shedding counts
    (``max_concurrent_inbound_requests`` bounds the node, not each protocol) and the
    one deadline queue (``request_timeout``)."""

    def __init__(self, config: NetworkConfig) -> None:
        self.ids = itertools.count(1)
        self.deadlines = DeadlineQueue(config.request_timeout)
        self.inflight: dict[ConnectionId, int] = {}
        self.inflight_total = 0


class RequestExchange(Generic[Rq, Rs]):
    """Both directions of the request exchange for one request protocol of a network.

    ``spec`` is the protocol (ids, framing, sizes); ``budget`` what the network's
    protocols share; ``emit`` reports a failed inbound request; ``linger_timeout`` bounds
    how long a stream we gave up on (or answered) is kept open for its requester.  The
    public attributes are what :class:`~aiop2p.network.inbound.InboundExchange` reads.
    """

    def __init__(
        self,
        config: NetworkConfig,
        codec: Codec | RequestResponseCodec,
        firewall_view: Callable[[Rq], Any] | None,
        gate: FirewallGate,
        *,
        emit: Callable[[NetworkEvent], None],
        linger_timeout: float,
        spec: ProtocolConfig | None = None,
        budget: ExchangeBudget | None = None,
    ) -> None:
        self._config = config
        self.spec = spec = spec or config.default_protocol()
        self._budget = budget or ExchangeBudget(config)
        self.codec = codec_functions(codec)
        self.firewall_view = firewall_view
        """What the firewall's rules see of a request; ``None``: the request itself."""
        self.framing = spec.framing
        self.max_request_bytes = spec.max_request_bytes
        self._gate = gate
        self._emit = emit
        self.linger_timeout = linger_timeout
        self.requests: EventChannel[InboundRequest[Rq, Rs]] = EventChannel(
            config.requests_channel.capacity, config.requests_channel.policy, name="requests"
        )
        """Approved inbound requests, for the application."""
        self.deadlines: DeadlineQueue = self._budget.deadlines
        """``request_timeout`` for every request of the network, both directions."""
        self._outbound_tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the first send
        self._streams: weakref.WeakSet[ResponseStream[Any]] = weakref.WeakSet()
        """Open response streams (weak: a stream the requester drops resets at once)."""
        self._closing = False
        self._server: RequestServer[Rq, Rs] | None = None

    @property
    def _inflight_total(self) -> int:
        return self._budget.inflight_total

    def start_serving(self, server: RequestServer[Rq, Rs]) -> None:
        """From now on approved requests go to ``server`` instead of ``requests``."""
        if self._server is not None:
            raise InvalidStateError("already serving: one serve() per protocol at a time")
        self._server = server

    def stop_serving(self, server: RequestServer[Rq, Rs]) -> None:
        if self._server is server:
            self._server = None

    def _next_id(self) -> RequestId:
        return RequestId(next(self._budget.ids))

    def closing(self) -> None:
        """The network is closing: every pending ``send`` fails with ``ShutdownError``,
        ``serve`` returns."""
        self._closing = True
        for task in list(self._outbound_tasks):
            task.cancel()
        for response in list(self._streams):
            response.shut_down()
        if self._server is not None:
            self._server.stop()

    async def close(self) -> None:
        """Once the node is closed: stop the deadlines, wait for the sends, end ``requests``."""
        self.deadlines.close()  # shared: closing it again (another protocol) is harmless
        if self._outbound_tasks:
            await asyncio.gather(*self._outbound_tasks, return_exceptions=True)
        self.requests.close()

    # -- outbound requests ---------------------------------------------------------------

    async def send(
        self,
        target: Any,
        request: Rq,
        route: Route,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - replaces the shared deadline queue's
    ) -> Rs:
        """Send ``request`` to the peer ``target`` names, on a connection ``route`` finds;
        its response.

        ``timeout`` replaces ``request_timeout`` for this call."""
        route.check_open()
        peer = route.peer_of(target)
        if timeout is not None:
            _check_timeout(timeout)
        payload = self.codec.encode_request(request)
        request_id = self._next_id()
        loop = self._loop
        if loop is None:  # asked once: asyncio.get_running_loop() costs a getpid syscall
            loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        self._outbound_tasks.add(task)
        try:
            conn = route.connected(peer)
            if conn is None:
                conn = await _dial(route, peer)
            deadline: Deadline | _CallDeadline = (
                self.deadlines.start(task) if timeout is None else _CallDeadline(task, timeout)
            )
            try:
                spec = self.spec
                body = await send_request_on(
                    conn,
                    spec.protocols,
                    payload,
                    spec.framing,
                    spec.max_request_bytes,
                    spec.max_response_bytes,
                )
            except asyncio.CancelledError:
                if deadline.expired:
                    task.uncancel()
                    raise RequestTimeoutError(request_id=request_id) from None
                raise
            finally:
                deadline.finish()
            try:
                response: Rs = self.codec.decode_response(body)
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

    def request_stream(
        self,
        peer: PeerId,
        request: Rq,
        route: Route,
        *,
        timeout: float | None = None,
    ) -> ResponseStream[Rs]:
        """The responses of ``request`` as they come (``CHUNKED`` framing only)."""
        spec = self.spec
        if spec.framing is not _CHUNKED:
            raise InvalidArgumentError(
                f"request_stream needs the chunked framing; {spec.protocols[0]} is "
                f"{spec.framing.value}"
            )
        if timeout is not None:
            _check_timeout(timeout)
        payload = self.codec.encode_request(request)
        if len(payload) > spec.max_request_bytes:
            raise RequestTooLargeError(
                f"request of {len(payload)} bytes exceeds max_request_bytes "
                f"({spec.max_request_bytes})"
            )

        async def open_stream() -> Stream:
            conn = route.connected(peer) or await _dial(route, peer)
            stream = _open(conn, spec.protocols, payload, spec.max_request_bytes)
            try:
                await stream.write_message(payload)
                await stream.close()
            except BaseException:
                stream.reset()
                raise
            return stream

        return ResponseStream(
            self,
            open_stream(),
            self.codec.decode_response,
            max_chunk_bytes=spec.max_response_bytes,
            max_chunks=spec.max_response_chunks,
            timeout=timeout if timeout is not None else self._config.request_timeout,
            request_id=self._next_id(),
        )

    # -- inbound requests ----------------------------------------------------------------

    def accept(self, stream: Stream) -> None:
        """The inline stream handler of the request protocols (no task per stream)."""
        request_id = self._next_id()
        conn_id = stream.connection.id
        config = self._config
        budget = self._budget
        count = budget.inflight.get(conn_id, 0)
        if (
            count >= config.max_concurrent_inbound_requests_per_connection
            or budget.inflight_total >= config.max_concurrent_inbound_requests
        ):
            # Shed load before doing any work: the requester sees a reset at once
            # (RequestRefusedError) instead of a timeout later.
            stream.reset()
            self._emit(
                InboundRequestFailed(
                    request_id, stream.connection.remote_peer, InboundFailure.OVERLOADED
                )
            )
            return
        budget.inflight[conn_id] = count + 1
        budget.inflight_total += 1
        stream.set_sink(InboundExchange(self, stream, request_id))

    def decide(self, exchange: InboundExchange, value: Any, view: Any) -> None:
        """Ask the firewall about an inbound request; its verdict goes to ``exchange``."""
        gate = self._gate
        if gate.engine.allows_at_once(exchange.peer, exchange.conn_id):
            exchange.decided(None, value)  # no action list, no callback per request
            return
        gate.decide(
            exchange.request_id,
            exchange.peer,
            exchange.conn_id,
            view,
            lambda reason: exchange.decided(reason, value),
            exchange.protocol,
        )

    def deliver(self, exchange: InboundExchange, value: Rq) -> None:
        """Hand an approved request to the application."""
        inbound: InboundRequest[Rq, Rs] = InboundRequest(
            exchange.peer, exchange.request_id, value, exchange, self.codec.encode_response
        )
        server = self._server
        if server is not None:
            server.take(exchange, inbound)
            return
        try:
            accepted = self.requests.send_nowait(inbound)
        except LimitExceededError:  # a full BLOCK channel: wait for room, in order
            exchange.wait_in(exchange.loop.create_task(self._deliver_later(exchange, inbound)))
            return
        if not accepted:
            inbound.drop()

    async def _deliver_later(
        self, exchange: InboundExchange, inbound: InboundRequest[Rq, Rs]
    ) -> None:
        accepted = await self.requests.send(inbound)
        exchange.done_waiting(asyncio.current_task(exchange.loop))
        if not accepted:
            inbound.drop()

    def request_ended(self, exchange: InboundExchange) -> None:
        self._gate.request_finished(exchange.request_id)
        conn_id = exchange.conn_id
        budget = self._budget
        budget.inflight_total -= 1
        left = budget.inflight[conn_id] - 1
        if left:
            budget.inflight[conn_id] = left
        else:
            del budget.inflight[conn_id]

    def failed(self, exchange: InboundExchange, failure: InboundFailure) -> None:
        self._emit(InboundRequestFailed(exchange.request_id, exchange.peer, failure))


class Route:
    """How a request protocol's requests find their connection: the network's open check
    (``check_open``), its target rules (``peer_of``), the connection a request takes at
    once (``connected``: ``None`` when none, or when ``connect`` has to decide, e.g. refuse
    a banned peer) and its dialer (``connect``).  ``connected`` spares a request on an
    established connection the dialer's coroutines."""

    __slots__ = ("check_open", "connect", "connected", "peer_of")

    def __init__(
        self,
        *,
        check_open: Callable[[], None],
        peer_of: Callable[[Any], PeerId],
        connected: Callable[[PeerId], Connection | None],
        connect: Callable[[PeerId], Awaitable[Connection]],
    ) -> None:
        self.check_open = check_open
        self.peer_of = peer_of
        self.connected = connected
        self.connect = connect


async def _dial(route: Route, peer: PeerId) -> Connection:
    try:
        return await route.connect(peer)
    except ShutdownError:
        raise
    except P2PError as exc:
        raise RequestDialError(f"Failed to dial the requested peer: {exc}") from exc


def _check_timeout(timeout: object) -> None:
    if timeout is not None and (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or not 0 < timeout < float("inf")
    ):
        raise InvalidArgumentError(f"timeout must be a positive number, not {timeout!r}")


class ResponseStream(Generic[Rs]):
    """The responses to one request on a ``CHUNKED`` protocol, read as they come:
    ``async for item in proto.request_stream(peer, request)``.

    Flow-controlled end to end: a chunk is read (and its bytes credited to the Yamux
    window) only when the loop asks for the next item, so a requester that stops reading
    stops the responder's writes, and with them its generator.  Each item waits at most
    ``timeout`` seconds (``request_timeout`` by default) for its chunk
    (:class:`RequestTimeoutError`).  An error chunk raises :class:`RemoteError`; more than
    ``max_chunks`` chunks or a chunk above ``max_chunk_bytes`` resets the stream and
    raises :class:`ResponseTooLargeError`.  Leaving the loop early (``break``, an
    exception, :meth:`aclose`, or losing the object) resets the stream at once, which
    closes the responder's generator.
    """

    __slots__ = (
        "__weakref__",
        "_count",
        "_decode",
        "_done",
        "_max_bytes",
        "_max_chunks",
        "_opening",
        "_owner",
        "_shut_down",
        "_stream",
        "_timeout",
        "request_id",
    )

    def __init__(
        self,
        owner: RequestExchange[Any, Rs],
        opening: Coroutine[Any, Any, Stream],
        decode: Callable[[bytes], Rs],
        *,
        max_chunk_bytes: int,
        max_chunks: int,
        timeout: float,
        request_id: RequestId,
    ) -> None:
        self._owner = owner
        self._opening: Coroutine[Any, Any, Stream] | None = opening
        self._stream: Stream | None = None
        self._decode = decode
        self._max_bytes = max_chunk_bytes
        self._max_chunks = max_chunks
        self._timeout = timeout
        self._count = 0
        self._done = False
        self._shut_down = False
        self.request_id = request_id
        owner._streams.add(self)

    def __aiter__(self) -> Self:
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.aclose()

    async def __anext__(self) -> Rs:
        if self._done:
            if self._shut_down:
                raise ShutdownError(request_id=self.request_id)
            raise StopAsyncIteration
        owner = self._owner
        try:
            try:
                async with asyncio.timeout(self._timeout):
                    stream = self._stream
                    if stream is None:
                        opening = self._opening
                        assert opening is not None
                        self._opening = None
                        stream = self._stream = await opening
                    body = await read_chunk(stream, self._max_bytes)
                    if body is None:
                        self._finish(reset=False)
                        raise StopAsyncIteration
                    self._count += 1
                    if self._count > self._max_chunks:
                        raise ResponseTooLargeError(
                            f"more than max_response_chunks ({self._max_chunks}) responses"
                        )
            except P2PError as exc:
                error = _as_request_error(exc)
                if error is None:
                    raise
                raise error from exc
        except StopAsyncIteration:
            raise
        except TimeoutError:
            self._finish()
            raise RequestTimeoutError(request_id=self.request_id) from None
        except asyncio.CancelledError:
            self._finish()
            if owner._closing:
                raise ShutdownError(request_id=self.request_id) from None
            raise
        except BaseException:
            self._finish()
            if owner._closing:
                raise ShutdownError(request_id=self.request_id) from None
            raise
        try:
            return self._decode(body)
        except CodecError as exc:
            self._finish()
            raise RequestConnectionClosedError(f"invalid response: {exc}") from exc

    def _finish(self, *, reset: bool = True) -> None:
        self._done = True
        self._owner._streams.discard(self)
        opening = self._opening
        if opening is not None:
            self._opening = None
            opening.close()
        stream = self._stream
        if stream is not None:
            self._stream = None
            if reset:
                stream.reset()  # no-op once both sides are closed

    def shut_down(self) -> None:
        """The network is closing: end the stream (its reader gets ``ShutdownError``)."""
        self._shut_down = True
        self._finish()

    async def aclose(self) -> None:
        """Stop reading: the stream is reset, the responder's generator closed."""
        self._finish()

    def __del__(self) -> None:
        if self._done:
            return
        stream = self._stream
        if stream is not None and stream.connection.loop.is_closed():
            self._stream = None
        self._finish()


class _CallDeadline:
    """A deadline of its own, for a call with its own ``timeout``."""

    __slots__ = ("_handle", "_task", "expired")

    def __init__(self, task: asyncio.Task[Any], timeout: float) -> None:
        self._task = task
        self.expired = False
        self._handle = task.get_loop().call_later(timeout, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()

    def finish(self) -> None:
        self._handle.cancel()
