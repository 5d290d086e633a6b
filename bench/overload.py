"""Many connections, many requests in flight: does every request either succeed or fail
with an error that says what happened?

    .venv/bin/python bench/overload.py                        # 1000 connections x 100 requests,
                                                              # 1 and 32 in flight
    .venv/bin/python bench/overload.py --connections 200 --requests 20 --in-flight 32
    .venv/bin/python bench/overload.py --busy 2               # two CPU hogs: a busy machine
    .venv/bin/python bench/overload.py --markdown             # a table row per run

A server ``Network`` (firewall allow-all, answering every request) runs in a process of its
own; this process holds one client ``Network`` per connection, each sending ``--requests``
requests with ``--in-flight`` of them outstanding at a time.  Every outcome is counted by
kind: ``ok``, or the exception class name.  Each run is bounded by ``--time-limit`` seconds;
requests still running then are counted as ``unfinished``.  Exit status 1 if a request on
an idle run (no ``--busy``) did not succeed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiop2p.errors import P2PError
from aiop2p.identity import PeerId
from aiop2p.multiaddr import Multiaddr
from aiop2p.network import Network
from aiop2p.network.firewall import FirewallRules

MAX_CONNECTIONS = 5000
MAX_REQUESTS_PER_CONNECTION = 10_000
MAX_IN_FLIGHT = 1024
DIAL_BATCH = 16
"""Dials at once: below the server's ``max_pending_incoming_per_ip`` (32)."""
SERVER_START_TIMEOUT = 30.0
FD_HEADROOM = 64
SCRIPT = str(Path(__file__).resolve())


def raise_fd_limit(needed: int) -> None:
    """One process holds ``needed`` sockets: raise RLIMIT_NOFILE up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + FD_HEADROOM
    if soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < want:
            print(f"warning: RLIMIT_NOFILE hard limit {hard} < {want}", file=sys.stderr)


# -- server ------------------------------------------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    overrides: dict[str, Any] = {}
    if args.server_request_timeout is not None:
        overrides["request_timeout"] = args.server_request_timeout
    for name in (
        "max_concurrent_inbound_requests",
        "max_concurrent_inbound_requests_per_connection",
    ):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    server: Network[Any, Any] = Network(
        firewall=FirewallRules.allow_all(),
        mdns=None,
        dcutr=None,
        relay_client=False,
        connection_timeout=120.0,
        **overrides,
    )
    async with server as net:
        addr = await net.start_listening("/ip4/127.0.0.1/tcp/0")
        print(json.dumps({"addr": str(addr), "peer": str(net.peer_id)}), flush=True)
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        async def answer() -> None:
            async for request in net.requests():
                with contextlib.suppress(P2PError):
                    request.respond_nowait(request.request)

        task = asyncio.ensure_future(answer())
        await reader.read()  # until the parent closes our stdin
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- clients -----------------------------------------------------------------------------


async def run_clients(
    args: argparse.Namespace, server: PeerId, addr: Multiaddr, in_flight: int
) -> dict[str, Any]:
    outcomes: collections.Counter[str] = collections.Counter()
    clients: list[Network[Any, Any]] = []
    overrides: dict[str, Any] = {"connection_timeout": 120.0}
    if args.request_timeout is not None:
        overrides["request_timeout"] = args.request_timeout
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(args.connections):
            net: Network[Any, Any] = Network(mdns=None, dcutr=None, relay_client=False, **overrides)
            clients.append(await stack.enter_async_context(net))
            net.add_address(server, addr)
        t0 = time.perf_counter()
        dial_failures = 0
        for i in range(0, len(clients), DIAL_BATCH):
            batch = clients[i : i + DIAL_BATCH]
            results = await asyncio.gather(
                *(c.connect_peer(server) for c in batch), return_exceptions=True
            )
            # A connection that failed is dialled again by its first request.
            dial_failures += sum(isinstance(r, P2PError) for r in results)
        dial_s = time.perf_counter() - t0

        async def worker(net: Network[Any, Any], share: int, base: int) -> None:
            for j in range(share):
                value = base + j
                try:
                    reply = await net.send_request(server, value)
                except P2PError as exc:
                    outcomes[type(exc).__name__] += 1
                else:
                    outcomes["ok" if reply == value else "wrong reply"] += 1

        tasks = []
        for c, net in enumerate(clients):
            shares = [
                args.requests // in_flight + (k < args.requests % in_flight)
                for k in range(in_flight)
            ]
            base = c * args.requests
            for share in shares:
                if share:
                    tasks.append(asyncio.ensure_future(worker(net, share, base)))
                    base += share
        t0 = time.perf_counter()
        _, pending = await asyncio.wait(tasks, timeout=args.time_limit)
        elapsed = time.perf_counter() - t0
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        total = args.connections * args.requests
        finished = sum(outcomes.values())
        if finished < total:
            outcomes["unfinished"] += total - finished
    return {
        "connections": args.connections,
        "requests": args.requests,
        "in_flight": in_flight,
        "busy": args.busy,
        "total": total,
        "ok": outcomes.get("ok", 0),
        "lost": total - outcomes.get("ok", 0),
        "outcomes": dict(sorted(outcomes.items())),
        "dial_s": round(dial_s, 2),
        "dial_failures": dial_failures,
        "requests_s": round(elapsed, 2),
        "req_per_s": round(finished / elapsed) if elapsed else 0,
    }


def hog() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


async def main(args: argparse.Namespace) -> int:
    raise_fd_limit(2 * args.connections)
    cmd = [sys.executable, SCRIPT, "--serve"]
    for name in (
        "server_request_timeout",
        "max_concurrent_inbound_requests",
        "max_concurrent_inbound_requests_per_connection",
    ):
        value = getattr(args, name)
        if value is not None:
            cmd += [f"--{name.replace('_', '-')}", str(value)]
    hogs = [hog() for _ in range(args.busy)]
    server = await asyncio.create_subprocess_exec(
        *cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    failed = False
    try:
        assert server.stdout is not None and server.stdin is not None
        line = await asyncio.wait_for(server.stdout.readline(), SERVER_START_TIMEOUT)
        hello = json.loads(line)
        peer, addr = PeerId.from_string(hello["peer"]), Multiaddr(hello["addr"])
        for in_flight in args.in_flight:
            result = await run_clients(args, peer, addr, in_flight)
            failed |= result["lost"] > 0 and not args.busy
            if args.markdown:
                kinds = ", ".join(f"{k} {v}" for k, v in result["outcomes"].items())
                print(
                    f"| {result['connections']} x {result['requests']} | {in_flight} |"
                    f" {'busy' if args.busy else 'idle'} | {result['total']} |"
                    f" {result['lost']} | {kinds} | {result['requests_s']} s |",
                    flush=True,
                )
            else:
                print(json.dumps(result), flush=True)
    finally:
        for p in hogs:
            p.kill()
            p.wait()
        if server.stdin is not None:
            server.stdin.close()
        try:
            await asyncio.wait_for(server.wait(), 10)
        except TimeoutError:
            server.kill()
            await server.wait()
    return 1 if failed else 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    def bounded(lo: int, hi: int) -> Any:
        def conv(text: str) -> int:
            value = int(text)
            if not lo <= value <= hi:
                raise argparse.ArgumentTypeError(f"must be in [{lo}, {hi}]")
            return value

        return conv

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--connections", type=bounded(1, MAX_CONNECTIONS), default=1000)
    p.add_argument(
        "--requests",
        type=bounded(1, MAX_REQUESTS_PER_CONNECTION),
        default=100,
        help="requests per connection",
    )
    p.add_argument(
        "--in-flight",
        type=bounded(1, MAX_IN_FLIGHT),
        nargs="+",
        default=[1, 32],
        help="requests outstanding per connection (one run per value)",
    )
    p.add_argument(
        "--busy",
        type=bounded(0, 16),
        default=0,
        help="CPU-burning processes to run alongside (a busy machine)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=600.0,
        help="seconds each run may take; requests still running are 'unfinished'",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=None,
        help="the clients' request_timeout (default: NetworkConfig's)",
    )
    p.add_argument("--server-request-timeout", type=float, default=None)
    p.add_argument("--max-concurrent-inbound-requests", type=int, default=None)
    p.add_argument("--max-concurrent-inbound-requests-per-connection", type=int, default=None)
    p.add_argument("--markdown", action="store_true")
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    if arguments.serve:
        asyncio.run(serve(arguments))
    else:
        sys.exit(asyncio.run(main(arguments)))
