"""AddressInfo (the seed's methods and ordering, docs/compat.md), its bounds, JSON form
and file store."""

from __future__ import annotations

import json
import os
import stat
from collections import deque
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiop2p.errors import InvalidArgumentError
from aiop2p.identity import KeyPair, PeerId
from aiop2p.multiaddr import Multiaddr
from aiop2p.network.address_book import (
    AddressBookError,
    AddressBookLimits,
    AddressBookStore,
    AddressInfo,
    PeerAddress,
    assemble_relayed_addr,
    default_address_book_path,
)


def pid(n: int) -> PeerId:
    return KeyPair.from_ed25519_seed(bytes([n]) * 32).peer_id


PEERS = [pid(i) for i in range(1, 9)]
T, R1, R2, R3, P = PEERS[:5]

D = Multiaddr("/ip4/10.0.0.2/tcp/4001")
E = Multiaddr("/ip4/10.0.0.3/tcp/4001")
F = Multiaddr("/ip6/::1/tcp/4002")
A1 = Multiaddr("/ip4/1.2.3.4/tcp/4001")
A2 = Multiaddr("/ip4/5.6.7.8/tcp/4001")


def relayed(addr: Multiaddr, relay: PeerId, target: PeerId) -> Multiaddr:
    return Multiaddr(f"{addr}/p2p/{relay}/p2p-circuit/p2p/{target}")


# -- assemble_relayed_addr ---------------------------------------------------------------


def test_assemble_appends_circuit_and_target() -> None:
    got = assemble_relayed_addr(T, R1, A1)
    assert str(got) == f"/ip4/1.2.3.4/tcp/4001/p2p/{R1}/p2p-circuit/p2p/{T}"


def test_assemble_keeps_existing_circuit_suffix() -> None:
    with_suffix = Multiaddr(f"{A1}/p2p/{R1}/p2p-circuit")
    assert assemble_relayed_addr(T, R1, with_suffix) == relayed(A1, R1, T)


def test_assemble_suffix_of_another_relay_is_not_the_suffix() -> None:
    other = Multiaddr(f"{A1}/p2p/{R2}/p2p-circuit")
    got = assemble_relayed_addr(T, R1, other)
    assert str(got) == f"{other}/p2p/{R1}/p2p-circuit/p2p/{T}"


def test_assemble_edge_relay_addr_ending_with_relay_id() -> None:
    # Seed edge case: only /p2p/R, so /p2p/R is appended again (malformed for relay v1).
    got = assemble_relayed_addr(T, R1, Multiaddr(f"{A1}/p2p/{R1}"))
    assert str(got) == f"{A1}/p2p/{R1}/p2p/{R1}/p2p-circuit/p2p/{T}"
    assert got.protocol_names()[-1] == "p2p" and got.peer_id == T


# -- the seed's methods ------------------------------------------------------------------


def test_get_addrs_h1_known_then_one_relayed_per_relay() -> None:
    info = AddressInfo()
    info.add_addrs(T, D)
    info.add_addrs(T, E)
    info.add_relay(R1, A1)
    info.add_relay(R3)  # no known address: contributes nothing
    info.add_relay(R2, A2)
    assert info.get_addrs(T) == [D, E, relayed(A1, R1, T), relayed(A2, R2, T)]
    info.set_relay_fallback(T, False)
    assert info.get_addrs(T) == [D, E]


def test_get_addrs_unknown_peer_uses_fallback_and_creates_nothing() -> None:
    info = AddressInfo()
    assert info.get_addrs(T) == []
    info.add_relay(R1, A1)
    assert info.get_addrs(P) == [relayed(A1, R1, P)]
    assert P not in info.peers


def test_get_addrs_of_a_relay_includes_itself() -> None:
    info = AddressInfo()
    info.add_relay(R1, A1)
    assert info.get_addrs(R1) == [A1, relayed(A1, R1, R1)]


def test_add_addrs_appends_once() -> None:
    info = AddressInfo()
    info.add_addrs(T, D)
    info.add_addrs(T, E)
    info.add_addrs(T, D)
    assert info.peers[T] == PeerAddress(deque([D, E]), True)


def test_remove_address_removes_every_copy_and_keeps_entry() -> None:
    info = AddressInfo({T: PeerAddress(deque([D, E, D]), False)})
    info.remove_address(T, D)
    assert info.peers[T] == PeerAddress(deque([E]), False)
    info.remove_address(T, E)
    assert info.peers[T] == PeerAddress(deque(), False)
    info.remove_address(P, D)  # unknown: no entry created
    assert P not in info.peers


def test_set_relay_fallback_creates_entry() -> None:
    info = AddressInfo()
    info.set_relay_fallback(T, False)
    assert info.peers[T] == PeerAddress(deque(), False)
    info.set_relay_fallback(T, True)
    assert info.peers[T].use_relay_fallback is True


def test_use_relay_without_usable_relay_changes_nothing() -> None:
    info = AddressInfo()
    info.add_addrs(R1, A1)  # known, but not a relay
    info.add_relay(R2)  # a relay, but no address
    before = info.copy()
    assert info.use_relay(T, R1, True) is None
    assert info.use_relay(T, R2, True) is None
    assert info == before
    assert T not in info.peers


def test_use_relay_pushes_front_without_dedup_q11() -> None:
    info = AddressInfo()
    info.add_addrs(T, D)
    info.add_relay(R1, A1)
    x = relayed(A1, R1, T)
    assert info.use_relay(T, R1, False) == x
    assert info.use_relay(T, R1, False) == x
    assert list(info.peers[T].known) == [x, x, D]
    assert info.peers[T].use_relay_fallback is True
    assert info.use_relay(T, R1, True) == x
    assert info.peers[T].use_relay_fallback is False


def test_prioritize_addr() -> None:
    info = AddressInfo()
    info.prioritize_addr(T, D)
    assert list(info.peers[T].known) == [D]
    info.add_addrs(T, E)
    info.peers[T].known.append(E)  # a duplicate, as use_relay can create
    info.prioritize_addr(T, E)
    assert list(info.peers[T].known) == [E, D]
    info.prioritize_addr(T, E)  # already at the front
    assert list(info.peers[T].known) == [E, D]
    info.prioritize_addr(T, F)
    assert list(info.peers[T].known) == [F, E, D]


def test_prioritize_at_front_keeps_later_duplicates() -> None:
    # The seed only rearranges when the front differs.
    info = AddressInfo({T: PeerAddress(deque([D, E, D]))})
    info.prioritize_addr(T, D)
    assert list(info.peers[T].known) == [D, E, D]


def test_deprioritize_addr() -> None:
    info = AddressInfo()
    info.deprioritize_addr(T, D)
    assert list(info.peers[T].known) == [D]
    info.peers[T].known.extendleft([E, D])  # [D, E, D]
    info.deprioritize_addr(T, E)
    assert list(info.peers[T].known) == [D, D, E]
    info.deprioritize_addr(T, D)
    assert list(info.peers[T].known) == [E, D]
    info.deprioritize_addr(T, D)  # already at the back
    assert list(info.peers[T].known) == [E, D]
    info.deprioritize_addr(T, F)
    assert list(info.peers[T].known) == [E, D, F]


def test_get_relay_addr() -> None:
    info = AddressInfo()
    info.add_addrs(R1, A1)
    assert info.get_relay_addr(R1) is None  # not a relay
    info.add_relay(R1)
    info.add_addrs(R1, A2)
    assert info.get_relay_addr(R1) == A1
    info.add_relay(R2)
    assert info.get_relay_addr(R2) is None


def test_add_relay() -> None:
    info = AddressInfo()
    assert info.add_relay(R1) is None  # registered even without an address
    assert info.relays == [R1]
    assert info.add_relay(R2, A2) == A2
    assert list(info.peers[R2].known) == [A2]
    info.add_addrs(R3, A1)
    assert info.add_relay(R3) == A1  # first known address
    assert info.relays == [R1, R2, R3]


def test_add_relay_ignores_address_when_already_relay_q9() -> None:
    info = AddressInfo()
    info.add_relay(R1, A1)
    assert info.add_relay(R1, A2) == A1
    assert list(info.peers[R1].known) == [A1]
    assert info.relays == [R1]
    info.add_relay(R2)
    assert info.add_relay(R2, A2) is None
    assert R2 not in info.peers


def test_remove_relay_h4_removes_only_that_relay() -> None:
    info = AddressInfo()
    info.add_relay(R1, A1)
    info.add_relay(R2, A2)
    info.use_relay(T, R1, False)
    assert info.remove_relay(R1) is True
    assert info.relays == [R2]
    assert info.remove_relay(R1) is False
    assert info.remove_relay(P) is False
    assert info.relays == [R2]
    # Relayed addresses already stored for targets stay; R1's own entry stays.
    assert list(info.peers[T].known) == [relayed(A1, R1, T)]
    assert list(info.peers[R1].known) == [A1]


def test_worked_example_8_4() -> None:
    x = relayed(A1, R1, T)
    via_r2 = relayed(A2, R2, T)

    def book() -> AddressInfo:
        info = AddressInfo()
        info.add_addrs(T, D)
        info.add_addrs(T, x)
        info.add_relay(R1, A1)
        info.add_relay(R2, A2)
        return info

    info = book()
    assert info.get_addrs(T) == [D, x, x, via_r2]  # the duplicate is the dialer's to drop
    assert info.use_relay(T, R2, True) == via_r2
    assert list(info.peers[T].known) == [via_r2, D, x]
    assert info.get_addrs(T) == [via_r2, D, x]
    info = book()
    info.set_relay_fallback(T, False)
    assert info.get_addrs(T) == [D, x]


# -- bounds ----------------------------------------------------------------------------


def test_limits_validated() -> None:
    with pytest.raises(InvalidArgumentError):
        AddressBookLimits(max_peers=0)
    with pytest.raises(InvalidArgumentError):
        AddressBookLimits(max_relays=True)


def test_max_peers_evicts_least_recently_updated_non_relay() -> None:
    info = AddressInfo(limits=AddressBookLimits(max_peers=3))
    info.add_relay(R1, A1)  # oldest, but a relay: never evicted
    info.add_addrs(PEERS[4], D)
    info.add_addrs(PEERS[5], D)
    info.add_addrs(PEERS[4], E)  # updated: now more recent than PEERS[5]
    info.add_addrs(PEERS[6], D)
    assert list(info.peers) == [R1, PEERS[4], PEERS[6]]
    info.get_addrs(R1)  # reads do not count as updates
    info.set_relay_fallback(PEERS[7], False)
    assert list(info.peers) == [R1, PEERS[6], PEERS[7]]


def test_max_addrs_per_peer_drops_the_back() -> None:
    info = AddressInfo(limits=AddressBookLimits(max_addrs_per_peer=2))
    info.add_addrs(T, D)
    info.add_addrs(T, E)
    info.add_addrs(T, F)  # full: replaces the back-most
    assert list(info.peers[T].known) == [D, F]
    info.prioritize_addr(T, E)
    assert list(info.peers[T].known) == [E, D]
    info.deprioritize_addr(T, F)
    assert list(info.peers[T].known) == [E, F]
    info.add_relay(R1, A1)
    info.use_relay(T, R1, False)
    assert list(info.peers[T].known) == [relayed(A1, R1, T), E]


def test_max_relays_evicts_oldest() -> None:
    info = AddressInfo(limits=AddressBookLimits(max_relays=2))
    for r in (R1, R2, R3):
        info.add_relay(r)
    assert info.relays == [R2, R3]


# -- copies, revision ------------------------------------------------------------------


def test_copy_is_deep() -> None:
    info = AddressInfo()
    info.add_addrs(T, D)
    info.add_relay(R1, A1)
    dup = info.copy()
    assert dup == info
    dup.add_addrs(T, E)
    dup.add_relay(R2)
    dup.set_relay_fallback(T, False)
    assert list(info.peers[T].known) == [D]
    assert info.relays == [R1]
    assert info.peers[T].use_relay_fallback is True
    assert dup != info


def test_revision_grows_on_changes_only() -> None:
    info = AddressInfo()
    r0 = info.revision
    info.get_addrs(T)
    info.get_relay_addr(R1)
    assert info.remove_relay(R1) is False
    info.use_relay(T, R1, True)
    assert info.revision == r0
    info.add_addrs(T, D)
    r1 = info.revision
    assert r1 > r0
    # No-op mutations are not changes.
    info.add_addrs(T, D)
    info.prioritize_addr(T, D)
    info.deprioritize_addr(T, D)
    info.set_relay_fallback(T, True)
    info.remove_address(T, E)
    info.add_relay(R1)
    r2 = info.revision
    assert r2 > r1
    info.add_relay(R1, A1)
    assert info.revision == r2
    for change in (
        lambda: info.add_addrs(T, E),
        lambda: info.prioritize_addr(T, E),
        lambda: info.deprioritize_addr(T, E),
        lambda: info.set_relay_fallback(T, False),
        lambda: info.remove_address(T, E),
        lambda: info.remove_relay(R1),
    ):
        before = info.revision
        change()
        assert info.revision > before


# -- JSON (the seed's serde form) --------------------------------------------------------


def sample_book() -> AddressInfo:
    info = AddressInfo()
    info.add_addrs(T, D)
    info.add_addrs(T, F)
    info.add_relay(R1, A1)
    info.add_relay(R2)
    info.set_relay_fallback(P, False)
    info.use_relay(R3, R1, True)
    return info


def test_json_shape() -> None:
    data = json.loads(sample_book().to_json())
    assert data == {
        "peers": {
            str(T): {"known": [str(D), str(F)], "use_relay_fallback": True},
            str(R1): {"known": [str(A1)], "use_relay_fallback": True},
            str(P): {"known": [], "use_relay_fallback": False},
            str(R3): {"known": [str(relayed(A1, R1, R3))], "use_relay_fallback": False},
        },
        "relays": [str(R1), str(R2)],
    }
    assert str(T).startswith("12D3KooW")


def test_json_round_trip_gives_identical_get_addrs() -> None:
    info = sample_book()
    loaded = AddressInfo.from_json(info.to_json())
    assert loaded == info
    assert list(loaded.peers) == list(info.peers)
    for peer in [*PEERS, pid(99)]:
        assert loaded.get_addrs(peer) == info.get_addrs(peer)
    assert AddressInfo.from_dict(info.to_dict()) == info
    assert AddressInfo.from_json(info.to_json(indent=2).encode()) == info


def test_from_dict_defaults_and_unknown_keys() -> None:
    text = json.dumps({"peers": {str(T): {"known": [str(D)]}, str(P): {}}, "extra": 1})
    info = AddressInfo.from_json(text)
    assert info.peers[T] == PeerAddress(deque([D]), True)
    assert info.peers[P] == PeerAddress(deque(), True)
    assert info.relays == []
    assert AddressInfo.from_json("{}") == AddressInfo()


def test_from_dict_dedups_relays_and_applies_limits() -> None:
    data = {
        "peers": {str(T): {"known": [str(D), str(E), str(F)]}},
        "relays": [str(R1), str(R2), str(R1), str(R3)],
    }
    info = AddressInfo.from_dict(data, limits=AddressBookLimits(max_addrs_per_peer=2, max_relays=2))
    assert list(info.peers[T].known) == [D, E]
    assert info.relays == [R2, R3]
    assert info.limits.max_relays == 2


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("not json", "not valid JSON"),
        ("[]", "must be an object"),
        ('{"peers": []}', "'peers' must be an object"),
        ('{"relays": {}}', "'relays' must be an array"),
        ('{"relays": [3]}', "relays[0] must be a peer id"),
        ('{"relays": ["nope"]}', "relays[0]"),
        ('{"peers": {"nope": {}}}', "peers key"),
        ('{"peers": {"%T": 5}}', "must be an object"),
        ('{"peers": {"%T": {"known": "/ip4/1.2.3.4"}}}', ".known must be an array"),
        ('{"peers": {"%T": {"known": [1]}}}', ".known[0] must be a multiaddr string"),
        ('{"peers": {"%T": {"known": ["/ip4/999.1.1.1"]}}}', ".known[0]"),
        ('{"peers": {"%T": {"use_relay_fallback": 1}}}', "must be true or false"),
        ('{"peers": {"%T": {"use_relay_fallback": null}}}', "must be true or false"),
        ("[" * 100_000, "address book"),
    ],
)
def test_invalid_json_says_what_is_wrong(text: str, expect: str) -> None:
    with pytest.raises(AddressBookError) as err:
        AddressInfo.from_json(text.replace("%T", str(T)))
    assert expect in str(err.value)
    assert isinstance(err.value, InvalidArgumentError)


def test_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(AddressBookError, match="must be an object, not an array"):
        AddressInfo.from_dict([])  # type: ignore[arg-type]


ADDRS = st.builds(
    lambda a, b, port, six: Multiaddr(
        f"/ip6/::{a:x}/tcp/{port}" if six else f"/ip4/10.{a}.{b}.1/tcp/{port}"
    ),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 65535),
    st.booleans(),
)
PEER = st.sampled_from(PEERS)
OP = st.one_of(
    st.tuples(st.just("add_addrs"), PEER, ADDRS),
    st.tuples(st.just("remove_address"), PEER, ADDRS),
    st.tuples(st.just("set_relay_fallback"), PEER, st.booleans()),
    st.tuples(st.just("use_relay"), PEER, PEER, st.booleans()),
    st.tuples(st.just("prioritize_addr"), PEER, ADDRS),
    st.tuples(st.just("deprioritize_addr"), PEER, ADDRS),
    st.tuples(st.just("add_relay"), PEER, st.none() | ADDRS),
    st.tuples(st.just("remove_relay"), PEER),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(OP, max_size=40))
def test_json_round_trip_of_random_books(ops: list[tuple[object, ...]]) -> None:
    info = AddressInfo(limits=AddressBookLimits(max_peers=6, max_addrs_per_peer=4, max_relays=3))
    for name, *args in ops:
        getattr(info, str(name))(*args)
    loaded = AddressInfo.from_json(info.to_json(), limits=info.limits)
    assert loaded == info
    assert loaded.to_dict() == info.to_dict()
    assert list(loaded.peers) == list(info.peers)  # update order survives
    for peer in PEERS:
        assert loaded.get_addrs(peer) == info.get_addrs(peer)
    assert len(info.peers) <= 6 and len(info.relays) <= 3
    assert all(len(e.known) <= 4 for e in info.peers.values())


# -- file store ------------------------------------------------------------------------


def test_store_missing_file_is_empty(tmp_path: Path) -> None:
    assert AddressBookStore(tmp_path / "none.json").load() == AddressInfo()


def test_store_save_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "book.json"
    store = AddressBookStore(path)
    info = sample_book()
    store.save(info)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.load() == info
    info.add_addrs(T, E)
    store.save(info)  # overwrite
    assert store.load() == info
    assert [p.name for p in path.parent.iterdir()] == ["book.json"]  # no temp file left
    assert json.loads(path.read_text()) == info.to_dict()


def test_store_corrupt_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "book.json"
    path.write_text('{"peers": {"bad": {}}}')
    with pytest.raises(AddressBookError) as err:
        AddressBookStore(path).load()
    assert str(path) in str(err.value)
    path.write_bytes(b"\xff\xfe garbage")
    with pytest.raises(AddressBookError, match=r"book\.json"):
        AddressBookStore(path).load()


def test_store_limits_apply_on_load(tmp_path: Path) -> None:
    path = tmp_path / "book.json"
    AddressBookStore(path).save(sample_book())
    loaded = AddressBookStore(path, limits=AddressBookLimits(max_relays=1)).load()
    assert loaded.relays == [R2]


def test_default_path_uses_xdg_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    expected = tmp_path / "data" / "aiop2p" / "address-book.json"
    assert default_address_book_path() == expected
    store = AddressBookStore()
    assert store.path == expected
    store.save(sample_book())
    assert expected.exists()
    assert AddressBookStore().load() == sample_book()


@pytest.mark.parametrize("value", [None, "", "relative/dir"])
def test_default_path_falls_back_to_home(
    value: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_DATA_HOME", value)
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = tmp_path / ".local" / "share" / "aiop2p" / "address-book.json"
    assert default_address_book_path() == expected
    assert os.path.isabs(default_address_book_path())
