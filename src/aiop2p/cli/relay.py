"""``aiop2p relay``: a circuit relay v2 daemon with every limit on the command line."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import NodeConfig
from ..network import Network
from ..network.firewall import FirewallRules
from ..services.relay.server import RelayServerConfig
from ._common import (
    Output,
    add_autonat_private_argument,
    add_dht_arguments,
    autonat_config,
    default_relay_key_path,
    dht_config,
    load_key,
    stop_on_signals,
)

__all__ = ["add_parser", "cmd_relay"]

_LIMITS: tuple[tuple[str, type, str], ...] = (
    ("max_reservations", int, "reservations held at once"),
    ("max_reservations_per_ip", int, "reservations per source IP"),
    ("reservation_duration_seconds", float, "lifetime of a reservation"),
    ("max_circuits", int, "circuits open at once"),
    ("max_circuits_per_peer", int, "circuits per source peer"),
    ("circuit_duration_seconds", float, "lifetime of one circuit (0: unlimited)"),
    ("circuit_data_bytes", int, "bytes per direction per circuit (0: unlimited)"),
)


async def cmd_relay(args: argparse.Namespace, out: Output) -> int:
    defaults = RelayServerConfig()
    limits: dict[str, Any] = {
        name: getattr(args, name) if getattr(args, name) is not None else getattr(defaults, name)
        for name, _, _ in _LIMITS
    }
    config = RelayServerConfig(**limits)
    # A relay is also a DHT server (its peers find each other by id through it), unless
    # --no-dht.
    kad = dht_config(args.bootstrap, "server", default_mode="server") if args.dht else None
    # A relay answers no requests of its own: reject all, and no LAN discovery.
    net: Network[Any, Any] = Network(
        load_key(args.key, default=default_relay_key_path()),  # not the peer's identity
        firewall=FirewallRules.allow_none(),
        relay_server=config,
        mdns=None,
        # A public node answers AutoNAT dial requests (it needs no verdict of its own).
        node=NodeConfig(kad=kad, autonat=autonat_config(args, client=False)),
    )
    with stop_on_signals(out.io) as stop:
        async with net:
            for addr in args.listen or ["/ip4/0.0.0.0/tcp/4001"]:
                await net.start_listening(addr)
                for bound in net.listeners()[-1].addrs:
                    full = bound.with_peer_id(net.peer_id)
                    out.emit(f"relay listening on {full}", address=str(full))
            out.emit(
                "limits: " + ", ".join(f"{k}={v}" for k, v in limits.items()),
                limits=limits,
            )
            if kad is not None:
                out.emit(
                    f"dht: server mode, joining through {len(kad.bootstrap)} peers",
                    dht_mode=kad.mode,
                    bootstrap=[str(a) for a in kad.bootstrap],
                )
            await stop.wait()
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser, key_help: str) -> None:
    p = sub.add_parser(
        "relay",
        parents=[common],
        help="run a circuit relay v2 daemon until SIGINT/SIGTERM",
        description="Relay end-to-end encrypted traffic for peers that hold a reservation, "
        "within the limits below, until SIGINT or SIGTERM.",
    )
    p.add_argument(
        "--listen",
        action="append",
        metavar="MULTIADDR",
        help="listen on this address; repeatable (default: /ip4/0.0.0.0/tcp/4001)",
    )
    p.add_argument("--key", metavar="FILE", help=key_help)
    p.add_argument(
        "--dht",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the Kademlia DHT (server mode) so peers find each other by id (default: on)",
    )
    add_dht_arguments(p)
    add_autonat_private_argument(p)
    defaults = RelayServerConfig()
    for name, kind, text in _LIMITS:
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=None,
            metavar="N" if kind is int else "S",
            help=f"{text} (default: {getattr(defaults, name)})",
        )
    p.set_defaults(run=cmd_relay)
