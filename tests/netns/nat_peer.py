"""An aiop2p ``Network`` driven over JSON lines (run inside a namespace, for NAT tests).

stdout: ``{"event": "ready", "peerId", "addrs"}``, then event lines:
``{"event": "upgraded", "peerId", "addr", "attempts", "t"}`` and
``{"event": "holepunch_failed", "peerId", "error", "attempts", "local", "remote", "t"}``
(DCUtR), ``{"event": "relay", "kind", "relay", "error", "t"}`` (reservation lost,
renewed, failed), ``{"event": "network", "kind", "detail", "t"}`` (listener events),
``{"event": "conn", "opened", "peerId", "relayed", "remote", ..., "t"}`` (connections).

stdin commands, one JSON object per line, answered with the same ``id`` and ``ok`` (on
failure ``error`` and ``errorType``): ``listen_relay {relay, relayAddr}`` ->
``{addr}``; ``request {peerId, data, addrs?}`` -> ``{response, conns}``;
``dial {addr, timeout}`` -> ``{remote, relayed}``; ``conns {peerId}`` -> ``{conns}``;
``rule {peerId, rule: "allow"|"reject"}``; ``observed`` -> ``{addrs}``; ``quit``.
Every request received is answered with ``{"echo": request, "by": <our peer id>}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from aiop2p._aio.connection import Connection
from aiop2p.config import NodeConfig
from aiop2p.errors import P2PError
from aiop2p.events import ListenerClosed, ListenerError, NewListenAddr
from aiop2p.identity import PeerId
from aiop2p.network import Network, NetworkConfig
from aiop2p.network.firewall import FirewallRules, Rule
from aiop2p.services.dcutr import (
    DcutrConfig,
    DcutrService,
    HolePunchEvent,
    HolePunchFailed,
    HolePunchStarted,
)
from aiop2p.services.relay.client import RelayClientEvent
from aiop2p.services.relay.server import RelayServerConfig
from aiop2p.transports.tcp import TcpTransport

STARTED = time.monotonic()


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def stamp() -> float:
    return round(time.monotonic() - STARTED, 3)


def describe(conn: Connection) -> dict[str, Any]:
    return {
        "relayed": conn.is_relayed,
        "remote": str(conn.remote_addr),
        "local": str(conn.local_addr),
        "direction": conn.direction.value,
        "role": conn.role.value,
    }


def on_holepunch(event: HolePunchEvent) -> None:
    if isinstance(event, HolePunchStarted):
        emit(
            {
                "event": "holepunch_started",
                "peerId": str(event.peer),
                "attempt": event.attempt,
                "initiator": event.initiator,
                "t": stamp(),
            }
        )
    elif isinstance(event, HolePunchFailed):
        causes = getattr(event.error, "causes", {}) or {}
        emit(
            {
                "event": "holepunch_failed",
                "peerId": str(event.peer),
                "error": str(event.error),
                "causes": {k: f"{type(v).__name__}: {v}" for k, v in causes.items()},
                "attempts": event.attempts,
                "initiator": event.initiator,
                "local": [str(a) for a in event.local_addrs],
                "remote": [str(a) for a in event.remote_addrs],
                "t": stamp(),
            }
        )
    else:
        emit(
            {
                "event": "upgraded",
                "peerId": str(event.peer),
                "addr": str(event.addr),
                "attempts": event.attempts,
                "initiator": event.initiator,
                "t": stamp(),
            }
        )


def on_relay(event: RelayClientEvent) -> None:
    error = getattr(event, "error", None)
    emit(
        {
            "event": "relay",
            "kind": type(event).__name__,
            "relay": str(event.relay),
            "error": None if error is None else f"{type(error).__name__}: {error}",
            "t": stamp(),
        }
    )


async def handle(net: Network[Any, Any], dcutr: DcutrService | None, msg: dict[str, Any]) -> Any:
    cmd = msg.get("cmd")
    node = net._node
    if cmd == "listen_relay":
        relay = PeerId.from_string(msg["relay"])
        addr = await net.start_relayed_listening(relay, msg.get("relayAddr"))
        return {"addr": str(addr)}
    if cmd == "request":
        peer = PeerId.from_string(msg["peerId"])
        for addr in msg.get("addrs", ()):
            net.add_address(peer, addr)
        response = await net.send_request(peer, msg["data"])
        return {"response": response, "conns": [describe(c) for c in node.connections_to(peer)]}
    if cmd == "dial":
        async with asyncio.timeout(float(msg.get("timeout", 5.0))):
            conn = await node.dial(msg["addr"], force=True)
        return describe(conn)
    if cmd == "conns":
        peer = PeerId.from_string(msg["peerId"])
        return {"conns": [describe(c) for c in node.connections_to(peer)]}
    if cmd == "rule":
        peer = PeerId.from_string(msg["peerId"])
        rule = Rule.allow_all() if msg["rule"] == "allow" else Rule.reject_all()
        net.set_peer_rule(peer, rule)
        return {}
    if cmd == "observed":
        return {"addrs": [str(a) for a in await dcutr.observed_addrs()] if dcutr else []}
    raise ValueError(f"unknown command {cmd!r}")


async def serve_requests(net: Network[Any, Any]) -> None:
    async for request in net.requests():
        await request.respond({"echo": request.request, "by": str(net.peer_id)})


async def run_command(
    net: Network[Any, Any], dcutr: DcutrService | None, msg: dict[str, Any]
) -> None:
    try:
        answer = {"ok": True, **await handle(net, dcutr, msg)}
    except (P2PError, ValueError, KeyError, OSError, TimeoutError) as exc:
        answer = {"ok": False, "error": str(exc), "errorType": type(exc).__name__}
    emit({"id": msg.get("id"), **answer})


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="/ip4/0.0.0.0/tcp/0")
    parser.add_argument("--relay-server", action="store_true")
    parser.add_argument("--max-reservations", type=int, default=128)
    parser.add_argument("--dcutr", action="store_true")
    parser.add_argument("--dial-timeout", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=None, help="fixed identity (restarts)")
    args = parser.parse_args()

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    keys = None
    if args.seed is not None:
        from aiop2p.identity import KeyPair

        keys = KeyPair.from_ed25519_seed(args.seed.to_bytes(32, "big"))
    relay_server = (
        RelayServerConfig(max_reservations=args.max_reservations) if args.relay_server else None
    )
    config = NetworkConfig(
        mdns=None,
        relay_server=relay_server,
        # The lab's "public" segment uses private addresses: allow them for hole punching.
        dcutr=DcutrConfig(allow_private_addrs=True) if args.dcutr else None,
        request_timeout=10.0,
        node=NodeConfig(dial_timeout=args.dial_timeout),
    )
    net: Network[Any, Any] = Network(
        keys, firewall=FirewallRules.allow_all(), config=config, transports=[TcpTransport()]
    )
    dcutr = net.dcutr
    if dcutr is not None:
        dcutr.events.subscribe(on_holepunch)

    def on_connection(conn: Connection, opened: bool) -> None:
        emit({"event": "conn", "opened": opened, "peerId": str(conn.remote_peer),
              **describe(conn), "t": stamp()})  # fmt: skip

    net._node.connection_opened.subscribe(lambda conn: on_connection(conn, True))
    net._node.connection_closed.subscribe(lambda conn: on_connection(conn, False))
    async with net:
        net.close_firewall_requests()
        if net.relay_client is not None:
            net.relay_client.events.subscribe(on_relay)
        await net.start_listening(args.listen)
        server = loop.create_task(serve_requests(net))

        async def watch_events() -> None:
            async for event in net.events():
                if isinstance(event, ListenerClosed | ListenerError | NewListenAddr):
                    emit(
                        {
                            "event": "network",
                            "kind": type(event).__name__,
                            "detail": str(event),
                            "t": stamp(),
                        }
                    )

        watcher = loop.create_task(watch_events())
        emit(
            {
                "event": "ready",
                "peerId": str(net.peer_id),
                "addrs": [str(a) for a in net._node.listen_addrs],
            }
        )
        tasks: set[asyncio.Task[None]] = set()
        while line := await reader.readline():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("cmd") == "quit":
                break
            task = loop.create_task(run_command(net, dcutr, msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        for task in (server, watcher, *tasks):
            task.cancel()


if __name__ == "__main__":
    asyncio.run(main())
