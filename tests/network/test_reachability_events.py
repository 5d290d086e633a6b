"""AutoNAT verdicts and the automatic relays reach a ``Network`` user as events.

A (AutoNAT client, ``auto_relay`` on) asks R (relay and AutoNAT server) about its
loopback address.  R's AutoNAT answers are replaced by hostile ones: a server that says
it could not dial (a lie: the address is reachable) makes A "not reachable", so A
reserves on R and a third peer reaches A through the circuit; when R answers honestly
again, A is reachable and drops the relay.  A server that claims a dial-back it never
made, and a relay that refuses reservations, change nothing: no verdict, no relay, and
the event stream says exactly what happened, in order, and no more.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any, Literal

import pytest

from aiop2p import (
    AutonatConfig,
    AutoRelayAdded,
    AutoRelayConfig,
    AutoRelayRemoved,
    ListenerClosed,
    NetworkEvent,
    NewListenAddr,
    NodeConfig,
    ReachabilityChanged,
    RelayServerConfig,
)
from aiop2p._aio.stream import Stream
from aiop2p.errors import InvalidArgumentError
from aiop2p.multiaddr import Multiaddr
from aiop2p.network import Network, RelayClientConfig
from aiop2p.network.firewall import FirewallRules
from aiop2p.protocols.autonat_v2 import (
    DIAL_REQUEST_PROTOCOL_ID,
    DialResponse,
    DialStatus,
    ResponseStatus,
    encode_message,
)

from ..helpers import wait_for
from .conftest import drain_events, listen, new_network, serving

pytestmark = pytest.mark.timeout(60)

INTERESTING = (ReachabilityChanged, AutoRelayAdded, AutoRelayRemoved, NewListenAddr, ListenerClosed)
FAST_RELAY = RelayClientConfig(
    reservation_timeout=2.0,
    refresh_backoff_initial_seconds=0.05,
    refresh_backoff_max_seconds=0.4,
)


def autonat_client(**kw: Any) -> AutonatConfig:
    """Asks again soon, one server is enough, loopback counts."""
    base: dict[str, Any] = {
        "server": False,
        "confidence": 1,
        "allow_loopback_addrs": True,
        "check_interval_seconds": 0.2,
        "recheck_interval_seconds": 0.3,
        "request_timeout": 5.0,
    }
    return AutonatConfig(**{**base, **kw})


async def relay_node(
    stack: AsyncExitStack, config: RelayServerConfig | None = None
) -> Network[Any, Any]:
    """What ``aiop2p relay`` runs: a relay that is an AutoNAT server."""
    net = await stack.enter_async_context(
        new_network(
            firewall=FirewallRules.allow_all(),
            relay_server=config or RelayServerConfig(),
            dcutr=None,
            node=NodeConfig(autonat=AutonatConfig(client=False, allow_loopback_addrs=True)),
        )
    )
    await listen(net)
    return net


async def behind_nat(
    stack: AsyncExitStack,
    *relays: Network[Any, Any],
    mode: Literal["auto", "always"] = "auto",
    **autonat: Any,
) -> Network[Any, Any]:
    """A listens on loopback and relays automatically (``auto``: while not reachable),
    on ``relays`` in order."""
    addrs = tuple(r.listeners()[0].addrs[0].with_peer_id(r.peer_id) for r in relays)
    net = await stack.enter_async_context(
        new_network(
            firewall=FirewallRules.allow_all(),
            relay_client=FAST_RELAY,
            dcutr=None,
            node=NodeConfig(autonat=autonat_client(**autonat)),
            auto_relay=AutoRelayConfig(
                mode=mode, relays=addrs, discover=False, retry_after_seconds=30.0
            ),
        )
    )
    for relay in relays:
        net.add_address(relay.peer_id, relay.listeners()[0].addrs[0])
    await listen(net)
    return net


def answer_always(net: Network[Any, Any], status: DialStatus, calls: list[int]) -> None:
    """``net``'s AutoNAT server answers every request with ``status`` and dials nothing."""

    async def lie(stream: Stream) -> None:
        calls.append(1)
        await stream.read_message(8192)
        await stream.write_message(encode_message(DialResponse(ResponseStatus.OK, 0, status)))
        await stream.close()

    net._node.set_stream_handler(DIAL_REQUEST_PROTOCOL_ID, lie)


def kinds(events: list[NetworkEvent]) -> list[str]:
    return [type(e).__name__ for e in events if isinstance(e, INTERESTING)]


async def collect_until(
    net: Network[Any, Any], seen: list[NetworkEvent], wanted: type, cap: float
) -> Any:
    """Events of ``net`` into ``seen`` until one is ``wanted`` (returned)."""

    def arrived() -> bool:
        seen.extend(drain_events(net))
        return any(isinstance(e, wanted) for e in seen)

    await wait_for(arrived, cap=cap)
    return next(e for e in seen if isinstance(e, wanted))


async def test_a_lying_autonat_server_drives_the_relay_and_the_truth_undoes_it() -> None:
    async with AsyncExitStack() as stack:
        r = await relay_node(stack)
        calls: list[int] = []
        answer_always(r, DialStatus.E_DIAL_ERROR, calls)
        a = await behind_nat(stack, r)
        a_addr = a.listeners()[0].addrs[0]
        drain_events(a)
        await a.connect_peer(r.peer_id)
        seen: list[NetworkEvent] = []
        added = await collect_until(a, seen, NewListenAddr, cap=15)
        circuit = added.addr
        assert circuit.is_circuit
        assert kinds(seen) == ["ReachabilityChanged", "AutoRelayAdded", "NewListenAddr"]
        verdict = next(e for e in seen if isinstance(e, ReachabilityChanged))
        assert verdict == ReachabilityChanged(a_addr, False, 1)
        relay_added = next(e for e in seen if isinstance(e, AutoRelayAdded))
        assert relay_added.relay == r.peer_id and relay_added.addr == circuit
        assert [lst.uses_relay for lst in a.listeners()] == [None, r.peer_id]
        # A peer that knows only the circuit address reaches A through R.
        async with AsyncExitStack() as inner:
            b = await inner.enter_async_context(new_network(dcutr=None))
            b.add_address(a.peer_id, circuit.with_peer_id(a.peer_id))
            async with serving(a):
                assert await b.send_request(a.peer_id, "via r") == "via r"
        # R tells the truth again: A is reachable and no longer needs the relay.
        assert r._node.autonat is not None
        r._node.set_stream_handler(DIAL_REQUEST_PROTOCOL_ID, r._node.autonat._serve)
        seen.clear()
        await collect_until(a, seen, ListenerClosed, cap=15)
        assert kinds(seen) == ["ReachabilityChanged", "AutoRelayRemoved", "ListenerClosed"]
        verdict = next(e for e in seen if isinstance(e, ReachabilityChanged))
        assert verdict == ReachabilityChanged(a_addr, True, 1)
        removed = next(e for e in seen if isinstance(e, AutoRelayRemoved))
        assert removed == AutoRelayRemoved(r.peer_id, None)
        assert [lst.uses_relay for lst in a.listeners()] == [None]
        assert a.auto_relay is not None and a.auto_relay.relays == {}


async def test_a_claimed_dial_back_changes_nothing() -> None:
    async with AsyncExitStack() as stack:
        r = await relay_node(stack)
        calls: list[int] = []
        # R claims it dialled A back, but no dial-back ever arrives: no vote.
        answer_always(r, DialStatus.OK, calls)
        a = await behind_nat(stack, r)
        drain_events(a)
        await a.connect_peer(r.peer_id)
        # Several rounds of questions, each answered with the lie.
        await wait_for(lambda: len(calls) >= 4, cap=15)
        assert kinds(drain_events(a)) == []
        assert a.auto_relay is not None and a.auto_relay.relays == {}
        assert [lst.uses_relay for lst in a.listeners()] == [None]


async def test_a_relay_that_refuses_is_passed_over_once() -> None:
    async with AsyncExitStack() as stack:
        # The first relay refuses A's reservation: its only slot is another peer's.
        full = await relay_node(stack, RelayServerConfig(max_reservations=1))
        squatter = await stack.enter_async_context(new_network(dcutr=None))
        await squatter.start_relayed_listening(full.peer_id, full.listeners()[0].addrs[0])
        r = await relay_node(stack)
        a = await behind_nat(stack, full, r, mode="always")
        seen: list[NetworkEvent] = []
        added = await collect_until(a, seen, AutoRelayAdded, cap=15)
        assert a.auto_relay is not None
        # Emitted together: the relay picked, then its listen address.
        relayed = [e for e in seen if isinstance(e, NewListenAddr) and e.addr.is_circuit]
        assert relayed == [NewListenAddr(added.addr)]
        # (AutoNAT's own verdicts run on their own schedule and may come in between.)
        relay_kinds = [k for k in kinds(seen) if k != "ReachabilityChanged"]
        assert relay_kinds[-2:] == ["AutoRelayAdded", "NewListenAddr"]
        assert [e.relay for e in seen if isinstance(e, AutoRelayAdded)] == [r.peer_id]
        assert set(a.auto_relay.relays) == {r.peer_id}
        # Asked again within retry_after_seconds: no retry of the refusal, no repeat.
        await a.auto_relay.update()
        await a.auto_relay.update()
        assert kinds(drain_events(a)) == []
        assert set(a.auto_relay.relays) == {r.peer_id}


async def test_auto_relay_needs_what_it_follows() -> None:
    with pytest.raises(InvalidArgumentError, match="AutoNAT"):
        Network(auto_relay=AutoRelayConfig(), mdns=None)
    with pytest.raises(InvalidArgumentError, match="relay_client"):
        Network(auto_relay=AutoRelayConfig(mode="always"), relay_client=False, mdns=None)
    relay = Multiaddr(
        "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
    )
    Network(auto_relay=AutoRelayConfig(mode="always", relays=(relay,)), mdns=None)
