"""Circuit relay v2 on a :class:`~aiop2p.node.Node`: the client and the (opt-in) server.

**Client** (:class:`RelayClient`).  Reserves a slot on a relay (hop RESERVE), keeps the
relay connection alive and refreshes the reservation before it expires; accepts the
circuits the relay announces (stop CONNECT) as inbound connections of the node; and
registers :class:`RelayTransport`, which dials
``<relay-addr>/p2p/<relay>/p2p-circuit/p2p/<target>`` (hop CONNECT) and listens on
``<relay-addr>/p2p/<relay>/p2p-circuit`` (a reservation).  A relayed connection is an
ordinary :class:`Connection` upgraded with Noise and Yamux end to end over one stream of
the relay connection (:class:`~aiop2p._aio.stream_transport.StreamTransport`), so the
relay only ever sees ciphertext.

Relayed connections carry in ``conn.user_data``: ``"relayed"`` (True), ``"relay_peer"``
(the relay's PeerId), ``"relay_limit"`` (the relay's :class:`Limit` or None).

**Server** (:class:`RelayServer`).  Never on unless created: answers hop RESERVE with a
signed voucher, hop CONNECT only towards peers holding a reservation, opens the stop
stream to the target and splices the two streams (backpressure both ways, per-direction
byte counts, duration timer).  Every limit is a :class:`RelayServerConfig` field.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .._aio.connection import Connection
from .._aio.stream import Stream
from .._aio.stream_transport import StreamTransport
from ..errors import (
    CircuitRefusedError,
    ConnectionClosedError,
    DialError,
    InvalidArgumentError,
    InvalidMultiaddrError,
    InvalidStateError,
    P2PError,
    RelayError,
    RelayLimitReachedError,
    ReservationRefusedError,
    StreamResetError,
)
from ..identity import PeerId
from ..multiaddr import Multiaddr
from ..protocols.relay_v2 import (
    HOP_PROTOCOL_ID,
    MAX_EARLY_DATA_BYTES,
    MAX_MESSAGE_BYTES,
    STOP_PROTOCOL_ID,
    CircuitEstablished,
    CircuitRefused,
    ConnectRequested,
    HopClient,
    HopServer,
    IncomingCircuit,
    Limit,
    RelayEvent,
    RelayFailed,
    ReservationAccepted,
    ReservationRefused,
    ReserveRequested,
    Status,
    StopAccepted,
    StopClient,
    StopRefused,
    StopServer,
    make_voucher,
    verify_voucher,
)

if TYPE_CHECKING:
    from ..transports._base import ProtocolFactory
    from .host import Host

__all__ = [
    "CircuitClosed",
    "RelayClient",
    "RelayClientConfig",
    "RelayClientEvent",
    "RelayServer",
    "RelayServerConfig",
    "RelayTransport",
    "Reservation",
    "ReservationFailed",
    "ReservationLost",
    "ReservationRenewed",
    "circuit_addr",
    "is_circuit_addr",
]

log = logging.getLogger(__name__)

_READ_CHUNK_BYTES: Final = 64 * 1024
_LIMIT_DURATION_SLACK: Final = 0.9
"""A relayed connection ending after this share of the relay's duration limit is taken as
cut by that limit."""


# --------------------------------------------------------------------------- addresses


def is_circuit_addr(addr: Multiaddr) -> bool:
    """True for ``.../p2p/<relay>/p2p-circuit[/p2p/<target>]``."""
    return "p2p-circuit" in addr.protocol_names()


def circuit_addr(relay_addr: Multiaddr | None, relay: PeerId, target: PeerId | None) -> Multiaddr:
    """``<relay-addr>/p2p/<relay>/p2p-circuit[/p2p/<target>]`` (seed spec §8.3)."""
    suffix = f"/p2p/{relay}/p2p-circuit"
    if relay_addr is None:
        base = Multiaddr(suffix)
    elif str(relay_addr).endswith(suffix):
        base = relay_addr
    else:
        base = relay_addr.with_peer_id(relay) / "/p2p-circuit"
    return base if target is None else base.with_peer_id(target)


def _split_circuit(addr: Multiaddr) -> tuple[Multiaddr, PeerId, PeerId | None]:
    """(``<relay-addr>/p2p/<relay>``, relay, target) of a circuit address."""
    names = addr.protocol_names()
    if "p2p-circuit" not in names:
        raise InvalidMultiaddrError(f"not a circuit address: {addr}")
    relay_part = addr.decapsulate("p2p-circuit")
    relay = relay_part.peer_id
    if relay is None or relay_part.protocol_names()[-1] != "p2p":
        raise InvalidMultiaddrError(f"{addr}: /p2p-circuit must follow /p2p/<relay>")
    tail = names[len(relay_part.protocol_names()) + 1 :]
    if tail not in ((), ("p2p",)):
        raise InvalidMultiaddrError(f"{addr}: only /p2p/<target> may follow /p2p-circuit")
    return relay_part, relay, addr.peer_id if tail else None


def _has_transport(addr: Multiaddr) -> bool:
    return any(name != "p2p" for name in addr.protocol_names())


# --------------------------------------------------------------------------- helpers


async def _exchange(
    stream: Stream, machine: HopClient | HopServer | StopClient | StopServer
) -> RelayEvent:
    """Write what the machine queued, then read until it emits an event."""
    while True:
        out = machine.data_to_send()
        if out:
            await stream.write(out)
        events = machine.events_received()
        if events:
            return events[0]
        data = await stream.read(_READ_CHUNK_BYTES)
        if data:
            machine.receive_data(data)
        else:
            machine.receive_eof()
            events = machine.events_received()
            if events:
                return events[0]
            raise RelayError("relay stream ended before the exchange completed")


def _mark_relayed(conn: Connection, relay: PeerId, limit: Limit | None) -> None:
    conn.user_data["relayed"] = True
    conn.user_data["relay_peer"] = relay
    conn.user_data["relay_limit"] = limit


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


def _attach(
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
    _mark_relayed(protocol, relay, limit)
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


# --------------------------------------------------------------------------- client


@dataclass(frozen=True, slots=True)
class RelayClientConfig:
    """Relay client settings (seconds, bytes and counts as the names say)."""

    reservation_timeout_seconds: float = 10.0
    """Whole ``reserve``/``listen`` call: dialling the relay plus the hop exchange."""
    refresh_margin_seconds: float = 60.0
    """Refresh this long before expiry (or halfway through a shorter reservation)."""
    max_refresh_attempts: int = 5
    """Consecutive failed refreshes (or reconnections) before a reservation is dropped."""
    refresh_backoff_initial_seconds: float = 0.5
    refresh_backoff_max_seconds: float = 30.0
    circuit_timeout_seconds: float = 10.0
    """Hop CONNECT answer (dialling) and stop CONNECT request (accepting), each."""
    max_reservations: int = 32
    """Relays we hold reservations with at once."""
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_early_data_bytes: int = MAX_EARLY_DATA_BYTES
    write_high_water_bytes: int = 1024 * 1024
    """Relayed-connection output waiting for the stream's send window before pausing."""


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
    """A refresh (or a reconnection after the relay connection was lost) succeeded."""

    relay: PeerId
    reservation: Reservation


@dataclass(frozen=True, slots=True)
class ReservationLost:
    """The relay connection closed: the reservation is gone until a refresh succeeds."""

    relay: PeerId
    error: P2PError | None


@dataclass(frozen=True, slots=True)
class ReservationFailed:
    """A refresh attempt failed; ``final`` when no more attempts follow (slot dropped)."""

    relay: PeerId
    error: P2PError
    attempt: int
    final: bool


RelayClientEvent = ReservationRenewed | ReservationLost | ReservationFailed


class _Slot:
    """Client-side state of one relay: the reservation, its timer and its listener."""

    __slots__ = ("attempt", "listener", "relay", "relay_addr", "reservation", "task", "timer")

    def __init__(self, relay: PeerId, relay_addr: Multiaddr | None) -> None:
        self.relay = relay
        self.relay_addr = relay_addr
        self.reservation: Reservation | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.attempt = 0
        self.listener: _RelayListener | None = None

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
            if circ not in out and _has_transport(circ):
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
    """

    def __init__(self, node: Host, *, config: RelayClientConfig | None = None) -> None:
        self.node = node
        self.config = config or RelayClientConfig()
        self._slots: dict[PeerId, _Slot] = {}
        self._callbacks: list[Callable[[RelayClientEvent], None]] = []
        self._closed = False
        self.transport = RelayTransport(self)
        node.transports.append(self.transport)
        node.set_stream_handler(STOP_PROTOCOL_ID, self._on_stop)
        node.on_connection(self._on_connection)

    # -- public --------------------------------------------------------------------------

    def on_event(self, callback: Callable[[RelayClientEvent], None]) -> None:
        """Register a synchronous callback for reservation renewals, losses and failures."""
        self._callbacks.append(callback)

    @property
    def reservations(self) -> dict[PeerId, Reservation]:
        """The reservations currently held, by relay."""
        return {p: s.reservation for p, s in self._slots.items() if s.reservation is not None}

    async def reserve(
        self, relay: PeerId, relay_addr: Multiaddr | str | None = None
    ) -> Reservation:
        """Reserve a slot on ``relay`` (dialled at ``relay_addr`` or a known address).

        Raises :class:`ReservationRefusedError` (with the relay's status) or
        :class:`DialError`; bounded by ``reservation_timeout_seconds``.
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
            raise
        slot.attempt = 0
        self._accept(slot, rsvp)
        return rsvp

    async def cancel(self, relay: PeerId) -> bool:
        """Forget the reservation on ``relay`` (it lapses at the relay); stop refreshing."""
        slot = self._slots.get(relay)
        if slot is None:
            return False
        if slot.listener is not None:
            listener, slot.listener = slot.listener, None
            with contextlib.suppress(P2PError):
                await self.node.stop_listening(listener.bound_addrs[0])
        self._drop(slot)
        for conn in self._direct_connections(relay):
            conn.keep_alive = False
        return True

    async def listen(self, relay: PeerId, relay_addr: Multiaddr | str | None = None) -> Multiaddr:
        """Listen via ``relay``; return ``<relay-addr>/p2p/<relay>/p2p-circuit/p2p/<us>``.

        Raises :class:`ReservationRefusedError` or :class:`DialError`; never hangs.
        """
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
        return [c for c in self.node.connections_to(relay) if not c.user_data.get("relayed")]

    async def _relay_connection(self, relay: PeerId, relay_addr: Multiaddr | None) -> Connection:
        direct = self._direct_connections(relay)
        if direct:
            return direct[0]
        force = bool(self.node.connections_to(relay))
        if relay_addr is not None and _has_transport(relay_addr):
            return await self.node.dial(relay_addr.with_peer_id(relay), force=force)
        if force:
            addrs = self.node.peer_store.addrs(relay)
            if not addrs:
                raise DialError(f"no direct address known for relay {relay}")
            return await self.node.dial(addrs[0].with_peer_id(relay), force=True)
        return await self.node.connect(relay)

    async def _reserve_once(self, slot: _Slot) -> Reservation:
        timeout = self.config.reservation_timeout_seconds
        relay = slot.relay
        try:
            async with asyncio.timeout(timeout):
                conn = await self._relay_connection(relay, slot.relay_addr)
                conn.keep_alive = True
                stream = await conn.new_stream(HOP_PROTOCOL_ID)
                try:
                    machine = HopClient(max_message_bytes=self.config.max_message_bytes)
                    machine.reserve()
                    event = await _exchange(stream, machine)
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
        if addr is None or not _has_transport(addr):
            addr = conn.remote_addr
        return Reservation(
            relay=relay,
            relay_addr=addr.without_peer_id() if addr is not None else None,
            expire=event.expire,
            addrs=tuple(a for a in event.addrs if not is_circuit_addr(a)),
            limit=event.limit,
            voucher=event.voucher,
            voucher_valid=voucher_valid,
        )

    def _accept(self, slot: _Slot, rsvp: Reservation) -> None:
        had = slot.reservation is not None
        slot.reservation = rsvp
        if slot.relay_addr is None or not _has_transport(slot.relay_addr):
            slot.relay_addr = rsvp.relay_addr
        slot.cancel_timer()
        left = rsvp.expire - time.time()
        delay = max(left - self.config.refresh_margin_seconds, left / 2, 0.0)
        slot.timer = asyncio.get_running_loop().call_later(delay, self._start_refresh, slot)
        if slot.listener is not None and not had:
            self.node.notify_local_change()

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
            final = slot.attempt >= self.config.max_refresh_attempts
            if final:
                lost_listener = slot.listener is not None and slot.reservation is not None
                slot.reservation = None
                if lost_listener:
                    self.node.notify_local_change()
            else:
                delay = min(
                    self.config.refresh_backoff_initial_seconds * 2 ** (slot.attempt - 1),
                    self.config.refresh_backoff_max_seconds,
                )
                slot.timer = asyncio.get_running_loop().call_later(
                    delay, self._start_refresh, slot
                )
            self._emit(ReservationFailed(slot.relay, exc, slot.attempt, final))
            return
        slot.task = None
        slot.attempt = 0
        self._accept(slot, rsvp)
        self._emit(ReservationRenewed(slot.relay, rsvp))

    def _drop(self, slot: _Slot) -> None:
        slot.cancel_timer()
        if slot.task is not None:
            slot.task.cancel()
            slot.task = None
        if self._slots.get(slot.relay) is slot:
            del self._slots[slot.relay]

    def _emit(self, event: RelayClientEvent) -> None:
        for cb in list(self._callbacks):
            try:
                cb(event)
            except Exception:
                log.exception("relay client event callback failed")

    def _on_connection(self, conn: Connection, opened: bool) -> None:
        if opened or conn.user_data.get("relayed"):
            return
        slot = self._slots.get(conn.remote_peer)
        if slot is None or slot.reservation is None or self._direct_connections(slot.relay):
            return
        slot.reservation = None
        slot.cancel_timer()
        if slot.listener is not None:
            self.node.notify_local_change()
        self._emit(ReservationLost(slot.relay, conn.error))
        if not self._closed and not self.node.is_closing:
            slot.attempt = 0
            slot.timer = asyncio.get_running_loop().call_later(
                self.config.refresh_backoff_initial_seconds, self._start_refresh, slot
            )

    # -- listening / incoming circuits ---------------------------------------------------

    async def _listen(self, addr: Multiaddr, factory: ProtocolFactory) -> _RelayListener:
        relay_part, relay, _ = _split_circuit(addr)
        relay_addr = relay_part if _has_transport(relay_part) else None
        await self.reserve(relay, relay_addr)
        slot = self._slots[relay]
        listener = _RelayListener(self, slot, addr, factory)
        slot.listener = listener
        return listener

    async def _on_stop(self, stream: Stream) -> None:
        relay = stream.remote_peer
        machine = StopServer(
            max_message_bytes=self.config.max_message_bytes,
            max_early_data_bytes=self.config.max_early_data_bytes,
        )
        try:
            async with asyncio.timeout(self.config.circuit_timeout_seconds):
                event = await _exchange(stream, machine)
        except TimeoutError:
            stream.reset()
            return
        if not isinstance(event, IncomingCircuit):
            out = machine.data_to_send()
            if out:
                await stream.write(out)
            return
        slot = self._slots.get(relay)
        if slot is None or slot.reservation is None or stream.connection.user_data.get("relayed"):
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
        conn = _attach(
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
        relay_part, relay, target = _split_circuit(addr)
        if target is None:
            # The node's dial error names the address; the reason need not repeat it.
            raise InvalidMultiaddrError("no peer to reach: /p2p-circuit needs a /p2p/<target>")
        if relay == self.node.peer_id or target == self.node.peer_id:
            raise DialError(f"{addr}: cannot relay through or to ourselves")
        if target == relay:  # a dial of the relay that waits for itself to reach the relay
            raise DialError(f"{addr}: the target is the relay itself; dial it directly")
        relay_addr = relay_part if _has_transport(relay_part) else None
        conn = await self._relay_connection(relay, relay_addr)
        if conn.user_data.get("relayed"):
            raise DialError(f"{addr}: refusing to relay over a relayed connection")
        stream = await conn.new_stream(HOP_PROTOCOL_ID)
        try:
            machine = HopClient(max_message_bytes=self.config.max_message_bytes)
            machine.connect(target)
            async with asyncio.timeout(self.config.circuit_timeout_seconds):
                event = await _exchange(stream, machine)
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
        return _attach(
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


class RelayTransport:
    """Dials and listens on circuit addresses through :class:`RelayClient`."""

    def __init__(self, client: RelayClient) -> None:
        self._client = client

    def can_dial(self, addr: Multiaddr) -> bool:
        """Every circuit address: one without a target fails in ``dial`` saying so."""
        try:
            _split_circuit(addr)
        except InvalidMultiaddrError:
            return False
        return True

    def can_listen(self, addr: Multiaddr) -> bool:
        try:
            return _split_circuit(addr)[2] is None
        except InvalidMultiaddrError:
            return False

    async def dial(self, addr: Multiaddr, factory: ProtocolFactory) -> asyncio.Protocol:
        return await self._client._dial(addr, factory)

    async def listen(self, addr: Multiaddr, factory: ProtocolFactory) -> _RelayListener:
        return await self._client._listen(addr, factory)


# --------------------------------------------------------------------------- server


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
    request_timeout_seconds: float = 10.0
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


class _Half(asyncio.Protocol):
    """One side of a spliced circuit: what it receives goes to the other side."""

    __slots__ = ("circuit", "index", "received")

    def __init__(self, circuit: _Circuit, index: int) -> None:
        self.circuit = circuit
        self.index = index
        self.received = 0

    def data_received(self, data: bytes) -> None:
        self.circuit.forward(self, data)

    def eof_received(self) -> bool:
        self.circuit.half_eof(self)
        return True

    def pause_writing(self) -> None:
        self.circuit.transports[1 - self.index].pause_reading()

    def resume_writing(self) -> None:
        self.circuit.transports[1 - self.index].resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.circuit.side_lost(self, exc)


@dataclass(frozen=True, slots=True)
class CircuitClosed:
    """Why and after how much a circuit ended (see :attr:`RelayServer.on_circuit_closed`)."""

    source: PeerId
    target: PeerId
    bytes_to_target: int
    bytes_to_source: int
    reason: str


class _Circuit:
    """Two streams spliced: source (hop) <-> target (stop)."""

    def __init__(
        self, server: RelayServer, source: PeerId, target: PeerId, data_limit: int | None
    ) -> None:
        self.server = server
        self.source = source
        self.target = target
        self.data_limit = data_limit
        self.halves = (_Half(self, 0), _Half(self, 1))
        self.transports: list[StreamTransport] = []
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.timer: asyncio.TimerHandle | None = None
        self.eofs = 0

    def start(
        self,
        hop: Stream,
        stop: Stream,
        from_source: bytes,
        from_target: bytes,
        duration: float | None,
        high_water_bytes: int,
    ) -> None:
        self.transports = [
            StreamTransport(hop, self.halves[0], high_water_bytes=high_water_bytes),
            StreamTransport(stop, self.halves[1], high_water_bytes=high_water_bytes),
        ]
        if from_source:
            self.forward(self.halves[0], from_source)
        if from_target:
            self.forward(self.halves[1], from_target)
        if duration:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(duration, self.end, "duration limit reached")

    def forward(self, half: _Half, data: bytes) -> None:
        if self.done.done():
            return
        limit = self.data_limit
        if limit is not None and half.received + len(data) > limit:
            allowed = limit - half.received
            half.received = limit
            if allowed > 0:
                self.transports[1 - half.index].write(data[:allowed])
            self.end("data limit reached")
            return
        half.received += len(data)
        self.transports[1 - half.index].write(data)

    def half_eof(self, half: _Half) -> None:
        self.transports[1 - half.index].write_eof()
        self.eofs += 1

    def side_lost(self, half: _Half, exc: Exception | None) -> None:
        if exc is None and self.eofs >= 2:
            other = self.transports[1 - half.index]
            if other.is_closing():
                self.end("closed")
            return
        self.end("reset" if exc is not None else "closed")

    def end(self, reason: str) -> None:
        if self.done.done():
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for transport in self.transports:
            transport.abort()
        self.done.set_result(reason)


class RelayServer:
    """Serve circuit relay v2 hop on ``node`` (off unless created).

    ``on_circuit_closed`` callbacks get a :class:`CircuitClosed` per finished circuit.
    """

    def __init__(self, node: Host, *, config: RelayServerConfig | None = None) -> None:
        self.node = node
        self.config = config or RelayServerConfig()
        self._reservations: dict[PeerId, _ServerReservation] = {}
        self._circuits: set[_Circuit] = set()
        self._circuits_per_peer: dict[PeerId, int] = {}
        self._pending_circuits = 0
        self.on_circuit_closed: list[Callable[[CircuitClosed], None]] = []
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
        self.node.on_connection(self._on_connection)

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

    def _on_connection(self, conn: Connection, opened: bool) -> None:
        if opened or conn.user_data.get("relayed"):
            return
        peer = conn.remote_peer
        if peer in self._reservations and not any(
            not c.user_data.get("relayed") for c in self.node.connections_to(peer)
        ):
            # A reservation lives as long as the connection it was made on.
            del self._reservations[peer]

    def _announce_addrs(self) -> list[Multiaddr]:
        addrs = list(self.config.announce_addrs) or [
            a for a in self.node.listen_addrs if not is_circuit_addr(a)
        ]
        return [a.with_peer_id(self.node.peer_id) for a in addrs]

    @staticmethod
    def _ip_of(conn: Connection) -> str | None:
        addr = conn.remote_addr
        if addr is None:
            return None
        comps = addr.components()
        if comps and comps[0][0] in ("ip4", "ip6"):
            return comps[0][1]
        return None

    def _reserve(self, machine: HopServer, conn: Connection) -> None:
        config = self.config
        peer = machine.remote_peer
        if conn.user_data.get("relayed"):
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
        conn = stream.connection
        machine = HopServer(
            stream.remote_peer,
            max_message_bytes=config.max_message_bytes,
            max_early_data_bytes=config.max_early_data_bytes,
        )
        try:
            async with asyncio.timeout(config.request_timeout_seconds):
                event = await _exchange(stream, machine)
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
        if conn.user_data.get("relayed"):
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
        refusal = self._connect_refusal(source, target, hop.connection)
        if refusal is not None:
            machine.refuse(refusal)
            await hop.write(machine.data_to_send())
            return
        per_peer = self._circuits_per_peer
        per_peer[source] = per_peer.get(source, 0) + 1
        self._pending_circuits += 1
        circuit: _Circuit | None = None
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
            circuit = _Circuit(self, source, target, config.circuit_data_bytes or None)
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
        conns = [c for c in self.node.connections_to(target) if not c.user_data.get("relayed")]
        if not conns:
            return None
        stream = await conns[0].new_stream(STOP_PROTOCOL_ID)
        machine = StopClient(max_message_bytes=self.config.max_message_bytes)
        machine.connect(source, self.config.limit)
        try:
            async with asyncio.timeout(self.config.request_timeout_seconds):
                event = await _exchange(stream, machine)
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

    def _report(self, circuit: _Circuit, reason: str) -> None:
        closed = CircuitClosed(
            circuit.source,
            circuit.target,
            circuit.halves[0].received,
            circuit.halves[1].received,
            reason,
        )
        for cb in list(self.on_circuit_closed):
            try:
                cb(closed)
            except Exception:
                log.exception("circuit callback failed")

