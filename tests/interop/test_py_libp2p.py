"""Interop with a real py-libp2p 0.8.1 peer (PyPI, its own virtualenv), both directions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from aiop2p.cli.main import ECHO_PROTOCOL_ID
from aiop2p.node import Node

from .peers import PeerProcess, echo_node, our_addr, py_command, start_peer

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


@pytest_asyncio.fixture
async def pypeer() -> AsyncIterator[PeerProcess]:
    async with start_peer(py_command()) as peer:
        yield peer


@pytest_asyncio.fixture
async def node() -> AsyncIterator[Node]:
    async with echo_node() as node:
        yield node


async def test_aiop2p_pings_py(node: Node, pypeer: PeerProcess) -> None:
    assert len(await node.ping(pypeer.addr, count=3)) == 3


async def test_py_pings_aiop2p(node: Node, pypeer: PeerProcess) -> None:
    assert (await pypeer.command("ping", addr=our_addr(node)))["rtt_ms"] >= 0


async def test_aiop2p_echo_to_py(node: Node, pypeer: PeerProcess) -> None:
    for payload in (b"hello py", bytes(range(256)) * 400):
        stream = await node.new_stream(pypeer.addr, ECHO_PROTOCOL_ID)
        await stream.write_message(payload)
        assert await stream.read_message(1 << 20) == payload
        await stream.close()


async def test_py_echo_to_aiop2p(node: Node, pypeer: PeerProcess) -> None:
    for payload in (b"hello aiop2p", bytes(range(256)) * 400):
        assert await pypeer.echo(our_addr(node), payload) == payload


async def test_py_identify_sees_our_protocols(node: Node, pypeer: PeerProcess) -> None:
    theirs = await pypeer.command("identify", addr=our_addr(node))
    assert theirs["peerId"] == str(node.peer_id)
    assert ECHO_PROTOCOL_ID in theirs["protocols"]
    info = await node.identify_peer(pypeer.addr)
    assert "/ipfs/ping/1.0.0" in info.protocols


async def test_py_lists_no_muxer_in_noise_so_yamux_is_negotiated_by_multistream(
    node: Node, pypeer: PeerProcess
) -> None:
    """We list /yamux/1.0.0 in our Noise payload; py-libp2p 0.8.1 lists nothing, so both
    directions fall back to the multistream round for the muxer, and work."""
    assert await pypeer.echo(our_addr(node), b"fallback") == b"fallback"
    (inbound,) = node.connections
    assert not inbound.muxer_negotiated_early
    conn = await node.dial(pypeer.addr, force=True)
    assert conn is not inbound and not conn.muxer_negotiated_early
    assert len(await node.ping(conn)) == 1
