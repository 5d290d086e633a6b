"""The interface every transport implements (TCP, WebSocket, memory, relay circuits).

A transport only moves bytes: it connects an :class:`asyncio.Protocol` (the connection
driver) to a socket or another pipe.  Security and multiplexing live above it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from ..multiaddr import Multiaddr
from .interfaces import expand_wildcard

__all__ = ["Listener", "ProtocolFactory", "ServerListener", "Transport"]

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


class ServerListener:
    """A listener backed by an :class:`asyncio.Server` (TCP and WebSocket)."""

    def __init__(self, server: asyncio.Server, bound: list[Multiaddr]) -> None:
        self._server = server
        self._bound = bound
        self._addrs = [a for addr in bound for a in expand_wildcard(addr)]

    @property
    def addrs(self) -> list[Multiaddr]:
        """Dialable addresses: a wildcard bind is expanded to each interface address."""
        return list(self._addrs)

    @property
    def bound_addrs(self) -> list[Multiaddr]:
        """The socket addresses as bound (may be 0.0.0.0 or ::)."""
        return list(self._bound)

    async def close(self) -> None:
        """Stop accepting: the listening sockets are closed when this returns, and the
        connections they accepted stay open (the node closes those itself).

        Not ``Server.wait_closed``: from Python 3.12.1 it also waits until every connection
        the server accepted has ended, so a node closing its listeners before its
        connections would wait forever.
        """
        self._server.close()
