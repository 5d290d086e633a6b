"""``RequestProtocol``: one request protocol of a :class:`~aiop2p.network.Network`.

A Network serves its default protocol (``/p2p/1.0.0``, the seed's) and any number added
with :meth:`Network.add_protocol`, each with its own codec, framing and sizes.  Every
protocol is this one class over its own :class:`~aiop2p.network.exchange.RequestExchange`
(the Network's ``send_request``/``serve``/``requests`` are its default protocol's): the
firewall, the request ids, the load-shedding bounds and the deadline queue are shared.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

from ..identity import PeerId
from ..multiaddr import Multiaddr
from .config import ProtocolConfig
from .event_channel import EventChannel
from .exchange import RequestExchange, ResponseStream, Route
from .inbound import InboundRequest
from .server import DEFAULT_MAX_CONCURRENCY, RequestHandler, RequestServer

__all__ = ["RequestProtocol"]

Rq = TypeVar("Rq")
Rs = TypeVar("Rs")

Target = PeerId | Multiaddr | str


class RequestProtocol(Generic[Rq, Rs]):
    """Requests and responses on one protocol: what :meth:`Network.add_protocol` returns.

    ``route`` is how its requests reach a peer: the network's open check, target rules
    (``Network.send_request``'s) and dialer.
    """

    def __init__(self, exchange: RequestExchange[Rq, Rs], route: Route) -> None:
        self._exchange = exchange
        self._route = route

    @property
    def protocol_id(self) -> str:
        """The protocol id (the first, preferred one when there are several)."""
        return self._exchange.spec.protocols[0]

    @property
    def config(self) -> ProtocolConfig:
        return self._exchange.spec

    def __repr__(self) -> str:
        return f"<RequestProtocol {self.protocol_id} {self.config.framing.value}>"

    def requests(self) -> EventChannel[InboundRequest[Rq, Rs]]:
        """Approved inbound requests on this protocol (while :meth:`serve` runs, they go
        to its handler instead)."""
        return self._exchange.requests

    async def serve(
        self,
        handler: RequestHandler[Rq, Rs],
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        """Answer every approved request on this protocol with ``handler`` until the
        network closes or this call is cancelled (see :meth:`Network.serve`)."""
        self._route.check_open()
        server: RequestServer[Rq, Rs] = RequestServer(handler, max_concurrency)
        self._exchange.start_serving(server)
        try:
            await server.wait_stopped()
        finally:
            self._exchange.stop_serving(server)
            await server.close()

    def send_request(
        self,
        target: Target,
        request: Rq,
        *,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, Rs]:
        """Send ``request`` on this protocol and return the response (see
        :meth:`Network.send_request`); with the chunked framing, the first response, and
        an error chunk raises :class:`~aiop2p.errors.RemoteError`.

        A plain method returning the exchange's coroutine (``await`` it): every check
        happens when it runs, one coroutine frame less per request."""
        return self._exchange.send(target, request, self._route, timeout=timeout)

    def request_stream(
        self,
        target: Target,
        request: Rq,
        *,
        timeout: float | None = None,
    ) -> ResponseStream[Rs]:
        """Send ``request`` on this chunked protocol and read its responses as they come:
        ``async for item in proto.request_stream(peer, request)``.

        ``timeout`` (default ``request_timeout``) bounds the wait for each response.
        Leaving the loop resets the stream, which closes the responder's generator.
        Raises :class:`~aiop2p.errors.InvalidArgumentError` at once when the protocol is
        not chunked; the request errors of :meth:`send_request` while iterating."""
        route = self._route
        route.check_open()
        peer = route.peer_of(target)
        return self._exchange.request_stream(peer, request, route, timeout=timeout)
