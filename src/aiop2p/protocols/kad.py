"""Kademlia DHT (libp2p ``kad-dht`` spec): messages, XOR distance, routing table, lookups.

Three pure pieces a service drives:

- :class:`KadMessage`, the spec's protobuf ``Message`` (``Peer`` and ``Record`` inside),
  decoded under :class:`KadLimits`: a message that breaks the wire format or a bound
  raises :class:`~aiop2p.errors.KadError`.
- :class:`RoutingTable`: 256 k-buckets keyed by the common prefix length of
  ``sha256(peer id)`` with ours.  A full bucket does not drop its newcomer blindly: it
  asks the driver to ping its least-recently seen entry (:class:`PingOldest`) and keeps
  that entry if it answers, else puts the newcomer in its place.
- :class:`Lookup`: the spec's iterative peer routing as a state machine.  It tells the
  driver whom to query (at most ``alpha`` at once) and is told each answer or failure;
  it ends when the ``k`` closest peers seen have all answered, when no candidate is left,
  at ``max_queries``, or at the deadline the driver's clock passes.

Keys are compared as integers: ``kad_key(b) = int(sha256(b))``, distance is ``a ^ b``.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .._wire.protobuf import decode_fields, encode_bytes_field, encode_varint_field
from ..errors import InvalidMultiaddrError, InvalidPeerIdError, KadError, P2PError
from ..identity import PeerId
from ..multiaddr import Multiaddr
from ._base import check_positive

__all__ = [
    "KAD_PROTOCOL_ID",
    "AddResult",
    "ConnectionType",
    "KadLimits",
    "KadMessage",
    "KadPeer",
    "KadRecord",
    "Lookup",
    "MessageType",
    "PingOldest",
    "RoutingTable",
    "TableEntry",
    "bucket_index",
    "kad_key",
]

KAD_PROTOCOL_ID = "/ipfs/kad/1.0.0"
KEY_BITS = 256


class MessageType(enum.IntEnum):
    PUT_VALUE = 0
    GET_VALUE = 1
    ADD_PROVIDER = 2
    GET_PROVIDERS = 3
    FIND_NODE = 4
    PING = 5


class ConnectionType(enum.IntEnum):
    NOT_CONNECTED = 0
    CONNECTED = 1
    CAN_CONNECT = 2
    CANNOT_CONNECT = 3


@dataclass(frozen=True, slots=True)
class KadLimits:
    """Bounds on what a peer may send us (counts, bytes)."""

    max_message_bytes: int = 128 * 1024
    """Largest message accepted (the length prefix is checked before reading)."""
    max_peers_per_message: int = 64
    """``closerPeers`` plus ``providerPeers`` in one message; a k=20 answer holds 20."""
    max_addrs_per_peer: int = 64
    """Addresses of one ``Peer`` entry (those that do not parse count too)."""
    max_key_bytes: int = 256
    """The ``key`` of a message or record (a peer id is at most 44 bytes, a CID ~70)."""

    def __post_init__(self) -> None:
        for name in (
            "max_message_bytes",
            "max_peers_per_message",
            "max_addrs_per_peer",
            "max_key_bytes",
        ):
            check_positive(name, getattr(self, name))


@dataclass(frozen=True, slots=True)
class KadPeer:
    """A ``Message.Peer``: an id, its addresses, and what the sender knows of it.

    Addresses that do not parse (a transport we do not know) are left out on decode.
    """

    peer_id: PeerId
    addrs: tuple[Multiaddr, ...] = ()
    connection: ConnectionType = ConnectionType.NOT_CONNECTED

    def encode(self) -> bytes:
        parts = [encode_bytes_field(1, self.peer_id.to_bytes())]
        parts.extend(encode_bytes_field(2, a.to_bytes()) for a in self.addrs)
        if self.connection:
            parts.append(encode_varint_field(3, self.connection))
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes, limits: KadLimits) -> KadPeer:
        raw_id: bytes | None = None
        addrs: list[Multiaddr] = []
        seen_addrs = 0
        connection = ConnectionType.NOT_CONNECTED
        for number, value in decode_fields(data):
            if number == 1 and isinstance(value, bytes):
                raw_id = value
            elif number == 2 and isinstance(value, bytes):
                seen_addrs += 1
                if seen_addrs > limits.max_addrs_per_peer:
                    raise KadError(f"kad: a peer with more than {limits.max_addrs_per_peer} addrs")
                try:
                    addr = Multiaddr.from_bytes(value)
                except InvalidMultiaddrError:
                    continue
                if addr not in addrs:
                    addrs.append(addr)
            elif number == 3 and isinstance(value, int):
                if value > max(ConnectionType):
                    raise KadError(f"kad: unknown connection type {value}")
                connection = ConnectionType(value)
        if raw_id is None:
            raise KadError("kad: a peer entry without an id")
        try:
            peer_id = PeerId.from_bytes(raw_id)
        except InvalidPeerIdError as exc:
            raise KadError(f"kad: a peer entry with an invalid id: {exc}") from None
        return cls(peer_id, tuple(addrs), connection)


@dataclass(frozen=True, slots=True)
class KadRecord:
    """A ``Record`` (values are not stored by aiop2p; the codec reads and writes them)."""

    key: bytes
    value: bytes
    time_received: str = ""

    def encode(self) -> bytes:
        parts = [encode_bytes_field(1, self.key), encode_bytes_field(2, self.value)]
        if self.time_received:
            parts.append(encode_bytes_field(5, self.time_received))
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes, limits: KadLimits) -> KadRecord:
        key = value = b""
        received = ""
        for number, got in decode_fields(data):
            if not isinstance(got, bytes):
                continue
            if number == 1:
                key = got
            elif number == 2:
                value = got
            elif number == 5:
                try:
                    received = got.decode()
                except UnicodeDecodeError:
                    raise KadError("kad: a record's timeReceived is not UTF-8") from None
        if len(key) > limits.max_key_bytes:
            raise KadError(f"kad: a record key longer than {limits.max_key_bytes} bytes")
        return cls(key, value, received)


@dataclass(frozen=True, slots=True)
class KadMessage:
    """The spec's ``Message`` (``clusterLevelRaw`` is not used and not written)."""

    type: MessageType
    key: bytes = b""
    record: KadRecord | None = None
    closer_peers: tuple[KadPeer, ...] = ()
    provider_peers: tuple[KadPeer, ...] = ()

    def encode(self) -> bytes:
        parts = [encode_varint_field(1, self.type)]
        if self.key:
            parts.append(encode_bytes_field(2, self.key))
        if self.record is not None:
            parts.append(encode_bytes_field(3, self.record.encode()))
        parts.extend(encode_bytes_field(8, p.encode()) for p in self.closer_peers)
        parts.extend(encode_bytes_field(9, p.encode()) for p in self.provider_peers)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes, limits: KadLimits | None = None) -> KadMessage:
        """Parse ``data``; raise :class:`KadError` if malformed or beyond ``limits``."""
        limits = limits or KadLimits()
        if len(data) > limits.max_message_bytes:
            raise KadError(f"kad: a message above {limits.max_message_bytes} bytes")
        kind = 0
        key = b""
        record = None
        closer: list[KadPeer] = []
        providers: list[KadPeer] = []
        try:
            for number, value in decode_fields(data):
                if number == 1 and isinstance(value, int):
                    kind = value
                elif number == 2 and isinstance(value, bytes):
                    key = value
                elif number == 3 and isinstance(value, bytes):
                    record = KadRecord.decode(value, limits)
                elif number in (8, 9) and isinstance(value, bytes):
                    if len(closer) + len(providers) >= limits.max_peers_per_message:
                        raise KadError(
                            f"kad: more than {limits.max_peers_per_message} peers in a message"
                        )
                    (closer if number == 8 else providers).append(KadPeer.decode(value, limits))
        except KadError:
            raise
        except P2PError as exc:  # the protobuf layer's RemoteProtocolError
            raise KadError(f"kad: {exc}") from None
        if kind > max(MessageType):
            raise KadError(f"kad: unknown message type {kind}")
        if len(key) > limits.max_key_bytes:
            raise KadError(f"kad: a key longer than {limits.max_key_bytes} bytes")
        return cls(MessageType(kind), key, record, tuple(closer), tuple(providers))


# -- distance --------------------------------------------------------------------------------


def kad_key(data: bytes) -> int:
    """The point of ``data`` (a peer id's bytes, or any DHT key) in the 256-bit key space."""
    return int.from_bytes(hashlib.sha256(data).digest(), "big")


def bucket_index(local: int, other: int) -> int:
    """The k-bucket of ``other`` seen from ``local``: the length of their common prefix
    (0..255); 256 for the same key."""
    return KEY_BITS - (local ^ other).bit_length()


# -- routing table ---------------------------------------------------------------------------


@dataclass(slots=True)
class TableEntry:
    peer_id: PeerId
    key: int
    addrs: tuple[Multiaddr, ...] = ()


@dataclass(frozen=True, slots=True)
class PingOldest:
    """The bucket is full: ping ``oldest`` and report with :meth:`RoutingTable.ping_result`;
    if it does not answer, ``candidate`` takes its place."""

    oldest: PeerId
    candidate: PeerId


class AddResult(enum.Enum):
    ADDED = "added"
    UPDATED = "updated"
    """Already there: marked most recently seen, addresses replaced."""
    IGNORED = "ignored"
    """Our own id, or the bucket is full and already waits for a ping answer."""


@dataclass(slots=True)
class _Bucket:
    entries: list[TableEntry] = field(default_factory=list)
    """Least recently seen first."""
    pending: tuple[TableEntry, PeerId] | None = None
    """(candidate, the entry being pinged for it)."""


class RoutingTable:
    """k-buckets of the peers that run the DHT in server mode (at most 256·k entries).

    The table holds no clock: "least recently seen" is the order of :meth:`add` (a
    driver calls it whenever a peer proves alive: it answered a query, identify listed
    the protocol), and :meth:`add` on a full bucket returns :class:`PingOldest`.
    """

    def __init__(self, local: PeerId, *, k: int = 20, max_addrs_per_peer: int = 16) -> None:
        check_positive("k", k)
        self.local = local
        self.local_key = kad_key(local.to_bytes())
        self.k = k
        self.max_addrs_per_peer = max_addrs_per_peer
        self._buckets: dict[int, _Bucket] = {}
        self._index: dict[PeerId, int] = {}

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, peer: object) -> bool:
        return peer in self._index

    def get(self, peer: PeerId) -> TableEntry | None:
        index = self._index.get(peer)
        if index is None:
            return None
        return next(e for e in self._buckets[index].entries if e.peer_id == peer)

    def peers(self) -> list[PeerId]:
        return list(self._index)

    def bucket_sizes(self) -> dict[int, int]:
        """Non-empty buckets: common prefix length → entries."""
        return {i: len(b.entries) for i, b in self._buckets.items() if b.entries}

    def add(self, peer: PeerId, addrs: Iterable[Multiaddr] = ()) -> AddResult | PingOldest:
        """Record that ``peer`` (a DHT server) is alive, with its addresses."""
        if peer == self.local:
            return AddResult.IGNORED
        addrs = tuple(addrs)[: self.max_addrs_per_peer]
        index = self._index.get(peer)
        if index is not None:
            bucket = self._buckets[index]
            entry = next(e for e in bucket.entries if e.peer_id == peer)
            bucket.entries.remove(entry)
            bucket.entries.append(entry)
            if addrs:
                entry.addrs = addrs
            return AddResult.UPDATED
        key = kad_key(peer.to_bytes())
        index = bucket_index(self.local_key, key)
        bucket = self._buckets.setdefault(index, _Bucket())
        entry = TableEntry(peer, key, addrs)
        if len(bucket.entries) < self.k:
            bucket.entries.append(entry)
            self._index[peer] = index
            return AddResult.ADDED
        if bucket.pending is not None:
            if bucket.pending[0].peer_id == peer:
                bucket.pending = (entry, bucket.pending[1])
            return AddResult.IGNORED
        oldest = bucket.entries[0].peer_id
        bucket.pending = (entry, oldest)
        return PingOldest(oldest, peer)

    def ping_result(self, oldest: PeerId, alive: bool) -> None:
        """The answer to a :class:`PingOldest`: keep ``oldest`` (now most recently seen)
        or replace it with the candidate."""
        index = self._index.get(oldest)
        bucket = self._buckets.get(index) if index is not None else None
        if bucket is None or bucket.pending is None or bucket.pending[1] != oldest:
            return
        candidate = bucket.pending[0]
        bucket.pending = None
        if alive:
            self.add(oldest)
            return
        self.remove(oldest)
        if candidate.peer_id not in self._index and len(bucket.entries) < self.k:
            bucket.entries.append(candidate)
            self._index[candidate.peer_id] = index  # type: ignore[assignment]

    def remove(self, peer: PeerId) -> bool:
        index = self._index.pop(peer, None)
        if index is None:
            return False
        bucket = self._buckets[index]
        bucket.entries = [e for e in bucket.entries if e.peer_id != peer]
        if bucket.pending is not None and bucket.pending[1] == peer:
            # The entry being pinged went away: its candidate takes the free place.
            candidate = bucket.pending[0]
            bucket.pending = None
            if candidate.peer_id not in self._index:
                bucket.entries.append(candidate)
                self._index[candidate.peer_id] = index
        return True

    def closest(
        self, key: int, count: int | None = None, *, exclude: PeerId | None = None
    ) -> list[TableEntry]:
        """The ``count`` (default k) entries closest to ``key``, closest first."""
        entries = [e for b in self._buckets.values() for e in b.entries if e.peer_id != exclude]
        entries.sort(key=lambda e: e.key ^ key)
        return entries[: self.k if count is None else count]


# -- iterative lookup ------------------------------------------------------------------------


class _State(enum.Enum):
    WAITING = 0
    IN_FLIGHT = 1
    ANSWERED = 2
    FAILED = 3


@dataclass(slots=True)
class _Candidate:
    peer_id: PeerId
    distance: int
    addrs: list[Multiaddr]
    state: _State = _State.WAITING


class Lookup:
    """One iterative ``FIND_NODE`` lookup of ``target`` (a peer id's bytes, or any key).

    The driver calls :meth:`next_queries` with its clock, sends ``FIND_NODE(target)`` to
    each peer it returns, and reports each outcome with :meth:`on_response` or
    :meth:`on_failure`, until :attr:`done`.  The outcome is :meth:`closest` (the peers
    that answered, closest first) and, for a peer lookup, :attr:`found` (the target's
    addresses as some peer reported them).

    The target's addresses are merged from every peer that reported them, one from each
    in turn.  Without ``query_target`` the target itself is never queried (a dialer that
    looks a peer up to dial it must not dial it to ask).

    Bounded: candidates kept (the ``max_candidates`` closest), addresses per candidate,
    queries in flight (``alpha``), queries in all (``max_queries``) and time (``deadline``
    on the driver's clock).  A hostile peer can only waste queries that are bounded.
    """

    def __init__(
        self,
        target: bytes,
        seeds: Iterable[tuple[PeerId, Sequence[Multiaddr]]],
        *,
        local: PeerId,
        deadline: float,
        k: int = 20,
        alpha: int = 3,
        max_queries: int = 100,
        max_candidates: int | None = None,
        max_addrs_per_peer: int = 16,
        stop_when_found: bool = False,
        query_target: bool = True,
    ) -> None:
        for name, value in (("k", k), ("alpha", alpha), ("max_queries", max_queries)):
            check_positive(name, value)
        self.target = target
        self.target_key = kad_key(target)
        self.local = local
        self.deadline = deadline
        self.k = k
        self.alpha = alpha
        self.max_queries = max_queries
        self.max_candidates = max_candidates if max_candidates is not None else 8 * k
        self.max_addrs_per_peer = max_addrs_per_peer
        self.stop_when_found = stop_when_found
        self.query_target = query_target
        self.queries = 0
        """Queries handed out so far."""
        self.found: KadPeer | None = None
        self._timed_out = False
        self._candidates: dict[PeerId, _Candidate] = {}
        self._reports: dict[PeerId, tuple[Multiaddr, ...]] = {}
        """The target's addresses as each peer reported them (seeds: as ``local``)."""
        try:
            self._target_peer: PeerId | None = PeerId.from_bytes(target)
        except InvalidPeerIdError:
            self._target_peer = None
        for peer, addrs in seeds:
            self._learn(peer, addrs, local)

    # -- inputs --------------------------------------------------------------------------

    def next_queries(self, now: float) -> list[PeerId]:
        """The peers to query now (marked in flight); empty when none may start."""
        if now >= self.deadline:
            self._timed_out = True
        if self.done:
            return []
        in_flight = sum(1 for c in self._candidates.values() if c.state is _State.IN_FLIGHT)
        out: list[PeerId] = []
        for cand in self._ordered():
            if in_flight + len(out) >= self.alpha or self.queries >= self.max_queries:
                break
            if cand.state is _State.WAITING:
                if cand.peer_id == self._target_peer and not self.query_target:
                    continue
                cand.state = _State.IN_FLIGHT
                self.queries += 1
                out.append(cand.peer_id)
        return out

    def addrs_of(self, peer: PeerId) -> list[Multiaddr]:
        """What the lookup learned of ``peer``'s addresses (to dial it)."""
        cand = self._candidates.get(peer)
        return list(cand.addrs) if cand else []

    def on_response(self, peer: PeerId, closer_peers: Iterable[KadPeer]) -> None:
        cand = self._candidates.get(peer)
        if cand is None or cand.state is not _State.IN_FLIGHT:
            return  # not asked (or given up on): ignore
        cand.state = _State.ANSWERED
        for p in closer_peers:
            self._learn(p.peer_id, p.addrs, peer)

    def on_failure(self, peer: PeerId) -> None:
        cand = self._candidates.get(peer)
        if cand is not None and cand.state is _State.IN_FLIGHT:
            cand.state = _State.FAILED

    # -- outcome -------------------------------------------------------------------------

    @property
    def timed_out(self) -> bool:
        return self._timed_out

    @property
    def in_flight(self) -> int:
        return sum(1 for c in self._candidates.values() if c.state is _State.IN_FLIGHT)

    @property
    def done(self) -> bool:
        if self._timed_out or (self.stop_when_found and self.found is not None):
            return True
        live = [c for c in self._ordered() if c.state is not _State.FAILED][: self.k]
        if not self.query_target:
            live = [c for c in live if c.peer_id != self._target_peer]
        if all(c.state is _State.ANSWERED for c in live):
            return True  # the k closest answered (or nothing is left to ask)
        if self.queries >= self.max_queries:
            return not any(c.state is _State.IN_FLIGHT for c in live)
        return False

    def closest(self) -> list[KadPeer]:
        """The (at most k) closest peers that answered, closest first."""
        answered = [c for c in self._ordered() if c.state is _State.ANSWERED]
        return [KadPeer(c.peer_id, tuple(c.addrs)) for c in answered[: self.k]]

    def _merged_reports(self) -> tuple[Multiaddr, ...]:
        """The target's addresses, one from each reporter in turn, so that a peer
        reporting many bogus ones cannot crowd out what the others reported."""
        merged: list[Multiaddr] = []
        for rank in range(self.max_addrs_per_peer):
            for addrs in self._reports.values():
                if rank < len(addrs) and addrs[rank] not in merged:
                    merged.append(addrs[rank])
                    if len(merged) == self.max_addrs_per_peer:
                        return tuple(merged)
        return tuple(merged)

    # -- internals -----------------------------------------------------------------------

    def _ordered(self) -> list[_Candidate]:
        return sorted(self._candidates.values(), key=lambda c: c.distance)

    def _learn(self, peer: PeerId, addrs: Iterable[Multiaddr], reporter: PeerId) -> None:
        if peer == self.local:
            return
        if peer == self._target_peer:
            addrs = tuple(addrs)
            if addrs and reporter not in self._reports:
                self._reports[reporter] = addrs[: self.max_addrs_per_peer]
                self.found = KadPeer(peer, self._merged_reports())
        cand = self._candidates.get(peer)
        if cand is None:
            distance = kad_key(peer.to_bytes()) ^ self.target_key
            if len(self._candidates) >= self.max_candidates:
                farthest = max(
                    (c for c in self._candidates.values() if c.state is _State.WAITING),
                    key=lambda c: c.distance,
                    default=None,
                )
                if farthest is None or farthest.distance <= distance:
                    return
                del self._candidates[farthest.peer_id]
            cand = self._candidates[peer] = _Candidate(peer, distance, [])
        for addr in addrs:
            if len(cand.addrs) >= self.max_addrs_per_peer:
                break
            if addr not in cand.addrs:
                cand.addrs.append(addr)
