"""Fixtures the namespace labs share: the NAT lab, and a stack that stops processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack

import pytest

from .nat_topology import NatLab, build_nat_lab


@pytest.fixture(scope="module")
def lab() -> Iterator[NatLab]:
    """The NAT lab (``nat_topology``), built once per test module and removed after it."""
    made = build_nat_lab()
    try:
        yield made
    finally:
        made.destroy()


@pytest.fixture
async def peers() -> AsyncIterator[AsyncExitStack]:
    """Processes pushed here are stopped at the end of the test, failures included."""
    async with AsyncExitStack() as stack:
        yield stack
