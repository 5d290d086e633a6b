"""Automatic relays (:class:`AutoRelay`): listen through a few relays while we are not
publicly reachable.

Candidates are the configured relays (a node's bootstrap peers, typically) and, with
``discover``, every peer whose identify lists the hop protocol.  While active (``mode``
``always``, or ``auto`` and AutoNAT says no address of ours is reachable), it keeps
``max_relays`` relayed listeners (:meth:`RelayClient.listen`), so their circuit
addresses are among the node's listen addresses: identify announces them, the signed
peer record carries them, and DHT servers hand them to whoever looks us up.

The relay client already re-reserves a listener's relay after an outage.  On top of
that, a relay reported lost is replaced when another candidate is free: it is dropped,
put aside for ``retry_after_seconds``, and the next candidate is reserved on.  With no
spare candidate the lost relay is kept, and the client's retries restore it.  When AutoNAT
confirms an address (``auto``), the relayed listeners are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..._aio.connection import Connection
from ..._aio.emitter import Emitter
from ...errors import InvalidArgumentError, P2PError
from ...events import AutoRelayAdded, AutoRelayRemoved, ReachabilityChanged
from ...identity import PeerId
from ...multiaddr import Multiaddr
from ...protocols.relay_v2 import HOP_PROTOCOL_ID
from .client import RelayClient, RelayClientEvent, ReservationFailed, ReservationLost

if TYPE_CHECKING:
    from ..autonat import AutonatService
    from ..host import Host

__all__ = [
    "AutoRelay",
    "AutoRelayAdded",
    "AutoRelayConfig",
    "AutoRelayEvent",
    "AutoRelayRemoved",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AutoRelayConfig:
    """Automatic relay settings (seconds and counts as the names say)."""

    mode: Literal["auto", "always"] = "auto"
    """``auto``: relay while AutoNAT finds no address of ours reachable (and not before
    it has a verdict); ``always``: relay whatever AutoNAT says (or without it)."""
    max_relays: int = 2
    """Relays to listen through at once."""
    relays: tuple[Multiaddr, ...] = ()
    """Relays to try first, each with its ``/p2p/<id>`` (the bootstrap peers, say)."""
    discover: bool = True
    """Also use connected peers whose identify lists the hop protocol."""
    max_candidates: int = 64
    """Candidates remembered (configured ones first; the oldest discovered go)."""
    retry_after_seconds: float = 60.0
    """How long a relay that failed or was lost is passed over."""
    check_interval_seconds: float = 30.0
    """Seconds between checks that enough relays are held (events start one sooner)."""

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "always"):
            raise InvalidArgumentError(f"auto relay mode must be 'auto' or 'always': {self.mode!r}")
        if self.max_relays < 1 or self.max_candidates < 1:
            raise InvalidArgumentError("max_relays and max_candidates must be positive")
        for addr in self.relays:
            if addr.peer_id is None:
                raise InvalidArgumentError(f"a relay address needs its /p2p/<id>: {addr}")


AutoRelayEvent = AutoRelayAdded | AutoRelayRemoved


class AutoRelay:
    """Keeps ``config.max_relays`` relayed listeners on ``host`` while needed."""

    def __init__(
        self,
        host: Host,
        client: RelayClient,
        config: AutoRelayConfig | None = None,
        *,
        autonat: AutonatService | None = None,
    ) -> None:
        self.host = host
        self.client = client
        self.config = config or AutoRelayConfig()
        self.autonat = autonat
        self.events: Emitter[AutoRelayEvent] = Emitter("auto relay events")
        self._candidates: OrderedDict[PeerId, Multiaddr | None] = OrderedDict()
        for addr in self.config.relays:
            assert addr.peer_id is not None  # checked by the config
            self._candidates[addr.peer_id] = addr.without_peer_id()
        self._static = set(self._candidates)
        self._relays: dict[PeerId, Multiaddr] = {}
        self._passed_over: dict[PeerId, float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        client.events.subscribe(self._on_client_event)
        if self.config.discover:
            host.connection_opened.subscribe(self._on_connection)
        if autonat is not None:
            autonat.events.subscribe(self._on_reachability)

    # -- public ------------------------------------------------------------------------------

    @property
    def relays(self) -> dict[PeerId, Multiaddr]:
        """The relays we listen through, with the address peers reach us at."""
        return dict(self._relays)

    @property
    def active(self) -> bool:
        if self.config.mode == "always":
            return True
        return self.autonat is not None and self.autonat.reachable is False

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = self.host.spawn(self._run(), name="auto relay")

    async def close(self) -> None:
        """Stop; the relayed listeners go with the relay client or the node."""
        self._closed = True
        self.client.events.unsubscribe(self._on_client_event)
        if self.config.discover:
            self.host.connection_opened.unsubscribe(self._on_connection)
        if self.autonat is not None:
            self.autonat.events.unsubscribe(self._on_reachability)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def update(self) -> None:
        """Reserve on candidates until ``max_relays`` are held (or drop every relay when
        not :attr:`active`)."""
        if not self.active:
            for relay in list(self._relays):
                await self._drop(relay, None)
            return
        now = asyncio.get_running_loop().time()
        wait = self.config.retry_after_seconds
        self._passed_over = {p: t for p, t in self._passed_over.items() if now - t < wait}
        for relay, addr in list(self._candidates.items()):
            if len(self._relays) >= self.config.max_relays:
                return
            if relay in self._relays or not self._usable(relay, now):
                continue
            try:
                circuit = await self.client.listen_automatically(relay, addr)
            except (P2PError, TimeoutError) as exc:
                log.info("auto relay: %s refused or unreachable: %s", relay, exc)
                self._passed_over[relay] = asyncio.get_running_loop().time()
                continue
            if self._closed:
                return
            self._relays[relay] = circuit
            log.info("auto relay: listening via %s at %s", relay, circuit)
            self.events.emit(AutoRelayAdded(relay, circuit))

    # -- internals ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            await self.update()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.check_interval_seconds):
                    await self._wake.wait()

    def _usable(self, relay: PeerId, now: float) -> bool:
        if relay == self.host.peer_id:
            return False
        since = self._passed_over.get(relay)
        return since is None or now - since >= self.config.retry_after_seconds

    def _spare(self) -> bool:
        now = asyncio.get_running_loop().time()
        return any(r not in self._relays and self._usable(r, now) for r in self._candidates)

    async def _drop(self, relay: PeerId, error: P2PError | None) -> None:
        if self._relays.pop(relay, None) is None:
            return
        with contextlib.suppress(P2PError):
            await self.client.release(relay)
        log.info("auto relay: stopped listening via %s (%s)", relay, error or "not needed")
        self.events.emit(AutoRelayRemoved(relay, error))

    def _on_client_event(self, event: RelayClientEvent) -> None:
        if event.relay not in self._relays or self._closed:
            return
        if (isinstance(event, ReservationFailed) and event.final) or (
            isinstance(event, ReservationLost) and self._spare()
        ):
            # Replace it: put it aside, free its place, and let the loop pick another.
            self._passed_over[event.relay] = asyncio.get_running_loop().time()
            self.host.spawn(self._replace(event.relay, event.error), name="auto relay drop")

    async def _replace(self, relay: PeerId, error: P2PError | None) -> None:
        await self._drop(relay, error)
        self._wake.set()

    def _on_reachability(self, event: ReachabilityChanged) -> None:
        self._wake.set()

    def _on_connection(self, conn: Connection) -> None:
        if not conn.is_relayed and not self._closed:
            self.host.spawn(self._consider(conn), name="auto relay identify")

    async def _consider(self, conn: Connection) -> None:
        """Add ``conn``'s peer as a candidate if identify lists the hop protocol."""
        identify = self.host.identify
        if identify is None:
            return
        try:
            info = await identify.identify(conn)
        except (P2PError, TimeoutError):
            return
        peer = conn.remote_peer
        if HOP_PROTOCOL_ID not in info.protocols or peer in self._candidates:
            return
        if len(self._candidates) >= self.config.max_candidates:
            oldest = next((p for p in self._candidates if p not in self._static), None)
            if oldest is None or oldest in self._relays:
                return
            del self._candidates[oldest]
        self._candidates[peer] = None
        self._wake.set()
