"""Kademlia DHT service (``/ipfs/kad/1.0.0``): peer routing on a :class:`Host`.

Drives the machines of :mod:`aiop2p.protocols.kad`.  One request per outbound stream,
each message an unsigned-varint length-prefixed protobuf.  The routing table holds DHT
servers only: peers whose identify lists our protocol id, and peers that answered one
of our queries; a query that fails removes its peer.  A full bucket's
:class:`~aiop2p.protocols.kad.PingOldest` is answered with a libp2p ping.

In server mode the protocol is served (and so announced by identify); in client mode it
is neither, as the spec asks of peers that are not publicly reachable.  Everything is
bounded: inbound streams, requests per stream, outbound queries in flight, each lookup's
queries and time, each message (``KadConfig.limits``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .._aio.connection import Connection
from .._aio.stream import Stream
from ..config import KadConfig
from ..errors import (
    DialError,
    KadError,
    NoAddressesError,
    P2PError,
    PeerNotFoundError,
    StreamClosedError,
)
from ..identity import PeerId
from ..multiaddr import Multiaddr
from ..protocols.kad import (
    ConnectionType,
    KadMessage,
    KadPeer,
    Lookup,
    MessageType,
    PingOldest,
    RoutingTable,
    kad_key,
)
from .host import Host
from .ping import ping

__all__ = ["KadService"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class KadService:
    """The DHT on ``host``: :meth:`find_peer`, :meth:`closest_peers`, :meth:`bootstrap`.

    :meth:`start` joins through ``config.bootstrap`` and refreshes the routing table
    every ``refresh_interval_seconds`` in a host task (cancelled at :meth:`close` or when
    the host closes); a table that emptied meanwhile joins through them again.
    """

    def __init__(self, host: Host, config: KadConfig | None = None) -> None:
        self.host = host
        self.config = config or KadConfig()
        self.table = RoutingTable(host.peer_id, k=self.config.k)
        self._queries = asyncio.Semaphore(self.config.max_queries_in_flight)
        self._inbound = 0
        self._task: asyncio.Task[None] | None = None
        self._joined = asyncio.Event()
        """Set once the first bootstrap after :meth:`start` ended (however it ended)."""
        self._closed = False
        self.mode = "client"
        """``server`` or ``client`` now (``auto`` starts as a client)."""
        self.set_mode("server" if self.config.mode == "server" else "client")
        host.connection_opened.subscribe(self._on_connection)

    def set_mode(self, mode: str) -> None:
        """Serve the DHT (``server``) or only ask (``client``); the host's identify
        pushes the changed protocol list to connected peers."""
        if mode == self.mode or self._closed:
            return
        if mode == "server":
            self.host.set_stream_handler(self.config.protocol_id, self._serve)
        else:
            self.host.remove_stream_handler(self.config.protocol_id)
        self.mode = mode
        log.info("kad: %s mode", mode)

    def start(self) -> None:
        """Bootstrap, then refresh periodically (a host task)."""
        if self._task is None and not self._closed:
            self._task = self.host.spawn(self._run(), name="kad refresh")

    async def close(self) -> None:
        self._closed = True
        self.host.connection_opened.unsubscribe(self._on_connection)
        if self.mode == "server":
            self.host.remove_stream_handler(self.config.protocol_id)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        try:
            await self.bootstrap()
        finally:
            self._joined.set()
        while True:
            await asyncio.sleep(self.config.refresh_interval_seconds)
            if len(self.table):
                await self.refresh()
            else:  # everyone left (or the bootstrap peers were down): join again
                await self.bootstrap()

    # -- operations ------------------------------------------------------------------------

    async def bootstrap(self) -> int:
        """Connect to the bootstrap peers, add those that serve the DHT, look up our own
        id; return the routing table's size."""
        results = await asyncio.gather(
            *(self._join(addr) for addr in self.config.bootstrap), return_exceptions=True
        )
        for addr, result in zip(self.config.bootstrap, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, P2PError | TimeoutError):
                    raise result
                log.debug("kad: bootstrap peer %s: %s", addr, result)
        await self.refresh(random_lookup=False)
        return len(self.table)

    async def refresh(self, *, random_lookup: bool = True) -> None:
        """Look up our own id (the peers closest to us) and, by default, a random id."""
        await self._lookup(self.host.peer_id.to_bytes())
        if random_lookup:
            random_id = PeerId(b"\x12\x20" + hashlib.sha256(os.urandom(32)).digest())
            await self._lookup(random_id.to_bytes())

    async def find_peer(self, peer: PeerId, *, exhaustive: bool = False) -> list[Multiaddr]:
        """The addresses of ``peer``: from the routing table, else an iterative lookup
        that ends at the first report of them, or with ``exhaustive`` runs to its end and
        merges every peer's report (the retry when the first report did not dial).

        :class:`PeerNotFoundError` if nobody knew the peer.  The peer itself is never
        asked (a dial to it may be what waits for this answer).  Nothing is stored: an
        address reaches the peer store only once a dial to it succeeded (the node keeps
        the addresses of its outbound connections), so bogus answers do not stick.
        """
        entry = self.table.get(peer)
        if entry is not None and entry.addrs and not exhaustive:
            return list(entry.addrs)
        await self._wait_joined()
        lookup = await self._lookup(
            peer.to_bytes(), stop_when_found=not exhaustive, query_target=False
        )
        if lookup.found is None:
            raise PeerNotFoundError(
                f"the DHT lookup for {peer} ended without it ({lookup.queries} queries"
                f"{', timed out' if lookup.timed_out else ''})"
            )
        return list(lookup.found.addrs)

    async def reach(
        self,
        peer: PeerId,
        dial: Callable[[list[Multiaddr]], Awaitable[_T]],
    ) -> _T:
        """``dial`` the addresses :meth:`find_peer` gives; if none answers (a DHT peer
        may have reported bogus ones first), once more with the others an exhaustive
        lookup finds.  The node's dialer runs this for a peer without known addresses."""
        addrs = await self.find_peer(peer)
        try:
            return await dial(addrs)
        except DialError as first:
            try:
                more = [a for a in await self.find_peer(peer, exhaustive=True) if a not in addrs]
            except PeerNotFoundError:
                more = []
            if not more:
                raise first from None
            return await dial(more)

    async def closest_peers(self, key: bytes) -> list[KadPeer]:
        """The (at most k) DHT servers closest to ``key`` that answered a full lookup."""
        await self._wait_joined()
        return (await self._lookup(key)).closest()

    async def _wait_joined(self) -> None:
        """A lookup right after start waits for the bootstrap (bounded: each bootstrap
        peer by ``query_timeout``, the lookup of our id by ``lookup_timeout``), or it
        would start from an empty table."""
        if self._task is not None and not self._task.done():
            await self._joined.wait()

    # -- the routing table -------------------------------------------------------------------

    def _on_connection(self, conn: Connection) -> None:
        if self.host.identify is not None and not self._closed:
            self.host.spawn(self._consider(conn), name="kad identify")

    async def _consider(self, conn: Connection) -> None:
        """Put ``conn``'s peer in the table if identify says it serves the DHT."""
        identify = self.host.identify
        if identify is None:
            return
        try:
            info = await identify.identify(conn)
        except (P2PError, TimeoutError):
            return
        if self.config.protocol_id in info.protocols:
            self._seen(conn.remote_peer, self.host.peer_store.addrs(conn.remote_peer))

    async def _join(self, addr: Multiaddr) -> None:
        async with asyncio.timeout(self.config.query_timeout):
            conn = await self.host.dial(addr)
            await self._consider(conn)

    def _seen(self, peer: PeerId, addrs: list[Multiaddr]) -> None:
        result = self.table.add(peer, addrs)
        if isinstance(result, PingOldest) and not self._closed:
            self.host.spawn(self._check_oldest(result.oldest), name="kad ping")

    async def _check_oldest(self, peer: PeerId) -> None:
        alive = False
        entry = self.table.get(peer)
        addrs = list(entry.addrs) if entry is not None else []
        try:
            async with self._queries, asyncio.timeout(self.config.query_timeout):
                await ping(self.host, await self._connect(peer, addrs))
            alive = True
        except (P2PError, TimeoutError) as exc:
            log.debug("kad: %s did not answer a ping: %s", peer, exc)
        self.table.ping_result(peer, alive)

    # -- lookups -----------------------------------------------------------------------------

    async def _lookup(
        self, target: bytes, *, stop_when_found: bool = False, query_target: bool = True
    ) -> Lookup:
        config = self.config
        loop = asyncio.get_running_loop()
        seeds = [(e.peer_id, e.addrs) for e in self.table.closest(kad_key(target))]
        lookup = Lookup(
            target,
            seeds,
            local=self.host.peer_id,
            deadline=loop.time() + config.lookup_timeout,
            k=config.k,
            alpha=config.alpha,
            max_queries=config.max_queries_per_lookup,
            stop_when_found=stop_when_found,
            query_target=query_target,
        )
        request = KadMessage(MessageType.FIND_NODE, target)
        pending: dict[asyncio.Task[KadMessage], PeerId] = {}
        try:
            while True:
                for peer in lookup.next_queries(loop.time()):
                    addrs = lookup.addrs_of(peer)
                    task = loop.create_task(self._request(peer, addrs, request))
                    pending[task] = peer
                if lookup.done or not pending:
                    return lookup
                done, _ = await asyncio.wait(
                    pending,
                    timeout=max(0.0, lookup.deadline - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for task in done:
                    peer = pending.pop(task)
                    exc = task.exception()
                    if exc is None:
                        answer = task.result()
                        lookup.on_response(peer, answer.closer_peers)
                        # Addresses others reported for it are not proof: keep those
                        # the node verified (the one dialled, identify's).
                        self._seen(peer, self.host.peer_store.addrs(peer))
                    else:
                        if not isinstance(exc, P2PError | TimeoutError):
                            raise exc
                        log.debug("kad: query to %s failed: %s", peer, exc)
                        lookup.on_failure(peer)
                        self.table.remove(peer)
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _request(self, peer: PeerId, addrs: list[Multiaddr], msg: KadMessage) -> KadMessage:
        """One request on a new stream; the answer, decoded under our limits."""
        config = self.config
        async with self._queries, asyncio.timeout(config.query_timeout):
            conn = await self._connect(peer, addrs)
            stream = await conn.new_stream(config.protocol_id)
            async with stream:
                await stream.write_message(msg.encode())
                data = await stream.read_message(config.limits.max_message_bytes)
        answer = KadMessage.decode(data, config.limits)
        if answer.type is not msg.type:
            raise KadError(f"kad: asked {msg.type.name}, answered {answer.type.name}")
        return answer

    async def _connect(self, peer: PeerId, addrs: list[Multiaddr]) -> Connection:
        """A connection to ``peer`` at addresses we know, never through a DHT lookup (the
        node's dialer would start one for a peer without addresses)."""
        existing = self.host.connections_to(peer)
        if existing:
            return existing[0]
        addrs = addrs or self.host.peer_store.addrs(peer)
        if not addrs:
            raise NoAddressesError(f"kad: no address known for {peer}")
        return await self.host.connect(peer, addrs)

    # -- serving -----------------------------------------------------------------------------

    async def _serve(self, stream: Stream) -> None:
        config = self.config
        if self._inbound >= config.max_inbound_streams:
            stream.reset()
            return
        self._inbound += 1
        try:
            for _ in range(config.max_requests_per_stream):
                try:
                    async with asyncio.timeout(config.stream_idle_timeout):
                        data = await stream.read_message(config.limits.max_message_bytes)
                except StreamClosedError:
                    return  # the peer is done with the stream
                except TimeoutError:
                    stream.reset()
                    return
                request = KadMessage.decode(data, config.limits)
                await stream.write_message(self._answer(request, stream.remote_peer).encode())
        finally:
            self._inbound -= 1

    def _answer(self, request: KadMessage, requester: PeerId) -> KadMessage:
        if request.type is MessageType.PING:
            return KadMessage(MessageType.PING)
        if request.type in (
            MessageType.FIND_NODE,
            MessageType.GET_VALUE,
            MessageType.GET_PROVIDERS,
        ):
            # No records or providers are stored: the answer is the closer peers alone.
            return KadMessage(
                request.type, request.key, closer_peers=self._closer_peers(request.key, requester)
            )
        raise KadError(f"kad: {request.type.name} is not served (peer routing only)")

    def _closer_peers(self, key: bytes, requester: PeerId) -> tuple[KadPeer, ...]:
        host = self.host
        k = self.config.k
        peers: list[KadPeer] = []
        try:
            wanted: PeerId | None = PeerId.from_bytes(key)
        except P2PError:
            wanted = None
        if wanted == host.peer_id:
            peers.append(KadPeer(host.peer_id, tuple(host.listen_addrs)))
        elif wanted is not None and wanted != requester and wanted not in self.table:
            # A peer we know but that is not a DHT server (a client behind its NAT, say):
            # the one who asks for it by id wants its addresses.
            addrs = host.peer_store.addrs(wanted)
            if addrs:
                cap = self.config.limits.max_addrs_per_peer
                peers.append(KadPeer(wanted, tuple(addrs[:cap]), self._conn(wanted)))
        for entry in self.table.closest(kad_key(key), k, exclude=requester):
            if len(peers) >= k:
                break
            known = entry.addrs or tuple(host.peer_store.addrs(entry.peer_id))
            peers.append(KadPeer(entry.peer_id, known, self._conn(entry.peer_id)))
        return tuple(peers)

    def _conn(self, peer: PeerId) -> ConnectionType:
        if self.host.connections_to(peer):
            return ConnectionType.CONNECTED
        return ConnectionType.NOT_CONNECTED
