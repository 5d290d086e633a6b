"""Relayed listening through a ``Network`` survives a relay restart: the events say the
reservation was lost and restored, and requests reach the listener again through the
same circuit address, without a new ``start_relayed_listening``."""

from __future__ import annotations

from typing import Any

import pytest

from aiop2p.events import (
    ConnectionClosed,
    ConnectionEstablished,
    ListenerClosed,
    ListenerError,
    NewListenAddr,
    RelayReservationLost,
    RelayReservationRestored,
)
from aiop2p.identity import KeyPair
from aiop2p.network import RelayClientConfig, RelayServerConfig
from aiop2p.network.firewall import FirewallRules

from .conftest import drain_events, listen, networks, next_event, serving

pytestmark = pytest.mark.timeout(60)

FAST = RelayClientConfig(refresh_backoff_initial_seconds=0.05, refresh_backoff_max_seconds=0.5)
# No hole punching: loopback has nothing to punch, and its events are not this test's.
LISTENER: dict[str, Any] = {
    "firewall": FirewallRules.allow_all(),
    "relay_client": FAST,
    "dcutr": None,
}
CONNECTIONS = (ConnectionEstablished, ConnectionClosed, NewListenAddr)


async def test_relay_restart_is_reported_and_survived() -> None:
    relay_key = KeyPair.generate()
    relay_config: dict[str, Any] = {"relay_server": RelayServerConfig()}
    async with (
        networks({**relay_config, "keys": relay_key}) as (r,),
        networks(LISTENER, {"dcutr": None}) as (
            t,
            client,
        ),
    ):
        relay_addr = await listen(r)
        circuit = await t.start_relayed_listening(r.peer_id, relay_addr)
        client.add_address(t.peer_id, circuit)
        async with serving(t):
            assert await client.send_request(t.peer_id, "before") == "before"
            drain_events(t)
            await r.close()
            lost = await next_event(t, RelayReservationLost, skip=CONNECTIONS)
            assert lost.relay == r.peer_id
            # Retrying while the relay is down: failed attempts, the listener stays.
            await next_event(t, ListenerError, skip=CONNECTIONS)
            async with networks({**relay_config, "keys": relay_key}) as (r2,):
                await r2.start_listening(relay_addr)
                restored = await next_event(
                    t, RelayReservationRestored, skip=(*CONNECTIONS, ListenerError), cap=10
                )
                assert restored.relay == r.peer_id and restored.attempts >= 2
                assert [lst.uses_relay for lst in t.listeners()] == [r.peer_id]
                assert await client.send_request(t.peer_id, "after") == "after"
                # Stopping the listener stops the re-reserving.
                assert await t.stop_listening_relay(r.peer_id)
                await next_event(t, ListenerClosed, skip=CONNECTIONS)
                assert t.relay_client is not None and t.relay_client.reservations == {}
