"""Automatic relays on loopback: a node that is not publicly reachable reserves on two
relays, replaces one that goes down, advertises its relayed addresses (identify), and a
third peer reaches it by bare peer id through the DHT and a relay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import pytest

from aiop2p.config import AutonatConfig, KadConfig, NodeConfig
from aiop2p.errors import InvalidArgumentError
from aiop2p.identity import PeerId
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node
from aiop2p.protocols.relay_v2 import HOP_PROTOCOL_ID
from aiop2p.services.relay.auto import (
    AutoRelay,
    AutoRelayAdded,
    AutoRelayConfig,
    AutoRelayEvent,
    AutoRelayRemoved,
)
from aiop2p.services.relay.client import RelayClient, RelayClientConfig
from aiop2p.services.relay.server import RelayServer

from ..helpers import wait_for

pytestmark = pytest.mark.timeout(60)

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
FAST = RelayClientConfig(
    reservation_timeout=2.0,
    refresh_backoff_initial_seconds=0.05,
    refresh_backoff_max_seconds=0.4,
)


def dht(**kw: object) -> KadConfig:
    return KadConfig(query_timeout=3.0, lookup_timeout=10.0, **kw)  # type: ignore[arg-type]


@dataclass
class Lab:
    stack: AsyncExitStack
    relays: list[Node] = field(default_factory=list)
    events: list[AutoRelayEvent] = field(default_factory=list)

    async def relay(self) -> Node:
        """What ``aiop2p relay`` runs: a relay server that is a DHT server."""
        node = await self.stack.enter_async_context(Node(config=NodeConfig(kad=dht(mode="server"))))
        await node.listen(LOOPBACK)
        RelayServer(node).start()
        self.relays.append(node)
        return node

    async def behind_nat(self, config: AutoRelayConfig, **node: object) -> tuple[Node, AutoRelay]:
        """A node with no listener of its own and automatic relays."""
        a = await self.stack.enter_async_context(Node(config=NodeConfig(**node)))  # type: ignore[arg-type]
        auto = AutoRelay(a, RelayClient(a, config=FAST), config, autonat=a.autonat)
        self.stack.push_async_callback(auto.close)
        auto.events.subscribe(self.events.append)
        auto.start()
        return a, auto


def addr_of(node: Node) -> Multiaddr:
    return node.listen_addrs[0].with_peer_id(node.peer_id)


def relayed_via(node: Node) -> set[PeerId]:
    return {a.peer_id for a in node.listen_addrs if a.is_circuit and a.peer_id is not None}


def knows_circuit(node: Node, peer: PeerId) -> bool:
    return any(x.is_circuit for x in node.peer_store.addrs(peer))


def judge(node: Node, *, reachable: bool) -> None:
    """AutoNAT's verdict on an address of ``node``, as a server's answer would set it."""
    assert node.autonat is not None
    addr = Multiaddr("/ip4/1.2.3.4/tcp/1")
    node.autonat._set_verdict(addr, reachable)


@asynccontextmanager
async def lab() -> AsyncIterator[Lab]:
    async with AsyncExitStack() as stack:
        yield Lab(stack)


async def test_reserves_on_two_replaces_a_lost_one_and_advertises() -> None:
    async with lab() as world:
        r1, r2, r3 = [await world.relay() for _ in range(3)]
        config = AutoRelayConfig(mode="always", relays=(addr_of(r1), addr_of(r2)))
        a, auto = await world.behind_nat(config)
        await wait_for(lambda: set(auto.relays) == {r1.peer_id, r2.peer_id}, cap=10)
        assert relayed_via(a) == {r1.peer_id, r2.peer_id}
        # A third relay found by its identify (the hop protocol) becomes a spare.
        await a.connect(r3.peer_id, r3.listen_addrs)
        await wait_for(lambda: r3.peer_id in auto._candidates, cap=10)
        # Identify tells a peer our relayed addresses.
        info = await r3.identify_peer(a.peer_id)
        assert {x.peer_id for x in info.addrs if x.is_circuit} >= {r1.peer_id, r2.peer_id}
        await r1.close()
        await wait_for(lambda: set(auto.relays) == {r2.peer_id, r3.peer_id}, cap=15)
        assert any(isinstance(e, AutoRelayRemoved) and e.relay == r1.peer_id for e in world.events)
        await wait_for(lambda: relayed_via(a) == {r2.peer_id, r3.peer_id}, cap=10)


async def test_a_lost_relay_without_spare_is_restored() -> None:
    async with lab() as world:
        r1, r2 = [await world.relay() for _ in range(2)]
        config = AutoRelayConfig(mode="always", relays=(addr_of(r1), addr_of(r2)), discover=False)
        a, auto = await world.behind_nat(config)
        await wait_for(lambda: relayed_via(a) == {r1.peer_id, r2.peer_id}, cap=10)
        key, where = r1.key, r1.listen_addrs[0]
        await r1.close()
        await wait_for(lambda: relayed_via(a) == {r2.peer_id}, cap=10)
        assert set(auto.relays) == {r1.peer_id, r2.peer_id}  # kept: nothing to replace it
        back = await world.stack.enter_async_context(Node(key))
        await back.listen(where)
        RelayServer(back).start()
        await wait_for(lambda: relayed_via(a) == {r1.peer_id, r2.peer_id}, cap=15)


async def test_a_third_peer_reaches_the_node_by_id_through_dht_and_relay() -> None:
    async with lab() as world:
        r1, r2 = [await world.relay() for _ in range(2)]
        await r2.connect(r1.peer_id, r1.listen_addrs)  # the DHT's two servers know each other
        config = AutoRelayConfig(mode="always", relays=(addr_of(r1), addr_of(r2)))
        a, _auto = await world.behind_nat(config, kad=dht(bootstrap=(addr_of(r1),)))
        await wait_for(lambda: len(relayed_via(a)) == 2, cap=10)
        # The relays learn the circuit addresses from identify's push.
        for r in (r1, r2):
            await wait_for(partial(knows_circuit, r, a.peer_id), cap=10)
        b = await world.stack.enter_async_context(
            Node(config=NodeConfig(kad=dht(bootstrap=(addr_of(r2),))))
        )
        RelayClient(b)
        await b.ping(a.peer_id)
        conn = b.connections_to(a.peer_id)[0]
        assert conn.is_relayed


async def test_auto_mode_follows_autonat_and_hostile_relays_are_passed_over() -> None:
    async with lab() as world:
        r1 = await world.relay()
        # A peer that is no relay at all (no hop protocol): listed, refused, passed over.
        liar = await world.stack.enter_async_context(Node())
        await liar.listen(LOOPBACK)
        config = AutoRelayConfig(relays=(addr_of(liar), addr_of(r1)), max_relays=2)
        a, auto = await world.behind_nat(config, autonat=AutonatConfig(server=False))
        assert not auto.active  # no verdict yet: a node that may be public does not relay
        await auto.update()
        assert auto.relays == {}
        judge(a, reachable=False)
        assert auto.active
        await auto.update()
        assert set(auto.relays) == {r1.peer_id}
        assert liar.peer_id in auto._passed_over
        assert HOP_PROTOCOL_ID not in liar.protocols
        assert [type(e) for e in world.events] == [AutoRelayAdded]
        # Reachable after all: the relayed listener goes.
        judge(a, reachable=True)
        await auto.update()
        assert auto.relays == {} and relayed_via(a) == set()


async def test_a_relay_the_application_listens_through_is_never_dropped_by_auto() -> None:
    """The application and the automatic relays may pick the same relay, in either
    order: when the automatic relays no longer need it, the application's listener
    (and its reservation) stay.  (``update`` by hand: AutoNAT forgets a made-up verdict
    once the listen addresses change.)"""
    async with lab() as world:
        r1, r2, r3 = [await world.relay() for _ in range(3)]
        a = await world.stack.enter_async_context(
            Node(config=NodeConfig(autonat=AutonatConfig(server=False)))
        )
        client = RelayClient(a, config=FAST)
        config = AutoRelayConfig(relays=(addr_of(r1), addr_of(r2)), max_relays=3, discover=False)
        auto = AutoRelay(a, client, config, autonat=a.autonat)
        world.stack.push_async_callback(auto.close)
        auto.events.subscribe(world.events.append)
        # r1: the application first (``RelayClient.listen``), then the automatic relays.
        await client.listen(r1.peer_id, addr_of(r1))
        judge(a, reachable=False)
        await auto.update()
        assert set(auto.relays) == {r1.peer_id, r2.peer_id}
        # r2: the automatic relays first, then the application (``node.listen``).
        await a.listen(f"{addr_of(r2)}/p2p-circuit")
        # Reachable after all: the automatic relays let go of both, the application's stay.
        judge(a, reachable=True)
        await auto.update()
        assert auto.relays == {}
        assert relayed_via(a) == {r1.peer_id, r2.peer_id}
        assert set(client.reservations) == {r1.peer_id, r2.peer_id}
        removed = {e.relay for e in world.events if isinstance(e, AutoRelayRemoved)}
        assert removed == {r1.peer_id, r2.peer_id}
        # A relay only the automatic relays listen through is released as before.
        auto._candidates[r3.peer_id] = addr_of(r3).without_peer_id()
        judge(a, reachable=False)
        await auto.update()
        assert r3.peer_id in relayed_via(a)
        judge(a, reachable=True)
        await auto.update()
        assert r3.peer_id not in client.reservations
        assert relayed_via(a) == {r1.peer_id, r2.peer_id}


def test_config_refuses_what_cannot_work() -> None:
    with pytest.raises(InvalidArgumentError):
        AutoRelayConfig(relays=(Multiaddr("/ip4/127.0.0.1/tcp/1"),))
    with pytest.raises(InvalidArgumentError):
        AutoRelayConfig(max_relays=0)
    with pytest.raises(InvalidArgumentError):
        AutoRelayConfig(mode="never")  # type: ignore[arg-type]
