"""Python function calls and CPU per small request, TCP beside QUIC, both peers in one process.

A server node (the ``/p2p/1.0.0`` echo of ``bench/aiop2p_peer.py``) and one client node per
transport run on one event loop; each round sends sequential 64 B echo requests (a new
stream each) over TCP, then over QUIC.  Per request it prints the process's CPU time
(client and server together: ``time.process_time``) and the latency p50, and with
``--calls`` the Python function calls cProfile counts (a deterministic count: it does not
move with the machine's load, which CPU and latency do).  Alternate rounds put a busy
spell of the shared machine on both transports.

    .venv/bin/python bench/quic_calls.py [--requests N] [--rounds N] [--calls]
                                         [--profile DIR] [--only tcp|quic]

``--profile DIR`` writes the last round's profiles (``DIR/{tcp,quic}.prof``) for pstats.
``--only`` measures one transport: under cachegrind, the instructions per echo of one
transport are the difference of two runs with different ``--requests``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import statistics
import sys
import time
from pathlib import Path

import aiop2p_peer  # the bench peer's echo handler and client (bench/ is on the path)

from aiop2p._aio.connection import Connection
from aiop2p._aio.quic_transport import QuicTransport
from aiop2p.identity import KeyPair
from aiop2p.node import Node
from aiop2p.transports.tcp import TcpTransport

WARMUP_REQUESTS = 300
TRANSPORTS = {"tcp": "/ip4/127.0.0.1/tcp/0", "quic": "/ip4/127.0.0.1/udp/0/quic-v1"}


async def requests(peer: aiop2p_peer.Peer, conn: Connection, count: int) -> list[float]:
    payload = bytes(64)
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        response = await peer.echo_once(conn, payload)
        latencies.append(time.perf_counter() - start)
        if len(response) != len(payload):
            raise RuntimeError(f"echo of {len(response)} bytes, sent {len(payload)}")
    return latencies


async def main(args: argparse.Namespace) -> None:
    def node() -> Node:
        return Node(KeyPair.generate(), transports=[TcpTransport(), QuicTransport()])

    server, tcp_client, quic_client = node(), node(), node()
    async with server, tcp_client, quic_client:
        server.set_stream_handler(aiop2p_peer.ECHO_PROTOCOL, aiop2p_peer.handle_echo)
        conns: dict[str, tuple[aiop2p_peer.Peer, Connection]] = {}
        for transport, client in (("tcp", tcp_client), ("quic", quic_client)):
            if args.only is not None and transport != args.only:
                continue
            (addr,) = await server.listen(TRANSPORTS[transport])
            conn = await client.dial(addr.with_peer_id(server.peer_id))
            conns[transport] = (aiop2p_peer.Peer(client), conn)
            await requests(*conns[transport], WARMUP_REQUESTS)
        for round_ in range(args.rounds):
            for transport, (peer, conn) in conns.items():
                gc.collect()
                profile = cProfile.Profile() if args.calls or args.profile else None
                if profile is not None:
                    profile.enable()
                cpu = time.process_time()
                latencies = await requests(peer, conn, args.requests)
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
    parser.add_argument("--rounds", type=int, default=3, help="rounds, TCP then QUIC (3)")
    parser.add_argument("--calls", action="store_true", help="count calls (cProfile)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR")
    parser.add_argument("--only", choices=sorted(TRANSPORTS), default=None)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
