"""The QUIC endpoint's socket work: batched reads, GSO sends and their fallback, large
loopback datagrams, and ICMP refusals that end a dial at once."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Sequence

import pytest

from aiop2p._aio.connection import Connection
from aiop2p._aio.quic_adapter import MAX_FRAME_DATA_BYTES
from aiop2p._aio.quic_connection import QuicConfig, QuicConnection, SockAddr
from aiop2p._aio.quic_transport import QuicEndpoint, QuicTransport
from aiop2p._aio.stream import Stream
from aiop2p.config import NodeConfig
from aiop2p.errors import DialError
from aiop2p.node import Node

from ..helpers import wait_for

pytestmark = pytest.mark.uvloop  # the endpoint's own reader and writer, on both loops

ECHO = "/test/echo/1.0.0"
BULK_BYTES = 3 * 1024 * 1024


async def echo(stream: Stream) -> None:
    while chunk := await stream.read(1 << 20):
        await stream.write(chunk)


class Sends:
    """Every batch the endpoints pass to the socket: (datagram sizes, GSO or not)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[list[int]] = []
        original = QuicEndpoint._send_now

        def spy(endpoint: QuicEndpoint, datagrams: Sequence[bytes], addr: SockAddr) -> bool:
            self.batches.append([len(d) for d in datagrams])
            return original(endpoint, datagrams, addr)

        monkeypatch.setattr(QuicEndpoint, "_send_now", spy)


async def bulk_echo(config: QuicConfig, *, gso: bool | None = None) -> list[Connection]:
    """3 MiB of random bytes through an echo over QUIC, checked byte for byte."""
    payload = os.urandom(BULK_BYTES)
    transports = [QuicTransport(config), QuicTransport(config)]
    async with Node(transports=[transports[0]]) as a, Node(transports=[transports[1]]) as b:
        b.set_stream_handler(ECHO, echo)
        (addr,) = await b.listen("/ip4/127.0.0.1/udp/0/quic-v1")
        if gso is not None:
            for endpoint in transports[1]._listening:
                endpoint.gso = gso
        stream = await a.new_stream(addr.with_peer_id(b.peer_id), ECHO)
        if gso is not None:
            for endpoint in transports[0]._dialing.values():
                endpoint.gso = gso

        async def write() -> None:
            await stream.write(payload)
            await stream.close()

        writer = asyncio.ensure_future(write())
        received = bytearray()
        while chunk := await stream.read(1 << 20):
            received += chunk
        await writer
        assert bytes(received) == payload
        return [*a.connections, *b.connections]


async def test_large_loopback_datagrams_carry_bulk_intact(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the handshake, loopback datagrams grow past 16 KiB (several STREAM frames of
    at most 16383 bytes each in one packet), and the data arrives intact."""
    sends = Sends(monkeypatch)
    await bulk_echo(QuicConfig())
    largest = max(size for batch in sends.batches for size in batch)
    assert largest > 3 * MAX_FRAME_DATA_BYTES


@pytest.mark.parametrize("gso", [True, False])
async def test_bursts_leave_in_gso_sends_or_one_by_one(
    monkeypatch: pytest.MonkeyPatch, gso: bool
) -> None:
    """With PMTU-sized datagrams a burst leaves as GSO ``sendmsg`` calls of many
    segments where the kernel has UDP GSO, else one datagram per call; both deliver."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.getsockopt(17, 103)  # SOL_UDP, UDP_SEGMENT
    except OSError:
        if gso:
            pytest.skip("this kernel has no UDP GSO (UDP_SEGMENT)")
    finally:
        probe.close()
    sends = Sends(monkeypatch)
    await bulk_echo(QuicConfig(loopback_datagram_bytes=1452), gso=gso)
    multi = [batch for batch in sends.batches if len(batch) > 1]
    assert max(size for batch in sends.batches for size in batch) <= 1452
    if gso:
        assert multi and max(len(b) for b in multi) >= 8
        for batch in multi:  # equal segments, the last one possibly shorter
            assert all(size == batch[0] for size in batch[:-1]) and batch[-1] <= batch[0]
            assert sum(batch) <= 65000
    else:
        assert not multi


async def test_a_gso_refusal_falls_back_to_single_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    """A path whose device refuses GSO (EIO) switches the endpoint to one send per
    datagram, and nothing is lost on the way."""
    refused: list[int] = []

    def no_gso(self: socket.socket, buffers: Sequence[bytes], *args: object) -> int:
        refused.append(len(buffers))
        raise OSError(5, "Input/output error")  # EIO, as the kernel says it

    transport = QuicTransport(QuicConfig(loopback_datagram_bytes=1452))
    async with Node(transports=[transport]) as a, Node(transports=[QuicTransport()]) as b:
        b.set_stream_handler(ECHO, echo)
        (addr,) = await b.listen("/ip4/127.0.0.1/udp/0/quic-v1")
        stream = await a.new_stream(addr.with_peer_id(b.peer_id), ECHO)
        (endpoint,) = transport._dialing.values()
        endpoint.gso = True
        sock = endpoint._sock
        assert sock is not None
        fake = FakeSocket(sock, no_gso)
        endpoint._sock = fake  # type: ignore[assignment]
        payload = os.urandom(256 * 1024)
        await stream.write(payload)
        await stream.close()
        received = bytearray()
        while chunk := await stream.read(1 << 20):
            received += chunk
        assert bytes(received) == payload
        assert refused and not endpoint.gso
        endpoint._sock = sock


class FakeSocket:
    """A socket whose ``sendmsg`` is replaced; everything else is the real one."""

    def __init__(self, sock: socket.socket, sendmsg: object) -> None:
        self._sock = sock
        self._sendmsg = sendmsg

    def sendmsg(self, *args: object) -> int:
        return self._sendmsg(self._sock, *args)  # type: ignore[operator,no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


async def test_the_socket_keeps_reading_after_icmp_errors() -> None:
    """ICMP errors (dials to a closed port) never stop the endpoint's socket reader: on
    uvloop, a queued socket error (IP_RECVERR) made libuv stop watching the socket for
    good, so a QUIC listener went deaf after its first unreachable peer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # closed once the block ends
    config = NodeConfig(dial_timeout=0.5)
    async with Node(transports=[QuicTransport()], config=config) as a, Node() as b:
        a.set_stream_handler(ECHO, echo)
        (addr,) = await a.listen("/ip4/127.0.0.1/udp/0/quic-v1")
        for _ in range(3):  # each a refusal (selector loops) or a dial timeout (uvloop)
            with pytest.raises(DialError):
                await a.dial(f"/ip4/127.0.0.1/udp/{closed}/quic-v1")
        async with asyncio.timeout(15):
            conn = await b.dial(addr.with_peer_id(a.peer_id))  # a still reads its socket
            stream = await conn.new_stream(ECHO)
            await stream.write(b"alive")
            await stream.close()
            assert await stream.read() == b"alive"


async def test_icmp_errors_do_not_end_live_connections_or_other_dials() -> None:
    """A (possibly forged) ICMP error about an established connection's peer, or about
    another address, changes nothing: only a dial still in its handshake to that very
    address ends."""
    transport = QuicTransport()
    async with Node(transports=[transport]) as a, Node(transports=[QuicTransport()]) as b:
        b.set_stream_handler(ECHO, echo)
        (addr,) = await b.listen("/ip4/127.0.0.1/udp/0/quic-v1")
        conn = await a.dial(addr.with_peer_id(b.peer_id))
        assert isinstance(conn, QuicConnection)
        (endpoint,) = transport._dialing.values()
        refused = ConnectionRefusedError(111, "Connection refused")
        endpoint.error_received(refused, conn._peer_sockaddr)
        endpoint.error_received(refused, ("127.0.0.1", 9))
        endpoint.error_received(refused, None)
        stream = await conn.new_stream(ECHO)
        await stream.write(b"alive")
        await stream.close()
        assert await stream.read() == b"alive"
        assert conn.is_established


@pytest.mark.parametrize("gro", [True, False])
async def test_a_gso_burst_is_read_as_its_datagrams(
    monkeypatch: pytest.MonkeyPatch, gro: bool
) -> None:
    """A peer on this host that sends a GSO burst (quinn does): with UDP GRO the kernel
    hands it over in one read, split here into the datagrams sent; without, one read
    each. Either way each datagram is routed alone (here garbage: dropped)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.getsockopt(17, 103)  # SOL_UDP, UDP_SEGMENT
        probe.setsockopt(17, 104, 1)  # SOL_UDP, UDP_GRO
    except OSError:
        pytest.skip("this kernel has no UDP GSO or GRO")
    finally:
        probe.close()
    delivered: list[bytes] = []
    original = QuicEndpoint._route

    def route(endpoint: QuicEndpoint, data: bytes, addr: SockAddr) -> QuicConnection | None:
        delivered.append(data)
        return original(endpoint, data, addr)

    monkeypatch.setattr(QuicEndpoint, "_route", route)
    if not gro:
        monkeypatch.setattr("aiop2p._aio.quic_transport._enable_gro", lambda sock: False)
    burst = [bytes([0x40, i]) + bytes(1298) for i in range(20)] + [bytes([0x40, 20]) + bytes(698)]
    transport = QuicTransport()
    async with Node(transports=[transport]) as node:
        await node.listen("/ip4/127.0.0.1/udp/0/quic-v1")
        (endpoint,) = transport._listening
        assert endpoint.gro is gro and endpoint.sockname is not None
        segment = struct.pack("=H", 1300)  # UDP_SEGMENT: the GSO segment size
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendmsg(burst, [(17, 103, segment)], 0, ("127.0.0.1", endpoint.sockname[1]))
        await wait_for(lambda: len(delivered) == len(burst))
        assert delivered == burst
        assert not node.connections


async def test_coalesced_datagrams_count_against_the_wakeup_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each datagram of a GRO read counts toward the 64 per wake-up: three bursts of 40
    take at least two wake-ups, and all 120 are read."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.setsockopt(17, 104, 1)  # SOL_UDP, UDP_GRO
    except OSError:
        pytest.skip("this kernel has no UDP GRO")
    finally:
        probe.close()
    delivered: list[int] = []
    wakeups: list[int] = []
    route, read_ready = QuicEndpoint._route, QuicEndpoint._read_ready

    def count(endpoint: QuicEndpoint, data: bytes, addr: SockAddr) -> QuicConnection | None:
        delivered.append(len(data))
        return route(endpoint, data, addr)

    def wakeup(endpoint: QuicEndpoint) -> None:
        wakeups.append(len(delivered))
        read_ready(endpoint)

    monkeypatch.setattr(QuicEndpoint, "_route", count)
    monkeypatch.setattr(QuicEndpoint, "_read_ready", wakeup)
    transport = QuicTransport()
    async with Node(transports=[transport]) as node:
        await node.listen("/ip4/127.0.0.1/udp/0/quic-v1")
        (endpoint,) = transport._listening
        loop = asyncio.get_running_loop()
        sock = endpoint._sock
        assert sock is not None and endpoint.gro
        loop.remove_reader(sock.fileno())  # re-registered below with the spy
        segment = struct.pack("=H", 1300)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(3):
                burst = [bytes([0x40]) + bytes(1299)] * 40
                sender.sendmsg(burst, [(17, 103, segment)], 0, sock.getsockname())
        loop.add_reader(sock.fileno(), endpoint._read_ready)
        await wait_for(lambda: len(delivered) == 120)
        assert len(wakeups) >= 2
        assert not node.connections


async def test_many_datagrams_per_wakeup_are_all_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst queued in the socket is read in one wake-up (up to the bound), and a
    burst beyond the bound is read on the next ones: nothing is left behind."""
    config = QuicConfig(loopback_datagram_bytes=1452)
    delivered: list[int] = []
    original = QuicEndpoint._route

    def count(endpoint: QuicEndpoint, data: bytes, addr: SockAddr) -> QuicConnection | None:
        delivered.append(len(data))
        return original(endpoint, data, addr)

    wakeups: list[int] = []
    read_ready = QuicEndpoint._read_ready

    def wakeup(endpoint: QuicEndpoint) -> None:
        wakeups.append(len(delivered))
        read_ready(endpoint)

    monkeypatch.setattr(QuicEndpoint, "_route", count)
    monkeypatch.setattr(QuicEndpoint, "_read_ready", wakeup)
    transport = QuicTransport(config)
    async with Node(transports=[transport]) as node:
        await node.listen("/ip4/127.0.0.1/udp/0/quic-v1")
        (endpoint,) = transport._listening
        loop = asyncio.get_running_loop()
        sock = endpoint._sock
        assert sock is not None
        loop.remove_reader(sock.fileno())  # re-registered below with the spy
        port = sock.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(150):  # garbage (not QUIC, no connection): read and dropped
                sender.sendto(bytes([0x40]) + bytes(1300), ("127.0.0.1", port))
        loop.add_reader(sock.fileno(), endpoint._read_ready)
        await wait_for(lambda: len(delivered) == 150)
        assert 3 <= len(wakeups) < 10  # 64 per wake-up at most
        assert not node.connections


class RefusingSocket:
    """A socket whose first ``refusals`` sends raise ``BlockingIOError`` (a full send
    buffer); everything else is the real one."""

    def __init__(self, sock: socket.socket, refusals: int) -> None:
        self._sock = sock
        self.refusals = refusals
        self.refused = 0

    def sendto(self, data: bytes, addr: SockAddr) -> int:
        if self.refused < self.refusals:
            self.refused += 1
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return self._sock.sendto(data, addr)

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


async def test_a_datagram_the_full_socket_refuses_is_queued_and_sent() -> None:
    """A datagram the socket refuses (its buffer full: once in ``sendto``'s own try,
    once in ``_send_now``'s) waits in the queue and leaves when the socket is writable:
    the echo comes back whole."""
    transport = QuicTransport()
    async with Node(transports=[transport]) as a, Node(transports=[QuicTransport()]) as b:
        b.set_stream_handler(ECHO, echo)
        (addr,) = await b.listen("/ip4/127.0.0.1/udp/0/quic-v1")
        stream = await a.new_stream(addr.with_peer_id(b.peer_id), ECHO)
        (endpoint,) = transport._dialing.values()
        sock = endpoint._sock
        assert sock is not None
        fake = RefusingSocket(sock, refusals=2)
        endpoint._sock = fake  # type: ignore[assignment]
        try:
            await stream.write(b"queued")
            await stream.close()
            received = bytearray()
            while chunk := await stream.read(1 << 20):
                received += chunk
        finally:
            endpoint._sock = sock
        assert bytes(received) == b"queued"
        assert fake.refused == 2 and not endpoint._queued
