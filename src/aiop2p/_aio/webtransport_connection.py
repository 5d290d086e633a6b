"""``WebTransportConnection``: a libp2p connection over one WebTransport session.

A :class:`QuicConnection` whose QUIC connection speaks HTTP/3 (ALPN ``h3``, aioquic's
``H3Connection`` with WebTransport enabled) instead of libp2p-over-QUIC, following
libp2p ``webtransport/README.md`` (``protocols.webtransport``):

- the listener serves its current rotating certificate (:class:`ListenerCertificates`)
  and requests no client certificate; the dialler accepts the listener's certificate
  only if its hash is one of the ``/certhash`` values it dialled (no CA);
- the client sends the extended CONNECT for the libp2p endpoint; the listener accepts
  exactly one such session per connection and answers anything else with 404 and the
  end of the connection (once established, later CONNECTs get 429 and nothing more);
- the first bidirectional stream of the session carries Noise XX, the client as
  initiator; the listener's payload lists its certhashes, which the client checks
  (:func:`check_certhashes`).  Noise only authenticates: the streams stay as QUIC's TLS
  protects them;
- then every WebTransport bidirectional stream of the session is an aiop2p stream
  negotiated with multistream-select, exactly as on :class:`QuicConnection`.

Bounds: those of :class:`QuicConnection` (streams, windows, handshake deadline, which
also covers the session request and Noise), one session per connection, and stream data
that arrives before the handshake is over held up to :data:`MAX_EARLY_BYTES` in at most
:data:`MAX_EARLY_STREAMS` streams (more ends the connection).
"""

from __future__ import annotations

import ssl
from typing import Any, Final

from aioquic.h3.connection import H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    DatagramFrameReceived,
    HandshakeCompleted,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..errors import (
    CerthashMismatchError,
    ConnectionClosedError,
    HandshakeError,
    LimitExceededError,
    P2PError,
)
from ..multiaddr import Multiaddr
from ..protocols import noise
from ..protocols.role import Role
from ..protocols.webtransport import (
    ALPN,
    PATH,
    certhash,
    check_certhashes,
    parse_webtransport_addr,
    session_path_ok,
)
from ..protocols.yamux import StreamId
from .connection import _Stage
from .quic_adapter import LibP2PQuic, forget_h3_stream, open_webtransport_stream
from .quic_connection import QuicConfig, QuicConnection, QuicEndpointLike, SockAddr
from .quic_transport import QuicEndpoint, quic_multiaddr
from .webtransport_certs import ListenerCertificates

__all__ = [
    "MAX_EARLY_BYTES",
    "MAX_EARLY_STREAMS",
    "WebTransportConnection",
    "WebTransportEndpoint",
]

MAX_EARLY_BYTES: Final = 256 * 1024
"""Stream data held while the session is not set up yet (Noise messages included)."""
MAX_EARLY_STREAMS: Final = 8
"""Streams with data held while the session is not set up yet."""
_H3_UNI_STREAMS: Final = 16
"""Unidirectional streams the peer may open: HTTP/3 control and QPACK need three."""
_MAX_DATAGRAM_FRAME_BYTES: Final = 65536
"""HTTP/3 datagrams must be enabled for WebTransport; we drop the ones we receive."""
_CRYPTO_ERROR_BAD_CERTIFICATE: Final = 0x100 + 42
_NOISE_MAX_FIRST_MESSAGE: Final = 1024


class WebTransportConnection(QuicConnection):
    """A libp2p connection over a WebTransport session (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._h3: H3Connection | None = None
        self._certificates: ListenerCertificates | None = None
        self._dialled: tuple[bytes, ...] = ()
        self._served_hash = b""
        self._session_id: int | None = None
        self._session_accepted = False  # client: the listener answered 200
        self._noise: noise.NoiseHandshake | None = None
        self._noise_sid: int | None = None
        self._noise_done = False
        self._early: dict[int, list[tuple[bytes, bool]]] = {}
        self._early_bytes = 0
        self._before_h3: list[QuicEvent] = []
        """Client: QUIC events for HTTP/3 that came before the handshake completed
        (bounded by the QUIC receive windows)."""

    def __repr__(self) -> str:
        peer = self._remote_peer or self._expected_peer
        return (
            f"<WebTransportConnection {self.id} {self.direction.value} {peer} {self._stage.name}>"
        )

    # -- set-up ---------------------------------------------------------------------------

    def start(
        self,
        endpoint: QuicEndpointLike,
        quic_config: QuicConfig,
        peer: SockAddr,
        *,
        original_destination_cid: bytes | None = None,
    ) -> LibP2PQuic:
        if original_destination_cid is not None:
            assert isinstance(endpoint, WebTransportEndpoint)
            self._certificates = endpoint.certificates
        else:
            target = parse_webtransport_addr(self.remote_addr) if self.remote_addr else None
            self._dialled = target.certhashes if target is not None else ()
        quic = super().start(
            endpoint, quic_config, peer, original_destination_cid=original_destination_cid
        )
        if self._refused is not None:
            self._terminate(self._refused, abort=True)
        return quic

    def _make_quic(
        self,
        quic_config: QuicConfig,
        *,
        is_client: bool,
        loopback: bool,
        original_destination_cid: bytes | None,
    ) -> LibP2PQuic:
        certificate = private_key = None
        if not is_client:
            certificates = self._certificates
            if certificates is None:
                raise HandshakeError("a WebTransport listener needs its certificates")
            certificate, private_key = certificates.serving()
        configuration = QuicConfiguration(
            alpn_protocols=[ALPN],
            is_client=is_client,
            certificate=certificate,
            private_key=private_key,
            verify_mode=ssl.CERT_NONE,  # the dialler checks the certhash itself
            idle_timeout=quic_config.idle_timeout,
            max_data=quic_config.connection_window_bytes,
            max_stream_data=quic_config.stream_window_bytes,
            # Not the larger loopback size: browsers read datagrams into buffers of
            # their max_udp_payload_size (1472 B in Chromium) and drop larger ones,
            # and aioquic does not follow that transport parameter.
            max_datagram_size=quic_config.max_datagram_bytes,
            max_datagram_frame_size=_MAX_DATAGRAM_FRAME_BYTES,
            congestion_control_algorithm=quic_config.congestion_control,
        )
        quic = LibP2PQuic(
            configuration=configuration,
            original_destination_connection_id=original_destination_cid,
            stream_window_bytes=quic_config.stream_window_bytes,
            connection_window_bytes=quic_config.connection_window_bytes,
            max_streams=quic_config.max_streams,
            max_uni_streams=_H3_UNI_STREAMS,
            request_client_certificate=False,
        )
        if not is_client:  # its HTTP/3 may see the client's first requests with the handshake
            self._h3 = H3Connection(quic, enable_webtransport=True)
        return quic

    # -- QUIC events ----------------------------------------------------------------------

    def _process_events(self, quic: LibP2PQuic) -> None:
        while (ev := quic.next_event()) is not None:
            kind = type(ev)
            if kind is StreamDataReceived or kind is DatagramFrameReceived:
                h3 = self._h3
                if h3 is None:  # the client's HTTP/3 starts with the handshake's end
                    self._before_h3.append(ev)
                    continue
                events = h3.handle_event(ev)
                if not events:
                    self._schedule_flush()  # HTTP/3 may have answered (QPACK, a close)
                for h3_event in events:
                    if not self._h3_event(quic, h3_event):
                        return
            elif kind is StreamReset or kind is StopSendingReceived:
                assert isinstance(ev, StreamReset | StopSendingReceived)
                if self._h3 is not None:
                    self._h3.handle_event(ev)
                if not self._stream_ended_by_peer(ev.stream_id):
                    return
                if not self._quic_event(quic, ev):
                    return
            elif not self._quic_event(quic, ev):
                return

    def _quic_event(self, quic: LibP2PQuic, ev: QuicEvent) -> bool:
        if type(ev) is not HandshakeCompleted:
            return super()._quic_event(quic, ev)
        assert isinstance(ev, HandshakeCompleted)
        if ev.alpn_protocol != ALPN:
            return self._fail(HandshakeError(f"ALPN {ev.alpn_protocol!r} agreed, not {ALPN!r}"))
        if quic.configuration.is_client:
            certs = quic.peer_certificates()
            if not certs:
                return self._fail(HandshakeError("the listener presented no certificate"))
            self._served_hash = certhash(certs[0])
            try:
                check_certhashes(self._served_hash, self._dialled)
            except CerthashMismatchError as exc:
                return self._fail(exc, close_code=_CRYPTO_ERROR_BAD_CERTIFICATE)
            h3 = self._h3 = H3Connection(quic, enable_webtransport=True)
            self._open_session(quic, h3)
            before, self._before_h3 = self._before_h3, []
            for early in before:
                for h3_event in h3.handle_event(early):
                    if not self._h3_event(quic, h3_event):
                        return False
        self._schedule_flush()
        return True

    def _fail(self, error: P2PError, *, close_code: int = 0) -> bool:
        self._terminate(error, abort=True, close_code=close_code)
        return False

    def _stream_ended_by_peer(self, sid: int) -> bool:
        """A reset of the session or of the Noise stream ends the connection."""
        if sid == self._session_id:
            return self._fail(ConnectionClosedError("the WebTransport session was reset"))
        if sid == self._noise_sid and not self._noise_done:
            return self._fail(HandshakeError("the Noise stream was reset"))
        self._early.pop(sid, None)
        return True

    # -- HTTP/3 events --------------------------------------------------------------------

    def _h3_event(self, quic: LibP2PQuic, ev: H3Event) -> bool:
        if isinstance(ev, WebTransportStreamDataReceived):
            return self._wt_data(quic, ev.stream_id, ev.session_id, ev.data, ev.stream_ended)
        if isinstance(ev, HeadersReceived):
            if quic.configuration.is_client:
                return self._session_answered(ev)
            return self._session_requested(quic, ev)
        if isinstance(ev, DataReceived) and ev.stream_id == self._session_id and ev.stream_ended:
            return self._fail(ConnectionClosedError("the WebTransport session ended"))
        return True  # datagrams, capsules: unused by libp2p

    def _session_requested(self, quic: LibP2PQuic, ev: HeadersReceived) -> bool:
        h3 = self._h3
        assert h3 is not None
        why = session_path_ok(ev.headers)
        if why is None and self._session_id is None:
            self._session_id = ev.stream_id
            h3.send_headers(
                ev.stream_id, [(b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")]
            )
            self._schedule_flush()
            early, self._early, self._early_bytes = self._early, {}, 0
            for sid, chunks in early.items():
                for data, ended in chunks:
                    if not self._wt_data(quic, sid, self._session_id, data, ended):
                        return False
            return True
        status = b"429" if why is None else b"404"
        why = why or "one session per connection"
        h3.send_headers(ev.stream_id, [(b":status", status)], end_stream=True)
        if self._stage is _Stage.ESTABLISHED:
            self._schedule_flush()
            return True
        self._transmit()  # the answer leaves before the connection closes
        return self._fail(HandshakeError(f"WebTransport session refused: {why}"))

    def _session_answered(self, ev: HeadersReceived) -> bool:
        if ev.stream_id != self._session_id:
            return True
        status = dict(ev.headers).get(b":status", b"")
        if status != b"200":
            return self._fail(
                HandshakeError(
                    f"WebTransport session refused: status {status.decode(errors='replace')}"
                )
            )
        self._session_accepted = True
        self._maybe_established()
        return self.is_established or self._stage is _Stage.UPGRADING

    def _open_session(self, quic: LibP2PQuic, h3: H3Connection) -> None:
        """Client: the CONNECT request, then at once the Noise stream and message 1."""
        session = self._session_id = quic.get_next_available_stream_id()
        remote = self.remote_addr
        assert remote is not None
        host = remote.value_for("ip4") or remote.value_for("ip6") or ""
        port = remote.value_for("udp") or ""
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        h3.send_headers(
            session,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"webtransport"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", PATH.encode()),
                (b"sec-webtransport-http3-draft02", b"1"),
            ],
        )
        self._noise_sid = open_webtransport_stream(h3, session)
        handshake = self._noise = noise.NoiseHandshake(
            role=Role.INITIATOR,
            credentials=self._credentials.with_webtransport_certhashes(()),
            ephemeral_key=X25519PrivateKey.generate(),
            expected_peer=self._expected_peer,
            verified=self._verified,
        )
        quic.write(self._noise_sid, handshake.data_to_send())

    # -- WebTransport stream data ---------------------------------------------------------

    def _wt_data(self, quic: LibP2PQuic, sid: int, session: int, data: bytes, ended: bool) -> bool:
        if self._stage is _Stage.ESTABLISHED:
            if session != self._session_id or sid == self._noise_sid:
                if sid != self._noise_sid:
                    self._quic_reset(quic, sid)
                quic.consumed(sid, len(data))
                return True
            return self._deliver(quic, StreamId(sid), data, ended)
        if self._session_id is None:  # server: the CONNECT has not arrived yet
            return self._hold(sid, data, ended)
        if session != self._session_id:
            self._quic_reset(quic, sid)
            return True
        if self._noise_sid is None and not quic.configuration.is_client and sid % 4 == 0:
            self._noise_sid = sid  # the first stream the client opens
            self._noise = noise.NoiseHandshake(
                role=Role.RESPONDER,
                credentials=self._server_credentials(),
                ephemeral_key=X25519PrivateKey.generate(),
                verified=self._verified,
                max_first_message_size=_NOISE_MAX_FIRST_MESSAGE,
            )
        if sid != self._noise_sid:
            return self._hold(sid, data, ended)
        return self._noise_data(quic, data, ended)

    def _server_credentials(self) -> noise.NoiseCredentials:
        assert self._certificates is not None
        return self._certificates.noise_credentials(self._credentials)

    def _hold(self, sid: int, data: bytes, ended: bool) -> bool:
        chunks = self._early.get(sid)
        if chunks is None:
            if len(self._early) >= MAX_EARLY_STREAMS:
                return self._fail(
                    LimitExceededError(
                        f"more than {MAX_EARLY_STREAMS} streams before the WebTransport "
                        "session was set up"
                    )
                )
            chunks = self._early[sid] = []
        self._early_bytes += len(data)
        if self._early_bytes > MAX_EARLY_BYTES:
            return self._fail(
                LimitExceededError(
                    f"more than {MAX_EARLY_BYTES} bytes before the WebTransport session was set up"
                )
            )
        chunks.append((data, ended))
        return True

    def _noise_data(self, quic: LibP2PQuic, data: bytes, ended: bool) -> bool:
        handshake = self._noise
        assert handshake is not None and self._noise_sid is not None
        quic.consumed(self._noise_sid, len(data))
        if self._noise_done:
            return True
        if data:
            handshake.receive_data(data)
        if ended:
            handshake.receive_eof()
        events = handshake.events_received()
        for event in events:  # checked before message 3 leaves
            if isinstance(event, noise.HandshakeFailed):
                return self._fail(event.error)
            if quic.configuration.is_client:
                try:
                    check_certhashes(self._served_hash, self._dialled, event.remote_certhashes)
                except CerthashMismatchError as exc:
                    return self._fail(exc)
        out = handshake.data_to_send()
        if out:
            quic.write(self._noise_sid, out)
            self._schedule_flush()
        for event in events:
            assert isinstance(event, noise.HandshakeCompleted)
            self._noise_done = True
            self._remote_peer = event.remote_peer
            self.remote_public_key = event.remote_public_key
            quic.write(self._noise_sid, b"", end_stream=True)
            self._schedule_flush()
            if not quic.configuration.is_client:
                self._session_accepted = True  # it answered the CONNECT already
            self._maybe_established()
            return self._stage is not _Stage.CLOSED
        return True

    def _maybe_established(self) -> None:
        if not (self._noise_done and self._session_accepted) or self._stage is not _Stage.UPGRADING:
            return
        quic = self._quic
        assert quic is not None and self._session_id is not None and self._noise_sid is not None
        if not quic.configuration.is_client:
            # Streams the client opened before this one were the session and Noise's.
            self._next_remote_sid = max(self._session_id, self._noise_sid) + 4
        self._established_quic()
        if not self.is_established:
            return
        early, self._early, self._early_bytes = self._early, {}, 0
        for sid, chunks in early.items():
            for data, ended in chunks:
                if not self._wt_data(quic, sid, self._session_id, data, ended):
                    return

    def _deliver(self, quic: LibP2PQuic, sid: StreamId, data: bytes, ended: bool) -> bool:
        stream = self._streams.get(sid)
        if stream is None:
            stream = self._remote_stream(quic, sid)
            if stream is None:
                quic.consumed(sid, len(data))
                return True
        if data:
            stream._feed_data(data)
        if ended:
            stream._feed_eof()
            if stream._write_closed:
                self.forget_stream(sid)
        return True

    # -- streams --------------------------------------------------------------------------

    def _new_stream_id(self, quic: LibP2PQuic) -> StreamId:
        assert self._h3 is not None and self._session_id is not None
        return StreamId(open_webtransport_stream(self._h3, self._session_id))

    def forget_stream(self, sid: StreamId) -> None:
        if self._h3 is not None and self._quic is not None:
            forget_h3_stream(self._h3, self._quic, sid)
        super().forget_stream(sid)


class WebTransportEndpoint(QuicEndpoint):
    """A UDP socket carrying WebTransport connections (its listener's certificates)."""

    connection_class = WebTransportConnection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.certificates: ListenerCertificates | None = None
        """Set while listening: what inbound connections serve and announce."""

    def remote_multiaddr(self, addr: SockAddr) -> Multiaddr:
        return quic_multiaddr(addr).encapsulate("/webtransport")
