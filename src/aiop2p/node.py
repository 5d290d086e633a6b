"""``Node``: the libp2p host — transports, connections, streams and protocol handlers.

A node owns its identity, listens and dials through its transports, upgrades every
connection (always Noise, never plaintext), routes inbound streams to the handler of
the negotiated protocol, and runs the built-in services (identify, ping, perf).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Coroutine, Iterable, Iterator
from functools import lru_cache, partial
from typing import Any, Self

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ._aio.connection import Connection, ConnectionHooks, Direction
from ._aio.emitter import Emitter
from ._aio.stream import Stream, StreamOwner
from .config import NodeConfig
from .errors import (
    BannedPeerError,
    ConnectionClosedError,
    ConnectionLimitError,
    DialError,
    InvalidArgumentError,
    InvalidStateError,
    NoAddressesError,
    P2PError,
    PeerIdMismatchError,
    ShutdownError,
)
from .identity import KeyPair, PeerId
from .multiaddr import Multiaddr
from .protocols.noise import NoiseCredentials, VerifiedIdentities
from .protocols.perf import PERF_PROTOCOL_ID
from .protocols.ping import PING_PROTOCOL_ID
from .protocols.role import Role
from .protocols.yamux import YAMUX_PROTOCOL_ID
from .services.autonat import AutonatService, ReachabilityChanged
from .services.host import InlineStreamHandler, StreamHandler
from .services.identify import IdentifyService
from .services.kad import KadService
from .services.peerstore import PeerInfo, PeerStore
from .services.perf import PerfProgress, PerfResult, perf, serve_perf
from .services.ping import ping, serve_ping
from .transports._base import Listener, Transport
from .transports.dns import resolve as resolve_dns
from .transports.pending import FairPending, pending_source
from .transports.tcp import TcpTransport
from .transports.websocket import WebSocketTransport

# The types of Node's public signatures are exported with it.
__all__ = [
    "Connection",
    "Direction",
    "Node",
    "PeerInfo",
    "PerfResult",
    "Role",
    "Stream",
    "StreamOwner",
    "Transport",
]

log = logging.getLogger(__name__)


class Node:
    """A libp2p host.  Use as ``async with Node() as node: ...``.

    Implements :class:`~aiop2p.services.host.Host` for its services; what its
    connections call back into lives in a private :class:`_Hooks` object.
    """

    def __init__(
        self,
        key: KeyPair | None = None,
        *,
        config: NodeConfig | None = None,
        transports: Iterable[Transport] | None = None,
    ) -> None:
        self.key = key or KeyPair.generate()
        self.peer_id: PeerId = self.key.peer_id
        self.config = config or NodeConfig()
        # One Noise static key per node, signed once (noise spec: "a single static keypair
        # may be generated when noise-libp2p is initialized and used for all sessions").
        self._noise_credentials = NoiseCredentials.create(
            self.key,
            X25519PrivateKey.generate(),
            stream_muxers=(YAMUX_PROTOCOL_ID,) if self.config.early_muxer_negotiation else (),
        )
        self._verified_identities = VerifiedIdentities()
        self.transports: list[Transport] = list(transports) if transports else _default_transports()
        self.peer_store = PeerStore()
        self._handlers: dict[str, StreamHandler | InlineStreamHandler] = {}
        self._inline: set[str] = set()  # protocols whose handler is an InlineStreamHandler
        self._offers: dict[str, Callable[[PeerId], bool]] = {}
        self._listeners: list[Listener] = []
        self._connections: dict[PeerId, list[Connection]] = {}
        self._pending: set[Connection] = set()
        self._pending_in = FairPending[Connection](
            self.config.limits.max_pending_incoming, self.config.limits.max_pending_incoming_per_ip
        )
        self._dials: dict[PeerId, asyncio.Future[Connection]] = {}
        self.dial_candidates: Callable[[PeerId], list[Multiaddr]] = self.peer_store.addrs
        """Where :meth:`connect` finds a peer's addresses, in the order to try them (the
        peer store; a Network points it at its address book)."""
        self.dial_succeeded: Callable[[PeerId, Multiaddr, list[Multiaddr]], None] | None = None
        """Told, when :meth:`connect` reached a peer, the address that worked and the ones
        that failed before it (a Network reorders its address book by it)."""
        # The node's tasks (cancelled at close), each under a key it is removed by: a
        # spawned task under itself, a stream handler's task under its stream, so that
        # the handler's end finds it without asking for the current task.
        self._tasks: dict[object, asyncio.Task[None]] = {}
        self.connection_opened: Emitter[Connection] = Emitter("connection_opened")
        """A connection was established (and passed ``connection_gate``)."""
        self.connection_closed: Emitter[Connection] = Emitter("connection_closed")
        """An established connection closed (``conn.error`` says why, None if by us)."""
        self.incoming_failed: Emitter[Connection] = Emitter("incoming_failed")
        """An inbound connection failed before being established (``conn.error`` is set)."""
        self.local_changed: Emitter[None] = Emitter("local_changed")
        """Our protocols or listen addresses changed, as seen by some peers (identify
        pushes the news to connected peers)."""
        self._started = False
        self._closing = False
        self._established = 0
        self._established_in = 0
        self._pending_outgoing = 0
        self._inbound_roles: dict[Multiaddr, Role] = {}
        self.connection_gate: Callable[[Connection], P2PError | None] | None = None
        """Vetoes a newly established connection by returning the error to close it with."""
        self.identify: IdentifyService | None = None
        self.kad: KadService | None = None
        """The Kademlia DHT, when ``config.kad`` is set (started with the node)."""
        self.autonat: AutonatService | None = None
        """AutoNAT v2, when ``config.autonat`` is set (started with the node)."""
        self._hooks = _Hooks(self)

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        config = self.config
        if config.enable_identify:
            self.identify = IdentifyService(self)
        if config.enable_ping:
            self.set_stream_handler(
                PING_PROTOCOL_ID, partial(serve_ping, idle_timeout=config.protocol_idle_timeout)
            )
        if config.enable_perf:
            self.set_stream_handler(
                PERF_PROTOCOL_ID, partial(serve_perf, idle_timeout=config.protocol_idle_timeout)
            )
        if config.kad is not None:
            self.kad = KadService(self, config.kad)
            self.kad.start()
        if config.autonat is not None:
            self.autonat = AutonatService(self, config.autonat)
            if self.kad is not None and config.kad is not None and config.kad.mode == "auto":
                self.autonat.events.subscribe(self._follow_reachability)
            self.autonat.start()

    def _follow_reachability(self, event: ReachabilityChanged) -> None:
        """``KadConfig.mode == "auto"``: a DHT server while AutoNAT confirms an address."""
        if self.kad is not None and self.autonat is not None:
            self.kad.set_mode("server" if self.autonat.reachable else "client")

    async def close(self) -> None:
        """Stop listening, close every connection, cancel every handler task."""
        if self._closing:
            return
        self._closing = True
        for listener in self._listeners:
            await listener.close()
        self._listeners.clear()
        conns = [c for cs in self._connections.values() for c in cs] + list(self._pending)
        for conn in conns:
            conn.abort(ConnectionClosedError("node is shutting down"))
        for fut in self._dials.values():
            if not fut.done():
                fut.set_exception(ShutdownError("The network event-loop was shut down."))
                fut.exception()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if conns:
            await asyncio.wait([asyncio.ensure_future(c.wait_closed()) for c in conns], timeout=1)

    def _check_open(self) -> None:
        if self._closing:
            raise InvalidStateError("node is closed")
        if not self._started:
            raise InvalidStateError("node is not started: use `async with Node()` or start()")

    # -- tasks ---------------------------------------------------------------------------

    def spawn(
        self, coro: Coroutine[Any, Any, None], *, name: str | None = None
    ) -> asyncio.Task[None]:
        """Run ``coro`` as a task owned by the node (cancelled at close, errors logged)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks[task] = task
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            if isinstance(exc, P2PError):
                log.debug("task %s ended: %s", task.get_name(), exc)
            else:
                log.error("task %s failed", task.get_name(), exc_info=exc)

    # -- handlers ------------------------------------------------------------------------

    def set_stream_handler(
        self,
        protocol: str,
        handler: StreamHandler,
        *,
        offer: Callable[[PeerId], bool] | None = None,
    ) -> None:
        """Serve ``protocol``: each inbound stream that negotiates it runs ``handler``.

        ``offer`` decides per peer whether the protocol is offered at all (a peer for
        which it returns False is answered ``na``, as if we did not support it).
        """
        self._register(protocol, handler, offer, inline=False)

    def set_inline_stream_handler(
        self,
        protocol: str,
        handler: InlineStreamHandler,
        *,
        offer: Callable[[PeerId], bool] | None = None,
    ) -> None:
        """Like :meth:`set_stream_handler`, but ``handler`` is a plain function called
        the moment multistream picks ``protocol``, inside the connection's input
        dispatch, with no task per stream.  It must not block: it reads through
        :meth:`Stream.set_sink` and starts a task only when it has to wait.  What it
        writes before returning leaves in the flush that answers the input.  It owns the
        stream (closing, resetting, lingering); an exception it raises resets the stream.
        """
        self._register(protocol, handler, offer, inline=True)

    def _register(
        self,
        protocol: str,
        handler: StreamHandler | InlineStreamHandler,
        offer: Callable[[PeerId], bool] | None,
        *,
        inline: bool,
    ) -> None:
        if not protocol.startswith("/"):
            raise InvalidArgumentError(f"protocol ids start with '/': {protocol!r}")
        self._handlers[protocol] = handler
        if inline:
            self._inline.add(protocol)
        else:
            self._inline.discard(protocol)
        if offer is None:
            self._offers.pop(protocol, None)
        else:
            self._offers[protocol] = offer
        self.local_changed.emit(None)

    def remove_stream_handler(self, protocol: str) -> None:
        self._offers.pop(protocol, None)
        self._inline.discard(protocol)
        if self._handlers.pop(protocol, None) is not None:
            self.local_changed.emit(None)

    @property
    def protocols(self) -> list[str]:
        return list(self._handlers)

    def supported_protocols(self, conn: Connection) -> Collection[str]:
        """The protocols offered to ``conn``'s peer (see ``offer`` of set_stream_handler):
        a live view, so ``protocol in`` it asks only that protocol's ``offer``."""
        return OfferedProtocols(self._handlers, self._offers, conn.remote_peer)

    # -- listening -----------------------------------------------------------------------

    def _transport_for(self, addr: Multiaddr, *, listen: bool) -> Transport | None:
        for transport in self.transports:
            if transport.can_listen(addr) if listen else transport.can_dial(addr):
                return transport
        return None

    def _make_factory(
        self,
        direction: Direction,
        expected_peer: PeerId | None = None,
        role: Role | None = None,
    ) -> Callable[[Multiaddr, Multiaddr], Connection]:
        def factory(
            local: Multiaddr, remote: Multiaddr, connection_class: type[Connection] = Connection
        ) -> Connection:
            """``connection_class``: a transport with its own security and streams (QUIC)
            asks for its ``Connection`` subclass."""
            conn_role = role
            if direction is Direction.INBOUND and self._inbound_roles:
                conn_role = self._inbound_roles.get(remote)
            conn = connection_class(
                self._hooks,
                credentials=self._noise_credentials,
                verified=self._verified_identities,
                direction=direction,
                config=self.config,
                expected_peer=expected_peer,
                remote_addr=remote,
                role=conn_role,
            )
            conn.local_addr = local
            if direction is Direction.INBOUND:
                error = self._pending_inbound_error(conn)
                if error is not None:
                    conn.refuse(error)  # before spending any CPU on a handshake
            self._pending.add(conn)
            return conn

        return factory

    def inbound_factory(self) -> Callable[[Multiaddr, Multiaddr], Connection]:
        """The factory for inbound connections arriving over a non-listener path (e.g. a
        relayed circuit): limits, gates and handlers apply as for a listener's."""
        return self._make_factory(Direction.INBOUND)

    @property
    def is_closing(self) -> bool:
        return self._closing

    def _pending_inbound_error(self, conn: Connection) -> P2PError | None:
        """Admit ``conn`` among the pending handshakes, or say why it is refused.

        Bounded per source and globally (:class:`FairPending`); when full, the oldest
        handshake of the busiest source may be evicted to make room.
        """
        if self._closing:
            return ConnectionClosedError("node is shutting down")
        pending_in = len(self._pending_in)
        error, evicted = self._pending_in.admit(conn, pending_source(conn.remote_addr))
        if evicted is not None:
            evicted.abort(
                ConnectionLimitError(
                    pending_in,
                    pending_in,
                    "pending handshakes: evicted to make room for a less busy source",
                )
            )
        return error

    async def listen(self, addr: Multiaddr | str) -> list[Multiaddr]:
        """Listen on ``addr`` (port 0 picks a free port); return the bound addresses."""
        self._check_open()
        addr = Multiaddr(addr) if isinstance(addr, str) else addr
        transport = self._transport_for(addr, listen=True)
        if transport is None:
            raise InvalidArgumentError(f"no transport can listen on {addr}")
        listener = await transport.listen(addr, self._make_factory(Direction.INBOUND))
        self._listeners.append(listener)
        self.local_changed.emit(None)
        return listener.addrs

    @property
    def listen_addrs(self) -> list[Multiaddr]:
        return [a for listener in self._listeners for a in listener.addrs]

    async def stop_listening(self) -> None:
        """Close every listener (as :meth:`Network.stop_listening
        <aiop2p.network.Network.stop_listening>` does)."""
        for listener in list(self._listeners):
            await self.stop_listening_addr(listener.addrs[0])

    async def stop_listening_addr(self, addr: Multiaddr | str) -> bool:
        """Close the listener that has ``addr`` among its addresses; True if there was one."""
        addr = Multiaddr(addr) if isinstance(addr, str) else addr
        for listener in list(self._listeners):
            if addr in listener.addrs or addr in listener.bound_addrs:
                self._listeners.remove(listener)
                await listener.close()
                self.local_changed.emit(None)
                return True
        return False

    # -- connections ---------------------------------------------------------------------

    def connections_to(self, peer: PeerId) -> list[Connection]:
        """Established connections to ``peer``, direct ones before relayed ones."""
        conns = [c for c in self._connections.get(peer, ()) if c.is_established]
        if len(conns) > 1:
            conns.sort(key=lambda c: c.is_relayed)
        return conns

    def expect_inbound_role(self, remote: Multiaddr, role: Role | None) -> None:
        """Run inbound connections from ``remote`` (``/ip4/<ip>/tcp/<port>``) with ``role``
        (None forgets it).  Hole punching: a peer's dial may land on our listener instead
        of meeting ours in a simultaneous open, and the roles agreed for it must hold."""
        if role is None:
            self._inbound_roles.pop(remote, None)
        else:
            self._inbound_roles[remote] = role

    @property
    def connections(self) -> list[Connection]:
        return [c for cs in self._connections.values() for c in cs]

    @property
    def connected_peers(self) -> list[PeerId]:
        return list(self._connections)

    def is_connected(self, peer: PeerId) -> bool:
        return bool(self.connections_to(peer))

    async def dial(
        self, addr: Multiaddr | str, *, force: bool = False, role: Role | None = None
    ) -> Connection:
        """Connect to ``addr``; reuse an existing connection to its ``/p2p`` peer.

        With ``force`` a new connection is opened even if one exists.  ``role`` overrides
        who runs the upgrade as initiator on a new connection (see ``Connection.role``).
        """
        self._check_open()
        addr = Multiaddr(addr) if isinstance(addr, str) else addr
        peer = addr.peer_id
        if peer is not None and not force:
            return await self._connect(peer, [addr], role, bare=True)
        return await self._dial_addr(addr, peer, role)

    async def connect(self, peer: PeerId, addrs: Iterable[Multiaddr] | None = None) -> Connection:
        """Connect to ``peer``: its established connection if there is one, else a dial
        of ``addrs`` (default: :attr:`dial_candidates`, without our own listen
        addresses) in their order, staggered, until one connects.  With no address known
        and the DHT on (``config.kad``), the addresses come from a DHT lookup.

        This is the node's one dialer: one dial per peer at a time (a caller arriving
        while one runs joins it), run as a node task so that a caller giving up does not
        cancel it for the others.
        """
        self._check_open()
        conn = self.connection_now(peer)
        if conn is not None:
            return conn
        return await self._connect(peer, None if addrs is None else list(addrs))

    def connection_now(self, peer: PeerId) -> Connection | None:
        """What :meth:`connect` returns without waiting: the established direct connection
        to ``peer`` (what :meth:`connections_to` puts first); ``None`` when there is none
        and :meth:`connect` would dial (or take a relayed one)."""
        conns = self._connections.get(peer)
        if conns:
            first = conns[0]
            if first.relay is None and first.is_established:
                return first
        return None

    async def _connect(
        self,
        peer: PeerId,
        addrs: list[Multiaddr] | None,
        role: Role | None = None,
        *,
        bare: bool = False,
    ) -> Connection:
        if peer == self.peer_id:
            raise DialError("Tried to dial local peer id.")
        existing = self.connections_to(peer)
        if existing:
            return existing[0]
        pending = self._dials.get(peer)
        if pending is None:
            if addrs is None:
                own = set(self.listen_addrs)
                addrs = []
                for addr in self.dial_candidates(peer):
                    if addr not in addrs and addr.without_peer_id() not in own:
                        addrs.append(addr)
            if not addrs and self.kad is None:
                raise NoAddressesError("No addresses known for peer.")
            pending = asyncio.get_running_loop().create_future()
            self._dials[peer] = pending
            dialing = self._dial_peer(peer, addrs, role, pending, bare=bare)
            self.spawn(dialing, name=f"dial {peer}")
        return await asyncio.shield(pending)

    async def _dial_peer(
        self,
        peer: PeerId,
        addrs: list[Multiaddr],
        role: Role | None,
        result: asyncio.Future[Connection],
        *,
        bare: bool,
    ) -> None:
        def first_reachable(
            addrs: list[Multiaddr],
        ) -> Coroutine[Any, Any, tuple[Connection, Multiaddr, list[Multiaddr]]]:
            return self._first_reachable(
                str(peer),
                addrs,
                # dial() names its address as given (a circuit address without a
                # target names its relay, and the relay transport says so).
                lambda a: self._dial_addr(a if bare else a.with_peer_id(peer), peer, role),
                bare=bare,
            )

        try:
            if not addrs and self.kad is not None:
                # Reach by id: no address known, ask the DHT (PeerNotFoundError, a
                # NoAddressesError, if it does not know the peer either).
                conn, addr, failed = await self.kad.reach(peer, first_reachable)
            else:
                conn, addr, failed = await first_reachable(addrs)
        except BaseException as exc:
            if not result.done():
                result.set_exception(
                    exc if isinstance(exc, P2PError) else ShutdownError(str(exc) or "cancelled")
                )
                result.exception()
            if not isinstance(exc, P2PError | asyncio.CancelledError):
                raise
        else:
            if self.dial_succeeded is not None:
                self.dial_succeeded(peer, addr, failed)
            if not result.done():
                result.set_result(conn)
        finally:
            if self._dials.get(peer) is result:
                del self._dials[peer]

    async def _first_reachable(
        self,
        what: str,
        addrs: list[Multiaddr],
        dial: Callable[[Multiaddr], Coroutine[Any, Any, Connection]],
        *,
        bare: bool = False,
    ) -> tuple[Connection, Multiaddr, list[Multiaddr]]:
        """Dial ``addrs``, staggered: the first connection, its address and the addresses
        that failed; or a :class:`DialError` with each address's cause (with ``bare``,
        the one address's own error).  A banned peer is banned at every address: that
        error ends the dial.

        The next address starts when the last one started fails or has not connected
        within ``config.dial_stagger_seconds`` (at most ``max_parallel_dials_per_peer``
        at once, and no extra one while ``limits.max_pending_outgoing`` is full), so an
        address that never answers does not hold the others back for ``dial_timeout``.
        The first connection wins, in address order among those ready together; the
        dials still running are cancelled and any other connection is closed."""
        if bare or len(addrs) < 2:
            return await self._dial_in_turn(what, addrs, dial, bare=bare)
        config = self.config
        limit = config.limits.max_pending_outgoing
        bound = config.max_parallel_dials_per_peer
        causes: dict[str, BaseException] = {}
        failed: set[int] = set()
        running: dict[asyncio.Task[Connection], int] = {}
        won: list[tuple[int, Connection]] = []
        next_index = 0
        starts = 1  # addresses to start now: one at first, after a stagger or a failure
        try:
            while True:
                # Tasks started now count against the limit once they run: count them here.
                for started in range(starts):
                    if next_index == len(addrs) or len(running) == bound:
                        break
                    if running and limit is not None and self._pending_outgoing + started >= limit:
                        break
                    running[asyncio.ensure_future(dial(addrs[next_index]))] = next_index
                    next_index += 1
                if not running:
                    break
                more = next_index < len(addrs) and len(running) < bound
                done, _ = await asyncio.wait(
                    running,
                    timeout=config.dial_stagger_seconds if more else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                starts = 0 if done else 1
                for task in sorted(done, key=running.__getitem__):
                    index = running.pop(task)
                    exc = task.exception()
                    if exc is None:
                        won.append((index, task.result()))
                    elif isinstance(exc, P2PError) and not isinstance(exc, BannedPeerError):
                        causes[str(addrs[index])] = exc
                        failed.add(index)
                        starts += 1
                    else:
                        raise exc
                if won:
                    index, conn = won.pop(0)
                    return conn, addrs[index], [addrs[i] for i in sorted(failed)]
        finally:
            await self._drop_dials(running, won)
        raise DialError(f"could not connect to {what}", causes)

    @staticmethod
    async def _drop_dials(
        running: dict[asyncio.Task[Connection], int], won: list[tuple[int, Connection]]
    ) -> None:
        """Cancel the dials that lost and close the connections they made anyway."""
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)
        late = [conn for _, conn in won]
        for task in running:
            if not task.cancelled() and task.exception() is None:
                late.append(task.result())
        for conn in late:
            await conn.close()

    @staticmethod
    async def _dial_in_turn(
        what: str,
        addrs: list[Multiaddr],
        dial: Callable[[Multiaddr], Coroutine[Any, Any, Connection]],
        *,
        bare: bool,
    ) -> tuple[Connection, Multiaddr, list[Multiaddr]]:
        """:meth:`_first_reachable` one address after the other (a bare dial, a single
        address)."""
        causes: dict[str, BaseException] = {}
        failed: list[Multiaddr] = []
        for addr in addrs:
            try:
                return await dial(addr), addr, failed
            except BannedPeerError:
                raise
            except P2PError as exc:
                if bare:
                    raise
                causes[str(addr)] = exc
                failed.append(addr)
        raise DialError(f"could not connect to {what}", causes)

    async def _dial_addr(
        self, addr: Multiaddr, peer: PeerId | None, role: Role | None = None
    ) -> Connection:
        if addr.protocol_names()[0] == "dnsaddr":
            # TXT lookups give the real addresses; TCP and WS resolve /dns* themselves.
            resolved = await resolve_dns(addr)
            conn, _, _ = await self._first_reachable(
                str(addr), resolved, lambda a: self._dial_addr(a, peer, role)
            )
            return conn
        transport = self._transport_for(addr, listen=False)
        if transport is None:
            raise DialError(f"no transport can dial {addr}")
        limit = self.config.limits.max_pending_outgoing
        if limit is not None and self._pending_outgoing >= limit:
            raise ConnectionLimitError(limit, self._pending_outgoing, "pending outgoing")
        factory = self._make_factory(Direction.OUTBOUND, peer, role)
        self._pending_outgoing += 1
        try:
            return await self._upgrade_dial(transport, addr, factory)
        finally:
            self._pending_outgoing -= 1

    async def _upgrade_dial(
        self,
        transport: Transport,
        addr: Multiaddr,
        factory: Callable[[Multiaddr, Multiaddr], Connection],
    ) -> Connection:
        try:
            async with asyncio.timeout(self.config.dial_timeout):
                protocol = await transport.dial(addr, factory)
                assert isinstance(protocol, Connection)
                conn = protocol
                conn.remote_addr = addr
                try:
                    return await conn.wait_ready()
                except asyncio.CancelledError:
                    conn.abort()
                    raise
        except TimeoutError as exc:
            raise DialError(f"dial to {addr} timed out after {self.config.dial_timeout} s") from exc
        except (PeerIdMismatchError, DialError):
            raise
        except P2PError as exc:
            raise DialError(f"dial to {addr} failed: {exc}") from exc
        except OSError as exc:
            raise DialError(f"dial to {addr} failed: {exc.strerror or exc}") from exc

    async def new_stream(
        self,
        target: PeerId | Multiaddr | str | Connection,
        protocols: str | list[str] | tuple[str, ...],
    ) -> Stream:
        """Open a stream to ``target`` negotiating one of ``protocols``."""
        conn = await self._connection_for(target)
        return await conn.new_stream(protocols)

    async def _connection_for(self, target: PeerId | Multiaddr | str | Connection) -> Connection:
        if isinstance(target, Connection):
            return target
        if isinstance(target, PeerId):
            return await self.connect(target)
        return await self.dial(target)

    async def ping(
        self, target: PeerId | Multiaddr | str | Connection, count: int = 1
    ) -> list[float]:
        """Ping with ``/ipfs/ping/1.0.0``; return each round-trip time in seconds."""
        return await ping(self, await self._connection_for(target), count)

    async def perf(
        self,
        target: PeerId | Multiaddr | str | Connection,
        *,
        upload: int,
        download: int,
        progress: PerfProgress | None = None,
    ) -> PerfResult:
        """Measure throughput with ``/perf/1.0.0``; ``progress`` is told the bytes uploaded
        and downloaded so far after each chunk."""
        return await perf(self, await self._connection_for(target), upload, download, progress)

    async def identify_peer(self, target: PeerId | Multiaddr | str | Connection) -> PeerInfo:
        """What the peer told us via identify (waits for the exchange to finish)."""
        if self.identify is None:
            raise InvalidStateError("identify is disabled in this node's config")
        return await self.identify.identify(await self._connection_for(target))


def _default_transports() -> list[Transport]:
    """TCP and WebSocket, and QUIC and WebTransport when aioquic (the ``quic`` extra) is
    installed."""
    transports: list[Transport] = [TcpTransport(), WebSocketTransport()]
    try:
        from ._aio.quic_transport import QuicTransport
        from ._aio.webtransport_transport import WebTransportTransport
    except ImportError:
        return transports
    transports += [QuicTransport(), WebTransportTransport()]
    return transports


class _Hooks(ConnectionHooks):
    """What a node's connections call back into: admission against the limits, the
    table of established connections, and inbound streams to their handlers.

    Kept off :class:`Node` so that the user's object shows user methods only.
    """

    __slots__ = ("_node",)

    def __init__(self, node: Node) -> None:
        self._node = node

    def supported_protocols(self, conn: Connection) -> Collection[str]:
        return self._node.supported_protocols(conn)

    def inbound_stream(self, stream: Stream) -> None:
        node = self._node
        protocol = stream.protocol
        handler = node._handlers.get(protocol) if protocol is not None else None
        if handler is None:
            stream.reset()
            return
        if protocol in node._inline:
            try:
                handler(stream)
            except Exception:
                log.exception("inline handler for %s failed", protocol)
                stream.reset()
            return
        # Not node.spawn: a handler task reports its own end (_run_handler), so it needs no
        # done callback, which would cost a loop turn (an epoll_wait) per request, and the
        # connection's loop saves asking for the running one (a getpid syscall).
        conn = stream.connection
        loop = conn.loop
        task = loop.create_task(
            self._run_handler(handler, stream, conn),  # type: ignore[arg-type]
            name=_handler_task_name(protocol),
        )
        node._tasks[stream] = task

    async def _run_handler(self, handler: StreamHandler, stream: Stream, conn: StreamOwner) -> None:
        try:
            await handler(stream)
            # Stream.close without its frame (the stream is negotiated); False: still open.
            if not stream.close_write():
                # The handler is done but the remote has not closed its side: reset the
                # stream if it lingers, so a peer that never closes cannot pin it forever.
                conn.linger(stream, self._node.config.stream_linger_timeout)
        except P2PError as exc:
            log.debug("handler for %s ended with %s", stream.protocol, exc)
            stream.reset()
        except Exception:
            log.exception("handler for %s failed", stream.protocol)
            stream.reset()
        except BaseException:
            stream.reset()
            raise
        finally:
            self._node._tasks.pop(stream, None)

    def _limit_error(self, conn: Connection) -> P2PError | None:
        """The first connection limit this established connection would exceed."""
        node = self._node
        if node._closing:
            return ConnectionClosedError("node is shutting down")
        established = node._established
        limits = node.config.limits
        inbound = conn.direction is Direction.INBOUND
        checks = (
            (limits.max_established_total, established, "established"),
            (
                limits.max_established_incoming if inbound else limits.max_established_outgoing,
                node._established_in if inbound else established - node._established_in,
                "established incoming" if inbound else "established outgoing",
            ),
            (
                limits.max_established_per_peer,
                len(node._connections.get(conn.remote_peer, ())),
                "established per peer",
            ),
        )
        for limit, current, what in checks:
            if limit is not None and current >= limit:
                return ConnectionLimitError(limit, current, what)
        if node.connection_gate is not None:
            return node.connection_gate(conn)
        return None

    def connection_ready(self, conn: Connection) -> None:
        node = self._node
        node._pending.discard(conn)
        node._pending_in.discard(conn)
        error = self._limit_error(conn)
        if error is not None:
            conn.abort(error)
            return
        peer = conn.remote_peer
        node._established += 1
        if conn.direction is Direction.INBOUND:
            node._established_in += 1
        node._connections.setdefault(peer, []).append(conn)
        if conn.direction is Direction.OUTBOUND and conn.remote_addr is not None:
            node.peer_store.add_addrs(peer, [conn.remote_addr.without_peer_id()])
        node.connection_opened.emit(conn)

    def connection_closed(self, conn: Connection, *, was_established: bool) -> None:
        node = self._node
        node._pending.discard(conn)
        node._pending_in.discard(conn)
        if was_established and conn not in node._connections.get(conn.remote_peer, ()):
            was_established = False  # vetoed in connection_ready: never counted
        if not was_established:
            if conn.direction is Direction.INBOUND and conn.error is not None:
                node.incoming_failed.emit(conn)
            return
        node._established -= 1
        if conn.direction is Direction.INBOUND:
            node._established_in -= 1
        conns = node._connections.get(conn.remote_peer)
        if conns is not None:
            if conn in conns:
                conns.remove(conn)
            if not conns:
                del node._connections[conn.remote_peer]
        node.connection_closed.emit(conn)


class OfferedProtocols(Collection[str]):
    """The protocols a node offers one peer, decided when asked.

    Multistream's fast path only asks whether the proposed protocol is offered: one
    ``offer`` call (e.g. the firewall's) per inbound stream instead of one per handler.
    Iterating (``ls``, identify) lists what is offered at that moment.
    """

    __slots__ = ("_handlers", "_offers", "_peer")

    def __init__(
        self,
        handlers: dict[str, StreamHandler | InlineStreamHandler],
        offers: dict[str, Callable[[PeerId], bool]],
        peer: PeerId,
    ) -> None:
        self._handlers = handlers
        self._offers = offers
        self._peer = peer

    def __contains__(self, protocol: object) -> bool:
        if protocol not in self._handlers:
            return False
        offer = self._offers.get(protocol)
        return offer is None or offer(self._peer)

    def __iter__(self) -> Iterator[str]:
        return iter([p for p in self._handlers if p in self])

    def __len__(self) -> int:
        return sum(1 for _ in self)


@lru_cache(maxsize=256)
def _handler_task_name(protocol: str) -> str:
    return f"handler {protocol}"
