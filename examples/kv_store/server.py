"""The key-value server: reachable only through a relay, its firewall questions answered
by its own code (writers may do anything, everyone else may only read).

    python examples/kv_store/server.py RELAY_MULTIADDR --writer PEER_ID ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

from kv_types import Delete, Entry, Get, Put, Range, Reply, Request, kv_network, range_protocol

from aiop2p import FirewallRequest, InboundRequest, Multiaddr, PeerRuleQuery, Rule

MAX_KEYS = 10_000  # every peer is hostile: the store is bounded too


def read_only(request: Request | Range) -> bool:
    return isinstance(request, Get | Range)


async def main(relay: Multiaddr, writers: set[str]) -> None:
    store: dict[str, str] = {}

    async def handle(request: InboundRequest[Request, Reply]) -> Reply:
        match request.request:
            case Get(key=key):
                return Reply(key in store, store.get(key))
            case Put(key=key, value=value):
                if key not in store and len(store) >= MAX_KEYS:
                    return Reply(False, error="the store is full")
                store[key] = value
                return Reply(True)
            case Delete(key=key):
                return Reply(store.pop(key, None) is not None)

    async def scan(request: InboundRequest[Range, Entry]) -> AsyncIterator[Entry]:
        start, end, limit = request.request.start, request.request.end, request.request.limit
        for key in sorted(key for key in store if start <= key < end)[:limit]:
            if key in store:  # not deleted while the requester was reading
                yield Entry(key, store[key])

    async def answer(question: FirewallRequest) -> None:
        if isinstance(question, PeerRuleQuery):  # a peer we have no rule for yet
            writer = str(question.peer) in writers
            question.answer(Rule.allow_all() if writer else Rule.restricted(read_only))

    async with kv_network(firewall_handler=answer) as net:
        ranges = range_protocol(net)
        assert relay.peer_id is not None, "the relay's address ends in /p2p/<id>"
        circuit = await net.start_relayed_listening(relay.peer_id, relay)
        print(f"serving at {circuit}", flush=True)
        async with asyncio.TaskGroup() as serving:
            serving.create_task(net.serve(handle))
            serving.create_task(ranges.serve(scan))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a key-value store behind a relay")
    parser.add_argument("relay", type=Multiaddr, help="the relay's address, /p2p/<id> included")
    parser.add_argument("--writer", action="append", default=[], help="a peer that may write")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the network closes on the way out
        asyncio.run(main(args.relay, set(args.writer)))
