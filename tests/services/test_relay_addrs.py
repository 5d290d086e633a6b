"""Circuit addresses: built once from a relay address, split back into their parts."""

from __future__ import annotations

import pytest

from aiop2p.errors import InvalidMultiaddrError
from aiop2p.identity import KeyPair
from aiop2p.multiaddr import Multiaddr
from aiop2p.services.relay.addrs import circuit_addr, has_transport, split_circuit

R, T = (KeyPair.from_ed25519_seed(bytes([i]) * 32).peer_id for i in (1, 2))
RELAY = Multiaddr("/ip4/1.2.3.4/tcp/4001")


@pytest.mark.parametrize("relay_addr", [RELAY, RELAY.with_peer_id(R)])
def test_relay_peer_is_named_once(relay_addr: Multiaddr) -> None:
    addr = circuit_addr(relay_addr, R, T)
    assert str(addr) == f"/ip4/1.2.3.4/tcp/4001/p2p/{R}/p2p-circuit/p2p/{T}"
    assert circuit_addr(circuit_addr(relay_addr, R, None), R, T) == addr


def test_without_relay_address_or_target() -> None:
    assert str(circuit_addr(None, R, T)) == f"/p2p/{R}/p2p-circuit/p2p/{T}"
    assert str(circuit_addr(RELAY, R, None)) == f"/ip4/1.2.3.4/tcp/4001/p2p/{R}/p2p-circuit"


def test_split_gives_back_the_parts() -> None:
    assert split_circuit(circuit_addr(RELAY, R, T)) == (RELAY.with_peer_id(R), R, T)
    assert split_circuit(circuit_addr(RELAY, R, None)) == (RELAY.with_peer_id(R), R, None)
    assert has_transport(RELAY.with_peer_id(R))
    assert not has_transport(Multiaddr(f"/p2p/{R}"))


@pytest.mark.parametrize(
    "text",
    [
        "/ip4/1.2.3.4/tcp/4001",  # not a circuit
        "/ip4/1.2.3.4/tcp/4001/p2p-circuit",  # no relay peer
        f"/ip4/1.2.3.4/tcp/4001/p2p/{R}/p2p-circuit/tcp/1",  # a transport after the circuit
    ],
)
def test_malformed_circuit_addresses_are_refused(text: str) -> None:
    with pytest.raises(InvalidMultiaddrError):
        split_circuit(Multiaddr(text))
