"""Perf service (``/perf/1.0.0``): measure upload and download throughput to a peer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._aio.connection import Connection
from .._aio.stream import Stream
from ..errors import RemoteProtocolError, StreamTimeoutError
from ..protocols.perf import PERF_PROTOCOL_ID, decode_perf_header, encode_perf_header

if TYPE_CHECKING:
    from .host import Host

__all__ = ["PerfProgress", "PerfResult", "perf", "serve_perf"]

PerfProgress = Callable[[int, int], None]
"""Told the bytes uploaded and downloaded so far, after each chunk of a :func:`perf` run."""

_CHUNK = 256 * 1024
_ZEROS = bytes(_CHUNK)
MAX_PERF_DOWNLOAD_SIZE = 1 << 40


@dataclass(frozen=True, slots=True)
class PerfResult:
    upload_bytes: int
    download_bytes: int
    upload_seconds: float
    download_seconds: float

    @property
    def upload_mib_s(self) -> float:
        return self.upload_bytes / (1 << 20) / self.upload_seconds if self.upload_seconds else 0.0

    @property
    def download_mib_s(self) -> float:
        if not self.download_seconds:
            return 0.0
        return self.download_bytes / (1 << 20) / self.download_seconds


async def _send_zeros(stream: Stream, size: int, progress: PerfProgress | None = None) -> None:
    view = memoryview(_ZEROS)
    sent = 0
    while sent < size:
        n = min(size - sent, _CHUNK)
        await stream.write(view[:n])
        sent += n
        if progress is not None:
            progress(sent, 0)


async def serve_perf(stream: Stream, idle_timeout: float = 60.0) -> None:
    """Count the upload to EOF, then send the requested number of bytes.

    Each step (a header, an upload chunk, a download chunk taken by the peer) must happen
    within ``idle_timeout`` seconds, else the stream is reset: a stalled peer cannot pin
    the handler.
    """
    try:
        async with asyncio.timeout(idle_timeout):
            wanted = decode_perf_header(await stream.readexactly(8))
        if wanted > MAX_PERF_DOWNLOAD_SIZE:
            raise RemoteProtocolError(f"perf: {wanted} bytes requested, above the limit")
        while True:
            async with asyncio.timeout(idle_timeout):
                if not await stream.read(1 << 20):
                    break
        view = memoryview(_ZEROS)
        while wanted > 0:
            n = min(wanted, _CHUNK)
            async with asyncio.timeout(idle_timeout):
                await stream.write(view[:n])
            wanted -= n
    except TimeoutError as exc:
        raise StreamTimeoutError(f"perf: no progress for {idle_timeout} s") from exc
    await stream.close()


async def perf(
    node: Host,
    conn: Connection,
    upload: int,
    download: int,
    progress: PerfProgress | None = None,
) -> PerfResult:
    """Upload ``upload`` bytes, then download ``download`` bytes, on one stream.

    Upload time runs from the first byte until the server starts answering (it only
    answers after reading our EOF); download time from there to the server's EOF.
    ``progress``, if given, is told the bytes moved so far after each chunk.
    """
    stream = await node.new_stream(conn, PERF_PROTOCOL_ID)
    started = time.perf_counter()
    await stream.write(encode_perf_header(download))
    await _send_zeros(stream, upload, progress)
    await stream.close()
    received = 0
    first = await stream.read(1 << 20)
    upload_done = time.perf_counter()
    received += len(first)
    if first:
        if progress is not None:
            progress(upload, received)
        while chunk := await stream.read(1 << 20):
            received += len(chunk)
            if progress is not None:
                progress(upload, received)
    finished = time.perf_counter()
    if received != download:
        raise RemoteProtocolError(f"perf: expected {download} bytes, received {received}")
    if download == 0:
        upload_done = finished
    return PerfResult(upload, download, upload_done - started, finished - upload_done)
