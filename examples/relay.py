"""Two peers that cannot dial each other talk through a circuit relay.

Run: ``python examples/relay.py``.  Three networks in one process, on loopback:

* ``relay`` runs a relay server (off by default in every network);
* ``alice`` listens *through* the relay: she gets a circuit address;
* ``bob`` knows only that address and sends her a request.  The relay forwards the
  bytes of a connection that is encrypted end to end (Noise, Yamux) between Bob and
  Alice, and Alice's firewall decides on Bob's request as on any other.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiop2p import FirewallRules, Network, RelayServerConfig, Rule


async def main() -> Any:
    # mdns=None: no LAN discovery for this demo; dcutr=None: stay on the relayed path
    # (on loopback a direct connection would be found at once).
    common: dict[str, Any] = {"mdns": None, "dcutr": None}
    relay: Network[Any, Any] = Network(relay_server=RelayServerConfig(), **common)
    alice: Network[Any, Any] = Network(firewall=FirewallRules.empty(), **common)
    bob: Network[Any, Any] = Network(**common)
    async with relay, alice, bob:
        relay_addr = await relay.start_listening("/ip4/127.0.0.1/tcp/0")
        circuit = await alice.start_relayed_listening(relay.peer_id, relay_addr)
        print(f"[Alice] Reachable at {circuit}")
        alice.set_peer_rule(bob.peer_id, Rule.allow_all())

        async def answer() -> None:
            async for request in alice.requests():
                print(f"[Alice] Got {request.request!r} through the relay.")
                await request.respond({"hello": "Bob"})

        answering = asyncio.create_task(answer())
        bob.add_address(alice.peer_id, circuit)
        reply = await bob.send_request(alice.peer_id, {"hello": "Alice"})
        print(f"[Bob] Reply: {reply!r}")
        answering.cancel()
        return reply


if __name__ == "__main__":
    asyncio.run(main())
