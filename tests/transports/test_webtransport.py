"""WebTransport beyond the conformance suite: certhash pinning, rotation, hostile clients.

Hostile clients are plain aioquic HTTP/3 clients (``RawClient``), so they can do what a
libp2p dialler would not: ask for another path, skip Noise, send garbage where Noise
belongs, open streams before the handshake.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3Connection
from aioquic.h3.events import H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent

from aiop2p._aio.connection import Connection
from aiop2p._aio.quic_adapter import open_webtransport_stream
from aiop2p._aio.quic_connection import QuicConfig
from aiop2p._aio.stream import Stream
from aiop2p._aio.webtransport_certs import ListenerCertificates
from aiop2p._aio.webtransport_connection import (
    MAX_EARLY_STREAMS,
    WebTransportConnection,
)
from aiop2p._aio.webtransport_transport import WebTransportTransport
from aiop2p.config import NodeConfig
from aiop2p.errors import (
    CerthashMismatchError,
    DialError,
    HandshakeError,
    HandshakeTimeoutError,
    InvalidMultiaddrError,
    LimitExceededError,
    P2PError,
    StreamResetError,
)
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node
from aiop2p.protocols.noise import NoiseCredentials
from aiop2p.protocols.webtransport import (
    CERT_PERIOD_SECONDS,
    PATH,
    parse_webtransport_addr,
    webtransport_addr,
)

from ..helpers import wait_for

pytestmark = pytest.mark.timeout(60)

ECHO = "/test/echo/1.0.0"
LISTEN = "/ip4/127.0.0.1/udp/0/quic-v1/webtransport"


async def echo(stream: Stream) -> None:
    while chunk := await stream.read(1 << 20):
        await stream.write(chunk)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


Listening = tuple[Node, Multiaddr, list[Connection], Clock]


@pytest_asyncio.fixture
async def listener() -> AsyncIterator[Listening]:
    """A WebTransport node on loopback (clock injected), its address, its failed inbound
    connections."""
    clock = Clock()
    config = NodeConfig(handshake_timeout=2.0, max_inbound_streams_per_connection=4)
    async with Node(transports=[WebTransportTransport(clock=clock)], config=config) as node:
        node.set_stream_handler(ECHO, echo)
        (addr,) = await node.listen(LISTEN)
        failed: list[Connection] = []
        node.incoming_failed.subscribe(failed.append)
        yield node, addr.with_peer_id(node.peer_id), failed, clock


async def roundtrip(dialer: Node, addr: Multiaddr, payload: bytes = b"ping") -> bytes:
    stream = await dialer.new_stream(addr, ECHO)
    await stream.write(payload)
    await stream.close()
    return await stream.read()


async def still_serves(node: Node, addr: Multiaddr) -> None:
    async with Node(transports=[WebTransportTransport()]) as good:
        assert await roundtrip(good, addr, b"still here") == b"still here"


def _port(addr: Multiaddr) -> int:
    target = parse_webtransport_addr(addr)
    assert target is not None
    return target.port


# -- a raw HTTP/3 client -------------------------------------------------------------------


class RawClient(QuicConnectionProtocol):
    """An aioquic HTTP/3 client that does only what a test tells it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic, enable_webtransport=True)
        self.events: list[H3Event] = []
        self.terminated: ConnectionTerminated | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            self.terminated = event
        self.events += self.h3.handle_event(event)

    def connect_session(self, path: str = PATH) -> int:
        session = self._quic.get_next_available_stream_id()
        self.h3.send_headers(
            session,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"webtransport"),
                (b":scheme", b"https"),
                (b":authority", b"127.0.0.1"),
                (b":path", path.encode()),
            ],
        )
        self.transmit()
        return session

    def stream(self, session: int, data: bytes) -> int:
        sid = open_webtransport_stream(self.h3, session)
        self._quic.send_stream_data(sid, data)
        self.transmit()
        return sid

    def status(self, session: int) -> bytes | None:
        for event in self.events:
            if isinstance(event, HeadersReceived) and event.stream_id == session:
                return dict(event.headers).get(b":status")
        return None


def _raw_config() -> QuicConfiguration:
    return QuicConfiguration(
        is_client=True,
        alpn_protocols=["h3"],
        verify_mode=ssl.CERT_NONE,
        max_datagram_frame_size=65536,
        idle_timeout=5,
    )


def raw_client(addr: Multiaddr) -> Any:
    return connect("127.0.0.1", _port(addr), configuration=_raw_config(), create_protocol=RawClient)


# -- certhash pinning and rotation ---------------------------------------------------------


async def test_listen_addresses_carry_two_certhashes_and_dial_reaches_the_peer(
    listener: Listening,
) -> None:
    node, addr, _, _ = listener
    target = parse_webtransport_addr(addr)
    assert target is not None and len(target.certhashes) == 2
    async with Node(transports=[WebTransportTransport()]) as dialer:
        conn = await dialer.dial(addr)
        assert isinstance(conn, WebTransportConnection)
        assert conn.remote_peer == node.peer_id
        assert await roundtrip(dialer, addr) == b"ping"
        assert len(await dialer.ping(addr, count=2)) == 2
        # Even to loopback, datagrams fit a browser's receive buffer (Chromium reads
        # 1472 B and drops larger ones): not QUIC's 16 KiB loopback size.
        assert conn._quic is not None
        assert conn._quic.configuration.max_datagram_size == QuicConfig().max_datagram_bytes
        (inbound,) = node.connections
        assert isinstance(inbound, WebTransportConnection) and inbound._quic is not None
        assert inbound._quic.configuration.max_datagram_size <= 1472
        # ... and they stay so once set up (QUIC's loopback growth is for QUIC's own size).
        assert conn._quic.datagram_size == inbound._quic.datagram_size == 1452


async def test_a_wrong_certhash_is_refused(listener: Listening) -> None:
    node, addr, _, _ = listener
    target = parse_webtransport_addr(addr)
    assert target is not None
    wrong = b"\x12\x20" + bytes(32)
    forged = webtransport_addr("127.0.0.1", target.port, [wrong]).with_peer_id(node.peer_id)
    async with Node(transports=[WebTransportTransport()]) as dialer:
        with pytest.raises(DialError) as refused:
            await dialer.dial(forged)
        assert isinstance(refused.value.__cause__, CerthashMismatchError)
        assert not dialer.connections
    await still_serves(node, addr)


async def test_a_listener_whose_noise_omits_the_served_certhash_is_refused(
    listener: Listening, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The certificate matches the address, but the Noise payload (which binds the TLS
    session to the libp2p identity) does not announce it: a man in the middle's sign."""
    _, addr, _, _ = listener

    def without_hashes(self: ListenerCertificates, base: NoiseCredentials) -> NoiseCredentials:
        return base.with_webtransport_certhashes((b"\x12\x20" + bytes(32),))

    monkeypatch.setattr(ListenerCertificates, "noise_credentials", without_hashes)
    async with Node(transports=[WebTransportTransport()]) as dialer:
        with pytest.raises(DialError, match="Noise handshake does not announce") as refused:
            await dialer.dial(addr)
        assert isinstance(refused.value.__cause__, CerthashMismatchError)
        assert not dialer.connections


async def test_an_address_without_certhash_cannot_be_dialled(listener: Listening) -> None:
    node, addr, _, _ = listener
    bare = Multiaddr(str(addr).split("/certhash/")[0]).with_peer_id(node.peer_id)
    async with Node(transports=[WebTransportTransport()]) as dialer:
        with pytest.raises(DialError, match="needs /certhash") as refused:
            await dialer.dial(bare)
        assert isinstance(refused.value.__cause__, InvalidMultiaddrError)


async def test_rotation_keeps_last_periods_address_and_refuses_older(
    listener: Listening,
) -> None:
    node, addr, _, clock = listener
    clock.now += CERT_PERIOD_SECONDS + 1
    (newer,) = node.listen_addrs
    old_hashes = parse_webtransport_addr(addr)
    new_hashes = parse_webtransport_addr(newer)
    assert old_hashes is not None and new_hashes is not None
    assert new_hashes.certhashes[0] == old_hashes.certhashes[1]  # the next became current
    async with Node(transports=[WebTransportTransport()]) as dialer:
        assert await roundtrip(dialer, addr) == b"ping"  # last period's address still works
    clock.now += CERT_PERIOD_SECONDS  # the certificates of that address are now past
    async with Node(transports=[WebTransportTransport()]) as dialer:
        with pytest.raises(DialError) as refused:
            await dialer.dial(addr)
        assert isinstance(refused.value.__cause__, CerthashMismatchError)
        current = node.listen_addrs[0].with_peer_id(node.peer_id)
        assert await roundtrip(dialer, current) == b"ping"


# -- hostile clients -----------------------------------------------------------------------


async def test_a_wrong_connect_path_is_answered_404_and_the_connection_closed(
    listener: Listening,
) -> None:
    node, addr, failed, _ = listener
    async with raw_client(addr) as client:
        session = client.connect_session("/.well-known/libp2p-webtransport?type=other")
        await wait_for(lambda: client.terminated is not None)
        assert client.status(session) == b"404"
    await wait_for(lambda: bool(failed))
    assert isinstance(failed[0].error, HandshakeError)
    assert "not the libp2p WebTransport endpoint" in str(failed[0].error)
    await still_serves(node, addr)


async def test_a_client_that_skips_noise_times_out(listener: Listening) -> None:
    node, addr, failed, _ = listener
    async with raw_client(addr) as client:
        session = client.connect_session()
        await wait_for(lambda: client.status(session) == b"200")
        await wait_for(lambda: bool(failed), cap=10)
    assert isinstance(failed[0].error, HandshakeTimeoutError)
    assert not node.connections
    await still_serves(node, addr)


@pytest.mark.parametrize(
    "garbage",
    [b"\xff\xff" + b"x" * 64, b"\x00\x20" + bytes(32) + b"\x00\x50" + b"z" * 80],
    ids=["oversized-message-1", "bad-message-3"],
)
async def test_garbage_on_the_noise_stream_ends_the_connection(
    listener: Listening, garbage: bytes
) -> None:
    node, addr, failed, _ = listener
    async with raw_client(addr) as client:
        session = client.connect_session()
        client.stream(session, garbage)
        await wait_for(lambda: bool(failed), cap=10)
        await wait_for(lambda: client.terminated is not None)
    assert isinstance(failed[0].error, P2PError)
    assert not isinstance(failed[0].error, HandshakeTimeoutError)
    await still_serves(node, addr)


async def test_too_many_streams_before_the_session_end_the_connection(
    listener: Listening,
) -> None:
    node, addr, failed, _ = listener
    async with raw_client(addr) as client:
        session = client.connect_session()
        client.stream(session, b"\x00\x20")  # Noise message 1, never finished
        for _ in range(MAX_EARLY_STREAMS + 1):
            client.stream(session, b"early")
        await wait_for(lambda: bool(failed), cap=10)
    assert isinstance(failed[0].error, LimitExceededError)
    await still_serves(node, addr)


async def test_a_second_session_is_refused_and_the_first_goes_on(listener: Listening) -> None:
    _, addr, _, _ = listener
    async with Node(transports=[WebTransportTransport()]) as dialer:
        conn = await dialer.dial(addr)
        assert isinstance(conn, WebTransportConnection)
        quic, h3 = conn._quic, conn._h3
        assert quic is not None and h3 is not None
        seen: list[H3Event] = []
        on_event = conn._h3_event

        def record(q: Any, event: H3Event) -> bool:
            seen.append(event)
            return on_event(q, event)

        conn._h3_event = record  # type: ignore[method-assign,assignment]
        second = quic.get_next_available_stream_id()
        h3.send_headers(
            second,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"webtransport"),
                (b":scheme", b"https"),
                (b":authority", b"127.0.0.1"),
                (b":path", PATH.encode()),
            ],
        )
        conn._transmit()

        def answered() -> bytes | None:
            for event in seen:
                if isinstance(event, HeadersReceived) and event.stream_id == second:
                    return dict(event.headers).get(b":status")
            return None

        await wait_for(lambda: answered() is not None)
        assert answered() == b"429"
        assert await roundtrip(dialer, addr) == b"ping"
        assert conn.is_established


async def test_streams_beyond_the_inbound_limit_are_reset(listener: Listening) -> None:
    node, addr, _, _ = listener
    gate = asyncio.Event()

    async def hold(stream: Stream) -> None:
        await gate.wait()
        await stream.close()

    node.set_stream_handler("/test/hold/1.0.0", hold)
    async with Node(transports=[WebTransportTransport()]) as dialer:
        held = [await dialer.new_stream(addr, "/test/hold/1.0.0") for _ in range(4)]
        # The listener holds all four before the fifth is opened (a retransmitted
        # stream frame could otherwise arrive after the fifth's and be the one refused).
        (inbound,) = node.connections
        await wait_for(lambda: len(inbound.streams) == 4)
        with pytest.raises((StreamResetError, P2PError)):
            extra = await dialer.new_stream(addr, "/test/hold/1.0.0")
            await extra.read()
        gate.set()
        for stream in held:
            assert await stream.read() == b""
            await stream.close()
        await wait_for(lambda: not inbound.streams)  # the listener saw them all end
        assert await roundtrip(dialer, addr) == b"ping"
