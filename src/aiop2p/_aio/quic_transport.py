"""The QUIC-v1 transport: ``/ip4|ip6/<ip>/udp/<port>/quic-v1`` on aioquic.

One UDP socket (a :class:`QuicEndpoint`) per listen address carries every connection
accepted there, and our dials leave from it too when its address can reach the target
(a wildcard or same-scope bind), so the port peers observe is the one we listen on.
Without a suitable listener, dials share one ephemeral endpoint per address family,
closed with its last connection.  Datagrams are routed to connections by destination
connection id; a datagram for none is only considered if it is a well-formed QUIC v1
Initial of full size (1200 bytes, RFC 9000 14.1) arriving at a listener.  One that
finds no room among the pending handshakes (``QuicConfig.max_pending_handshakes``, the
node's own limits) or a node shutting down is answered with a CONNECTION_CLOSE
(CONNECTION_REFUSED, RFC 9000 10.2.3) in an Initial packet, built from the Initial's
connection ids alone (no TLS, no state kept, smaller than what it answers), so a
refused dialer learns at once instead of at its handshake timeout; anything else is
dropped unanswered.

The endpoint drives its socket itself rather than through asyncio's datagram transport,
which reads one datagram per wake-up and sends one per call: it reads every pending
datagram on a wake-up (up to ``_MAX_READS_PER_WAKEUP``), sends a connection's burst of
equal-sized datagrams in one ``sendmsg`` with UDP GSO (``UDP_SEGMENT``) where the
kernel has it (else one ``sendto`` each), takes a peer's GSO burst in one read with
UDP GRO (``UDP_GRO``) where the kernel has it (and hands a connection the run of its
datagrams in one call: ``_receive_segments``), and asks the kernel for ICMP errors
(``IP_RECVERR``) so that a dial to a closed port fails at once instead of at its
timeout.  It uses only ``loop.add_reader``/``add_writer``, so any event loop does.

A QUIC connection is built by the node's connection factory, asked for a
:class:`QuicConnection` (the ``connection_class`` argument, see
:class:`ConnectionFactory`), so admission, limits and handlers are the node's as for TCP.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import functools
import ipaddress
import logging
import os
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from aioquic._buffer import Buffer, BufferReadError
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    QuicProtocolVersion,
    pull_quic_header,
)
from aioquic.quic.packet_builder import QuicPacketBuilder

from ..errors import InvalidMultiaddrError, ListenError
from ..multiaddr import Multiaddr
from ..transports._base import ProtocolFactory
from ..transports.interfaces import expand_wildcard
from ..transports.tcp import listen_error
from .connection import Connection
from .quic_connection import QuicConfig, QuicConnection, SockAddr, sockaddr_of

__all__ = ["ConnectionFactory", "QuicEndpoint", "QuicListener", "QuicTransport", "quic_target"]

log = logging.getLogger(__name__)

_MIN_INITIAL_BYTES = 1200
_CID_BYTES = 8  # aioquic's default connection id length (QuicConfiguration)
_RECV_BYTES = 65536  # the largest UDP payload, plus one: a longer one is cut, then dropped
_MAX_READS_PER_WAKEUP = 64
"""Datagrams read per wake-up before other work gets its turn."""
_MAX_ERRORS_PER_WAKEUP = 16
"""ICMP errors read from the socket's error queue per wake-up."""
_MAX_QUEUED_SENDS = 256
"""Datagrams held while the socket's send buffer is full; beyond, they are dropped (QUIC
retransmits what is lost)."""
# Linux values (<linux/udp.h>, <linux/in.h>, <linux/in6.h>); other systems lack them.
_SOL_UDP = 17
_UDP_SEGMENT = 103
_IP_RECVERR = 11
_IPV6_RECVERR = 25
_UDP_GRO = 104
_GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS
_GRO_CMSG_BYTES = socket.CMSG_SPACE(4)  # the UDP_GRO control message: the segment size
_GSO_MAX_BYTES = 65000  # the kernel's limit for one GSO send is 64 KiB of payload


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


class QuicEndpoint:
    """One UDP socket and the QUIC connections it carries."""

    connection_class: type[QuicConnection] = QuicConnection
    """What its connections are (a WebTransport endpoint's are a subclass)."""

    def __init__(self, config: QuicConfig, on_empty: Callable[[QuicEndpoint], None]) -> None:
        self._config = config
        self._on_empty = on_empty
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cids: dict[bytes, QuicConnection] = {}
        self._conns: set[QuicConnection] = set()
        self._pending: set[QuicConnection] = set()
        self._queued: collections.deque[tuple[Sequence[bytes], SockAddr]] = collections.deque()
        self.gso = False
        """Whether bursts leave as one UDP GSO ``sendmsg`` (set where the kernel takes it)."""
        self.gro = False
        """Whether the kernel hands us a sender's equal-sized datagrams in one read (UDP
        GRO; set where it takes the option), which we split again."""
        self.accept: ProtocolFactory | None = None
        """The listener's factory while listening (None: inbound Initials are dropped)."""
        self.local_addr: Multiaddr | None = None
        self.family: int = socket.AF_INET

    # -- socket ---------------------------------------------------------------------------

    def open(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        """Drive ``sock`` (bound, non-blocking) on ``loop``."""
        self._sock = sock
        self._loop = loop
        self.family = sock.family
        if isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
            # ICMP errors into the error queue, on asyncio's own loops only: uvloop
            # (libuv) stops watching a socket for good on the POLLERR a queued error
            # raises, so there ICMP is left to QUIC's timers.
            with contextlib.suppress(OSError):
                if sock.family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
                else:
                    sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
        self.gso = _gso_available(sock)
        self.gro = _enable_gro(sock)
        loop.add_reader(sock.fileno(), self._read_ready)

    def _read_ready(self) -> None:
        """Read the datagrams waiting (up to the bound); each connection they reach
        decides on its output once, after the batch (one transmit, one ACK)."""
        sock = self._sock
        touched: list[QuicConnection] = []
        budget = _MAX_READS_PER_WAKEUP  # datagrams, a coalesced read counting each
        try:
            while budget > 0:
                if sock is None or self._sock is None:
                    return
                segment = 0
                try:
                    if self.gro:
                        data, ancdata, _, addr = sock.recvmsg(_RECV_BYTES, _GRO_CMSG_BYTES)
                        for level, kind, value in ancdata:
                            if level == _SOL_UDP and kind == _UDP_GRO and len(value) >= 4:
                                segment = int.from_bytes(value[:4], sys.byteorder)
                    else:
                        data, addr = sock.recvfrom(_RECV_BYTES)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    self._socket_error(exc)
                    budget -= 1
                    continue
                addr = (addr[0], addr[1])
                if 0 < segment < len(data):
                    budget -= self._receive_segments(data, segment, addr, touched)
                else:
                    budget -= 1
                    self._deliver(data, addr, touched)
                if len(data) < _MIN_INITIAL_BYTES:
                    # A small datagram (a request, an ACK) seldom has others queued
                    # behind it: skip the read that would only say so; level-triggered
                    # polling wakes us again if there are.
                    return
        finally:
            for conn in touched:
                conn.input_done()

    def _receive_segments(
        self, data: bytes, segment: int, addr: SockAddr, touched: list[QuicConnection]
    ) -> int:
        """Datagrams the kernel coalesced (UDP GRO: equal-sized ones from one sender, the
        last maybe shorter); beyond ``_GSO_MAX_SEGMENTS`` (more than the kernel
        coalesces) the rest is dropped.  Returns how many were taken.

        A connection takes the run of them that starts with the one routed to it in one
        call (:meth:`QuicConnection.receive_run`: a sender's burst is usually all 1-RTT
        packets to one connection id), so the routing and the per-call work are paid
        once per run, not per datagram; the run ends where the datagrams stop being
        such packets, or after one that left the connection something to handle, and
        the next one is routed afresh, as each is on its own."""
        segments = _splitter(segment, min(len(data), segment * _GSO_MAX_SEGMENTS))(data)
        index, count = 0, len(segments)
        while index < count:
            conn = self._route(segments[index], addr)
            if conn is None:
                index += 1
                continue
            index = conn.receive_run(segments, index, addr)
            if not conn.is_closed and conn not in touched:
                touched.append(conn)
        return count

    def _deliver(self, datagram: bytes, addr: SockAddr, touched: list[QuicConnection]) -> None:
        """One datagram to its connection, which is noted in ``touched`` (once) when it
        took it: its output is decided after the batch."""
        conn = self._route(datagram, addr)
        if conn is not None and conn.receive(datagram, addr) and conn not in touched:
            touched.append(conn)

    def _socket_error(self, exc: OSError) -> None:
        """An error the socket reports (an ICMP error behind it): read the error queue,
        which names the destination each error is about."""
        sock = self._sock
        if sock is None:
            return
        for _ in range(_MAX_ERRORS_PER_WAKEUP):
            try:
                _, _, _, addr = sock.recvmsg(_CID_BYTES * 8, 512, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # no error queue here: nothing to say which dial it is about
            if addr:
                self.error_received(exc, addr)

    def error_received(self, exc: Exception, addr: SockAddr | None = None) -> None:
        """An ICMP error about datagrams to ``addr``: it ends only dials to ``addr`` that
        are still in their handshake (refusal comes before any answer; later, QUIC's own
        timers judge loss, and a forged ICMP error cannot end a live connection)."""
        if addr is None:
            return
        target = (addr[0], addr[1])
        for conn in list(self._conns):
            conn.unreachable(target, exc)

    def _write_ready(self) -> None:
        queued = self._queued
        while queued:
            datagrams, addr = queued[0]
            if not self._send_now(datagrams, addr):
                return
            queued.popleft()
        if self._loop is not None and self._sock is not None:
            self._loop.remove_writer(self._sock.fileno())

    def _send_now(self, datagrams: Sequence[bytes], addr: SockAddr) -> bool:
        """Send; False if the socket's buffer is full (nothing of the batch left)."""
        sock = self._sock
        if sock is None:
            return True
        try:
            if len(datagrams) == 1:
                sock.sendto(datagrams[0], addr)
            else:
                size = len(datagrams[0])
                sock.sendmsg(
                    datagrams, [(_SOL_UDP, _UDP_SEGMENT, struct.pack("=H", size))], 0, addr
                )
        except OSError as exc:
            return self._send_failed(exc, datagrams, addr)
        return True

    def _send_failed(self, exc: OSError, datagrams: Sequence[bytes], addr: SockAddr) -> bool:
        """What a send that raised means; False if the socket's buffer is full (nothing
        of the batch left), as :meth:`_send_now` returns."""
        if isinstance(exc, (BlockingIOError, InterruptedError)):
            return False
        if exc.errno == errno.EIO and len(datagrams) > 1:
            # GSO refused on this path (a device without checksum offload): stop using it.
            self.gso = False
            for data in datagrams:
                self._send_now([data], addr)
        elif exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
            self._socket_error(exc)
        else:
            log.debug("UDP send to %s failed: %s", addr, exc)
        return True

    def _send(self, datagrams: Sequence[bytes], addr: SockAddr) -> None:
        if self._queued or not self._send_now(datagrams, addr):
            self._queue(datagrams, addr)

    def _queue(self, datagrams: Sequence[bytes], addr: SockAddr) -> None:
        """Keep what the full socket refused, in order, until it is writable."""
        if len(self._queued) >= _MAX_QUEUED_SENDS:
            return  # dropped, as a full network would
        if not self._queued and self._loop is not None and self._sock is not None:
            self._loop.add_writer(self._sock.fileno(), self._write_ready)
        self._queued.append((datagrams, addr))

    def datagram_received(self, data: bytes, addr: SockAddr) -> None:
        """One datagram, on its own (the socket reader batches them)."""
        addr = (addr[0], addr[1])
        conn = self._route(data, addr)
        if conn is not None:
            conn.datagram_received(data, addr)

    def _route(self, data: bytes, addr: SockAddr) -> QuicConnection | None:
        """The connection a datagram is for (a new one for a valid Initial), or None.
        IPv6 sockets report (host, port, flowinfo, scope): callers pass (host, port), as
        dialled, so that aioquic sees one network path."""
        if data and not data[0] & 0x80:  # short header: the connection id follows
            return self._cids.get(data[1 : 1 + _CID_BYTES])
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=_CID_BYTES)
        except (ValueError, BufferReadError):
            return None  # not QUIC
        conn = self._cids.get(header.destination_cid)
        if conn is None:
            conn = self._accept(
                data,
                addr,
                header.packet_type,
                header.version,
                header.destination_cid,
                header.source_cid,
            )
        return conn

    # -- inbound ------------------------------------------------------------------------

    def _accept(
        self,
        data: bytes,
        addr: SockAddr,
        packet_type: QuicPacketType,
        version: int | None,
        dcid: bytes,
        scid: bytes,
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
                self._refuse(dcid, scid, addr, "connection refused: too many pending handshakes")
                return None
        conn = _as_factory(factory)(
            self.local_addr, self.remote_multiaddr(addr), self.connection_class
        )
        assert isinstance(conn, QuicConnection)
        self._conns.add(conn)
        self._pending.add(conn)
        conn.start(self, self._config, addr, original_destination_cid=dcid)
        if conn.is_closed:  # refused by the node (its limits, a shutdown)
            self._refuse(dcid, scid, addr, "connection refused")
            return None
        return conn

    def _refuse(self, dcid: bytes, scid: bytes, addr: SockAddr, reason: str) -> None:
        """Answer an Initial we will not handshake with CONNECTION_REFUSED."""
        self.sendto(refusal_datagram(dcid, scid, reason), addr)

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
        """Send one datagram (dropped if the socket's buffer stays full)."""
        sock = self._sock
        if sock is None or self._queued:
            self._send((data,), addr)
            return
        try:
            sock.sendto(data, addr)  # the usual case: _send_now inline
        except OSError as exc:
            # Classified once, not by sending again (a second send would find an ICMP
            # error this one reported already gone).
            if not self._send_failed(exc, (data,), addr):
                self._queue((data,), addr)

    def send_datagrams(self, datagrams: Sequence[bytes], addr: SockAddr) -> None:
        """Send a connection's burst: runs of equal-sized datagrams (the last of a run may
        be shorter) leave in one GSO ``sendmsg`` each where the kernel takes it."""
        if not self.gso or len(datagrams) == 1:
            for data in datagrams:
                self._send((data,), addr)
            return
        start, count = 0, len(datagrams)
        while start < count:
            size = len(datagrams[start])
            end, total = start + 1, size
            while (
                end < count
                and end - start < _GSO_MAX_SEGMENTS
                and total + len(datagrams[end]) <= _GSO_MAX_BYTES
                and len(datagrams[end - 1]) == size
                and len(datagrams[end]) <= size
            ):
                total += len(datagrams[end])
                end += 1
            self._send(datagrams[start:end], addr)
            start = end

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

    @property
    def sockname(self) -> SockAddr | None:
        return cast("SockAddr", self._sock.getsockname()) if self._sock is not None else None

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
            if self._queued:
                self._loop.remove_writer(sock.fileno())
        self._queued.clear()
        sock.close()


def refusal_datagram(dcid: bytes, scid: bytes, reason: str) -> bytes:
    """A server's Initial packet carrying CONNECTION_CLOSE (CONNECTION_REFUSED) for the
    client whose Initial went to ``dcid`` from ``scid``: Initial keys come from ``dcid``
    alone (RFC 9001 5.2), so no handshake state is made."""
    crypto = CryptoPair()
    crypto.setup_initial(cid=dcid, is_client=False, version=QuicProtocolVersion.VERSION_1)
    builder = QuicPacketBuilder(
        host_cid=os.urandom(_CID_BYTES),
        peer_cid=scid,
        version=QuicProtocolVersion.VERSION_1,
        is_client=False,
        max_datagram_size=_MIN_INITIAL_BYTES,
    )
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    phrase = reason.encode()
    buf = builder.start_frame(QuicFrameType.TRANSPORT_CLOSE, capacity=3 + 8 + len(phrase))
    buf.push_uint_var(QuicErrorCode.CONNECTION_REFUSED)
    buf.push_uint_var(0)  # the frame type that caused it: none
    buf.push_uint_var(len(phrase))
    buf.push_bytes(phrase)
    datagrams, _ = builder.flush()
    return datagrams[0]


@functools.lru_cache(maxsize=32)
def _splitter(segment: int, size: int) -> Callable[[bytes], tuple[bytes, ...]]:
    """What cuts the first ``size`` bytes of a read into datagrams of ``segment`` bytes
    (the last maybe shorter) in one C call, without a Python loop turn per datagram: a
    sender's bursts come in a few sizes (usually ten full datagrams)."""
    whole, rest = divmod(size, segment)
    return struct.Struct(f"{segment}s" * whole + (f"{rest}s" if rest else "")).unpack_from


def _gso_available(sock: socket.socket) -> bool:
    """Whether the kernel takes UDP GSO on ``sock`` (Linux 4.18+)."""
    try:
        sock.getsockopt(_SOL_UDP, _UDP_SEGMENT)
    except OSError:
        return False
    return True


def _enable_gro(sock: socket.socket) -> bool:
    """Ask for UDP GRO on ``sock`` (Linux 5.0+): a GSO burst from a peer on this host
    (quinn sends them) arrives in one read instead of one per datagram."""
    try:
        sock.setsockopt(_SOL_UDP, _UDP_GRO, 1)
    except OSError:
        return False
    return True


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
        endpoint.open(sock, loop)
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
        bound = endpoint.sockname
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

    def send_punch(self, addr: Multiaddr, payload: bytes) -> bool:
        """Send ``payload`` in one datagram to ``addr`` from the listening socket a dial
        there would leave from (hole punching: our NAT then lets the peer's dial in);
        False if we listen on none that reaches it."""
        target = quic_target(addr)
        if target is None:
            raise InvalidMultiaddrError(f"not a QUIC address: {addr}")
        ip, port, family = target
        endpoint = self._endpoint_for(ip, family)
        if endpoint is None:
            return False
        endpoint.sendto(payload, (ip, port))
        return True

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
