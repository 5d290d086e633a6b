"""Python function calls and CPU per sequential Network request, both peers in one process.

Two ``Network`` s (JSON codec, the server's firewall allow-all, as ``bench/aiop2p_peer.py
--network``) on one event loop over loopback TCP; the server answers every request with its
own value through ``respond_nowait``, the client sends 64-character strings one after the
other.  Per round it prints the process's CPU time per request (client and server together)
and, with ``--calls``, cProfile's count of Python calls (deterministic: it does not move with
the machine's load).  Under cachegrind the instructions per request are the difference of
two runs with different ``--requests`` (``PYTHONHASHSEED=0``), as with ``bench/quic_calls.py``.

    .venv/bin/python bench/rr_calls.py [--requests N] [--rounds N] [--calls] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import sys
import time
from pathlib import Path
from typing import Any

from aiop2p.network import Network
from aiop2p.network.firewall import FirewallRules

WARMUP_REQUESTS = 300


async def requests(client: Network[Any, Any], server: Network[Any, Any], count: int) -> None:
    text = "x" * 64
    target = server.peer_id
    for _ in range(count):
        if await client.send_request(target, text) != text:
            raise RuntimeError("the reply is not the request")


async def answer(network: Network[Any, Any]) -> None:
    async for request in network.requests():
        request.respond_nowait(request.request)


async def main(args: argparse.Namespace) -> None:
    common: dict[str, Any] = {"mdns": None, "dcutr": None, "relay_client": False}
    server: Network[Any, Any] = Network(
        firewall=FirewallRules.allow_all(), connection_timeout=3600.0, **common
    )
    client: Network[Any, Any] = Network(connection_timeout=3600.0, **common)
    async with server, client:
        addr = await server.start_listening("/ip4/127.0.0.1/tcp/0")
        client.add_address(server.peer_id, addr)
        responder = asyncio.create_task(answer(server))
        await requests(client, server, WARMUP_REQUESTS)
        for round_ in range(args.rounds):
            gc.collect()
            profile = cProfile.Profile() if args.calls or args.profile else None
            if profile is not None:
                profile.enable()
            cpu = time.process_time()
            await requests(client, server, args.requests)
            cpu = time.process_time() - cpu
            line = f"round {round_ + 1}: {cpu / args.requests * 1e6:.0f} µs CPU per request"
            if profile is not None:
                profile.disable()
                stats = pstats.Stats(profile)
                line += f", {stats.total_calls / args.requests:.0f} calls per request"  # type: ignore[attr-defined]
                if args.profile is not None and round_ == args.rounds - 1:
                    stats.dump_stats(args.profile)
            print(line, flush=True)
        responder.cancel()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000, help="requests per round (2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument("--calls", action="store_true", help="count calls (cProfile)")
    parser.add_argument("--profile", type=Path, default=None, metavar="FILE")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
