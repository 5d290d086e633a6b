"""Test helpers: waiting on predicates with a cap (never sleeping as synchronisation), a
capped subprocess run, a handler that never answers, and a recorder of what connections
write and read (flights of a dial)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from aiop2p._aio.connection import Connection
from aiop2p._aio.stream import Stream
from aiop2p.errors import P2PError


async def wait_for(predicate: Callable[[], bool], cap: float = 5.0) -> None:
    """Wait until ``predicate()`` is true, checking after each event-loop turn; cap at timeout."""
    async with asyncio.timeout(cap):
        while not predicate():  # noqa: ASYNC110 - polls a predicate; the cap bounds it
            await asyncio.sleep(0.001)


async def run_capped(
    argv: list[str],
    cap: float,
    *,
    env: dict[str, str] | None = None,
    stdin: int | None = asyncio.subprocess.DEVNULL,
) -> tuple[int, str, str]:
    """Run ``argv`` to its end within ``cap`` seconds (killed otherwise, then the timeout
    propagates); return its exit status, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        async with asyncio.timeout(cap):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def serve_silently(stream: Stream) -> None:
    """A handler that reads and never answers: only the stream's end stops the requester."""
    try:
        for _ in range(1000):  # bounded; the requester never closes its side
            if not await stream.read(1 << 20):
                return
    except P2PError:
        return


@dataclass
class Wire:
    """What each connection wrote (``w``) and read (``r``), in order, and whether it was
    established at that moment."""

    events: dict[int, list[tuple[str, bool, bytes]]] = field(default_factory=dict)

    def _before(self, conn: Connection) -> list[tuple[str, bool, bytes]]:
        return [e for e in self.events[id(conn)] if not e[1]]

    def round_trips_before_established(self, conn: Connection) -> int:
        """Times the connection waited for an answer to what it wrote: reads that follow
        a write (a flight split over several reads counts once)."""
        kinds = [kind for kind, _, _ in self._before(conn)]
        return sum(1 for pair in itertools.pairwise(kinds) if pair == ("w", "r"))

    def writes_before_established(self, conn: Connection) -> int:
        return sum(1 for kind, _, _ in self._before(conn) if kind == "w")

    def first_write_once_established(self, conn: Connection) -> bytes:
        return next(data for kind, ok, data in self.events[id(conn)] if kind == "w" and ok)


class _RecordedTransport:
    """Forwards to the transport; records writes (uvloop's transports take no new
    attributes, so ``write`` cannot be replaced on them)."""

    def __init__(self, transport: asyncio.BaseTransport, conn: Connection, wire: Wire) -> None:
        self._transport = transport
        self._conn = conn
        self._events = wire.events.setdefault(id(conn), [])

    def write(self, data: bytes) -> None:
        self._events.append(("w", self._conn.is_established, bytes(data)))
        self._transport.write(data)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)


def record_wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    """Record every connection's writes and reads (undone with ``monkeypatch``)."""
    recorded = Wire()
    made, received = Connection.connection_made, Connection.data_received

    def connection_made(self: Connection, transport: asyncio.BaseTransport) -> None:
        made(self, _RecordedTransport(transport, self, recorded))  # type: ignore[arg-type]

    def data_received(self: Connection, data: bytes | memoryview) -> None:
        # A copy: a large read is a view of the thread's read buffer, reused by the next.
        recorded.events.setdefault(id(self), []).append(("r", self.is_established, bytes(data)))
        received(self, data)

    monkeypatch.setattr(Connection, "connection_made", connection_made)
    monkeypatch.setattr(Connection, "data_received", data_received)
    return recorded


async def digest_to_eof(stream: Stream) -> None:
    """A handler that reads to the end and answers the byte count (8 bytes) and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    while chunk := await stream.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    await stream.write(size.to_bytes(8, "big") + digest.digest())
    await stream.close()
