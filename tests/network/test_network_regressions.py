"""Regressions for the seed's bugs and quirks that aiop2p fixes (the "compat:" entries of
docs/compat.md); relayed listening failures are in ``test_relayed_listening_errors.py``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from aiop2p.errors import (
    BannedPeerError,
    OutboundFailure,
    RequestConnectionClosedError,
    RequestDialError,
    RequestTimeoutError,
    UnsupportedProtocolsError,
)
from aiop2p.events import (
    ConnectionClosed,
    ConnectionEstablished,
    InboundFailure,
    InboundRequestFailed,
    IncomingConnectionError,
    NewListenAddr,
)
from aiop2p.identity import KeyPair
from aiop2p.multiaddr import Multiaddr
from aiop2p.network import PeerRuleQuery
from aiop2p.network.address_book import AddressInfo, assemble_relayed_addr
from aiop2p.network.firewall import FirewallRules, Rule
from aiop2p.network.permissions import FirewallPermission, PermissionValue

from .conftest import (
    CAP,
    CONNECTION_NOISE,
    FirewallInbox,
    drain_events,
    link,
    listen,
    networks,
    new_network,
    next_event,
    outcome,
    serving,
)

pytestmark = pytest.mark.timeout(30)

ALLOW: dict[str, Any] = {"firewall": FirewallRules.allow_all()}


# -- address book and permissions (pure) -----------------------------------------------


def test_get_addrs_gives_known_then_one_relayed_per_relay() -> None:
    """The seed's address-book ordering (docs/compat.md), kept."""
    target, r1, r2, r3 = (KeyPair.generate().peer_id for _ in range(4))
    info = AddressInfo()
    direct = Multiaddr("/ip4/10.0.0.2/tcp/4001")
    info.add_addrs(target, direct)
    info.add_addrs(r1, Multiaddr("/ip4/1.1.1.1/tcp/1"))
    info.add_addrs(r2, Multiaddr("/ip4/2.2.2.2/tcp/2"))
    for relay in (r1, r3, r2):  # r3 has no known address: contributes nothing
        info.add_relay(relay)
    assert info.get_addrs(target) == [
        direct,
        assemble_relayed_addr(target, r1, Multiaddr("/ip4/1.1.1.1/tcp/1")),
        assemble_relayed_addr(target, r2, Multiaddr("/ip4/2.2.2.2/tcp/2")),
    ]
    info.set_relay_fallback(target, False)
    assert info.get_addrs(target) == [direct]


def test_assemble_relayed_addr_adds_the_circuit_once() -> None:
    target, relay = KeyPair.generate().peer_id, KeyPair.generate().peer_id
    want = Multiaddr(f"/ip4/1.2.3.4/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{target}")
    assert assemble_relayed_addr(target, relay, Multiaddr("/ip4/1.2.3.4/tcp/4001")) == want
    already = Multiaddr(f"/ip4/1.2.3.4/tcp/4001/p2p/{relay}/p2p-circuit")
    assert assemble_relayed_addr(target, relay, already) == want


def test_permission_values_are_single_bits_up_to_31() -> None:
    for i in range(32):
        assert PermissionValue.new(i) == 2**i
    assert PermissionValue.new(32) is None
    one, two = PermissionValue.new(0), PermissionValue.new(1)
    assert one is not None and two is not None
    both = FirewallPermission.none().add_permissions([one, two])
    assert both == 3 and both.permits(one) and both.permits(two)
    assert not both.remove_permissions([one]).permits(one)
    assert FirewallPermission.all() == 0xFFFF_FFFF
    assert FirewallPermission.none().is_no_permissions()


def test_remove_dialing_relay_removes_only_that_relay() -> None:
    """compat: removing one relay."""
    r1, r2 = KeyPair.generate().peer_id, KeyPair.generate().peer_id
    info = AddressInfo()
    info.add_relay(r1)
    info.add_relay(r2)
    assert info.remove_relay(r1) is True
    assert info.relays == [r2]
    assert info.remove_relay(r1) is False


# -- through the Network -----------------------------------------------------------------


async def test_unanswered_rule_query_rejects_after_the_firewall_timeout() -> None:
    """compat: firewall timeout is its own setting.  An unanswered rule query rejects
    the request after it, well before ``request_timeout``."""
    async with networks(ALLOW, {"firewall_timeout": 0.5, "request_timeout": 5.0}) as (a, b):
        await link(a, b)
        inbox = FirewallInbox(b)  # questions are taken but never answered
        try:
            started = time.monotonic()
            result = await outcome(a.send_request(b.peer_id, "ping"))
            elapsed = time.monotonic() - started
            assert isinstance(result, RequestConnectionClosedError), result
            event = await next_event(b, InboundRequestFailed, skip=CONNECTION_NOISE)
            assert event.failure is InboundFailure.NOT_PERMITTED
            assert 0.4 <= elapsed < 2.5, elapsed
            query = await inbox.next()
            assert isinstance(query, PeerRuleQuery)
            assert not query.answer(Rule.allow_all()), "a late answer is refused"
            assert (b.get_firewall_config()).get_rule(a.peer_id) is None
        finally:
            await inbox.aclose()


async def test_remove_firewall_default_clears_it() -> None:
    """compat: removing the default clears it."""
    async with networks(ALLOW, ALLOW) as (a, b):
        await link(a, b)
        inbox = FirewallInbox(b)
        try:
            async with serving(b, lambda rq: "pong"):
                assert await a.send_request(b.peer_id, "ping") == "pong"
                assert inbox.empty()
                b.remove_firewall_default()
                assert (b.get_firewall_config()).default is None
                pending = asyncio.ensure_future(a.send_request(b.peer_id, "ping"))
                query = await inbox.next()
                assert isinstance(query, PeerRuleQuery) and query.peer == a.peer_id
                query.answer(Rule.allow_all())
                assert await asyncio.wait_for(pending, CAP) == "pong"
        finally:
            await inbox.aclose()


async def test_connect_peer_on_a_connected_peer_returns_its_address() -> None:
    """compat: connecting to a connected peer.  It returns the address of the connection."""
    async with networks(ALLOW, ALLOW) as (a, b):
        addr = await link(a, b)
        first, second = await asyncio.gather(a.connect_peer(b.peer_id), a.connect_peer(b.peer_id))
        # The remote address of the connection (as dialled: with the peer's /p2p suffix).
        assert first == second
        assert first.without_peer_id() == addr
        assert first.peer_id == b.peer_id
        assert await a.connect_peer(b.peer_id) == first
        assert len(a.established_connections()) == 1
        async with serving(b, lambda rq: rq + 1):
            assert await a.send_request(b.peer_id, 41) == 42


async def test_address_info_export_then_import_restores_it() -> None:
    """compat: the address book holds addresses only; they round-trip."""
    async with networks(ALLOW, ALLOW) as (a, b):
        addr = await link(a, b)
        other = KeyPair.generate().peer_id
        a.add_address(other, "/ip4/10.9.9.9/tcp/4001")
        a.add_address(other, "/ip4/10.9.9.8/tcp/4001")
        text = a.export_address_info().to_json()
        async with new_network(address_info=AddressInfo.from_json(text), **ALLOW) as c:
            for peer in (b.peer_id, other):
                assert c.get_addrs(peer) == a.get_addrs(peer)
            assert c.get_addrs(b.peer_id) == [addr]
            async with serving(b, lambda rq: "pong"):
                assert await c.send_request(b.peer_id, "ping") == "pong"


async def test_reject_all_means_the_protocol_is_not_offered() -> None:
    async with networks(ALLOW, {"firewall": FirewallRules.allow_none()}) as (a, b):
        await link(a, b)
        result = await outcome(a.send_request(b.peer_id, "ping"))
        assert isinstance(result, UnsupportedProtocolsError)
        assert str(result) == OutboundFailure.UNSUPPORTED_PROTOCOLS.value
        b.set_firewall_default(Rule.allow_all())
        async with serving(b, lambda rq: "pong"):
            assert await a.send_request(b.peer_id, "ping") == "pong"
        assert [e for e in drain_events(b) if not isinstance(e, CONNECTION_NOISE)] == []


async def test_ask_with_the_firewall_receiver_dropped_rejects() -> None:
    async with networks(ALLOW, {"firewall": FirewallRules(Rule.ask())}) as (a, b):
        await link(a, b)
        b.close_firewall_requests()
        result = await outcome(a.send_request(b.peer_id, "ping"))
        assert isinstance(result, RequestConnectionClosedError), result
        event = await next_event(b, InboundRequestFailed, skip=CONNECTION_NOISE)
        assert event.failure is InboundFailure.NOT_PERMITTED


async def test_requests_receiver_dropped_reports_an_omission() -> None:
    async with networks(ALLOW, ALLOW) as (a, b):
        await link(a, b)
        b.requests().close_receiver()
        result = await outcome(a.send_request(b.peer_id, "ping"))
        assert isinstance(result, RequestConnectionClosedError | RequestTimeoutError), result
        # compat: omitted responses are reported (not silent, as in the seed).
        event = await next_event(b, InboundRequestFailed, skip=CONNECTION_NOISE)
        assert event.failure is InboundFailure.RESPONSE_OMISSION
        assert b.requests().dropped == 1


async def test_ban_closes_and_refuses_the_peer_and_unban_lets_it_back() -> None:
    async with networks(ALLOW, ALLOW) as (a, b):
        addr = await link(a, b)
        await a.connect_peer(b.peer_id)
        await next_event(a, ConnectionEstablished)
        await a.ban_peer(b.peer_id)
        closed = await next_event(a, ConnectionClosed)
        assert closed.peer == b.peer_id
        assert not a.is_connected(b.peer_id)
        with pytest.raises(BannedPeerError, match="Peer is banned"):
            await a.connect_peer(b.peer_id)
        failed = await outcome(a.send_request(b.peer_id, "ping"))
        assert isinstance(failed, RequestDialError)
        assert failed.kind is OutboundFailure.DIAL_FAILURE
        assert str(failed).startswith(OutboundFailure.DIAL_FAILURE.value)
        # An inbound connection from the banned peer is closed, never "established".
        a_addr = await listen(a)
        b.add_address(a.peer_id, a_addr)
        inbound = await outcome(b.send_request(a.peer_id, "ping"))
        assert isinstance(inbound, RequestConnectionClosedError | RequestDialError), inbound
        refused = await next_event(a, IncomingConnectionError, skip=(NewListenAddr,))
        assert isinstance(refused.error, BannedPeerError)
        events: list[Any] = drain_events(a)
        assert not any(isinstance(e, ConnectionEstablished) for e in events), events
        a.unban_peer(b.peer_id)
        assert (await a.connect_peer(b.peer_id)).without_peer_id() == addr
        async with serving(b, lambda rq: "pong"):
            assert await a.send_request(b.peer_id, "ping") == "pong"
