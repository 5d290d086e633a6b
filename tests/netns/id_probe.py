"""Peer b's measuring side of ``test_reach_by_id.py``: found by id, then timed requests.

``python id_probe.py PEER_ID BOOTSTRAP_ADDR N`` looks ``PEER_ID`` up in the DHT through
``BOOTSTRAP_ADDR`` (timed), sends one request (the relayed dial and the request, timed),
then ``N`` more on that connection, and prints one JSON line:
``{"lookup_seconds", "addrs", "first_seconds", "latencies", "relayed", "echo"}``.
The figures are printed by the test; nothing asserts a speed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiop2p import FirewallRules, JsonCodec, KadConfig, Multiaddr, Network, NodeConfig, PeerId

CAP = 20.0
"""Seconds for the whole probe."""


async def main(target: str, bootstrap: str, count: int) -> None:
    peer = PeerId.from_string(target)
    kad = KadConfig(mode="client", bootstrap=(Multiaddr(bootstrap),))
    net: Network[object, object] = Network(
        firewall=FirewallRules.allow_none(), codec=JsonCodec(), node=NodeConfig(kad=kad)
    )
    async with asyncio.timeout(CAP), net:
        node = net._node
        assert node.kad is not None
        started = time.perf_counter()
        addrs = await node.kad.find_peer(peer)
        lookup = time.perf_counter() - started
        started = time.perf_counter()
        echo = await net.send_request(peer, {"n": 0})
        first = time.perf_counter() - started
        latencies = []
        for n in range(1, count + 1):
            started = time.perf_counter()
            await net.send_request(peer, {"n": n})
            latencies.append(time.perf_counter() - started)
        relayed = [conn.is_relayed for conn in node.connections_to(peer)]
    print(json.dumps({
        "lookup_seconds": lookup, "addrs": [str(a) for a in addrs], "first_seconds": first,
        "latencies": latencies, "relayed": relayed, "echo": echo,
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
