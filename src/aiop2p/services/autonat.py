"""AutoNAT v2 (libp2p ``autonat-v2`` spec): which of our addresses are publicly reachable.

Client: for each candidate address (our listen addresses, and addresses at least
``min_observers`` peers observed for us, filtered like DCUtR's), ask connected peers
that serve ``/libp2p/autonat/2/dial-request`` to dial it back, one address per request,
each server once per address per ``recheck_interval_seconds``.  A "reachable" answer
counts only if the server's dial-back delivered our nonce (so a server cannot claim a
dial it did not make); a verdict needs ``confidence`` agreeing servers
(:class:`~aiop2p.protocols.autonat_v2.ReachabilityTally`).  Each change of verdict is a
:class:`ReachabilityChanged` on :attr:`AutonatService.events`.

Server: answers each request on its own, new connection (``force``) to the first
address it is willing to dial (TCP, a public IP unless the config allows private or
loopback ones, never a relayed or DNS address), after the requester paid
``dial_data_bytes`` of dial data if that address's IP is not the one the request came
from (the spec's amplification-attack protection).  Requests are rate limited per peer
and in all, and bounded in number at once and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter

from .._aio.connection import Connection
from .._aio.emitter import Emitter
from .._aio.stream import Stream
from ..config import AutonatConfig
from ..errors import AutonatError, P2PError
from ..events import ReachabilityChanged
from ..identity import PeerId
from ..multiaddr import Multiaddr
from ..protocols.autonat_v2 import (
    DIAL_BACK_PROTOCOL_ID,
    DIAL_REQUEST_PROTOCOL_ID,
    MAX_DIAL_DATA_CHUNK_BYTES,
    DialBack,
    DialBackResponse,
    DialDataRequest,
    DialDataResponse,
    DialRequest,
    DialResponse,
    DialStatus,
    RateLimiter,
    ReachabilityTally,
    ResponseStatus,
    decode_message,
    encode_message,
    select_address,
)
from .host import Host, connection_of

__all__ = ["AutonatService", "ReachabilityChanged"]

log = logging.getLogger(__name__)

_DIAL_BACK_MAX_BYTES = 64


class AutonatService:
    """AutoNAT v2 client and server on ``host`` (``Node.autonat``)."""

    def __init__(
        self, host: Host, config: AutonatConfig | None = None, *, rng: random.Random | None = None
    ) -> None:
        self.host = host
        self.config = config or AutonatConfig()
        self._rng = rng or random.SystemRandom()
        self.events: Emitter[ReachabilityChanged] = Emitter("autonat events")
        self.tally = ReachabilityTally(
            confidence=self.config.confidence, max_addrs=2 * self.config.max_candidate_addrs
        )
        self._verdicts: dict[Multiaddr, bool] = {}
        self._asked: dict[tuple[Multiaddr, PeerId], float] = {}
        self._nonces: dict[int, asyncio.Future[None]] = {}
        self._limiter = RateLimiter(
            per_peer=self.config.max_requests_per_peer,
            total=self.config.max_requests,
            window_seconds=self.config.rate_window_seconds,
        )
        self._serving = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        if self.config.server:
            host.set_stream_handler(DIAL_REQUEST_PROTOCOL_ID, self._serve)
        if self.config.client:
            host.set_stream_handler(DIAL_BACK_PROTOCOL_ID, self._on_dial_back)
            host.connection_opened.subscribe(self._on_connection)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Check our addresses now, then every ``check_interval_seconds`` (a host task)."""
        if self.config.client and self._task is None and not self._closed:
            self._task = self.host.spawn(self._run(), name="autonat")

    async def close(self) -> None:
        self._closed = True
        if self.config.server:
            self.host.remove_stream_handler(DIAL_REQUEST_PROTOCOL_ID)
        if self.config.client:
            self.host.remove_stream_handler(DIAL_BACK_PROTOCOL_ID)
            self.host.connection_opened.unsubscribe(self._on_connection)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the verdicts ------------------------------------------------------------------------

    @property
    def reachable(self) -> bool | None:
        """True if some address is confirmed public, False if every verdict says not
        reachable, None before any verdict."""
        if not self._verdicts:
            return None
        return any(self._verdicts.values())

    def verdicts(self) -> dict[Multiaddr, bool]:
        """Our addresses with a verdict: True reachable, False not."""
        return dict(self._verdicts)

    def reachable_addrs(self) -> list[Multiaddr]:
        return [a for a, ok in self._verdicts.items() if ok]

    # -- client ------------------------------------------------------------------------------

    def _on_connection(self, conn: Connection) -> None:
        if not conn.is_relayed:
            self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.check()
            except (P2PError, TimeoutError) as exc:  # pragma: no cover - check() catches them
                log.debug("autonat: check failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.check_interval_seconds):
                    await self._wake.wait()

    async def check(self) -> None:
        """One round: ask each server not yet asked (recently) about each candidate
        address that lacks a verdict from enough servers."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        recheck = self.config.recheck_interval_seconds
        self._asked = {k: t for k, t in self._asked.items() if now - t < recheck}
        servers = await self.servers()
        candidates = self.candidate_addrs()
        self._forget_stale(set(candidates))
        plan: dict[PeerId, list[Multiaddr]] = {}
        for addr in candidates:
            fresh = [s for s in servers if (addr, s) not in self._asked]
            for server in fresh[: self.config.confidence]:
                self._asked[(addr, server)] = now
                plan.setdefault(server, []).append(addr)
        if plan:
            # Servers in parallel, each asked one question at a time.
            await asyncio.gather(*(self._ask_in_turn(s, addrs) for s, addrs in plan.items()))

    async def _ask_in_turn(self, server: PeerId, addrs: list[Multiaddr]) -> None:
        for addr in addrs:
            await self._probe_and_record(server, addr)

    async def servers(self) -> list[PeerId]:
        """Connected peers (direct connections) that serve AutoNAT v2, per identify."""
        host = self.host
        direct = [c for c in host.connections if c.is_established and not c.is_relayed]
        if host.identify is not None and direct:
            identify = host.identify
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.request_timeout):
                    await asyncio.gather(
                        *(identify.identify(c) for c in direct), return_exceptions=True
                    )
        out: list[PeerId] = []
        for conn in direct:
            peer = conn.remote_peer
            info = host.peer_store.get(peer)
            if (
                info is not None
                and DIAL_REQUEST_PROTOCOL_ID in info.protocols
                and peer not in out
                and not conn.is_closed
            ):
                out.append(peer)
        return out

    def candidate_addrs(self) -> list[Multiaddr]:
        """Our listen addresses, then observed addresses enough peers agree on."""
        host = self.host
        out = [a for a in host.listen_addrs if self._usable(a)]
        observers: Counter[Multiaddr] = Counter()
        for conn in host.connections:
            if conn.is_relayed:
                continue
            info = host.peer_store.get(conn.remote_peer)
            if info is not None and info.observed_addr is not None:
                observers[info.observed_addr] += 1
        for addr, count in observers.most_common():
            if count >= self.config.min_observers and addr not in out and self._usable(addr):
                out.append(addr)
        return out[: self.config.max_candidate_addrs]

    async def probe(self, server: PeerId, addr: Multiaddr) -> bool | None:
        """Ask ``server`` to dial ``addr``: True if it dialled and delivered our nonce,
        False if it could not connect, None if it gave no usable answer (refused,
        rejected, failed the dial-back, or misbehaved: that raises its error)."""
        config = self.config
        loop = asyncio.get_running_loop()
        nonce = self._rng.getrandbits(64)
        while nonce in self._nonces:
            nonce = self._rng.getrandbits(64)
        delivered: asyncio.Future[None] = loop.create_future()
        self._nonces[nonce] = delivered
        try:
            async with asyncio.timeout(config.request_timeout):
                conn = self._direct_connection(server)
                stream = await conn.new_stream(DIAL_REQUEST_PROTOCOL_ID)
                async with stream:
                    response = await self._ask(stream, DialRequest.of([addr], nonce))
        finally:
            del self._nonces[nonce]
        if response.status is not ResponseStatus.OK:
            log.debug("autonat: %s answered %s for %s", server, response.status.name, addr)
            return None
        if response.addr_idx != 0:
            raise AutonatError(f"autonat: {server} answered for address #{response.addr_idx}")
        if response.dial_status is DialStatus.OK:
            if not delivered.done():
                raise AutonatError(f"autonat: {server} reported a dial-back we never received")
            return True
        if response.dial_status is DialStatus.E_DIAL_ERROR:
            return False
        return None

    async def _ask(self, stream: Stream, request: DialRequest) -> DialResponse:
        config = self.config
        limits = config.limits
        await stream.write_message(encode_message(request))
        paid = False
        while True:
            msg = decode_message(await stream.read_message(limits.max_message_bytes), limits)
            if isinstance(msg, DialResponse):
                return msg
            if not isinstance(msg, DialDataRequest) or paid:
                raise AutonatError(f"autonat: unexpected {type(msg).__name__} from the server")
            if msg.addr_idx >= len(request.addrs):
                raise AutonatError(f"autonat: dial data asked for address #{msg.addr_idx}")
            if msg.num_bytes > config.max_dial_data_bytes:
                stream.reset()
                raise AutonatError(
                    f"autonat: the server asked for {msg.num_bytes} bytes of dial data "
                    f"(max_dial_data_bytes={config.max_dial_data_bytes})"
                )
            chunk = encode_message(DialDataResponse(bytes(MAX_DIAL_DATA_CHUNK_BYTES)))
            for _ in range(-(-msg.num_bytes // MAX_DIAL_DATA_CHUNK_BYTES)):
                await stream.write_message(chunk)
            paid = True

    async def _probe_and_record(self, server: PeerId, addr: Multiaddr) -> None:
        try:
            outcome = await self.probe(server, addr)
        except (P2PError, TimeoutError) as exc:
            log.debug("autonat: %s about %s: %s", server, addr, exc)
            return
        if outcome is None or self._closed:
            return
        verdict = self.tally.record(addr, server, outcome)
        self._set_verdict(addr, verdict)

    def _set_verdict(self, addr: Multiaddr, verdict: bool | None) -> None:
        before = self._verdicts.get(addr)
        if verdict == before:
            return
        if verdict is None:
            del self._verdicts[addr]
        else:
            self._verdicts[addr] = verdict
        log.info("autonat: %s is %s", addr, _word(verdict))
        self.events.emit(ReachabilityChanged(addr, verdict, len(self.tally.servers(addr))))

    def _forget_stale(self, candidates: set[Multiaddr]) -> None:
        """Drop what concerns addresses we no longer have (bounded state; questions asked
        are also forgotten after ``recheck_interval_seconds``)."""
        for addr in [a for a in self._verdicts if a not in candidates]:
            self.tally.forget(addr)
            self._set_verdict(addr, None)
        for key in [k for k in self._asked if k[0] not in candidates]:
            del self._asked[key]

    def _direct_connection(self, peer: PeerId) -> Connection:
        for conn in self.host.connections_to(peer):
            if not conn.is_relayed and conn.is_established:
                return conn
        raise AutonatError(f"autonat: no direct connection to {peer}")

    async def _on_dial_back(self, stream: Stream) -> None:
        """A server dialled us back: take its nonce if it is one we are waiting for."""
        try:
            async with asyncio.timeout(self.config.dial_back_timeout):
                msg = DialBack.decode(await stream.read_message(_DIAL_BACK_MAX_BYTES))
                waiter = self._nonces.get(msg.nonce)
                if waiter is None:
                    stream.reset()
                    return
                if not waiter.done():
                    waiter.set_result(None)
                await stream.write_message(DialBackResponse().encode())
                await stream.close()
        except (P2PError, TimeoutError) as exc:
            log.debug("autonat: dial-back from %s: %s", stream.remote_peer, exc)
            stream.reset()

    # -- server ------------------------------------------------------------------------------

    async def _serve(self, stream: Stream) -> None:
        try:
            async with asyncio.timeout(self.config.server_timeout):
                await self._answer(stream)
        except (P2PError, TimeoutError) as exc:
            log.debug("autonat: request from %s: %s", stream.remote_peer, exc)
            stream.reset()

    async def _answer(self, stream: Stream) -> None:
        config = self.config
        limits = config.limits
        peer = stream.remote_peer
        msg = decode_message(await stream.read_message(limits.max_message_bytes), limits)
        if not isinstance(msg, DialRequest):
            raise AutonatError(f"autonat: a {type(msg).__name__} where a DialRequest belongs")
        conn = connection_of(self.host, stream)
        now = asyncio.get_running_loop().time()
        if (
            conn.is_relayed
            or self._serving >= config.max_concurrent_requests
            or not self._limiter.allow(peer, now)
        ):
            await self._respond(stream, DialResponse(ResponseStatus.E_REQUEST_REJECTED))
            return
        observed = conn.remote_addr.ip_address if conn.remote_addr is not None else None
        selection = select_address(msg, str(observed) if observed else None, self._usable)
        if selection is None:
            await self._respond(stream, DialResponse(ResponseStatus.E_DIAL_REFUSED))
            return
        self._serving += 1
        try:
            if selection.needs_dial_data:
                await self._collect_dial_data(stream, selection.index)
            status = await self._dial_back(peer, selection.addr, msg.nonce)
        finally:
            self._serving -= 1
        await self._respond(stream, DialResponse(ResponseStatus.OK, selection.index, status))

    async def _collect_dial_data(self, stream: Stream, index: int) -> None:
        config = self.config
        limits = config.limits
        await stream.write_message(encode_message(DialDataRequest(index, config.dial_data_bytes)))
        received = 0
        for _ in range(config.max_dial_data_messages):
            msg = decode_message(await stream.read_message(limits.max_message_bytes), limits)
            if not isinstance(msg, DialDataResponse):
                raise AutonatError(f"autonat: a {type(msg).__name__} in the dial data")
            received += len(msg.data)
            if received >= config.dial_data_bytes:
                return
        raise AutonatError(
            f"autonat: {config.max_dial_data_messages} dial data messages brought only "
            f"{received} of {config.dial_data_bytes} bytes"
        )

    async def _dial_back(self, peer: PeerId, addr: Multiaddr, nonce: int) -> DialStatus:
        """Dial ``addr`` on a new connection and hand it ``nonce``."""
        try:
            async with asyncio.timeout(self.config.dial_back_timeout):
                conn = await self.host.dial(addr.with_peer_id(peer), force=True)
        except (P2PError, TimeoutError) as exc:
            log.debug("autonat: dial-back to %s failed: %s", addr, exc)
            return DialStatus.E_DIAL_ERROR
        try:
            async with asyncio.timeout(self.config.dial_back_timeout):
                stream = await conn.new_stream(DIAL_BACK_PROTOCOL_ID)
                async with stream:
                    await stream.write_message(DialBack(nonce).encode())
                    DialBackResponse.decode(await stream.read_message(_DIAL_BACK_MAX_BYTES))
            return DialStatus.OK
        except (P2PError, TimeoutError) as exc:
            log.debug("autonat: dial-back stream to %s failed: %s", addr, exc)
            return DialStatus.E_DIAL_BACK_ERROR
        finally:
            conn.abort()

    async def _respond(self, stream: Stream, response: DialResponse) -> None:
        await stream.write_message(encode_message(response))
        await stream.close()

    def _usable(self, addr: Multiaddr) -> bool:
        """A plain TCP address (``/ip4|ip6/../tcp/..``: no relay, no DNS) the config lets
        us check (client) or dial (server)."""
        ip, head = addr.ip_address, addr.tcp_head()
        if ip is None or head is None or head.rest_names:
            return False
        if ip.is_unspecified or ip.is_multicast:
            return False
        if ip.is_loopback:
            return self.config.allow_loopback_addrs
        if ip.is_private or ip.is_link_local:
            return self.config.allow_private_addrs
        return True


def _word(verdict: bool | None) -> str:
    return {True: "publicly reachable", False: "not reachable", None: "unknown"}[verdict]
