"""WebSocket transport: address forms, framing, upgrade, closing, backpressure, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from aiop2p.errors import DialError, InvalidArgumentError, InvalidMultiaddrError
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node
from aiop2p.transports._base import Transport
from aiop2p.transports.tcp import TcpTransport
from aiop2p.transports.websocket import (
    WebSocketConfig,
    WebSocketListener,
    WebSocketTransport,
    ws_target,
)

from ..helpers import wait_for

PEER = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"


# ---- helpers ------------------------------------------------------------------------------


class Recorder(asyncio.Protocol):
    """An upper protocol that records what the WebSocket pipe hands it."""

    def __init__(self, local: Multiaddr, remote: Multiaddr) -> None:
        self.local = local
        self.remote = remote
        self.transport: asyncio.Transport | None = None
        self.data = bytearray()
        self.chunks = 0
        self.eof = False
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.paused = False
        self.pauses = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.chunks += 1

    def eof_received(self) -> bool | None:
        self.eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_writing(self) -> None:
        self.paused = False


class Recorders:
    def __init__(self) -> None:
        self.made: list[Recorder] = []
        self.arrived = asyncio.Event()

    def __call__(self, local: Multiaddr, remote: Multiaddr) -> Recorder:
        rec = Recorder(local, remote)
        self.made.append(rec)
        self.arrived.set()
        return rec

    async def first(self) -> Recorder:
        await asyncio.wait_for(self.arrived.wait(), 5)
        return self.made[0]


async def listen(
    transport: WebSocketTransport, addr: str = "/ip4/127.0.0.1/tcp/0/ws"
) -> tuple[WebSocketListener, Recorders]:
    recorders = Recorders()
    listener = await transport.listen(Multiaddr(addr), recorders)
    return listener, recorders


@contextlib.asynccontextmanager
async def connected_pair(
    transport: WebSocketTransport,
) -> AsyncIterator[tuple[Recorder, Recorder]]:
    listener, server_side = await listen(transport)
    client = await transport.dial(listener.addrs[0], Recorder)
    assert isinstance(client, Recorder)
    server = await server_side.first()
    try:
        yield client, server
    finally:
        for rec in (client, server):
            if rec.transport is not None:
                rec.transport.abort()
        await listener.close()


class RawClient:
    """A hand-driven WebSocket client (websockets' sans-IO core over a plain socket)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.ws: ClientProtocol | None = None

    @classmethod
    async def connect(cls, addr: Multiaddr) -> RawClient:
        target = ws_target(addr)
        assert target is not None
        reader, writer = await asyncio.open_connection(target.host, target.port)
        return cls(reader, writer)

    async def upgrade(self, addr: Multiaddr) -> Response:
        target = ws_target(addr)
        assert target is not None
        self.ws = ws = ClientProtocol(parse_uri(target.uri), max_size=None)
        ws.send_request(ws.connect())
        self.flush()
        while True:
            for event in await self.events():
                assert isinstance(event, Response)
                return event

    def flush(self) -> None:
        assert self.ws is not None
        for chunk in self.ws.data_to_send():
            if chunk:
                self.writer.write(chunk)
            elif self.writer.can_write_eof():
                with contextlib.suppress(OSError):  # the server may have closed first
                    self.writer.write_eof()

    async def events(self) -> list[object]:
        """Feed one read (or EOF) into the protocol and return what it produced."""
        assert self.ws is not None
        data = await asyncio.wait_for(self.reader.read(1 << 16), 5)
        if data:
            self.ws.receive_data(data)
        else:
            self.ws.receive_eof()
        self.flush()
        return list(self.ws.events_received())

    async def frames_until_closed(self) -> list[Frame]:
        frames: list[Frame] = []
        while True:
            assert self.ws is not None
            if self.ws.reader.eof:
                return frames
            frames += [e for e in await self.events() if isinstance(e, Frame)]

    def close(self) -> None:
        self.writer.close()


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) SSL contexts for a certificate valid for localhost and 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp_path / "cert.pem"
    key_path = tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


# ---- addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "secure", "sni", "suffix", "uri"),
    [
        ("/ip4/1.2.3.4/tcp/80/ws", "1.2.3.4", False, None, "/ws", "ws://1.2.3.4:80/"),
        ("/ip6/::1/tcp/80/ws/p2p/" + PEER, "::1", False, None, "/ws", "ws://[::1]:80/"),
        (
            "/dns4/example.com/tcp/443/wss",
            "example.com",
            True,
            None,
            "/wss",
            "wss://example.com:443/",
        ),
        ("/ip4/1.2.3.4/tcp/443/tls/ws", "1.2.3.4", True, None, "/tls/ws", "wss://1.2.3.4:443/"),
        (
            "/ip4/1.2.3.4/tcp/443/tls/sni/example.com/ws/p2p/" + PEER,
            "1.2.3.4",
            True,
            "example.com",
            "/tls/sni/example.com/ws",
            "wss://example.com:443/",
        ),
    ],
)
def test_ws_target_parses(
    text: str, host: str, secure: bool, sni: str | None, suffix: str, uri: str
) -> None:
    target = ws_target(Multiaddr(text))
    assert target is not None
    assert (target.host, target.secure, target.sni, target.suffix, target.uri) == (
        host,
        secure,
        sni,
        suffix,
        uri,
    )


@pytest.mark.parametrize(
    "text",
    [
        "/ip4/1.2.3.4/tcp/80",
        "/ip4/1.2.3.4/udp/80/ws",
        "/ip4/1.2.3.4/tcp/80/ws/ws",
        "/ip4/1.2.3.4/tcp/80/tls/sni/x.com",
        "/ip4/1.2.3.4/tcp/80/ws/p2p/" + PEER + "/p2p-circuit",
        "/dnsaddr/example.com/ws",
    ],
)
def test_ws_target_rejects(text: str) -> None:
    assert ws_target(Multiaddr(text)) is None
    assert not WebSocketTransport().can_dial(Multiaddr(text))


def test_can_listen_needs_ip_and_tls_context() -> None:
    plain = WebSocketTransport()
    assert plain.can_listen(Multiaddr("/ip4/0.0.0.0/tcp/0/ws"))
    assert not plain.can_listen(Multiaddr("/dns4/localhost/tcp/0/ws"))
    assert not plain.can_listen(Multiaddr("/ip4/127.0.0.1/tcp/0/wss"))
    assert plain.can_dial(Multiaddr("/dns4/localhost/tcp/1/wss"))
    assert not TcpTransport().can_dial(Multiaddr("/ip4/127.0.0.1/tcp/1/ws"))


def test_config_bounds() -> None:
    with pytest.raises(InvalidArgumentError):
        WebSocketConfig(max_message_bytes=1000)
    with pytest.raises(InvalidArgumentError):
        WebSocketConfig(max_send_message_bytes=8 << 20)


async def test_listen_rejects_non_ws_address() -> None:
    with pytest.raises(InvalidMultiaddrError):
        await WebSocketTransport().listen(Multiaddr("/ip4/127.0.0.1/tcp/0"), Recorders())


async def test_wildcard_listen_expands_and_keeps_ws() -> None:
    listener, _ = await listen(WebSocketTransport(), "/ip4/0.0.0.0/tcp/0/ws")
    try:
        (bound,) = listener.bound_addrs
        assert str(bound).startswith("/ip4/0.0.0.0/tcp/") and str(bound).endswith("/ws")
        port = bound.value_for("tcp")
        assert listener.addrs and all(
            str(a).endswith(f"/tcp/{port}/ws") and a.value_for("ip4") != "0.0.0.0"
            for a in listener.addrs
        )
        assert Multiaddr(f"/ip4/127.0.0.1/tcp/{port}/ws") in listener.addrs
    finally:
        await listener.close()


# ---- the pipe -----------------------------------------------------------------------------


async def test_bytes_flow_both_ways_and_addresses_carry_ws() -> None:
    transport = WebSocketTransport()
    async with connected_pair(transport) as (client, server):
        assert str(client.remote).endswith("/ws") and str(client.local).endswith("/ws")
        assert server.local == client.remote and server.remote == client.local
        assert client.transport is not None and server.transport is not None
        client.transport.write(b"hello ")
        client.transport.write(b"")
        client.transport.writelines([b"from ", b"client"])
        big = bytes(range(256)) * 4096  # 1 MiB: split into several messages
        server.transport.write(big)
        await wait_for(lambda: bytes(server.data) == b"hello from client")
        await wait_for(lambda: len(client.data) == len(big))
        assert bytes(client.data) == big and client.chunks >= 4
        assert client.transport.get_extra_info("peername")[1] == int(
            client.remote.value_for("tcp") or 0
        )
        assert client.transport.get_extra_info("websocket") is not None
        assert not client.transport.can_write_eof()


async def test_close_handshake_both_sides_see_it() -> None:
    async with connected_pair(WebSocketTransport()) as (client, server):
        assert client.transport is not None
        client.transport.close()
        assert client.transport.is_closing()
        client.transport.write(b"dropped after close")
        assert await asyncio.wait_for(server.lost, 5) is None
        assert server.eof
        assert await asyncio.wait_for(client.lost, 5) is None
        assert not client.eof  # we closed it ourselves
        assert server.data == b""


async def test_server_close_is_seen_by_client() -> None:
    async with connected_pair(WebSocketTransport()) as (client, server):
        assert server.transport is not None
        server.transport.close()
        assert await asyncio.wait_for(client.lost, 5) is None
        assert client.eof
        assert await asyncio.wait_for(server.lost, 5) is None


async def test_abort_is_seen_as_an_error() -> None:
    async with connected_pair(WebSocketTransport()) as (client, server):
        assert client.transport is not None
        client.transport.abort()
        assert await asyncio.wait_for(client.lost, 5) is None
        assert await asyncio.wait_for(server.lost, 5) is not None  # no closing handshake


async def test_pause_writing_reaches_the_upper_protocol() -> None:
    async with connected_pair(WebSocketTransport()) as (client, server):
        assert client.transport is not None and server.transport is not None
        server.transport.pause_reading()
        assert not server.transport.is_reading()
        client.transport.set_write_buffer_limits(high=64 * 1024)
        chunk = bytes(256 * 1024)
        for _ in range(64):  # far more than the socket buffers hold
            client.transport.write(chunk)
            if client.paused:
                break
        assert client.paused and client.transport.get_write_buffer_size() > 0
        server.transport.resume_reading()
        await wait_for(lambda: not client.paused)
        assert client.pauses == 1


async def test_message_above_limit_fails_the_connection() -> None:
    config = WebSocketConfig(max_message_bytes=1 << 20, max_send_message_bytes=1 << 20)
    listener, recorders = await listen(WebSocketTransport(config=config))
    raw = await RawClient.connect(listener.addrs[0])
    try:
        assert (await raw.upgrade(listener.addrs[0])).status_code == 101
        server = await recorders.first()
        assert raw.ws is not None
        raw.ws.send_binary(b"ok")
        raw.flush()
        # Only the header of an oversized frame: the limit applies before any payload.
        raw.writer.write(b"\x82\xff" + struct.pack("!Q", (1 << 20) + 1) + b"mask")
        frames = await raw.frames_until_closed()
        assert frames[-1].opcode is Opcode.CLOSE and frames[-1].data[:2] == b"\x03\xf1"  # 1009
        assert await asyncio.wait_for(server.lost, 5) is not None
        assert server.data == b"ok"
    finally:
        raw.close()
        await listener.close()


async def test_text_frames_are_refused_and_fragments_accepted() -> None:
    listener, recorders = await listen(WebSocketTransport())
    raw = await RawClient.connect(listener.addrs[0])
    try:
        await raw.upgrade(listener.addrs[0])
        server = await recorders.first()
        assert raw.ws is not None
        raw.ws.send_binary(b"frag", fin=False)
        raw.ws.send_continuation(b"mented", fin=True)
        raw.ws.send_ping(b"are you there")
        raw.flush()
        frames = [e for e in await raw.events() if isinstance(e, Frame)]
        assert frames and frames[0].opcode is Opcode.PONG
        await wait_for(lambda: server.data == b"fragmented")
        raw.ws.send_text(b"no text please")
        raw.flush()
        frames = await raw.frames_until_closed()
        assert frames[-1].opcode is Opcode.CLOSE and frames[-1].data[:2] == b"\x03\xeb"  # 1003
        assert await asyncio.wait_for(server.lost, 5) is not None
    finally:
        raw.close()
        await listener.close()


async def test_plain_http_request_is_refused_without_a_connection() -> None:
    listener, recorders = await listen(WebSocketTransport())
    target = ws_target(listener.addrs[0])
    assert target is not None
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 426") or answer.startswith(b"HTTP/1.1 400")
        assert not recorders.made
    finally:
        writer.close()
        await listener.close()


async def test_silent_socket_is_dropped_after_upgrade_timeout() -> None:
    config = WebSocketConfig(upgrade_timeout=0.1)
    listener, recorders = await listen(WebSocketTransport(config=config))
    target = ws_target(listener.addrs[0])
    assert target is not None
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert not recorders.made
    finally:
        writer.close()
        await listener.close()


async def test_pending_upgrades_are_bounded_and_dropped_on_listener_close() -> None:
    config = WebSocketConfig(max_pending_upgrades=2)
    listener, _ = await listen(WebSocketTransport(config=config))
    target = ws_target(listener.addrs[0])
    assert target is not None
    conns = [await asyncio.open_connection(target.host, target.port) for _ in range(3)]
    try:
        assert await asyncio.wait_for(conns[2][0].read(), 5) == b""  # the third one is refused
        await listener.close()
        for reader, _ in conns[:2]:
            assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        for _, writer in conns:
            writer.close()


async def test_dial_to_non_websocket_server_fails() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(DialError, match="404"):
            await WebSocketTransport().dial(Multiaddr(f"/ip4/127.0.0.1/tcp/{port}/ws"), Recorder)
    finally:
        server.close()
        await server.wait_closed()


# ---- through nodes ------------------------------------------------------------------------


async def test_dns4_localhost_dial() -> None:
    ts: list[Transport] = [TcpTransport(), WebSocketTransport()]
    async with Node(transports=ts) as a, Node(transports=[WebSocketTransport()]) as b:
        (addr,) = await b.listen("/ip4/127.0.0.1/tcp/0/ws")
        named = Multiaddr(f"/dns4/localhost/tcp/{addr.value_for('tcp')}/ws/p2p/{b.peer_id}")
        assert len(await a.ping(named)) == 1


@pytest.mark.parametrize("suffix", ["/wss", "/tls/ws", "/tls/sni/localhost/ws"])
async def test_tls(tmp_path: Path, suffix: str) -> None:
    server_ctx, client_ctx = self_signed(tmp_path)
    async with (
        Node(transports=[WebSocketTransport(client_ssl=client_ctx)]) as a,
        Node(transports=[WebSocketTransport(server_ssl=server_ctx)]) as b,
    ):
        (addr,) = await b.listen("/ip4/127.0.0.1/tcp/0/wss")
        assert str(addr).endswith("/wss")
        port = addr.value_for("tcp")
        target = Multiaddr(f"/ip4/127.0.0.1/tcp/{port}{suffix}/p2p/{b.peer_id}")
        assert len(await a.ping(target)) == 1
        conn = a.connections[0]
        assert conn.remote_addr == target
        result = await a.perf(conn, upload=1 << 20, download=1 << 20)
        assert result.download_bytes == 1 << 20


async def test_tls_rejects_unknown_certificate(tmp_path: Path) -> None:
    server_ctx, _ = self_signed(tmp_path)
    async with (
        Node(transports=[WebSocketTransport()]) as a,
        Node(transports=[WebSocketTransport(server_ssl=server_ctx)]) as b,
    ):
        (addr,) = await b.listen("/ip4/127.0.0.1/tcp/0/wss")
        with pytest.raises(DialError):
            await a.dial(addr.with_peer_id(b.peer_id))
