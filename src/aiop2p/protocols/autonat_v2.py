"""AutoNAT v2 (libp2p ``autonat-v2`` spec): messages and the pure decisions around them.

- The spec's messages: on ``/libp2p/autonat/2/dial-request`` a :class:`DialRequest`,
  :class:`DialResponse`, :class:`DialDataRequest` or :class:`DialDataResponse` inside
  the ``Message`` oneof (:func:`encode_message`, :func:`decode_message`); on
  ``/libp2p/autonat/2/dial-back`` a bare :class:`DialBack` and :class:`DialBackResponse`.
  Decoding is bounded by :class:`AutonatLimits`; anything malformed, beyond a bound or
  with a status we do not know (the spec says to discard those) is an
  :class:`~aiop2p.errors.AutonatError`.
- :func:`select_address`: the server's choice of the one address it will dial, and
  whether the amplification-attack protection (dial data) applies to it.
- :class:`RateLimiter`: requests per peer and in all, per sliding window (time is an
  argument).
- :class:`ReachabilityTally`: the client's per-address verdict from several servers'
  answers, reached at a confidence threshold.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from .._wire.protobuf import (
    FIXED64,
    LENGTH,
    VARINT,
    decode_fixed64_fields,
    encode_bytes_field,
    encode_fixed64_field,
    encode_varint_field,
)
from ..errors import AutonatError, InvalidMultiaddrError, P2PError
from ..multiaddr import Multiaddr
from ._base import check_positive

__all__ = [
    "DIAL_BACK_PROTOCOL_ID",
    "DIAL_REQUEST_PROTOCOL_ID",
    "MAX_DIAL_DATA_CHUNK_BYTES",
    "AutonatLimits",
    "AutonatMessage",
    "DialBack",
    "DialBackResponse",
    "DialDataRequest",
    "DialDataResponse",
    "DialRequest",
    "DialResponse",
    "DialStatus",
    "RateLimiter",
    "ReachabilityTally",
    "ResponseStatus",
    "Selection",
    "decode_message",
    "encode_message",
    "select_address",
]

DIAL_REQUEST_PROTOCOL_ID = "/libp2p/autonat/2/dial-request"
DIAL_BACK_PROTOCOL_ID = "/libp2p/autonat/2/dial-back"
MAX_DIAL_DATA_CHUNK_BYTES = 4096
"""The spec's bound on the ``data`` of one ``DialDataResponse``."""
_U64 = (1 << 64) - 1


class DialStatus(enum.IntEnum):
    UNUSED = 0
    E_DIAL_ERROR = 100
    E_DIAL_BACK_ERROR = 101
    OK = 200


class ResponseStatus(enum.IntEnum):
    E_INTERNAL_ERROR = 0
    E_REQUEST_REJECTED = 100
    E_DIAL_REFUSED = 101
    OK = 200


@dataclass(frozen=True, slots=True)
class AutonatLimits:
    """Bounds on what a peer may send us (bytes, counts)."""

    max_message_bytes: int = 8192
    """Largest message accepted (a full dial-data chunk is 4 KiB plus a few bytes)."""
    max_addrs: int = 16
    """Addresses in one ``DialRequest``."""
    max_addr_bytes: int = 256
    """One address, encoded."""

    def __post_init__(self) -> None:
        for name in ("max_message_bytes", "max_addrs", "max_addr_bytes"):
            check_positive(name, getattr(self, name))


@dataclass(frozen=True, slots=True)
class DialRequest:
    """Addresses to verify, highest priority first, and the nonce the dial-back carries.

    ``addrs`` are the encoded multiaddrs as sent: the answer's index counts every one,
    including those we cannot parse (:meth:`parsed` gives None for them).
    """

    addrs: tuple[bytes, ...]
    nonce: int

    @classmethod
    def of(cls, addrs: Sequence[Multiaddr], nonce: int) -> DialRequest:
        return cls(tuple(a.to_bytes() for a in addrs), nonce)

    def parsed(self) -> list[Multiaddr | None]:
        out: list[Multiaddr | None] = []
        for raw in self.addrs:
            try:
                out.append(Multiaddr.from_bytes(raw))
            except InvalidMultiaddrError:
                out.append(None)
        return out


@dataclass(frozen=True, slots=True)
class DialResponse:
    status: ResponseStatus
    addr_idx: int = 0
    dial_status: DialStatus = DialStatus.UNUSED


@dataclass(frozen=True, slots=True)
class DialDataRequest:
    """The server asks for ``num_bytes`` of dial data before dialling ``addr_idx``."""

    addr_idx: int
    num_bytes: int


@dataclass(frozen=True, slots=True)
class DialDataResponse:
    data: bytes


AutonatMessage = DialRequest | DialResponse | DialDataRequest | DialDataResponse


@dataclass(frozen=True, slots=True)
class DialBack:
    nonce: int

    def encode(self) -> bytes:
        return encode_fixed64_field(1, self.nonce)

    @classmethod
    def decode(cls, data: bytes) -> DialBack:
        nonce: int | None = None
        for number, wire, value in _fields(data, 64):
            if number == 1 and wire == FIXED64 and isinstance(value, int):
                nonce = value
        if nonce is None:
            raise AutonatError("autonat: a DialBack without a nonce")
        return cls(nonce)


@dataclass(frozen=True, slots=True)
class DialBackResponse:
    """The only status the spec defines is OK (0)."""

    def encode(self) -> bytes:
        return b""  # status OK is proto3's default, not written

    @classmethod
    def decode(cls, data: bytes) -> DialBackResponse:
        for number, wire, value in _fields(data, 64):
            if number == 1 and wire == VARINT and value != 0:
                raise AutonatError(f"autonat: unknown DialBackResponse status {value!r}")
        return cls()


def encode_message(msg: AutonatMessage) -> bytes:
    """The ``Message`` wrapping ``msg`` (without the length prefix)."""
    match msg:
        case DialRequest(addrs, nonce):
            body = b"".join(encode_bytes_field(1, a) for a in addrs)
            return encode_bytes_field(1, body + encode_fixed64_field(2, nonce))
        case DialResponse(status, addr_idx, dial_status):
            parts = []
            if status:
                parts.append(encode_varint_field(1, status))
            if addr_idx:
                parts.append(encode_varint_field(2, addr_idx))
            if dial_status:
                parts.append(encode_varint_field(3, dial_status))
            return encode_bytes_field(2, b"".join(parts))
        case DialDataRequest(addr_idx, num_bytes):
            body = encode_varint_field(1, addr_idx) + encode_varint_field(2, num_bytes)
            return encode_bytes_field(3, body)
        case DialDataResponse(data):
            return encode_bytes_field(4, encode_bytes_field(1, data) if data else b"")


def decode_message(data: bytes, limits: AutonatLimits | None = None) -> AutonatMessage:
    """Parse a ``Message``; raise :class:`AutonatError` if malformed or out of bounds."""
    limits = limits or AutonatLimits()
    found: tuple[int, bytes] | None = None
    for number, wire, value in _fields(data, limits.max_message_bytes):
        if wire != LENGTH or not isinstance(value, bytes) or not 1 <= number <= 4:
            continue  # unknown fields are skipped, as protobuf does
        if found is not None:
            raise AutonatError("autonat: a Message with more than one of its oneof set")
        found = (number, value)
    if found is None:
        raise AutonatError("autonat: a Message with none of its oneof set")
    number, body = found
    if number == 1:
        return _decode_request(body, limits)
    if number == 2:
        return _decode_response(body)
    if number == 3:
        ints = _ints(body)
        num_bytes = ints.get(2, 0)
        if num_bytes == 0:
            raise AutonatError("autonat: a DialDataRequest for 0 bytes")
        return DialDataRequest(_u32(ints.get(1, 0), "addrIdx"), num_bytes)
    chunk = b""
    for n, wire, value in _fields(body, limits.max_message_bytes):
        if n == 1 and wire == LENGTH and isinstance(value, bytes):
            chunk = value
    if len(chunk) > MAX_DIAL_DATA_CHUNK_BYTES:
        raise AutonatError(f"autonat: dial data of {len(chunk)} bytes in one message (max 4096)")
    return DialDataResponse(chunk)


def _decode_request(body: bytes, limits: AutonatLimits) -> DialRequest:
    addrs: list[bytes] = []
    nonce: int | None = None
    for number, wire, value in _fields(body, limits.max_message_bytes):
        if number == 1 and wire == LENGTH and isinstance(value, bytes):
            if len(addrs) >= limits.max_addrs:
                raise AutonatError(f"autonat: more than {limits.max_addrs} addresses")
            if len(value) > limits.max_addr_bytes:
                raise AutonatError(f"autonat: an address above {limits.max_addr_bytes} bytes")
            addrs.append(value)
        elif number == 2 and wire == FIXED64 and isinstance(value, int):
            nonce = value
    if not addrs:
        raise AutonatError("autonat: a DialRequest without addresses")
    if nonce is None:
        raise AutonatError("autonat: a DialRequest without a nonce")
    return DialRequest(tuple(addrs), nonce)


def _decode_response(body: bytes) -> DialResponse:
    ints = _ints(body)
    try:
        status = ResponseStatus(ints.get(1, 0))
        dial_status = DialStatus(ints.get(3, 0))
    except ValueError as exc:  # the spec: discard a status we do not understand
        raise AutonatError(f"autonat: unknown status in a DialResponse: {exc}") from None
    return DialResponse(status, _u32(ints.get(2, 0), "addrIdx"), dial_status)


def _fields(data: bytes, max_bytes: int) -> list[tuple[int, int, int | bytes]]:
    if len(data) > max_bytes:
        raise AutonatError(f"autonat: a message above {max_bytes} bytes")
    try:
        return list(decode_fixed64_fields(data))
    except P2PError as exc:  # the protobuf layer's RemoteProtocolError
        raise AutonatError(f"autonat: {exc}") from None


def _ints(body: bytes) -> dict[int, int]:
    out: dict[int, int] = {}
    for number, wire, value in _fields(body, len(body)):
        if wire == VARINT and isinstance(value, int):
            if value > _U64:
                raise AutonatError("autonat: a varint above 64 bits")
            out[number] = value
    return out


def _u32(value: int, what: str) -> int:
    if value >> 32:
        raise AutonatError(f"autonat: {what} above 32 bits")
    return value


# -- the server's choice -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selection:
    """The address the server will dial: its index in the request and whether the client
    must first pay dial data (its IP is not the one the request came from)."""

    index: int
    addr: Multiaddr
    needs_dial_data: bool


def select_address(
    request: DialRequest, observed_ip: str | None, can_dial: Callable[[Multiaddr], bool]
) -> Selection | None:
    """The first address of ``request`` that ``can_dial`` accepts (the spec: the server
    dials that one and no other), or None to refuse."""
    for index, addr in enumerate(request.parsed()):
        if addr is not None and can_dial(addr):
            ip = addr.ip_address
            return Selection(index, addr, ip is None or str(ip) != observed_ip)
    return None


# -- rate limits -----------------------------------------------------------------------------


class RateLimiter:
    """At most ``per_peer`` requests per peer and ``total`` in all per ``window_seconds``.

    Bounded: it remembers at most ``total`` request times (a peer's own times are a subset
    of them) and the peers among them.
    """

    def __init__(self, *, per_peer: int, total: int, window_seconds: float) -> None:
        check_positive("per_peer", per_peer)
        check_positive("total", total)
        self.per_peer = per_peer
        self.total = total
        self.window_seconds = window_seconds
        self._times: deque[tuple[float, Hashable]] = deque()
        self._counts: dict[Hashable, int] = {}

    def allow(self, peer: Hashable, now: float) -> bool:
        """Count a request of ``peer`` at ``now`` if the limits allow it."""
        while self._times and self._times[0][0] <= now - self.window_seconds:
            _, old = self._times.popleft()
            left = self._counts[old] - 1
            if left:
                self._counts[old] = left
            else:
                del self._counts[old]
        if len(self._times) >= self.total or self._counts.get(peer, 0) >= self.per_peer:
            return False
        self._times.append((now, peer))
        self._counts[peer] = self._counts.get(peer, 0) + 1
        return True


# -- the client's verdicts -------------------------------------------------------------------


class ReachabilityTally:
    """Per address, the latest outcome each server reported; a verdict once
    ``confidence`` servers agree and outnumber those that disagree.

    A server counts once per address (its newer answer replaces its older), so one
    hostile server cannot decide alone unless ``confidence`` is 1.  Bounded: at most
    ``max_addrs`` addresses (the oldest forgotten) and ``2 * confidence + 1`` servers per
    address (the oldest answer forgotten).
    """

    def __init__(self, *, confidence: int = 3, max_addrs: int = 32) -> None:
        check_positive("confidence", confidence)
        check_positive("max_addrs", max_addrs)
        self.confidence = confidence
        self.max_addrs = max_addrs
        self._votes: OrderedDict[Multiaddr, OrderedDict[Hashable, bool]] = OrderedDict()

    def record(self, addr: Multiaddr, server: Hashable, reachable: bool) -> bool | None:
        """Add ``server``'s answer for ``addr``; return the address's verdict."""
        votes = self._votes.get(addr)
        if votes is None:
            if len(self._votes) >= self.max_addrs:
                self._votes.popitem(last=False)
            votes = self._votes[addr] = OrderedDict()
        votes.pop(server, None)
        votes[server] = reachable
        while len(votes) > 2 * self.confidence + 1:
            votes.popitem(last=False)
        return self.verdict(addr)

    def verdict(self, addr: Multiaddr) -> bool | None:
        """True (reachable), False (not), or None (not enough agreeing answers yet)."""
        votes = self._votes.get(addr)
        if not votes:
            return None
        yes = sum(votes.values())
        no = len(votes) - yes
        if yes >= self.confidence and yes > no:
            return True
        if no >= self.confidence and no > yes:
            return False
        return None

    def servers(self, addr: Multiaddr) -> set[Hashable]:
        """The servers that answered for ``addr``."""
        return set(self._votes.get(addr, ()))

    def forget(self, addr: Multiaddr) -> None:
        self._votes.pop(addr, None)
