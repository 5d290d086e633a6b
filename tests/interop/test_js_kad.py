"""Kademlia interop with js-libp2p ``@libp2p/kad-dht`` (pinned in js/package-lock.json):
aiop2p finds a peer through a js DHT server, and js finds peers through an aiop2p one."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Literal

import pytest

from aiop2p.config import KadConfig, NodeConfig
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node
from aiop2p.protocols.kad import KAD_PROTOCOL_ID

from ..helpers import wait_for
from .peers import JS_PEER, PeerProcess, eventually, start_peer

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

JS_KAD_PEER = JS_PEER.parent / "kad_peer.mjs"
PRIVATE_PROTOCOL = "/aiop2p-test/kad/1.0.0"


def js_kad_command(protocol: str) -> list[str]:
    node = shutil.which("node")
    assert node is not None, "node is required for the js-libp2p interop tests"
    return [node, str(JS_KAD_PEER), "--protocol", protocol]


@asynccontextmanager
async def kad_node(
    mode: Literal["client", "server"], protocol: str, bootstrap: tuple[Multiaddr, ...] = ()
) -> AsyncIterator[Node]:
    config = KadConfig(
        mode=mode, protocol_id=protocol, bootstrap=bootstrap, query_timeout=10, lookup_timeout=30
    )
    async with AsyncExitStack() as stack:
        node = await stack.enter_async_context(Node(config=NodeConfig(kad=config)))
        await node.listen("/ip4/127.0.0.1/tcp/0")
        yield node


async def in_js_table(js: PeerProcess, node: Node) -> bool:
    return bool((await js.command("in_table", peerId=str(node.peer_id)))["present"])


@pytest.mark.parametrize("protocol", [KAD_PROTOCOL_ID, PRIVATE_PROTOCOL])
async def test_aiop2p_finds_a_peer_through_a_js_dht_server(protocol: str) -> None:
    async with start_peer(js_kad_command(protocol)) as js:
        seed = (Multiaddr(js.addr),)
        async with kad_node("client", protocol, seed) as asker:
            assert asker.kad is not None
            table = asker.kad.table
            js_id = seed[0].peer_id
            await wait_for(lambda: js_id in table, cap=30)
            async with kad_node("server", protocol, seed) as target:
                # js puts a peer in its table once identify lists the protocol and it
                # answers a ping.
                await eventually(lambda: in_js_table(js, target), cap=30)
                assert not asker.is_connected(target.peer_id)
                addrs = await asker.kad.find_peer(target.peer_id)
                assert set(target.listen_addrs) <= set(addrs)
                assert await asker.ping(target.peer_id)
                assert not await in_js_table(js, asker)  # a client never enters a table


@pytest.mark.parametrize("target_mode", ["server", "client"])
async def test_js_finds_a_peer_through_an_aiop2p_dht_server(
    target_mode: Literal["client", "server"],
) -> None:
    async with kad_node("server", KAD_PROTOCOL_ID) as server:
        seed = (server.listen_addrs[0].with_peer_id(server.peer_id),)
        async with (
            kad_node(target_mode, KAD_PROTOCOL_ID, seed) as target,
            start_peer(js_kad_command(KAD_PROTOCOL_ID)) as js,
        ):
            assert server.kad is not None
            await js.command("dial", addr=str(seed[0]))
            await eventually(lambda: in_js_table(js, server), cap=30)
            # The js node and the server enter each other's tables.
            js_id = Multiaddr(js.addr).peer_id
            table = server.kad.table
            await wait_for(lambda: js_id in table, cap=30)
            if target_mode == "server":
                assert target.peer_id in server.kad.table
            found = await js.command("find_peer", peerId=str(target.peer_id))
            assert found["peerId"] == str(target.peer_id)
            assert {str(a) for a in target.listen_addrs} <= set(found["addrs"])
            assert (await js.command("ping", peerId=str(target.peer_id)))["rtt_ms"] >= 0
