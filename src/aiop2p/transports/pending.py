"""Fair admission of inbound connections that are still in their handshake.

A global bound alone lets one address that opens many connections and sends nothing
lock every other peer out until the handshake timeout.  :class:`FairPending` bounds
pending handshakes per *source* as well, and when the global bound is reached it
makes room for a newcomer by evicting the oldest handshake of the busiest source,
as long as that moves the shares towards equal.  Pure bookkeeping: the caller aborts
what is evicted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import ConnectionLimitError
from ..multiaddr import Multiaddr

__all__ = ["FairPending", "Source", "pending_source"]

T = TypeVar("T", bound=Hashable)

IPV6_SOURCE_PREFIX = 64
"""IPv6 addresses are grouped by /64: one host or site is normally given a whole /64,
so counting single addresses would let it open as many sources as it likes."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where an inbound connection comes from, as far as fairness is concerned."""

    key: str
    capped: bool
    """Whether the per-source bound applies (IP sources), or only the global one."""


def pending_source(remote: Multiaddr | None) -> Source:
    """The source of an inbound connection from ``remote``.

    - TCP and WebSocket: the IPv4 address, or the IPv6 /64 prefix; capped.
    - A relayed circuit: the relay peer.  Not capped: one relay carries many unrelated
      peers, it is a peer we chose to reserve with, and it limits circuits per peer
      itself; it still counts as one source when the global bound evicts.
    - Anything else (in-process memory pipes, unknown): one shared, uncapped source.
    """
    if remote is None:
        return Source("other", capped=False)
    if remote.is_circuit:
        relay_part = remote.decapsulate("p2p-circuit")
        relay = relay_part.peer_id if relay_part.ends_with_peer_id else None
        return Source(f"relay {relay}", capped=False)
    ip = remote.ip_address
    if isinstance(ip, ipaddress.IPv4Address):
        return Source(str(ip), capped=True)
    if ip is not None:
        if ip.ipv4_mapped is not None:
            return Source(str(ip.ipv4_mapped), capped=True)
        net = ipaddress.IPv6Network((ip, IPV6_SOURCE_PREFIX), strict=False)
        return Source(str(net), capped=True)
    names = remote.protocol_names()
    return Source(names[0] if names else "other", capped=False)


class FairPending(Generic[T]):
    """Pending handshakes grouped by source, bounded in total and per source.

    Admission of a newcomer from source S (holding ``held``):

    1. S is capped and ``held >= max_per_source``: refused.
    2. Fewer than ``max_total`` pending (or no ``max_total``): admitted.
    3. Otherwise the source holding the most loses its oldest handshake if it holds
       more than S will after admission (``held + 1``): every move makes the shares
       more equal, so a source with one handshake is never evicted for a newcomer
       and many sources cannot take turns evicting each other.  Else refused.

    The oldest handshake is the victim because a lawful one finishes in a round trip
    or two: the longer one has been pending, the likelier it is stalled.
    """

    def __init__(self, max_total: int | None, max_per_source: int) -> None:
        self.max_total = max_total
        self.max_per_source = max_per_source
        self._groups: dict[str, dict[T, None]] = {}  # insertion-ordered: oldest first
        self._source_of: dict[T, str] = {}

    def __len__(self) -> int:
        return len(self._source_of)

    def __contains__(self, item: object) -> bool:
        return item in self._source_of

    def items(self) -> list[T]:
        """Every tracked item, oldest first within each source."""
        return [item for group in self._groups.values() for item in group]

    def held(self, key: str) -> int:
        """Pending handshakes from the source ``key``."""
        group = self._groups.get(key)
        return 0 if group is None else len(group)

    def admit(self, item: T, source: Source) -> tuple[ConnectionLimitError | None, T | None]:
        """Track ``item``; return (the refusal, or None) and the evicted item, if any."""
        held = self.held(source.key)
        if source.capped and held >= self.max_per_source:
            return ConnectionLimitError(
                self.max_per_source, held, f"pending handshakes from {source.key}"
            ), None
        evicted: T | None = None
        if self.max_total is not None and len(self) >= self.max_total:
            busiest = max(self._groups.values(), key=len, default=None)
            if busiest is None or len(busiest) <= held + 1:
                return ConnectionLimitError(self.max_total, len(self), "pending handshakes"), None
            evicted = next(iter(busiest))
            self.discard(evicted)
        self._groups.setdefault(source.key, {})[item] = None
        self._source_of[item] = source.key
        return None, evicted

    def discard(self, item: T) -> None:
        """Forget ``item`` (its handshake finished or failed); no-op if not tracked."""
        key = self._source_of.pop(item, None)
        if key is None:
            return
        group = self._groups[key]
        del group[item]
        if not group:
            del self._groups[key]
