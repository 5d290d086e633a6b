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

Errors are mapped to the seed's outbound failure kinds (see :mod:`aiop2p.errors`); how
the remote ended the stream tells the requester why: closed unanswered is
``ResponseOmittedError`` (firewall, dropped), reset is ``RequestRefusedError`` (overload,
unreadable request).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

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
from .gate import FirewallGate
from .inbound import InboundExchange, InboundRequest
from .server import RequestServer

__all__ = [
    "RequestExchange",
    "send_request_on",
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


class RequestExchange(Generic[Rq, Rs]):
    """Both directions of the request exchange for one network.

    ``emit`` reports a failed inbound request; ``linger_timeout`` bounds how long a
    stream we gave up on (or answered) is kept open for its requester.  The public
    attributes are what :class:`~aiop2p.network.inbound.InboundExchange` reads.
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
        self.codec = codec_functions(codec)
        self.firewall_view = firewall_view
        self.framing = config.framing
        self.max_request_bytes = config.max_request_bytes
        self._gate = gate
        self._emit = emit
        self.linger_timeout = linger_timeout
        self.requests: EventChannel[InboundRequest[Rq, Rs]] = EventChannel(
            config.requests_channel.capacity, config.requests_channel.policy, name="requests"
        )
        """Approved inbound requests, for the application."""
        self._ids = itertools.count(1)
        self._deadlines = DeadlineQueue(config.request_timeout)
        """``request_timeout`` for every exchange, both directions, on one timer."""
        self._outbound_tasks: set[asyncio.Task[Any]] = set()
        # Inbound requests in flight, per connection and in all (the load-shedding bounds).
        self._inflight: dict[ConnectionId, int] = {}
        self._inflight_total = 0
        self._closing = False
        self._server: RequestServer[Rq, Rs] | None = None

    def start_serving(self, server: RequestServer[Rq, Rs]) -> None:
        """From now on approved requests go to ``server`` instead of ``requests``."""
        if self._server is not None:
            raise InvalidStateError("already serving: one serve() per protocol at a time")
        self._server = server

    def stop_serving(self, server: RequestServer[Rq, Rs]) -> None:
        if self._server is server:
            self._server = None

    def _next_id(self) -> RequestId:
        return RequestId(next(self._ids))

    def closing(self) -> None:
        """The network is closing: every pending ``send`` fails with ``ShutdownError``,
        ``serve`` returns."""
        self._closing = True
        for task in list(self._outbound_tasks):
            task.cancel()
        if self._server is not None:
            self._server.stop()

    async def close(self) -> None:
        """Once the node is closed: stop the deadlines, wait for the sends, end ``requests``."""
        self._deadlines.close()
        if self._outbound_tasks:
            await asyncio.gather(*self._outbound_tasks, return_exceptions=True)
        self.requests.close()

    # -- outbound requests ---------------------------------------------------------------

    async def send(
        self,
        peer: PeerId,
        request: Rq,
        connect: Callable[[PeerId], Awaitable[Connection]],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - replaces the shared deadline queue's
    ) -> Rs:
        """Send ``request`` to ``peer`` on a connection from ``connect``; its response.

        ``timeout`` replaces ``request_timeout`` for this call."""
        if timeout is not None and (
            not isinstance(timeout, int | float)
            or isinstance(timeout, bool)
            or not 0 < timeout < float("inf")
        ):
            raise InvalidArgumentError(f"timeout must be a positive number, not {timeout!r}")
        payload = self.codec.encode_request(request)
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
            deadline: Deadline | _CallDeadline = (
                self._deadlines.start(task) if timeout is None else _CallDeadline(task, timeout)
            )
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

    # -- inbound requests ----------------------------------------------------------------

    def accept(self, stream: Stream) -> None:
        """The inline stream handler of the request protocols (no task per stream)."""
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
            self._emit(
                InboundRequestFailed(
                    request_id, stream.connection.remote_peer, InboundFailure.OVERLOADED
                )
            )
            return
        self._inflight[conn_id] = count + 1
        self._inflight_total += 1
        stream.set_sink(InboundExchange(self, stream, request_id))

    def start_deadline(self, exchange: InboundExchange) -> Deadline:
        return self._deadlines.start(exchange)

    def decide(self, exchange: InboundExchange, value: Any, view: Any) -> None:
        """Ask the firewall about an inbound request; its verdict goes to ``exchange``."""
        self._gate.decide(
            exchange.request_id,
            exchange.peer,
            exchange.conn_id,
            view,
            lambda reason: exchange.decided(reason, value),
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
        exchange.done_waiting(asyncio.current_task())
        if not accepted:
            inbound.drop()

    def request_ended(self, exchange: InboundExchange) -> None:
        self._gate.request_finished(exchange.request_id)
        conn_id = exchange.conn_id
        self._inflight_total -= 1
        left = self._inflight[conn_id] - 1
        if left:
            self._inflight[conn_id] = left
        else:
            del self._inflight[conn_id]

    def failed(self, exchange: InboundExchange, failure: InboundFailure) -> None:
        self._emit(InboundRequestFailed(exchange.request_id, exchange.peer, failure))


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
