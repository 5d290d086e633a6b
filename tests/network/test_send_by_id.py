"""Reach by id: ``send_request`` and ``connect`` to a peer whose addresses nobody
configured, found through the Kademlia DHT (``NetworkConfig.node.kad``)."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from aiop2p.config import KadConfig, NodeConfig
from aiop2p.errors import NoAddressesError, PeerNotFoundError, RequestDialError
from aiop2p.identity import KeyPair
from aiop2p.network import FirewallRules

from ..helpers import wait_for
from .conftest import listen, networks, serving


def dht(mode: Literal["client", "server"] = "server", **kw: Any) -> dict[str, Any]:
    kad = KadConfig(mode=mode, query_timeout=5.0, lookup_timeout=10.0, **kw)
    return {"firewall": FirewallRules.allow_all(), "node": NodeConfig(kad=kad)}


async def test_send_request_to_a_bare_peer_id_through_the_dht() -> None:
    async with networks(dht()) as (relay,):
        seed = (await listen(relay)).with_peer_id(relay.peer_id)
        # The target joins in client mode (as a peer behind a NAT would): only the DHT
        # server it is connected to knows its addresses, and tells whoever asks by id.
        async with networks(dht("client", bootstrap=(seed,)), dht(bootstrap=(seed,))) as (
            target,
            sender,
        ):
            await listen(target)
            node = sender._node
            assert node.kad is not None
            table = node.kad.table
            await wait_for(lambda: relay.peer_id in table, cap=10)
            store = relay._node.peer_store
            await wait_for(lambda: bool(store.addrs(target.peer_id)), cap=10)
            assert sender.get_addrs(target.peer_id) == []
            async with serving(target, lambda rq: {"echo": rq}):
                assert await sender.send_request(target.peer_id, "hi") == {"echo": "hi"}
            # The address that answered went to the peer store: the next dial needs no
            # lookup.
            assert node.peer_store.addrs(target.peer_id) == target._node.listen_addrs


async def test_unknown_peer_id_is_a_dial_error_naming_the_lookup() -> None:
    async with networks(dht()) as (relay,):
        seed = (await listen(relay)).with_peer_id(relay.peer_id)
        async with networks(dht(bootstrap=(seed,))) as (sender,):
            assert sender._node.kad is not None
            table = sender._node.kad.table
            await wait_for(lambda: relay.peer_id in table, cap=10)
            nobody = KeyPair.generate().peer_id
            with pytest.raises(RequestDialError) as err:
                await sender.send_request(nobody, "hi")
            assert "DHT lookup" in str(err.value)
            with pytest.raises(PeerNotFoundError):
                await sender.connect_peer(nobody)
    async with networks({"firewall": FirewallRules.allow_all()}) as (plain,):
        with pytest.raises(NoAddressesError) as no_dht:  # without a DHT: as before
            await plain.connect_peer(KeyPair.generate().peer_id)
        assert not isinstance(no_dht.value, PeerNotFoundError)
