"""The relay as a node transport, and the relayed connection it yields.

:class:`RelayTransport` gives the node's dialer and listeners the circuit addresses; the
work is the relay client's (its dial and listen are passed in).  :func:`attach` runs a
:class:`~aiop2p._aio.connection.Connection` over one relay stream, its ``relay`` a
:class:`~aiop2p._aio.connection.RelayedVia` (the relay's PeerId and its limit).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from ..._aio.connection import Connection, RelayedVia
from ..._aio.stream import Stream
from ..._aio.stream_transport import StreamTransport
from ...errors import (
    ConnectionClosedError,
    InvalidMultiaddrError,
    InvalidStateError,
    P2PError,
    RelayLimitReachedError,
    StreamResetError,
)
from ...identity import PeerId
from ...multiaddr import Multiaddr
from ...protocols.relay_v2 import Limit
from .addrs import split_circuit

if TYPE_CHECKING:
    from ...transports._base import Listener, ProtocolFactory
    from ..host import Host

__all__ = ["RelayTransport", "attach"]

_LIMIT_DURATION_SLACK: Final = 0.9
"""A relayed connection ending after this share of the relay's duration limit is taken as
cut by that limit."""


def _loss_mapper(
    limit: Limit | None,
    transport_ref: list[StreamTransport],
    started: float,
    relay_agent: Callable[[], str | None],
) -> Callable[[P2PError | None], P2PError | None]:
    """Explain the end of a relayed connection when it looks like the relay's limit.

    The relay signals nothing: it just resets (or closes) the circuit.  The end is
    attributed to the data limit once the bytes through the circuit reach it (both
    directions together, which also covers relays counting the total, as js-libp2p
    does), and to the duration limit once most of that time has passed (read in
    milliseconds when the relay's identify agent is js-libp2p's, which sends that unit).
    The error names the limit (``limit_name``, ``limit_value``) so that a requester can
    tell a relay's quota from a peer that went away.
    """

    def on_lost(error: P2PError | None) -> P2PError | None:
        if limit is None or not transport_ref:
            return None
        transport = transport_ref[0]
        data = limit.data_bytes
        moved = transport.bytes_received + transport.bytes_sent
        if data is not None and moved >= data:
            return RelayLimitReachedError(
                f"relayed connection ended: the relay's data limit ({data} bytes) was reached",
                limit_name="data",
                limit_value=data,
            )
        duration = limit.duration_seconds_from(relay_agent())
        if duration is not None:
            elapsed = asyncio.get_running_loop().time() - started
            if elapsed >= duration * _LIMIT_DURATION_SLACK:
                return RelayLimitReachedError(
                    f"relayed connection ended: the relay's duration limit ({duration:g} s) "
                    "was reached",
                    limit_name="duration",
                    limit_value=duration,
                )
        if error is not None and isinstance(error, StreamResetError):
            return ConnectionClosedError(f"relayed connection ended: {error}")
        return None

    return on_lost


def _agent_of(node: Host, peer: PeerId) -> str | None:
    info = node.peer_store.get(peer)
    return info.agent_version if info is not None else None


def attach(
    node: Host,
    stream: Stream,
    factory: ProtocolFactory,
    local: Multiaddr,
    remote: Multiaddr,
    relay: PeerId,
    limit: Limit | None,
    initial: bytes,
    high_water_bytes: int,
) -> Connection:
    protocol = factory(local, remote)
    if not isinstance(protocol, Connection):
        stream.reset()
        raise InvalidStateError("relay transport needs a Connection factory")
    protocol.relay = RelayedVia(relay, limit)
    ref: list[StreamTransport] = []
    transport = StreamTransport(
        stream,
        protocol,
        initial=initial,
        extra={"peername": remote, "sockname": local, "relay_peer": relay, "limit": limit},
        high_water_bytes=high_water_bytes,
        on_lost=_loss_mapper(
            limit, ref, asyncio.get_running_loop().time(), lambda: _agent_of(node, relay)
        ),
    )
    ref.append(transport)
    return protocol


class RelayTransport:
    """Dials and listens on circuit addresses through the relay client's ``dial``/``listen``."""

    def __init__(
        self,
        dial: Callable[[Multiaddr, ProtocolFactory], Awaitable[Connection]],
        listen: Callable[[Multiaddr, ProtocolFactory], Awaitable[Listener]],
    ) -> None:
        self._dial = dial
        self._listen = listen

    def can_dial(self, addr: Multiaddr) -> bool:
        """Every circuit address: one without a target fails in ``dial`` saying so."""
        try:
            split_circuit(addr)
        except InvalidMultiaddrError:
            return False
        return True

    def can_listen(self, addr: Multiaddr) -> bool:
        try:
            return split_circuit(addr)[2] is None
        except InvalidMultiaddrError:
            return False

    async def dial(self, addr: Multiaddr, factory: ProtocolFactory) -> asyncio.Protocol:
        return await self._dial(addr, factory)

    async def listen(self, addr: Multiaddr, factory: ProtocolFactory) -> Listener:
        return await self._listen(addr, factory)
