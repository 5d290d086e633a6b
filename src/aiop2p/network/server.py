"""``RequestServer``: the request handler of :meth:`Network.serve`, run with bounds.

Each approved request runs ``handler(request)`` in a task of its own, created in the
connection's input dispatch (no channel, no extra hop): a handler that answers before it
first waits answers in the same flush as the request's Yamux ACK.  At most
``max_concurrency`` handlers run at once; further requests wait in arrival order (their
number is bounded by the inbound bounds, ``max_concurrent_inbound_requests`` and
``…_per_connection``), each still under its deadline.

A handler's exception is logged once with its traceback and reported as
``InboundFailure.HANDLER_ERROR``; serving goes on.  With the chunked framing the
requester learns it too, as an error chunk (``RemoteError``): the handler's own
``RemoteError`` code and message, or ``SERVER_ERROR`` naming the exception's type only
(its text may hold what the peer should not see).  A handler that is an async generator
streams its items (chunked framing only; :meth:`InboundExchange.stream_responses`).
When a request ends before its handler does (the requester reset the stream, the
deadline passed, the connection closed), the handler task is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

from ..errors import InvalidArgumentError, InvalidStateError, RemoteError, ResultCode
from ..events import InboundFailure
from .config import Framing
from .inbound import InboundExchange, InboundRequest

__all__ = ["DEFAULT_MAX_CONCURRENCY", "RequestHandler", "RequestServer"]

log = logging.getLogger(__name__)

Rq = TypeVar("Rq")
Rs = TypeVar("Rs")

RequestHandler = Callable[[InboundRequest[Rq, Rs]], Awaitable[Rs] | AsyncIterator[Rs]]
"""``async def handler(request) -> response`` (see :meth:`Network.serve`), or, on a
chunked protocol, an async generator that yields the responses one by one."""

DEFAULT_MAX_CONCURRENCY = 256
"""Handlers running at once by default (each is one task)."""


class RequestServer(Generic[Rq, Rs]):
    """Runs ``handler`` for each request given to :meth:`take`, ``max_concurrency`` at once."""

    def __init__(self, handler: RequestHandler[Rq, Rs], max_concurrency: int) -> None:
        if (
            not isinstance(max_concurrency, int)
            or isinstance(max_concurrency, bool)
            or max_concurrency < 1
        ):
            raise InvalidArgumentError(
                f"max_concurrency must be an int >= 1, not {max_concurrency!r}"
            )
        self._handler = handler
        self._max = max_concurrency
        self._running: set[asyncio.Task[None]] = set()
        self._waiting: deque[tuple[InboundExchange, InboundRequest[Rq, Rs]]] = deque()
        self._stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def running(self) -> int:
        """Handlers running now."""
        return len(self._running)

    def take(self, exchange: InboundExchange, request: InboundRequest[Rq, Rs]) -> None:
        """Serve ``request`` now, or after the handlers before it when at the bound."""
        if len(self._running) < self._max:
            self._start(exchange, request)
        else:
            self._waiting.append((exchange, request))

    def _start(self, exchange: InboundExchange, request: InboundRequest[Rq, Rs]) -> None:
        task = exchange.loop.create_task(self._run(exchange, request))
        self._running.add(task)
        task.add_done_callback(self._finished)
        exchange.wait_in(task)  # cancelled if the request ends first

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        waiting = self._waiting
        while waiting and len(self._running) < self._max:
            exchange, request = waiting.popleft()
            if not request.answered:  # skip the ones that ended while waiting
                self._start(exchange, request)

    async def _run(self, exchange: InboundExchange, request: InboundRequest[Rq, Rs]) -> None:
        me = asyncio.current_task(exchange.loop)
        try:
            result = self._handler(request)
            if isinstance(result, AsyncIterator):
                if exchange.framing is not Framing.CHUNKED:
                    close = getattr(result, "aclose", None)
                    if close is not None:
                        await close()
                    raise InvalidStateError(
                        f"the handler streams responses, but {exchange.protocol} is "
                        f"{exchange.framing.value}: only the chunked framing streams"
                    )
                await exchange.stream_responses(result, request.encode)
                exchange.done_waiting(me)
                return
            response = await result
        except asyncio.CancelledError:
            exchange.done_waiting(me)
            # serve() itself was cancelled, or the network closed (a request that ended
            # first, e.g. reset by its requester, is already over: no-op)
            exchange.fail(
                ResultCode.SERVER_ERROR,
                "the server stopped serving the request",
                InboundFailure.RESPONSE_OMISSION,
            )
            raise
        except RemoteError as exc:  # the handler's own answer: this code, this message
            exchange.done_waiting(me)
            code = exc.code
            if not isinstance(code, ResultCode) or code is ResultCode.SUCCESS:
                code = ResultCode.SERVER_ERROR  # not a code the wire format defines
            exchange.fail(code, exc.message, InboundFailure.HANDLER_ERROR)
            return
        except Exception as exc:
            exchange.done_waiting(me)
            if exchange.failable:
                log.exception(
                    "request handler failed on request %s from %s",
                    request.request_id,
                    request.peer,
                )
                exchange.fail(
                    ResultCode.SERVER_ERROR,
                    f"the request handler failed ({type(exc).__name__})",
                    InboundFailure.HANDLER_ERROR,
                )
            return
        exchange.done_waiting(me)
        if request.answered:
            return  # it answered itself with respond(), or the request ended meanwhile
        try:
            request.respond_nowait(response)
        except Exception as exc:
            log.exception(
                "request handler's response to request %s from %s could not be sent",
                request.request_id,
                request.peer,
            )
            exchange.fail(
                ResultCode.SERVER_ERROR,
                f"the response could not be encoded ({type(exc).__name__})",
                InboundFailure.HANDLER_ERROR,
            )

    async def wait_stopped(self) -> None:
        """Until :meth:`stop` (the network closes)."""
        await asyncio.shield(self._stopped)

    def stop(self) -> None:
        if not self._stopped.done():
            self._stopped.set_result(None)

    async def close(self) -> None:
        """Cancel the running handlers and drop the waiting requests (serve() ended)."""
        self.stop()
        waiting = self._waiting
        while waiting:
            waiting.popleft()[1].drop()
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
