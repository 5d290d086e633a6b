"""``aiop2p discover``: list the libp2p peers that mDNS finds on the local network."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Sequence

from ..identity import KeyPair
from ..node import Node
from ..services.mdns import MdnsConfig, MdnsEvent, MdnsService, PeerDiscovered

__all__ = ["add_mdns_interface_argument", "discover", "mdns_config"]


def add_mdns_interface_argument(parser: argparse.ArgumentParser) -> None:
    """``--mdns-interface NAME``, repeatable (``serve`` and ``discover`` share it)."""
    parser.add_argument(
        "--mdns-interface",
        action="append",
        metavar="NAME",
        help="run mDNS on this interface (name or address; repeatable), e.g. lo for peers "
        "on this host; default: the LAN interfaces, plus lo when it is multicast-capable and "
        "nothing else is usable or we listen on a loopback address",
    )


def mdns_config(
    interfaces: Sequence[str] | None, *, include_loopback: bool | None = None
) -> MdnsConfig:
    """The ``MdnsConfig`` for ``--mdns-interface`` values (none: automatic selection)."""
    return MdnsConfig(interfaces=tuple(interfaces or ()), include_loopback=include_loopback)


async def discover(
    seconds: float,
    *,
    config: MdnsConfig | None = None,
    key: KeyPair | None = None,
    on_event: Callable[[MdnsEvent], None] | None = None,
) -> list[PeerDiscovered]:
    """Query the LAN and listen for ``seconds``; return the peers still known at the end.

    The node listens on nothing, so it announces nothing: it only asks.  By default it
    asks on loopback too (``include_loopback=True``), where peers of this host that
    listen on 127.0.0.1 announce themselves.  ``on_event`` sees every event as it
    happens (to print peers live); the result holds each peer's latest addresses in the
    order the peers were first seen.
    """
    if config is None:
        config = mdns_config(None, include_loopback=True)
    async with Node(key) as node, MdnsService(node, config=config) as mdns:
        if on_event is not None:
            mdns.discovery.subscribe(on_event)
        try:
            async with asyncio.timeout(seconds):
                async for _ in mdns.events():
                    pass
        except TimeoutError:
            pass
        return [PeerDiscovered(peer, addrs) for peer, addrs in mdns.discovered_peers.items()]
