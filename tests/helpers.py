"""Test helpers: waiting on predicates with a cap (never sleeping as synchronisation), a
capped subprocess run, and a handler that never answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

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
