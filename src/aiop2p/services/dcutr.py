"""Hole punching (DCUtR, libp2p ``relay/DCUtR.md``): upgrade a relayed connection to a
direct one.

When a relayed connection opens, its **inbound** side (the peer that was reached through
the relay) first tries the other peer's advertised addresses (a *unilateral* upgrade,
optional), then opens ``/libp2p/dcutr`` and runs :class:`DcutrInitiator`; the outbound
side answers with :class:`DcutrResponder`.  The two exchange the addresses their NATs
gave them (what peers observed over *direct* connections, via identify), the initiator
measures the relayed round trip, and both dial each other at about the same moment so
that each NAT sees an outgoing connection before the other's packets arrive (a TCP
simultaneous open).  The side that answered runs the upgrade as initiator (Noise
initiator, Yamux client), the other as responder, whichever side TCP says dialled.

For the NAT to map our dials to the port we listen on, the node's TCP transports dial
from their listen port (:attr:`TcpTransport.port_reuse`, turned on here): create this
service before the node listens.  QUIC dials leave from the listening UDP socket anyway.

Addresses are TCP and QUIC ones.  The addresses we offer come from what peers observed:
when an observed port equals the local port of that connection, the NAT kept our port,
so it keeps our listen ports too (our dials leave from them) and we offer the observed
IP with each of our TCP and QUIC listen ports instead (this also covers a connection
made before we listened, from an ephemeral port); otherwise the observed address as it
is.  QUIC addresses are tried first, TCP ones :attr:`DcutrConfig.quic_head_start_seconds`
later if no direct connection is up by then (both sides wait alike, so a TCP
simultaneous open still lines up).  Over QUIC, as the spec says, only the answering side
dials; the initiator sends UDP packets of random bytes from its listening socket to the
peer's QUIC addresses (every 10 to 200 ms, random) so that its NAT lets the dial in, and
the connection arrives on its listener.

On success new streams use the direct connection (:meth:`Node.connections_to` puts
direct connections first) and the relayed one is closed once its streams are done (or
after :attr:`DcutrConfig.relay_close_grace_seconds`).  The initiator retries up to
:attr:`DcutrConfig.max_attempts` times.  Both sides report on
:attr:`DcutrService.events`: each exchange as :class:`HolePunchStarted`, and its outcome as
:class:`DirectConnectionUpgraded` or :class:`HolePunchFailed` (``initiator`` tells the
sides apart).  A failed punch never touches the relayed connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Protocol, runtime_checkable

from .._aio.connection import Connection, Direction
from .._aio.emitter import Emitter
from .._aio.stream import Stream
from ..errors import (
    DialError,
    InvalidArgumentError,
    P2PError,
    PortUnreachableError,
    RemoteProtocolError,
)
from ..events import DirectConnectionUpgraded, HolePunchFailed, HolePunchStarted
from ..identity import PeerId
from ..multiaddr import Multiaddr
from ..protocols.dcutr import (
    DCUTR_PROTOCOL_ID,
    MAX_ATTEMPTS,
    MAX_MESSAGE_BYTES,
    DcutrFailed,
    DcutrInitiator,
    DcutrResponder,
    DialNow,
    DialScheduled,
)
from ..protocols.role import Role
from ..transports.tcp import TcpTransport
from .host import connection_of

if TYPE_CHECKING:
    from .host import Host

__all__ = [
    "DcutrConfig",
    "DcutrService",
    "DirectConnectionUpgraded",
    "HolePunchEvent",
    "HolePunchFailed",
    "HolePunchStarted",
    "HolePunchingTransport",
    "direct_kind",
]

log = logging.getLogger(__name__)

_READ_CHUNK_BYTES: Final = 8192
_RETIRE_POLL_SECONDS: Final = 0.05
_ANSWERED_KEY: Final = "dcutr answered"
"""Per relayed connection (its ``user_data``): DCUtR exchanges we answered on it."""
_PUNCH_MIN_SECONDS: Final = 0.01
_PUNCH_MAX_SECONDS: Final = 0.2
"""The spec's random interval between two punch packets to one address."""
_UNREACHABLE_RETRIES: Final = 50
"""QUIC re-dials of one address refused by ICMP (its NAT not yet opened by the peer)."""
_PUNCH_BYTES: Final = 64
"""Random bytes per punch packet: far below a QUIC Initial's 1200, never taken for one."""


@runtime_checkable
class HolePunchingTransport(Protocol):
    """A transport that can open our NAT towards an address without dialling (QUIC)."""

    def can_dial(self, addr: Multiaddr) -> bool: ...

    def send_punch(self, addr: Multiaddr, payload: bytes) -> bool:
        """Send ``payload`` in one datagram to ``addr`` from the socket a dial there would
        leave from; False if there is none."""
        ...


def direct_kind(addr: Multiaddr) -> tuple[Literal["tcp", "quic"], int] | None:
    """``("tcp", port)`` for ``/ip4|ip6/<ip>/tcp/<port>``, ``("quic", port)`` for
    ``/ip4|ip6/<ip>/udp/<port>/quic-v1`` (each optionally ``/p2p/<id>``), else None."""
    names = addr.protocol_names()
    if names[:1] not in (("ip4",), ("ip6",)):
        return None
    if names[1:2] == ("tcp",) and names[2:] in ((), ("p2p",)):
        port = addr.value_for("tcp")
        return ("tcp", int(port)) if port is not None else None
    if names[1:3] == ("udp", "quic-v1") and names[3:] in ((), ("p2p",)):
        port = addr.value_for("udp")
        return ("quic", int(port)) if port is not None else None
    return None


@dataclass(frozen=True, slots=True)
class DcutrConfig:
    """Hole-punching settings (seconds, bytes and counts as the names say)."""

    max_attempts: int = MAX_ATTEMPTS
    """DCUtR exchanges (each followed by a simultaneous connect) before giving up."""
    exchange_timeout: float = 10.0
    """One CONNECT/SYNC exchange over the relayed connection."""
    connect_timeout: float = 5.0
    """One simultaneous connect: from the dial moment until a direct connection is up."""
    unilateral_upgrade: bool = True
    """First dial the peer's advertised (identify) addresses directly, as the spec says."""
    unilateral_timeout: float = 3.0
    identify_wait_seconds: float = 3.0
    """How long to wait for identify results (our observed addresses, the peer's)."""
    relay_close_grace_seconds: float = 5.0
    """After an upgrade the relayed connection is closed once it has no stream left, or
    after this long at most."""
    close_relayed: bool = True
    allow_private_addrs: bool = False
    """Offer and dial private (RFC 1918, ULA, link-local) addresses; on for labs and
    tests whose "public" network uses private ranges."""
    allow_loopback_addrs: bool = False
    max_addrs: int = 16
    """Addresses offered in our CONNECT and dialled from the peer's, each."""
    max_message_bytes: int = MAX_MESSAGE_BYTES
    port_reuse: bool = True
    """Turn on :attr:`TcpTransport.port_reuse` for the node's TCP transports."""
    quic_head_start_seconds: float = 1.0
    """With QUIC addresses to try, TCP ones are dialled this much later, only if no
    direct connection is up by then (0: all at once; at least ``connect_timeout``: TCP is
    not tried when QUIC addresses are)."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidArgumentError("max_attempts must be at least 1")
        if self.quic_head_start_seconds < 0:
            raise InvalidArgumentError("quic_head_start_seconds must not be negative")
        if self.max_addrs < 1:
            raise InvalidArgumentError("max_addrs must be at least 1")


HolePunchEvent = HolePunchStarted | DirectConnectionUpgraded | HolePunchFailed


class DcutrService:
    """DCUtR on ``node``: answers ``/libp2p/dcutr`` and upgrades relayed connections."""

    def __init__(self, node: Host, *, config: DcutrConfig | None = None) -> None:
        self.node = node
        self.config = config or DcutrConfig()
        self.events: Emitter[HolePunchEvent] = Emitter("hole punch events")
        """Attempts, upgrades and failures, on both sides."""
        self._upgrading: dict[PeerId, asyncio.Task[None]] = {}
        self._waiters: dict[PeerId, list[asyncio.Future[Connection]]] = {}
        self._closed = False
        if self.config.port_reuse:
            for transport in node.transports:
                if isinstance(transport, TcpTransport):
                    transport.port_reuse = True
        node.set_stream_handler(DCUTR_PROTOCOL_ID, self._on_stream)
        node.connection_opened.subscribe(self._on_connection_opened)

    # -- public --------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop answering and cancel running upgrades."""
        self._closed = True
        self.node.remove_stream_handler(DCUTR_PROTOCOL_ID)
        tasks = list(self._upgrading.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def observed_addrs(self) -> list[Multiaddr]:
        """Our addresses as peers on direct connections observed them (identify), filtered."""
        node = self.node
        direct = [c for c in node.connections if c.is_established and not c.is_relayed]
        if node.identify is not None and direct:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.identify_wait_seconds):
                    await asyncio.gather(
                        *(node.identify.identify(c) for c in direct), return_exceptions=True
                    )
        out: list[Multiaddr] = []
        for conn in direct:
            if conn.is_closed:
                continue
            observed = node.peer_store.info(conn.remote_peer).observed_addr
            if observed is None or not self._usable(observed):
                continue
            for addr in self._mapped(observed, conn.local_addr):
                if addr not in out and self._usable(addr):
                    out.append(addr)
        return out[: self.config.max_addrs]

    def _mapped(self, observed: Multiaddr, local: Multiaddr | None) -> list[Multiaddr]:
        """What ``observed`` (seen for a connection from ``local``) says we can be
        reached at: our listen ports at the observed IP if the NAT kept the port."""
        seen, ours = direct_kind(observed), direct_kind(local) if local is not None else None
        ip = observed.ip_address
        if seen is None or ours is None or seen[1] != ours[1] or ip is None:
            return [observed]
        family = "ip4" if ip.version == 4 else "ip6"
        out: list[Multiaddr] = []
        for listen in self.node.listen_addrs:
            kind = direct_kind(listen)
            listen_ip = listen.ip_address
            if kind is None or listen_ip is None or listen_ip.version != ip.version:
                continue
            tail = f"tcp/{kind[1]}" if kind[0] == "tcp" else f"udp/{kind[1]}/quic-v1"
            out.append(Multiaddr(f"/{family}/{ip}/{tail}"))
        return out or [observed]

    # -- address filter ------------------------------------------------------------------

    def _usable(self, addr: Multiaddr) -> bool:
        """A TCP or QUIC address (:func:`direct_kind`) that a transport of ours dials and
        the config lets us offer or dial."""
        ip = addr.ip_address
        if ip is None or direct_kind(addr) is None:
            return False
        if not any(t.can_dial(addr) for t in self.node.transports):
            return False
        if ip.is_unspecified or ip.is_multicast:
            return False
        if ip.is_loopback:
            return self.config.allow_loopback_addrs
        if ip.is_private or ip.is_link_local:
            return self.config.allow_private_addrs
        return True

    def _dialable(self, addrs: Sequence[Multiaddr]) -> list[Multiaddr]:
        out: list[Multiaddr] = []
        for addr in addrs:
            plain = addr.without_peer_id()
            if plain not in out and self._usable(plain):
                out.append(plain)
        return out[: self.config.max_addrs]

    # -- events --------------------------------------------------------------------------

    def _on_connection_opened(self, conn: Connection) -> None:
        if self._closed:
            return
        peer = conn.remote_peer
        if not conn.is_relayed:
            for waiter in self._waiters.pop(peer, ()):
                if not waiter.done():
                    waiter.set_result(conn)
            return
        if conn.direction is not Direction.INBOUND or peer in self._upgrading:
            return
        if any(not c.is_relayed for c in self.node.connections_to(peer)):
            return
        task = self.node.spawn(self._upgrade(conn), name=f"dcutr {peer}")
        self._upgrading[peer] = task
        task.add_done_callback(lambda _t: self._upgrading.pop(peer, None))

    # -- the inbound side: unilateral dial, then DCUtR as initiator ----------------------

    async def _upgrade(self, relayed: Connection) -> None:
        peer = relayed.remote_peer
        config = self.config
        causes: dict[str, BaseException] = {}
        if config.unilateral_upgrade:
            direct = await self._unilateral(relayed, causes)
            if direct is not None:
                self._succeeded(relayed, direct, 0)
                return
        ours: list[Multiaddr] = []
        theirs: tuple[Multiaddr, ...] = ()
        attempts = 0
        for attempt in range(1, config.max_attempts + 1):
            if relayed.is_closed or self._closed:
                break
            attempts = attempt
            self.events.emit(HolePunchStarted(peer, attempt, initiator=True))
            ours = await self.observed_addrs()
            if not ours:
                causes[f"attempt {attempt}"] = DialError(
                    "no observed address to offer (identify over a direct connection, "
                    "e.g. to the relay, tells us ours)"
                )
                break
            try:
                dial, addrs = await self._initiate(relayed, ours)
                theirs = tuple(addrs)
                direct = await self._connect(peer, addrs, dial, initiator=True)
            except P2PError as exc:
                causes[f"attempt {attempt}"] = exc
                log.debug("hole punch to %s, attempt %d failed: %s", peer, attempt, exc)
                continue
            self._succeeded(relayed, direct, attempt)
            return
        error = DialError(f"hole punching to {peer} failed after {attempts} attempt(s)", causes)
        log.info("hole punch to %s (initiator) failed: %s; staying relayed", peer, error)
        self.events.emit(HolePunchFailed(peer, error, attempts, tuple(ours), theirs))

    async def _unilateral(
        self, relayed: Connection, causes: dict[str, BaseException]
    ) -> Connection | None:
        node = self.node
        peer = relayed.remote_peer
        if node.identify is not None:
            with contextlib.suppress(P2PError, TimeoutError):
                async with asyncio.timeout(self.config.identify_wait_seconds):
                    await node.identify.identify(relayed)
        addrs = self._dialable(node.peer_store.addrs(peer))
        if not addrs:
            return None
        try:
            async with asyncio.timeout(self.config.unilateral_timeout):
                return await self._first_connection(peer, addrs, None)
        except P2PError as exc:
            causes["unilateral"] = exc
            return None
        except TimeoutError:
            causes["unilateral"] = DialError(
                f"no direct connection within {self.config.unilateral_timeout} s"
            )
            return None

    async def _initiate(
        self, relayed: Connection, ours: list[Multiaddr]
    ) -> tuple[DialNow, list[Multiaddr]]:
        """The CONNECT/SYNC exchange: when to dial, and the peer's addresses we may dial."""
        loop = asyncio.get_running_loop()
        machine = DcutrInitiator(ours, max_message_bytes=self.config.max_message_bytes)
        stream = await relayed.new_stream(DCUTR_PROTOCOL_ID)
        try:
            async with asyncio.timeout(self.config.exchange_timeout):
                machine.start(loop.time())
                await stream.write(machine.data_to_send())
                events = machine.events_received()
                while not events:
                    data = await stream.read(_READ_CHUNK_BYTES)
                    if data:
                        machine.receive_data(data, loop.time())
                    else:
                        machine.receive_eof()
                    out = machine.data_to_send()
                    if out:
                        await stream.write(out)
                    events = machine.events_received()
                event = events[0]
                if isinstance(event, DcutrFailed):
                    raise event.error
                assert isinstance(event, DialScheduled)
                await asyncio.sleep(max(0.0, event.at - loop.time()))
                machine.handle_timer(max(loop.time(), event.at))
                dial = machine.events_received()[0]
                assert isinstance(dial, DialNow)
        except TimeoutError as exc:
            stream.reset()
            raise DialError("the DCUtR exchange timed out") from exc
        except BaseException:
            stream.reset()
            raise
        self.node.spawn(_close_quietly(stream), name="dcutr close")
        addrs = self._dialable(dial.addrs)
        if not addrs:
            raise RemoteProtocolError(f"the peer offered no address we may dial: {dial.addrs}")
        return dial, addrs

    # -- the outbound side: DCUtR as responder -------------------------------------------

    async def _on_stream(self, stream: Stream) -> None:
        relayed = connection_of(self.node, stream)
        if not relayed.is_relayed:
            stream.reset()  # nothing to upgrade on a direct connection
            return
        peer = relayed.remote_peer
        answered = relayed.user_data.get(_ANSWERED_KEY, 0)
        attempt = (answered if isinstance(answered, int) else 0) + 1
        relayed.user_data[_ANSWERED_KEY] = attempt
        self.events.emit(HolePunchStarted(peer, attempt, initiator=False))
        ours: list[Multiaddr] = []
        theirs: tuple[Multiaddr, ...] = ()
        try:
            ours = await self.observed_addrs()
            dial = await self._answer(stream, ours)
            addrs = self._dialable(dial.addrs)
            theirs = tuple(addrs)
            if not addrs:
                raise RemoteProtocolError(f"the peer offered no address we may dial: {dial.addrs}")
            direct = await self._connect(peer, addrs, dial, initiator=False)
        except P2PError as exc:
            log.info("hole punch with %s (responder), attempt %d failed: %s", peer, attempt, exc)
            self.events.emit(
                HolePunchFailed(peer, exc, attempt, tuple(ours), theirs, initiator=False)
            )
            return
        self._succeeded(relayed, direct, attempt, initiator=False)

    async def _answer(self, stream: Stream, ours: list[Multiaddr]) -> DialNow:
        """Answer the peer's CONNECT and SYNC; the moment to dial (raises on failure)."""
        machine = DcutrResponder(ours, max_message_bytes=self.config.max_message_bytes)
        try:
            async with asyncio.timeout(self.config.exchange_timeout):
                events = machine.events_received()
                while not events:
                    data = await stream.read(_READ_CHUNK_BYTES)
                    if data:
                        machine.receive_data(data)
                    else:
                        machine.receive_eof()
                    out = machine.data_to_send()
                    if out:
                        await stream.write(out)
                    events = machine.events_received()
        except TimeoutError as exc:
            stream.reset()
            raise DialError("the DCUtR exchange timed out") from exc
        except BaseException:
            stream.reset()
            raise
        event = events[0]
        if isinstance(event, DcutrFailed):
            stream.reset()
            raise event.error
        assert isinstance(event, DialNow)
        return event

    # -- simultaneous connect ------------------------------------------------------------

    async def _connect(
        self, peer: PeerId, addrs: list[Multiaddr], dial: DialNow, *, initiator: bool
    ) -> Connection:
        role = dial.upgrade_role
        node = self.node
        for addr in addrs:
            node.expect_inbound_role(addr, role)
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                return await self._first_connection(peer, addrs, role, punch=initiator)
        except TimeoutError as exc:
            raise DialError(
                f"no direct connection to {peer} within {self.config.connect_timeout} s"
            ) from exc
        finally:
            for addr in addrs:
                node.expect_inbound_role(addr, None)

    async def _first_connection(
        self, peer: PeerId, addrs: list[Multiaddr], role: Role | None, *, punch: bool = False
    ) -> Connection:
        """Dial the QUIC addresses, then the TCP ones (after the head start); the first
        direct connection to ``peer`` wins, be it one of our dials or the peer's dial
        landing on our listener.  With ``punch`` (the DCUtR initiator) QUIC addresses
        are sent punch packets instead of dialled, until the peer's dial arrives."""
        node = self.node
        for conn in node.connections_to(peer):
            if not conn.is_relayed:
                return conn
        waiter: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(peer, []).append(waiter)
        quic = [a for a in addrs if (direct_kind(a) or ("", 0))[0] == "quic"]
        tcp = [a for a in addrs if a not in quic]
        punchers = [t for t in node.transports if isinstance(t, HolePunchingTransport)]
        punched = quic if punch and punchers else []
        head_start = self.config.quic_head_start_seconds if quic else 0.0
        order = [a for a in quic if a not in punched] + tcp
        dials: list[asyncio.Future[Connection]] = [
            asyncio.ensure_future(
                self._dial(peer, a, role, head_start if a in tcp else 0.0, waiter)
            )
            for a in order
        ]
        punching = (
            node.spawn(self._punch(punchers, punched, waiter), name=f"dcutr punch {peer}")
            if punched
            else None
        )
        causes: dict[str, BaseException] = {}
        pending: set[asyncio.Future[Connection]] = {waiter, *dials}
        winner: Connection | None = None
        try:
            while winner is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    exc = fut.exception()
                    if exc is None:
                        winner = fut.result()
                        break
                    causes[str(order[dials.index(fut)])] = exc
                else:
                    if pending == {waiter} and punching is None:
                        raise DialError(f"could not connect to {peer} directly", causes)
            return winner
        finally:
            if not waiter.done():
                waiter.cancel()
            if punching is not None:
                punching.cancel()
            waiters = self._waiters.get(peer)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(waiter)
                if not waiters:
                    del self._waiters[peer]
            # Dials still running are left to finish (cancelling one could abort the very
            # connection that won, still on its way back); any other connection they
            # make is closed: one direct connection is enough.
            for fut in dials:
                fut.add_done_callback(functools.partial(self._close_extra, keep=winner))

    async def _dial(
        self,
        peer: PeerId,
        addr: Multiaddr,
        role: Role | None,
        delay: float,
        waiter: asyncio.Future[Connection],
    ) -> Connection:
        if delay > 0:
            await asyncio.sleep(delay)
            if waiter.done():
                raise DialError("not dialled: a direct connection came first")
        target = addr.with_peer_id(peer)
        for _ in range(_UNREACHABLE_RETRIES):
            try:
                return await self.node.dial(target, force=True, role=role)
            except PortUnreachableError:
                # The peer's NAT refuses until the peer's punch packets open it: dial
                # again while the punch runs (the connect timeout bounds it).
                await asyncio.sleep(random.uniform(_PUNCH_MIN_SECONDS, _PUNCH_MAX_SECONDS))
                if waiter.done():
                    raise
        return await self.node.dial(target, force=True, role=role)

    async def _punch(
        self,
        punchers: Sequence[HolePunchingTransport],
        addrs: list[Multiaddr],
        waiter: asyncio.Future[Connection],
    ) -> None:
        """Punch packets to each address until a connection arrives (or we are
        cancelled: the connect timeout bounds it)."""
        while not waiter.done():
            for addr in addrs:
                payload = secrets.token_bytes(_PUNCH_BYTES)
                # The transport that dials the address punches for it (a subclass for
                # another address shape, e.g. WebTransport's, has other sockets).
                if not any(t.send_punch(addr, payload) for t in punchers if t.can_dial(addr)):
                    log.debug("no socket to punch %s from", addr)
            await asyncio.sleep(random.uniform(_PUNCH_MIN_SECONDS, _PUNCH_MAX_SECONDS))

    def _close_extra(self, fut: asyncio.Future[Connection], *, keep: Connection | None) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        conn = fut.result()
        if keep is None:
            keep = conn  # no winner (error path): keep what arrived late
        if conn is not keep and not conn.is_closed:
            self.node.spawn(conn.close(), name="dcutr extra close")

    # -- after success -------------------------------------------------------------------

    def _succeeded(
        self, relayed: Connection, direct: Connection, attempts: int, *, initiator: bool = True
    ) -> None:
        peer = relayed.remote_peer
        # Answering while our own upgrade to the peer runs: that upgrade reports.
        if initiator or peer not in self._upgrading:
            log.info("hole punch with %s: direct connection via %s", peer, direct.remote_addr)
            self.events.emit(
                DirectConnectionUpgraded(peer, direct.remote_addr, attempts, initiator)
            )
        if self.config.close_relayed and not relayed.is_closed:
            self.node.spawn(self._retire(relayed, direct), name=f"dcutr retire {peer}")

    async def _retire(self, relayed: Connection, direct: Connection) -> None:
        """Close the relayed connection once the peer answered on the direct one and the
        relayed streams are done (bounded by the grace).

        A dialer's connection is ready before the listener has processed the last
        handshake message (early muxer negotiation): closed at once, the relayed
        connection would fail the streams the peer opens on it meanwhile.  A Yamux ping
        answered on the direct connection shows the peer has it, and its new streams
        take it.  A direct connection that does not answer leaves the relayed one open.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.relay_close_grace_seconds
        try:
            async with asyncio.timeout(self.config.relay_close_grace_seconds):
                await direct.ping()
        except (P2PError, TimeoutError):
            log.info(
                "direct connection to %s does not answer: relayed one kept", direct.remote_peer
            )
            return
        # Bounded poll: a connection signals no "last stream gone" event.
        while relayed.streams and not relayed.is_closed and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_RETIRE_POLL_SECONDS)
        await relayed.close()


async def _close_quietly(stream: Stream) -> None:
    with contextlib.suppress(P2PError):
        await stream.close()
