"""The Kademlia machines: message codec, distance, routing table, iterative lookup.

The lookup runs against a simulated network of 200 peers, each answering from its own
routing table, with peers that never answer and peers that answer garbage.
"""

from __future__ import annotations

import contextlib
import hashlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiop2p._wire.protobuf import encode_bytes_field, encode_varint_field
from aiop2p.errors import KadError, RemoteProtocolError
from aiop2p.identity import PeerId
from aiop2p.multiaddr import Multiaddr
from aiop2p.protocols.kad import (
    AddResult,
    ConnectionType,
    KadLimits,
    KadMessage,
    KadPeer,
    KadRecord,
    Lookup,
    MessageType,
    PingOldest,
    RoutingTable,
    bucket_index,
    kad_key,
)


def peer(i: int) -> PeerId:
    """A deterministic, valid (sha2-256 multihash) peer id."""
    return PeerId(b"\x12\x20" + hashlib.sha256(b"peer %d" % i).digest())


ADDR = Multiaddr("/ip4/10.0.0.1/tcp/4001")


# -- codec -----------------------------------------------------------------------------------


def test_round_trip_keeps_every_field() -> None:
    msg = KadMessage(
        MessageType.GET_VALUE,
        key=b"/pk/key",
        record=KadRecord(b"/pk/key", b"value", "2026-12-02T00:00:00Z"),
        closer_peers=(KadPeer(peer(1), (ADDR,), ConnectionType.CONNECTED), KadPeer(peer(2))),
        provider_peers=(KadPeer(peer(3), (Multiaddr("/ip6/::1/tcp/1"),)),),
    )
    assert KadMessage.decode(msg.encode()) == msg


@given(
    kind=st.sampled_from(list(MessageType)),
    key=st.binary(max_size=64),
    ids=st.lists(st.integers(0, 1000), max_size=20, unique=True),
)
def test_round_trip_any_find_node_answer(kind: MessageType, key: bytes, ids: list[int]) -> None:
    msg = KadMessage(kind, key, closer_peers=tuple(KadPeer(peer(i), (ADDR,)) for i in ids))
    assert KadMessage.decode(msg.encode()) == msg


def test_spec_field_numbers_and_unknown_addrs() -> None:
    unknown_addr = b"\xff\xff\x03\x01"  # a protocol code we do not know: skipped
    peer_entry = (
        encode_bytes_field(1, peer(7).to_bytes())
        + encode_bytes_field(2, ADDR.to_bytes())
        + encode_bytes_field(2, unknown_addr)
        + encode_varint_field(3, 2)
    )
    data = (
        encode_varint_field(1, 4)
        + encode_varint_field(10, 0)  # clusterLevelRaw: not used
        + encode_bytes_field(2, b"k")
        + encode_bytes_field(8, peer_entry)
        + encode_bytes_field(15, b"future field")
    )
    assert KadMessage.decode(data) == KadMessage(
        MessageType.FIND_NODE, b"k", closer_peers=(KadPeer(peer(7), (ADDR,), ConnectionType(2)),)
    )
    assert KadMessage.decode(b"").type is MessageType.PUT_VALUE  # proto default


LIMITS = KadLimits(max_message_bytes=4096, max_peers_per_message=4, max_addrs_per_peer=3)


def _entry(raw_id: bytes, n_addrs: int = 0) -> bytes:
    return encode_bytes_field(1, raw_id) + b"".join(
        encode_bytes_field(2, ADDR.to_bytes()) for _ in range(n_addrs)
    )


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (encode_varint_field(1, 6), "unknown message type"),
        (encode_varint_field(1, 1 << 40), "unknown message type"),
        (encode_bytes_field(8, _entry(b"\x12\x20short")), "invalid id"),
        (encode_bytes_field(8, encode_bytes_field(2, ADDR.to_bytes())), "without an id"),
        (encode_bytes_field(8, _entry(peer(1).to_bytes(), 4)), "more than 3 addrs"),
        (b"".join(encode_bytes_field(8, _entry(peer(i).to_bytes())) for i in range(5)), "peers"),
        (encode_bytes_field(2, b"k" * 300), "key longer"),
        (encode_bytes_field(3, encode_bytes_field(1, b"k" * 300)), "record key"),
        (encode_bytes_field(3, encode_bytes_field(5, b"\xff")), "UTF-8"),
        (encode_bytes_field(8, _entry(peer(1).to_bytes()) + encode_varint_field(3, 9)), "conn"),
        (b"\x42\x05ab", "overruns"),
        (b"\x08", "truncated"),
        (b"\x0f", "wire type"),
        (b"x" * 5000, "above 4096 bytes"),
    ],
)
def test_hostile_messages_raise_kad_error(data: bytes, why: str) -> None:
    with pytest.raises(KadError) as err:
        KadMessage.decode(data, LIMITS)
    assert isinstance(err.value, RemoteProtocolError)
    assert why.split()[0] in str(err.value) or why in str(err.value)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_kad_error(data: bytes) -> None:
    with contextlib.suppress(KadError):
        KadMessage.decode(data, LIMITS)


# -- distance and routing table --------------------------------------------------------------


def test_distance_is_xor_of_sha256() -> None:
    a, b = peer(1).to_bytes(), peer(2).to_bytes()
    assert kad_key(a) == int.from_bytes(hashlib.sha256(a).digest(), "big")
    assert bucket_index(kad_key(a), kad_key(a)) == 256
    d = kad_key(a) ^ kad_key(b)
    assert bucket_index(kad_key(a), kad_key(b)) == 256 - d.bit_length()


def _fill_bucket(table: RoutingTable, bucket: int, count: int) -> list[PeerId]:
    got: list[PeerId] = []
    for i in range(100_000):
        p = peer(i)
        if bucket_index(table.local_key, kad_key(p.to_bytes())) == bucket:
            got.append(p)
            if len(got) == count:
                return got
    raise AssertionError("not enough ids for the bucket")


def test_table_keeps_k_per_bucket_and_asks_to_ping_the_oldest() -> None:
    table = RoutingTable(peer(-1), k=3)
    a, b, c, d, e = _fill_bucket(table, 1, 5)
    assert [table.add(p, (ADDR,)) for p in (a, b, c)] == [AddResult.ADDED] * 3
    assert table.add(b) is AddResult.UPDATED  # b now most recently seen; a is oldest
    assert table.add(d) == PingOldest(a, d)
    assert table.add(e) is AddResult.IGNORED  # one ping per bucket at a time
    table.ping_result(a, alive=True)  # a answered: kept, d dropped
    assert set(table.peers()) == {a, b, c} and d not in table
    assert table.add(d) == PingOldest(c, d)  # c is the oldest now
    table.ping_result(c, alive=False)  # c is gone: d takes its place
    assert set(table.peers()) == {a, b, d}
    assert table.bucket_sizes() == {1: 3}
    assert table.add(table.local) is AddResult.IGNORED
    assert table.get(a) is not None and table.get(a).addrs == (ADDR,)  # type: ignore[union-attr]


def test_table_stale_ping_answers_are_ignored_and_removal_promotes_the_candidate() -> None:
    table = RoutingTable(peer(-1), k=2)
    a, b, c = _fill_bucket(table, 0, 3)
    table.add(a)
    table.add(b)
    assert table.add(c) == PingOldest(a, c)
    table.ping_result(b, alive=False)  # not the pinged entry: nothing happens
    assert set(table.peers()) == {a, b}
    assert table.remove(a)  # the pinged one left (a failed query): c takes its place
    assert set(table.peers()) == {b, c}
    table.ping_result(a, alive=False)  # late answer: ignored
    assert set(table.peers()) == {b, c}
    assert not table.remove(a)


def test_table_is_bounded_and_closest_is_sorted() -> None:
    table = RoutingTable(peer(-1), k=20)
    for i in range(3000):
        table.add(peer(i))
    assert len(table) <= 256 * 20
    assert all(n <= 20 for n in table.bucket_sizes().values())
    target = kad_key(peer(5000).to_bytes())
    best = table.closest(target, 10)
    assert [e.key ^ target for e in best] == sorted(e.key ^ target for e in best)
    everyone = sorted(table.peers(), key=lambda p: kad_key(p.to_bytes()) ^ target)
    assert [e.peer_id for e in best] == everyone[:10]
    without_first = table.closest(target, exclude=best[0].peer_id)
    assert best[0].peer_id not in [e.peer_id for e in without_first]


# -- lookup against a simulated network ------------------------------------------------------


class SimNetwork:
    """200 peers, each with a routing table of everyone (as k-buckets keep them)."""

    def __init__(self, size: int = 200, silent: int = 0, garbage: int = 0, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.ids = [peer(i) for i in range(size)]
        self.tables = {p: RoutingTable(p) for p in self.ids}
        for p, table in self.tables.items():
            for q in rng.sample(self.ids, len(self.ids)):
                if q != p:
                    table.add(q, (ADDR,))
        shuffled = rng.sample(self.ids[1:], len(self.ids) - 1)
        self.silent = set(shuffled[:silent])
        self.garbage = set(shuffled[silent : silent + garbage])
        self.asked: list[PeerId] = []

    def answer(self, to: PeerId, target: bytes) -> bytes:
        self.asked.append(to)
        if to in self.garbage:
            return b"\x0a\xff\xff"  # a length that overruns the message
        closest = self.tables[to].closest(kad_key(target))
        return KadMessage(
            MessageType.FIND_NODE, closer_peers=tuple(KadPeer(e.peer_id, e.addrs) for e in closest)
        ).encode()

    def run(self, lookup: Lookup) -> int:
        """Drive ``lookup`` to its end (answers in order, silent peers fail); return rounds."""
        rounds = 0
        now = 0.0
        while not lookup.done:
            rounds += 1
            assert rounds < 1000
            asked = lookup.next_queries(now)
            assert asked or lookup.done or lookup.in_flight
            assert lookup.in_flight <= lookup.alpha
            for p in asked:
                if p in self.silent:
                    lookup.on_failure(p)  # the driver's query timeout
                    continue
                try:
                    msg = KadMessage.decode(self.answer(p, lookup.target))
                except KadError:
                    lookup.on_failure(p)
                    continue
                lookup.on_response(p, msg.closer_peers)
            now += 1.0
        return rounds

    def lookup_from(self, origin: PeerId, target: bytes, **kw: object) -> Lookup:
        seeds = [(e.peer_id, e.addrs) for e in self.tables[origin].closest(kad_key(target))]
        return Lookup(target, seeds, local=origin, deadline=1e9, **kw)  # type: ignore[arg-type]


def _true_closest(net: SimNetwork, origin: PeerId, target: bytes) -> list[PeerId]:
    """The honest peers among the 20 closest to ``target``: every peer answers with the
    20 closest it knows, silent ones included (it cannot tell), so no lookup learns of
    the 21st."""
    key = kad_key(target)
    others = sorted((p for p in net.ids if p != origin), key=lambda p: kad_key(p.to_bytes()) ^ key)
    return [p for p in others[:20] if p not in net.silent and p not in net.garbage]


@pytest.mark.parametrize(("silent", "garbage"), [(0, 0), (30, 0), (20, 20)])
def test_lookup_finds_the_k_closest(silent: int, garbage: int) -> None:
    net = SimNetwork(silent=silent, garbage=garbage)
    origin = net.ids[0]
    target = peer(10_000).to_bytes()  # a key nobody has
    lookup = net.lookup_from(origin, target)
    net.run(lookup)
    closest = [p.peer_id for p in lookup.closest()]
    assert closest == _true_closest(net, origin, target)
    assert lookup.queries <= lookup.max_queries
    assert not lookup.timed_out and lookup.found is None


def test_lookup_finds_a_peer_and_stops() -> None:
    net = SimNetwork(silent=40, garbage=20)
    target = next(p for p in net.ids[150:] if p not in net.silent | net.garbage)
    lookup = net.lookup_from(net.ids[0], target.to_bytes(), stop_when_found=True)
    net.run(lookup)
    assert lookup.found is not None and lookup.found.peer_id == target
    assert lookup.found.addrs == (ADDR,)
    full = net.lookup_from(net.ids[0], target.to_bytes())
    net.run(full)
    assert lookup.queries < full.queries


def test_lookup_bounds_total_queries() -> None:
    net = SimNetwork(silent=150)  # most of the network never answers
    lookup = net.lookup_from(net.ids[0], peer(10_000).to_bytes(), max_queries=10)
    net.run(lookup)
    assert lookup.queries == 10 and len(net.asked) <= 10


def test_lookup_stops_at_the_deadline() -> None:
    net = SimNetwork()
    seeds = [(e.peer_id, e.addrs) for e in net.tables[net.ids[0]].closest(0)]
    lookup = Lookup(b"key", seeds, local=net.ids[0], deadline=10.0)
    assert len(lookup.next_queries(0.0)) == 3  # alpha
    assert lookup.next_queries(1.0) == []  # alpha in flight
    assert lookup.next_queries(10.0) == [] and lookup.done and lookup.timed_out


def test_lookup_ignores_answers_it_did_not_ask_for_and_bounds_candidates() -> None:
    ids = [peer(i) for i in range(1000)]
    lookup = Lookup(b"key", [(ids[0], [ADDR])], local=peer(-1), deadline=1e9, k=4)
    lookup.on_response(ids[5], [KadPeer(p) for p in ids[100:200]])  # unsolicited
    assert lookup.next_queries(0.0) == [ids[0]]
    # A hostile answer with hundreds of peers keeps only the 8·k closest as candidates.
    lookup.on_response(ids[0], [KadPeer(p, (ADDR,) * 3) for p in ids[1:900]])
    assert len(lookup._candidates) <= 8 * 4 + 1
    assert len(lookup.addrs_of(ids[0])) == 1
    lookup.on_failure(ids[0])  # after the answer: ignored
    assert lookup.closest()[0].peer_id == ids[0]


def test_lookup_with_no_seeds_is_done_at_once() -> None:
    lookup = Lookup(b"key", [], local=peer(0), deadline=1.0)
    assert lookup.done and lookup.next_queries(0.0) == [] and lookup.closest() == []


def test_lookup_merges_the_targets_addresses_from_each_reporter_in_turn() -> None:
    target = peer(42)
    liar, honest = peer(1), peer(2)
    bogus = [Multiaddr(f"/ip4/10.9.9.9/tcp/{port}") for port in range(1, 40)]
    lookup = Lookup(
        target.to_bytes(),
        [(liar, [ADDR]), (honest, [ADDR])],
        local=peer(-1),
        deadline=1e9,
        max_addrs_per_peer=4,
        query_target=False,
    )
    assert set(lookup.next_queries(0.0)) == {liar, honest}
    lookup.on_response(liar, [KadPeer(target, tuple(bogus))])
    real = Multiaddr("/ip4/192.0.2.1/tcp/4001")
    lookup.on_response(honest, [KadPeer(target, (real,))])
    assert lookup.found is not None
    assert lookup.found.addrs == (bogus[0], real, bogus[1], bogus[2])
    # The target is a candidate but never queried: the lookup is done without it.
    assert lookup.next_queries(1.0) == [] and lookup.done
    assert [p.peer_id for p in lookup.closest()] == sorted(
        [liar, honest], key=lambda p: kad_key(p.to_bytes()) ^ kad_key(target.to_bytes())
    )
