"""Peer b's side of ``test_cli_punch.py``: reach a peer by id through the relay, then
watch DCUtR upgrade (or fail to upgrade) that connection while requests keep flowing.

``python punch_probe.py PEER_ID BOOTSTRAP_ADDR LISTEN_ADDRS EXPECT N`` listens on the
comma-separated ``LISTEN_ADDRS``, joins the DHT through ``BOOTSTRAP_ADDR``, hole-punches
with private addresses allowed (the lab's "public" segment is a private range), and sends
requests to ``PEER_ID`` (a bare id: a DHT lookup, then the relayed dial).  It goes on sending until
``EXPECT`` happened: ``upgraded`` (a ``DirectConnectionUpgraded``) or ``failed:K`` (K
``HolePunchFailed`` on this, the answering, side), then sends ``N`` more.  One JSON line
per hole-punch event as it happens (``{"event": ...}``), then a summary line
(``{"summary": ...}``) with each request's latency and whether it went relayed.  Only
the public API: connections are read from ``Network.established_connections``.  The test
prints the figures; nothing asserts a speed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from aiop2p import (
    ConnectedPoint,
    DcutrConfig,
    DirectConnectionUpgraded,
    FirewallRules,
    HolePunchFailed,
    HolePunchStarted,
    JsonCodec,
    KadConfig,
    Multiaddr,
    Network,
    NodeConfig,
    P2PError,
    PeerId,
)

CAP = 60.0
"""Seconds for the whole probe."""
DIAL_TIMEOUT = 3.0
"""Addresses are dialled in turn, and UDP gives no refusal: a QUIC address that drops
packets (the peer's private one, found in the DHT) costs this much before the next."""
FIRST_TRIES = 20
"""The first request may come before the relay knows the peer's circuit address."""
PAUSE_SECONDS = 0.05
"""Between requests while waiting for the hole punch (a pace, not a synchronisation: the
relay limits the data of a relayed connection, 128 KiB by default)."""
FAILURE_PAUSE_SECONDS = 0.2
"""The same while waiting for failures, which take longer (three connect timeouts)."""


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def main(target: str, bootstrap: str, listen: str, expect: str, count: int) -> None:
    peer = PeerId.from_string(target)
    net: Network[object, object] = Network(
        firewall=FirewallRules.allow_none(),
        codec=JsonCodec(),
        node=NodeConfig(
            kad=KadConfig(mode="client", bootstrap=(Multiaddr(bootstrap),)),
            dial_timeout=DIAL_TIMEOUT,
        ),
        dcutr=DcutrConfig(allow_private_addrs=True),
    )
    outcome = asyncio.Event()
    failures = 0
    outcome_at: float | None = None

    async def watch() -> None:
        nonlocal failures, outcome_at
        async for event in net.events():
            if isinstance(event, HolePunchStarted):
                emit({"event": "started", "attempt": event.attempt, "initiator": event.initiator})
            elif isinstance(event, DirectConnectionUpgraded):
                emit({"event": "upgraded", "addr": str(event.addr), "initiator": event.initiator,
                      "attempts": event.attempts})  # fmt: skip
                if expect == "upgraded":
                    outcome_at = time.perf_counter()
                    outcome.set()
            elif isinstance(event, HolePunchFailed):
                failures += 1
                emit({"event": "failed", "attempts": event.attempts, "initiator": event.initiator,
                      "error": str(event.error), "ours": [str(x) for x in event.local_addrs],
                      "theirs": [str(x) for x in event.remote_addrs]})  # fmt: skip
                if expect == f"failed:{failures}":
                    outcome_at = time.perf_counter()
                    outcome.set()

    async with asyncio.timeout(CAP), net:
        watcher = asyncio.get_running_loop().create_task(watch())

        def conns() -> list[ConnectedPoint]:
            """Our connections to the peer, in the order new streams pick them."""
            return next((c for p, c in net.established_connections() if p == peer), [])

        def relayed(point: ConnectedPoint) -> bool:
            return point.remote_addr is None or point.remote_addr.is_circuit

        for addr in listen.split(","):
            await net.start_listening(addr)
        emit({"ready": str(net.peer_id)})
        requests: list[dict[str, Any]] = []

        async def one(n: int) -> None:
            before = conns()
            started = time.perf_counter()
            echo = await net.send_request(peer, {"n": n})
            assert echo == {"n": n}, echo
            after = conns()
            # The connection a request takes is the first one (direct ones come first):
            # relayed if it was so before and after the request.
            requests.append({
                "n": n, "seconds": time.perf_counter() - started, "at": started,
                "relayed": bool(after) and relayed(after[0])
                and (not before or relayed(before[0])),
                "remote": str(after[0].remote_addr) if after else None,
            })  # fmt: skip

        n = 0
        for _ in range(FIRST_TRIES):
            try:
                await one(n)
                break
            except P2PError as exc:
                emit({"retry": str(exc)})
                await asyncio.sleep(0.5)
        else:
            raise SystemExit("no answer by id")
        first_at = requests[0]["at"] + requests[0]["seconds"]  # the first answer
        pause = PAUSE_SECONDS if expect == "upgraded" else FAILURE_PAUSE_SECONDS
        while not outcome.is_set():
            n += 1
            await one(n)
            await asyncio.sleep(pause)
        emit({"outcome": expect, "requests": len(requests)})
        for _ in range(count):
            n += 1
            await one(n)
        emit({"summary": {
            "requests": requests,
            "outcome_after_seconds": (outcome_at or 0.0) - first_at,
            "conns": [{"relayed": relayed(c), "remote": str(c.remote_addr)} for c in conns()],
        }})  # fmt: skip
        watcher.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
