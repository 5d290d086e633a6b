"""TCP transport over asyncio (IPv4, IPv6, and /dns* names via the system resolver)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import ipaddress
import os
import socket
import struct
import sys
from collections.abc import Callable

from ..errors import AddressInUseError, InvalidMultiaddrError, ListenError
from ..multiaddr import Multiaddr
from ._base import ProtocolFactory, ServerListener

__all__ = [
    "TcpListener",
    "TcpTransport",
    "listen_error",
    "listen_socket",
    "sockaddr_to_multiaddr",
    "tcp_target",
]

LISTEN_BACKLOG = 1024

_HOST_PROTOCOLS = {
    "ip4": socket.AF_INET,
    "ip6": socket.AF_INET6,
    "dns": 0,
    "dns4": socket.AF_INET,
    "dns6": socket.AF_INET6,
}


def tcp_target(addr: Multiaddr) -> tuple[str, int, int] | None:
    """``(host, port, family)`` if ``addr`` is plain TCP (optionally ending in /p2p)."""
    head = addr.tcp_head()
    if head is None or head.rest_names not in ((), ("p2p",)):
        return None
    return head.host, head.port, _HOST_PROTOCOLS[head.host_protocol]


def sockaddr_to_multiaddr(sockaddr: tuple[str, int] | tuple[str, int, int, int]) -> Multiaddr:
    host, port = sockaddr[0], sockaddr[1]
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    proto = "ip4" if ip.version == 4 else "ip6"
    return Multiaddr(f"/{proto}/{ip}/tcp/{port}")


def _tune(sock: socket.socket | None) -> None:
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def listen_error(addr: Multiaddr, exc: OSError) -> ListenError:
    """The :class:`ListenError` for a failed bind or listen on ``addr``."""
    if exc.errno == errno.EADDRINUSE:
        return AddressInUseError(f"cannot listen on {addr}: address already in use")
    return ListenError(f"cannot listen on {addr}: {exc.strerror or exc}")


def listen_socket(
    addr: Multiaddr, host: str, port: int, family: int, *, reuse_port: bool = False
) -> socket.socket:
    """A listening socket on ``(host, port)`` that no other socket listens on.

    Raises :class:`AddressInUseError` when one does, whatever process owns it.  Without
    ``reuse_port`` the kernel enforces that.  With it (``SO_REUSEPORT``, so that our own
    dials can leave from the listen port), Linux would let any socket of the same user
    that also sets ``SO_REUSEPORT`` share the port and split inbound connections with
    us, so the port is first probed with a bind *without* ``SO_REUSEPORT``, which
    fails if anything listens there; ``SO_REUSEADDR`` on the probe lets TIME_WAIT
    leftovers and our own outbound sockets (bound, never listening) pass.  Port 0 needs
    no probe: the kernel only picks a port nothing is bound to.  Once listening, the
    port's ``SO_REUSEPORT`` group is pinned to our socket (:func:`_pin_reuseport_group`)
    so that a socket slipping in after the probe still gets no connection.
    """
    sockaddr = (host, port)
    sock: socket.socket | None = None
    try:
        if reuse_port and port != 0:
            _bind_probe(sockaddr, family)
        sock = socket.socket(family, socket.SOCK_STREAM)
        _listen_options(sock, family)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(LISTEN_BACKLOG)
        if reuse_port:
            _pin_reuseport_group(sock)
        sock.setblocking(False)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise listen_error(addr, exc) from exc
    return sock


def _listen_options(sock: socket.socket, family: int) -> None:
    if os.name == "posix":  # elsewhere SO_REUSEADDR would let others take the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:  # /ip6/:: is IPv6 only, as /ip4/0.0.0.0 is IPv4 only
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


def _bind_probe(sockaddr: tuple[str, int], family: int) -> None:
    """Bind (never listen) a socket without ``SO_REUSEPORT``: OSError if a listener is there."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        _listen_options(probe, family)
        probe.bind(sockaddr)


_SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)
_BPF_RET_K = 0x06  # BPF_RET | BPF_K: return a constant


def _pin_reuseport_group(sock: socket.socket) -> None:
    """Linux: attach a one-instruction classic BPF program to the port's ``SO_REUSEPORT``
    group that picks index 0, the group's first socket (ours, since the probe found the
    port free), for every new connection.  Best effort: elsewhere the probe alone guards.
    """
    if not sys.platform.startswith("linux"):
        return
    insn = ctypes.create_string_buffer(struct.pack("=HBBI", _BPF_RET_K, 0, 0, 0), 8)
    fprog = struct.pack("@HP", 1, ctypes.addressof(insn))  # struct sock_fprog
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_CBPF, fprog)


class TcpListener(ServerListener):
    def __init__(self, server: asyncio.Server, addrs: list[Multiaddr]) -> None:
        super().__init__(server, addrs)
        self._on_close: Callable[[TcpListener], None] | None = None

    async def close(self) -> None:
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            with contextlib.suppress(ValueError):
                on_close(self)
        await super().close()


_REUSE_FALLBACK_ERRNOS = frozenset(
    {errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EINVAL, errno.EISCONN, errno.EALREADY}
)


def _reusable(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


class TcpTransport:
    """Dial and listen on ``/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>``.

    ``port_reuse``: listeners set ``SO_REUSEPORT`` and dials to IP addresses leave from
    a listen port (falling back to an ephemeral port if that fails).  A NAT then maps
    our outgoing connections to the port we listen on, so the address peers observe
    (identify) is one we can be reached at once the NAT has a matching mapping: what
    hole punching (DCUtR) relies on.  Off by default; it only affects listeners made
    after it is turned on.
    """

    def __init__(self, *, port_reuse: bool = False) -> None:
        self.port_reuse = port_reuse
        self._reuse_listeners: list[TcpListener] = []

    def can_dial(self, addr: Multiaddr) -> bool:
        return tcp_target(addr) is not None

    def can_listen(self, addr: Multiaddr) -> bool:
        target = tcp_target(addr)
        return target is not None and addr.ip_address is not None

    async def dial(self, addr: Multiaddr, factory: ProtocolFactory) -> asyncio.Protocol:
        target = tcp_target(addr)
        if target is None:
            raise InvalidMultiaddrError(f"not a TCP address: {addr}")
        host, port, family = target
        loop = asyncio.get_running_loop()
        holder: list[asyncio.Protocol] = []

        def build() -> asyncio.Protocol:
            return _Deferred(factory, holder)

        sock = await self._reuse_connect(host, port, family) if self.port_reuse else None
        if sock is not None:
            transport, _ = await loop.create_connection(build, sock=sock)
        else:
            transport, _ = await loop.create_connection(build, host, port, family=family)
        _tune(transport.get_extra_info("socket"))
        return holder[0]

    async def listen(self, addr: Multiaddr, factory: ProtocolFactory) -> TcpListener:
        target = tcp_target(addr)
        if target is None or not self.can_listen(addr):
            raise InvalidMultiaddrError(
                f"cannot listen on {addr}: expected /ip4|ip6/<ip>/tcp/<port>"
            )
        host, port, family = target
        loop = asyncio.get_running_loop()

        def build() -> asyncio.Protocol:
            return _Deferred(factory, None)

        reuse = self.port_reuse
        sock = listen_socket(
            addr, host, port, family, reuse_port=reuse and hasattr(socket, "SO_REUSEPORT")
        )
        try:
            server = await loop.create_server(build, sock=sock, backlog=LISTEN_BACKLOG)
        except OSError as exc:
            sock.close()
            raise listen_error(addr, exc) from exc
        addrs = [sockaddr_to_multiaddr(sock.getsockname()) for sock in server.sockets]
        listener = TcpListener(server, addrs)
        if reuse:
            self._reuse_listeners.append(listener)
            listener._on_close = self._reuse_listeners.remove
        return listener

    def _reuse_source(self, host: str, family: int) -> tuple[str, int] | None:
        """A listen (ip, port) to dial ``host`` from, or None."""
        try:
            target = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return None  # a name: resolved by the normal path
        want = socket.AF_INET if target.version == 4 else socket.AF_INET6
        if family and family != want:
            return None
        for listener in self._reuse_listeners:
            for bound in listener._bound:
                ip, head = bound.ip_address, bound.tcp_head()
                assert ip is not None and head is not None
                if (ip.version == 4) != (want == socket.AF_INET):
                    continue
                if ip.is_loopback and not target.is_loopback:
                    continue
                return str(ip), head.port
        return None

    async def _reuse_connect(self, host: str, port: int, family: int) -> socket.socket | None:
        """Connect from a listen port (``SO_REUSEPORT``); None to fall back to ephemeral."""
        source = self._reuse_source(host, family)
        if source is None:
            return None
        want = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(want, socket.SOCK_STREAM)
        try:
            _reusable(sock)
            sock.setblocking(False)
            sock.bind(source)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except OSError as exc:
            sock.close()
            if exc.errno in _REUSE_FALLBACK_ERRNOS:
                return None  # e.g. this 4-tuple is taken by a connection we accepted
            raise
        except BaseException:
            sock.close()
            raise
        return sock


class _Deferred(asyncio.Protocol):
    """Builds the real protocol once the socket's addresses are known, then steps aside.

    asyncio calls the factory before the transport exists; the connection driver wants
    both addresses, so this shim creates it in ``connection_made`` and re-points the
    transport at it (``set_protocol``), leaving no indirection on the data path.
    """

    def __init__(self, factory: ProtocolFactory, holder: list[asyncio.Protocol] | None) -> None:
        self._factory = factory
        self._holder = holder

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        _tune(sock)
        local = sockaddr_to_multiaddr(transport.get_extra_info("sockname"))
        remote = sockaddr_to_multiaddr(transport.get_extra_info("peername"))
        protocol = self._factory(local, remote)
        if self._holder is not None:
            self._holder.append(protocol)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
