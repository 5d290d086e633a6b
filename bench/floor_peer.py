"""The two-process floor: aiop2p's per-request wire work in plain asyncio, nothing more.

``bench/run.py`` runs this script as the ``floor`` implementation, next to aiop2p, so aiop2p's
figures can be read as a percentage of what Python's asyncio does on this machine for the same
bytes on the wire.  No aiop2p code runs here: one ``asyncio.BufferedProtocol`` per connection,
``cryptography``'s ChaCha20-Poly1305 with real nonces and the 2-byte Noise length prefix,
Yamux frame headers packed and parsed with ``struct``, no task per request.

Per echo request (a 64 B message by default) the client writes ONE Noise transport frame that
carries a Yamux data frame with SYN on a new odd stream id (multistream header, the proposal
``/p2p/1.0.0`` and the uvarint-framed message) and a Yamux FIN; the server parses all of it
and answers in ONE Noise frame: a data frame with ACK (multistream header, the echoed
proposal, the framed message) and a FIN.  A request ends when the client reads that FIN, as
an aiop2p echo ends when its stream is closed.  With ``concurrency`` N the client keeps N
requests outstanding; every read is answered by one write carrying all the frames it caused.

Bulk (``perf`` with ``upload`` only) is receiver-bound: the sender encrypts every Noise frame
(64 KiB, each a Yamux data frame) before its timer starts, then only writes; the receiver
decrypts each frame into one reused buffer and counts bytes; one small frame back stops the
timer.

Keys: the client opens each connection with a mode byte and a random 32-byte salt; both
processes derive the two direction keys as SHA-256 of a secret fixed in this file, the salt and
the direction.  That replaces the Noise XX handshake, which the floor does not time (a dial is
not a floor figure).

With ``--tasks`` (the ``floor-tasks`` implementation of ``bench/costs.py``) the same bytes
go on the wire, but the server answers each request in an ``asyncio`` task of its own and the
client awaits each answer in a task: the least that asyncio itself costs a library whose
handlers are ``async def`` functions, one per stream.

    .venv/bin/python bench/floor_peer.py [--listen /ip4/127.0.0.1/tcp/0] [--uvloop] [--tasks]

``tests/bench/test_floor.py`` decodes the floor's bytes with aiop2p's Noise, Yamux and
multistream machines, so the floor is known to put valid frames on the wire.  It speaks the
JSON-lines command protocol of ``bench/aiop2p_peer.py`` for the commands the floor has:
``bench_echo``, ``perf`` (upload only), ``rss``, ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import math
import os
import re
import secrets
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

# ---- wire constants (the same bytes aiop2p puts on the wire) ---------------------------------
_SECRET = b"aiop2p bench floor: fixed key material, never a real key"
MODE_ECHO = b"E"
MODE_BULK = b"B"
SALT_BYTES = 32
PREAMBLE_BYTES = 1 + SALT_BYTES + 8  # mode, salt, bulk byte count (0 for echo)
TAG_BYTES = 16
MAX_NOISE_FRAME_BYTES = 65535  # the 2-byte length prefix's limit
MAX_PLAINTEXT_BYTES = MAX_NOISE_FRAME_BYTES - TAG_BYTES
YAMUX_HEADER = struct.Struct(">BBHII")
YAMUX_HEADER_BYTES = YAMUX_HEADER.size
TYPE_DATA = 0
FLAG_SYN, FLAG_ACK, FLAG_FIN = 0x1, 0x2, 0x4
MS_HEADER = b"\x13/multistream/1.0.0\n"
ECHO_PROTOCOL = b"/p2p/1.0.0"
MS_PROPOSAL = bytes([len(ECHO_PROTOCOL) + 1]) + ECHO_PROTOCOL + b"\n"
MS_PREFIX = MS_HEADER + MS_PROPOSAL
BULK_STREAM_ID = 1
BULK_CHUNK_FRAMES = 16  # pre-encrypted frames joined per transport.write

# ---- bounds ----------------------------------------------------------------------------------
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_COUNT = 1_000_000
MAX_CONCURRENCY = 4096
MAX_OPEN_STREAMS = 4096
MAX_BULK_BYTES = 1 << 32
READ_BUFFER_BYTES = 4 * MAX_NOISE_FRAME_BYTES
MAX_COMMAND_LINE_BYTES = 1024 * 1024
DEFAULT_ECHO_WARMUP_REQUESTS = 2000
DEFAULT_PERF_WARMUP_BYTES = 128 * 1024 * 1024

_nonce = struct.Struct("<4xQ").pack  # Noise ChaChaPoly: 32 zero bits, then the 64-bit counter
_length = struct.Struct(">H").pack
_count = struct.Struct(">Q")
_PAGE_SIZE_BYTES = os.sysconf("SC_PAGE_SIZE")


class FloorError(Exception):
    """The floor's peer sent something this floor does not expect."""


def direction_keys(salt: bytes) -> tuple[bytes, bytes]:
    """(client-to-server, server-to-client) keys for a connection opened with ``salt``."""
    return (
        hashlib.sha256(_SECRET + salt + b"c2s").digest(),
        hashlib.sha256(_SECRET + salt + b"s2c").digest(),
    )


def uvarint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it); at most 9 bytes, as multiformats' uvarint allows."""
    value = 0
    for shift in range(0, 63, 7):
        if pos >= len(data):
            raise FloorError("truncated uvarint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise FloorError("uvarint too long")


def request_plaintext(stream_id: int, message: bytes) -> bytes:
    """A request: SYN data frame (multistream header, proposal, framed message), then FIN."""
    body = MS_PREFIX + uvarint(len(message)) + message
    return (
        YAMUX_HEADER.pack(0, TYPE_DATA, FLAG_SYN, stream_id, len(body))
        + body
        + YAMUX_HEADER.pack(0, TYPE_DATA, FLAG_FIN, stream_id, 0)
    )


def response_plaintext(stream_id: int, message: bytes) -> bytes:
    """A response: ACK data frame (multistream header, echoed proposal, framed echo), FIN."""
    body = MS_PREFIX + uvarint(len(message)) + message
    return (
        YAMUX_HEADER.pack(0, TYPE_DATA, FLAG_ACK, stream_id, len(body))
        + body
        + YAMUX_HEADER.pack(0, TYPE_DATA, FLAG_FIN, stream_id, 0)
    )


def parse_frames(plaintext: bytes) -> list[tuple[int, int, bytes]]:
    """(flags, stream id, body) of every Yamux data frame in ``plaintext``."""
    frames = []
    pos = 0
    end = len(plaintext)
    while pos < end:
        if end - pos < YAMUX_HEADER_BYTES:
            raise FloorError("truncated yamux header")
        version, kind, flags, stream_id, length = YAMUX_HEADER.unpack_from(plaintext, pos)
        pos += YAMUX_HEADER_BYTES
        if version != 0 or kind != TYPE_DATA:
            raise FloorError(f"unexpected yamux frame: version {version}, type {kind}")
        if end - pos < length:
            raise FloorError("truncated yamux body")
        frames.append((flags, stream_id, plaintext[pos : pos + length]))
        pos += length
    return frames


def echoed_message(body: bytes) -> bytes:
    """The framed message after the multistream header and ``/p2p/1.0.0``."""
    if not body.startswith(MS_PREFIX):
        raise FloorError("the stream does not start with multistream and /p2p/1.0.0")
    length, pos = read_uvarint(body, len(MS_PREFIX))
    if length > MAX_MESSAGE_BYTES or pos + length != len(body):
        raise FloorError(f"bad message length {length}")
    return body[pos:]


class NoiseFrames(asyncio.BufferedProtocol):
    """Reads Noise frames into one reused buffer; subclasses handle each frame's ciphertext.

    The connection starts with the preamble (mode, salt, byte count), which the server reads
    to pick its mode and keys.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray(READ_BUFFER_BYTES)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._recv_nonce = 0
        self._send_nonce = 0
        self._open: Callable[[bytes, Any, None], bytes] | None = None
        self._seal: Callable[[bytes, bytes, None], bytes] | None = None

    def set_keys(self, send_key: bytes, receive_key: bytes) -> None:
        self._seal = ChaCha20Poly1305(send_key).encrypt
        self._open = ChaCha20Poly1305(receive_key).decrypt

    def seal(self, plaintext: bytes) -> bytes:
        """One Noise frame: 2-byte length, then the sealed plaintext."""
        assert self._seal is not None
        nonce = self._send_nonce
        self._send_nonce = nonce + 1
        return _length(len(plaintext) + TAG_BYTES) + self._seal(_nonce(nonce), plaintext, None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self._buf) - self._end < MAX_NOISE_FRAME_BYTES + 2:
            size = self._end - self._start
            self._buf[:size] = self._view[self._start : self._end]
            self._start, self._end = 0, size
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        try:
            self.frames_ready()
        except (FloorError, InvalidTag) as exc:
            sys.stderr.write(f"floor: {type(exc).__name__}: {exc}\n")
            self.fail(exc)
            if self.transport is not None:
                self.transport.abort()

    def frames_ready(self) -> None:
        view, pos, end = self._view, self._start, self._end
        while end - pos >= 2:
            stop = pos + 2 + (view[pos] << 8 | view[pos + 1])
            if stop > end:
                break
            nonce = self._recv_nonce
            self._recv_nonce = nonce + 1
            self.frame(_nonce(nonce), view[pos + 2 : stop])
            pos = stop
        if pos == end:
            pos = end = 0
        self._start, self._end = pos, end
        self.frames_done()

    def frame(self, nonce: bytes, ciphertext: memoryview) -> None:
        raise NotImplementedError

    def frames_done(self) -> None:
        """After the frames of one read: write what they caused, in one call."""

    def fail(self, exc: BaseException) -> None:
        """The connection broke or the peer misbehaved."""

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(exc or ConnectionError("connection closed"))


class FloorServer(NoiseFrames):
    """Answers echo requests (one Noise frame per response) or receives a bulk transfer."""

    def __init__(self) -> None:
        super().__init__()
        self._mode = b""
        self._out: list[bytes] = []
        self._streams: dict[int, bytes] = {}  # open stream id -> its message
        self._bulk_remaining = 0
        self._scratch = bytearray(MAX_PLAINTEXT_BYTES)

    def frames_ready(self) -> None:
        if not self._mode:
            if self._end - self._start < PREAMBLE_BYTES:
                return
            preamble = bytes(self._view[self._start : self._start + PREAMBLE_BYTES])
            self._start += PREAMBLE_BYTES
            self._mode = preamble[:1]
            if self._mode not in (MODE_ECHO, MODE_BULK):
                raise FloorError(f"unknown mode {self._mode!r}")
            c2s, s2c = direction_keys(preamble[1 : 1 + SALT_BYTES])
            self.set_keys(s2c, c2s)
            self._bulk_remaining = _count.unpack_from(preamble, 1 + SALT_BYTES)[0]
            if self._bulk_remaining > MAX_BULK_BYTES:
                raise FloorError("bulk byte count too large")
            if self._mode == MODE_BULK:
                self.frame = self._bulk_frame  # type: ignore[method-assign]
        super().frames_ready()

    def frame(self, nonce: bytes, ciphertext: memoryview) -> None:
        assert self._open is not None
        streams = self._streams
        for flags, stream_id, body in parse_frames(self._open(nonce, ciphertext, None)):
            if flags == FLAG_SYN:
                if stream_id in streams or len(streams) >= MAX_OPEN_STREAMS:
                    raise FloorError(f"stream {stream_id} reused or too many streams")
                streams[stream_id] = echoed_message(body)
            elif flags == FLAG_FIN and not body:
                message = streams.pop(stream_id, None)
                if message is None:
                    raise FloorError(f"FIN on unknown stream {stream_id}")
                self.answer(stream_id, message)
            else:
                raise FloorError(f"unexpected flags {flags:#x} on stream {stream_id}")

    def answer(self, stream_id: int, message: bytes) -> None:
        """Answer a request whose stream has ended (the FIN came)."""
        self._out.append(self.seal(response_plaintext(stream_id, message)))

    def _bulk_frame(self, nonce: bytes, ciphertext: memoryview) -> None:
        size = len(ciphertext) - TAG_BYTES
        if size < YAMUX_HEADER_BYTES:
            raise FloorError("bulk frame too short")
        self.decrypt_into(nonce, ciphertext)
        self._bulk_remaining -= size - YAMUX_HEADER_BYTES
        if self._bulk_remaining <= 0:
            assert self.transport is not None
            fin = YAMUX_HEADER.pack(0, TYPE_DATA, FLAG_ACK | FLAG_FIN, BULK_STREAM_ID, 0)
            self.transport.write(self.seal(fin))

    def decrypt_into(self, nonce: bytes, ciphertext: memoryview) -> None:
        with memoryview(self._scratch) as target:
            self._decrypt_into(nonce, ciphertext, None, target[: len(ciphertext) - TAG_BYTES])

    def set_keys(self, send_key: bytes, receive_key: bytes) -> None:
        super().set_keys(send_key, receive_key)
        self._decrypt_into = ChaCha20Poly1305(receive_key).decrypt_into

    def frames_done(self) -> None:
        if self._out:
            assert self.transport is not None
            self.transport.write(b"".join(self._out))
            self._out.clear()


class EchoClient(NoiseFrames):
    """Sends ``total`` echo requests with ``concurrency`` outstanding; ``done`` gets the
    latencies (seconds, by request index) when the last one ends."""

    def __init__(self, total: int, concurrency: int, message: bytes) -> None:
        super().__init__()
        self.done: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        self._total = total
        self._concurrency = concurrency
        self._message = message
        self._next = 0
        self._ended = 0
        self._started: dict[int, tuple[int, float]] = {}  # stream id -> (index, start time)
        self._latencies = [0.0] * total
        self._out: list[bytes] = []
        self._stream_id = -1
        self._salt = secrets.token_bytes(SALT_BYTES)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        c2s, s2c = direction_keys(self._salt)
        self.set_keys(c2s, s2c)
        self._out.append(MODE_ECHO + self._salt + _count.pack(0))
        self.start()
        self.frames_done()

    def start(self) -> None:
        """Send the first ``concurrency`` requests."""
        for _ in range(min(self._concurrency, self._total)):
            self._send_next()

    def _send_next(self) -> None:
        self._stream_id += 2
        sid = self._stream_id
        self._started[sid] = (self._next, time.perf_counter())
        self._next += 1
        self._out.append(self.seal(request_plaintext(sid, self._message)))

    def frame(self, nonce: bytes, ciphertext: memoryview) -> None:
        assert self._open is not None
        for flags, stream_id, body in parse_frames(self._open(nonce, ciphertext, None)):
            if flags == FLAG_ACK:
                if stream_id not in self._started or echoed_message(body) != self._message:
                    raise FloorError(f"bad echo on stream {stream_id}")
            elif flags == FLAG_FIN and not body:
                started = self._started.pop(stream_id, None)
                if started is None:
                    raise FloorError(f"FIN on unknown stream {stream_id}")
                self.ended(stream_id, started)
            else:
                raise FloorError(f"unexpected flags {flags:#x} on stream {stream_id}")

    def ended(self, stream_id: int, started: tuple[int, float]) -> None:
        """Request ``started`` (index, start time) got its whole answer."""
        index, t0 = started
        self._latencies[index] = time.perf_counter() - t0
        self._ended += 1
        if self._next < self._total:
            self._send_next()
        elif self._ended == self._total and not self.done.done():
            self.done.set_result(self._latencies)

    def frames_done(self) -> None:
        if self._out:
            assert self.transport is not None
            self.transport.write(b"".join(self._out))
            self._out.clear()

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(FloorError(f"echo connection failed: {exc}"))


# ---- the floor with a task per request (``--tasks``) ----------------------------------------


class TaskFloorServer(FloorServer):
    """The floor's server as a library with an ``async def`` handler per stream must run it,
    and no more: each answer is written by a task of its own, and what the tasks of one read
    wrote goes out in one write, in the loop turn after that read (the turn their first steps
    run in).  The difference from :class:`FloorServer` is what asyncio itself costs such a
    library: a ``Task`` per request and a loop turn."""

    def __init__(self) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._handlers: dict[int, asyncio.Task[None]] = {}
        self._woken = False

    def answer(self, stream_id: int, message: bytes) -> None:
        self._handlers[stream_id] = self._loop.create_task(self._handle(stream_id, message))
        self._woken = True

    async def _handle(self, stream_id: int, message: bytes) -> None:
        self._out.append(self.seal(response_plaintext(stream_id, message)))
        del self._handlers[stream_id]

    def frames_done(self) -> None:
        if self._woken:
            self._woken = False
            self._loop.call_soon(super().frames_done)  # after the handlers' steps


class TaskEchoClient(EchoClient):
    """The floor's client as a caller that awaits each answer must run it: ``concurrency``
    tasks, each writing a request and awaiting a future that the answer's FIN resolves."""

    def __init__(self, total: int, concurrency: int, message: bytes) -> None:
        super().__init__(total, concurrency, message)
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        count = min(self._concurrency, self._total)
        self._workers = [loop.create_task(self._worker(loop)) for _ in range(count)]

    async def _worker(self, loop: asyncio.AbstractEventLoop) -> None:
        transport = self.transport
        assert transport is not None
        while self._next < self._total:
            self._stream_id += 2
            sid = self._stream_id
            index = self._next
            self._next += 1
            t0 = time.perf_counter()
            self._started[sid] = (index, t0)
            waiter = self._waiters[sid] = loop.create_future()
            transport.write(self.seal(request_plaintext(sid, self._message)))
            await waiter
            self._latencies[index] = time.perf_counter() - t0
            self._ended += 1
        if self._ended == self._total and not self.done.done():
            self.done.set_result(self._latencies)

    def ended(self, stream_id: int, started: tuple[int, float]) -> None:
        self._waiters.pop(stream_id).set_result(None)

    def fail(self, exc: BaseException) -> None:
        super().fail(exc)
        for worker in self._workers:
            worker.cancel()


class BulkSender(NoiseFrames):
    """Writes pre-encrypted chunks with flow control; ``done`` resolves on the receiver's FIN."""

    def __init__(self, total: int) -> None:
        super().__init__()
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[float] = loop.create_future()
        self.connected: asyncio.Future[None] = loop.create_future()
        self._total = total
        self._salt = secrets.token_bytes(SALT_BYTES)
        c2s, s2c = direction_keys(self._salt)
        self.set_keys(c2s, s2c)
        self._chunks = self._encrypt_all()
        self._index = 0
        self._paused = False

    def _encrypt_all(self) -> list[bytes]:
        """Every frame of the transfer, sealed before the timer starts."""
        room = MAX_PLAINTEXT_BYTES - YAMUX_HEADER_BYTES
        zeros = bytes(room)
        frames: list[bytes] = []
        chunks = [MODE_BULK + self._salt + _count.pack(self._total)]
        remaining = self._total
        flags = FLAG_SYN
        while remaining > 0:
            size = min(room, remaining)
            header = YAMUX_HEADER.pack(0, TYPE_DATA, flags, BULK_STREAM_ID, size)
            frames.append(self.seal(header + zeros[:size]))
            flags = 0
            remaining -= size
            if len(frames) == BULK_CHUNK_FRAMES:
                chunks.append(b"".join(frames))
                frames.clear()
        if frames:
            chunks.append(b"".join(frames))
        return chunks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.connected.set_result(None)

    def start(self) -> None:
        self.started = time.perf_counter()
        self._pump()

    def _pump(self) -> None:
        assert self.transport is not None
        chunks = self._chunks
        while not self._paused and self._index < len(chunks):
            self.transport.write(chunks[self._index])
            self._index += 1

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._pump()

    def frame(self, nonce: bytes, ciphertext: memoryview) -> None:
        assert self._open is not None
        for flags, _, _ in parse_frames(self._open(nonce, ciphertext, None)):
            if flags & FLAG_FIN and not self.done.done():
                self.done.set_result(time.perf_counter() - self.started)

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(FloorError(f"bulk connection failed: {exc}"))


# ---- commands --------------------------------------------------------------------------------


class CommandError(Exception):
    pass


def quantile(ordered: list[float], q: float) -> float | None:
    """Linear-interpolation quantile, as in ``bench/aiop2p_peer.py``."""
    if not ordered:
        return None
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def to_int(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CommandError(f"{name} must be an integer in [{lo}, {hi}], got {json.dumps(value)}")
    return value


def host_port(addr: Any) -> tuple[str, int]:
    match = re.fullmatch(r"/ip4/([0-9.]+)/tcp/(\d+)(?:/p2p/\w+)?", str(addr))
    if match is None:
        raise CommandError(f"addr must be /ip4/<ip>/tcp/<port>, got {addr!r}")
    return match.group(1), int(match.group(2))


async def run_echo(addr: Any, total: int, concurrency: int, message: bytes) -> list[float]:
    loop = asyncio.get_running_loop()
    host, port = host_port(addr)
    transport, client = await loop.create_connection(
        lambda: echo_client(total, concurrency, message), host, port
    )
    try:
        return await client.done
    finally:
        transport.close()


async def bench_echo(cmd: dict[str, Any]) -> dict[str, Any]:
    count = to_int(cmd.get("count", 1000), "count", 1, MAX_COUNT)
    concurrency = to_int(cmd.get("concurrency", 1), "concurrency", 1, MAX_CONCURRENCY)
    size = to_int(cmd.get("size", 64), "size", 0, MAX_MESSAGE_BYTES)
    warmup = to_int(cmd.get("warmup", DEFAULT_ECHO_WARMUP_REQUESTS), "warmup", 0, MAX_COUNT)
    message = bytes(i & 0xFF for i in range(size))
    if warmup:
        await run_echo(cmd.get("addr"), warmup, concurrency, message)
    gc.collect()
    start = time.perf_counter()
    latencies = await run_echo(cmd.get("addr"), count, concurrency, message)
    total_s = time.perf_counter() - start
    latencies = sorted(x * 1000 for x in latencies)
    return {
        "p50_ms": quantile(latencies, 0.5),
        "p99_ms": quantile(latencies, 0.99),
        "req_per_s": count / total_s,
        "total_s": total_s,
        "warmup": warmup,
        "relayed": False,
    }


async def run_bulk(addr: Any, total: int) -> float:
    loop = asyncio.get_running_loop()
    host, port = host_port(addr)
    transport, sender = await loop.create_connection(lambda: BulkSender(total), host, port)
    try:
        await sender.connected
        sender.start()
        return await sender.done
    finally:
        transport.close()


async def perf(cmd: dict[str, Any]) -> dict[str, Any]:
    upload = to_int(cmd.get("upload", 0), "upload", 1, MAX_BULK_BYTES)
    if cmd.get("download", 0) != 0:
        raise CommandError("the floor measures bulk one way: upload only")
    warmup = to_int(
        cmd.get("warmup_bytes", DEFAULT_PERF_WARMUP_BYTES), "warmup_bytes", 0, MAX_BULK_BYTES
    )
    if warmup:
        await run_bulk(cmd.get("addr"), min(warmup, upload))
    gc.collect()
    seconds = await run_bulk(cmd.get("addr"), upload)
    return {
        "upload_seconds": seconds,
        "download_seconds": seconds,
        "total_seconds": seconds,
        "upload_bytes": upload,
        "download_bytes": 0,
        "warmup_bytes": warmup,
    }


async def rss(cmd: dict[str, Any]) -> dict[str, Any]:
    with open("/proc/self/statm", "rb") as f:  # noqa: ASYNC230 (procfs: never blocks)
        return {"rss": int(f.read().split()[1]) * _PAGE_SIZE_BYTES}


COMMANDS = {"bench_echo": bench_echo, "perf": perf, "rss": rss}


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def run_command(line: bytes, stop: asyncio.Event) -> None:
    try:
        cmd = json.loads(line)
    except ValueError:
        emit({"id": None, "ok": False, "error": "invalid JSON"})
        return
    if not isinstance(cmd, dict):
        emit({"id": None, "ok": False, "error": "a command is a JSON object"})
        return
    cid, name = cmd.get("id"), cmd.get("cmd")
    if name == "quit":
        emit({"id": cid, "ok": True})
        stop.set()
        return
    handler = COMMANDS.get(name) if isinstance(name, str) else None
    if handler is None:
        emit({"id": cid, "ok": False, "error": f"unknown command: {name}"})
        return
    try:
        result = await handler(cmd)
    except (CommandError, FloorError, OSError) as exc:
        emit({"id": cid, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
    else:
        emit({"id": cid, "ok": True, **result})


async def read_lines(reader: asyncio.StreamReader, stop: asyncio.Event) -> None:
    """Run each command line as a task until ``quit`` or EOF."""
    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            try:
                line = await reader.readline()
            except ValueError:
                emit({"id": None, "ok": False, "error": "command line too long"})
                continue
            if not line:
                break
            if line.strip():
                task = asyncio.create_task(run_command(line, stop))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()
        stop.set()


echo_client: type[EchoClient] = EchoClient
"""The echo client of this process: :class:`TaskEchoClient` with ``--tasks``."""


async def main(listen: str, tasks: bool) -> int:
    global echo_client
    loop = asyncio.get_running_loop()
    host, port = host_port(listen)
    if tasks:
        echo_client = TaskEchoClient
    server = await loop.create_server(TaskFloorServer if tasks else FloorServer, host, port)
    bound = server.sockets[0].getsockname()
    reader = asyncio.StreamReader(limit=MAX_COMMAND_LINE_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    loop_name = type(loop).__module__.partition(".")[0]
    emit(
        {
            "event": "ready",
            "peerId": "floor",
            "addrs": [f"/ip4/{bound[0]}/tcp/{bound[1]}"],
            "loop": loop_name,
        }
    )
    stop = asyncio.Event()
    lines = asyncio.create_task(read_lines(reader, stop))
    await stop.wait()
    lines.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await lines
    server.close()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0", metavar="MULTIADDR")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument(
        "--tasks",
        action="store_true",
        help="answer each echo request in a task of its own and await each answer in one "
        "(the floor of a task-per-stream library)",
    )
    args = parser.parse_args()
    factory = None
    if args.uvloop:
        import uvloop

        factory = uvloop.new_event_loop
    with (
        contextlib.suppress(BrokenPipeError, KeyboardInterrupt),
        asyncio.Runner(loop_factory=factory) as runner,
    ):
        sys.exit(runner.run(main(args.listen, args.tasks)))
