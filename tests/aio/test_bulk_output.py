"""Large flushes are sealed into a buffer the thread reuses, never while a transport holds it.

``Connection._flush`` encrypts a flush of more than one Noise frame straight from the Yamux
pieces into one output buffer and writes a view of it.  The buffer is reused by the next
large flush only when nothing refers to it any more: a transport that keeps a view of
unsent bytes (uvloop, the selector transport of later Pythons) must find them unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

import pytest

from aiop2p._aio import connection as connection_module
from aiop2p._aio.stream import Stream
from aiop2p.node import Node
from aiop2p.protocols.noise import MAX_PLAINTEXT_SIZE, NoiseTransport

from ..helpers import digest_to_eof, wait_for

pytestmark = pytest.mark.uvloop

MIB = 1 << 20
SINK = "/test/digest-to-eof/1.0.0"


class KeepingTransport(asyncio.WriteTransport):
    """Keeps what it is given, as a transport does with bytes the socket did not take."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[Any] = []

    def write(self, data: Any) -> None:
        self.kept.append(data)


class CopyingTransport(KeepingTransport):
    def write(self, data: Any) -> None:
        self.kept.append(bytes(data))


def cipher_pair() -> tuple[NoiseTransport, NoiseTransport]:
    return (
        NoiseTransport(b"\x01" * 32, b"\x02" * 32, handshake_hash=b"h"),
        NoiseTransport(b"\x02" * 32, b"\x01" * 32, handshake_hash=b"h"),
    )


def flushes() -> list[list[bytes | memoryview]]:
    rng = random.Random(3)
    out: list[list[bytes | memoryview]] = []
    for size in (256 * 1024, 3 * MAX_PLAINTEXT_SIZE, 2 * MAX_PLAINTEXT_SIZE + 1):
        payload = rng.randbytes(size)
        out.append([rng.randbytes(12), memoryview(payload)[: size // 2], payload[size // 2 :]])
    return out


def test_a_buffer_a_transport_keeps_is_never_written_again() -> None:
    sender, receiver = cipher_pair()
    transport = KeepingTransport()
    sent = flushes()
    for pieces in sent:
        connection_module._write_sealed(transport, sender, pieces, sum(map(len, pieces)))
    assert connection_module._output.buffer is None  # each flush had a buffer of its own
    wire = b"".join(bytes(view) for view in transport.kept)
    assert b"".join(receiver.decrypt(wire)) == b"".join(b"".join(p) for p in sent)


def test_a_buffer_a_transport_copied_is_reused() -> None:
    sender, receiver = cipher_pair()
    transport = CopyingTransport()
    sent = flushes()
    kept = []  # ids only: holding the buffer would itself keep it from being reused
    for pieces in sent:
        connection_module._write_sealed(transport, sender, pieces, sum(map(len, pieces)))
        assert connection_module._output.buffer is not None
        kept.append(id(connection_module._output.buffer))
    assert kept == [kept[0]] * len(sent)
    wire = b"".join(transport.kept)
    assert b"".join(receiver.decrypt(wire)) == b"".join(b"".join(p) for p in sent)


async def test_concurrent_bulk_writes_to_a_reader_that_stalls_arrive_intact() -> None:
    """The receiver stops reading its socket: the sender's writes go out partly and the
    transport keeps the rest (on uvloop a view of our buffer) while later flushes seal."""
    async with Node() as server, Node() as client:
        server.set_stream_handler(SINK, digest_to_eof)
        (addr,) = await server.listen("/ip4/127.0.0.1/tcp/0")
        conn = await client.dial(addr.with_peer_id(server.peer_id))
        (server_conn,) = server.connections_to(client.peer_id)
        assert server_conn._transport is not None
        payloads = [random.Random(i).randbytes(3 * MIB + 4321 * i) for i in range(4)]
        streams = [await conn.new_stream(SINK) for _ in payloads]
        for stream in streams:  # negotiated, and the windows raised at open are ours
            await stream.write(b"")
            await stream.wait_negotiated()

        async def send(stream: Stream, payload: bytes) -> bytes:
            view = memoryview(payload)
            for start in range(0, len(payload), 300_000):  # not a multiple of a frame
                await stream.write(view[start : start + 300_000])
            await stream.close()
            return await stream.readexactly(40)

        server_conn._transport.pause_reading()
        tasks = [asyncio.create_task(send(s, p)) for s, p in zip(streams, payloads, strict=True)]
        await wait_for(lambda: conn.write_paused, cap=20)  # the socket buffers are full
        server_conn._transport.resume_reading()
        answers = await asyncio.wait_for(asyncio.gather(*tasks), 60)
        for payload, answer in zip(payloads, answers, strict=True):
            assert int.from_bytes(answer[:8], "big") == len(payload)
            assert answer[8:] == hashlib.sha256(payload).digest()


async def test_a_flush_is_one_frame_exactly_when_its_bytes_fit_in_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flush seals one Noise frame when what it holds fits in one, else goes through the
    reused buffer, and returns the plaintext size either way.  The choice is made on the
    payload bytes counted as they were queued plus 12 bytes a piece: many small frames
    whose count outweighs their bytes still leave as one frame."""
    sealed: list[int] = []
    write_sealed = connection_module._write_sealed

    def recording(transport: Any, cipher: NoiseTransport, pieces: Any, size: int) -> None:
        sealed.append(size)
        write_sealed(transport, cipher, pieces, size)

    monkeypatch.setattr(connection_module, "_write_sealed", recording)
    async with Node() as server, Node() as client:
        server.set_stream_handler(SINK, digest_to_eof)
        (addr,) = await server.listen("/ip4/127.0.0.1/tcp/0")
        conn = await client.dial(addr.with_peer_id(server.peer_id))
        stream = await conn.new_stream(SINK)
        await stream.write(b"")
        await stream.wait_negotiated()
        sid = stream.stream_id
        conn._flush()
        sealed.clear()
        header = 12
        assert conn.send_stream_data(sid, bytes(100)) == 100
        assert conn._flush() == header + 100  # a small flush: counted without a pass
        assert conn.send_stream_data(sid, bytes(MAX_PLAINTEXT_SIZE - header)) > 0
        assert conn._flush() == MAX_PLAINTEXT_SIZE
        assert sealed == []  # one header and its payload: exactly one frame
        assert conn.send_stream_data(sid, bytes(MAX_PLAINTEXT_SIZE - header + 1)) > 0
        assert conn._flush() == MAX_PLAINTEXT_SIZE + 1
        assert sealed == [MAX_PLAINTEXT_SIZE + 1]  # one byte more: two frames
        yamux = conn._yamux
        assert yamux is not None
        for opaque in range(2000):  # a ping between writes: no write joins the one before
            conn.send_stream_data(sid, b"x")
            yamux.ping(opaque)
        assert conn._flush() == 2000 * (header + 1 + header)
        assert sealed == [MAX_PLAINTEXT_SIZE + 1]  # 50,000 bytes in 6,000 pieces: one frame
        await stream.close()
        answer = await stream.readexactly(40)
        sent = 100 + 2 * (MAX_PLAINTEXT_SIZE - header) + 1 + 2000
        assert int.from_bytes(answer[:8], "big") == sent
