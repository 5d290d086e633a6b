"""A listener answers a small request in one Noise frame, one write to the socket.

Dispatching the request's frame answers at once (the Yamux ACK, the multistream echo)
and wakes the stream's handler; the connection flushes once the handler has run up to
its next wait, so a handler that answers at once sends the ACK, the echo, its response
and its FIN together.  Before, ``data_received`` flushed the answers right after
dispatch and the response followed one loop turn later: two frames, two TCP segments.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from aiop2p._aio.connection import WAKEUPS_PER_FLUSH, Connection
from aiop2p._aio.stream import Stream
from aiop2p.node import Node
from aiop2p.protocols.noise import NoiseTransport
from aiop2p.transports.memory import MemoryHub, MemoryTransport

from ..helpers import wait_for

pytestmark = pytest.mark.uvloop  # the flush order rests on call_soon order: both loops

ECHO = "/test/echo/1.0.0"
MAX = 1 << 10
SYN, ACK, FIN = 1, 2, 4


class CountingTransport:
    """The connection's transport, with every ``write`` recorded."""

    def __init__(self, inner: asyncio.Transport) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RecordingCipher:
    """The connection's Noise transport, with the plaintext of every frame recorded."""

    def __init__(self, inner: NoiseTransport) -> None:
        self.inner = inner
        self.plaintexts: list[bytes] = []

    def encrypt(self, data: bytes) -> bytes:
        self.plaintexts.append(bytes(data))
        return self.inner.encrypt(data)

    def decrypt(self, data: bytes) -> list[bytes]:
        return self.inner.decrypt(data)


def yamux_frames(plaintext: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, body) of each Yamux frame in ``plaintext``."""
    frames = []
    pos = 0
    while pos < len(plaintext):
        _version, kind, flags, sid, length = struct.unpack_from(">BBHII", plaintext, pos)
        pos += 12
        body = plaintext[pos : pos + length] if kind == 0 else b""
        pos += len(body)
        frames.append((kind, flags, sid, body))
    return frames


async def watch(conn: Connection, peer: Connection) -> tuple[CountingTransport, RecordingCipher]:
    """Record what ``conn`` writes from now on, once the streams the nodes open by
    themselves (identify) are over and nothing is left to flush on either side."""
    await wait_for(
        lambda: (
            not conn.streams
            and not peer.streams
            and conn._flush_handle is None
            and peer._flush_handle is None
        )
    )
    assert conn._transport is not None and conn._cipher is not None
    transport = CountingTransport(conn._transport)
    cipher = RecordingCipher(conn._cipher)
    conn._transport = transport  # type: ignore[assignment]
    conn._cipher = cipher  # type: ignore[assignment]
    return transport, cipher


async def echo(stream: Stream) -> None:
    await stream.write_message(await stream.read_message(MAX))


async def request(conn: Connection, payload: bytes) -> bytes:
    stream = await conn.new_stream(ECHO)
    await stream.write_message(payload)
    response = await stream.read_message(MAX)
    await stream.close()
    return response


async def test_the_listener_answers_a_small_request_in_one_write(
    node_pair: tuple[Node, Node],
) -> None:
    client, server = node_pair
    server.set_stream_handler(ECHO, echo)
    conn = await client.dial(server.listen_addrs[0].with_peer_id(server.peer_id))
    await wait_for(lambda: server.is_connected(client.peer_id))
    (server_conn,) = server.connections_to(client.peer_id)
    transport, cipher = await watch(server_conn, conn)
    for i in range(3):
        payload = b"request %d" % i
        assert await request(conn, payload) == payload
        # One write, one Noise frame: the ACK, the multistream echo, the response, the FIN.
        assert len(transport.writes) == len(cipher.plaintexts) == i + 1
        frames = yamux_frames(cipher.plaintexts[-1])
        sids = {sid for _kind, _flags, sid, _body in frames}
        assert len(sids) == 1
        assert frames[0][1] & ACK
        body = b"".join(body for _kind, _flags, _sid, body in frames)
        assert body.startswith(b"\x13/multistream/1.0.0\n")
        assert body.endswith(bytes([len(payload)]) + payload)
        assert frames[-1][1] & FIN


async def test_a_handler_that_waits_does_not_hold_the_answers_back(
    node_pair: tuple[Node, Node],
) -> None:
    """The ACK and the multistream echo leave after the handler's first step, not
    after its response."""
    client, server = node_pair
    release = asyncio.Event()

    async def slow_echo(stream: Stream) -> None:
        message = await stream.read_message(MAX)
        await release.wait()
        await stream.write_message(message)

    server.set_stream_handler(ECHO, slow_echo)
    conn = await client.dial(server.listen_addrs[0].with_peer_id(server.peer_id))
    stream = await conn.new_stream(ECHO)
    await stream.write_message(b"later")
    async with asyncio.timeout(5):
        assert await stream.wait_negotiated() == ECHO  # the echo came; the response not yet
    release.set()
    assert await stream.read_message(MAX) == b"later"
    await stream.close()


async def open_together(conn: Connection, count: int) -> list[Stream]:
    """``count`` echo requests opened and written in one step of this task (no write
    waits): one flush, one frame, one read at the server (over the memory transport)."""
    streams = [conn.open_stream([ECHO]) for _ in range(count)]
    for i, stream in enumerate(streams):
        await stream.write_message(b"%d" % i)
    return streams


def answered(plaintext: bytes) -> int:
    return sum(1 for _kind, flags, _sid, _body in yamux_frames(plaintext) if flags & FIN)


@pytest.mark.parametrize("count", [WAKEUPS_PER_FLUSH, 2 * WAKEUPS_PER_FLUSH + 1])
async def test_requests_that_arrive_together_are_answered_in_groups(count: int) -> None:
    """Requests read together are answered once the handlers they woke have answered:
    up to ``WAKEUPS_PER_FLUSH`` in one write, more in one write per group of that many,
    so the requester can take the first answers while the rest are computed."""
    hub = MemoryHub()
    async with (
        Node(transports=[MemoryTransport(hub)]) as server,
        Node(transports=[MemoryTransport(hub)]) as client,
    ):
        server.set_stream_handler(ECHO, echo)
        (addr,) = await server.listen("/memory/0")
        conn = await client.dial(addr.with_peer_id(server.peer_id))
        await wait_for(lambda: server.is_connected(client.peer_id))
        (server_conn,) = server.connections_to(client.peer_id)
        transport, cipher = await watch(server_conn, conn)
        streams = await open_together(conn, count)
        expected = [b"%d" % i for i in range(count)]
        assert [await s.read_message(MAX) for s in streams] == expected
        groups = -(-count // WAKEUPS_PER_FLUSH)
        assert len(transport.writes) == len(cipher.plaintexts) == groups
        assert [answered(p) for p in cipher.plaintexts] == [
            min(WAKEUPS_PER_FLUSH, count - g * WAKEUPS_PER_FLUSH) for g in range(groups)
        ]
        for stream in streams:
            await stream.close()
