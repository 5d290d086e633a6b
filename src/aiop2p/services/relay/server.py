"""The relay server (:class:`RelayServer`): never on unless created.

Answers hop RESERVE with a signed voucher, hop CONNECT only towards peers holding a
reservation, opens the stop stream to the target and splices the two streams
(:mod:`.splice`).  Every limit is a :class:`RelayServerConfig` field.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..._aio.connection import Connection
from ..._aio.emitter import Emitter
from ..._aio.stream import Stream
from ...errors import (
    InvalidArgumentError,
    P2PError,
)
from ...identity import PeerId
from ...multiaddr import Multiaddr
from ...protocols.relay_v2 import (
    HOP_PROTOCOL_ID,
    MAX_EARLY_DATA_BYTES,
    MAX_MESSAGE_BYTES,
    STOP_PROTOCOL_ID,
    ConnectRequested,
    HopServer,
    Limit,
    ReserveRequested,
    Status,
    StopAccepted,
    StopClient,
    StopRefused,
    make_voucher,
)
from ..host import connection_of
from .exchange import exchange
from .splice import Circuit

if TYPE_CHECKING:
    from ..host import Host

__all__ = ["CircuitClosed", "RelayServer", "RelayServerConfig"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RelayServerConfig:
    """Relay server limits; a 0 duration or data limit means unlimited."""

    max_reservations: int = 128
    """Reservations held at once, all peers together (one per peer; a refresh renews it)."""
    max_reservations_per_ip: int = 8
    """Reservations held at once by peers connected from one IP address."""
    reservation_duration_seconds: float = 3600.0
    max_circuits: int = 16
    """Relayed connections open (or being set up) at once."""
    max_circuits_per_peer: int = 4
    """Relayed connections open at once per source peer (the one dialling through us)."""
    circuit_duration_seconds: float = 120.0
    """Lifetime of one relayed connection; 0 = unlimited."""
    circuit_data_bytes: int = 128 * 1024
    """Bytes relayed in each direction of one relayed connection; 0 = unlimited."""
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_early_data_bytes: int = MAX_EARLY_DATA_BYTES
    request_timeout: float = 10.0
    """A hop request, and the stop exchange with the target, each."""
    splice_high_water_bytes: int = 256 * 1024
    """Bytes queued towards one side of a circuit before reading from the other pauses."""
    announce_addrs: tuple[Multiaddr, ...] = ()
    """Addresses put in reservations; empty = the node's non-relayed listen addresses."""

    def __post_init__(self) -> None:
        for name in ("max_reservations", "max_reservations_per_ip", "max_circuits"):
            if getattr(self, name) < 0:
                raise InvalidArgumentError(f"{name} must not be negative")
        if self.circuit_data_bytes < 0 or self.circuit_duration_seconds < 0:
            raise InvalidArgumentError("circuit limits must not be negative")
        if self.reservation_duration_seconds <= 0:
            raise InvalidArgumentError("reservation_duration_seconds must be positive")

    @property
    def limit(self) -> Limit | None:
        """The ``Limit`` announced to both ends (duration in seconds, as the spec says)."""
        duration = math.ceil(self.circuit_duration_seconds) or None
        data = self.circuit_data_bytes or None
        if duration is None and data is None:
            return None
        return Limit(duration, data)


@dataclass(slots=True)
class _ServerReservation:
    peer: PeerId
    ip: str | None
    expire: int
    deadline: float  # loop time


@dataclass(frozen=True, slots=True)
class CircuitClosed:
    """Why and after how much a circuit ended (see :attr:`RelayServer.circuit_closed`)."""

    source: PeerId
    target: PeerId
    bytes_to_target: int
    bytes_to_source: int
    reason: str


class RelayServer:
    """Serve circuit relay v2 hop on ``node`` (off unless created).

    :attr:`circuit_closed` emits a :class:`CircuitClosed` per finished circuit.
    """

    def __init__(self, node: Host, *, config: RelayServerConfig | None = None) -> None:
        self.node = node
        self.config = config or RelayServerConfig()
        self._reservations: dict[PeerId, _ServerReservation] = {}
        self._circuits: set[Circuit] = set()
        self._circuits_per_peer: dict[PeerId, int] = {}
        self._pending_circuits = 0
        self.circuit_closed: Emitter[CircuitClosed] = Emitter("relay circuit_closed")
        self._started = False

    async def __aenter__(self) -> RelayServer:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.node.set_stream_handler(HOP_PROTOCOL_ID, self._on_hop)
        self.node.connection_closed.subscribe(self._on_connection_closed)

    async def close(self) -> None:
        """Stop serving; open circuits are reset."""
        if not self._started:
            return
        self._started = False
        self.node.remove_stream_handler(HOP_PROTOCOL_ID)
        for circuit in list(self._circuits):
            circuit.end("relay shutting down")
        self._reservations.clear()

    # -- introspection -------------------------------------------------------------------

    @property
    def reservations(self) -> dict[PeerId, int]:
        """Peers holding a live reservation and its expiry (UNIX seconds)."""
        self._purge()
        return {p: r.expire for p, r in self._reservations.items()}

    @property
    def circuit_count(self) -> int:
        return len(self._circuits)

    # -- reservations --------------------------------------------------------------------

    def _purge(self) -> None:
        now = asyncio.get_running_loop().time()
        expired = [p for p, r in self._reservations.items() if r.deadline <= now]
        for peer in expired:
            del self._reservations[peer]

    def _on_connection_closed(self, conn: Connection) -> None:
        if conn.is_relayed:
            return
        peer = conn.remote_peer
        if peer in self._reservations and not any(
            not c.is_relayed for c in self.node.connections_to(peer)
        ):
            # A reservation lives as long as the connection it was made on.
            del self._reservations[peer]

    def _announce_addrs(self) -> list[Multiaddr]:
        addrs = list(self.config.announce_addrs) or [
            a for a in self.node.listen_addrs if not a.is_circuit
        ]
        return [a.with_peer_id(self.node.peer_id) for a in addrs]

    @staticmethod
    def _ip_of(conn: Connection) -> str | None:
        ip = conn.remote_addr.ip_address if conn.remote_addr is not None else None
        return str(ip) if ip is not None else None

    def _reserve(self, machine: HopServer, conn: Connection) -> None:
        config = self.config
        peer = machine.remote_peer
        if conn.is_relayed:
            machine.refuse(Status.PERMISSION_DENIED)
            return
        self._purge()
        ip = self._ip_of(conn)
        renewing = peer in self._reservations
        if not renewing:
            if len(self._reservations) >= config.max_reservations:
                machine.refuse(Status.RESERVATION_REFUSED)
                return
            if ip is not None:
                same_ip = sum(1 for r in self._reservations.values() if r.ip == ip)
                if same_ip >= config.max_reservations_per_ip:
                    machine.refuse(Status.RESERVATION_REFUSED)
                    return
        duration = config.reservation_duration_seconds
        expire = int(time.time() + duration)
        deadline = asyncio.get_running_loop().time() + duration
        self._reservations[peer] = _ServerReservation(peer, ip, expire, deadline)
        voucher = make_voucher(self.node.key, peer, expire)
        machine.accept_reservation(expire, self._announce_addrs(), config.limit, voucher)
        conn.keep_alive = True

    # -- hop stream ----------------------------------------------------------------------

    async def _on_hop(self, stream: Stream) -> None:
        config = self.config
        conn = connection_of(self.node, stream)
        machine = HopServer(
            stream.remote_peer,
            max_message_bytes=config.max_message_bytes,
            max_early_data_bytes=config.max_early_data_bytes,
        )
        try:
            async with asyncio.timeout(config.request_timeout):
                event = await exchange(stream, machine)
        except TimeoutError:
            stream.reset()
            return
        if isinstance(event, ReserveRequested):
            self._reserve(machine, conn)
            await stream.write(machine.data_to_send())
            return
        if not isinstance(event, ConnectRequested):
            out = machine.data_to_send()
            if out:
                await stream.write(out)
            return
        await self._connect(stream, machine, event)

    def _connect_refusal(self, source: PeerId, target: PeerId, conn: Connection) -> Status | None:
        config = self.config
        if conn.is_relayed:
            return Status.PERMISSION_DENIED
        self._purge()
        if target not in self._reservations:
            return Status.NO_RESERVATION
        active = len(self._circuits) + self._pending_circuits
        if active >= config.max_circuits:
            return Status.RESOURCE_LIMIT_EXCEEDED
        if self._circuits_per_peer.get(source, 0) >= config.max_circuits_per_peer:
            return Status.RESOURCE_LIMIT_EXCEEDED
        return None

    async def _connect(self, hop: Stream, machine: HopServer, event: ConnectRequested) -> None:
        config = self.config
        source, target = event.source, event.target
        refusal = self._connect_refusal(source, target, connection_of(self.node, hop))
        if refusal is not None:
            machine.refuse(refusal)
            await hop.write(machine.data_to_send())
            return
        per_peer = self._circuits_per_peer
        per_peer[source] = per_peer.get(source, 0) + 1
        self._pending_circuits += 1
        circuit: Circuit | None = None
        try:
            stop = await self._open_stop(source, target)
            if stop is None:
                machine.refuse(Status.CONNECTION_FAILED)
                await hop.write(machine.data_to_send())
                return
            stop_stream, from_target = stop
            limit = config.limit
            from_source = machine.accept_connect(limit)
            try:
                await hop.write(machine.data_to_send())
            except BaseException:
                stop_stream.reset()
                raise
            circuit = Circuit(source, target, config.circuit_data_bytes or None)
            self._pending_circuits -= 1
            self._circuits.add(circuit)
            circuit.start(
                hop,
                stop_stream,
                from_source,
                from_target,
                config.circuit_duration_seconds or None,
                config.splice_high_water_bytes,
            )
            try:
                reason = await circuit.done
            except asyncio.CancelledError:
                circuit.end("relay shutting down")
                raise
            self._report(circuit, reason)
        finally:
            if circuit is None:
                self._pending_circuits -= 1
            else:
                self._circuits.discard(circuit)
            count = per_peer.get(source, 1) - 1
            if count:
                per_peer[source] = count
            else:
                per_peer.pop(source, None)

    async def _open_stop(self, source: PeerId, target: PeerId) -> tuple[Stream, bytes] | None:
        conns = [c for c in self.node.connections_to(target) if not c.is_relayed]
        if not conns:
            return None
        stream = await conns[0].new_stream(STOP_PROTOCOL_ID)
        machine = StopClient(max_message_bytes=self.config.max_message_bytes)
        machine.connect(source, self.config.limit)
        try:
            async with asyncio.timeout(self.config.request_timeout):
                event = await exchange(stream, machine)
        except (P2PError, TimeoutError) as exc:
            log.debug("stop exchange with %s failed: %s", target, exc)
            stream.reset()
            return None
        except BaseException:
            stream.reset()
            raise
        if isinstance(event, StopAccepted):
            return stream, event.leftover
        if isinstance(event, StopRefused):
            log.debug("%s refused the circuit from %s: %s", target, source, event.status)
        stream.reset()
        return None

    def _report(self, circuit: Circuit, reason: str) -> None:
        closed = CircuitClosed(
            circuit.source,
            circuit.target,
            circuit.halves[0].received,
            circuit.halves[1].received,
            reason,
        )
        self.circuit_closed.emit(closed)
