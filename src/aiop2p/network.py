"""``Network``: typed 1:1 request-response between peers, every inbound request
approved or rejected by a firewall — the seed's surface (seed-spec §9.1), in Python.

::

    async with Network(firewall=FirewallRules.allow_all()) as net:
        addr = await net.start_listening("/ip4/0.0.0.0/tcp/0")
        reply = await net.send_request(peer_id, {"op": "ping"})
        async for request in net.requests():
            await request.respond({"op": "pong"})

Everything runs on the caller's event loop: methods act directly (there is no command
queue), inbound work arrives through bounded channels, and firewall questions go to
:meth:`Network.firewall_requests` or to an async ``firewall_handler``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, Self, TypeVar

from ._aio.connection import Connection, ConnectionId, Direction
from ._aio.deadlines import DeadlineQueue
from ._aio.stream import Stream
from .config import ConnectionLimits, NodeConfig
from .errors import (
    BannedPeerError,
    ConnectionClosedError,
    DialError,
    InvalidArgumentError,
    InvalidStateError,
    MultiaddrNotSupportedError,
    NoAddressesError,
    P2PError,
    RelayNotSupportedError,
    RequestConnectionClosedError,
    RequestDialError,
    RequestTimeoutError,
    ShutdownError,
    StreamResetError,
)
from .events import (
    ConnectedPoint,
    ConnectionClosed,
    ConnectionEstablished,
    InboundFailure,
    InboundRequestFailed,
    IncomingConnectionError,
    ListenerClosed,
    ListenerError,
    NetworkEvent,
    NewListenAddr,
    RequestId,
)
from .identity import KeyPair, PeerId
from .multiaddr import Multiaddr
from .node import Node
from .services.address_book import AddressBookStore, AddressInfo
from .services.codecs import Codec, CodecError, JsonCodec
from .services.dcutr import DcutrConfig, DcutrService, HolePunchEvent
from .services.event_channel import ChannelSinkConfig, EventChannel
from .services.firewall import (
    AskApproval,
    CancelApproval,
    CancelRuleQuery,
    Deliver,
    FirewallAction,
    FirewallEngine,
    FirewallRules,
    QueryRule,
    Reject,
    RejectReason,
    Rule,
    SupportChanged,
)
from .services.mdns import MdnsConfig, MdnsEvent, MdnsService
from .services.relay.addrs import is_circuit_addr
from .services.relay.client import RelayClient, RelayClientEvent, ReservationFailed
from .services.relay.server import RelayServer, RelayServerConfig
from .services.request_response import (
    DEFAULT_MAX_REQUEST_SIZE,
    DEFAULT_MAX_RESPONSE_SIZE,
    Framing,
    read_request,
    send_request_on,
    write_response,
)
from .transports._base import Transport

__all__ = [
    "ApprovalRequest",
    "ChannelConfig",
    "FirewallRequest",
    "InboundRequest",
    "Listener",
    "Network",
    "NetworkConfig",
    "NoAddressesError",
    "PeerRuleQuery",
]

log = logging.getLogger(__name__)

Rq = TypeVar("Rq")
Rs = TypeVar("Rs")

DEFAULT_PROTOCOL = "/p2p/1.0.0"


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """Size and overflow policy of one of the network's outgoing channels."""

    capacity: int = 64
    policy: ChannelSinkConfig = ChannelSinkConfig.BLOCK


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """Everything that shapes a :class:`Network`; every limit carries its unit."""

    request_timeout: float = 10.0
    """Seconds for one whole exchange: negotiation, request, firewall, answer, response."""
    connection_timeout: float = 60.0
    """Seconds an idle connection (no stream open, either direction) is kept before it is
    closed.  The seed used 10 s; 60 s follows the field: js-libp2p closes no idle
    connection and pings each peer every 10 s (so 10 s raced those pings), go-libp2p gives
    new connections a one-minute grace period, rust-libp2p leaves it to the application."""
    firewall_timeout: float = 10.0
    """Seconds to wait for a rule or an approval from the application before rejecting."""
    connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    protocols: tuple[str, ...] = (DEFAULT_PROTOCOL,)
    """Request-response protocol ids, in preference order."""
    framing: Framing = Framing.LENGTH_PREFIXED
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE
    max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE
    requests_channel: ChannelConfig = field(default_factory=ChannelConfig)
    events_channel: ChannelConfig = field(
        default_factory=lambda: ChannelConfig(256, ChannelSinkConfig.BUFFER_LATEST)
    )
    firewall_channel_capacity: int = 16
    """Firewall questions waiting for the application; more wait for room (bounded by
    ``firewall_timeout``)."""
    max_concurrent_inbound_requests_per_connection: int = 128
    """Inbound requests one connection may have in flight (arrived, not yet answered);
    beyond it a new request's stream is reset unread (``InboundFailure.OVERLOADED``,
    ``RequestRefusedError`` to the requester), so one peer cannot take the whole node."""
    max_concurrent_inbound_requests: int = 32768
    """Inbound requests in flight on the whole node; beyond it new ones are refused as
    above instead of queueing until they time out.  Sized so that 1,000 peers with 32
    requests in flight each fit."""
    relay_client: bool = True
    """Listen and dial through circuit relays (on by default)."""
    relay_server: RelayServerConfig | None = None
    """Act as a relay for others with these limits (off by default: a node is never a
    relay by accident)."""
    dcutr: DcutrConfig | None = field(default_factory=DcutrConfig)
    """Hole punching (DCUtR) over relayed connections; ``None`` turns it off."""
    mdns: MdnsConfig | None = field(default_factory=MdnsConfig)
    """LAN discovery (on by default, as in the seed); ``None`` turns it off."""
    address_book_path: Path | None = None
    """Persist the address book there (loaded at start, saved on change and at close)."""
    node: NodeConfig = field(default_factory=NodeConfig)

    def __post_init__(self) -> None:
        for name in ("request_timeout", "connection_timeout", "firewall_timeout"):
            if getattr(self, name) <= 0:
                raise InvalidArgumentError(f"{name} must be positive")
        for name in (
            "max_concurrent_inbound_requests_per_connection",
            "max_concurrent_inbound_requests",
        ):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"{name} must be at least 1")
        if not self.protocols:
            raise InvalidArgumentError("at least one request protocol is needed")


@dataclass(slots=True)
class Listener:
    """One listen call: its addresses and, for relayed listening, the relay used."""

    addrs: list[Multiaddr]
    uses_relay: PeerId | None = None


class _Answer:
    """A one-shot answer slot shared by a firewall question and the network."""

    __slots__ = ("_callback", "answered")

    def __init__(self, callback: Callable[[object], None]) -> None:
        self._callback = callback
        self.answered = False

    def give(self, value: object) -> bool:
        if self.answered:
            return False
        self.answered = True
        self._callback(value)
        return True


class PeerRuleQuery:
    """The firewall has no rule for ``peer``: answer with a :class:`Rule` (kept as the
    peer's rule) or ``None``/:meth:`drop` (its pending requests are rejected)."""

    def __init__(self, peer: PeerId, answer: _Answer) -> None:
        self.peer = peer
        self._answer = answer

    @property
    def answered(self) -> bool:
        return self._answer.answered

    def answer(self, rule: Rule[Any] | None) -> bool:
        """Give the rule; False if the query already ended (timeout, answered, closed)."""
        return self._answer.give(rule)

    def drop(self) -> None:
        self._answer.give(None)

    def __repr__(self) -> str:
        return f"<PeerRuleQuery {self.peer}>"


class ApprovalRequest(Generic[Rq]):
    """The rule for ``peer`` is ``Rule.ask()``: approve or reject this one request."""

    def __init__(self, peer: PeerId, request_id: RequestId, request: Rq, answer: _Answer) -> None:
        self.peer = peer
        self.request_id = request_id
        self.request = request
        """The firewall view of the request (``NetworkConfig``'s ``firewall_view``)."""
        self._answer = answer

    @property
    def answered(self) -> bool:
        return self._answer.answered

    def approve(self, approved: bool = True) -> bool:
        return self._answer.give(bool(approved))

    def reject(self) -> bool:
        return self._answer.give(False)

    def drop(self) -> None:
        self._answer.give(False)

    def __repr__(self) -> str:
        return f"<ApprovalRequest {self.request_id} from {self.peer}>"


FirewallRequest = PeerRuleQuery | ApprovalRequest[Any]


class _Omitted(P2PError):
    """The application dropped an inbound request without answering (internal)."""


class _ConnectionGone(P2PError):
    """The connection of a delivered, unanswered inbound request closed (internal)."""


class InboundRequest(Generic[Rq, Rs]):
    """A request the firewall approved; answer it exactly once with :meth:`respond`.

    Dropping it unanswered (:meth:`drop`, or losing every reference) closes the stream
    without a response and is reported as ``InboundFailure.RESPONSE_OMISSION``.
    """

    __slots__ = ("__weakref__", "_encode", "_response", "_written", "peer", "request", "request_id")

    def __init__(
        self,
        peer: PeerId,
        request_id: RequestId,
        request: Rq,
        response: asyncio.Future[bytes],
        written: asyncio.Future[None],
        encode: Callable[[Rs], bytes],
    ) -> None:
        self.peer = peer
        self.request_id = request_id
        self.request = request
        self._response = response
        self._written = written
        self._encode = encode

    @property
    def answered(self) -> bool:
        return self._response.done()

    async def respond(self, value: Rs) -> None:
        """Send ``value`` as the response and wait until it is written.

        Raises :class:`InvalidStateError` if the request already ended (timed out, its
        connection closed, already answered), :class:`CodecError` if ``value`` cannot
        be encoded.
        """
        if self._response.done():
            raise InvalidStateError(f"request {self.request_id} already ended")
        data = self._encode(value)
        self._response.set_result(data)
        await asyncio.shield(self._written)

    def respond_nowait(self, value: Rs) -> None:
        """Like :meth:`respond` without waiting for the write (for busy servers); a
        failure to send is reported as an ``InboundRequestFailed`` event."""
        if self._response.done():
            raise InvalidStateError(f"request {self.request_id} already ended")
        self._response.set_result(self._encode(value))

    def drop(self) -> None:
        """Do not answer: the requester sees its stream closed without a response."""
        if not self._response.done():
            self._response.set_exception(_Omitted())

    def __del__(self) -> None:
        response = self._response
        if not response.done():
            loop = response.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._drop_if_pending, response)

    @staticmethod
    def _drop_if_pending(response: asyncio.Future[bytes]) -> None:
        if not response.done():
            response.set_exception(_Omitted())

    def __repr__(self) -> str:
        return f"<InboundRequest {self.request_id} from {self.peer}: {self.request!r}>"


class Network(Generic[Rq, Rs]):
    """The seed's ``Network``: request-response with a firewall, connections, addresses."""

    def __init__(
        self,
        keys: KeyPair | None = None,
        *,
        firewall: FirewallRules[Any] | None = None,
        config: NetworkConfig | None = None,
        codec: Codec | None = None,
        firewall_view: Callable[[Rq], Any] | None = None,
        firewall_handler: Callable[[FirewallRequest], Awaitable[None]] | None = None,
        address_info: AddressInfo | None = None,
        transports: Iterable[Transport] | None = None,
        **overrides: Any,
    ) -> None:
        config = config or NetworkConfig()
        if overrides:
            try:
                config = replace(config, **overrides)
            except TypeError as exc:
                raise InvalidArgumentError(f"unknown Network option: {exc}") from exc
        self.config = config
        self.codec: Codec = codec or JsonCodec()
        self._firewall_view: Callable[[Rq], Any] = firewall_view or (lambda value: value)
        self._firewall_handler = firewall_handler
        node_config = replace(
            config.node,
            limits=config.connection_limits,
            idle_connection_timeout=config.connection_timeout,
        )
        self.node = Node(keys, config=node_config, transports=transports)
        self._engine: FirewallEngine[Any] = FirewallEngine(firewall or FirewallRules.empty())
        path = config.address_book_path
        self._store = AddressBookStore(path) if path is not None else None
        if address_info is not None:
            self._addresses = address_info.copy()
        elif self._store is not None:
            self._addresses = self._store.load()
        else:
            self._addresses = AddressInfo()
        self._requests: EventChannel[InboundRequest[Rq, Rs]] = EventChannel(
            config.requests_channel.capacity, config.requests_channel.policy, name="requests"
        )
        self._events: EventChannel[NetworkEvent] = EventChannel(
            config.events_channel.capacity, config.events_channel.policy, name="events"
        )
        self._firewall_queue: asyncio.Queue[FirewallRequest] | None = None
        self._firewall_closed = False
        self._ids = itertools.count(1)
        self._listeners: dict[int, Listener] = {}
        self._listener_ids = itertools.count(1)
        self._banned: set[PeerId] = set()
        self._dials: dict[PeerId, asyncio.Future[Connection]] = {}
        self._decisions: dict[RequestId, asyncio.Future[RejectReason | None]] = {}
        # Response slots of delivered, unanswered requests, per connection: failed at
        # once when the connection closes (not only at the request timeout).
        self._delivered: dict[ConnectionId, set[asyncio.Future[bytes]]] = {}
        # Inbound requests in flight, per connection and in all (the load-shedding bounds).
        self._inflight: dict[ConnectionId, int] = {}
        self._inflight_total = 0
        self._rule_queries: dict[PeerId, tuple[_Answer, asyncio.TimerHandle]] = {}
        self._approvals: dict[RequestId, tuple[_Answer, asyncio.TimerHandle]] = {}
        self._outbound_tasks: set[asyncio.Task[Any]] = set()
        self._deadlines = DeadlineQueue(config.request_timeout)
        """``request_timeout`` for every exchange, both directions, on one timer."""
        self._save_handle: asyncio.TimerHandle | None = None
        self._mdns: MdnsService | None = None
        self.relay_client: RelayClient | None = None
        """Reservations and relayed dials (``None`` when ``relay_client`` is off)."""
        self.relay_server: RelayServer | None = None
        """The relay we run for others (only with ``relay_server`` configured)."""
        if config.relay_client:
            self.relay_client = RelayClient(self.node)
            self.relay_client.on_event(self._on_relay_event)
        self.dcutr: DcutrService | None = None
        """Hole punching; created before any listener so TCP can reuse the listen port."""
        if config.dcutr is not None:
            self.dcutr = DcutrService(self.node, config=config.dcutr)
            self.dcutr.on_event(self._on_dcutr_event)
        self._started = False
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def peer_id(self) -> PeerId:
        return self.node.peer_id

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._firewall_queue = asyncio.Queue(self.config.firewall_channel_capacity)
        node = self.node
        node.connection_gate = self._gate
        node.on_connection(self._on_connection)
        node.on_incoming_error(self._on_incoming_error)
        for protocol in self.config.protocols:
            node.set_stream_handler(
                protocol, self._serve_request, offer=self._engine.offers_protocol
            )
        await node.start()
        if self.config.relay_server is not None:
            self.relay_server = RelayServer(node, config=self.config.relay_server)
            self.relay_server.start()
        if self.config.mdns is not None:
            self._mdns = MdnsService(node, config=self.config.mdns)
            self._mdns.on_event(self._on_mdns_event)
            await self._mdns.start()

    def _on_mdns_event(self, event: MdnsEvent) -> None:
        self._emit(event)

    def _on_dcutr_event(self, event: HolePunchEvent) -> None:
        self._emit(event)

    async def close(self) -> None:
        """Stop everything: pending calls fail with a shutdown error, channels end."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._outbound_tasks):
            task.cancel()
        for fut in self._dials.values():
            if not fut.done():
                fut.set_exception(ShutdownError("The network event-loop was shut down."))
                fut.exception()
        for answer, timer in [*self._rule_queries.values(), *self._approvals.values()]:
            timer.cancel()
            answer.answered = True
        self._rule_queries.clear()
        self._approvals.clear()
        if self._mdns is not None:
            await self._mdns.close()
        if self.dcutr is not None:
            await self.dcutr.close()
        if self.relay_client is not None:
            await self.relay_client.close()
        if self.relay_server is not None:
            await self.relay_server.close()
        await self.node.close()
        self._deadlines.close()
        if self._outbound_tasks:
            await asyncio.gather(*self._outbound_tasks, return_exceptions=True)
        self._requests.close()
        self._events.close()
        if self._save_handle is not None:
            self._save_handle.cancel()
        if self._store is not None:
            self._store.save(self._addresses)

    def _check_open(self) -> None:
        if self._closed:
            raise ShutdownError("The network event-loop was shut down.")
        if not self._started:
            raise InvalidStateError("network not started: use `async with Network(...)`")

    def _next_id(self) -> RequestId:
        return RequestId(next(self._ids))

    # -- inbound work for the application ------------------------------------------------

    def requests(self) -> EventChannel[InboundRequest[Rq, Rs]]:
        """Approved inbound requests: ``async for request in network.requests()``."""
        return self._requests

    def events(self) -> EventChannel[NetworkEvent]:
        """Network events: ``async for event in network.events()``."""
        return self._events

    async def firewall_requests(self) -> AsyncIterator[FirewallRequest]:
        """Firewall questions (rule queries, approvals) to answer, as they come.

        Without a ``firewall_handler`` and without anyone iterating here, questions
        time out after ``firewall_timeout`` and their requests are rejected.
        """
        self._check_open()
        queue = self._firewall_queue
        assert queue is not None
        while not self._closed:
            yield await queue.get()

    def close_firewall_requests(self) -> None:
        """Stop taking firewall questions: from now on each one is answered "no" at once
        (the seed's dropped firewall receiver)."""
        self._firewall_closed = True
        queue = self._firewall_queue
        while queue is not None and not queue.empty():
            request = queue.get_nowait()
            if isinstance(request, PeerRuleQuery):
                request.drop()
            else:
                request.drop()

    def _emit(self, event: NetworkEvent) -> None:
        try:
            self._events.send_nowait(event)
        except P2PError:
            # A BLOCK events channel that is full: deliver when there is room.
            self.node.spawn(self._emit_waiting(event), name="event")

    async def _emit_waiting(self, event: NetworkEvent) -> None:
        await self._events.send(event)

    # -- listening -----------------------------------------------------------------------

    async def start_listening(self, addr: Multiaddr | str) -> Multiaddr:
        """Listen on ``addr``; return the first address the listener reports.

        Raises :class:`MultiaddrNotSupportedError` when no transport can listen there
        (e.g. a relayed address with the relay client disabled).
        """
        self._check_open()
        addr = Multiaddr(addr) if isinstance(addr, str) else addr
        if is_circuit_addr(addr) and self.relay_client is None:
            raise MultiaddrNotSupportedError(addr)
        try:
            addrs = await self.node.listen(addr)
        except InvalidArgumentError as exc:
            raise MultiaddrNotSupportedError(addr) from exc
        listener_id = next(self._listener_ids)
        self._listeners[listener_id] = Listener(list(addrs))
        for bound in addrs:
            self._emit(NewListenAddr(bound))
        return addrs[0]

    async def start_relayed_listening(
        self, relay: PeerId, relay_addr: Multiaddr | str | None = None
    ) -> Multiaddr:
        """Listen through ``relay`` (a circuit relay v2 reservation); return the address
        peers dial us at: ``<relay-addr>/p2p/<relay>/p2p-circuit/p2p/<us>``.

        ``relay_addr`` is remembered in the address book.  Raises
        :class:`RelayNotSupportedError`, :class:`NoAddressesError`, a
        :class:`DialError` when the relay cannot be reached, or
        :class:`ReservationRefusedError` with the relay's status — it never hangs.
        """
        self._check_open()
        client = self._require_relay()
        if relay_addr is not None:
            relay_addr = Multiaddr(relay_addr) if isinstance(relay_addr, str) else relay_addr
            await self.add_address(relay, relay_addr.without_peer_id())
        addr = relay_addr
        if addr is None:
            candidates = [a for a in self.get_addrs(relay) if not is_circuit_addr(a)]
            if not candidates and not self.node.is_connected(relay):
                raise NoAddressesError("No addresses known for peer.")
            addr = candidates[0] if candidates else None
        circuit = await client.listen(relay, addr.without_peer_id() if addr else None)
        for listener in self._listeners.values():
            if listener.uses_relay == relay:
                if circuit not in listener.addrs:
                    listener.addrs.append(circuit)
                return circuit
        self._listeners[next(self._listener_ids)] = Listener([circuit], uses_relay=relay)
        self._emit(NewListenAddr(circuit))
        return circuit

    async def stop_listening_relay(self, relay: PeerId) -> bool:
        """Stop every listener that uses ``relay``; True if there was one."""
        found = False
        for listener_id, listener in list(self._listeners.items()):
            if listener.uses_relay == relay:
                del self._listeners[listener_id]
                self._emit(ListenerClosed(tuple(listener.addrs), None))
                found = True
        if self.relay_client is not None:
            found = await self.relay_client.stop_listening(relay) or found
        return found

    def _on_relay_event(self, event: RelayClientEvent) -> None:
        if isinstance(event, ReservationFailed) and event.final:
            for listener_id, listener in list(self._listeners.items()):
                if listener.uses_relay == event.relay:
                    del self._listeners[listener_id]
                    self._emit(ListenerClosed(tuple(listener.addrs), event.error))
        elif isinstance(event, ReservationFailed):
            self._emit(ListenerError(event.error))

    def _require_relay(self) -> RelayClient:
        if self.relay_client is None:
            raise RelayNotSupportedError()
        return self.relay_client

    async def add_dialing_relay(
        self, peer: PeerId, addr: Multiaddr | str | None = None
    ) -> Multiaddr | None:
        """Use ``peer`` as a fallback relay for dialling; return its address if known."""
        self._require_relay()
        addr = Multiaddr(addr) if isinstance(addr, str) else addr
        result = self._addresses.add_relay(peer, addr)
        self._address_book_changed()
        return result

    async def remove_dialing_relay(self, peer: PeerId) -> bool:
        removed = self._addresses.remove_relay(peer)
        self._address_book_changed()
        return removed

    async def set_relay_fallback(self, peer: PeerId, use_relay_fallback: bool) -> None:
        """Whether relayed addresses via the dialing relays are tried for ``peer``."""
        self._require_relay()
        self._addresses.set_relay_fallback(peer, use_relay_fallback)
        self._address_book_changed()

    async def use_specific_relay(
        self, target: PeerId, relay: PeerId, is_exclusive: bool
    ) -> Multiaddr | None:
        """Try ``target`` through ``relay`` first (and, if exclusive, through no other
        relay); return the target's relayed address, or None if the relay has no known
        address."""
        self._require_relay()
        result = self._addresses.use_relay(target, relay, is_exclusive)
        self._address_book_changed()
        return result

    def listeners(self) -> list[Listener]:
        return [Listener(list(lst.addrs), lst.uses_relay) for lst in self._listeners.values()]

    async def stop_listening(self) -> None:
        """Remove every listener."""
        for listener_id in list(self._listeners):
            await self._close_listener(listener_id)

    async def stop_listening_addr(self, addr: Multiaddr | str) -> None:
        """Remove every listener that has ``addr`` among its addresses."""
        addr = Multiaddr(addr) if isinstance(addr, str) else addr
        for listener_id, listener in list(self._listeners.items()):
            if addr in listener.addrs:
                await self._close_listener(listener_id)

    async def _close_listener(self, listener_id: int) -> None:
        listener = self._listeners.pop(listener_id)
        if listener.uses_relay is not None and self.relay_client is not None:
            await self.relay_client.stop_listening(listener.uses_relay)
        elif listener.addrs:
            await self.node.stop_listening(listener.addrs[0])
        self._emit(ListenerClosed(tuple(listener.addrs), None))

    # -- connections ---------------------------------------------------------------------

    def is_connected(self, peer: PeerId) -> bool:
        return self.node.is_connected(peer)

    def established_connections(self) -> list[tuple[PeerId, list[ConnectedPoint]]]:
        return [
            (peer, [_endpoint(c) for c in self.node.connections_to(peer)])
            for peer in self.node.connected_peers
        ]

    async def connect_peer(self, peer: PeerId) -> Multiaddr:
        """Connect to ``peer`` (trying its known addresses in order); return the remote
        address of the connection.  Already connected: the existing connection's."""
        self._check_open()
        conn = await self._connection(peer)
        remote = conn.remote_addr
        return remote if remote is not None else Multiaddr(f"/p2p/{peer}")

    async def _connection(self, peer: PeerId) -> Connection:
        if peer in self._banned:
            raise BannedPeerError(peer)
        existing = self.node.connections_to(peer)
        if existing:
            return existing[0]
        pending = self._dials.get(peer)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._dials[peer] = pending
            self.node.spawn(self._dial_peer(peer, pending), name=f"dial {peer}")
        return await asyncio.shield(pending)

    async def _dial_peer(self, peer: PeerId, result: asyncio.Future[Connection]) -> None:
        try:
            conn = await self._dial_candidates(peer)
        except BaseException as exc:
            if not result.done():
                result.set_exception(
                    exc if isinstance(exc, P2PError) else ShutdownError(str(exc) or "cancelled")
                )
                result.exception()
            if not isinstance(exc, P2PError | asyncio.CancelledError):
                raise
        else:
            if not result.done():
                result.set_result(conn)
        finally:
            if self._dials.get(peer) is result:
                del self._dials[peer]

    async def _dial_candidates(self, peer: PeerId) -> Connection:
        if peer == self.peer_id:
            raise DialError("Tried to dial local peer id.")
        own = set(self.node.listen_addrs)
        candidates: list[Multiaddr] = []
        for addr in self.get_addrs(peer):
            if addr not in candidates and addr.without_peer_id() not in own:
                candidates.append(addr)
        if not candidates:
            raise NoAddressesError("No addresses known for peer.")
        causes: dict[str, BaseException] = {}
        failed: list[Multiaddr] = []
        for addr in candidates:
            try:
                conn = await self.node.dial(addr.with_peer_id(peer))
            except P2PError as exc:
                if isinstance(exc, BannedPeerError):
                    raise
                causes[str(addr)] = exc
                failed.append(addr)
                continue
            for bad in failed:
                self._addresses.deprioritize_addr(peer, bad)
            self._addresses.prioritize_addr(peer, addr)
            self._address_book_changed()
            return conn
        raise DialError(f"could not connect to {peer}", causes)

    def _gate(self, conn: Connection) -> P2PError | None:
        if conn.remote_peer in self._banned:
            return BannedPeerError(conn.remote_peer)
        return None

    def _on_connection(self, conn: Connection, opened: bool) -> None:
        peer = conn.remote_peer
        num = len(self.node.connections_to(peer))
        if opened:
            self._apply(
                self._engine.on_connection_established(
                    peer, conn.id, inbound=conn.direction is Direction.INBOUND
                )
            )
            self._emit(ConnectionEstablished(peer, _endpoint(conn), num))
            if self.node.identify is not None:
                self.node.spawn(self._learn_addresses(conn), name="learn addresses")
        else:
            # (A connection vetoed right after its handshake — limit, ban — is never
            # reported opened nor closed: the node reports it as an incoming error.)
            self._apply(self._engine.on_connection_closed(peer, conn.id))
            for response in self._delivered.pop(conn.id, ()):
                if not response.done():
                    response.set_exception(_ConnectionGone())
            error = conn.error
            cause = error if error is not None and not _graceful(error) else None
            self._emit(ConnectionClosed(peer, _endpoint(conn), num, cause))

    def _on_incoming_error(self, conn: Connection, error: P2PError) -> None:
        self._emit(IncomingConnectionError(conn.local_addr, conn.remote_addr, error))

    async def _learn_addresses(self, conn: Connection) -> None:
        """Record the peer's *listen* addresses from identify (not ephemeral ports)."""
        identify = self.node.identify
        assert identify is not None
        try:
            info = await identify.identify(conn)
        except (P2PError, TimeoutError):
            return
        changed = False
        for addr in info.addrs:
            if addr not in self._addresses.get_addrs(conn.remote_peer):
                self._addresses.add_addrs(conn.remote_peer, addr)
                changed = True
        if changed:
            self._address_book_changed()

    async def ban_peer(self, peer: PeerId) -> None:
        """Refuse every connection with ``peer`` and close the existing ones."""
        self._banned.add(peer)
        for conn in self.node.connections_to(peer):
            await conn.close()

    async def unban_peer(self, peer: PeerId) -> None:
        self._banned.discard(peer)

    # -- address book --------------------------------------------------------------------

    def get_addrs(self, peer: PeerId) -> list[Multiaddr]:
        """Dial candidates for ``peer`` in order (seed-spec §8.4): the address book
        (known addresses, then relayed ones via the dialing relays), then addresses
        discovered on the LAN."""
        addrs = self._addresses.get_addrs(peer)
        if self._mdns is not None:
            addrs.extend(self._mdns.discovered_peers.get(peer, ()))
        return addrs

    async def add_address(self, peer: PeerId, addr: Multiaddr | str) -> None:
        self._addresses.add_addrs(peer, Multiaddr(addr) if isinstance(addr, str) else addr)
        self._address_book_changed()

    async def remove_address(self, peer: PeerId, addr: Multiaddr | str) -> None:
        self._addresses.remove_address(peer, Multiaddr(addr) if isinstance(addr, str) else addr)
        self._address_book_changed()

    def export_address_info(self) -> AddressInfo:
        return self._addresses.copy()

    def _address_book_changed(self) -> None:
        if self._store is None or self._save_handle is not None or self._closed:
            return
        self._save_handle = asyncio.get_running_loop().call_later(1.0, self._save_addresses)

    def _save_addresses(self) -> None:
        self._save_handle = None
        if self._store is not None:
            try:
                self._store.save(self._addresses)
            except OSError as exc:
                log.warning("could not save the address book: %s", exc)

    # -- firewall configuration ----------------------------------------------------------

    async def set_firewall_default(self, rule: Rule[Any] | None) -> None:
        self._apply(self._engine.set_default(rule))

    async def remove_firewall_default(self) -> None:
        self._apply(self._engine.remove_default())

    async def get_firewall_config(self) -> FirewallRules[Any]:
        return self._engine.get_rules()

    async def set_peer_rule(self, peer: PeerId, rule: Rule[Any]) -> None:
        self._apply(self._engine.set_peer_rule(peer, rule))

    async def remove_peer_rule(self, peer: PeerId) -> None:
        self._apply(self._engine.remove_peer_rule(peer))

    # -- the firewall's actions ----------------------------------------------------------

    def _apply(self, actions: Iterable[FirewallAction[Any]]) -> None:
        for action in actions:
            if isinstance(action, Deliver | Reject):
                decision = self._decisions.pop(action.request_id, None)
                if decision is not None and not decision.done():
                    decision.set_result(action.reason if isinstance(action, Reject) else None)
            elif isinstance(action, QueryRule):
                self._ask_rule(action.peer)
            elif isinstance(action, AskApproval):
                self._ask_approval(action.request_id, action.peer, action.view)
            elif isinstance(action, CancelRuleQuery):
                pending = self._rule_queries.pop(action.peer, None)
                if pending is not None:
                    pending[0].answered = True
                    pending[1].cancel()
            elif isinstance(action, CancelApproval):
                approval = self._approvals.pop(action.request_id, None)
                if approval is not None:
                    approval[0].answered = True
                    approval[1].cancel()
            elif isinstance(action, SupportChanged):
                # Negotiation consults the offer predicate on every new stream; identify
                # push tells the peer its view of our protocols changed.
                self.node.notify_local_change()

    def _ask_rule(self, peer: PeerId) -> None:
        loop = asyncio.get_running_loop()

        def answered(value: object) -> None:
            entry = self._rule_queries.pop(peer, None)
            if entry is None:
                return
            entry[1].cancel()
            rule = value if isinstance(value, Rule) else None
            self._apply(self._engine.on_rule_answer(peer, rule))

        answer = _Answer(answered)
        timer = loop.call_later(self.config.firewall_timeout, answer.give, None)
        self._rule_queries[peer] = (answer, timer)
        self._deliver_firewall_request(PeerRuleQuery(peer, answer))

    def _ask_approval(self, request_id: RequestId, peer: PeerId, view: Any) -> None:
        loop = asyncio.get_running_loop()

        def answered(value: object) -> None:
            entry = self._approvals.pop(request_id, None)
            if entry is None:
                return
            entry[1].cancel()
            self._apply(self._engine.on_approval(request_id, value is True))

        answer = _Answer(answered)
        timer = loop.call_later(self.config.firewall_timeout, answer.give, False)
        self._approvals[request_id] = (answer, timer)
        self._deliver_firewall_request(ApprovalRequest(peer, request_id, view, answer))

    def _deliver_firewall_request(self, request: FirewallRequest) -> None:
        if self._firewall_closed or self._closed:
            asyncio.get_running_loop().call_soon(request.drop)
            return
        if self._firewall_handler is not None:
            self.node.spawn(self._run_firewall_handler(request), name="firewall handler")
            return
        queue = self._firewall_queue
        assert queue is not None
        try:
            queue.put_nowait(request)
        except asyncio.QueueFull:
            self.node.spawn(queue.put(request), name="firewall queue")

    async def _run_firewall_handler(self, request: FirewallRequest) -> None:
        assert self._firewall_handler is not None
        try:
            await self._firewall_handler(request)
        finally:
            if not request.answered:
                request.drop()

    # -- outbound requests ---------------------------------------------------------------

    async def send_request(self, peer: PeerId, request: Rq) -> Rs:
        """Send ``request`` to ``peer`` and return its response.

        Raises a :class:`~aiop2p.errors.RequestError` whose ``kind`` is the seed's
        ``OutboundFailure``: dial failure, timeout, connection closed (also when the
        remote closed the stream unanswered: ``ResponseOmittedError``), unsupported
        protocols, shutdown.
        """
        self._check_open()
        payload = self.codec.encode(request)
        request_id = self._next_id()
        task = asyncio.current_task()
        assert task is not None
        self._outbound_tasks.add(task)
        try:
            try:
                conn = await self._connection(peer)
            except ShutdownError:
                raise
            except P2PError as exc:
                raise RequestDialError(f"Failed to dial the requested peer: {exc}") from exc
            deadline = self._deadlines.start(task)
            try:
                body = await send_request_on(
                    conn,
                    self.config.protocols,
                    payload,
                    framing=self.config.framing,
                    max_request_size=self.config.max_request_size,
                    max_response_size=self.config.max_response_size,
                )
            except asyncio.CancelledError:
                if deadline.expired:
                    task.uncancel()
                    raise RequestTimeoutError(request_id=request_id) from None
                raise
            finally:
                deadline.finish()
            try:
                response: Rs = self.codec.decode(body)
            except CodecError as exc:
                raise RequestConnectionClosedError(f"invalid response: {exc}") from exc
            return response
        except asyncio.CancelledError:
            if self._closed:
                task.uncancel()
                raise ShutdownError(request_id=request_id) from None
            raise
        finally:
            self._outbound_tasks.discard(task)

    # -- inbound requests ----------------------------------------------------------------

    async def _serve_request(self, stream: Stream) -> None:
        request_id = self._next_id()
        conn_id = stream.connection.id
        config = self.config
        count = self._inflight.get(conn_id, 0)
        if (
            count >= config.max_concurrent_inbound_requests_per_connection
            or self._inflight_total >= config.max_concurrent_inbound_requests
        ):
            # Shed load before doing any work: the requester sees a reset at once
            # (RequestRefusedError) instead of a timeout later.
            stream.reset()
            failure: InboundFailure | None = InboundFailure.OVERLOADED
        else:
            self._inflight[conn_id] = count + 1
            self._inflight_total += 1
            try:
                failure = await self._serve_admitted(stream, request_id)
            finally:
                self._inflight_total -= 1
                left = self._inflight[conn_id] - 1
                if left:
                    self._inflight[conn_id] = left
                else:
                    del self._inflight[conn_id]
        if failure is None:
            return
        self._emit(InboundRequestFailed(request_id, stream.connection.remote_peer, failure))
        if failure in _GAVE_UP and config.framing is Framing.LENGTH_PREFIXED:
            await _linger_then_reset(stream, self.node.config.stream_linger_timeout)
        elif failure in _CLOSE_UNANSWERED and config.framing is Framing.LENGTH_PREFIXED:
            await _close(stream)
        else:
            # Reset: overload, unreadable request, stalled write; and every failure with
            # EOF framing, where a clean close would read as an empty response.
            stream.reset()

    async def _serve_admitted(self, stream: Stream, request_id: RequestId) -> InboundFailure | None:
        """Read, decide, deliver, answer; the failure, if any, exactly as it happened."""
        conn = stream.connection
        peer = conn.remote_peer
        config = self.config
        loop = asyncio.get_running_loop()
        response: asyncio.Future[bytes] = loop.create_future()
        written: asyncio.Future[None] = loop.create_future()
        task = asyncio.current_task()
        assert task is not None
        # What the deadline means if it strikes now: the phase of the exchange.
        phase = InboundFailure.TIMEOUT
        failure: InboundFailure | None = None
        deadline = self._deadlines.start(task)
        try:
            body = await read_request(
                stream, framing=config.framing, max_request_size=config.max_request_size
            )
            try:
                value: Rq = self.codec.decode(body)
                view = self._firewall_view(value)
            except (P2PError, ValueError, TypeError) as exc:
                log.debug("invalid request from %s: %s", peer, exc)
                return InboundFailure.INVALID_REQUEST
            phase = InboundFailure.RESPONSE_TIMEOUT
            outcome = await self._answer(
                stream, request_id, conn.id, peer, value, view, response, written
            )
            if isinstance(outcome, InboundFailure):
                failure = outcome
                return failure
            phase = InboundFailure.SEND_TIMEOUT
            await write_response(stream, outcome, framing=config.framing)
            written.set_result(None)
            return None
        except asyncio.CancelledError:
            if not deadline.expired:
                raise
            task.uncancel()
            failure = phase
            return failure
        except P2PError as exc:
            failure = _stream_failure(stream, exc, phase)
            return failure
        finally:
            deadline.finish()
            self._decisions.pop(request_id, None)
            self._apply(self._engine.on_request_finished(request_id))
            # A late respond() must fail, not wait forever.
            if not response.done():
                response.set_exception(_Omitted())
                response.exception()
            if not written.done():
                ended = failure.value if failure is not None else "request ended"
                written.set_exception(InvalidStateError(ended))
                written.exception()

    async def _answer(
        self,
        stream: Stream,
        request_id: RequestId,
        conn_id: ConnectionId,
        peer: PeerId,
        value: Rq,
        view: Any,
        response: asyncio.Future[bytes],
        written: asyncio.Future[None],
    ) -> bytes | InboundFailure:
        """The firewall's decision, then the application's answer (or why there is none)."""
        decision: asyncio.Future[RejectReason | None] = asyncio.get_running_loop().create_future()
        self._decisions[request_id] = decision
        self._apply(self._engine.on_request(request_id, peer, conn_id, view))
        reason = await decision
        if reason is RejectReason.NOT_PERMITTED:
            return InboundFailure.NOT_PERMITTED
        if reason is not None:
            return InboundFailure.CONNECTION_CLOSED
        if not stream.connection.is_established:
            return InboundFailure.CONNECTION_CLOSED  # closed while the decision was queued
        inbound: InboundRequest[Rq, Rs] = InboundRequest(
            peer, request_id, value, response, written, self.codec.encode
        )
        delivered = self._delivered.get(conn_id)
        if delivered is None:
            delivered = self._delivered[conn_id] = set()
        delivered.add(response)
        try:
            if not await self._requests.send(inbound):
                inbound.drop()
            del inbound  # the application holds the only reference now
            return await response
        except _Omitted:
            return InboundFailure.RESPONSE_OMISSION
        except _ConnectionGone:
            return InboundFailure.CONNECTION_CLOSED
        finally:
            delivered.discard(response)
            if not delivered and self._delivered.get(conn_id) is delivered:
                del self._delivered[conn_id]


_GAVE_UP = frozenset({InboundFailure.TIMEOUT, InboundFailure.RESPONSE_TIMEOUT})
"""We gave up waiting: keep the stream open so the requester meets its own deadline."""

_CLOSE_UNANSWERED = frozenset(
    {
        InboundFailure.NOT_PERMITTED,
        InboundFailure.RESPONSE_OMISSION,
        InboundFailure.CONNECTION_CLOSED,
        InboundFailure.CANCELLED,
    }
)
"""Deliberate non-answers: a clean close (the requester's ``ResponseOmittedError``)."""


def _stream_failure(stream: Stream, exc: P2PError, phase: InboundFailure) -> InboundFailure:
    """Why a stream operation of an inbound request failed."""
    if not stream.connection.is_established:
        return InboundFailure.CONNECTION_CLOSED
    if isinstance(exc, StreamResetError):
        return InboundFailure.CANCELLED  # the requester reset its stream
    if phase is InboundFailure.TIMEOUT:
        return InboundFailure.INVALID_REQUEST  # early EOF, bad length prefix, too large
    return InboundFailure.CONNECTION_CLOSED


async def _linger_then_reset(stream: Stream, linger: float) -> None:
    """After our deadline: no FIN (a clean close would read as "omitted"), but wait for
    the requester to give up on its own deadline (it started first), at most
    ``linger`` seconds, discarding what it sends; then reset."""
    with contextlib.suppress(TimeoutError, P2PError):
        async with asyncio.timeout(linger):
            while await stream.read(1 << 16):
                pass
    stream.reset()


def _endpoint(conn: Connection) -> ConnectedPoint:
    return ConnectedPoint(
        dialer=conn.direction is Direction.OUTBOUND,
        remote_addr=conn.remote_addr,
        local_addr=conn.local_addr,
    )


def _graceful(error: P2PError) -> bool:
    return type(error) is ConnectionClosedError


async def _close(stream: Stream) -> None:
    try:
        await stream.close()
    except P2PError:
        stream.reset()
