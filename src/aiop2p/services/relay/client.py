"""The relay client (:class:`RelayClient`).

Reserves a slot on a relay (hop RESERVE), keeps the relay connection alive and refreshes
the reservation before it expires; accepts the circuits the relay announces (stop
CONNECT) as inbound connections of the node; and registers
:class:`~.transport.RelayTransport`, which dials
``<relay-addr>/p2p/<relay>/p2p-circuit/p2p/<target>`` (hop CONNECT) and listens on
``<relay-addr>/p2p/<relay>/p2p-circuit`` (a reservation).

A reservation that backs a listener survives relay outages: when the relay connection
drops, or a refresh fails until the reservation expires, it is reported lost and
re-reserved with capped exponential backoff (jittered here, in the driver) until it is
restored or the listener stops (:attr:`RelayClientConfig.max_listen_attempts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..._aio.connection import Connection
from ..._aio.emitter import Emitter
from ..._aio.stream import Stream
from ...errors import (
    CircuitRefusedError,
    DialError,
    InvalidArgumentError,
    InvalidMultiaddrError,
    InvalidStateError,
    P2PError,
    RelayError,
    ReservationRefusedError,
)
from ...identity import PeerId
from ...multiaddr import Multiaddr
from ...protocols.relay_v2 import (
    HOP_PROTOCOL_ID,
    MAX_EARLY_DATA_BYTES,
    MAX_MESSAGE_BYTES,
    STOP_PROTOCOL_ID,
    CircuitEstablished,
    CircuitRefused,
    HopClient,
    IncomingCircuit,
    Limit,
    RelayFailed,
    ReservationAccepted,
    ReservationRefused,
    Status,
    StopServer,
    verify_voucher,
)
from .addrs import circuit_addr, has_transport, split_circuit
from .exchange import exchange
from .transport import RelayTransport, attach

if TYPE_CHECKING:
    from ...transports._base import ProtocolFactory
    from ..host import Host

__all__ = [
    "RelayClient",
    "RelayClientConfig",
    "RelayClientEvent",
    "Reservation",
    "ReservationFailed",
    "ReservationLost",
    "ReservationRenewed",
    "ReservationRestored",
    "backoff_delay",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RelayClientConfig:
    """Relay client settings (seconds, bytes and counts as the names say)."""

    reservation_timeout: float = 10.0
    """Whole ``reserve``/``listen`` call: dialling the relay plus the hop exchange."""
    refresh_margin_seconds: float = 60.0
    """Refresh this long before expiry (or halfway through a shorter reservation)."""
    max_refresh_attempts: int = 5
    """Consecutive failed refreshes (or reconnections) before a reservation that backs no
    listener (a bare :meth:`RelayClient.reserve`) is dropped."""
    max_listen_attempts: int | None = None
    """The same for a reservation that backs a listener: ``None`` keeps re-reserving until
    the listener stops, so relayed listening outlives relay restarts."""
    refresh_backoff_initial_seconds: float = 0.5
    """Delay before the first retry; doubled per failed attempt up to the maximum."""
    refresh_backoff_max_seconds: float = 10.0
    """Cap of the retry delay: at most one attempt per this long and relay, once capped,
    and a restarted relay is reserved on again within about this long."""
    refresh_backoff_jitter: float = 0.2
    """Each retry delay is multiplied by a random factor in ``1 ± jitter`` (then capped:
    at the cap, between ``(1 - jitter) * max`` and the max), so that the peers of a
    restarted relay do not all come back at the same moment."""
    circuit_timeout: float = 10.0
    """Hop CONNECT answer (dialling) and stop CONNECT request (accepting), each."""
    max_reservations: int = 32
    """Relays we hold reservations with at once."""
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_early_data_bytes: int = MAX_EARLY_DATA_BYTES
    write_high_water_bytes: int = 1024 * 1024
    """Relayed-connection output waiting for the stream's send window before pausing."""

    def __post_init__(self) -> None:
        if self.max_refresh_attempts < 1:
            raise InvalidArgumentError("max_refresh_attempts must be at least 1")
        if self.max_listen_attempts is not None and self.max_listen_attempts < 1:
            raise InvalidArgumentError("max_listen_attempts must be at least 1 (or None)")
        if not 0 < self.refresh_backoff_initial_seconds <= self.refresh_backoff_max_seconds:
            raise InvalidArgumentError(
                "need 0 < refresh_backoff_initial_seconds <= refresh_backoff_max_seconds"
            )
        if not 0 <= self.refresh_backoff_jitter < 1:
            raise InvalidArgumentError("refresh_backoff_jitter must be in [0, 1)")


def backoff_delay(config: RelayClientConfig, attempt: int, factor: float) -> float:
    """The retry delay after ``attempt`` consecutive failures (1, 2, …), seconds: doubling
    from the initial delay up to the maximum, times ``factor`` (the jitter draw), and never
    above the maximum (so at the cap the jitter only shortens)."""
    base: float = config.refresh_backoff_initial_seconds * 2.0 ** min(max(attempt - 1, 0), 32)
    return min(
        min(base, config.refresh_backoff_max_seconds) * factor, config.refresh_backoff_max_seconds
    )


@dataclass(frozen=True, slots=True)
class Reservation:
    """A slot held on ``relay`` until ``expire`` (UNIX seconds).

    ``voucher_valid`` says whether the relay's signed voucher verified (advisory: a bad
    or missing voucher is logged, not fatal).
    """

    relay: PeerId
    relay_addr: Multiaddr | None
    expire: int
    addrs: tuple[Multiaddr, ...]
    limit: Limit | None
    voucher: bytes | None
    voucher_valid: bool


@dataclass(frozen=True, slots=True)
class ReservationRenewed:
    """A refresh of a reservation still held succeeded."""

    relay: PeerId
    reservation: Reservation


@dataclass(frozen=True, slots=True)
class ReservationRestored:
    """A reservation reported lost was reserved again, at the ``attempts``-th try."""

    relay: PeerId
    reservation: Reservation
    attempts: int


@dataclass(frozen=True, slots=True)
class ReservationLost:
    """The relay connection closed, or the reservation expired while refreshes failed:
    it is gone until a retry succeeds (:class:`ReservationRestored`)."""

    relay: PeerId
    error: P2PError | None


@dataclass(frozen=True, slots=True)
class ReservationFailed:
    """A refresh attempt failed; ``final`` when no more attempts follow (slot dropped)."""

    relay: PeerId
    error: P2PError
    attempt: int
    final: bool


RelayClientEvent = ReservationRenewed | ReservationRestored | ReservationLost | ReservationFailed


class _Slot:
    """Client-side state of one relay: the reservation, its timer and its listener."""

    __slots__ = (
        "attempt",
        "listener",
        "relay",
        "relay_addr",
        "reservation",
        "task",
        "timer",
        "user_listens",
    )

    def __init__(self, relay: PeerId, relay_addr: Multiaddr | None) -> None:
        self.relay = relay
        self.relay_addr = relay_addr
        self.reservation: Reservation | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.attempt = 0
        self.listener: _RelayListener | None = None
        self.user_listens = False
        """Listened through by the application (not only by automatic relays): a
        :meth:`RelayClient.release` leaves it alone."""

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _RelayListener:
    """What ``node.listen('<relay-addr>/p2p/<relay>/p2p-circuit')`` returns."""

    def __init__(self, client: RelayClient, slot: _Slot, bound: Multiaddr, factory: Any) -> None:
        self._client = client
        self._slot = slot
        self._bound = bound
        self.factory: ProtocolFactory = factory

    @property
    def addrs(self) -> list[Multiaddr]:
        """``<relay-addr>/p2p/<relay>/p2p-circuit`` for each relay address, while reserved."""
        rsvp = self._slot.reservation
        if rsvp is None:
            return []
        out: list[Multiaddr] = []
        relay = self._slot.relay
        candidates = [self._slot.relay_addr] if self._slot.relay_addr is not None else []
        candidates += list(rsvp.addrs)
        for addr in candidates:
            try:
                circ = circuit_addr(addr, relay, None)
            except InvalidMultiaddrError:
                continue
            if circ not in out and has_transport(circ):
                out.append(circ)
        if not out:
            out.append(circuit_addr(None, relay, None))
        return out

    @property
    def bound_addrs(self) -> list[Multiaddr]:
        return [self._bound]

    async def close(self) -> None:
        if self._slot.listener is self:
            self._slot.listener = None
        await self._client.cancel(self._slot.relay)


class RelayClient:
    """The relay client of ``node``: reservations, relayed listening and dialling.

    Creating it registers the stop handler and :class:`RelayTransport` on the node.
    ``rng`` draws the retry jitter (a seeded one makes the delays reproducible).
    """

    def __init__(
        self,
        node: Host,
        *,
        config: RelayClientConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.node = node
        self.config = config or RelayClientConfig()
        self._rng = rng or random.Random()
        self._slots: dict[PeerId, _Slot] = {}
        self._automatic: set[PeerId] = set()  # relays being listened through by ``release``'s kind
        self.events: Emitter[RelayClientEvent] = Emitter("relay client events")
        """Reservation renewals, losses and failures."""
        self._closed = False
        self.transport = RelayTransport(self._dial, self._listen)
        node.transports.append(self.transport)
        node.set_stream_handler(STOP_PROTOCOL_ID, self._on_stop)
        node.connection_closed.subscribe(self._on_connection_closed)

    # -- public --------------------------------------------------------------------------

    @property
    def reservations(self) -> dict[PeerId, Reservation]:
        """The reservations currently held, by relay."""
        return {p: s.reservation for p, s in self._slots.items() if s.reservation is not None}

    async def reserve(
        self, relay: PeerId, relay_addr: Multiaddr | str | None = None
    ) -> Reservation:
        """Reserve a slot on ``relay`` (dialled at ``relay_addr`` or a known address).

        Raises :class:`ReservationRefusedError` (with the relay's status) or
        :class:`DialError`; bounded by ``reservation_timeout``.
        """
        if self._closed:
            raise InvalidStateError("relay client is closed")
        addr = Multiaddr(relay_addr) if isinstance(relay_addr, str) else relay_addr
        slot = self._slots.get(relay)
        if slot is None:
            if len(self._slots) >= self.config.max_reservations:
                raise RelayError(
                    f"already holding {len(self._slots)} reservations "
                    f"(max_reservations={self.config.max_reservations})"
                )
            slot = _Slot(relay, addr)
            self._slots[relay] = slot
        elif addr is not None:
            slot.relay_addr = addr
        try:
            rsvp = await self._reserve_once(slot)
        except BaseException:
            if slot.reservation is None and slot.listener is None and slot.task is None:
                self._drop(slot)
            elif slot.listener is not None and slot.timer is None and slot.task is None:
                # A listener's retries go on (``listen`` stopped them to try at once).
                slot.attempt += 1
                if not self._closed:
                    self._schedule(slot, self._retry_delay(slot.attempt))
            raise
        attempts, slot.attempt = slot.attempt + 1, 0
        restored = slot.listener is not None and slot.reservation is None
        self._accept(slot, rsvp)
        if restored:
            self.events.emit(ReservationRestored(relay, rsvp, attempts))
        return rsvp

    async def cancel(self, relay: PeerId) -> bool:
        """Forget the reservation on ``relay`` (it lapses at the relay); stop refreshing."""
        slot = self._slots.get(relay)
        if slot is None:
            return False
        if slot.listener is not None:
            listener, slot.listener = slot.listener, None
            with contextlib.suppress(P2PError):
                await self.node.stop_listening_addr(listener.bound_addrs[0])
        self._drop(slot)
        for conn in self._direct_connections(relay):
            conn.keep_alive = False
        return True

    async def listen(self, relay: PeerId, relay_addr: Multiaddr | str | None = None) -> Multiaddr:
        """Listen via ``relay``; return ``<relay-addr>/p2p/<relay>/p2p-circuit/p2p/<us>``.

        Raises :class:`ReservationRefusedError` or :class:`DialError`; never hangs.
        """
        circuit = await self._listen_via(relay, relay_addr)
        self._slots[relay].user_listens = True
        return circuit

    async def listen_automatically(
        self, relay: PeerId, relay_addr: Multiaddr | str | None = None
    ) -> Multiaddr:
        """:meth:`listen` for automatic relays: a listener the application also holds
        (before or after) is left to it by :meth:`release`."""
        self._automatic.add(relay)
        try:
            return await self._listen_via(relay, relay_addr)
        finally:
            self._automatic.discard(relay)

    async def release(self, relay: PeerId) -> bool:
        """Stop listening via ``relay`` unless the application listens through it too
        (:meth:`listen`, or ``node.listen`` of a circuit address); True if stopped."""
        slot = self._slots.get(relay)
        if slot is None or slot.listener is None or slot.user_listens:
            return False
        await self.cancel(relay)
        return True

    async def _listen_via(self, relay: PeerId, relay_addr: Multiaddr | str | None) -> Multiaddr:
        addr = Multiaddr(relay_addr) if isinstance(relay_addr, str) else relay_addr
        slot = self._slots.get(relay)
        if slot is not None and slot.listener is not None:
            if slot.reservation is None or slot.task is not None:
                if slot.task is not None:
                    slot.task.cancel()
                    slot.task = None
                slot.cancel_timer()
                await self.reserve(relay, addr)
            return slot.listener.addrs[0].with_peer_id(self.node.peer_id)
        listen_addr = circuit_addr(addr.without_peer_id() if addr else None, relay, None)
        addrs = await self.node.listen(listen_addr)
        return addrs[0].with_peer_id(self.node.peer_id)

    async def stop_listening(self, relay: PeerId) -> bool:
        """Stop listening via ``relay`` and cancel its reservation."""
        slot = self._slots.get(relay)
        if slot is None or slot.listener is None:
            return False
        await self.cancel(relay)
        return True

    async def close(self) -> None:
        """Cancel every reservation and unregister from the node."""
        self._closed = True
        for relay in list(self._slots):
            await self.cancel(relay)
        self.node.remove_stream_handler(STOP_PROTOCOL_ID)
        if self.transport in self.node.transports:
            self.node.transports.remove(self.transport)

    # -- reservations --------------------------------------------------------------------

    def _direct_connections(self, relay: PeerId) -> list[Connection]:
        return [c for c in self.node.connections_to(relay) if not c.is_relayed]

    async def _relay_connection(self, relay: PeerId, relay_addr: Multiaddr | None) -> Connection:
        direct = self._direct_connections(relay)
        if direct:
            return direct[0]
        force = bool(self.node.connections_to(relay))
        if relay_addr is not None and has_transport(relay_addr):
            return await self.node.dial(relay_addr.with_peer_id(relay), force=force)
        if force:
            addrs = self.node.peer_store.addrs(relay)
            if not addrs:
                raise DialError(f"no direct address known for relay {relay}")
            return await self.node.dial(addrs[0].with_peer_id(relay), force=True)
        return await self.node.connect(relay)

    async def _reserve_once(self, slot: _Slot) -> Reservation:
        timeout = self.config.reservation_timeout
        relay = slot.relay
        try:
            async with asyncio.timeout(timeout):
                conn = await self._relay_connection(relay, slot.relay_addr)
                conn.keep_alive = True
                stream = await conn.new_stream(HOP_PROTOCOL_ID)
                try:
                    machine = HopClient(max_message_bytes=self.config.max_message_bytes)
                    machine.reserve()
                    event = await exchange(stream, machine)
                except BaseException:
                    stream.reset()
                    raise
                await stream.close()
        except TimeoutError as exc:
            raise DialError(f"relay {relay} gave no reservation within {timeout} s") from exc
        except (ReservationRefusedError, DialError):
            raise
        except P2PError as exc:
            raise DialError(f"reservation on relay {relay} failed: {exc}") from exc
        if isinstance(event, ReservationRefused):
            raise ReservationRefusedError(
                int(event.status),
                f"relay {relay} refused the reservation: "
                f"{_status_name(event.status)} ({int(event.status)})",
            )
        if not isinstance(event, ReservationAccepted):
            error = event.error if isinstance(event, RelayFailed) else None
            raise DialError(f"relay {relay} answered the reservation badly: {error or event}")
        voucher_valid = False
        if event.voucher is not None:
            try:
                verify_voucher(event.voucher, relay, self.node.peer_id, now=time.time())
                voucher_valid = True
            except P2PError as exc:
                log.warning("relay %s sent a voucher that does not verify: %s", relay, exc)
        else:
            log.info("relay %s sent no reservation voucher", relay)
        addr = slot.relay_addr
        if addr is None or not has_transport(addr):
            addr = conn.remote_addr
        return Reservation(
            relay=relay,
            relay_addr=addr.without_peer_id() if addr is not None else None,
            expire=event.expire,
            addrs=tuple(a for a in event.addrs if not a.is_circuit),
            limit=event.limit,
            voucher=event.voucher,
            voucher_valid=voucher_valid,
        )

    def _accept(self, slot: _Slot, rsvp: Reservation) -> None:
        had = slot.reservation is not None
        slot.reservation = rsvp
        if slot.relay_addr is None or not has_transport(slot.relay_addr):
            slot.relay_addr = rsvp.relay_addr
        left = rsvp.expire - time.time()
        self._schedule(slot, max(left - self.config.refresh_margin_seconds, left / 2, 0.0))
        if slot.listener is not None and not had:
            self.node.local_changed.emit(None)

    def _schedule(self, slot: _Slot, delay: float) -> None:
        slot.cancel_timer()
        slot.timer = asyncio.get_running_loop().call_later(delay, self._start_refresh, slot)

    def _retry_delay(self, attempt: int) -> float:
        jitter = self.config.refresh_backoff_jitter
        return backoff_delay(self.config, attempt, self._rng.uniform(1 - jitter, 1 + jitter))

    def _start_refresh(self, slot: _Slot) -> None:
        slot.timer = None
        if self._slots.get(slot.relay) is not slot or slot.task is not None:
            return
        slot.task = self.node.spawn(self._refresh(slot), name=f"relay refresh {slot.relay}")

    async def _refresh(self, slot: _Slot) -> None:
        try:
            rsvp = await self._reserve_once(slot)
        except P2PError as exc:
            slot.task = None
            slot.attempt += 1
            limit = (
                self.config.max_listen_attempts
                if slot.listener is not None
                else self.config.max_refresh_attempts
            )
            final = limit is not None and slot.attempt >= limit
            held = slot.reservation
            if held is not None and (final or held.expire <= time.time()):
                slot.reservation = None
                if slot.listener is not None:
                    self.node.local_changed.emit(None)
                self.events.emit(ReservationLost(slot.relay, exc))
            if not final:
                self._schedule(slot, self._retry_delay(slot.attempt))
            log.debug("relay %s: reservation attempt %d failed: %s", slot.relay, slot.attempt, exc)
            self.events.emit(ReservationFailed(slot.relay, exc, slot.attempt, final))
            return
        slot.task = None
        attempts, slot.attempt = slot.attempt + 1, 0
        restored = slot.reservation is None
        self._accept(slot, rsvp)
        if restored:
            self.events.emit(ReservationRestored(slot.relay, rsvp, attempts))
        else:
            self.events.emit(ReservationRenewed(slot.relay, rsvp))

    def _drop(self, slot: _Slot) -> None:
        slot.cancel_timer()
        if slot.task is not None:
            slot.task.cancel()
            slot.task = None
        if self._slots.get(slot.relay) is slot:
            del self._slots[slot.relay]

    def _on_connection_closed(self, conn: Connection) -> None:
        if conn.is_relayed:
            return
        slot = self._slots.get(conn.remote_peer)
        if slot is None or slot.reservation is None or self._direct_connections(slot.relay):
            return
        slot.reservation = None
        slot.cancel_timer()
        if slot.listener is not None:
            self.node.local_changed.emit(None)
        self.events.emit(ReservationLost(slot.relay, conn.error))
        if not self._closed and not self.node.is_closing and slot.task is None:
            slot.attempt = 0
            self._schedule(slot, self._retry_delay(1))

    # -- listening / incoming circuits ---------------------------------------------------

    async def _listen(self, addr: Multiaddr, factory: ProtocolFactory) -> _RelayListener:
        relay_part, relay, _ = split_circuit(addr)
        relay_addr = relay_part if has_transport(relay_part) else None
        await self.reserve(relay, relay_addr)
        slot = self._slots.get(relay)
        if slot is None:  # cancelled while the reservation was made (a concurrent close)
            raise RelayError(f"the reservation on {relay} was cancelled while listening")
        listener = _RelayListener(self, slot, addr, factory)
        slot.listener = listener
        if relay not in self._automatic:  # the application's own ``node.listen``
            slot.user_listens = True
        return listener

    async def _on_stop(self, stream: Stream) -> None:
        relay = stream.remote_peer
        machine = StopServer(
            max_message_bytes=self.config.max_message_bytes,
            max_early_data_bytes=self.config.max_early_data_bytes,
        )
        try:
            async with asyncio.timeout(self.config.circuit_timeout):
                event = await exchange(stream, machine)
        except TimeoutError:
            stream.reset()
            return
        if not isinstance(event, IncomingCircuit):
            out = machine.data_to_send()
            if out:
                await stream.write(out)
            return
        slot = self._slots.get(relay)
        if slot is None or slot.reservation is None or stream.connection.is_relayed:
            machine.refuse(Status.PERMISSION_DENIED)
            await stream.write(machine.data_to_send())
            return
        leftover = machine.accept()
        await stream.write(machine.data_to_send())
        relay_addr = slot.reservation.relay_addr
        remote = circuit_addr(relay_addr, relay, event.source_peer)
        local = circuit_addr(relay_addr, relay, self.node.peer_id)
        factory: ProtocolFactory
        if slot.listener is not None:
            factory = slot.listener.factory
        else:
            factory = self.node.inbound_factory()
        conn = attach(
            self.node,
            stream,
            factory,
            local,
            remote,
            relay,
            event.limit,
            leftover,
            self.config.write_high_water_bytes,
        )
        # The handler lives as long as the relayed connection: returning would make the
        # node half-close and later reset the stream that carries it.
        await conn.wait_closed()

    # -- dialling (RelayTransport) -------------------------------------------------------

    async def _dial(self, addr: Multiaddr, factory: ProtocolFactory) -> Connection:
        relay_part, relay, target = split_circuit(addr)
        if target is None:
            # The node's dial error names the address; the reason need not repeat it.
            raise InvalidMultiaddrError("no peer to reach: /p2p-circuit needs a /p2p/<target>")
        if relay == self.node.peer_id or target == self.node.peer_id:
            raise DialError(f"{addr}: cannot relay through or to ourselves")
        if target == relay:  # a dial of the relay that waits for itself to reach the relay
            raise DialError(f"{addr}: the target is the relay itself; dial it directly")
        relay_addr = relay_part if has_transport(relay_part) else None
        conn = await self._relay_connection(relay, relay_addr)
        if conn.is_relayed:
            raise DialError(f"{addr}: refusing to relay over a relayed connection")
        stream = await conn.new_stream(HOP_PROTOCOL_ID)
        try:
            machine = HopClient(max_message_bytes=self.config.max_message_bytes)
            machine.connect(target)
            async with asyncio.timeout(self.config.circuit_timeout):
                event = await exchange(stream, machine)
        except BaseException:
            stream.reset()
            raise
        if isinstance(event, CircuitRefused):
            stream.reset()
            raise CircuitRefusedError(
                int(event.status),
                f"relay {relay} refused the circuit to {target}: "
                f"{_status_name(event.status)} ({int(event.status)})",
            )
        if not isinstance(event, CircuitEstablished):
            stream.reset()
            error = event.error if isinstance(event, RelayFailed) else event
            raise DialError(f"relay {relay} answered the circuit request badly: {error}")
        base = conn.remote_addr.without_peer_id() if conn.remote_addr is not None else None
        local = circuit_addr(base, relay, self.node.peer_id)
        return attach(
            self.node,
            stream,
            factory,
            local,
            addr,
            relay,
            event.limit,
            event.leftover,
            self.config.write_high_water_bytes,
        )


def _status_name(status: Status | int) -> str:
    return status.name if isinstance(status, Status) else "unknown status"
