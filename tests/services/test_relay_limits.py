"""A relay cutting a circuit at its data or duration limit: the requester's error names it.

Real nodes on loopback TCP: A listens through the aiop2p relay R, B dials A through R.
The error must be a :class:`RelayLimitReachedError` saying which limit (``limit_name``,
``limit_value``), on raw streams of a :class:`Node` and through
``Network.send_request`` (where it is also a ``RequestError`` of kind
``CONNECTION_CLOSED``), never a generic "connection closed".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from aiop2p._aio.stream import Stream
from aiop2p.errors import (
    OutboundFailure,
    P2PError,
    RelayLimitReachedError,
    RequestConnectionClosedError,
)
from aiop2p.multiaddr import Multiaddr
from aiop2p.network import InboundRequest, Network
from aiop2p.network.firewall import FirewallRules
from aiop2p.node import Node
from aiop2p.protocols.relay_v2 import Limit, is_js_libp2p_agent
from aiop2p.services.relay.client import RelayClient
from aiop2p.services.relay.server import RelayServer, RelayServerConfig

from ..helpers import serve_silently, wait_for

ECHO = "/test/echo/1.0.0"
DATA_LIMIT_BYTES = 64 * 1024
DURATION_LIMIT_SECONDS = 1
CAP = 10.0
"""Seconds any expected outcome may take (the duration limit is 1 s)."""


async def echo_handler(stream: Stream) -> None:
    while True:
        try:
            data = await stream.read_message(1 << 20)
        except P2PError:
            return
        await stream.write_message(data)


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def relay(stack: AsyncExitStack, config: RelayServerConfig) -> Multiaddr:
    r = await stack.enter_async_context(Node())
    await r.listen("/ip4/127.0.0.1/tcp/0")
    RelayServer(r, config=config).start()
    return r.listen_addrs[0].with_peer_id(r.peer_id)


async def relayed_nodes(stack: AsyncExitStack, config: RelayServerConfig) -> tuple[Node, Multiaddr]:
    """(B, A's circuit address): A listens through the relay and serves ECHO."""
    relay_addr = await relay(stack, config)
    a = await stack.enter_async_context(Node())
    b = await stack.enter_async_context(Node())
    a.set_stream_handler(ECHO, echo_handler)
    a.set_stream_handler("/test/silent/1.0.0", serve_silently)
    relay_id = relay_addr.peer_id
    assert relay_id is not None
    addr = await RelayClient(a).listen(relay_id, relay_addr)
    RelayClient(b)
    return b, addr


def assert_names(error: BaseException, name: str, value: float) -> None:
    assert isinstance(error, RelayLimitReachedError), repr(error)
    assert (error.limit_name, error.limit_value) == (name, value)
    assert name in str(error)


# -- raw Node streams ------------------------------------------------------------------


async def test_stream_write_beyond_the_data_limit(stack: AsyncExitStack) -> None:
    b, addr = await relayed_nodes(stack, RelayServerConfig(circuit_data_bytes=DATA_LIMIT_BYTES))
    conn = await b.dial(addr)
    stream = await conn.new_stream(ECHO)
    with pytest.raises(RelayLimitReachedError) as info:
        async with asyncio.timeout(CAP):
            await stream.write_message(b"x" * (2 * DATA_LIMIT_BYTES))
            await stream.read_message(1 << 20)
    assert_names(info.value, "data", DATA_LIMIT_BYTES)
    await asyncio.wait_for(conn.wait_closed(), CAP)
    assert_names(conn.error or P2PError(), "data", DATA_LIMIT_BYTES)


async def test_stream_waiting_for_an_answer_at_the_duration_limit(stack: AsyncExitStack) -> None:
    b, addr = await relayed_nodes(
        stack, RelayServerConfig(circuit_duration_seconds=DURATION_LIMIT_SECONDS)
    )
    conn = await b.dial(addr)
    stream = await conn.new_stream("/test/silent/1.0.0")
    await stream.write(b"question")
    with pytest.raises(RelayLimitReachedError) as info:
        async with asyncio.timeout(CAP):
            await stream.read(100)
    assert_names(info.value, "duration", DURATION_LIMIT_SECONDS)


# -- Network.send_request --------------------------------------------------------------


async def networks(
    stack: AsyncExitStack, config: RelayServerConfig
) -> tuple[Network[Any, Any], Network[Any, Any]]:
    """(requester B, responder A); A listens through the relay only."""
    relay_addr = await relay(stack, config)
    nets = []
    for _ in range(2):
        net: Network[Any, Any] = Network(
            firewall=FirewallRules.allow_all(), mdns=None, dcutr=None, request_timeout=CAP * 2
        )
        nets.append(await stack.enter_async_context(net))
    b, a = nets
    addr = await a.start_listening(f"{relay_addr}/p2p-circuit")
    b.add_address(a.peer_id, addr)
    return b, a


async def test_send_request_beyond_the_data_limit(stack: AsyncExitStack) -> None:
    b, a = await networks(stack, RelayServerConfig(circuit_data_bytes=DATA_LIMIT_BYTES))
    with pytest.raises(RelayLimitReachedError) as info:
        async with asyncio.timeout(CAP):
            await b.send_request(a.peer_id, "x" * (2 * DATA_LIMIT_BYTES))
    assert_names(info.value, "data", DATA_LIMIT_BYTES)
    # Still the request-error contract: a connection-closed RequestError.
    assert isinstance(info.value, RequestConnectionClosedError)
    assert info.value.kind is OutboundFailure.CONNECTION_CLOSED


async def test_send_request_unanswered_at_the_duration_limit(stack: AsyncExitStack) -> None:
    b, a = await networks(stack, RelayServerConfig(circuit_duration_seconds=DURATION_LIMIT_SECONDS))
    held: list[InboundRequest[Any, Any]] = []

    async def hold() -> None:  # keep the request unanswered (and referenced)
        held.append(await a.requests().receive())

    task = asyncio.create_task(hold())
    try:
        with pytest.raises(RelayLimitReachedError) as info:
            async with asyncio.timeout(CAP):
                await b.send_request(a.peer_id, "question")
        assert held, "the request reached the responder before the cut"
    finally:
        task.cancel()
    assert_names(info.value, "duration", DURATION_LIMIT_SECONDS)
    assert isinstance(info.value, RequestConnectionClosedError)


async def test_a_reset_before_any_limit_is_not_called_a_limit(stack: AsyncExitStack) -> None:
    """Control: the relay shutting down early is a plain connection-closed error."""
    r = await stack.enter_async_context(Node())
    await r.listen("/ip4/127.0.0.1/tcp/0")
    server = RelayServer(r, config=RelayServerConfig(circuit_duration_seconds=60))
    server.start()
    relay_addr = r.listen_addrs[0].with_peer_id(r.peer_id)
    a = await stack.enter_async_context(Node())
    b = await stack.enter_async_context(Node())
    a.set_stream_handler("/test/silent/1.0.0", serve_silently)
    assert relay_addr.peer_id is not None
    addr = await RelayClient(a).listen(relay_addr.peer_id, relay_addr)
    RelayClient(b)
    conn = await b.dial(addr)
    stream = await conn.new_stream("/test/silent/1.0.0")
    await stream.write(b"question")
    await wait_for(lambda: server.circuit_count == 1)
    await server.close()
    with pytest.raises(P2PError) as info:
        async with asyncio.timeout(CAP):
            await stream.read(100)
    assert not isinstance(info.value, RelayLimitReachedError)


def test_js_relays_duration_is_read_in_milliseconds() -> None:
    """js-libp2p writes ``Limit.duration`` in ms; its identify agent says which relay is js."""
    js_agent = "libp2p/3.3.11 node/20.20.2"
    assert is_js_libp2p_agent(js_agent) and is_js_libp2p_agent("js-libp2p/0.46.0 UserAgent=v18")
    for other in (None, "", "aiop2p/0.1.0", "rust-libp2p/0.54", "libp2p/1.0", "github.com/go"):
        assert not is_js_libp2p_agent(other), other
    assert Limit(duration=1500).duration_seconds_from(js_agent) == 1.5
    assert Limit(duration=1500).duration_seconds_from("aiop2p/0.1.0") == 1500
    assert Limit(duration=120_000).duration_seconds_from(None) == 120  # above a day: ms anyway
    assert Limit(duration=0).duration_seconds_from(js_agent) is None
