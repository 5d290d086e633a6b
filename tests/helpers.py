"""Test helpers: waiting on predicates with a cap (never sleeping as synchronisation)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_for(predicate: Callable[[], bool], cap: float = 5.0) -> None:
    """Wait until ``predicate()`` is true, checking after each event-loop turn; cap at timeout."""
    async with asyncio.timeout(cap):
        while not predicate():  # noqa: ASYNC110 - polls a predicate; the cap bounds it
            await asyncio.sleep(0.001)
