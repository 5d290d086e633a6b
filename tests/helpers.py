"""Test helpers: waiting on predicates with a cap (never sleeping as synchronisation)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` is true, checking after each event-loop turn; cap at timeout."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)  # yields to the loop; the cap bounds the wait
