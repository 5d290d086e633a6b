"""Where aiop2p reaches past aioquic's public API: all of it is in this module.

aioquic (the sans-IO QUIC machine the QUIC transport drives) lacks six things libp2p
needs, so :class:`LibP2PQuic` subclasses its ``QuicConnection`` and touches these
non-public members, each checked by ``tests/transports/test_quic_adapter.py`` so an
aioquic upgrade that moves them fails loudly instead of silently weakening a check:

- the server requests the client certificate (libp2p ``tls.md``: servers MUST require
  client authentication): ``tls.Context._request_client_certificate``, set as the TLS
  context is made (``_initialize``);
- the certificate the peer presented: ``tls.Context._peer_certificate`` and
  ``_peer_certificate_chain``;
- receive credit follows what the application *read*, not what arrived: aioquic doubles
  a stream's window whenever half of it has arrived, so a peer could make an unread
  stream buffer without bound.  ``_write_stream_limits`` and ``_write_connection_limits``
  are wrapped to grant ``consumed + window`` instead;
- how many streams the peer may open: ``_local_max_streams_bidi`` (aioquic fixes 128)
  and ``_local_max_streams_uni`` (0: libp2p has no use for them);
- HTTP/3 for WebTransport: the server may leave the client certificate unrequested,
  the peer allows a few unidirectional streams, and ``H3Connection._stream`` records a
  WebTransport stream we open (:func:`open_webtransport_stream`) and forgets one we
  are done with (:func:`forget_h3_stream`);
- how much of a stream's written data has not left yet (send backpressure):
  ``_streams``, and of each stream ``sender.highest_offset``, ``.buffer_is_empty`` and
  ``.reset_pending``.
"""

from __future__ import annotations

from typing import Any

from aioquic.h3.connection import FrameType, H3Connection, H3Stream
from aioquic.quic.connection import QuicConnection as _AioquicConnection
from cryptography import x509

__all__ = ["LibP2PQuic", "forget_h3_stream", "open_webtransport_stream"]


class LibP2PQuic(_AioquicConnection):
    """aioquic's connection with client-certificate requests and read-driven credit."""

    def __init__(
        self,
        *,
        stream_window_bytes: int,
        connection_window_bytes: int,
        max_streams: int,
        max_uni_streams: int = 0,
        request_client_certificate: bool = True,
        **kwargs: Any,
    ) -> None:
        """``max_uni_streams``: 0 for libp2p over QUIC (it uses none), a few for HTTP/3
        (WebTransport), whose control streams are unidirectional;
        ``request_client_certificate``: False for WebTransport (browsers send none)."""
        super().__init__(**kwargs)
        self._request_client_certificate = request_client_certificate
        for limit, value in (
            (self._local_max_streams_bidi, max_streams),
            (self._local_max_streams_uni, max_uni_streams),
        ):
            limit.value = limit.sent = value
        self._stream_window = stream_window_bytes
        self._connection_window = connection_window_bytes
        self._consumed: dict[int, int] = {}
        self._consumed_total = 0
        self._written: dict[int, int] = {}

    # -- TLS --------------------------------------------------------------------------

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        if not self._is_client and self._request_client_certificate:
            self.tls._request_client_certificate = True

    @property
    def requests_client_certificate(self) -> bool:
        return bool(self.tls._request_client_certificate)

    def peer_certificates(self) -> list[x509.Certificate]:
        """The certificate chain the peer sent (empty if it sent none)."""
        tls = getattr(self, "tls", None)
        if tls is None or tls._peer_certificate is None:
            return []
        return [tls._peer_certificate, *tls._peer_certificate_chain]

    # -- receive credit ---------------------------------------------------------------

    def consumed(self, stream_id: int, size: int) -> bool:
        """The application read ``size`` bytes of the stream: they may be re-credited.

        True when that makes a credit update due (a quarter of a window was read).
        """
        total = self._consumed[stream_id] = self._consumed.get(stream_id, 0) + size
        self._consumed_total += size
        stream = self._streams.get(stream_id)
        quarter = self._stream_window // 4
        if (
            stream is not None
            and total + self._stream_window - stream.max_stream_data_local >= quarter
        ):
            return True
        max_data = self._local_max_data
        return self._consumed_total + self._connection_window - max_data.value >= (
            self._connection_window // 4
        )

    def forget(self, stream_id: int) -> None:
        self._consumed.pop(stream_id, None)
        self._written.pop(stream_id, None)

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        if stream.max_stream_data_local:
            target = self._consumed.get(stream.stream_id, 0) + self._stream_window
            # Update once a quarter of the window was read: one frame per quarter.
            if target - stream.max_stream_data_local >= self._stream_window // 4:
                stream.max_stream_data_local = target
        receiver = stream.receiver
        highest, receiver.highest_offset = receiver.highest_offset, 0  # no doubling
        try:
            super()._write_stream_limits(builder, space, stream)
        finally:
            receiver.highest_offset = highest

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        max_data = self._local_max_data
        target = self._consumed_total + self._connection_window
        if target - max_data.value >= self._connection_window // 4:
            max_data.value = target
        used, max_data.used = max_data.used, 0  # no doubling
        try:
            super()._write_connection_limits(builder, space)
        finally:
            max_data.used = used

    # -- send backpressure ------------------------------------------------------------

    def write(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.send_stream_data(stream_id, data, end_stream)
        self._written[stream_id] = self._written.get(stream_id, 0) + len(data)

    def has_unsent(self) -> bool:
        """Whether some stream holds data, a FIN or a reset not sent yet, which an ACK
        or new credit may let go (lost data counts again once declared lost)."""
        for stream in self._streams.values():
            sender = stream.sender
            if not sender.buffer_is_empty or sender.reset_pending:
                return True
        return False

    def sends_pending(self, stream_id: int) -> bool:
        """Whether the stream holds written data that has not been sent once yet (also
        after :meth:`forget`)."""
        stream = self._streams.get(stream_id)
        return stream is not None and not stream.sender.buffer_is_empty

    def unsent_bytes(self, stream_id: int) -> int:
        """Bytes written to the stream that have not been sent once yet."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        return self._written.get(stream_id, 0) - int(stream.sender.highest_offset)


def forget_h3_stream(h3: H3Connection, quic: LibP2PQuic, stream_id: int) -> None:
    """Drop aioquic's HTTP/3 record of a WebTransport stream we are done with
    (``H3Connection._stream``): it keeps one per stream until it saw both directions
    end through its own send calls, which WebTransport stream data bypasses.

    Only once nothing more can arrive on the stream (its receiving part finished, or
    QUIC dropped it: ``_streams``, ``receiver.is_finished``): later data would find no
    record and be parsed as HTTP/3 frames.
    """
    stream = quic._streams.get(stream_id)
    if stream is None or stream.receiver.is_finished:
        h3._stream.pop(stream_id, None)


def open_webtransport_stream(h3: H3Connection, session_id: int) -> int:
    """A new bidirectional WebTransport stream of ours in ``session_id``.

    ``H3Connection.create_webtransport_stream`` writes the stream's header but keeps no
    record (``H3Connection._stream``) saying it is a WebTransport stream, so the peer's
    data on it would be parsed as HTTP/3 frames: the record is added here.
    """
    stream_id = h3.create_webtransport_stream(session_id)
    record = H3Stream(stream_id)
    record.frame_type = FrameType.WEBTRANSPORT_STREAM
    record.session_id = session_id
    h3._stream[stream_id] = record
    return stream_id
