"""``Host``: what a libp2p service needs from the node it runs on.

Services (identify, ping, perf, mDNS, DCUtR, relay) type against this protocol, never
against :class:`~aiop2p.node.Node`, so the import direction stays services → below and
a service can be driven by a test double.  ``Node`` implements it; the members are the
ones the services call, nothing more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable
from typing import Any, Protocol

from .._aio.connection import Connection
from .._aio.emitter import Emitter
from .._aio.stream import Stream
from ..config import NodeConfig
from ..errors import ConnectionClosedError
from ..identity import KeyPair, PeerId
from ..multiaddr import Multiaddr
from ..protocols.role import Role
from ..transports._base import Transport
from .peerstore import PeerInfo, PeerStore

__all__ = ["Host", "Identifier", "InlineStreamHandler", "StreamHandler", "connection_of"]

StreamHandler = Callable[[Stream], Awaitable[None]]
InlineStreamHandler = Callable[[Stream], None]
"""Called in the connection's input dispatch (``Node.set_inline_stream_handler``)."""


class Identifier(Protocol):
    """The identify exchange as other services use it (``IdentifyService`` implements it)."""

    async def identify(self, conn: Connection) -> PeerInfo: ...


class Host(Protocol):
    """A libp2p host as its services see it."""

    @property
    def peer_id(self) -> PeerId: ...
    @property
    def key(self) -> KeyPair: ...
    @property
    def config(self) -> NodeConfig: ...
    @property
    def peer_store(self) -> PeerStore: ...
    @property
    def transports(self) -> list[Transport]:
        """Mutable: the relay client adds its transport and removes it at close."""

    @property
    def identify(self) -> Identifier | None:
        """None while identify is disabled (or the host not started)."""

    @property
    def is_closing(self) -> bool: ...
    @property
    def connections(self) -> list[Connection]: ...
    @property
    def listen_addrs(self) -> list[Multiaddr]: ...

    def spawn(
        self, coro: Coroutine[Any, Any, None], *, name: str | None = None
    ) -> asyncio.Task[None]:
        """Run ``coro`` as a task the host cancels at close."""
        ...

    def set_stream_handler(
        self,
        protocol: str,
        handler: StreamHandler,
        *,
        offer: Callable[[PeerId], bool] | None = None,
    ) -> None: ...
    def remove_stream_handler(self, protocol: str) -> None: ...
    def supported_protocols(self, conn: Connection) -> Collection[str]:
        """The protocols offered to ``conn``'s peer (identify announces them)."""
        ...

    @property
    def connection_opened(self) -> Emitter[Connection]: ...
    @property
    def connection_closed(self) -> Emitter[Connection]: ...
    @property
    def local_changed(self) -> Emitter[None]:
        """Emit when our protocols or addresses change (identify pushes them)."""

    def connections_to(self, peer: PeerId) -> list[Connection]: ...
    async def connect(
        self, peer: PeerId, addrs: Iterable[Multiaddr] | None = None
    ) -> Connection: ...
    async def dial(
        self, addr: Multiaddr | str, *, force: bool = False, role: Role | None = None
    ) -> Connection: ...
    async def new_stream(
        self,
        target: PeerId | Multiaddr | str | Connection,
        protocols: str | list[str] | tuple[str, ...],
    ) -> Stream: ...
    async def listen(self, addr: Multiaddr | str) -> list[Multiaddr]: ...
    async def stop_listening_addr(self, addr: Multiaddr | str) -> bool: ...

    def expect_inbound_role(self, remote: Multiaddr, role: Role | None) -> None:
        """Run inbound connections from ``remote`` with ``role`` (hole punching)."""
        ...

    def inbound_factory(self) -> Callable[[Multiaddr, Multiaddr], Connection]:
        """Connections for inbound paths that are not listeners (relayed circuits)."""
        ...


def connection_of(host: Host, stream: Stream) -> Connection:
    """The connection of ``host`` that carries ``stream``.

    ``Stream.connection`` is typed by what a stream and its handlers use
    (:class:`~aiop2p._aio.stream.StreamOwner`), so that ``_aio.stream`` does not import
    ``_aio.connection``; a service that hands the connection on as a ``Connection``
    finds it here, among the connections to the stream's peer.
    """
    owner = stream.connection
    for conn in host.connections_to(stream.remote_peer):
        if conn is owner:
            return conn
    raise ConnectionClosedError("the stream's connection is closed")
