"""The WebTransport transport: ``/ip4|ip6/<ip>/udp/<port>/quic-v1/webtransport``.

Listening (``…/webtransport`` without ``/certhash``) opens a UDP socket of its own (not
shared with a QUIC-v1 listener) whose connections are :class:`WebTransportConnection`;
the listener makes and rotates its certificates (:class:`ListenerCertificates`, on the
clock given to the transport) and reports its addresses with the ``/certhash`` of the
current and the next certificate, so they change when a certificate period ends.
Dialling needs an address with at least one ``/certhash``: the listener's certificate
is accepted by its hash only (there is no CA).  Everything else (connection ids, the
shared dial socket, pending-handshake bounds) is :class:`QuicTransport`'s.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from .._wire import multibase
from ..errors import InvalidMultiaddrError, ListenError
from ..multiaddr import Multiaddr
from ..protocols.webtransport import WebTransportTarget, parse_webtransport_addr
from ..transports._base import ProtocolFactory
from ..transports.tcp import listen_error
from .quic_connection import QuicConfig
from .quic_transport import QuicListener, QuicTransport
from .webtransport_certs import ListenerCertificates
from .webtransport_connection import WebTransportConnection, WebTransportEndpoint

__all__ = ["WebTransportListener", "WebTransportTransport"]


def _target(addr: Multiaddr) -> WebTransportTarget | None:
    try:
        return parse_webtransport_addr(addr)
    except InvalidMultiaddrError:
        return None


class WebTransportListener(QuicListener):
    """A WebTransport listener; its addresses carry the certhashes announced now."""

    def __init__(
        self,
        endpoint: WebTransportEndpoint,
        transport: WebTransportTransport,
        certificates: ListenerCertificates,
    ) -> None:
        super().__init__(endpoint, transport)
        self._certificates = certificates

    @property
    def addrs(self) -> list[Multiaddr]:
        hashes = self._certificates.announced()
        suffix = "".join(f"/certhash/{h}" for h in _multibase(hashes))
        return [Multiaddr(f"{addr}{suffix}") for addr in self._addrs]


def _multibase(hashes: tuple[bytes, ...]) -> list[str]:
    return [multibase.encode("u", h) for h in hashes]


class WebTransportTransport(QuicTransport):
    """Dial and listen on ``/ip4|ip6/<ip>/udp/<port>/quic-v1/webtransport``.

    ``clock`` (seconds since the epoch) drives certificate rotation; tests inject one.
    """

    endpoint_class = WebTransportEndpoint

    def __init__(
        self, config: QuicConfig | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(config)
        self._clock = clock

    def can_dial(self, addr: Multiaddr) -> bool:
        names = addr.protocol_names()
        return names[1:4] == ("udp", "quic-v1", "webtransport") and names[0] in ("ip4", "ip6")

    def can_listen(self, addr: Multiaddr) -> bool:
        target = _target(addr)
        return target is not None and not target.certhashes and target.peer is None

    async def listen(self, addr: Multiaddr, factory: ProtocolFactory) -> WebTransportListener:
        target = _target(addr)
        if target is None or target.certhashes or target.peer is not None:
            raise InvalidMultiaddrError(
                f"not a WebTransport listen address (…/quic-v1/webtransport, the listener "
                f"makes its certificates): {addr}"
            )
        family = socket.AF_INET if target.ip_version == 4 else socket.AF_INET6
        try:
            endpoint = await self._open(target.ip, target.port, family)
        except OSError as exc:
            raise listen_error(addr, exc) from exc
        assert isinstance(endpoint, WebTransportEndpoint)
        bound = endpoint.sockname
        if bound is None:
            endpoint.close()
            raise ListenError(f"cannot listen on {addr}")
        certificates = endpoint.certificates = ListenerCertificates(self._clock)
        proto = addr.protocol_names()[0]
        endpoint.local_addr = Multiaddr(f"/{proto}/{target.ip}/udp/{bound[1]}/quic-v1/webtransport")
        endpoint.accept = factory
        self._listening.append(endpoint)
        return WebTransportListener(endpoint, self, certificates)

    async def dial(self, addr: Multiaddr, factory: ProtocolFactory) -> WebTransportConnection:
        target = parse_webtransport_addr(addr)  # InvalidMultiaddrError for bad certhashes
        if target is None:
            raise InvalidMultiaddrError(f"not a WebTransport address: {addr}")
        if not target.certhashes:
            raise InvalidMultiaddrError(
                f"a WebTransport address needs /certhash to be dialled (no CA): {addr}"
            )
        family = socket.AF_INET if target.ip_version == 4 else socket.AF_INET6
        endpoint = await self._dial_endpoint(target.ip, family)
        conn = endpoint.dial(factory, addr.without_peer_id(), (target.ip, target.port))
        assert isinstance(conn, WebTransportConnection)
        return conn
