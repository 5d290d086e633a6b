"""mDNS peer discovery on the local network (libp2p ``discovery/mdns.md``).

The service multicasts a query (``_p2p._udp.local PTR``) on start and every
``query_interval_seconds`` seconds, answers queries (its own included, as the spec asks, so that
peers already present learn about a newcomer) with the node's listen addresses, and
records what others announce:

- a discovered peer's addresses go to ``node.peer_store`` as dial candidates, and a
  :class:`PeerDiscovered` event is emitted when a peer is new or announces a new address;
- an entry lives for the TTL its announcer gave (capped by ``max_record_ttl``); at 80 % of
  it the service queries again (RFC 6762 §5.2 cache maintenance), and if no fresh answer
  came by the end, the peer is forgotten and :class:`PeerExpired` is emitted; a goodbye
  (TTL 0) expires it at once;
- our own announcements (same peer id or peer name) are ignored.

One UDP socket per interface and address family, bound to port 5353 with
``SO_REUSEADDR`` (plus ``SO_REUSEPORT`` except on Linux, see
:data:`_SHARE_WITH_REUSEPORT`) so several peers (and other mDNS responders) share a
host, joined to 224.0.0.251 (and ff02::fb where the interface has IPv6), with multicast
loopback on so peers on the same host see each other.  On Linux ``IP_MULTICAST_ALL`` is
turned off so each socket receives only its own interface's traffic: answers go back on
the interface the query came from, and loopback addresses are announced and accepted only
on a loopback interface.  Loopback itself is used when it is multicast-capable and either
no LAN interface is usable or the node listens on a loopback address (joined when such a
listener appears), see :func:`select_interfaces`.

Time comes from the event loop clock (``loop.time()``, ``call_at``): no periodic task,
no sleep, so tests drive it with a fake loop clock (a one-off task opens the loopback
sockets when a loopback listener appears after start).  Responses are not delayed by RFC 6762's
random 20-120 ms, but a response on an interface follows the previous one by at least
``min_response_interval_seconds`` seconds (later queries within that window share one deferred
answer).  Legacy unicast queries (source port not 5353) are answered by multicast too.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import ipaddress
import logging
import os
import socket
import struct
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self, cast

from .._aio.emitter import Emitter
from ..errors import InvalidArgumentError, ListenError
from ..events import PeerDiscovered, PeerExpired
from ..identity import PeerId
from ..multiaddr import Multiaddr
from ..protocols.mdns import (
    DEFAULT_MAX_PACKET_SIZE,
    MAX_PACKET_SIZE,
    MDNS_IPV4_GROUP,
    MDNS_IPV6_GROUP,
    MDNS_PORT,
    SERVICE_NAME,
    MdnsQuery,
    MdnsResponse,
    build_meta_response,
    build_query,
    build_responses,
    parse_packet,
    peer_name_from_random,
)
from ..transports.interfaces import expand_wildcard

if TYPE_CHECKING:
    from .host import Host

__all__ = [
    "MdnsConfig",
    "MdnsEvent",
    "MdnsInterface",
    "MdnsService",
    "PeerDiscovered",
    "PeerExpired",
    "list_interfaces",
    "select_interfaces",
]

log = logging.getLogger(__name__)

_REFRESH_FRACTION = 0.8
_PEER_NAME_BYTES = 32
_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_IFF_RUNNING = 0x40
_IFF_MULTICAST = 0x1000
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux values
_IPV6_MULTICAST_ALL = 29


@dataclass(frozen=True, slots=True)
class MdnsConfig:
    """Settings of :class:`MdnsService`; times in seconds, ``max_*`` are counts."""

    service_name: str = SERVICE_NAME
    """``_p2p._udp.local``; a private network uses ``_p2p-<fingerprint>._udp.local``."""
    query_interval_seconds: float = 300.0
    """Seconds between our periodic queries (one is also sent at start)."""
    ttl: int = 360
    """Seconds others may keep our announcement (rust-libp2p's default, 6 minutes)."""
    max_record_ttl: int = 4500
    """Cap, seconds, on the TTL we honour from others (75 minutes, the DNS-SD PTR TTL)."""
    interfaces: tuple[str, ...] = ()
    """Interface names or IP addresses to use (``aiop2p serve/discover --mdns-interface``);
    empty: every interface that is up, multicast-capable and not loopback, plus loopback
    as ``include_loopback`` says."""
    include_loopback: bool | None = None
    """``None``: use loopback when it is multicast-capable and either no other interface
    is usable (up, carrier, an address) or the node listens on a loopback address;
    ``True``: always; ``False``: never."""
    ipv4: bool = True
    ipv6: bool = True
    """Also use ff02::fb on interfaces that have IPv6 (failures there are only logged)."""
    port: int = MDNS_PORT
    max_peers: int = 1024
    """Discovered peers remembered; announcements of further peers are dropped."""
    max_addrs_per_peer: int = 32
    max_queued_events: int = 1024
    """Events buffered for :meth:`MdnsService.events`; the oldest is dropped beyond it."""
    max_packet_bytes: int = DEFAULT_MAX_PACKET_SIZE
    """Bytes per response we send; more addresses are split over several packets."""
    min_response_interval_seconds: float = 1.0
    """Seconds between two of our responses on one interface (RFC 6762 §6)."""
    send_goodbye: bool = True
    """Announce our departure (TTL 0) on close."""

    def __post_init__(self) -> None:
        if self.query_interval_seconds <= 0 or self.min_response_interval_seconds < 0:
            raise InvalidArgumentError("mDNS intervals must be positive")
        if not 1 <= self.ttl <= 0x7FFFFFFF or self.max_record_ttl < 1:
            raise InvalidArgumentError(f"mDNS TTL out of range: {self.ttl}")
        if min(self.max_peers, self.max_addrs_per_peer, self.max_queued_events) < 1:
            raise InvalidArgumentError("mDNS limits must be at least 1")
        if not 512 <= self.max_packet_bytes <= MAX_PACKET_SIZE:
            raise InvalidArgumentError(f"max_packet_bytes must be 512..{MAX_PACKET_SIZE}")
        if not (self.ipv4 or self.ipv6):
            raise InvalidArgumentError("mDNS needs IPv4 or IPv6")


MdnsEvent = PeerDiscovered | PeerExpired


# -- interfaces -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MdnsInterface:
    name: str
    index: int
    ipv4: str | None
    """Its (first) IPv4 address, needed to use it for IPv4 multicast."""
    ipv6: tuple[str, ...]
    """Its IPv6 addresses, link-local included."""
    up: bool
    loopback: bool
    multicast: bool
    running: bool = True
    """Carrier present (``IFF_RUNNING``): an unplugged LAN does not make loopback idle."""

    @property
    def loopback_multicast(self) -> bool:
        """A loopback that delivers multicast: with the ``MULTICAST`` flag, or on Linux,
        whose ``lo`` loops multicast back without it (a fresh ``lo`` lacks the flag)."""
        return self.loopback and self.up and (self.multicast or sys.platform == "linux")


def list_interfaces() -> list[MdnsInterface]:
    """This host's interfaces with their flags (Linux ioctls and ``/proc``)."""
    v6: dict[str, list[str]] = {}
    with contextlib.suppress(OSError), open("/proc/net/if_inet6") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6:
                v6.setdefault(fields[5], []).append(
                    str(ipaddress.IPv6Address(bytes.fromhex(fields[0])))
                )
    try:
        names = socket.if_nameindex()
    except OSError:
        return []
    found: list[MdnsInterface] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for index, name in names:
            req = struct.pack("256s", name.encode()[:15])
            try:
                flags = struct.unpack_from("H", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, req), 16)[
                    0
                ]
            except OSError:
                continue
            try:
                ipv4: str | None = socket.inet_ntoa(
                    fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, req)[20:24]
                )
            except OSError:
                ipv4 = None
            found.append(
                MdnsInterface(
                    name=name,
                    index=index,
                    ipv4=ipv4,
                    ipv6=tuple(v6.get(name, ())),
                    up=bool(flags & _IFF_UP),
                    loopback=bool(flags & _IFF_LOOPBACK),
                    multicast=bool(flags & _IFF_MULTICAST),
                    running=bool(flags & _IFF_RUNNING),
                )
            )
    return found


def select_interfaces(
    config: MdnsConfig,
    available: list[MdnsInterface],
    *,
    listening_on_loopback: bool = False,
) -> list[MdnsInterface]:
    """The interfaces ``config`` asks for; unknown explicit names raise ``ListenError``.

    Without explicit names: the LAN interfaces (up, multicast, not loopback), then
    loopback per ``config.include_loopback``; automatic (``None``) takes a
    multicast-capable loopback when no LAN interface is usable (up, carrier, an address
    of an enabled family: the offline laptop) or when ``listening_on_loopback`` (peers
    bound to 127.0.0.1 are only reachable there).
    """
    if config.interfaces:
        chosen: list[MdnsInterface] = []
        for wanted in config.interfaces:
            match = [i for i in available if wanted in (i.name, i.ipv4) or wanted in i.ipv6]
            if not match:
                raise ListenError(f"no network interface named or addressed {wanted!r}")
            chosen.extend(i for i in match if i not in chosen)
        return chosen
    lan = [i for i in available if i.up and i.multicast and not i.loopback]
    include = config.include_loopback
    if include is None:
        usable = [
            i for i in lan if i.running and ((config.ipv4 and i.ipv4) or (config.ipv6 and i.ipv6))
        ]
        loops = [i for i in available if i.loopback_multicast]
        if loops and (listening_on_loopback or not usable):
            return lan + loops
        return lan
    if include:
        return lan + [i for i in available if i.up and i.loopback]
    return lan


def _listens_on_loopback(addrs: list[Multiaddr]) -> bool:
    return any(_is_loopback(a) and not a.has_protocol("p2p-circuit") for a in addrs)


# -- sockets ----------------------------------------------------------------------------


_SHARE_WITH_REUSEPORT = sys.platform != "linux"
"""Share port 5353 with ``SO_REUSEPORT`` (BSD, macOS need it), not on Linux.

On Linux ``SO_REUSEADDR`` alone lets any number of UDP sockets share the port and every
member of the group gets the multicast.  With ``SO_REUSEPORT`` as well, a datagram from
another host went to whichever socket of the reuse group the kernel hashed it to, ignoring
the interface each had joined on: with a loopback socket next to eth0's, about half of the
LAN's queries and answers landed on the loopback socket and were lost (measured: 7 to 12 of
16, Linux 6.18)."""


def _base_socket(family: socket.AddressFamily) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if _SHARE_WITH_REUSEPORT:
            _set_reuseport(sock)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _set_reuseport(sock: socket.socket) -> None:
    if hasattr(socket, "SO_REUSEPORT"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def _bind(sock: socket.socket, addr: tuple[str, int]) -> None:
    """Bind to the mDNS port; on Linux, if a responder holds it with ``SO_REUSEPORT``
    only, join it that way (the only way to share the port with it)."""
    try:
        sock.bind(addr)
    except OSError as exc:
        if _SHARE_WITH_REUSEPORT or exc.errno != errno.EADDRINUSE:
            raise
        _set_reuseport(sock)
        sock.bind(addr)


def _ipv4_socket(iface: MdnsInterface, port: int) -> socket.socket:
    assert iface.ipv4 is not None
    sock = _base_socket(socket.AF_INET)
    try:
        if sys.platform == "linux":
            sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
        _bind(sock, ("", port))
        local = socket.inet_aton(iface.ipv4)
        group = socket.inet_aton(MDNS_IPV4_GROUP)
        if sys.platform == "linux":  # ip_mreqn: by interface index, robust to shared addresses
            mreq = group + struct.pack("@4si", b"\0\0\0\0", iface.index)
        else:
            mreq = group + local
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        if sys.platform == "linux":
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreq)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, local)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def _ipv6_socket(iface: MdnsInterface, port: int) -> socket.socket:
    sock = _base_socket(socket.AF_INET6)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if sys.platform == "linux":
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MULTICAST_ALL, 0)
        _bind(sock, ("::", port))
        mreq = socket.inet_pton(socket.AF_INET6, MDNS_IPV6_GROUP) + struct.pack("@I", iface.index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, iface.index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
    except BaseException:
        sock.close()
        raise
    return sock


class _Endpoint(asyncio.DatagramProtocol):
    """One socket: an interface and an address family."""

    def __init__(self, service: MdnsService, iface: MdnsInterface, ipv6: bool) -> None:
        self.service = service
        self.iface = iface
        self.ipv6 = ipv6
        self.transport: asyncio.DatagramTransport | None = None
        self.last_response = float("-inf")
        self.deferred: asyncio.TimerHandle | None = None
        port = service.config.port
        self.group: tuple[str, int] | tuple[str, int, int, int] = (
            (MDNS_IPV6_GROUP, port, 0, iface.index) if ipv6 else (MDNS_IPV4_GROUP, port)
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.service._datagram_received(self, data)

    def error_received(self, exc: Exception) -> None:
        log.debug("mDNS socket on %s: %s", self.iface.name, exc)

    def send(self, packet: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        try:
            self.transport.sendto(packet, self.group)
        except OSError as exc:  # e.g. the interface went down
            log.debug("mDNS send on %s failed: %s", self.iface.name, exc)

    def close(self) -> None:
        if self.deferred is not None:
            self.deferred.cancel()
            self.deferred = None
        if self.transport is not None:
            self.transport.close()


# -- the service ------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    peer_name: str
    addrs: tuple[Multiaddr, ...]
    expires_at: float
    refresh_at: float | None
    """When to query again (80 % of the TTL); None once that query was sent."""
    added_to_store: set[Multiaddr] = field(default_factory=set)


class MdnsService:
    """Announce a node on the LAN and discover other libp2p peers there.

    ``async with MdnsService(node, config=MdnsConfig()) as mdns: async for event in
    mdns.events(): ...``.  Events are also emitted to the subscribers of
    :attr:`discovery` (synchronously, in the event loop).
    """

    def __init__(
        self,
        node: Host,
        *,
        config: MdnsConfig | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.node = node
        self.config = config or MdnsConfig()
        self.peer_name = peer_name_from_random(random_bytes(_PEER_NAME_BYTES))
        self._endpoints: list[_Endpoint] = []
        self._peers: dict[PeerId, _Entry] = {}
        self._names: dict[str, PeerId] = {}
        self._events: deque[MdnsEvent] = deque()
        self._events_ready = asyncio.Event()
        self.discovery: Emitter[MdnsEvent] = Emitter("mDNS discovery")
        """Every event, as it happens (:meth:`events` queues them for one consumer)."""
        self._query_handle: asyncio.TimerHandle | None = None
        self._expiry_handle: asyncio.TimerHandle | None = None
        self._announce_pending = False
        self._loopback_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._closed = False
        self._query_packet = build_query(self.config.service_name)
        self.dropped_events = 0
        """Events discarded because the queue was full (oldest first)."""
        self.dropped_peers = 0
        """Announcements of new peers ignored because ``max_peers`` were known."""
        self.ignored_packets = 0
        """Datagrams that were malformed or not about libp2p peers."""

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.close()

    @property
    def interfaces(self) -> list[MdnsInterface]:
        """Interfaces in use (one entry per socket)."""
        return [e.iface for e in self._endpoints]

    async def start(self) -> None:
        """Open the sockets, send the first query, and answer queries from now on.

        Raises ``ListenError`` if explicitly requested interfaces are unusable; with the
        default selection, a host without a usable interface just logs a warning that
        names the fix (``--mdns-interface`` / ``MdnsConfig.interfaces``).
        """
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        config = self.config
        errors: list[str] = []
        chosen = select_interfaces(
            config,
            list_interfaces(),
            listening_on_loopback=_listens_on_loopback(self.node.listen_addrs),
        )
        for iface in chosen:
            await self._open(iface, errors)
        if not self._endpoints:
            if config.interfaces:
                raise ListenError(f"mDNS could not use any interface: {'; '.join(errors)}")
            detail = f" ({'; '.join(errors)})" if errors else ""
            log.warning(
                "mDNS: no usable multicast interface%s, discovery is idle; choose one with "
                "--mdns-interface NAME (aiop2p serve, aiop2p discover) or "
                "MdnsConfig(interfaces=('NAME',)), e.g. lo for peers on this host "
                "(`ip link set lo up multicast on` if it is down)",
                detail,
            )
        else:
            log.info("mDNS on %s", ", ".join(dict.fromkeys(i.name for i in self.interfaces)))
        self.node.local_changed.subscribe(self._local_change)
        self._send_query()

    async def _open(self, iface: MdnsInterface, errors: list[str]) -> list[_Endpoint]:
        """Sockets for ``iface`` (IPv4 and/or IPv6 as configured); failures go to ``errors``."""
        config = self.config
        assert self._loop is not None
        families: list[bool] = []
        if config.ipv4 and iface.ipv4 is not None:
            families.append(False)
        # On loopback, IPv4 alone carries every announcement (v6 addresses included).
        if config.ipv6 and iface.ipv6 and not (iface.loopback and families):
            families.append(True)
        opened: list[_Endpoint] = []
        for ipv6 in families:
            try:
                sock = (_ipv6_socket if ipv6 else _ipv4_socket)(iface, config.port)
            except OSError as exc:
                (log.debug if ipv6 else log.warning)(
                    "mDNS: cannot use %s (%s): %s", iface.name, "IPv6" if ipv6 else "IPv4", exc
                )
                errors.append(f"{iface.name}: {exc}")
                continue
            endpoint = _Endpoint(self, iface, ipv6)
            try:
                await self._loop.create_datagram_endpoint(lambda e=endpoint: e, sock=sock)  # type: ignore[misc]
            except OSError as exc:
                sock.close()
                errors.append(f"{iface.name}: {exc}")
                continue
            except BaseException:
                sock.close()
                raise
            self._endpoints.append(endpoint)
            opened.append(endpoint)
        return opened

    def _loopback_wanted(self) -> bool:
        """The node now listens on loopback, which automatic selection does not cover yet."""
        config = self.config
        return (
            not config.interfaces
            and config.include_loopback is None
            and not any(e.iface.loopback for e in self._endpoints)
            and _listens_on_loopback(self.node.listen_addrs)
        )

    async def _add_loopback(self) -> None:
        """Join loopback after the node started listening there; query and announce on it."""
        try:
            errors: list[str] = []
            opened: list[_Endpoint] = []
            for iface in list_interfaces():
                if iface.loopback_multicast and not self._closed:
                    opened += await self._open(iface, errors)
            if self._closed:
                for endpoint in opened:
                    endpoint.close()
                return
            if opened:
                log.info("mDNS: listening on loopback, now also on %s", opened[0].iface.name)
            for endpoint in opened:
                endpoint.send(self._query_packet)
                self._respond(endpoint)
        finally:
            self._loopback_task = None

    async def close(self) -> None:
        """Say goodbye (TTL 0), close the sockets, end :meth:`events` iterators."""
        if self._closed:
            return
        self._closed = True
        for handle in (self._query_handle, self._expiry_handle):
            if handle is not None:
                handle.cancel()
        if self._loopback_task is not None:
            self._loopback_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loopback_task
        if self.config.send_goodbye:
            for endpoint in self._endpoints:
                for packet in self._responses(endpoint, ttl=0):
                    endpoint.send(packet)
        for endpoint in self._endpoints:
            endpoint.close()
        self._endpoints.clear()
        self._events_ready.set()

    # -- events --------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[MdnsEvent]:
        """Discovery events until the service closes (meant for a single consumer).

        At most ``max_queued_events`` wait here; beyond that the oldest is dropped and
        counted in :attr:`dropped_events`.
        """
        while True:
            if self._events:
                yield self._events.popleft()
                continue
            if self._closed:
                return
            self._events_ready.clear()
            await self._events_ready.wait()

    @property
    def discovered_peers(self) -> dict[PeerId, tuple[Multiaddr, ...]]:
        """Peers currently known through mDNS, with their addresses."""
        return {pid: entry.addrs for pid, entry in self._peers.items()}

    def _emit(self, event: MdnsEvent) -> None:
        if len(self._events) >= self.config.max_queued_events:
            self._events.popleft()
            self.dropped_events += 1
        self._events.append(event)
        self._events_ready.set()
        self.discovery.emit(event)

    # -- sending -------------------------------------------------------------------------

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _send_query(self) -> None:
        """Query on every interface; the periodic timer restarts from now."""
        if self._closed:
            return
        for endpoint in self._endpoints:
            endpoint.send(self._query_packet)
        assert self._loop is not None
        if self._query_handle is not None:
            self._query_handle.cancel()
        self._query_handle = self._loop.call_at(
            self._now() + self.config.query_interval_seconds, self._send_query
        )

    def _announce_addrs(self, endpoint: _Endpoint) -> list[Multiaddr]:
        me = self.node.peer_id
        out: list[Multiaddr] = []
        for listen in self.node.listen_addrs:
            for addr in expand_wildcard(listen):
                if addr.has_protocol("p2p-circuit") or (
                    _is_loopback(addr) and not endpoint.iface.loopback
                ):
                    continue
                out.append(addr.without_peer_id().with_peer_id(me))
        return out

    def _responses(self, endpoint: _Endpoint, *, ttl: int) -> list[bytes]:
        return build_responses(
            self.peer_name,
            self._announce_addrs(endpoint),
            ttl,
            service_name=self.config.service_name,
            max_packet_bytes=self.config.max_packet_bytes,
        )

    def _respond(self, endpoint: _Endpoint) -> None:
        """Multicast our addresses on ``endpoint``, at most once per minimum response
        interval."""
        if self._closed or endpoint.deferred is not None:
            return
        now = self._now()
        earliest = endpoint.last_response + self.config.min_response_interval_seconds
        if now < earliest:
            assert self._loop is not None
            endpoint.deferred = self._loop.call_at(earliest, self._deferred_respond, endpoint)
            return
        packets = self._responses(endpoint, ttl=self.config.ttl)
        if packets:
            endpoint.last_response = now
            for packet in packets:
                endpoint.send(packet)

    def _deferred_respond(self, endpoint: _Endpoint) -> None:
        endpoint.deferred = None
        self._respond(endpoint)

    def _local_change(self, _: None) -> None:
        """Our listen addresses changed: announce them (once per loop iteration)."""
        if self._closed or self._loop is None:
            return
        if self._loopback_task is None and self._loopback_wanted():
            self._loopback_task = self._loop.create_task(self._add_loopback())
        if self._announce_pending:
            return
        self._announce_pending = True

        def announce() -> None:
            self._announce_pending = False
            for endpoint in list(self._endpoints):
                self._respond(endpoint)

        self._loop.call_soon(announce)

    # -- receiving -----------------------------------------------------------------------

    def _datagram_received(self, endpoint: _Endpoint, data: bytes) -> None:
        if self._closed:
            return
        packet = parse_packet(
            data,
            service_name=self.config.service_name,
            max_addrs_per_peer=self.config.max_addrs_per_peer,
        )
        if isinstance(packet, MdnsQuery):
            self._query_received(endpoint, packet)
        elif isinstance(packet, MdnsResponse):
            self._response_received(endpoint, packet)
        else:
            self.ignored_packets += 1

    def _query_received(self, endpoint: _Endpoint, query: MdnsQuery) -> None:
        if query.wants_meta:
            endpoint.send(
                build_meta_response(self.config.ttl, service_name=self.config.service_name)
            )
        if query.wants_peers:
            half = self.config.ttl / 2
            if any(name == self.peer_name and ttl > half for name, ttl in query.known_answers):
                return  # known-answer suppression: the querier already has us
            self._respond(endpoint)
        elif self.peer_name in query.instance_names:
            self._respond(endpoint)

    def _response_received(self, endpoint: _Endpoint, response: MdnsResponse) -> None:
        now = self._now()
        me = self.node.peer_id
        for name in response.goodbyes:
            pid = self._names.get(name)
            if pid is not None:
                self._expire(pid)
        for record in response.peers:
            if record.peer_id == me or record.peer_name == self.peer_name:
                continue
            if record.ttl == 0:
                self._expire(record.peer_id)
                continue
            addrs = tuple(a for a in record.addrs if endpoint.iface.loopback or not _is_loopback(a))
            if addrs:
                self._update(record.peer_id, record.peer_name, addrs, record.ttl, now)

    def _update(
        self, peer: PeerId, name: str, addrs: tuple[Multiaddr, ...], ttl: int, now: float
    ) -> None:
        ttl = min(ttl, self.config.max_record_ttl)
        entry = self._peers.get(peer)
        if entry is None:
            if len(self._peers) >= self.config.max_peers:
                self.dropped_peers += 1
                return
            entry = _Entry(name, (), 0.0, None)
            self._peers[peer] = entry
        if entry.peer_name != name:
            self._names.pop(entry.peer_name, None)
            entry.peer_name = name
        self._names[name] = peer
        entry.expires_at = now + ttl
        entry.refresh_at = now + ttl * _REFRESH_FRACTION
        new = tuple(a for a in addrs if a not in entry.addrs)
        if new or not entry.addrs:
            merged = (*entry.addrs, *new)[-self.config.max_addrs_per_peer :]
            entry.addrs = merged
            self.node.peer_store.add_addrs(peer, new)
            entry.added_to_store.update(new)
            self._emit(PeerDiscovered(peer, merged))
        self._schedule_expiry()

    def _expire(self, peer: PeerId) -> None:
        entry = self._peers.pop(peer, None)
        if entry is None:
            return
        if self._names.get(entry.peer_name) == peer:
            del self._names[entry.peer_name]
        info = self.node.peer_store.get(peer)
        if info is not None and entry.added_to_store:
            info.addrs = [a for a in info.addrs if a not in entry.added_to_store]
        self._emit(PeerExpired(peer))

    def _schedule_expiry(self) -> None:
        if self._closed or self._loop is None:
            return
        if self._expiry_handle is not None:
            self._expiry_handle.cancel()
            self._expiry_handle = None
        deadlines = [
            e.refresh_at if e.refresh_at is not None else e.expires_at for e in self._peers.values()
        ]
        if deadlines:
            self._expiry_handle = self._loop.call_at(min(deadlines), self._on_expiry_timer)

    def _on_expiry_timer(self) -> None:
        self._expiry_handle = None
        now = self._now()
        refresh = False
        for peer, entry in list(self._peers.items()):
            if entry.expires_at <= now:
                self._expire(peer)
            elif entry.refresh_at is not None and entry.refresh_at <= now:
                entry.refresh_at = None
                refresh = True
        if refresh:
            self._send_query()
        self._schedule_expiry()


def _is_loopback(addr: Multiaddr) -> bool:
    ip = addr.ip_address
    return ip is not None and ip.is_loopback
