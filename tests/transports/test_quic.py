"""QUIC specifics beyond the conformance suite: hostile peers, bounds, aioquic's internals.

Hostile peers are plain aioquic clients (``aioquic.asyncio.connect``) or raw UDP sockets,
so they can do what a libp2p peer would not: present no certificate, a certificate
without the libp2p extension, garbage datagrams, too many streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import inspect
import socket
import ssl
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aioquic._buffer import Buffer
from aioquic.asyncio.client import connect
from aioquic.h3.connection import H3Connection, H3Stream
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection as AioquicConnection
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.events import StreamDataReceived
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    QuicProtocolVersion,
    pull_quic_header,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from aiop2p._aio.connection import Connection
from aiop2p._aio.quic_adapter import LibP2PQuic, forget_h3_stream, open_webtransport_stream
from aiop2p._aio.quic_connection import ALPN, QuicConfig, QuicConnection, _certificate_for
from aiop2p._aio.quic_transport import QuicTransport, quic_target, refusal_datagram
from aiop2p._aio.stream import Stream
from aiop2p.config import ConnectionLimits, NodeConfig
from aiop2p.errors import (
    DialError,
    HandshakeError,
    HandshakeTimeoutError,
    InvalidArgumentError,
    PeerIdMismatchError,
    PortUnreachableError,
)
from aiop2p.identity import KeyPair
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node

from ..helpers import wait_for
from .quic_memory import handshake

ECHO = "/test/echo/1.0.0"


async def echo(stream: Stream) -> None:
    while chunk := await stream.read(1 << 20):
        await stream.write(chunk)


@contextlib.asynccontextmanager
async def echo_connection(
    config: NodeConfig | None = None,
) -> AsyncIterator[tuple[QuicConnection, Node]]:
    """A dialer's QUIC connection to a node serving ``ECHO``, and that node (``config``:
    its configuration)."""
    async with (
        Node(transports=[QuicTransport()], config=config) as b,
        Node(transports=[QuicTransport()]) as a,
    ):
        b.set_stream_handler(ECHO, echo)
        (addr,) = await b.listen("/ip4/127.0.0.1/udp/0/quic-v1")
        conn = await a.dial(addr.with_peer_id(b.peer_id))
        assert isinstance(conn, QuicConnection)
        yield conn, b


@pytest_asyncio.fixture
async def listener() -> AsyncIterator[tuple[Node, Multiaddr, list[Connection]]]:
    """A QUIC node listening on loopback, its address, and its failed inbound connections."""
    async with Node(transports=[QuicTransport()]) as node:
        node.set_stream_handler(ECHO, echo)
        (addr,) = await node.listen("/ip4/127.0.0.1/udp/0/quic-v1")
        failed: list[Connection] = []
        node.incoming_failed.subscribe(failed.append)
        yield node, addr, failed


async def still_serves(node: Node, addr: Multiaddr) -> None:
    async with Node(transports=[QuicTransport()]) as good:
        stream = await good.new_stream(addr.with_peer_id(node.peer_id), ECHO)
        await stream.write(b"still here")
        await stream.close()
        assert await stream.read() == b"still here"


def _port(addr: Multiaddr) -> int:
    target = quic_target(addr)
    assert target is not None
    return target[1]


def _plain_certificate() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "not libp2p")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _client_config(
    cert: x509.Certificate | None = None, key: ec.EllipticCurvePrivateKey | None = None
) -> QuicConfiguration:
    return QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        verify_mode=ssl.CERT_NONE,
        certificate=cert,
        private_key=key,
        idle_timeout=5,
    )


# -- the aioquic internals the adapter relies on ------------------------------------------


def test_adapter_reaches_the_aioquic_internals_it_needs() -> None:
    """Fails loudly if an aioquic upgrade moves what ``quic_adapter`` touches."""
    cert, key = _certificate_for(KeyPair.generate())
    server = LibP2PQuic(
        configuration=QuicConfiguration(
            is_client=False, alpn_protocols=[ALPN], certificate=cert, private_key=key
        ),
        original_destination_connection_id=b"\x01" * 8,
        stream_window_bytes=1 << 20,
        connection_window_bytes=4 << 20,
        max_streams=7,
    )
    server._version = QuicProtocolVersion.VERSION_1  # as receive_datagram sets it
    server._initialize(b"\x02" * 8)
    assert server.requests_client_certificate
    assert server.peer_certificates() == []
    assert server._local_max_streams_bidi.value == 7 == server._local_max_streams_bidi.sent
    assert server._local_max_streams_uni.value == 0
    for name in (
        "_write_stream_limits",
        "_write_connection_limits",
        "_initialize",
        "_parse_transport_parameters",
        "_write_stream_frame",
        "_get_or_create_stream_for_send",
    ):
        assert callable(getattr(AioquicConnection, name))
    assert hasattr(server.tls, "_peer_certificate_chain")
    # One packet per flush (_after_application_packet) and the write shortcuts: write
    # skips send_stream_data, so it must still be only the lookup and the sender's write.
    body = inspect.getsource(AioquicConnection.send_stream_data).split('"""')[-1].split()
    assert body == [
        "stream",
        "=",
        "self._get_or_create_stream_for_send(stream_id)",
        "stream.sender.write(data,",
        "end_stream=end_stream)",
    ]
    assert server._loss._pacer.update_after_send == server._after_application_packet
    for name in ("_streams_queue", "_crypto_streams", "_ping_pending", "_probe_pending"):
        assert hasattr(server, name)
    assert hasattr(server, "_datagrams_pending")
    for limit in (server._local_max_streams_bidi, server._local_max_streams_uni):
        assert isinstance(limit.used, int) and isinstance(limit.sent, int)
    sid = server.get_next_available_stream_id()
    server.write(sid, b"x" * 100)
    assert server.unsent_bytes(sid) == 100 and server.sends_pending(sid)
    assert server._streams[sid].sender._buffer_stop == 100
    assert server._streams[sid].sender.highest_offset == 0
    assert server._streams[sid].sender.next_offset == 0
    assert callable(AioquicConnection._get_or_create_stream_for_send)
    sender = server._streams[sid].sender
    assert type(sender._buffer) is bytearray  # small: aioquic's own
    server.write(sid, b"y" * 0x4000)  # bulk from here: chunked
    assert type(sender._buffer).__name__ == "SendBuffer"
    assert sender._buffer[0:101] == b"x" * 100 + b"y"
    assert len(sender._pending) == 1 and sender._pending_eof is False
    assert server._streams[sid].max_stream_data_local_sent > 0
    # Datagram size: never below the configured one, never above what the peer takes.
    configured = server._max_datagram_size
    assert server.use_datagram_size(1200) == configured
    server.peer_max_udp_payload = 30000
    assert server.use_datagram_size(65507) == 30000 == server._max_datagram_size


def _handshaken_pair(*, ours_serves: bool = False) -> tuple[LibP2PQuic, AioquicConnection]:
    """Our client machine and an aioquic server (plain, or ours with 4 streams), the
    handshake done in memory."""
    cert, key = _certificate_for(KeyPair.generate())
    client = LibP2PQuic(
        configuration=QuicConfiguration(
            is_client=True,
            alpn_protocols=[ALPN],
            certificate=cert,
            private_key=key,
            verify_mode=ssl.CERT_NONE,
        ),
        stream_window_bytes=8 << 20,
        connection_window_bytes=8 << 20,
        max_streams=8,
    )
    server_config = QuicConfiguration(
        is_client=False, alpn_protocols=[ALPN], certificate=cert, private_key=key
    )

    def make_server(odcid: bytes) -> AioquicConnection:
        if ours_serves:
            return LibP2PQuic(
                configuration=server_config,
                original_destination_connection_id=odcid,
                stream_window_bytes=1 << 20,
                connection_window_bytes=1 << 20,
                max_streams=4,
            )
        return AioquicConnection(
            configuration=server_config, original_destination_connection_id=odcid
        )

    return client, handshake(client, make_server)


def test_adapter_still_grants_streams_with_one_packet_flushes() -> None:
    """A stream slot freed while a packet is built (aioquic discards finished streams in
    its stream loop) is announced with MAX_STREAMS in the same flush even though flushes
    stop after one packet: a peer limited to 4 streams at once opens 24, one after
    another, never waiting for credit."""
    client, server = _handshaken_pair(ours_serves=True)
    assert isinstance(server, LibP2PQuic)
    addr = ("127.0.0.1", 1)
    done = 0
    now = 1.0
    for _ in range(24):
        sid = client.get_next_available_stream_id()
        client.write(sid, b"ask", end_stream=True)
        assert not client._streams[sid].is_blocked  # the credit came with earlier answers
        for _round in range(8):  # bounded: request, answer, ACKs
            now += 0.01
            for data, _ in client.datagrams_to_send(now=now):
                server.receive_datagram(data, addr, now=now)
            while (event := server.next_event()) is not None:
                if isinstance(event, StreamDataReceived) and event.end_stream:
                    server.write(event.stream_id, b"answer", end_stream=True)
            for data, _ in server.datagrams_to_send(now=now):
                client.receive_datagram(data, addr, now=now)
            assert server.datagrams_to_send(now=now) == []  # nothing was left behind
            answered = False
            while (event := client.next_event()) is not None:
                if isinstance(event, StreamDataReceived) and event.stream_id == sid:
                    answered |= event.end_stream
            if answered:
                done += 1
                break
    assert done == 24


def test_adapter_builds_one_packet_per_small_flush() -> None:
    """A flush of a small write builds one 1-RTT packet, not aioquic's second, empty one
    (``_after_application_packet`` on aioquic's pacer ends the build), and the peer gets
    every write."""
    client, server = _handshaken_pair()
    client.lean_send = False  # aioquic's builder (the lean one builds one packet anyway)
    assert client._loss._pacer.update_after_send == client._after_application_packet
    passes = 0
    limits = client._write_connection_limits

    def counting(builder: object, space: object) -> None:
        nonlocal passes
        passes += 1  # aioquic calls it once per 1-RTT packet it starts
        limits(builder, space)

    client._write_connection_limits = counting  # type: ignore[method-assign]
    addr = ("127.0.0.1", 1)
    received: dict[int, bytes] = {}
    for step in range(6):
        now = 1.0 + step * 0.01
        sid = client.get_next_available_stream_id()
        client.write(sid, b"request %d" % step)
        client.write(sid, b"!", end_stream=True)
        passes = 0
        datagrams = client.datagrams_to_send(now=now)
        assert len(datagrams) == 1 and passes == 1
        for data, _ in datagrams:
            server.receive_datagram(data, addr, now=now)
        while (event := server.next_event()) is not None:
            if isinstance(event, StreamDataReceived):
                received[event.stream_id] = received.get(event.stream_id, b"") + event.data
        assert not client.has_unsent()
    assert sorted(received.values()) == sorted(b"request %d!" % i for i in range(6))


def test_adapter_splits_stream_frames_in_large_packets() -> None:
    """In a 64 KiB packet each STREAM frame holds at most 16383 bytes (aioquic's 2-byte
    length field): a client's packets, parsed by a plain aioquic server, carry the data."""
    from aiop2p._aio.quic_adapter import MAX_FRAME_DATA_BYTES

    client, server = _handshaken_pair()
    addr = ("127.0.0.1", 1)
    client.use_datagram_size(65507)
    client._loss._cc.congestion_window = 1 << 24
    sid = client.get_next_available_stream_id()
    payload = bytes(range(256)) * 1024  # 256 KiB
    client.write(sid, payload, end_stream=True)
    received = bytearray()
    sizes = []
    for step in range(100):  # bounded: the data, the server's ACKs and credit
        now = 1.0 + step * 0.01
        for data, _ in client.datagrams_to_send(now=now):
            sizes.append(len(data))
            server.receive_datagram(data, addr, now=now)
        for data, _ in server.datagrams_to_send(now=now):
            client.receive_datagram(data, addr, now=now)
        while (event := server.next_event()) is not None:
            if hasattr(event, "data") and getattr(event, "stream_id", None) == sid:
                received += event.data
    assert bytes(received) == payload
    assert max(sizes) > 3 * MAX_FRAME_DATA_BYTES


def test_adapter_reaches_the_aioquic_http3_internals_webtransport_needs() -> None:
    cert, key = _certificate_for(KeyPair.generate())
    server = LibP2PQuic(
        configuration=QuicConfiguration(
            is_client=False,
            alpn_protocols=["h3"],
            certificate=cert,
            private_key=key,
            max_datagram_frame_size=65536,
        ),
        original_destination_connection_id=b"\x01" * 8,
        stream_window_bytes=1 << 20,
        connection_window_bytes=4 << 20,
        max_streams=7,
        max_uni_streams=5,
        request_client_certificate=False,
    )
    server._version = QuicProtocolVersion.VERSION_1
    server._initialize(b"\x02" * 8)
    assert not server.requests_client_certificate
    assert server._local_max_streams_uni.value == 5 == server._local_max_streams_uni.sent
    h3 = H3Connection(server, enable_webtransport=True)
    sid = open_webtransport_stream(h3, 0)
    record = h3._stream[sid]
    assert isinstance(record, H3Stream) and record.session_id == 0
    assert server._streams[sid].receiver.is_finished is False
    forget_h3_stream(h3, server, sid)
    assert sid in h3._stream  # the peer may still send on it
    del server._streams[sid]
    forget_h3_stream(h3, server, sid)
    assert sid not in h3._stream


async def test_client_without_certificate_is_refused(
    listener: tuple[Node, Multiaddr, list[Connection]],
) -> None:
    """The server requests the client certificate; a client that sends none is dropped."""
    node, addr, failed = listener
    with pytest.raises(ConnectionError):
        async with connect("127.0.0.1", _port(addr), configuration=_client_config()) as client:
            await client.ping()  # the server closes once it sees the empty Certificate
    await wait_for(lambda: bool(failed))
    assert isinstance(failed[0].error, HandshakeError)
    assert "0 certificates" in str(failed[0].error)
    assert not node.connections
    await still_serves(node, addr)


async def test_certificate_without_libp2p_extension_is_refused(
    listener: tuple[Node, Multiaddr, list[Connection]],
) -> None:
    node, addr, failed = listener
    cert, key = _plain_certificate()
    with pytest.raises(ConnectionError):
        async with connect(
            "127.0.0.1", _port(addr), configuration=_client_config(cert, key)
        ) as client:
            await client.ping()
    await wait_for(lambda: bool(failed))
    assert "lacks the libp2p public key extension" in str(failed[0].error)
    await still_serves(node, addr)


async def test_dialing_the_wrong_peer_id_fails(
    listener: tuple[Node, Multiaddr, list[Connection]],
) -> None:
    node, addr, _ = listener
    impostor = KeyPair.generate().peer_id
    async with Node(transports=[QuicTransport()]) as dialer:
        with pytest.raises(PeerIdMismatchError):
            await dialer.dial(addr.with_peer_id(impostor))
        assert not dialer.connections
    await still_serves(node, addr)


async def test_garbage_datagrams_are_dropped(
    listener: tuple[Node, Multiaddr, list[Connection]],
) -> None:
    node, addr, _ = listener
    initial_like = bytes([0xC0]) + (1).to_bytes(4, "big") + bytes([8]) + b"\x00" * 8
    payloads = [
        b"",
        b"\x00",
        b"garbage" * 10,
        initial_like + b"\x00" * 50,  # an Initial header, too short to be one
        initial_like + bytes([0]) + b"\xff" * 1300,  # full size, undecryptable
        bytes([0x40]) + b"\x07" * 1300,  # a short header for no connection
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for payload in payloads:
            sock.sendto(payload, ("127.0.0.1", _port(addr)))
    await still_serves(node, addr)
    # Only the full-size Initial costs a pending handshake (until handshake_timeout).
    assert len(node._pending) <= 1


async def test_a_refused_dialer_is_told_at_once() -> None:
    """A listener whose pending handshakes are full answers a newcomer's Initial with
    CONNECTION_REFUSED (no handshake made): the dialer fails with that, not with its
    handshake timeout, and the listener still serves once there is room."""
    config = NodeConfig(limits=ConnectionLimits(max_pending_incoming=1))
    async with Node(transports=[QuicTransport()], config=config) as node:
        addr = (await node.listen("/ip4/127.0.0.1/udp/0/quic-v1"))[0].with_peer_id(node.peer_id)
        # A client's Initial, then silence: its handshake holds the one pending place.
        hog = AioquicConnection(
            configuration=QuicConfiguration(is_client=True, alpn_protocols=[ALPN])
        )
        target = ("127.0.0.1", _port(addr))
        hog.connect(target, now=0.0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for datagram, _ in hog.datagrams_to_send(now=0.0):
                sock.sendto(datagram, target)
            await wait_for(lambda: len(node._pending) == 1)
            dialer_config = NodeConfig(handshake_timeout=8.0, dial_timeout=8.0)
            async with Node(transports=[QuicTransport()], config=dialer_config) as dialer:
                with pytest.raises(DialError) as caught:
                    await dialer.dial(addr)
                assert "code 0x2" in str(caught.value) and "refused" in str(caught.value)
                assert not isinstance(caught.value.__cause__, HandshakeTimeoutError)
                assert not dialer.connections


def test_the_refusal_is_an_initial_with_connection_refused() -> None:
    """What a refused client receives, read back with the client's own Initial keys."""
    dcid, scid = b"\x11" * 8, b"\x22" * 8
    datagram = refusal_datagram(dcid, scid, "refused")
    assert len(datagram) < 1200  # smaller than the Initial it answers: no amplification
    buf = Buffer(data=datagram)
    header = pull_quic_header(buf, host_cid_length=8)
    assert header.packet_type == QuicPacketType.INITIAL
    assert header.destination_cid == scid
    crypto = CryptoPair()
    crypto.setup_initial(cid=dcid, is_client=True, version=QuicProtocolVersion.VERSION_1)
    _, payload, _ = crypto.decrypt_packet(datagram[: header.packet_length], buf.tell(), 0)
    buf = Buffer(data=payload)
    assert buf.pull_uint_var() == QuicFrameType.TRANSPORT_CLOSE
    assert buf.pull_uint_var() == QuicErrorCode.CONNECTION_REFUSED


async def test_too_many_streams_close_the_peer(
    listener: tuple[Node, Multiaddr, list[Connection]],
) -> None:
    """A peer opening streams beyond the announced limit breaks QUIC and is dropped."""
    node, addr, _ = listener
    identity = KeyPair.generate()
    cert, key = _certificate_for(identity)
    async with connect("127.0.0.1", _port(addr), configuration=_client_config(cert, key)) as client:
        await wait_for(lambda: node.is_connected(identity.peer_id))
        quic = client._quic
        limit = QuicConfig().max_streams
        for i in range(limit + 8):
            # Past the limit aioquic would queue the stream; a hostile peer sends it.
            sid = i * 4
            quic._remote_max_streams_bidi = limit + 8
            quic.send_stream_data(sid, b"\x13/multistream/1.0.0\n", end_stream=False)
        client.transmit()
        await wait_for(lambda: not node.is_connected(identity.peer_id))
    await still_serves(node, addr)


async def test_unread_stream_is_bounded_by_its_window() -> None:
    """Credit follows what the application reads: a stream nobody reads stops its
    sender at one window, however fast the data comes."""
    window = 64 * 1024
    config = QuicConfig(stream_window_bytes=window, send_buffer_bytes=32 * 1024)
    got: asyncio.Future[Stream] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()

    async def hold(stream: Stream) -> None:
        got.set_result(stream)
        await release.wait()

    async with (
        Node(transports=[QuicTransport(config)]) as a,
        Node(transports=[QuicTransport(config)]) as b,
    ):
        b.set_stream_handler("/test/hold/1.0.0", hold)
        (addr,) = await b.listen("/ip4/127.0.0.1/udp/0/quic-v1")
        stream = await a.new_stream(addr.with_peer_id(b.peer_id), "/test/hold/1.0.0")
        writer = asyncio.ensure_future(stream.write(b"\x00" * (1 << 20)))
        held = await asyncio.wait_for(got, 5)
        await wait_for(lambda: held._buffered >= window - 1024)
        conn = held.connection
        assert isinstance(conn, QuicConnection) and conn._quic is not None
        aioquic_stream = conn._quic._streams[held.stream_id]
        assert aioquic_stream.max_stream_data_local <= window + 1024  # never doubled
        assert held._buffered <= window
        assert not writer.done()
        writer.cancel()
        release.set()


def test_config_bounds_are_checked() -> None:
    with pytest.raises(InvalidArgumentError):
        QuicConfig(max_datagram_bytes=1000)
    with pytest.raises(InvalidArgumentError):
        QuicConfig(loopback_datagram_bytes=65508)
    with pytest.raises(InvalidArgumentError):
        QuicConfig(max_streams=0)


async def test_dial_and_listen_share_the_socket() -> None:
    """A node listening on QUIC dials from its listen port (what peers observe)."""
    async with (
        Node(transports=[QuicTransport()]) as a,
        Node(transports=[QuicTransport()]) as b,
    ):
        (a_addr,) = await a.listen("/ip4/127.0.0.1/udp/0/quic-v1")
        (b_addr,) = await b.listen("/ip4/127.0.0.1/udp/0/quic-v1")
        await a.dial(b_addr.with_peer_id(b.peer_id))
        await wait_for(lambda: b.is_connected(a.peer_id))
        (inbound,) = b.connections
        assert inbound.remote_addr == a_addr


async def test_dial_to_nothing_fails() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))  # a UDP port where nobody answers QUIC
        port = sock.getsockname()[1]

        async with Node(
            transports=[QuicTransport()], config=NodeConfig(handshake_timeout=0.5)
        ) as a:
            with pytest.raises(DialError):
                await a.dial(f"/ip4/127.0.0.1/udp/{port}/quic-v1")
            assert not a.connections


def test_quic_target() -> None:
    assert quic_target(Multiaddr("/ip4/1.2.3.4/udp/5/quic-v1")) == ("1.2.3.4", 5, socket.AF_INET)
    assert quic_target(Multiaddr("/ip6/::1/udp/5/quic-v1")) == ("::1", 5, socket.AF_INET6)
    assert quic_target(Multiaddr("/ip4/1.2.3.4/udp/5/quic")) is None  # draft-29: not offered
    assert quic_target(Multiaddr("/ip4/1.2.3.4/tcp/5")) is None
    assert quic_target(Multiaddr("/ip4/1.2.3.4/udp/5/quic-v1/webtransport")) is None


async def test_quic_ping_and_inbound_stream_limit() -> None:
    """``Connection.ping`` is a QUIC PING; streams beyond
    ``max_inbound_streams_per_connection`` are reset, the connection stays."""
    from aiop2p.config import NodeConfig
    from aiop2p.errors import StreamResetError

    release = asyncio.Event()
    holding: list[Stream] = []

    async def hold(stream: Stream) -> None:
        holding.append(stream)
        await release.wait()

    async with (
        Node(transports=[QuicTransport()]) as a,
        Node(
            transports=[QuicTransport()], config=NodeConfig(max_inbound_streams_per_connection=2)
        ) as b,
    ):
        b.set_stream_handler("/test/hold/1.0.0", hold)
        (addr,) = await b.listen("/ip4/127.0.0.1/udp/0/quic-v1")
        conn = await a.dial(addr.with_peer_id(b.peer_id))
        assert await conn.ping() >= 0
        streams = [await conn.new_stream("/test/hold/1.0.0") for _ in range(3)]
        for stream in streams:
            await stream.write(b"x")
        await wait_for(lambda: len(holding) == 2)
        with pytest.raises(StreamResetError):
            await streams[2].read()
        assert conn.is_established and await conn.ping() >= 0
        release.set()


async def test_finished_streams_leave_no_state() -> None:
    """A long-lived connection does not accumulate per-stream bookkeeping."""
    async with echo_connection() as (conn, b):
        for i in range(40):
            stream = await conn.new_stream(ECHO)
            await stream.write(b"%d" % i)
            await stream.close()
            assert await stream.read() == b"%d" % i
        (theirs,) = b.connections
        machines = []
        for side in (conn, theirs):
            assert isinstance(side, QuicConnection) and side._quic is not None
            machines.append(side._quic)
        await wait_for(lambda: all(len(q._consumed) <= 2 for q in machines))


async def test_sequential_requests_leave_no_stale_timer() -> None:
    """Once a request carried the ACK of the previous answer, the connection's timer
    follows aioquic's next deadline (the loss timer), not the ACK delay's: a stale
    handle would wake the idle requester about once per request for nothing.

    The handle is judged against when the request's packet was sent, a time fixed
    before the check: the ACK delay's deadline falls at most ``_TIMER_SLACK_SECONDS``
    after the answer that started it, so before or about when the request left; the loss
    timer's falls a probe timeout (tens of milliseconds) after it.  A loaded machine
    pausing between the send and the check moves neither."""
    from aiop2p._aio.quic_connection import _TIMER_SLACK_SECONDS

    async with echo_connection() as (conn, _):
        assert isinstance(conn, QuicConnection) and conn._quic is not None
        loss = conn._quic._loss
        kept = 0  # requests that found a handle armed earlier than due and kept it
        for i in range(20):
            stream = await conn.new_stream(ECHO)
            await stream.write(b"%d" % i)
            await stream.close()
            for _ in range(10):  # bounded: the scheduled transmit runs within a turn or two
                if conn._transmit_handle is None:
                    break
                await asyncio.sleep(0)
            assert conn._transmit_handle is None
            due, armed = conn._quic_due, conn._quic_timer_at
            assert conn._quic_timer is not None and due is not None
            sent = loss._time_of_last_sent_ack_eliciting_packet
            # The handle is the loss timer's (a kept earlier one fires early once and
            # re-arms), not an ACK delay's about to fire for nothing.
            assert armed <= due and armed - sent > 2 * _TIMER_SLACK_SECONDS
            if due > armed + _TIMER_SLACK_SECONDS:
                kept += 1
            assert await stream.read() == b"%d" % i
        assert kept < 20


async def test_a_far_quic_timer_handle_stays_for_later_deadlines() -> None:
    """A sequential requester's loss timer goes (its request acknowledged: only the idle
    timeout is left) and comes back (the next request) once per request: a handle armed
    at least ``_TIMER_KEEP_SECONDS`` away stays for any later deadline (it fires early
    once and re-arms) instead of being replaced twice per request; an earlier deadline
    replaces it, and so does a later one when the armed handle is near (an ACK delay)."""
    from aiop2p._aio.quic_connection import _TIMER_KEEP_SECONDS

    class Machine:  # what _arm_quic_timer asks of aioquic: its next deadline
        when = 0.0

        def get_timer(self) -> float:
            return self.when

    async with (
        Node(transports=[QuicTransport()]) as a,
        Node(transports=[QuicTransport()]) as b,
    ):
        (addr,) = await b.listen("/ip4/127.0.0.1/udp/0/quic-v1")
        conn = await a.dial(addr.with_peer_id(b.peer_id))
        assert isinstance(conn, QuicConnection) and conn._quic is not None
        assert conn._quic_timer is not None
        conn._quic_timer.cancel()
        conn._quic_timer = None
        machine = Machine()

        def arm(delay: float) -> asyncio.TimerHandle | None:
            machine.when = conn.loop.time() + delay
            conn._arm_quic_timer(machine)  # type: ignore[arg-type]
            return conn._quic_timer

        loss_timer = arm(3 * _TIMER_KEEP_SECONDS)
        assert loss_timer is not None
        assert arm(30.0) is loss_timer  # only the idle timeout left: kept
        assert arm(3 * _TIMER_KEEP_SECONDS) is loss_timer  # the next request's: kept
        earlier = arm(2 * _TIMER_KEEP_SECONDS)
        assert earlier is not loss_timer and loss_timer.cancelled()
        ack_delay = arm(0.001)
        assert ack_delay is not earlier
        later = arm(3 * _TIMER_KEEP_SECONDS)  # its ACK left: the near handle goes
        assert later is not ack_delay and ack_delay is not None and ack_delay.cancelled()
        assert later is not None
        later.cancel()  # back to the connection's own deadline
        conn._quic_timer = None
        conn._arm_quic_timer(conn._quic)


def test_send_buffer_behaves_as_the_bytearray_it_replaces() -> None:
    """Random appends (bytes, bytearray, memoryview; tiny and large), slices and
    front trims give what aioquic's bytearray gave, and appended mutable data is copied."""
    import random

    from aiop2p._aio.quic_adapter import SendBuffer

    rng = random.Random(13)
    for steps in [60] * 30 + [2000] * 3:  # the long runs reclaim dropped chunks' slots
        ours, theirs = SendBuffer(), bytearray()
        for _ in range(steps):
            action = rng.random()
            if action < 0.5:
                size = rng.choice((0, 1, 7, 100, 4095, 4096, 9000, 70000))
                raw = rng.randbytes(size)
                kind = rng.choice((bytes, bytearray, memoryview))
                data = kind(raw) if kind is not memoryview else memoryview(bytearray(raw))
                ours += data
                theirs += raw
                if isinstance(data, bytearray):
                    data[:1] = b"!"  # the caller reuses its buffer: we hold a copy
            elif action < 0.8 and theirs:
                a = rng.randrange(len(theirs))
                b = rng.randrange(a, len(theirs) + 1)
                assert ours[a:b] == bytes(theirs[a:b])
            elif theirs:
                n = rng.randrange(len(theirs) + 1)
                del ours[:n]
                del theirs[:n]
            assert len(ours) == len(theirs) and bool(ours) == bool(theirs)
        assert ours[0 : len(theirs)] == bytes(theirs)
    with pytest.raises(ValueError):
        del SendBuffer(b"abc")[1:2]


async def test_dial_to_a_closed_port_fails_on_the_icmp_refusal() -> None:
    """Nobody listens on the port: the kernel's ICMP port unreachable ends the dial with
    a PortUnreachableError saying so, long before the 60 s handshake and dial timeouts.
    (Default loop only: on uvloop the endpoint does not ask for ICMP errors, see
    ``test_quic_io.test_the_socket_keeps_reading_after_icmp_errors``.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends
    config = NodeConfig(handshake_timeout=60.0, dial_timeout=60.0)
    async with Node(transports=[QuicTransport()], config=config) as a:
        async with asyncio.timeout(15):  # the test's cap, far below the dial's timeouts
            with pytest.raises(PortUnreachableError, match="refused") as caught:
                await a.dial(f"/ip4/127.0.0.1/udp/{port}/quic-v1")
        assert "ICMP" in str(caught.value)
        assert not a.connections


async def test_inbound_stream_negotiation_fast_path_fallback_and_deadline() -> None:
    """Inbound QUIC streams match their first input against the offer (no multistream
    machine for header + proposal in one packet); a header sent alone falls back to the
    machine and still negotiates; an unsupported proposal is refused; a stream that
    never proposes is reset at the negotiation deadline, which only such streams get."""
    from aiop2p.errors import ProtocolNotSupportedError
    from aiop2p.protocols.multistream import MULTISTREAM_PROTOCOL_ID, encode_message
    from aiop2p.protocols.yamux import StreamId

    config = NodeConfig(negotiation_timeout=0.5)
    async with echo_connection(config) as (conn, b):
        assert conn._quic is not None
        quic = conn._quic
        (theirs,) = b.connections
        assert isinstance(theirs, QuicConnection)
        watched: list[int] = []  # the inbound streams given a negotiation deadline

        class Recording(dict[StreamId, float]):
            def __setitem__(self, sid: StreamId, deadline: float) -> None:
                watched.append(sid)
                super().__setitem__(sid, deadline)

        theirs._deadlines._negotiating = Recording()
        # The fast path: header, proposal and data in one packet.
        stream = await conn.new_stream(ECHO)
        await stream.write(b"fast")
        await stream.close()
        assert await stream.read() == b"fast"
        assert watched == []
        # The header alone, the proposal in a later packet: the machine takes over.
        header = encode_message(MULTISTREAM_PROTOCOL_ID)
        split = StreamId(quic.get_next_available_stream_id())
        quic.write(split, header)
        conn._transmit()
        await wait_for(lambda: split in theirs._streams)
        quic.write(split, encode_message(ECHO) + b"split", end_stream=True)
        conn._transmit()
        await wait_for(lambda: split not in theirs._streams)
        # A stalled one: reset once the deadline passes.
        stalled = StreamId(quic.get_next_available_stream_id())
        quic.write(stalled, header)
        conn._transmit()
        await wait_for(lambda: stalled in theirs._streams)
        await wait_for(lambda: stalled not in theirs._streams, cap=10)
        assert watched == [split, stalled]
        # An unsupported protocol, proposed optimistically.
        refused = await conn.new_stream("/test/nope/1.0.0")
        await refused.write(b"x")
        with pytest.raises(ProtocolNotSupportedError):
            await refused.read()
        stream = await conn.new_stream(ECHO)
        await stream.write(b"still fine")
        await stream.close()
        assert await stream.read() == b"still fine"
