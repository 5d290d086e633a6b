"""The peer store: records created on use, addresses deduplicated and bounded, LRU eviction."""

from __future__ import annotations

from aiop2p.identity import KeyPair
from aiop2p.multiaddr import Multiaddr
from aiop2p.services.peerstore import PeerStore

A, B, C = (KeyPair.from_ed25519_seed(bytes([i]) * 32).peer_id for i in (1, 2, 3))


def test_addresses_lose_their_peer_id_and_duplicates() -> None:
    store = PeerStore()
    addr = Multiaddr("/ip4/1.2.3.4/tcp/1")
    store.add_addrs(A, [addr.with_peer_id(A), addr, Multiaddr("/ip4/1.2.3.4/tcp/2")])
    assert store.addrs(A) == [addr, Multiaddr("/ip4/1.2.3.4/tcp/2")]
    store.set_addrs(A, [Multiaddr("/ip4/5.6.7.8/tcp/3")])
    assert store.addrs(A) == [Multiaddr("/ip4/5.6.7.8/tcp/3")]
    assert store.addrs(B) == [] and B not in store  # asking does not create a record


def test_only_the_newest_addresses_are_kept() -> None:
    store = PeerStore(max_addrs_per_peer=2)
    store.add_addrs(A, [Multiaddr(f"/ip4/1.2.3.4/tcp/{port}") for port in (1, 2, 3)])
    assert [str(a) for a in store.addrs(A)] == ["/ip4/1.2.3.4/tcp/2", "/ip4/1.2.3.4/tcp/3"]


def test_least_recently_used_peer_is_evicted() -> None:
    store = PeerStore(max_peers=2)
    store.info(A)
    store.info(B)
    store.info(A)  # A is now the most recent
    store.info(C)
    assert A in store and C in store and B not in store and len(store) == 2
    store.remove(A)
    assert store.get(A) is None and len(store) == 1
