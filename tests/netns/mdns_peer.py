"""An aiop2p peer with mDNS discovery, driven over JSON lines (run inside a namespace).

stdout: ``{"event": "ready", "peerId", "addrs"}``, then one
``{"event": "discovered", "peerId", "addrs", "t"}`` or ``{"event": "expired", "peerId", "t"}``
per discovery event (``t`` = seconds since mDNS started).

stdin commands, one JSON object per line, answered with the same ``id`` and ``ok``:
``{"cmd": "ping", "peerId"}`` (dials through the peer store, i.e. the discovered
addresses, unless ``"addrs"`` are given), ``{"cmd": "echo", "peerId", "data"}``
(``/p2p/1.0.0``), ``{"cmd": "quit"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from aiop2p._aio.stream import Stream
from aiop2p.errors import P2PError
from aiop2p.identity import PeerId
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node
from aiop2p.services.mdns import MdnsConfig, MdnsEvent, MdnsService, PeerDiscovered

ECHO_PROTOCOL = "/p2p/1.0.0"
MAX_MESSAGE_SIZE = 1 << 20


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def echo_handler(stream: Stream) -> None:
    await stream.write_message(await stream.read_message(MAX_MESSAGE_SIZE))


async def handle(node: Node, msg: dict[str, Any]) -> dict[str, Any]:
    cmd = msg.get("cmd")
    peer = PeerId.from_string(msg["peerId"]) if "peerId" in msg else None
    if peer is not None and msg.get("addrs"):
        # Explicit addresses: connect through them instead of what mDNS found.
        await node.connect(peer, [Multiaddr(a) for a in msg["addrs"]])
    if cmd == "ping" and peer is not None:
        rtts = await node.ping(peer, count=int(msg.get("count", 1)))
        return {"rtts": rtts}
    if cmd == "echo" and peer is not None:
        async with await node.new_stream(peer, ECHO_PROTOCOL) as stream:
            await stream.write_message(str(msg["data"]).encode())
            return {"data": (await stream.read_message(MAX_MESSAGE_SIZE)).decode()}
    raise ValueError(f"unknown command {cmd!r}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="/ip4/0.0.0.0/tcp/0")
    parser.add_argument("--query-interval-seconds", type=float, default=300.0)
    parser.add_argument("--ttl", type=int, default=360)
    parser.add_argument("--interface", action="append", default=[])
    args = parser.parse_args()

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async with Node() as node:
        node.set_stream_handler(ECHO_PROTOCOL, echo_handler)
        await node.listen(args.listen)
        config = MdnsConfig(
            query_interval_seconds=args.query_interval_seconds,
            ttl=args.ttl,
            interfaces=tuple(args.interface),
        )
        started = time.monotonic()

        def on_event(event: MdnsEvent) -> None:
            t = round(time.monotonic() - started, 3)
            if isinstance(event, PeerDiscovered):
                addrs = [str(a) for a in event.addrs]
                emit({"event": "discovered", "peerId": str(event.peer), "addrs": addrs, "t": t})
            else:
                emit({"event": "expired", "peerId": str(event.peer), "t": t})

        async with MdnsService(node, config=config) as mdns:
            mdns.discovery.subscribe(on_event)
            emit(
                {
                    "event": "ready",
                    "peerId": str(node.peer_id),
                    "addrs": [str(a) for a in node.listen_addrs],
                    "interfaces": [i.name for i in mdns.interfaces],
                }
            )
            while line := await reader.readline():
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("cmd") == "quit":
                    break
                try:
                    answer = {"ok": True, **await handle(node, msg)}
                except (P2PError, ValueError, KeyError, OSError) as exc:
                    answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                emit({"id": msg.get("id"), **answer})


if __name__ == "__main__":
    asyncio.run(main())
