"""``aiop2p discover``: list the libp2p peers that mDNS finds on the local network."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..identity import KeyPair
from ..node import Node
from ..services.mdns import MdnsConfig, MdnsEvent, MdnsService, PeerDiscovered

__all__ = ["discover"]


async def discover(
    seconds: float,
    *,
    config: MdnsConfig | None = None,
    key: KeyPair | None = None,
    on_event: Callable[[MdnsEvent], None] | None = None,
) -> list[PeerDiscovered]:
    """Query the LAN and listen for ``seconds``; return the peers still known at the end.

    The node listens on nothing, so it announces nothing: it only asks.  ``on_event``
    sees every event as it happens (to print peers live); the result holds each peer's
    latest addresses in the order the peers were first seen.
    """
    async with Node(key) as node, MdnsService(node, config=config) as mdns:
        if on_event is not None:
            mdns.on_event(on_event)
        try:
            async with asyncio.timeout(seconds):
                async for _ in mdns.events():
                    pass
        except TimeoutError:
            pass
        return [PeerDiscovered(peer, addrs) for peer, addrs in mdns.discovered_peers.items()]
