"""Interop with a real js-libp2p peer (npm, pinned in js/package-lock.json), both directions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from aiop2p._aio.connection import MAX_STREAMS_BEFORE_ANSWER
from aiop2p.cli.main import ECHO_PROTOCOL_ID
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node

from ..helpers import record_wire
from .peers import PeerProcess, echo_node, js_command, our_addr, retry_command, start_peer

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

PERF_SIZE = 64 << 20


@pytest_asyncio.fixture
async def js() -> AsyncIterator[PeerProcess]:
    async with start_peer(js_command()) as peer:
        yield peer


@pytest_asyncio.fixture
async def node() -> AsyncIterator[Node]:
    async with echo_node() as node:
        yield node


async def test_aiop2p_pings_js(node: Node, js: PeerProcess) -> None:
    rtts = await node.ping(js.addr, count=5)
    assert len(rtts) == 5


async def test_js_pings_aiop2p(node: Node, js: PeerProcess) -> None:
    answer = await js.command("ping", addr=our_addr(node))
    assert answer["rtt_ms"] >= 0


async def test_aiop2p_identifies_js_and_js_identifies_aiop2p(node: Node, js: PeerProcess) -> None:
    info = await node.identify_peer(js.addr)
    assert str(Multiaddr(js.addr).without_peer_id()) in {str(a) for a in info.addrs}
    assert {"/ipfs/ping/1.0.0", "/ipfs/id/1.0.0", ECHO_PROTOCOL_ID} <= set(info.protocols)
    assert info.agent_version and "js" in info.agent_version
    theirs = await retry_command(js, "peer_info", peerId=str(node.peer_id))
    assert set(theirs["listenAddrs"]) == {str(a) for a in node.listen_addrs}
    assert {"/ipfs/ping/1.0.0", "/ipfs/id/1.0.0", "/perf/1.0.0", ECHO_PROTOCOL_ID} <= set(
        theirs["protocols"]
    )
    assert theirs["agentVersion"].startswith("aiop2p/")


async def test_signed_peer_records_verify_both_ways(node: Node, js: PeerProcess) -> None:
    """js verifies the record we send in identify (it stores our addresses as certified),
    and we verify js's (its addresses are certified in our peer store)."""
    info = await node.identify_peer(js.addr)
    assert info.peer_record is not None and info.peer_record_seq
    assert str(Multiaddr(js.addr).without_peer_id()) in {str(a) for a in info.certified_addrs}
    assert info.addrs == info.certified_addrs
    assert node.identify is not None and node.identify.ignored_peer_records == 0
    theirs = await retry_command(js, "peer_info", peerId=str(node.peer_id))
    assert theirs["hasPeerRecord"], theirs
    assert set(theirs["certifiedAddrs"]) == {str(a) for a in node.listen_addrs}, theirs


async def test_js_dials_and_identifies_aiop2p(node: Node, js: PeerProcess) -> None:
    theirs = await js.command("identify", addr=our_addr(node))
    assert theirs["peerId"] == str(node.peer_id)
    assert set(theirs["listenAddrs"]) == {str(a) for a in node.listen_addrs}
    assert ECHO_PROTOCOL_ID in theirs["protocols"]
    # And we learned js's listen addresses over the connection it opened.
    conns = node.connections
    assert len(conns) == 1
    info = await node.identify_peer(conns[0])
    assert str(Multiaddr(js.addr).without_peer_id()) in {str(a) for a in info.addrs}


async def test_aiop2p_echo_request_to_js(node: Node, js: PeerProcess) -> None:
    for payload in (b"", b"hello", bytes(range(256)) * 1000):
        stream = await node.new_stream(js.addr, ECHO_PROTOCOL_ID)
        await stream.write_message(payload)
        assert await stream.read_message(1 << 20) == payload
        await stream.close()


async def test_js_echo_request_to_aiop2p(node: Node, js: PeerProcess) -> None:
    for payload in (b"x", b"hello js", bytes(range(256)) * 1000):
        assert await js.echo(our_addr(node), payload) == payload


async def test_concurrent_echo_both_ways(node: Node, js: PeerProcess) -> None:
    async def ours(i: int) -> bytes:
        stream = await node.new_stream(js.addr, ECHO_PROTOCOL_ID)
        await stream.write_message(b"%d" % i)
        return await stream.read_message(100)

    theirs = [js.echo(our_addr(node), b"js%d" % i) for i in range(32)]
    results = await asyncio.gather(*(ours(i) for i in range(32)), *theirs)
    assert results[:32] == [b"%d" % i for i in range(32)]
    assert results[32:] == [b"js%d" % i for i in range(32)]


async def test_aiop2p_perf_against_js(node: Node, js: PeerProcess) -> None:
    result = await node.perf(js.addr, upload=PERF_SIZE, download=PERF_SIZE)
    assert (result.upload_bytes, result.download_bytes) == (PERF_SIZE, PERF_SIZE)


async def test_js_perf_against_aiop2p(node: Node, js: PeerProcess) -> None:
    answer = await js.command(
        "perf", addr=our_addr(node), upload=PERF_SIZE, download=PERF_SIZE, warmup_bytes=0
    )
    assert answer["upload_bytes"] == PERF_SIZE and answer["download_bytes"] == PERF_SIZE


async def test_js_refused_for_unknown_protocol_keeps_connection(
    node: Node, js: PeerProcess
) -> None:
    stream = await node.new_stream(js.addr, "/nope/1.0.0")
    await stream.write(b"x")
    with pytest.raises(Exception):  # noqa: B017 - ProtocolNotSupportedError, checked below
        await stream.read()
    assert len(await node.ping(js.addr)) == 1


async def test_small_write_then_close_reaches_js(node: Node, js: PeerProcess) -> None:
    """Proposal, payload and FIN sent back to back must not lose the payload."""
    for upload in (0, 1, 100):
        result = await node.perf(js.addr, upload=upload, download=10)
        assert (result.upload_bytes, result.download_bytes) == (upload, 10)


# -- early muxer negotiation (@libp2p/noise 17 lists /yamux/1.0.0 in its handshake payload) --


async def test_aiop2p_dials_js_with_the_muxer_agreed_in_the_noise_handshake(
    monkeypatch: pytest.MonkeyPatch, node: Node, js: PeerProcess
) -> None:
    wire = record_wire(monkeypatch)
    conn = await node.dial(js.addr)
    assert conn.muxer_negotiated_early
    # One round trip: we wrote flight 1 and were done once js's answer (its /noise echo
    # and message 2) had come; the multistream round for the muxer was a second one.
    assert wire.writes_before_established(conn) == 1
    assert wire.round_trips_before_established(conn) == 1
    assert len(await node.ping(conn)) == 1
    info = await node.identify_peer(conn)  # js saw our Yamux frames right behind message 3
    assert "/ipfs/id/1.0.0" in info.protocols


async def test_js_dials_aiop2p_with_the_muxer_agreed_in_the_noise_handshake(
    node: Node, js: PeerProcess
) -> None:
    assert await js.echo(our_addr(node), b"early") == b"early"
    (conn,) = node.connections
    # js listed /yamux/1.0.0 in message 3, so we took the bytes behind it as Yamux and sent
    # no muxer echo: had js sent a multistream proposal there, our session would have
    # failed on it; had it waited for an echo, the echo request would have timed out.
    assert conn.muxer_negotiated_early


async def test_a_burst_of_streams_right_after_an_early_dial_is_not_aborted_by_js(
    node: Node, js: PeerProcess
) -> None:
    """js aborts a connection on which more than 10 streams arrive before it is set up;
    our dialer holds streams beyond MAX_STREAMS_BEFORE_ANSWER until js's first bytes."""
    conn = await node.dial(js.addr)
    assert conn.muxer_negotiated_early
    count = 3 * MAX_STREAMS_BEFORE_ANSWER
    streams = [conn.open_stream([ECHO_PROTOCOL_ID]) for _ in range(count)]
    for i, stream in enumerate(streams):
        await stream.write_message(b"%d" % i)
    answers = [await stream.read_message(100) for stream in streams]
    assert answers == [b"%d" % i for i in range(count)]
