"""``QuicConnection``: a :class:`~.connection.Connection` carried by one QUIC connection.

QUIC brings its own security (TLS 1.3 with the libp2p certificate, ``tls_cert``) and its
own streams, so there is no Noise, no Yamux and no multistream round for either: each
QUIC bidirectional stream is an aiop2p :class:`~.stream.Stream` and negotiates its
protocol with multistream-select, exactly as a Yamux stream does.  The class keeps the
``Connection`` surface (node, services and ``Network`` see no difference) and its
deadlines (stream negotiation, lingering, idleness); what changes is underneath: the
bytes of every stream go through aioquic's sans-IO machine (:class:`LibP2PQuic`), whose
datagrams leave through the UDP endpoint shared by the transport's listeners and dials.

Bounds: aioquic caps the streams a peer may open (``QuicConfig.max_streams``); receive
credit is granted as the application reads (``stream_window_bytes`` per stream,
``connection_window_bytes`` in all); a writer waits while ``send_buffer_bytes`` of its
stream have not left yet; the handshake has ``NodeConfig.handshake_timeout`` and an
idle connection QUIC's idle timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import os
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    ConnectionIdIssued,
    ConnectionIdRetired,
    ConnectionTerminated,
    HandshakeCompleted,
    PingAcknowledged,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import (
    ConnectionClosedError,
    HandshakeError,
    HandshakeTimeoutError,
    InvalidArgumentError,
    InvalidStateError,
    P2PError,
    PeerIdMismatchError,
    PortUnreachableError,
    StreamResetError,
)
from ..identity import KeyPair, PeerId
from ..protocols.multistream import outbound_negotiation
from ..protocols.noise import NoiseCredentials, VerifiedIdentities
from ..protocols.role import Role
from ..protocols.tls_cert import make_certificate, verify_certificate
from ..protocols.yamux import StreamId
from .connection import Connection, ConnectionHooks, Direction, _Stage
from .quic_adapter import LibP2PQuic
from .stream import Stream

if TYPE_CHECKING:
    from cryptography import x509

    from ..config import NodeConfig
    from ..multiaddr import Multiaddr

__all__ = ["ALPN", "QuicConfig", "QuicConnection", "QuicEndpointLike", "SockAddr"]

log = logging.getLogger(__name__)

ALPN: Final = "libp2p"
SockAddr = tuple[str, int] | tuple[str, int, int, int]
MIN_DATAGRAM_BYTES: Final = 1200  # RFC 9000 14: every QUIC path carries this much
MAX_DATAGRAM_BYTES: Final = 65507  # the largest UDP payload over IPv4
HANDSHAKE_DATAGRAM_BYTES: Final = 16384  # aioquic's long-header packets hold no more
_CERT_VALID_SECONDS: Final = 10 * 24 * 3600
_CERT_RENEW_SECONDS: Final = 24 * 3600
_CRYPTO_ERROR_BAD_CERTIFICATE: Final = 0x100 + 42  # TLS alert bad_certificate (RFC 9001 4.8)
_TIMER_SLACK_SECONDS: Final = 0.001  # aioquic's ACK delay (see _arm_quic_timer)
_TIMER_KEEP_SECONDS: Final = 0.01  # an armed QUIC timer this far away stays (ditto)
# An enum member read from its class costs far more than a global: the hot paths use these.
_ESTABLISHED: Final = _Stage.ESTABLISHED
_CLOSED: Final = _Stage.CLOSED
_UPGRADING: Final = _Stage.UPGRADING
_RESPONDER: Final = Role.RESPONDER
_INITIATOR: Final = Role.INITIATOR


@dataclass(frozen=True, slots=True)
class QuicConfig:
    """Bounds and tuning of the QUIC transport (one per :class:`QuicTransport`)."""

    max_streams: int = 256
    """Bidirectional streams a peer may have open at once (QUIC ``max_streams``)."""
    stream_window_bytes: int = 8 * 1024 * 1024
    """Receive credit per stream beyond what the application has read."""
    connection_window_bytes: int = 32 * 1024 * 1024
    """Receive credit per connection beyond what the application has read."""
    send_buffer_bytes: int = 1024 * 1024
    """A stream's writer waits while this much of its data has not been sent yet."""
    idle_timeout: float = 30.0
    """QUIC's idle timeout (the smaller of both peers' applies)."""
    max_pending_handshakes: int = 256
    """Handshakes in progress per UDP endpoint; Initial packets beyond it are dropped."""
    max_datagram_bytes: int = 1452
    """Largest UDP payload we send: 1500-byte Ethernet MTU minus IPv6 and UDP headers.
    aioquic does no path MTU discovery, so larger values are for known paths only."""
    loopback_datagram_bytes: int = MAX_DATAGRAM_BYTES
    """Largest UDP payload to a loopback address (its MTU is 64 KiB), used once the
    handshake is done (up to 16 KiB before) and if the peer takes it.  aioquic's work is
    per packet, so this is what lets bulk transfer between local processes run at several
    times the ``max_datagram_bytes`` rate (docs/transports.md)."""
    congestion_control: str = "reno"
    """aioquic's congestion controller: ``reno`` or ``cubic``."""

    def __post_init__(self) -> None:
        for name in ("max_datagram_bytes", "loopback_datagram_bytes"):
            value = getattr(self, name)
            if not MIN_DATAGRAM_BYTES <= value <= MAX_DATAGRAM_BYTES:
                raise InvalidArgumentError(
                    f"{name}={value}: QUIC datagrams here are "
                    f"{MIN_DATAGRAM_BYTES}..{MAX_DATAGRAM_BYTES} bytes"
                )
        for name in (
            "max_streams",
            "stream_window_bytes",
            "connection_window_bytes",
            "send_buffer_bytes",
            "max_pending_handshakes",
        ):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"{name} must be positive")
        if self.congestion_control not in ("reno", "cubic"):
            raise InvalidArgumentError(f"unknown congestion control {self.congestion_control!r}")


class QuicEndpointLike(Protocol):
    """What a connection needs from the UDP endpoint that carries it."""

    def sendto(self, data: bytes, addr: SockAddr) -> None: ...

    def send_datagrams(self, datagrams: Sequence[bytes], addr: SockAddr) -> None: ...

    def add_cid(self, cid: bytes, conn: QuicConnection) -> None: ...

    def remove_cid(self, cid: bytes) -> None: ...

    def connection_gone(self, conn: QuicConnection) -> None: ...


_ping_ids = itertools.count(1)
_certificates: dict[PeerId, tuple[float, x509.Certificate, ec.EllipticCurvePrivateKey]] = {}
_MAX_CACHED_CERTIFICATES: Final = 16


def _certificate_for(identity: KeyPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Our certificate for ``identity``: made once a day, valid ten days (cached)."""
    now = time.time()
    cached = _certificates.get(identity.peer_id)
    if cached is not None and now - cached[0] < _CERT_RENEW_SECONDS:
        return cached[1], cached[2]
    key = ec.generate_private_key(ec.SECP256R1())
    serial = int.from_bytes(os.urandom(8), "big") >> 1
    cert = make_certificate(
        identity, key, now=now, valid_seconds=_CERT_VALID_SECONDS, serial_number=serial
    )
    if len(_certificates) >= _MAX_CACHED_CERTIFICATES:
        _certificates.clear()
    _certificates[identity.peer_id] = (now, cert, key)
    return cert, key


def _configuration(
    identity: KeyPair, quic: QuicConfig, *, is_client: bool, loopback: bool
) -> QuicConfiguration:
    cert, key = _certificate_for(identity)
    return QuicConfiguration(
        alpn_protocols=[ALPN],
        is_client=is_client,
        certificate=cert,
        private_key=key,
        verify_mode=ssl.CERT_NONE,  # we verify the libp2p certificate ourselves
        idle_timeout=quic.idle_timeout,
        max_data=quic.connection_window_bytes,
        max_stream_data=quic.stream_window_bytes,
        max_datagram_size=min(
            quic.loopback_datagram_bytes if loopback else quic.max_datagram_bytes,
            HANDSHAKE_DATAGRAM_BYTES,
        ),
        congestion_control_algorithm=quic.congestion_control,
    )


def sockaddr_of(addr: SockAddr) -> tuple[str, int]:
    host = addr[0].split("%", 1)[0]
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped), addr[1]
    return str(ip), addr[1]


class QuicConnection(Connection):
    """A libp2p connection over QUIC-v1 (see the module docstring)."""

    def __init__(
        self,
        hooks: ConnectionHooks,
        *,
        credentials: NoiseCredentials,
        verified: VerifiedIdentities,
        direction: Direction,
        config: NodeConfig,
        expected_peer: PeerId | None = None,
        remote_addr: Multiaddr | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        role: Role | None = None,
    ) -> None:
        super().__init__(
            hooks,
            credentials=credentials,
            verified=verified,
            direction=direction,
            config=config,
            expected_peer=expected_peer,
            remote_addr=remote_addr,
            loop=loop,
            role=role,
        )
        self._quic: LibP2PQuic | None = None
        self._quic_config = QuicConfig()
        self._endpoint: QuicEndpointLike | None = None
        self._peer_sockaddr: SockAddr | None = None
        self._quic_timer: asyncio.TimerHandle | None = None
        self._quic_timer_at = 0.0
        self._quic_due: float | None = None  # aioquic's deadline when last asked
        self._transmit_handle: asyncio.Handle | None = None
        self._hold_transmit = False
        self._transmit_wanted = False
        self._blocked_writers: set[StreamId] = set()
        self._next_remote_sid = 0
        self._skipped_remote: set[int] = set()
        self._cids: set[bytes] = set()

    def __repr__(self) -> str:
        peer = self._remote_peer or self._expected_peer
        return f"<QuicConnection {self.id} {self.direction.value} {peer} {self._stage.name}>"

    # -- start (called by the transport) ------------------------------------------------

    def start(
        self,
        endpoint: QuicEndpointLike,
        quic_config: QuicConfig,
        peer: SockAddr,
        *,
        original_destination_cid: bytes | None = None,
    ) -> LibP2PQuic:
        """Create the QUIC machine; a client sends its Initial at once."""
        is_client = original_destination_cid is None
        self._quic_config = quic_config
        self._endpoint = endpoint
        self._peer_sockaddr = peer
        quic = self._quic = self._make_quic(
            quic_config,
            is_client=is_client,
            loopback=ipaddress.ip_address(sockaddr_of(peer)[0]).is_loopback,
            original_destination_cid=original_destination_cid,
        )
        # Remote bidirectional streams: ids 1, 5, ... when we are the client.
        self._next_remote_sid = 1 if is_client else 0
        self._add_cid(quic.host_cid)
        if original_destination_cid is not None:
            self._add_cid(original_destination_cid)
        if self._refused is not None:
            # Refused by the node's factory (pending-handshake bounds, shutdown): gone
            # before the Initial is processed, so no handshake CPU is spent on it and
            # nothing is sent (no keys yet): the dialer's handshake times out.
            self._terminate(self._refused, abort=True, transport_gone=True)
            return quic
        self._arm_timer(self.loop.time() + self._config.handshake_timeout)
        if is_client:
            quic.connect(peer, now=self.loop.time())
            self._transmit()
        return quic

    def _make_quic(
        self,
        quic_config: QuicConfig,
        *,
        is_client: bool,
        loopback: bool,
        original_destination_cid: bytes | None,
    ) -> LibP2PQuic:
        """The QUIC machine (a WebTransport connection makes its own: ALPN h3)."""
        quic = LibP2PQuic(
            configuration=_configuration(
                self._credentials.identity, quic_config, is_client=is_client, loopback=loopback
            ),
            original_destination_connection_id=original_destination_cid,
            stream_window_bytes=quic_config.stream_window_bytes,
            connection_window_bytes=quic_config.connection_window_bytes,
            max_streams=quic_config.max_streams,
        )
        # In-order data goes straight to a stream that only buffers it (the short way
        # for 1-RTT packets, mid-packet: nothing may run on it); the rest as events.
        quic.stream_readers = self._streams
        return quic

    def _add_cid(self, cid: bytes) -> None:
        assert self._endpoint is not None
        self._cids.add(cid)
        self._endpoint.add_cid(cid, self)

    # -- input --------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: SockAddr) -> None:
        """One datagram from the peer: :meth:`receive` it, then :meth:`input_done`."""
        if self.receive(data, addr):
            self.input_done()

    def receive(self, data: bytes, addr: SockAddr) -> bool:
        """Feed a datagram to QUIC and deliver its events; output waits for
        :meth:`input_done` (the endpoint calls it once per read batch).  False if the
        connection is closed (now or before)."""
        quic = self._quic
        if quic is None or self._stage is _CLOSED:
            return False
        quic.receive_datagram(data, addr, self.loop.time())  # now
        if quic._events:  # none, once the short way handed its data over
            self._input_events(quic)
        # (is_closed without its property call: the events may have closed it)
        return self._stage is not _CLOSED  # type: ignore[comparison-overlap]

    def receive_run(self, segments: Sequence[bytes], start: int, addr: SockAddr) -> int:
        """:meth:`receive` for ``segments[start]`` and the datagrams after it that QUIC
        takes with it in one call (one read's, to one connection id), up to the first
        one after which something needs handling (its events, a close); returns the
        index of the first one left.  The caller routes that one afresh."""
        quic = self._quic
        if quic is None or self._stage is _CLOSED:
            return start + 1
        end = quic.receive_datagrams(segments, start, addr, self.loop.time())
        if quic._events:
            self._input_events(quic)
        return end

    def _input_events(self, quic: LibP2PQuic) -> None:
        """The events an input left, before the next datagram is taken."""
        self._hold_transmit = True  # see input_done
        try:
            self._process_events(quic)
        finally:
            self._hold_transmit = False
            if self._opened:  # deadlines for the streams it opened, if still negotiating
                self._watch_opened()

    def input_done(self) -> None:
        """After a batch of datagrams: a transmit is scheduled now, behind the tasks the
        input woke (a pending one is moved there), so that what a handler or a reader
        writes before it next waits leaves in one datagram with the answers the input
        caused (handshake messages, a multistream echo, data an ACK or credit let go), as
        TCP connections flush after their wakeups.  If by then nothing waits to be sent,
        it only follows aioquic's timer: ACKs and control frames ride on the next packet
        or leave on that timer, at most its 1 ms ACK delay later."""
        if self._quic is None or self._stage is _CLOSED:
            return
        if self._transmit_handle is not None:
            self._transmit_handle.cancel()  # moved behind the wakeups
        self._transmit_handle = self.loop.call_soon(self._scheduled_transmit)

    def _process_events(self, quic: LibP2PQuic) -> None:
        streams = self._streams
        events = quic._events  # what next_event pops, without its call per event
        while events:
            ev = events.popleft()
            if isinstance(ev, StreamDataReceived):
                sid: StreamId = ev.stream_id  # type: ignore[assignment]  # (NewType: a call)
                stream = streams.get(sid)
                if stream is None:
                    stream = self._remote_stream(quic, sid)
                    if stream is None:
                        quic.consumed(sid, len(ev.data))
                        continue
                if ev.data:
                    stream._feed_data(ev.data)
                if ev.end_stream:
                    stream._feed_eof()
                    if stream._write_closed:
                        self.forget_stream(sid)
            elif not self._quic_event(quic, ev):
                return

    def _quic_event(self, quic: LibP2PQuic, ev: QuicEvent) -> bool:
        """Handle one QUIC event other than stream data; False once the connection ended
        or must not see further events."""
        kind = type(ev)
        if kind is StreamReset or kind is StopSendingReceived:
            assert isinstance(ev, StreamReset | StopSendingReceived)
            stream = self._streams.get(StreamId(ev.stream_id))
            if stream is not None:
                stream._fail(StreamResetError("stream reset by the remote"))
                self.reset_stream(StreamId(ev.stream_id))
        elif kind is HandshakeCompleted:
            assert isinstance(ev, HandshakeCompleted)
            refused = self._verify_peer(quic, ev)
            if refused is not None:
                self._terminate(refused, abort=True, close_code=_CRYPTO_ERROR_BAD_CERTIFICATE)
                return False
            self._established_quic()
            return self.is_established
        elif kind is PingAcknowledged:
            assert isinstance(ev, PingAcknowledged)
            waiter = self._ping_waiters.pop(ev.uid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif kind is ConnectionIdIssued:
            assert isinstance(ev, ConnectionIdIssued)
            self._add_cid(ev.connection_id)
        elif kind is ConnectionIdRetired:
            assert isinstance(ev, ConnectionIdRetired)
            self._cids.discard(ev.connection_id)
            if self._endpoint is not None:
                self._endpoint.remove_cid(ev.connection_id)
        elif kind is ConnectionTerminated:
            assert isinstance(ev, ConnectionTerminated)
            if ev.error_code == 0:
                error: P2PError = ConnectionClosedError("connection closed by the remote")
            elif self._stage is _UPGRADING:
                error = HandshakeError(
                    f"QUIC handshake failed: {ev.reason_phrase or 'error'} "
                    f"(code {ev.error_code:#x})"
                )
            else:
                error = ConnectionClosedError(
                    f"QUIC connection closed: {ev.reason_phrase or 'error'} "
                    f"(code {ev.error_code:#x})"
                )
            self._terminate(error, transport_gone=True)
            return False
        return True

    def _verify_peer(self, quic: LibP2PQuic, ev: HandshakeCompleted) -> P2PError | None:
        if ev.alpn_protocol != ALPN:
            return HandshakeError(f"ALPN {ev.alpn_protocol!r} agreed, libp2p needs {ALPN!r}")
        certs = quic.peer_certificates()
        if len(certs) != 1:
            return HandshakeError(
                f"the peer presented {len(certs)} certificates; libp2p needs exactly one"
            )
        try:
            key = verify_certificate(certs[0], now=time.time())
        except HandshakeError as exc:
            return exc
        peer = PeerId.from_public_key(key)
        if self._expected_peer is not None and peer != self._expected_peer:
            return PeerIdMismatchError(self._expected_peer, peer)
        self._remote_peer = peer
        self.remote_public_key = key
        return None

    def _established_quic(self) -> None:
        quic, peer = self._quic, self._peer_sockaddr
        assert quic is not None and peer is not None
        loopback = ipaddress.ip_address(sockaddr_of(peer)[0]).is_loopback
        config = self._quic_config
        size = config.loopback_datagram_bytes if loopback else config.max_datagram_bytes
        if quic.datagram_size == min(size, HANDSHAKE_DATAGRAM_BYTES):
            # The handshake's size was ours, capped: now the full one.  A machine made
            # otherwise keeps its size (WebTransport: what browsers take).
            quic.use_datagram_size(size)
        self._stage = _ESTABLISHED
        self._cancel_timer()  # the handshake deadline
        self._hooks.connection_ready(self)  # may veto (abort) the connection
        if self._stage is _ESTABLISHED:
            if not self._ready.done():
                self._ready.set_result(None)
            self._became_idle()

    def _remote_stream(self, quic: LibP2PQuic, sid: StreamId) -> Stream | None:
        """The stream for data on a stream we do not track: a new one the peer opened,
        or None (our own stream we already forgot, one it re-uses, a unidirectional one)."""
        if self._stage is not _ESTABLISHED or sid & 2 or sid % 2 != self._next_remote_sid % 2:
            return None
        if sid >= self._next_remote_sid:
            # Streams open in order; the ones skipped may still come (reordering).
            if sid > self._next_remote_sid:  # (no range to make for none, as usual)
                for skipped in range(self._next_remote_sid, sid, 4):
                    self._skipped_remote.add(skipped)
            self._next_remote_sid = sid + 4
        elif sid in self._skipped_remote:
            self._skipped_remote.discard(sid)
        else:
            return None
        if self._inbound_streams >= self._config.max_inbound_streams_per_connection:
            self._quic_reset(quic, sid)
            return None
        self._inbound_streams += 1
        # No machine yet: the stream matches the peer's first input against the offer,
        # and only a stream still negotiating after this input gets a deadline.
        offered = self._offered
        if offered is None:
            offered = self._offered = self._hooks.supported_protocols(self)
        stream = Stream(self, sid, _RESPONDER, offered)
        self._streams[sid] = stream
        self._opened.append(sid)
        return stream

    # -- timers ---------------------------------------------------------------------------

    def _arm_quic_timer(self, quic: LibP2PQuic, now: float | None = None) -> None:
        """Follow aioquic's timer lazily: a deadline a little later than the armed one
        (the usual case in bulk, as each packet moves the loss-detection deadline on)
        keeps the armed handle, which re-arms when it fires early.  An earlier one, or
        one more than ``_TIMER_SLACK_SECONDS`` later, replaces it: the ACK delay's
        deadline, once its ACK rode on a packet, gives way to the loss timer's tens of
        milliseconds, and a sequential requester would otherwise wake up idle for it
        about once per request (one more epoll return and loop turn each).  But an armed
        handle at least ``_TIMER_KEEP_SECONDS`` away stays for any later deadline: a
        sequential requester's loss timer would otherwise give way to the idle timeout
        each time its request is acknowledged and come back with the next request (two
        timer handles per request), where it now fires early at most once per that
        time."""
        when = self._quic_due = quic.get_timer()
        if when is None:
            return  # an armed handle fires, finds nothing due and stops
        timer = self._quic_timer
        if timer is not None:
            armed = self._quic_timer_at
            if armed <= when and (
                when <= armed + _TIMER_SLACK_SECONDS
                or armed - (self.loop.time() if now is None else now) >= _TIMER_KEEP_SECONDS
            ):
                return
            timer.cancel()
        self._quic_timer_at = when
        self._quic_timer = self.loop.call_at(when, self._on_quic_timer)

    def _on_quic_timer(self) -> None:
        self._quic_timer = None
        quic = self._quic
        due = self._quic_due
        if quic is None or self._stage is _CLOSED or due is None:
            return
        if due > self._quic_timer_at:  # moved on since armed
            self._quic_timer_at = due
            self._quic_timer = self.loop.call_at(due, self._on_quic_timer)
            return
        quic.handle_timer(now=max(due, self.loop.time()))
        self._process_events(quic)
        if self._opened:
            self._watch_opened()
        if not self.is_closed:
            self._transmit()

    def _on_timer(self) -> None:
        if self._stage is _UPGRADING:
            self._timer = None
            self._terminate(
                HandshakeTimeoutError(
                    f"QUIC handshake not done within {self._config.handshake_timeout} s"
                ),
                abort=True,
            )
            return
        super()._on_timer()

    # -- output ---------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        self._transmit_wanted = True
        if not self._hold_transmit and self._transmit_handle is None:
            self._transmit_handle = self.loop.call_soon(self._scheduled_transmit)

    def _scheduled_transmit(self) -> None:
        self._transmit_handle = None
        quic = self._quic
        if quic is None or self._stage is _CLOSED:
            return
        if self._transmit_wanted or self._stage is _UPGRADING or quic.has_unsent():
            self._transmit_wanted = False
            self._transmit(True)  # with_ack
        else:
            self._arm_quic_timer(quic)  # what the input set (an ACK's delay)

    def _flush(self) -> int:
        self._transmit()
        return 0

    def _transmit(self, with_ack: bool = False) -> None:
        """Send what aioquic has; ``with_ack``: we send because data or credit waits,
        so a pending ACK rides along instead of leaving alone at aioquic's ACK delay."""
        quic = self._quic
        endpoint = self._endpoint
        if quic is None or endpoint is None:
            return
        now = self.loop.time()
        datagrams = quic.datagrams_to_send(now, with_ack)
        if len(datagrams) == 1:
            endpoint.sendto(*datagrams[0])
        elif datagrams:
            addr = datagrams[0][1]
            if all(a == addr for _, a in datagrams):
                endpoint.send_datagrams([data for data, _ in datagrams], addr)
            else:
                for data, a in datagrams:
                    endpoint.sendto(data, a)
        self._arm_quic_timer(quic, now)
        if self._blocked_writers:
            limit = self._quic_config.send_buffer_bytes // 2
            for sid in list(self._blocked_writers):
                if quic.unsent_bytes(sid) <= limit:
                    self._blocked_writers.discard(sid)
                    stream = self._streams.get(sid)
                    if stream is not None:
                        stream._wake_writer()

    # -- streams --------------------------------------------------------------------------

    def _require_quic(self) -> LibP2PQuic:
        if self._stage is not _ESTABLISHED or self._quic is None:
            if self._error is not None:
                raise self._error
            raise InvalidStateError("connection is not established")
        return self._quic

    def _new_stream_id(self, quic: LibP2PQuic) -> StreamId:
        """A new bidirectional stream of ours (WebTransport prefixes its session)."""
        return StreamId(quic.get_next_available_stream_id())

    def open_stream(self, protocols: list[str] | tuple[str, ...]) -> Stream:
        quic = self._quic
        if quic is None or self._stage is not _ESTABLISHED:
            quic = self._require_quic()
        sid = self._new_stream_id(quic)
        negotiator, out = outbound_negotiation(
            protocols, self._config.max_negotiation_message_bytes
        )
        stream = Stream(self, sid, _INITIATOR, negotiator)
        self._streams[sid] = stream
        self._watch_negotiation(sid)
        quic.write(sid, out)
        self._schedule_flush()
        return stream

    async def ping(self) -> float:
        """A QUIC PING acknowledged: the round-trip time in seconds."""
        quic = self._require_quic()
        uid = next(_ping_ids)
        fut: asyncio.Future[None] = self.loop.create_future()
        self._ping_waiters[uid] = fut
        started = self.loop.time()
        quic.send_ping(uid)
        self._schedule_flush()
        try:
            await fut
        finally:
            self._ping_waiters.pop(uid, None)
        return self.loop.time() - started

    def send_stream_data(self, sid: StreamId, data: bytes | memoryview) -> int:
        quic = self._quic
        if quic is None or self._stage is not _ESTABLISHED:
            quic = self._require_quic()
        try:
            # As much as send_buffer_bytes leaves room for (its send buffer copies only
            # what is not immutable).
            size = quic.write(sid, data, False, self._quic_config.send_buffer_bytes)  # limit
        except (ValueError, AssertionError, RuntimeError) as exc:  # the stream's sending part ended
            raise StreamResetError(f"stream cannot send: {exc}") from None
        if size < len(data):
            self._blocked_writers.add(sid)
            if not size:
                return 0
        if size >= self._config.write_flush_bytes:
            self._transmit(True)  # bulk: start sending now, with any ACK due
        else:
            self._schedule_flush()  # writes of one loop turn leave together
        return size

    def acknowledge(self, sid: StreamId, size: int) -> None:
        quic = self._quic
        if quic is not None and self._stage is _ESTABLISHED and quic.consumed(sid, size):
            self._schedule_flush()

    def close_stream(self, sid: StreamId) -> None:
        quic = self._quic
        if quic is not None and self._stage is _ESTABLISHED:
            try:
                quic.write_fin(sid)
            except (ValueError, AssertionError, RuntimeError):
                return  # already reset
            self._schedule_flush()

    def reset_stream(self, sid: StreamId) -> None:
        quic = self._quic
        if quic is not None and self._stage is _ESTABLISHED:
            if quic.sends_pending(sid):
                # What was written before the reset leaves first (a multistream "na"),
                # as on Yamux: RESET_STREAM abandons data that has not been sent.
                self._transmit()
            self._quic_reset(quic, sid)
            self._schedule_flush()
        self.forget_stream(sid)

    @staticmethod
    def _quic_reset(quic: LibP2PQuic, sid: int) -> None:
        with contextlib.suppress(ValueError, AssertionError, RuntimeError):
            quic.reset_stream(sid, 0)
        with contextlib.suppress(ValueError, AssertionError, RuntimeError):
            quic.stop_stream(sid, 0)

    def forget_stream(self, sid: StreamId) -> None:
        if self._blocked_writers:
            self._blocked_writers.discard(sid)
        if self._quic is not None:
            self._quic.forget(sid)  # its credit and send counts
        super().forget_stream(sid)

    # -- teardown -------------------------------------------------------------------------

    def unreachable(self, addr: tuple[str, int], exc: Exception) -> None:
        """The endpoint got an ICMP error about datagrams to ``addr``: a dial still in its
        handshake to that address fails now (nobody listens there) instead of at its
        timeout.  Anything else ignores it: QUIC's timers judge loss on a live path."""
        peer = self._peer_sockaddr
        if (
            self._stage is not _UPGRADING
            or self.direction is not Direction.OUTBOUND
            or peer is None
            or sockaddr_of(peer) != sockaddr_of(addr)
        ):
            return
        reason = getattr(exc, "strerror", None) or str(exc) or "unreachable"
        self._terminate(
            PortUnreachableError(f"QUIC dial to {addr[0]}:{addr[1]} refused: {reason} (ICMP)"),
            abort=True,
            transport_gone=True,
        )

    def _terminate(
        self,
        error: P2PError,
        *,
        abort: bool = False,
        transport_gone: bool = False,
        close_code: int = 0,
    ) -> None:
        if self._stage is _CLOSED:
            return
        quic = self._quic
        if quic is not None and not transport_gone:
            # CONNECTION_CLOSE leaves once; a peer that misses it times out idle.
            reason = str(error)[:200]
            if close_code:
                quic.close(error_code=close_code, frame_type=0x06, reason_phrase=reason)
            else:
                quic.close(error_code=0, reason_phrase="" if not abort else reason)
            self._transmit()
        if self._quic_timer is not None:
            self._quic_timer.cancel()
            self._quic_timer = None
        if self._transmit_handle is not None:
            self._transmit_handle.cancel()
            self._transmit_handle = None
        endpoint = self._endpoint
        if endpoint is not None:
            for cid in self._cids:
                endpoint.remove_cid(cid)
            self._cids.clear()
            endpoint.connection_gone(self)
        self._blocked_writers.clear()
        super()._terminate(error, abort=abort, transport_gone=True)
