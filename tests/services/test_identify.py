"""Identify between two nodes: both directions, the observed address, and pushes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aiop2p._aio.stream import Stream
from aiop2p.identity import KeyPair
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node
from aiop2p.protocols.envelope import seal
from aiop2p.protocols.peer_record import (
    PEER_RECORD_DOMAIN,
    PEER_RECORD_PAYLOAD_TYPE,
    PeerRecord,
    seal_peer_record,
)

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


async def test_signed_peer_record_certifies_addresses(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    assert b.identify is not None and a.identify is not None
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    info = await a.identify_peer(conn)
    assert info.certified_addrs == b.listen_addrs == info.addrs
    assert all(info.is_certified(addr) for addr in b.listen_addrs)
    assert info.peer_record == b.identify.signed_peer_record()
    first_seq = info.peer_record_seq
    assert first_seq == b.identify.peer_record_seq > 0
    # Same addresses: the same record, no new seq.
    assert b.identify.signed_peer_record() == info.peer_record
    # B listens on one more address: its push carries a newer record, certified at A.
    await b.listen("/ip4/127.0.0.1/tcp/0")
    await wait_for(lambda: len(a.peer_store.info(b.peer_id).certified_addrs) == 2)
    assert a.peer_store.info(b.peer_id).certified_addrs == b.listen_addrs
    assert (a.peer_store.info(b.peer_id).peer_record_seq or 0) > first_seq
    assert a.identify.ignored_peer_records == 0


def _records_of(node: Node, make: Callable[[], bytes]) -> None:
    """Make ``node`` send ``make()`` as its signed peer record from now on."""
    assert node.identify is not None
    node.identify.signed_peer_record = make  # type: ignore[method-assign]


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        "another peer's record",
        "record of another peer",
        "wrong domain",
        "tampered",
    ],
)
async def test_bad_peer_record_is_ignored_and_identify_works(
    node_pair: tuple[Node, Node], bad: str
) -> None:
    a, b = node_pair
    assert a.identify is not None
    mallory = KeyPair.generate()
    forged = (Multiaddr("/ip4/203.0.113.9/tcp/1"),)

    def make() -> bytes:
        if bad == "garbage":
            return b"\x0a\x03\x01\x02\x03\xff"
        if bad == "another peer's record":  # validly signed, by someone else
            return seal_peer_record(mallory, PeerRecord(mallory.peer_id, 1, forged))
        if bad == "record of another peer":  # signed by B's key, about Mallory
            payload = PeerRecord(mallory.peer_id, 1, forged).encode()
            return seal(b.key, PEER_RECORD_DOMAIN, PEER_RECORD_PAYLOAD_TYPE, payload).encode()
        if bad == "wrong domain":
            payload = PeerRecord(b.peer_id, 1, forged).encode()
            return seal(b.key, "libp2p-relay-rsvp", PEER_RECORD_PAYLOAD_TYPE, payload).encode()
        sealed = bytearray(seal_peer_record(b.key, PeerRecord(b.peer_id, 1, forged)))
        sealed[-1] ^= 0x40
        return bytes(sealed)

    _records_of(b, make)
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    info = await a.identify_peer(conn)
    # Identify went through; the unsigned addresses are used, none certified.
    assert info.addrs == b.listen_addrs and info.certified_addrs == []
    assert info.peer_record is None and info.agent_version is not None
    assert a.identify.ignored_peer_records == 1
    assert await a.ping(conn, 1)


async def test_older_peer_record_is_refused(node_pair: tuple[Node, Node]) -> None:
    """A replayed older record (lower seq) does not replace the newer one."""
    a, b = node_pair
    assert a.identify is not None and b.identify is not None
    old = seal_peer_record(b.key, PeerRecord(b.peer_id, 1, (Multiaddr("/ip4/192.0.2.7/tcp/9"),)))
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    info = await a.identify_peer(conn)
    newest = info.peer_record
    _records_of(b, lambda: old)
    await b.listen("/ip4/127.0.0.1/tcp/0")  # a push, carrying the old record
    await wait_for(lambda: a.identify is not None and a.identify.ignored_peer_records == 1)
    info = a.peer_store.info(b.peer_id)
    assert info.peer_record == newest and info.certified_addrs == b.listen_addrs[:1]
