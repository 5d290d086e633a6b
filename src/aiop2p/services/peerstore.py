"""What we know about other peers: addresses, protocols, agent, public key (bounded)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..identity import PeerId, PublicKey
from ..multiaddr import Multiaddr

__all__ = ["PeerInfo", "PeerStore"]


@dataclass(slots=True)
class PeerInfo:
    peer_id: PeerId
    addrs: list[Multiaddr] = field(default_factory=list)
    protocols: list[str] = field(default_factory=list)
    agent_version: str | None = None
    protocol_version: str | None = None
    public_key: PublicKey | None = None
    observed_addr: Multiaddr | None = None
    """Our address as this peer saw it (from its identify message)."""
    certified_addrs: list[Multiaddr] = field(default_factory=list)
    """The addresses of the latest signed peer record the peer sent (verified): the
    peer itself vouches for them, where other addresses may come from anyone."""
    peer_record_seq: int | None = None
    """The ``seq`` of that record; an older record is refused (RFC 0003)."""
    peer_record: bytes | None = None
    """That record's signed envelope, as received (to pass on with its signature)."""

    def is_certified(self, addr: Multiaddr) -> bool:
        return addr.without_peer_id() in self.certified_addrs


class PeerStore:
    """A bounded, least-recently-updated-evicted map of peer information."""

    def __init__(self, *, max_peers: int = 10_000, max_addrs_per_peer: int = 32) -> None:
        self.max_peers = max_peers
        self.max_addrs_per_peer = max_addrs_per_peer
        self._peers: OrderedDict[PeerId, PeerInfo] = OrderedDict()

    def __contains__(self, peer: object) -> bool:
        return peer in self._peers

    def __len__(self) -> int:
        return len(self._peers)

    def get(self, peer: PeerId) -> PeerInfo | None:
        return self._peers.get(peer)

    def info(self, peer: PeerId) -> PeerInfo:
        """The record for ``peer``, created if missing (and marked most recent)."""
        info = self._peers.get(peer)
        if info is None:
            info = PeerInfo(peer)
            self._peers[peer] = info
            while len(self._peers) > self.max_peers:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        return info

    def addrs(self, peer: PeerId) -> list[Multiaddr]:
        info = self._peers.get(peer)
        return list(info.addrs) if info else []

    def add_addrs(self, peer: PeerId, addrs: Iterable[Multiaddr]) -> None:
        info = self.info(peer)
        for addr in addrs:
            addr = addr.without_peer_id()
            if addr not in info.addrs:
                info.addrs.append(addr)
        del info.addrs[: max(0, len(info.addrs) - self.max_addrs_per_peer)]

    def set_addrs(self, peer: PeerId, addrs: Iterable[Multiaddr]) -> None:
        info = self.info(peer)
        info.addrs = []
        self.add_addrs(peer, addrs)

    def set_certified(
        self, peer: PeerId, addrs: Iterable[Multiaddr], seq: int, record: bytes
    ) -> None:
        """Take a verified peer record: its addresses become the peer's (certified ones
        are preferred over any the peer or others sent unsigned)."""
        self.set_addrs(peer, addrs)
        info = self.info(peer)
        info.certified_addrs = list(info.addrs)
        info.peer_record_seq = seq
        info.peer_record = record

    def remove(self, peer: PeerId) -> None:
        self._peers.pop(peer, None)
