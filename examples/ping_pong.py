"""Alice pings Bob, Bob answers Pong: two peers in one process (the seed's ping-pong example).

    python examples/ping_pong.py

Both peers accept every request (``FirewallRules.allow_all()``), time out requests and idle
connections after 1 s, and keep mDNS off: Alice is told Bob's address directly.
"""

from __future__ import annotations

import asyncio

from aiop2p import ChannelConfig, ChannelSinkConfig, FirewallRules, Network

# The seed's `Ping` and `Pong` are unit structs: JSON `null` on the wire.
Ping = None
Pong = None


def _network() -> Network[object, object]:
    return Network(
        firewall=FirewallRules.allow_all(),
        firewall_channel_capacity=10,
        requests_channel=ChannelConfig(10, ChannelSinkConfig.BUFFER_LATEST),
        connection_timeout=1.0,
        request_timeout=1.0,
        mdns=None,
    )


async def main() -> object:
    """Run the exchange; return what Alice received."""
    async with _network() as alice, _network() as bob:
        # As in the seed: nobody answers firewall questions, and Alice takes no requests.
        for net in (alice, bob):
            net.close_firewall_requests()
        alice.requests().close_receiver()
        bob_addr = await bob.start_listening("/ip4/0.0.0.0/tcp/0")
        alice.add_address(bob.peer_id, bob_addr)

        async def alice_side() -> object:
            print("[Alice] Sending Ping to Bob.", flush=True)
            result = await alice.send_request(bob.peer_id, Ping)
            shown = "Pong" if result is Pong else repr(result)
            print(f"[Alice] Result: Ok({shown}).", flush=True)
            return result

        async def bob_side() -> None:
            request = await bob.requests().receive()
            if request.peer == alice.peer_id and request.request is Ping:
                print("[Bob] Received Ping from Alice.", flush=True)
            await request.respond(Pong)
            print("[Bob] Sending Pong back to Alice.", flush=True)

        result, _ = await asyncio.gather(alice_side(), bob_side())
        return result


if __name__ == "__main__":
    asyncio.run(main())
