"""A circuit address that names no other peer fails its dial at once (issue 8 item 10):
``…/p2p/RELAY/p2p-circuit`` has no target, and ``…/p2p/RELAY/p2p-circuit/p2p/RELAY``
(what a target-less circuit address becomes as the relay's address in the address book)
used to wait out the whole dial timeout for a dial of the relay waiting on itself.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from aiop2p.config import NodeConfig
from aiop2p.errors import DialError, RequestDialError
from aiop2p.network import Network
from aiop2p.network.firewall import FirewallRules
from aiop2p.services.relay.server import RelayServerConfig

pytestmark = pytest.mark.timeout(30)

FAR = 600.0
"""Dial and request timeouts far beyond the test's cap: only an immediate error passes."""
CAP = 10.0


def client() -> Network[object, object]:
    node = replace(NodeConfig(), dial_timeout=FAR, handshake_timeout=FAR)
    return Network(firewall=FirewallRules.allow_none(), mdns=None, request_timeout=FAR, node=node)


async def test_circuit_without_target_fails_at_once() -> None:
    relay: Network[object, object] = Network(
        firewall=FirewallRules.allow_none(), relay_server=RelayServerConfig(), mdns=None
    )
    async with relay, client() as net:
        bound = await relay.start_listening("/ip4/127.0.0.1/tcp/0")
        circuit = bound.with_peer_id(relay.peer_id) / "/p2p-circuit"

        with pytest.raises(DialError) as dialled:
            async with asyncio.timeout(CAP):
                await net._node.dial(circuit)
        assert "/p2p/<target>" in str(dialled.value)  # not "no transport can dial"

        with pytest.raises(DialError) as to_relay:
            async with asyncio.timeout(CAP):
                await net._node.dial(circuit.with_peer_id(relay.peer_id))
        assert "the relay itself" in str(to_relay.value)

        # The address book path: the circuit address stored as the relay's own address.
        net.add_address(relay.peer_id, circuit)
        with pytest.raises(RequestDialError) as sent:
            async with asyncio.timeout(CAP):
                await net.send_request(relay.peer_id, "hello")
        assert "the relay itself" in repr(sent.value.__cause__), sent.value.__cause__
