"""``Network``: typed 1:1 request-response between peers, every inbound request
approved or rejected by a firewall — the seed's surface (docs/compat.md), in Python.

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
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, replace
from typing import Any, Generic, Self, TypeVar

from .._aio.connection import Connection, Direction
from ..errors import (
    BannedPeerError,
    ConnectionClosedError,
    InvalidArgumentError,
    InvalidStateError,
    MultiaddrNotSupportedError,
    NoAddressesError,
    P2PError,
    RelayNotSupportedError,
    ShutdownError,
)
from ..events import (
    AutoRelayAdded,
    ConnectedPoint,
    ConnectionClosed,
    ConnectionEstablished,
    IncomingConnectionError,
    ListenerClosed,
    ListenerError,
    NetworkEvent,
    NewListenAddr,
    RelayReservationLost,
    RelayReservationRestored,
)
from ..identity import KeyPair, PeerId
from ..multiaddr import Multiaddr
from ..node import Node
from ..services.dcutr import DcutrService, HolePunchEvent
from ..services.mdns import MdnsEvent, MdnsService
from ..services.relay.auto import AutoRelay, AutoRelayEvent
from ..services.relay.client import (
    RelayClient,
    RelayClientConfig,
    RelayClientEvent,
    ReservationFailed,
    ReservationLost,
    ReservationRestored,
)
from ..services.relay.server import RelayServer
from ..transports._base import Transport
from .address_book import AddressBookStore, AddressInfo
from .codecs import Codec, JsonCodec, RequestResponseCodec
from .config import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_RESPONSE_CHUNKS,
    Framing,
    NetworkConfig,
    ProtocolConfig,
)
from .event_channel import EventChannel
from .exchange import ExchangeBudget, RequestExchange, Route
from .firewall import FirewallRules, Rule
from .gate import FirewallGate, FirewallRequest
from .inbound import InboundRequest
from .protocol import RequestProtocol
from .server import DEFAULT_MAX_CONCURRENCY, RequestHandler

__all__ = ["Listener", "Network"]

log = logging.getLogger(__name__)

Rq = TypeVar("Rq")
Rs = TypeVar("Rs")


@dataclass(slots=True)
class Listener:
    """One listen call: its addresses and, for relayed listening, the relay used."""

    addrs: list[Multiaddr]
    uses_relay: PeerId | None = None


class Network(Generic[Rq, Rs]):
    """The seed's ``Network``: request-response with a firewall, connections, addresses."""

    def __init__(
        self,
        keys: KeyPair | None = None,
        *,
        firewall: FirewallRules[Any] | None = None,
        config: NetworkConfig | None = None,
        codec: Codec | RequestResponseCodec | None = None,
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
        self.codec: Codec | RequestResponseCodec = codec or JsonCodec()
        node_config = replace(
            config.node,
            limits=config.connection_limits,
            idle_connection_timeout=config.connection_timeout,
        )
        self._node = Node(keys, config=node_config, transports=transports)
        # Private: listening or dialling on it directly would bypass the listener
        # bookkeeping, the NewListenAddr events and the address book.  Inside the
        # project (CLI, bench, tests) it is reached as ``_node``.
        self._firewall = FirewallGate(
            firewall or FirewallRules.empty(),
            timeout=config.firewall_timeout,
            capacity=config.firewall_channel_capacity,
            handler=firewall_handler,
            spawn=self._node.spawn,
            # Negotiation consults the offer predicate on every new stream; identify
            # push tells the peer its view of our protocols changed.
            support_changed=lambda: self._node.local_changed.emit(None),
        )
        self._firewall_view: Callable[[Any], Any] | None = firewall_view
        """``None``: rules see the request itself (no identity call per request)."""
        self._budget = ExchangeBudget(config)
        self._route = Route(
            check_open=self._check_open,
            peer_of=self._target,
            connected=self._connected,
            connect=self._connection,
        )
        self._linger_timeout = node_config.stream_linger_timeout
        self._protocols: dict[str, RequestProtocol[Any, Any]] = {}
        """Every request protocol by each of its ids, the default one included."""
        self._default: RequestProtocol[Rq, Rs] = self._new_protocol(
            config.default_protocol(), self.codec, self._firewall_view
        )
        self._exchange: RequestExchange[Rq, Rs] = self._default._exchange
        path = config.address_book_path
        self._store = AddressBookStore(path) if path is not None else None
        if address_info is not None:
            self._addresses = address_info.copy()
        elif self._store is not None:
            self._addresses = self._store.load()
        else:
            self._addresses = AddressInfo()
        self._events: EventChannel[NetworkEvent] = EventChannel(
            config.events_channel.capacity, config.events_channel.policy, name="events"
        )
        self._listeners: dict[int, Listener] = {}
        self._listener_ids = itertools.count(1)
        self._banned: set[PeerId] = set()
        self._save_handle: asyncio.TimerHandle | None = None
        self._mdns: MdnsService | None = None
        self.relay_client: RelayClient | None = None
        """Reservations and relayed dials (``None`` when ``relay_client`` is off)."""
        self.relay_server: RelayServer | None = None
        """The relay we run for others (only with ``relay_server`` configured)."""
        if config.relay_client:
            client_config = config.relay_client
            self.relay_client = RelayClient(
                self._node,
                config=client_config if isinstance(client_config, RelayClientConfig) else None,
            )
            self.relay_client.events.subscribe(self._on_relay_event)
        self.auto_relay: AutoRelay | None = None
        """The automatic relays (``config.auto_relay``), from :meth:`start` on."""
        self.dcutr: DcutrService | None = None
        """Hole punching; created before any listener so TCP can reuse the listen port."""
        if config.dcutr is not None:
            self.dcutr = DcutrService(self._node, config=config.dcutr)
            self.dcutr.events.subscribe(self._on_dcutr_event)
        self._started = False
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def peer_id(self) -> PeerId:
        return self._node.peer_id

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        node = self._node
        node.connection_gate = self._refuse_banned
        node.dial_candidates = self.get_addrs
        node.dial_succeeded = self._dial_succeeded
        node.connection_opened.subscribe(self._on_connection_opened)
        node.connection_closed.subscribe(self._on_connection_closed)
        node.incoming_failed.subscribe(self._on_incoming_failed)
        for protocol_id, protocol in self._protocols.items():
            self._register(protocol_id, protocol)
        await node.start()
        if node.autonat is not None:
            # ReachabilityChanged is a NetworkEvent as it is.
            node.autonat.events.subscribe(self._emit)
        if self.config.auto_relay is not None and self.relay_client is not None:
            self.auto_relay = AutoRelay(
                node, self.relay_client, self.config.auto_relay, autonat=node.autonat
            )
            self.auto_relay.events.subscribe(self._on_auto_relay_event)
            self.auto_relay.start()
        if self.config.relay_server is not None:
            self.relay_server = RelayServer(node, config=self.config.relay_server)
            self.relay_server.start()
        if self.config.mdns is not None:
            self._mdns = MdnsService(node, config=self.config.mdns)
            self._mdns.discovery.subscribe(self._on_mdns_event)
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
        exchanges = {id(p._exchange): p._exchange for p in self._protocols.values()}
        for exchange in exchanges.values():
            exchange.closing()
        self._firewall.close()
        if self._mdns is not None:
            await self._mdns.close()
        if self.dcutr is not None:
            await self.dcutr.close()
        if self.auto_relay is not None:
            await self.auto_relay.close()
        if self._node.autonat is not None:
            self._node.autonat.events.unsubscribe(self._emit)
        if self.relay_client is not None:
            await self.relay_client.close()
        if self.relay_server is not None:
            await self.relay_server.close()
        await self._node.close()
        for exchange in exchanges.values():
            await exchange.close()
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

    # -- inbound work for the application ------------------------------------------------

    def requests(self) -> EventChannel[InboundRequest[Rq, Rs]]:
        """Approved inbound requests on the default protocol: ``async for request in
        network.requests()`` (while :meth:`serve` runs, requests go to its handler
        instead)."""
        return self._default.requests()

    async def serve(
        self,
        handler: RequestHandler[Rq, Rs],
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        """Answer every approved request on the default protocol with ``await
        handler(request)`` until the network closes or this call is cancelled.

        ``handler`` gets the :class:`InboundRequest` (``peer``, ``request_id``,
        ``request``) and returns the response value.  Each request runs in a task of its
        own, at most ``max_concurrency`` at once (later ones wait their turn, under their
        deadline).  A handler that raises is logged with its traceback and reported as
        ``InboundFailure.HANDLER_ERROR`` (the requester sees its stream closed without a
        response, or, with the chunked framing, a :class:`~aiop2p.errors.RemoteError`);
        serving goes on.  On a chunked protocol a handler may be an async generator: its
        items are streamed (:meth:`RequestProtocol.request_stream`).  When the requester
        resets the stream, the request's deadline (``request_timeout``) passes or the
        connection closes, the handler is cancelled.  Cancelling ``serve`` cancels the
        running handlers.  One ``serve`` per protocol at a time
        (:class:`InvalidStateError` otherwise).
        """
        await self._default.serve(handler, max_concurrency=max_concurrency)

    # -- request protocols ---------------------------------------------------------------

    @property
    def default_protocol(self) -> RequestProtocol[Rq, Rs]:
        """The protocol of :meth:`send_request`, :meth:`serve` and :meth:`requests`
        (``NetworkConfig.protocols``, ``/p2p/1.0.0`` by default)."""
        return self._default

    def add_protocol(
        self,
        protocol_id: str | tuple[str, ...],
        *,
        codec: Codec | RequestResponseCodec | None = None,
        framing: Framing = Framing.LENGTH_PREFIXED,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_response_chunks: int = DEFAULT_MAX_RESPONSE_CHUNKS,
        firewall_view: Callable[[Any], Any] | None = None,
    ) -> RequestProtocol[Any, Any]:
        """Serve and send requests on one more protocol; returns its
        :class:`RequestProtocol` (``send_request``, ``serve``, ``requests``,
        ``request_stream``).

        ``protocol_id`` is one id or several in preference order; ``codec`` is JSON by
        default; ``framing`` one of :class:`Framing` (``CHUNKED`` for result codes and
        streamed responses; then ``max_response_bytes`` bounds each chunk and
        ``max_response_chunks`` their number).  The firewall applies as to the default
        protocol: rules see the request through ``firewall_view`` (the Network's by
        default), an :class:`ApprovalRequest` names its ``protocol``, and identify
        advertises the protocol to exactly the peers the firewall lets use it.  Can be
        called before or after start; an id already served raises
        :class:`InvalidArgumentError`.
        """
        ids = (protocol_id,) if isinstance(protocol_id, str) else tuple(protocol_id)
        spec = ProtocolConfig(
            ids, framing, max_request_bytes, max_response_bytes, max_response_chunks
        )
        taken = [p for p in ids if p in self._protocols or p in self._node.protocols]
        if taken:
            raise InvalidArgumentError(f"protocol already served: {', '.join(taken)}")
        if self._closed:
            raise ShutdownError("The network event-loop was shut down.")
        protocol: RequestProtocol[Any, Any] = self._new_protocol(
            spec, codec or JsonCodec(), firewall_view or self._firewall_view
        )
        if self._started:
            for pid in ids:
                self._register(pid, protocol)
            self._node.local_changed.emit(None)  # identify push: one more protocol
        return protocol

    def _new_protocol(
        self,
        spec: ProtocolConfig,
        codec: Codec | RequestResponseCodec,
        firewall_view: Callable[[Any], Any] | None,
    ) -> RequestProtocol[Any, Any]:
        exchange: RequestExchange[Any, Any] = RequestExchange(
            self.config,
            codec,
            firewall_view,
            self._firewall,
            emit=self._emit,
            linger_timeout=self._linger_timeout,
            spec=spec,
            budget=self._budget,
        )
        protocol: RequestProtocol[Any, Any] = RequestProtocol(exchange, self._route)
        for pid in spec.protocols:
            self._protocols[pid] = protocol
        return protocol

    def _register(self, protocol_id: str, protocol: RequestProtocol[Any, Any]) -> None:
        # Offered or not is the engine's answer, asked on every inbound stream: no gate hop.
        offer = self._firewall.engine.offers_protocol
        self._node.set_inline_stream_handler(protocol_id, protocol._exchange.accept, offer=offer)

    def events(self) -> EventChannel[NetworkEvent]:
        """Network events: ``async for event in network.events()``."""
        return self._events

    async def firewall_requests(self) -> AsyncIterator[FirewallRequest]:
        """Firewall questions (rule queries, approvals) to answer, as they come.

        Questions not answered within ``firewall_timeout`` are answered "no".  Without
        a ``firewall_handler`` and with nobody iterating here, nobody would answer: the
        request is rejected at once and a warning names the fix (docs/compat.md,
        "compat: nobody answers the firewall").
        """
        self._check_open()
        gate = self._firewall
        gate.listeners += 1
        try:
            while not self._closed:
                yield await gate.next_question()
        finally:
            gate.listeners -= 1

    def close_firewall_requests(self) -> None:
        """Stop taking firewall questions: from now on each one is answered "no" at once
        (the seed's dropped firewall receiver)."""
        self._firewall.close_questions()

    def _emit(self, event: NetworkEvent) -> None:
        try:
            self._events.send_nowait(event)
        except P2PError:
            # A BLOCK events channel that is full: deliver when there is room.
            self._node.spawn(self._emit_waiting(event), name="event")

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
        if addr.is_circuit and self.relay_client is None:
            raise MultiaddrNotSupportedError(addr)
        try:
            addrs = await self._node.listen(addr)
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
            self.add_address(relay, relay_addr.without_peer_id())
        addr = relay_addr
        if addr is None:
            candidates = [a for a in self.get_addrs(relay) if not a.is_circuit]
            if not candidates and not self._node.is_connected(relay):
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
        elif isinstance(event, ReservationLost):
            self._emit(RelayReservationLost(event.relay, event.error))
        elif isinstance(event, ReservationRestored):
            self._emit(RelayReservationRestored(event.relay, event.attempts))

    def _on_auto_relay_event(self, event: AutoRelayEvent) -> None:
        """The automatic relays' listeners are listeners like the others: listed by
        :meth:`listeners`, announced and closed with the usual events."""
        self._emit(event)
        if isinstance(event, AutoRelayAdded):
            for listener in self._listeners.values():
                if listener.uses_relay == event.relay:
                    if event.addr not in listener.addrs:
                        listener.addrs.append(event.addr)
                    return
            self._listeners[next(self._listener_ids)] = Listener([event.addr], event.relay)
            self._emit(NewListenAddr(event.addr))
            return
        for listener_id, listener in list(self._listeners.items()):
            if listener.uses_relay == event.relay:
                del self._listeners[listener_id]
                self._emit(ListenerClosed(tuple(listener.addrs), event.error))

    def _require_relay(self) -> RelayClient:
        if self.relay_client is None:
            raise RelayNotSupportedError()
        return self.relay_client

    def add_dialing_relay(
        self, peer: PeerId, addr: Multiaddr | str | None = None
    ) -> Multiaddr | None:
        """Use ``peer`` as a fallback relay for dialling; return its address if known."""
        self._require_relay()
        addr = Multiaddr(addr) if isinstance(addr, str) else addr
        result = self._addresses.add_relay(peer, addr)
        self._address_book_changed()
        return result

    def remove_dialing_relay(self, peer: PeerId) -> bool:
        removed = self._addresses.remove_relay(peer)
        self._address_book_changed()
        return removed

    def set_relay_fallback(self, peer: PeerId, use_relay_fallback: bool) -> None:
        """Whether relayed addresses via the dialing relays are tried for ``peer``."""
        self._require_relay()
        self._addresses.set_relay_fallback(peer, use_relay_fallback)
        self._address_book_changed()

    def use_specific_relay(
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

    async def stop_listening_addr(self, addr: Multiaddr | str) -> bool:
        """Remove every listener that has ``addr`` among its addresses; True if there was
        one (:meth:`Node.stop_listening_addr <aiop2p.node.Node.stop_listening_addr>` too)."""
        addr = Multiaddr(addr) if isinstance(addr, str) else addr
        found = False
        for listener_id, listener in list(self._listeners.items()):
            if addr in listener.addrs:
                await self._close_listener(listener_id)
                found = True
        return found

    async def _close_listener(self, listener_id: int) -> None:
        listener = self._listeners.pop(listener_id)
        if listener.uses_relay is not None and self.relay_client is not None:
            await self.relay_client.stop_listening(listener.uses_relay)
        elif listener.addrs:
            await self._node.stop_listening_addr(listener.addrs[0])
        self._emit(ListenerClosed(tuple(listener.addrs), None))

    # -- connections ---------------------------------------------------------------------

    def is_connected(self, peer: PeerId) -> bool:
        return self._node.is_connected(peer)

    def established_connections(self) -> list[tuple[PeerId, list[ConnectedPoint]]]:
        return [
            (peer, [_endpoint(c) for c in self._node.connections_to(peer)])
            for peer in self._node.connected_peers
        ]

    async def connect_peer(self, peer: PeerId) -> Multiaddr:
        """Connect to ``peer`` (trying its known addresses in order); return the remote
        address of the connection.  Already connected: the existing connection's."""
        self._check_open()
        conn = await self._connection(peer)
        remote = conn.remote_addr
        return remote if remote is not None else Multiaddr(f"/p2p/{peer}")

    def _connected(self, peer: PeerId) -> Connection | None:
        """The connection a request to ``peer`` takes without waiting (``None``: ask
        :meth:`_connection`, which dials, or refuses a banned peer)."""
        banned = self._banned  # usually empty: no PeerId hash (a Python call) per request
        return None if banned and peer in banned else self._node.connection_now(peer)

    async def _connection(self, peer: PeerId) -> Connection:
        if peer in self._banned:
            raise BannedPeerError(peer)
        return await self._node.connect(peer)

    def _dial_succeeded(self, peer: PeerId, addr: Multiaddr, failed: list[Multiaddr]) -> None:
        """The node's dialer reached ``peer`` at ``addr``: that address goes first in the
        address book and the ones that failed before it go last (the seed's ordering)."""
        for bad in failed:
            self._addresses.deprioritize_addr(peer, bad)
        self._addresses.prioritize_addr(peer, addr)
        self._address_book_changed()

    def _refuse_banned(self, conn: Connection) -> P2PError | None:
        if conn.remote_peer in self._banned:
            return BannedPeerError(conn.remote_peer)
        return None

    def _on_connection_opened(self, conn: Connection) -> None:
        peer = conn.remote_peer
        num = len(self._node.connections_to(peer))
        self._firewall.connection_established(
            peer, conn.id, inbound=conn.direction is Direction.INBOUND
        )
        self._emit(ConnectionEstablished(peer, _endpoint(conn), num))
        if self._node.identify is not None:
            self._node.spawn(self._learn_addresses(conn), name="learn addresses")

    def _on_connection_closed(self, conn: Connection) -> None:
        # (A connection vetoed right after its handshake — limit, ban — is never
        # reported opened nor closed: the node reports it as incoming_failed.)
        peer = conn.remote_peer
        num = len(self._node.connections_to(peer))
        self._firewall.connection_closed(peer, conn.id)
        error = conn.error
        cause = error if error is not None and not _graceful(error) else None
        self._emit(ConnectionClosed(peer, _endpoint(conn), num, cause))

    def _on_incoming_failed(self, conn: Connection) -> None:
        assert conn.error is not None
        self._emit(IncomingConnectionError(conn.local_addr, conn.remote_addr, conn.error))

    async def _learn_addresses(self, conn: Connection) -> None:
        """Record the peer's *listen* addresses from identify (not ephemeral ports)."""
        identify = self._node.identify
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
        for conn in self._node.connections_to(peer):
            await conn.close()

    def unban_peer(self, peer: PeerId) -> None:
        self._banned.discard(peer)

    # -- address book --------------------------------------------------------------------

    def get_addrs(self, peer: PeerId) -> list[Multiaddr]:
        """Dial candidates for ``peer`` in the seed's order (docs/compat.md, "The
        address-book ordering"): the address book (known addresses, then relayed ones via
        the dialing relays), then the other addresses the node learned (the peer store:
        mDNS on the LAN, identify, dials not made through the address book)."""
        addrs = self._addresses.get_addrs(peer)
        addrs.extend(a for a in self._node.peer_store.addrs(peer) if a not in addrs)
        return addrs

    def add_address(self, peer: PeerId, addr: Multiaddr | str) -> None:
        self._addresses.add_addrs(peer, Multiaddr(addr) if isinstance(addr, str) else addr)
        self._address_book_changed()

    def remove_address(self, peer: PeerId, addr: Multiaddr | str) -> None:
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

    def set_firewall_default(self, rule: Rule[Any] | None) -> None:
        self._firewall.set_default(rule)

    def remove_firewall_default(self) -> None:
        self._firewall.remove_default()

    def get_firewall_config(self) -> FirewallRules[Any]:
        return self._firewall.rules()

    def get_peer_rule(self, peer: PeerId) -> Rule[Any] | None:
        """``peer``'s own rule (not the default), without copying the rule set."""
        return self._firewall.peer_rule(peer)

    def set_peer_rule(self, peer: PeerId, rule: Rule[Any]) -> None:
        self._firewall.set_peer_rule(peer, rule)

    def remove_peer_rule(self, peer: PeerId) -> None:
        self._firewall.remove_peer_rule(peer)

    # -- requests ------------------------------------------------------------------------

    def send_request(
        self,
        target: PeerId | Multiaddr | str,
        request: Rq,
        *,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, Rs]:
        """Send ``request`` to ``target`` and return its response.

        ``target`` is a :class:`PeerId`, its text, or a multiaddr (text or
        :class:`Multiaddr`) ending in ``/p2p/<id>``, whose address goes into the address
        book.  ``timeout`` (seconds) replaces ``request_timeout`` for this call: it
        bounds the exchange once connected, as ``request_timeout`` does.

        Raises :class:`InvalidArgumentError` for a target that is none of these, and a
        :class:`~aiop2p.errors.RequestError` whose ``kind`` is the seed's
        ``OutboundFailure``: dial failure, timeout, connection closed (also when the
        remote closed the stream unanswered: ``ResponseOmittedError``), unsupported
        protocols, shutdown.

        A plain method returning the default protocol's coroutine (``await`` it): one
        coroutine frame less per request than an ``async def`` that awaits it.
        """
        return self._default.send_request(target, request, timeout=timeout)

    async def ping(self, target: PeerId | Multiaddr | str, count: int = 1) -> list[float]:
        """Ping ``target`` (as in :meth:`send_request`) with ``/ipfs/ping/1.0.0``; return
        each round-trip time in seconds."""
        self._check_open()
        return await self._node.ping(await self._connection(self._target(target)), count)

    def _target(self, target: PeerId | Multiaddr | str) -> PeerId:
        """The peer ``target`` names; a multiaddr's address is added to the address book."""
        if isinstance(target, PeerId):
            return target
        if isinstance(target, str) and not target.startswith("/"):
            try:
                return PeerId.from_string(target)
            except P2PError as exc:
                raise InvalidArgumentError(
                    f"target {target!r} is neither a peer id nor a multiaddr "
                    f"ending in /p2p/<id>: {exc}"
                ) from exc
        if isinstance(target, str):
            try:
                target = Multiaddr(target)
            except P2PError as exc:
                raise InvalidArgumentError(f"target {target!r}: {exc}") from exc
        if not isinstance(target, Multiaddr):
            raise InvalidArgumentError(
                f"target must be a PeerId, its text or a Multiaddr, not {type(target).__name__}"
            )
        peer = target.peer_id
        if peer is None or not target.ends_with_peer_id:
            raise InvalidArgumentError(f"target {target} does not end in /p2p/<peer id>")
        addr = target.without_peer_id()
        if addr.components() and addr not in self._addresses.get_addrs(peer):
            self.add_address(peer, addr)
        return peer


def _endpoint(conn: Connection) -> ConnectedPoint:
    return ConnectedPoint(
        dialer=conn.direction is Direction.OUTBOUND,
        remote_addr=conn.remote_addr,
        local_addr=conn.local_addr,
    )


def _graceful(error: P2PError) -> bool:
    return type(error) is ConnectionClosedError
