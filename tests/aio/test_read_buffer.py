"""Sockets are read into one buffer per thread, and nothing keeps a view of it.

``Connection`` is an ``asyncio.BufferedProtocol``: asyncio's socket transports read into
the thread's buffer (``get_buffer``), and the next read of any connection writes over it.
As a plain ``Protocol`` it would be handed a new ``bytes`` of 256 KiB per read, which some C
libraries and Pythons serve from ``mmap`` (three system calls more per read).  Here every
read's bytes are overwritten with garbage as soon as ``buffer_updated`` returns, while
handshakes, small requests and bulk transfers with frames split across reads run on several
connections at once: whatever was kept as a view instead of copied would show.  uvloop
reads into a buffer of its own and hands ``bytes`` to ``data_received`` (it takes
``get_buffer`` only from a protocol that is not also an ``asyncio.Protocol``); the same
traffic runs on it too.
"""

from __future__ import annotations

import asyncio
import hashlib
import random

import pytest

from aiop2p._aio import connection as connection_module
from aiop2p._aio.connection import Connection
from aiop2p._aio.stream import Stream
from aiop2p.node import Node

from ..helpers import digest_to_eof

pytestmark = pytest.mark.timeout(60)

ECHO = "/test/echo/1.0.0"
SINK = "/test/digest/1.0.0"
GARBAGE = 0xA5


async def echo(stream: Stream) -> None:
    data = await stream.read_message(1 << 20)
    await stream.write_message(data)
    await stream.close()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every read a connection took through ``buffer_updated``; the bytes of
    each are overwritten once it returns."""
    sizes: list[int] = []
    original = Connection.buffer_updated

    def buffer_updated(self: Connection, nbytes: int) -> None:
        sizes.append(nbytes)
        view = self.get_buffer(-1)
        try:
            original(self, nbytes)
        finally:
            view[:nbytes] = bytes([GARBAGE]) * nbytes

    monkeypatch.setattr(Connection, "buffer_updated", buffer_updated)
    return sizes


async def test_sockets_are_read_into_the_threads_buffer(reads: list[int]) -> None:
    async with Node() as server, Node() as client:
        server.set_stream_handler(ECHO, echo)
        (addr,) = await server.listen("/ip4/127.0.0.1/tcp/0")
        conn = await client.dial(addr.with_peer_id(server.peer_id))
        stream = await conn.new_stream(ECHO)
        await stream.write_message(b"hello")
        assert await stream.read_message(100) == b"hello"
        (server_conn,) = server.connections_to(client.peer_id)
        buffer = conn.get_buffer(-1)
        assert server_conn.get_buffer(-1) is buffer  # one per thread, not per connection
        assert len(buffer) == connection_module.READ_BUFFER_BYTES
    assert len(reads) >= 4  # both handshakes and the request and answer


def on_uvloop() -> bool:
    return type(asyncio.get_running_loop()).__module__.startswith("uvloop")


@pytest.mark.uvloop
async def test_what_a_read_leaves_is_never_read_again_from_the_buffer(reads: list[int]) -> None:
    async with Node() as server:
        server.set_stream_handler(ECHO, echo)
        server.set_stream_handler(SINK, digest_to_eof)
        (addr,) = await server.listen("/ip4/127.0.0.1/tcp/0")
        target = addr.with_peer_id(server.peer_id)

        async def client_run(seed: int) -> None:
            rng = random.Random(seed)
            async with Node() as client:
                conn = await client.dial(target)
                for _ in range(20):
                    message = rng.randbytes(rng.choice((1, 63, 1500, 70_001, 300_000)))
                    stream = await conn.new_stream(ECHO)
                    await stream.write_message(message)
                    assert await stream.read_message(1 << 20) == message
                    await stream.close()
                payload = rng.randbytes(3 * (1 << 20) + seed)
                sink = await conn.new_stream(SINK)
                view = memoryview(payload)
                for start in range(0, len(payload), 70_001):  # frames split across reads
                    await sink.write(view[start : start + 70_001])
                await sink.close()
                answer = await sink.readexactly(40)
                assert int.from_bytes(answer[:8], "big") == len(payload)
                assert answer[8:] == hashlib.sha256(payload).digest()

        await asyncio.wait_for(asyncio.gather(*(client_run(seed) for seed in range(3))), 45)
    if on_uvloop():
        assert not reads
    else:
        assert max(reads) > 65_537  # reads of more than one Noise frame were taken
