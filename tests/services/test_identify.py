"""Identify between two nodes: both directions, the observed address, and pushes."""

from __future__ import annotations

from aiop2p._aio.stream import Stream
from aiop2p.node import Node

from ..helpers import wait_for

ECHO = "/test/echo/1.0.0"


async def echo_handler(stream: Stream) -> None:
    await stream.write(await stream.read())


async def test_identify_both_ways(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    b.set_stream_handler(ECHO, echo_handler)
    await a.listen("/ip4/127.0.0.1/tcp/0")
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    info = await a.identify_peer(conn)
    assert info.agent_version is not None and info.agent_version.startswith("aiop2p/")
    assert ECHO in info.protocols and "/ipfs/ping/1.0.0" in info.protocols
    assert info.addrs == b.listen_addrs
    await wait_for(lambda: b.is_connected(a.peer_id))
    back = await b.identify_peer(b.connections_to(a.peer_id)[0])
    assert back.addrs == a.listen_addrs
    assert info.observed_addr is not None


async def test_identify_push_announces_new_protocol(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    await a.identify_peer(conn)
    b.set_stream_handler("/late/1.0.0", echo_handler)
    await wait_for(lambda: "/late/1.0.0" in a.peer_store.info(b.peer_id).protocols)


async def test_identify_result_is_kept_per_connection(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    first = await a.identify_peer(conn)
    assert await a.identify_peer(conn) is first  # the exchange ran once, on connect
