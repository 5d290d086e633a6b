"""Issue 10, deliverable 4: the inbound request path has no task of its own.

The request is parsed as the connection dispatches its bytes, decided, delivered and
answered where it arrives: an application that answers before it next waits answers in
the same flush (one Noise frame) as the Yamux ACK.  These tests pin that down and probe
the parser with requests split, padded and malformed by a raw peer, and the ``BLOCK``
channel's wait, which is the one place a request still waits in a task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from aiop2p.errors import RequestTimeoutError, StreamResetError
from aiop2p.events import InboundFailure, InboundRequestFailed
from aiop2p.network import ChannelConfig, Network
from aiop2p.network.event_channel import ChannelSinkConfig
from aiop2p.network.firewall import FirewallRules
from aiop2p.node import Node

from ..helpers import wait_for
from .conftest import (
    CAP,
    CONNECTION_NOISE,
    background,
    link,
    networks,
    next_event,
    next_request,
    outcome,
)

ALLOW: dict[str, Any] = {
    "firewall": FirewallRules.allow_all(),
    "dcutr": None,
    "relay_client": False,
}
CLIENT: dict[str, Any] = {"dcutr": None, "relay_client": False}


async def answer_nowait(net: Network[Any, Any]) -> None:
    async for request in net.requests():
        request.respond_nowait(request.request)


async def test_a_prompt_answer_leaves_in_one_write_with_the_ack() -> None:
    """Yamux ACK, multistream echo, response and FIN: one socket write per request."""
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        async with background(answer_nowait(server)):
            assert await client.send_request(server.peer_id, "warm-up") == "warm-up"
            conn = server._node.connections_to(client.peer_id)[0]
            client_conn = client._node.connections_to(server.peer_id)[0]
            # Identify, both ways, is over: nothing else writes on this connection.
            assert server._node.identify is not None and client._node.identify is not None
            await server._node.identify.identify(conn)
            await client._node.identify.identify(client_conn)
            await wait_for(lambda: not conn.streams and not client_conn.streams, CAP)
            transport = conn._transport
            assert transport is not None
            writes: list[bytes] = []
            real_write = transport.write

            def counting_write(data: Any) -> None:
                writes.append(bytes(data))
                real_write(data)

            transport.write = counting_write  # type: ignore[method-assign]
            try:
                for i in range(5):
                    writes.clear()
                    assert await client.send_request(server.peer_id, i) == i
                    assert len(writes) == 1, f"request {i}: {len(writes)} writes"
            finally:
                transport.write = real_write  # type: ignore[method-assign]


async def raw_stream(server: Network[Any, Any], raw: Node) -> Any:
    addr = (await server.start_listening("/ip4/127.0.0.1/tcp/0")).with_peer_id(server.peer_id)
    conn = await raw.dial(addr)
    return await conn.new_stream(["/p2p/1.0.0"])


async def test_request_split_into_single_bytes_is_served() -> None:
    body = b'"' + b"x" * 200 + b'"'  # a two-byte length prefix
    framed = bytes([len(body) & 0x7F | 0x80, len(body) >> 7]) + body
    async with networks(ALLOW) as (server,), Node() as raw, background(answer_nowait(server)):
        stream = await raw_stream(server, raw)
        for i in range(len(framed)):
            await stream.write(framed[i : i + 1])
        length = await stream.readexactly(2)
        assert length == framed[:2]
        assert await stream.readexactly(len(body)) == body
        assert await stream.read() == b""  # FIN after the response


async def test_bytes_after_the_request_are_ignored() -> None:
    async with networks(ALLOW) as (server,), Node() as raw, background(answer_nowait(server)):
        stream = await raw_stream(server, raw)
        await stream.write(b'\x03"a"\x03"b"trailing')
        assert await stream.read_message(100) == b'"a"'
        assert await stream.read() == b""


@pytest.mark.parametrize(
    ("sent", "why"),
    [
        (b"\x80" * 10, "a length prefix longer than 9 bytes"),
        (b"\xff\xff\xff\x7f", "a length over max_request_bytes"),
        (b'\x10"abc', "EOF inside the body"),
        (b"\x03\xff\xfe\xfd", "a body that is not JSON"),
    ],
)
async def test_malformed_request_is_invalid_and_reset(sent: bytes, why: str) -> None:
    async with networks(ALLOW) as (server,), Node() as raw:
        stream = await raw_stream(server, raw)
        await stream.write(sent)
        await stream.close()
        event = await next_event(server, InboundRequestFailed, skip=CONNECTION_NOISE)
        assert event.failure is InboundFailure.INVALID_REQUEST, why
        with pytest.raises(StreamResetError):
            async with asyncio.timeout(CAP):
                await stream.read()


def in_flight(net: Network[Any, Any], count: int) -> Callable[[], bool]:
    return lambda: net._exchange._inflight_total == count


async def test_full_block_channel_delivers_in_order_when_read() -> None:
    """``BLOCK`` with capacity 0 holds one request; the others wait (in a task each) and
    are delivered in arrival order once the application reads."""
    blocking = {**ALLOW, "requests_channel": ChannelConfig(0, ChannelSinkConfig.BLOCK)}
    async with networks(blocking, CLIENT) as (server, client):
        await link(client, server)
        await client.connect_peer(server.peer_id)
        sends = []
        for i in range(4):
            sends.append(asyncio.ensure_future(outcome(client.send_request(server.peer_id, i))))
            await wait_for(in_flight(server, i + 1), CAP)
        assert len(server.requests()) == 1
        for i in range(4):
            request = await next_request(server)
            assert request.request == i
            await request.respond(i * 10)
        assert [await s for s in sends] == [0, 10, 20, 30]


async def test_request_blocked_in_a_full_channel_times_out() -> None:
    blocking = {
        **ALLOW,
        "requests_channel": ChannelConfig(0, ChannelSinkConfig.BLOCK),
        "request_timeout": 0.5,
    }
    async with networks(blocking, {**CLIENT, "request_timeout": 1.0}) as (server, client):
        await link(client, server)
        first = asyncio.ensure_future(outcome(client.send_request(server.peer_id, "held")))
        await wait_for(lambda: len(server.requests()) == 1, CAP)
        second = asyncio.ensure_future(outcome(client.send_request(server.peer_id, "waits")))
        failures = []
        for _ in range(2):
            event = await next_event(server, InboundRequestFailed, skip=CONNECTION_NOISE)
            failures.append(event.failure)
        assert failures == [InboundFailure.RESPONSE_TIMEOUT] * 2
        # The requester meets its own deadline: a timeout, not "omitted".
        assert isinstance(await first, RequestTimeoutError)
        assert isinstance(await second, RequestTimeoutError)
        held = await next_request(server)  # the one that was queued; it has ended
        assert held.request == "held" and held.answered
        assert len(server.requests()) == 0  # the waiting one was never delivered
