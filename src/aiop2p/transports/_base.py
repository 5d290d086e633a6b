"""The interface every transport implements (TCP, WebSocket, memory, relay circuits).

A transport only moves bytes: it connects an :class:`asyncio.Protocol` (the connection
driver) to a socket or another pipe.  Security and multiplexing live above it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from ..multiaddr import Multiaddr

__all__ = ["Listener", "ProtocolFactory", "Transport"]

ProtocolFactory = Callable[[Multiaddr, Multiaddr], asyncio.Protocol]
"""Called with (local address, remote address) for every new raw connection."""


class Listener(Protocol):
    @property
    def addrs(self) -> list[Multiaddr]:
        """Dialable addresses (port 0 resolved, wildcard IPs expanded)."""
        ...

    @property
    def bound_addrs(self) -> list[Multiaddr]:
        """The addresses as bound (port 0 resolved)."""
        ...

    async def close(self) -> None: ...


class Transport(Protocol):
    def can_dial(self, addr: Multiaddr) -> bool: ...

    def can_listen(self, addr: Multiaddr) -> bool: ...

    async def dial(self, addr: Multiaddr, factory: ProtocolFactory) -> asyncio.Protocol:
        """Connect and return the protocol instance the factory built."""
        ...

    async def listen(self, addr: Multiaddr, factory: ProtocolFactory) -> Listener: ...
