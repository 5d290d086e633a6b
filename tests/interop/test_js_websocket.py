"""Interop with js-libp2p over WebSocket (``/ws``), both directions: ping, echo, identify, perf."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from aiop2p.cli.main import ECHO_PROTOCOL_ID
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node
from aiop2p.transports.tcp import TcpTransport
from aiop2p.transports.websocket import WebSocketTransport

from .peers import (
    PeerProcess,
    echo_node,
    eventually,
    js_command,
    our_addr,
    retry_command,
    start_peer,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

PERF_SIZE = 64 << 20
WS_LISTEN = "/ip4/127.0.0.1/tcp/0/ws"


@pytest_asyncio.fixture
async def js() -> AsyncIterator[PeerProcess]:
    async with start_peer(js_command("--listen", WS_LISTEN)) as peer:
        yield peer


@pytest_asyncio.fixture
async def node() -> AsyncIterator[Node]:
    async with echo_node(WS_LISTEN, [TcpTransport(), WebSocketTransport()]) as node:
        assert str(node.listen_addrs[0]).endswith("/ws")
        yield node


def js_ws_addr(js: PeerProcess) -> str:
    (addr,) = [a for a in js.addrs if "/ws/" in a]
    return addr


def only_ws_connection(node: Node) -> None:
    conns = node.connections
    assert len(conns) == 1
    assert conns[0].remote_addr is not None and "/ws" in str(conns[0].remote_addr)


async def test_aiop2p_pings_js_over_ws(node: Node, js: PeerProcess) -> None:
    assert len(await node.ping(js_ws_addr(js), count=5)) == 5
    only_ws_connection(node)


async def test_js_pings_aiop2p_over_ws(node: Node, js: PeerProcess) -> None:
    answer = await js.command("ping", addr=our_addr(node))
    assert answer["rtt_ms"] >= 0
    only_ws_connection(node)


async def test_echo_both_ways_over_ws(node: Node, js: PeerProcess) -> None:
    for payload in (b"", b"hello", bytes(range(256)) * 1000):
        stream = await node.new_stream(js_ws_addr(js), ECHO_PROTOCOL_ID)
        await stream.write_message(payload)
        assert await stream.read_message(1 << 20) == payload
        await stream.close()
    for payload in (b"x", b"hello js", bytes(range(256)) * 1000):
        assert await js.echo(our_addr(node), payload) == payload
    only_ws_connection(node)


async def test_identify_each_sees_the_others_ws_address(node: Node, js: PeerProcess) -> None:
    info = await node.identify_peer(js_ws_addr(js))
    assert str(Multiaddr(js_ws_addr(js)).without_peer_id()) in {str(a) for a in info.addrs}
    assert info.agent_version and "js" in info.agent_version
    theirs = await retry_command(js, "peer_info", peerId=str(node.peer_id))
    assert set(theirs["listenAddrs"]) == {str(a) for a in node.listen_addrs}
    assert all(a.endswith("/ws") for a in theirs["listenAddrs"])


async def test_js_dials_and_identifies_aiop2p_over_ws(node: Node, js: PeerProcess) -> None:
    theirs = await js.command("identify", addr=our_addr(node))
    assert theirs["peerId"] == str(node.peer_id)
    assert set(theirs["listenAddrs"]) == {str(a) for a in node.listen_addrs}
    only_ws_connection(node)
    info = await node.identify_peer(node.connections[0])
    assert str(Multiaddr(js_ws_addr(js)).without_peer_id()) in {str(a) for a in info.addrs}


async def test_aiop2p_perf_against_js_over_ws(node: Node, js: PeerProcess) -> None:
    result = await node.perf(js_ws_addr(js), upload=PERF_SIZE, download=PERF_SIZE)
    assert (result.upload_bytes, result.download_bytes) == (PERF_SIZE, PERF_SIZE)
    only_ws_connection(node)


async def test_js_perf_against_aiop2p_over_ws(node: Node, js: PeerProcess) -> None:
    answer = await js.command(
        "perf", addr=our_addr(node), upload=PERF_SIZE, download=PERF_SIZE, warmup_bytes=0
    )
    assert answer["upload_bytes"] == PERF_SIZE and answer["download_bytes"] == PERF_SIZE
    only_ws_connection(node)


async def test_connection_close_over_ws_is_seen_by_js(node: Node, js: PeerProcess) -> None:
    conn = await node.dial(js_ws_addr(js))
    assert (await js.command("connections"))["connections"] == 1
    await conn.close()

    async def js_has_none() -> bool:
        return bool((await js.command("connections"))["connections"] == 0)

    await eventually(js_has_none)
