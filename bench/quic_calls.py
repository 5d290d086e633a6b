"""Python function calls and CPU per small request, TCP beside QUIC, both peers in one process.

A server node (the ``/p2p/1.0.0`` echo of ``bench/aiop2p_peer.py``) and one client node per
transport run on one event loop; each round sends sequential 64 B echo requests (a new
stream each) over TCP, then over QUIC, then the same through the Network API (``rr``: two
``Network`` s over TCP, JSON codec, the server's firewall allow-all, answered with
``respond_nowait`` as ``bench/aiop2p_peer.py --network`` does).  Per request it prints the
process's CPU time (client and server together: ``time.process_time``) and the latency p50,
and with ``--calls`` the Python function calls cProfile counts (a deterministic count: it does
not move with the machine's load, which CPU and latency do).  Alternate rounds put a busy
spell of the shared machine on every workload.

    .venv/bin/python bench/quic_calls.py [--requests N] [--rounds N] [--calls]
                                         [--profile DIR] [--only tcp|quic|rr]

``--profile DIR`` writes the last round's profiles (``DIR/{tcp,quic,rr}.prof``) for pstats.
``--only`` measures one workload: under cachegrind, the instructions per request of one
workload are the difference of two runs with different ``--requests``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiop2p_peer  # the bench peer's echo handler and client (bench/ is on the path)

from aiop2p._aio.quic_transport import QuicTransport
from aiop2p.identity import KeyPair
from aiop2p.network import Network
from aiop2p.network.firewall import FirewallRules
from aiop2p.node import Node
from aiop2p.transports.tcp import TcpTransport

WARMUP_REQUESTS = 300
TRANSPORTS = {"tcp": "/ip4/127.0.0.1/tcp/0", "quic": "/ip4/127.0.0.1/udp/0/quic-v1"}
WORKLOADS = [*TRANSPORTS, "rr"]

Requests = Callable[[int], Awaitable[list[float]]]
"""Sends ``count`` sequential requests; their latencies."""


def timed(send: Callable[[Any], Awaitable[Any]], message: Any) -> Requests:
    """Requests that ``send`` ``message`` and check that the reply is the message."""

    async def requests(count: int) -> list[float]:
        latencies = []
        for _ in range(count):
            start = time.perf_counter()
            reply = await send(message)
            latencies.append(time.perf_counter() - start)
            if reply != message:
                raise RuntimeError(f"the reply is not the request: {reply!r}")
        return latencies

    return requests


async def echo_workloads(stack: contextlib.AsyncExitStack, only: str | None) -> dict[str, Requests]:
    def node() -> Node:
        return Node(KeyPair.generate(), transports=[TcpTransport(), QuicTransport()])

    server, tcp_client, quic_client = node(), node(), node()
    for each in (server, tcp_client, quic_client):
        await stack.enter_async_context(each)
    server.set_stream_handler(aiop2p_peer.ECHO_PROTOCOL, aiop2p_peer.handle_echo)
    workloads: dict[str, Requests] = {}
    for transport, client in (("tcp", tcp_client), ("quic", quic_client)):
        if only is not None and transport != only:
            continue
        (addr,) = await server.listen(TRANSPORTS[transport])
        conn = await client.dial(addr.with_peer_id(server.peer_id))
        workloads[transport] = timed(partial(aiop2p_peer.Peer(client).echo_once, conn), bytes(64))
    return workloads


async def network_workload(stack: contextlib.AsyncExitStack) -> Requests:
    common: dict[str, Any] = {"mdns": None, "dcutr": None, "relay_client": False}
    server: Network[Any, Any] = Network(
        firewall=FirewallRules.allow_all(), connection_timeout=3600.0, **common
    )
    client: Network[Any, Any] = Network(connection_timeout=3600.0, **common)
    await stack.enter_async_context(server)
    await stack.enter_async_context(client)
    client.add_address(server.peer_id, await server.start_listening(TRANSPORTS["tcp"]))

    async def answer() -> None:
        async for request in server.requests():
            request.respond_nowait(request.request)

    responder = asyncio.create_task(answer())
    stack.callback(responder.cancel)
    # The JSON codec's string: 66 bytes on the wire, as bench_echo's 64.
    return timed(partial(client.send_request, server.peer_id), "x" * 64)


async def main(args: argparse.Namespace) -> None:
    async with contextlib.AsyncExitStack() as stack:
        workloads = await echo_workloads(stack, args.only) if args.only != "rr" else {}
        if args.only in (None, "rr"):
            workloads["rr"] = await network_workload(stack)
        for requests in workloads.values():
            await requests(WARMUP_REQUESTS)
        for round_ in range(args.rounds):
            for transport, requests in workloads.items():
                gc.collect()
                profile = cProfile.Profile() if args.calls or args.profile else None
                if profile is not None:
                    profile.enable()
                cpu = time.process_time()
                latencies = await requests(args.requests)
                cpu = time.process_time() - cpu
                line = (
                    f"round {round_ + 1} {transport}: {cpu / args.requests * 1e6:.0f} µs CPU "
                    f"per request, p50 {statistics.median(latencies) * 1e3:.3f} ms"
                )
                if profile is not None:
                    profile.disable()
                    stats = pstats.Stats(profile)
                    line += f", {stats.total_calls / args.requests:.0f} calls per request"  # type: ignore[attr-defined]
                    if args.profile is not None and round_ == args.rounds - 1:
                        args.profile.mkdir(parents=True, exist_ok=True)
                        stats.dump_stats(args.profile / f"{transport}.prof")
                    line += " (profiled: CPU and p50 include cProfile's overhead)"
                print(line, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000, help="requests per round (2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, TCP, QUIC, rr (3)")
    parser.add_argument("--calls", action="store_true", help="count calls (cProfile)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR")
    parser.add_argument("--only", choices=WORKLOADS, default=None)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
