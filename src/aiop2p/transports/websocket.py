"""WebSocket transport: ``/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>/ws`` (and TLS forms).

libp2p over WebSocket is a byte stream carried in binary messages: each message is a
chunk of the stream, boundaries mean nothing, and Noise + Yamux run on top exactly as
on TCP.  The framing comes from the sans-IO core of the ``websockets`` library
(``ClientProtocol`` / ``ServerProtocol``) driven by :class:`_WsPipe`, which is at once
the socket's :class:`asyncio.Protocol` and the :class:`asyncio.Transport` handed to the
connection driver — so there is no task and no extra object on the data path.

Secure forms: ``.../tcp/<port>/wss``, ``.../tcp/<port>/tls/ws`` and
``.../tcp/<port>/tls/sni/<name>/ws``; listening needs a server :class:`ssl.SSLContext`
(certificate and key), dialling uses the given client context (else the system CAs).
No permessage-deflate: libp2p does not use it and the payload is ciphertext anyway.

websockets does the HTTP upgrade, parses every incoming frame, and sends control frames
(pong, close).  Outgoing data frames are built here — one final binary frame per write,
a 2-14 byte header plus the payload — because ``send_binary`` goes through a ``Frame``
object and a ``BytesIO`` copy on the bulk path; large payloads are written after their
header without being joined to it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import struct
from dataclasses import dataclass
from typing import Any, cast

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN, State
from websockets.server import ServerProtocol
from websockets.speedups import apply_mask
from websockets.uri import parse_uri

from ..errors import (
    ConnectionLostError,
    DialError,
    InvalidArgumentError,
    InvalidMultiaddrError,
    RemoteProtocolError,
)
from ..multiaddr import Multiaddr
from ._base import ProtocolFactory, ServerListener
from .pending import FairPending, Source, pending_source
from .tcp import LISTEN_BACKLOG, listen_error, listen_socket, sockaddr_to_multiaddr

__all__ = [
    "WebSocketConfig",
    "WebSocketListener",
    "WebSocketTransport",
    "WsTarget",
    "ws_target",
]

log = logging.getLogger(__name__)

_HOST_PROTOCOLS = {
    "ip4": socket.AF_INET,
    "ip6": socket.AF_INET6,
    "dns": 0,
    "dns4": socket.AF_INET,
    "dns6": socket.AF_INET6,
}
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT
_CLOSE = Opcode.CLOSE
_TEXT = Opcode.TEXT
_CLOSE_NORMAL = 1000
_CLOSE_UNSUPPORTED_DATA = 1003
_FIN_BINARY = 0x82  # FIN bit + binary opcode: every message we send is one frame
_JOIN_BELOW_BYTES = 16 * 1024  # smaller frames go out as one joined write (one syscall)


@dataclass(frozen=True, slots=True)
class WebSocketConfig:
    """Limits of the WebSocket transport (sizes in bytes, times in seconds)."""

    max_message_bytes: int = 4 * 1024 * 1024
    """Largest incoming message accepted; js-libp2p sends ~64 KiB, we send <= max_send."""
    max_send_message_bytes: int = 256 * 1024
    """Writes above this are split into several messages (bounded receive buffers)."""
    upgrade_timeout: float = 10.0
    """Time an inbound socket has to complete the HTTP upgrade (slow-loris guard)."""
    close_timeout: float = 5.0
    """Time the closing handshake may take before the socket is aborted."""
    max_pending_upgrades: int = 256
    """Inbound sockets still in the HTTP upgrade, per listener.  When full, a newcomer
    takes the place of the oldest socket of the busiest source if that is fairer
    (:class:`~aiop2p.transports.pending.FairPending`), else it is dropped."""
    max_pending_upgrades_per_ip: int = 32
    """Inbound sockets still in the HTTP upgrade from one IPv4 address or IPv6 /64, per
    listener; more from there are dropped (as ``ConnectionLimits.max_pending_incoming_per_ip``)."""

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1 << 20:
            raise InvalidArgumentError("max_message_bytes must be at least 1 MiB")
        if not 0 < self.max_send_message_bytes <= self.max_message_bytes:
            raise InvalidArgumentError("max_send_message_bytes must be in (0, max_message_bytes]")


@dataclass(frozen=True, slots=True)
class WsTarget:
    """A parsed WebSocket multiaddr."""

    host: str
    port: int
    family: int
    secure: bool
    sni: str | None
    suffix: str
    """The part after ``/tcp/<port>`` (``/ws``, ``/wss``, ``/tls/ws``, ...), without /p2p."""

    @property
    def server_hostname(self) -> str:
        return self.sni or self.host

    @property
    def uri(self) -> str:
        name = self.server_hostname
        host = f"[{name}]" if ":" in name else name
        return f"{'wss' if self.secure else 'ws'}://{host}:{self.port}/"


def ws_target(addr: Multiaddr) -> WsTarget | None:
    """Parse ``addr`` if it is a WebSocket address (optionally ending in ``/p2p``)."""
    head = addr.tcp_head()
    if head is None:
        return None
    rest = head.rest
    if rest and rest[-1][0] == "p2p":
        rest = rest[:-1]
    names = tuple(name for name, _ in rest)
    sni: str | None = None
    if names == ("ws",):
        secure = False
    elif names in (("wss",), ("tls", "ws")):
        secure = True
    elif names == ("tls", "sni", "ws"):
        secure = True
        sni = rest[1][1]
    else:
        return None
    suffix = "".join(f"/{name}" if value is None else f"/{name}/{value}" for name, value in rest)
    return WsTarget(head.host, head.port, _HOST_PROTOCOLS[head.host_protocol], secure, sni, suffix)


def _tune(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _frame_header(length: int, mask: bool) -> bytes:
    """Header of one final binary frame (RFC 6455 §5.2)."""
    bit = 0x80 if mask else 0
    if length < 126:
        return struct.pack("!BB", _FIN_BINARY, bit | length)
    if length < 65536:
        return struct.pack("!BBH", _FIN_BINARY, bit | 126, length)
    return struct.pack("!BBQ", _FIN_BINARY, bit | 127, length)


class _WsPipe(asyncio.Protocol, asyncio.Transport):
    """One WebSocket connection: the socket's protocol and the upper layer's transport.

    Before the HTTP upgrade completes there is no upper protocol; once it does, the
    factory builds it and every binary message payload goes to its ``data_received``.
    """

    def __init__(
        self,
        ws: ClientProtocol | ServerProtocol,
        factory: ProtocolFactory,
        suffix: str,
        config: WebSocketConfig,
        pending: FairPending[_WsPipe] | None = None,
    ) -> None:
        super().__init__()
        self._ws = ws
        self._factory = factory
        self._suffix = suffix
        self._config = config
        self._pending = pending
        self._mask = isinstance(ws, ClientProtocol)
        self._sock: asyncio.Transport | None = None
        self._upper: asyncio.Protocol | None = None
        self._opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._error: Exception | None = None
        self._closing = False  # close()/abort() was called by the upper layer
        self._eof_delivered = False
        self._lost = False

    # -- the socket side (asyncio.Protocol) ----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sock = transport = cast("asyncio.Transport", transport)  # uvloop's: not a subclass
        _tune(transport)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._config.upgrade_timeout, self._upgrade_timeout)
        ws = self._ws
        if isinstance(ws, ClientProtocol):
            ws.send_request(ws.connect())
            self._send_pending()
        elif self._pending is not None:
            peer = transport.get_extra_info("peername")
            source = pending_source(sockaddr_to_multiaddr(peer)) if peer else Source("?", False)
            refused, evicted = self._pending.admit(self, source)
            if evicted is not None:
                evicted.abort()
            if refused is not None:
                transport.abort()

    def data_received(self, data: bytes) -> None:
        ws = self._ws
        ws.receive_data(data)
        events = ws.events_received()
        upper = self._upper
        if upper is not None and len(events) == 1 and not self._closing:
            frame = events[0]  # the bulk path: one data frame, nothing else to look at
            if type(frame) is Frame and frame.opcode is _BINARY:
                upper.data_received(frame.data)  # type: ignore[arg-type]  # bytes-like
                if ws.writes or ws.parser_exc is not None:
                    self._after_ws_step()
                return
        self._handle_events(events)

    def _handle_events(self, events: list[Any]) -> None:
        ws = self._ws
        for event in events:
            if self._lost:
                return
            if isinstance(event, Request):
                self._on_request(event)
            elif isinstance(event, Response):
                self._on_response()
            else:
                opcode = event.opcode
                if opcode is _BINARY or opcode is _CONT:
                    if self._upper is not None and not self._closing:
                        self._upper.data_received(event.data)
                elif opcode is _CLOSE:
                    self._deliver_eof()
                elif opcode is _TEXT:
                    self._error = RemoteProtocolError("text frame on a libp2p WebSocket")
                    if ws.state is OPEN:
                        ws.fail(_CLOSE_UNSUPPORTED_DATA, "binary frames only")
                # ping: websockets queued the pong; pong: nothing to do
        self._after_ws_step()

    def _after_ws_step(self) -> None:
        ws = self._ws
        if ws.parser_exc is not None and self._error is None:
            self._error = ws.parser_exc
        if ws.handshake_exc is not None and not self._opened.done():
            self._fail_open(ws.handshake_exc)
        self._send_pending()
        if ws.close_expected() and self._timer is None and not self._lost:
            self._timer = asyncio.get_running_loop().call_later(
                self._config.close_timeout, self._close_timeout
            )

    def eof_received(self) -> bool | None:
        ws = self._ws
        ws.receive_eof()
        self._handle_events(ws.events_received())
        self._deliver_eof()
        return None  # let asyncio close the socket

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        if self._pending is not None:
            self._pending.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        error = exc if exc is not None else self._error
        if not self._opened.done():
            self._fail_open(error or ConnectionLostError("closed during the WebSocket upgrade"))
        upper = self._upper
        if upper is not None:
            if error is None and not self._closing and self._ws.close_rcvd is None:
                error = ConnectionLostError("WebSocket closed without a closing handshake")
            upper.connection_lost(error)

    def pause_writing(self) -> None:
        if self._upper is not None:
            self._upper.pause_writing()

    def resume_writing(self) -> None:
        if self._upper is not None:
            self._upper.resume_writing()

    # -- upgrade ------------------------------------------------------------------------

    def _on_request(self, request: Request) -> None:
        ws = self._ws
        assert isinstance(ws, ServerProtocol)
        response = ws.accept(request)
        ws.send_response(response)
        if response.status_code == 101:
            self._open_upper()
        else:
            self._fail_open(ws.handshake_exc or DialError("WebSocket upgrade refused"))

    def _on_response(self) -> None:
        if self._ws.handshake_exc is None:
            self._open_upper()

    def _open_upper(self) -> None:
        sock = self._sock
        assert sock is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending is not None:
            self._pending.discard(self)
            self._pending = None
        local = Multiaddr(f"{sockaddr_to_multiaddr(sock.get_extra_info('sockname'))}{self._suffix}")
        remote = Multiaddr(
            f"{sockaddr_to_multiaddr(sock.get_extra_info('peername'))}{self._suffix}"
        )
        upper = self._factory(local, remote)
        self._upper = upper
        if not self._opened.done():
            self._opened.set_result(None)
        upper.connection_made(self)

    def _fail_open(self, exc: Exception) -> None:
        if not self._opened.done():
            self._opened.set_exception(exc)
            self._opened.exception()

    def _upgrade_timeout(self) -> None:
        self._timer = None
        self._fail_open(DialError("WebSocket upgrade timed out"))
        if self._sock is not None:
            self._sock.abort()

    def _close_timeout(self) -> None:
        self._timer = None
        if self._sock is not None:
            self._sock.abort()

    async def wait_open(self) -> asyncio.Protocol:
        """Wait for the HTTP upgrade; return the upper protocol the factory built."""
        await self._opened
        assert self._upper is not None
        return self._upper

    # -- output -------------------------------------------------------------------------

    def _send_pending(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for chunk in self._ws.data_to_send():
            if chunk:
                sock.write(chunk)
            else:  # websockets' SEND_EOF: the server ends the TCP connection
                sock.close()
                return

    def _deliver_eof(self) -> None:
        if self._eof_delivered or self._upper is None:
            return
        self._eof_delivered = True
        if not self._closing:
            self._upper.eof_received()

    # -- the upper side (asyncio.Transport) ---------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as binary message(s): one frame each, built without copies where
        the socket can take the header and payload apart."""
        sock = self._sock
        if self._closing or sock is None or self._ws.state is not OPEN:
            return
        size = len(data)
        limit = self._config.max_send_message_bytes
        if size > limit:
            view = memoryview(data)
            for start in range(0, size, limit):
                self._write_frame(sock, view[start : start + limit])
            return
        if size:
            self._write_frame(sock, data)

    def _write_frame(self, sock: asyncio.Transport, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        if self._mask:  # a client masks (RFC 6455 §5.3); apply_mask is websockets' C helper
            mask = os.urandom(4)
            header = _frame_header(size, True) + mask
            data = apply_mask(data, mask)
        else:
            header = _frame_header(size, False)
        if size < _JOIN_BELOW_BYTES:
            sock.write(header + data)
        else:
            # Large payload: two writes cost less than copying it into a joined buffer.
            sock.write(header)
            sock.write(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return False  # a WebSocket has no half-close

    def write_eof(self) -> None:
        raise NotImplementedError("WebSocket connections cannot half-close")

    def close(self) -> None:
        """Start the closing handshake; the socket closes when it completes (or times out)."""
        if self._closing or self._lost:
            return
        self._closing = True
        ws = self._ws
        if ws.state is OPEN:
            ws.send_close(_CLOSE_NORMAL)
            self._after_ws_step()
        elif self._sock is not None and ws.state is State.CONNECTING:
            self._sock.close()
        elif self._timer is None and self._sock is not None:
            self._after_ws_step()

    def abort(self) -> None:
        self._closing = True
        if self._sock is not None and not self._lost:
            self._sock.abort()

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "websocket":
            return self._ws
        if self._sock is None:
            return default
        return self._sock.get_extra_info(name, default)

    def pause_reading(self) -> None:
        if self._sock is not None:
            self._sock.pause_reading()

    def resume_reading(self) -> None:
        if self._sock is not None:
            self._sock.resume_reading()

    def is_reading(self) -> bool:
        return self._sock is not None and self._sock.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._sock is not None:
            self._sock.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._sock.get_write_buffer_size() if self._sock is not None else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._sock.get_write_buffer_limits() if self._sock is not None else (0, 0)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._upper = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._upper is not None
        return self._upper


class WebSocketListener(ServerListener):
    def __init__(
        self, server: asyncio.Server, addrs: list[Multiaddr], pending: FairPending[_WsPipe]
    ) -> None:
        super().__init__(server, addrs)
        self._pending = pending

    async def close(self) -> None:
        """Stop accepting; drop sockets still in the HTTP upgrade (no node owns them yet)."""
        await super().close()
        for pipe in self._pending.items():
            self._pending.discard(pipe)
            pipe.abort()


class WebSocketTransport:
    """Dial and listen on ``/<ip4|ip6|dns|dns4|dns6>/<host>/tcp/<port>/ws`` (and TLS)."""

    def __init__(
        self,
        *,
        config: WebSocketConfig | None = None,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config or WebSocketConfig()
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl

    def can_dial(self, addr: Multiaddr) -> bool:
        return ws_target(addr) is not None

    def can_listen(self, addr: Multiaddr) -> bool:
        target = ws_target(addr)
        return (
            target is not None
            and addr.ip_address is not None
            and addr.peer_id is None
            and (not target.secure or self._server_ssl is not None)
        )

    def _new_client(self, target: WsTarget) -> ClientProtocol:
        return ClientProtocol(
            parse_uri(target.uri), max_size=self.config.max_message_bytes, logger=log
        )

    async def dial(self, addr: Multiaddr, factory: ProtocolFactory) -> asyncio.Protocol:
        target = ws_target(addr)
        if target is None:
            raise InvalidMultiaddrError(f"not a WebSocket address: {addr}")
        loop = asyncio.get_running_loop()
        pipe = _WsPipe(self._new_client(target), factory, target.suffix, self.config)
        ssl_context: ssl.SSLContext | None = None
        if target.secure:
            ssl_context = self._client_ssl or ssl.create_default_context()
        await loop.create_connection(
            lambda: pipe,
            target.host,
            target.port,
            family=target.family,
            ssl=ssl_context,
            server_hostname=target.server_hostname if ssl_context is not None else None,
        )
        try:
            return await pipe.wait_open()
        except BaseException as exc:
            pipe.abort()
            if isinstance(exc, Exception) and not isinstance(exc, DialError | OSError):
                raise DialError(f"WebSocket upgrade with {addr} failed: {exc}") from exc
            raise

    async def listen(self, addr: Multiaddr, factory: ProtocolFactory) -> WebSocketListener:
        target = ws_target(addr)
        if target is None or not self.can_listen(addr):
            raise InvalidMultiaddrError(
                f"cannot listen on {addr}: expected /ip4|ip6/<ip>/tcp/<port>/ws "
                "(or /wss, /tls/ws with a server SSL context)"
            )
        loop = asyncio.get_running_loop()
        config = self.config
        pending = FairPending[_WsPipe](
            config.max_pending_upgrades, config.max_pending_upgrades_per_ip
        )

        def build() -> asyncio.Protocol:
            ws = ServerProtocol(max_size=config.max_message_bytes, logger=log)
            return _WsPipe(ws, factory, target.suffix, config, pending)

        sock = listen_socket(addr, target.host, target.port, target.family)
        try:
            server = await loop.create_server(
                build,
                sock=sock,
                ssl=self._server_ssl if target.secure else None,
                backlog=LISTEN_BACKLOG,
            )
        except OSError as exc:
            sock.close()
            raise listen_error(addr, exc) from exc
        addrs = [
            Multiaddr(f"{sockaddr_to_multiaddr(sock.getsockname())}{target.suffix}")
            for sock in server.sockets
        ]
        return WebSocketListener(server, addrs, pending)
