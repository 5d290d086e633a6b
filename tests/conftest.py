"""Shared fixtures: leak checks for asyncio tests, and the event loops tests run on.

Every asyncio test runs on the default asyncio loop. The modules in ``UVLOOP_MODULES``
(a representative subset: the transport conformance suite over tcp, ws and memory, the
WebSocket transport, connections and nodes, ping, perf, relay, the Network's
request-response, the CLI's send and serve in-process, js-libp2p interop over tcp and ws)
and any test marked ``uvloop`` run on uvloop as well: pytest-asyncio parametrises them
with both loop factories, ids ``[asyncio]`` and ``[uvloop]``. uvloop is in the ``dev``
extra; where it cannot be installed (Windows), they run on the default loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import pytest
import pytest_asyncio

from aiop2p.node import Node

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the dev extra except on Windows
    uvloop = None  # type: ignore[assignment]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

DEFAULT_LOOP: dict[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
BOTH_LOOPS: dict[str, LoopFactory] = (
    DEFAULT_LOOP if uvloop is None else {**DEFAULT_LOOP, "uvloop": uvloop.new_event_loop}
)


UVLOOP_MODULES = frozenset(
    {
        "tests/aio/test_connection.py",
        "tests/aio/test_node.py",
        "tests/aio/test_staggered_dial.py",
        "tests/cli/test_relay.py",
        "tests/cli/test_send.py",
        "tests/cli/test_serve.py",
        "tests/interop/test_js_libp2p.py",
        "tests/interop/test_js_websocket.py",
        "tests/network/test_network_api.py",
        "tests/network/test_ping_pong_example.py",
        "tests/network/test_request_lifecycle.py",
        "tests/services/test_perf.py",
        "tests/services/test_ping.py",
        "tests/services/test_relay.py",
        "tests/transports/test_conformance.py",
        "tests/transports/test_memory.py",
        "tests/transports/test_websocket.py",
    }
)


def runs_on_uvloop(item: pytest.Item) -> bool:
    """Whether ``item`` runs on uvloop too: its module is listed, or it is marked."""
    module = item.path.relative_to(item.config.rootpath).as_posix()
    return module in UVLOOP_MODULES or item.get_closest_marker("uvloop") is not None


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    """The loops an asyncio test runs on (pytest-asyncio's hook): see the docstring above."""
    return BOTH_LOOPS if runs_on_uvloop(item) else DEFAULT_LOOP


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
