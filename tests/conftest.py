"""Shared fixtures: leak checks for asyncio tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio

from aiop2p.node import Node


@pytest_asyncio.fixture
async def node_pair() -> AsyncIterator[tuple[Node, Node]]:
    """Two started nodes; the second listens on loopback TCP."""
    async with Node() as a, Node() as b:
        await b.listen("/ip4/127.0.0.1/tcp/0")
        yield a, b
    # Closing must leave no task behind.
    current = asyncio.current_task()
    leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not leftover, f"tasks left behind: {leftover}"
