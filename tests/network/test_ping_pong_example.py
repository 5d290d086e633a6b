"""The seed's ping-pong example as a test; the interactive dynamic firewall example is
run by ``tests/test_examples.py``."""

from __future__ import annotations

import asyncio

import pytest

from aiop2p.network import ChannelConfig
from aiop2p.network.event_channel import ChannelSinkConfig
from aiop2p.network.firewall import FirewallRules

from .conftest import networks

pytestmark = pytest.mark.timeout(20)

PEER = {
    "firewall": FirewallRules.allow_all(),
    "requests_channel": ChannelConfig(10, ChannelSinkConfig.BUFFER_LATEST),
    "connection_timeout": 1.0,
    "request_timeout": 1.0,
}


async def test_ping_pong_example_answers_ping_with_pong(capsys: pytest.CaptureFixture[str]) -> None:
    # Ping and Pong are unit structs: JSON null on the wire.
    async with networks(PEER, PEER) as (alice, bob):
        for peer in (alice, bob):
            peer.close_firewall_requests()  # the firewall receiver is dropped
        alice.requests().close_receiver()  # Alice's request receiver is dropped
        bob_addr = await bob.start_listening("/ip4/0.0.0.0/tcp/0")
        alice.add_address(bob.peer_id, bob_addr)

        async def alice_side() -> object:
            print("[Alice] Sending Ping to Bob.")
            result = await alice.send_request(bob.peer_id, None)
            print(f"[Alice] Result: Ok({'Pong' if result is None else repr(result)}).")
            return result

        async def bob_side() -> None:
            request = await bob.requests().receive()
            assert request.peer == alice.peer_id
            assert request.request is None
            print("[Bob] Received Ping from Alice.")
            await request.respond(None)
            print("[Bob] Sending Pong back to Alice.")

        result, _ = await asyncio.wait_for(asyncio.gather(alice_side(), bob_side()), 5)
        assert result is None  # Pong
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[Alice] Sending Ping to Bob."
    assert lines[-1] == "[Alice] Result: Ok(Pong)."
    assert lines.index("[Bob] Received Ping from Alice.") < lines.index(
        "[Bob] Sending Pong back to Alice."
    )
