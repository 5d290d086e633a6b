"""The QUIC-v1 transport: ``/ip4|ip6/<ip>/udp/<port>/quic-v1`` on aioquic.

One UDP socket (a :class:`QuicEndpoint`) per listen address carries every connection
accepted there, and our dials leave from it too when its address can reach the target
(a wildcard or same-scope bind), so the port peers observe is the one we listen on.
Without a suitable listener, dials share one ephemeral endpoint per address family,
closed with its last connection.  Datagrams are routed to connections by destination
connection id; a datagram for none is only considered if it is a well-formed QUIC v1
Initial of full size (1200 bytes, RFC 9000 14.1) arriving at a listener with room
among its pending handshakes (``QuicConfig.max_pending_handshakes``): anything else is
dropped unanswered.

A QUIC connection is built by the node's connection factory, asked for a
:class:`QuicConnection` (the ``connection_class`` argument, see
:class:`ConnectionFactory`), so admission, limits and handlers are the node's as for TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable
from typing import Protocol, cast

from aioquic._buffer import Buffer, BufferReadError
from aioquic.quic.packet import QuicPacketType, QuicProtocolVersion, pull_quic_header

from ..errors import InvalidMultiaddrError, ListenError
from ..multiaddr import Multiaddr
from ..transports._base import ProtocolFactory
from ..transports.interfaces import expand_wildcard
from ..transports.tcp import listen_error
from .connection import Connection
from .quic_connection import QuicConfig, QuicConnection, SockAddr, sockaddr_of

__all__ = ["ConnectionFactory", "QuicEndpoint", "QuicListener", "QuicTransport", "quic_target"]

_MIN_INITIAL_BYTES = 1200
_CID_BYTES = 8  # aioquic's default connection id length (QuicConfiguration)


class ConnectionFactory(Protocol):
    """The node's factory as the QUIC transport calls it (``Node._make_factory``)."""

    def __call__(
        self, local: Multiaddr, remote: Multiaddr, connection_class: type[Connection] = ...
    ) -> Connection: ...


def quic_target(addr: Multiaddr) -> tuple[str, int, int] | None:
    """``(ip, port, family)`` if ``addr`` is ``/ip4|ip6/<ip>/udp/<port>/quic-v1[/p2p/..]``."""
    names = addr.protocol_names()
    if names[:1] not in (("ip4",), ("ip6",)) or names[1:3] != ("udp", "quic-v1"):
        return None
    if names[3:] not in ((), ("p2p",)):
        return None
    ip, port = addr.value_for(names[0]), addr.value_for("udp")
    assert ip is not None and port is not None
    return ip, int(port), socket.AF_INET if names[0] == "ip4" else socket.AF_INET6


def quic_multiaddr(sockaddr: SockAddr) -> Multiaddr:
    ip, port = sockaddr_of(sockaddr)
    proto = "ip4" if ipaddress.ip_address(ip).version == 4 else "ip6"
    return Multiaddr(f"/{proto}/{ip}/udp/{port}/quic-v1")


def _as_factory(factory: ProtocolFactory) -> ConnectionFactory:
    return cast("ConnectionFactory", factory)


class QuicEndpoint(asyncio.DatagramProtocol):
    """One UDP socket and the QUIC connections it carries."""

    connection_class: type[QuicConnection] = QuicConnection
    """What its connections are (a WebTransport endpoint's are a subclass)."""

    def __init__(self, config: QuicConfig, on_empty: Callable[[QuicEndpoint], None]) -> None:
        self._config = config
        self._on_empty = on_empty
        self._transport: asyncio.DatagramTransport | None = None
        self._cids: dict[bytes, QuicConnection] = {}
        self._conns: set[QuicConnection] = set()
        self._pending: set[QuicConnection] = set()
        self.accept: ProtocolFactory | None = None
        """The listener's factory while listening (None: inbound Initials are dropped)."""
        self.local_addr: Multiaddr | None = None
        self.family: int = socket.AF_INET

    # -- asyncio ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: SockAddr) -> None:
        # IPv6 sockets report (host, port, flowinfo, scope): keep (host, port), as dialled,
        # so that aioquic sees one network path.
        addr = (addr[0], addr[1])
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=_CID_BYTES)
        except (ValueError, BufferReadError):
            return  # not QUIC
        conn = self._cids.get(header.destination_cid)
        if conn is None:
            conn = self._accept(
                data, addr, header.packet_type, header.version, header.destination_cid
            )
            if conn is None:
                return
        conn.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors carry no connection id; QUIC's timers handle loss

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    # -- inbound ------------------------------------------------------------------------

    def _accept(
        self,
        data: bytes,
        addr: SockAddr,
        packet_type: QuicPacketType,
        version: int | None,
        dcid: bytes,
    ) -> QuicConnection | None:
        factory = self.accept
        if (
            factory is None
            or packet_type != QuicPacketType.INITIAL
            or version != QuicProtocolVersion.VERSION_1
            or len(data) < _MIN_INITIAL_BYTES
            or self.local_addr is None
        ):
            return None
        if len(self._pending) >= self._config.max_pending_handshakes:
            self._pending = {c for c in self._pending if not (c.is_established or c.is_closed)}
            if len(self._pending) >= self._config.max_pending_handshakes:
                return None
        conn = _as_factory(factory)(
            self.local_addr, self.remote_multiaddr(addr), self.connection_class
        )
        assert isinstance(conn, QuicConnection)
        self._conns.add(conn)
        self._pending.add(conn)
        conn.start(self, self._config, addr, original_destination_cid=dcid)
        return None if conn.is_closed else conn

    def remote_multiaddr(self, addr: SockAddr) -> Multiaddr:
        """The address an inbound connection from ``addr`` reports."""
        return quic_multiaddr(addr)

    # -- outbound -----------------------------------------------------------------------

    def dial(
        self, factory: ProtocolFactory, remote: Multiaddr, sockaddr: SockAddr
    ) -> QuicConnection:
        local = self.local_addr or Multiaddr("/ip4/0.0.0.0/udp/0/quic-v1")
        conn = _as_factory(factory)(local, remote, self.connection_class)
        assert isinstance(conn, QuicConnection)
        self._conns.add(conn)
        conn.start(self, self._config, sockaddr)
        return conn

    # -- QuicEndpointLike ---------------------------------------------------------------

    def sendto(self, data: bytes, addr: SockAddr) -> None:
        transport = self._transport
        if transport is not None:
            transport.sendto(data, addr)

    def add_cid(self, cid: bytes, conn: QuicConnection) -> None:
        self._cids[cid] = conn

    def remove_cid(self, cid: bytes) -> None:
        self._cids.pop(cid, None)

    def connection_gone(self, conn: QuicConnection) -> None:
        self._conns.discard(conn)
        self._pending.discard(conn)
        if not self._conns and self.accept is None:
            self._on_empty(self)

    @property
    def is_empty(self) -> bool:
        return not self._conns

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class QuicListener:
    """Listening on one UDP endpoint; closing stops accepting, connections stay."""

    def __init__(self, endpoint: QuicEndpoint, transport: QuicTransport) -> None:
        self._endpoint = endpoint
        self._transport = transport
        assert endpoint.local_addr is not None
        self._bound = [endpoint.local_addr]
        self._addrs = expand_wildcard(endpoint.local_addr)

    @property
    def addrs(self) -> list[Multiaddr]:
        return list(self._addrs)

    @property
    def bound_addrs(self) -> list[Multiaddr]:
        return list(self._bound)

    async def close(self) -> None:
        endpoint = self._endpoint
        if endpoint.accept is None:
            return
        endpoint.accept = None
        self._transport._listener_closed(endpoint)


class QuicTransport:
    """Dial and listen on ``/ip4|ip6/<ip>/udp/<port>/quic-v1``."""

    endpoint_class: type[QuicEndpoint] = QuicEndpoint

    def __init__(self, config: QuicConfig | None = None) -> None:
        self.config = config or QuicConfig()
        self._listening: list[QuicEndpoint] = []
        self._dialing: dict[int, QuicEndpoint] = {}

    def can_dial(self, addr: Multiaddr) -> bool:
        return quic_target(addr) is not None

    def can_listen(self, addr: Multiaddr) -> bool:
        return quic_target(addr) is not None

    async def _open(self, host: str, port: int, family: int) -> QuicEndpoint:
        loop = asyncio.get_running_loop()
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.setblocking(False)
            with contextlib.suppress(OSError):  # bulk: room for bursts of datagrams
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        except OSError:
            sock.close()
            raise
        endpoint = self.endpoint_class(self.config, self._endpoint_empty)
        endpoint.family = family
        await loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
        return endpoint

    async def listen(self, addr: Multiaddr, factory: ProtocolFactory) -> QuicListener:
        target = quic_target(addr)
        if target is None:
            raise InvalidMultiaddrError(f"not a QUIC address: {addr}")
        host, port, family = target
        try:
            endpoint = await self._open(host, port, family)
        except OSError as exc:
            raise listen_error(addr, exc) from exc
        bound = endpoint._transport.get_extra_info("sockname") if endpoint._transport else None
        if bound is None:
            endpoint.close()
            raise ListenError(f"cannot listen on {addr}")
        endpoint.local_addr = Multiaddr(
            f"/{addr.protocol_names()[0]}/{host}/udp/{bound[1]}/quic-v1"
        )
        endpoint.accept = factory
        self._listening.append(endpoint)
        return QuicListener(endpoint, self)

    def _listener_closed(self, endpoint: QuicEndpoint) -> None:
        if endpoint in self._listening:
            self._listening.remove(endpoint)
        if endpoint.is_empty:
            endpoint.close()

    def _endpoint_empty(self, endpoint: QuicEndpoint) -> None:
        if endpoint in self._listening:
            return
        if self._dialing.get(endpoint.family) is endpoint:
            del self._dialing[endpoint.family]
        endpoint.close()

    def _endpoint_for(self, ip: str, family: int) -> QuicEndpoint | None:
        """A listening endpoint our dial to ``ip`` can leave from, if any."""
        target_loopback = ipaddress.ip_address(ip).is_loopback
        for endpoint in self._listening:
            if endpoint.family != family or endpoint.local_addr is None:
                continue
            bound = endpoint.local_addr.ip_address
            if bound is not None and (bound.is_unspecified or bound.is_loopback == target_loopback):
                return endpoint
        return None

    async def dial(self, addr: Multiaddr, factory: ProtocolFactory) -> asyncio.Protocol:
        target = quic_target(addr)
        if target is None:
            raise InvalidMultiaddrError(f"not a QUIC address: {addr}")
        ip, port, family = target
        endpoint = await self._dial_endpoint(ip, family)
        return endpoint.dial(factory, addr.without_peer_id(), (ip, port))

    async def _dial_endpoint(self, ip: str, family: int) -> QuicEndpoint:
        """The endpoint a dial to ``ip`` leaves from: a listener's, else the shared one."""
        endpoint = self._endpoint_for(ip, family)
        if endpoint is None:
            endpoint = self._dialing.get(family)
            if endpoint is None:
                endpoint = await self._open(
                    "::" if family == socket.AF_INET6 else "0.0.0.0", 0, family
                )
                self._dialing[family] = endpoint
        return endpoint
