"""The connection driver as its users see it: ready, closed, and gone once closed."""

from __future__ import annotations

import gc
import weakref

from aiop2p.node import Node

from ..helpers import wait_for


async def test_wait_ready_returns_the_connection(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    assert await conn.wait_ready() is conn and conn.is_established
    await conn.close()
    assert conn.is_closed and conn.error is not None
    assert await conn.wait_ready() is conn  # still answers after the close


async def test_a_connection_closed_by_the_peer_is_freed_at_once(
    node_pair: tuple[Node, Node],
) -> None:
    # Freed by reference counting, not left for a full collection of the cycle collector
    # (which takes milliseconds in a busy process and lands at random).
    a, b = node_pair
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    await wait_for(lambda: b.is_connected(a.peer_id))
    ref = weakref.ref(b.connections_to(a.peer_id)[0])
    gc.disable()
    try:
        await conn.close()
        await wait_for(lambda: ref() is None)
    finally:
        gc.enable()


async def test_a_connection_we_close_is_freed_once_the_socket_is_gone(
    node_pair: tuple[Node, Node],
) -> None:
    a, b = node_pair
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    ref = weakref.ref(conn)
    gc.disable()
    try:
        await conn.close()
        await conn.wait_closed()
        del conn
        # Not held for the 5 s of the fallback that ends wait_closed() without a socket.
        await wait_for(lambda: ref() is None, cap=2.0)
    finally:
        gc.enable()
