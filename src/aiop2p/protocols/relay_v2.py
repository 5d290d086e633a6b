"""Circuit relay v2 (libp2p ``relay/circuit-v2.md``): message codecs and sans-IO machines.

Two protocols.  **hop** (``/libp2p/circuit/relay/0.2.0/hop``) is opened by a client
towards the relay, either to RESERVE a slot (so others can reach it through the relay)
or to CONNECT to a peer holding a reservation.  **stop**
(``/libp2p/circuit/relay/0.2.0/stop``) is opened by the relay towards that peer to
announce the incoming circuit.  Every message is a protobuf behind an unsigned-varint
length prefix, at most :data:`MAX_MESSAGE_BYTES` long.  After a successful CONNECT
both streams *become* the relayed connection: the bytes following the STATUS OK message
belong to it and are handed out as ``leftover``.

One machine per stream and exchange:

=============  =========================  =============================================
machine        side                       events
=============  =========================  =============================================
HopClient      reserving / dialling peer  ReservationAccepted, ReservationRefused,
                                          CircuitEstablished, CircuitRefused
HopServer      relay                      ReserveRequested, ConnectRequested
StopClient     relay                      StopAccepted, StopRefused
StopServer     target peer                IncomingCircuit
=============  =========================  =============================================

Every machine may end with :class:`RelayFailed` instead; peer misbehaviour never raises
out of ``receive_data``.  The server machines answer a malformed request with STATUS
``MALFORMED_MESSAGE`` and a request of the wrong type with ``UNEXPECTED_MESSAGE`` before
failing (flush ``data_to_send()`` before closing the stream).

**js-libp2p duration bug.** js relays (``@libp2p/circuit-relay-v2`` 4.x) write
``Limit.duration`` in milliseconds although the spec says seconds.  :class:`Limit`
keeps the number as received (``duration``) and :attr:`Limit.duration_seconds`
interprets it: values above :data:`MAX_PLAUSIBLE_DURATION_SECONDS` (a day) are taken as
milliseconds.  The error is on the safe side: a spec relay announcing more than a day is
read as a shorter limit, never a longer one.  It is never fatal.  Where the relay's
identify agent is known, :meth:`Limit.duration_seconds_from` reads a js relay's value in
milliseconds whatever its size (a short js limit, e.g. 1500, would otherwise be seconds).

Reservation vouchers are signed envelopes (:mod:`.envelope`), domain
``libp2p-relay-rsvp``, payload type ``0x03 0x02`` (the multicodec ``0x0302`` written as
two big-endian bytes, as go-, js- and nim-libp2p do, not as a uvarint).  The spec calls
them advisory; :func:`verify_voucher` checks one.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from .._wire.framing import encode_uvarint_frame, take_uvarint_frame
from .._wire.protobuf import decode_fields, encode_bytes_field, encode_varint_field
from ..errors import (
    InvalidArgumentError,
    InvalidMultiaddrError,
    InvalidPeerIdError,
    InvalidSignatureError,
    InvalidStateError,
    LimitExceededError,
    P2PError,
    RemoteProtocolError,
)
from ..identity import KeyPair, PeerId
from ..multiaddr import Multiaddr
from . import envelope
from ._base import SansIOMachine, check_positive

__all__ = [
    "HOP_PROTOCOL_ID",
    "MAX_EARLY_DATA_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_PLAUSIBLE_DURATION_SECONDS",
    "RELAY_VOUCHER_DOMAIN",
    "RELAY_VOUCHER_PAYLOAD_TYPE",
    "STOP_PROTOCOL_ID",
    "CircuitEstablished",
    "CircuitRefused",
    "ConnectRequested",
    "HopClient",
    "HopMessage",
    "HopServer",
    "HopType",
    "IncomingCircuit",
    "Limit",
    "Peer",
    "RelayEvent",
    "RelayFailed",
    "Reservation",
    "ReservationAccepted",
    "ReservationRefused",
    "ReservationVoucher",
    "ReserveRequested",
    "Status",
    "StopAccepted",
    "StopClient",
    "StopMessage",
    "StopRefused",
    "StopServer",
    "StopType",
    "Voucher",
    "encode_frame",
    "is_js_libp2p_agent",
    "make_voucher",
    "verify_voucher",
]

HOP_PROTOCOL_ID: Final = "/libp2p/circuit/relay/0.2.0/hop"
STOP_PROTOCOL_ID: Final = "/libp2p/circuit/relay/0.2.0/stop"

MAX_MESSAGE_BYTES: Final = 4096
"""Largest hop/stop message accepted or sent, bytes, length prefix excluded (as rust-libp2p)."""
MAX_EARLY_DATA_BYTES: Final = 64 * 1024
"""Circuit bytes a server machine buffers between the request and its acceptance, bytes."""
MAX_PLAUSIBLE_DURATION_SECONDS: Final = 24 * 3600
"""A ``Limit.duration`` above this is read as milliseconds (the js-libp2p unit bug)."""
_UINT32_MAX: Final = 0xFFFFFFFF

RELAY_VOUCHER_DOMAIN: Final = "libp2p-relay-rsvp"
RELAY_VOUCHER_PAYLOAD_TYPE: Final = b"\x03\x02"


class HopType(enum.IntEnum):
    RESERVE = 0
    CONNECT = 1
    STATUS = 2


class StopType(enum.IntEnum):
    CONNECT = 0
    STATUS = 1


class Status(enum.IntEnum):
    """Status codes of hop and stop STATUS messages (``UNUSED`` is proto3's zero value)."""

    UNUSED = 0
    OK = 100
    RESERVATION_REFUSED = 200
    RESOURCE_LIMIT_EXCEEDED = 201
    PERMISSION_DENIED = 202
    CONNECTION_FAILED = 203
    NO_RESERVATION = 204
    MALFORMED_MESSAGE = 400
    UNEXPECTED_MESSAGE = 401


def _status(value: int) -> Status | int:
    """A :class:`Status` member when known; unknown codes stay plain ints (never fatal)."""
    try:
        return Status(value)
    except ValueError:
        return value


# --------------------------------------------------------------------------- codecs


def _want_bytes(number: int, value: int | bytes, what: str) -> bytes:
    if isinstance(value, int):
        raise RemoteProtocolError(f"{what}: field {number} has the wrong wire type")
    return value


def _want_int(number: int, value: int | bytes, what: str) -> int:
    if isinstance(value, bytes):
        raise RemoteProtocolError(f"{what}: field {number} has the wrong wire type")
    return value


def _peer_id(raw: bytes, what: str) -> PeerId:
    try:
        return PeerId.from_bytes(raw)
    except InvalidPeerIdError as exc:
        raise RemoteProtocolError(f"{what}: {exc}") from exc


def _parse_addrs(raws: Sequence[bytes]) -> tuple[Multiaddr, ...]:
    """Parse binary multiaddrs, skipping those we cannot parse (unknown protocols)."""
    out: list[Multiaddr] = []
    for raw in raws:
        try:
            out.append(Multiaddr.from_bytes(raw))
        except InvalidMultiaddrError:
            continue
    return tuple(out)


def _addr_bytes(addrs: Sequence[Multiaddr | bytes]) -> tuple[bytes, ...]:
    return tuple(a.to_bytes() if isinstance(a, Multiaddr) else bytes(a) for a in addrs)


@dataclass(frozen=True, slots=True)
class Peer:
    """``Peer{id=1, addrs=2}``; addresses stay binary (an unknown protocol is not an error)."""

    peer_id: PeerId
    addrs: tuple[bytes, ...] = ()

    def encode(self) -> bytes:
        return encode_bytes_field(1, self.peer_id.to_bytes()) + b"".join(
            encode_bytes_field(2, a) for a in self.addrs
        )

    @classmethod
    def decode(cls, data: bytes) -> Peer:
        raw_id: bytes | None = None
        addrs: list[bytes] = []
        for number, value in decode_fields(data):
            if number == 1:
                raw_id = _want_bytes(number, value, "Peer")
            elif number == 2:
                addrs.append(_want_bytes(number, value, "Peer"))
        if raw_id is None:
            raise RemoteProtocolError("Peer without an id")
        return cls(_peer_id(raw_id, "Peer.id"), tuple(addrs))


_JS_PLATFORMS: Final = frozenset({"node", "browser", "deno", "bun", "electron", "react-native"})


def is_js_libp2p_agent(agent_version: str | None) -> bool:
    """Whether an identify agent version is js-libp2p's default one.

    js-libp2p 1.x and later say ``libp2p/<version> <platform>/<version>`` (platform
    ``node``, ``browser``, ...), older ones ``js-libp2p/<version> ...``.
    """
    if not agent_version:
        return False
    parts = agent_version.split()
    if parts[0].startswith("js-libp2p/"):
        return True
    return (
        parts[0].startswith("libp2p/")
        and len(parts) > 1
        and parts[1].split("/", 1)[0] in _JS_PLATFORMS
    )


@dataclass(frozen=True, slots=True)
class Limit:
    """``Limit{duration=1 (uint32, seconds), data=2 (uint64, bytes)}``; 0 or absent = none.

    ``duration`` is the number as received; use :attr:`duration_seconds` to act on it
    (see the module docstring on the js-libp2p milliseconds bug).
    """

    duration: int | None = None
    data: int | None = None

    @property
    def duration_seconds(self) -> float | None:
        """Maximum circuit lifetime in seconds, None if unlimited (js ms values corrected)."""
        d = self.duration
        if not d:
            return None
        if d > MAX_PLAUSIBLE_DURATION_SECONDS:
            return d / 1000.0
        return float(d)

    def duration_seconds_from(self, relay_agent: str | None) -> float | None:
        """:attr:`duration_seconds`, but milliseconds whatever the size when the relay's
        identify agent is js-libp2p's (a short js limit is otherwise read as seconds)."""
        if self.duration and is_js_libp2p_agent(relay_agent):
            return self.duration / 1000.0
        return self.duration_seconds

    @property
    def data_bytes(self) -> int | None:
        """Maximum bytes relayed in each direction, None if unlimited."""
        return self.data or None

    def encode(self) -> bytes:
        out = b""
        if self.duration is not None:
            if not 0 <= self.duration <= _UINT32_MAX:
                raise InvalidArgumentError(f"Limit.duration {self.duration} is not a uint32")
            out += encode_varint_field(1, self.duration)
        if self.data is not None:
            out += encode_varint_field(2, self.data)
        return out

    @classmethod
    def decode(cls, data: bytes) -> Limit:
        duration = limit = None
        for number, value in decode_fields(data):
            if number == 1:
                duration = _want_int(number, value, "Limit")
            elif number == 2:
                limit = _want_int(number, value, "Limit")
        return cls(duration, limit)


@dataclass(frozen=True, slots=True)
class Reservation:
    """``Reservation{expire=1 (uint64 UNIX seconds), addrs=2, voucher=3 (envelope)}``."""

    expire: int | None = None
    addrs: tuple[bytes, ...] = ()
    voucher: bytes | None = None

    def encode(self) -> bytes:
        out = b"" if self.expire is None else encode_varint_field(1, self.expire)
        out += b"".join(encode_bytes_field(2, a) for a in self.addrs)
        if self.voucher is not None:
            out += encode_bytes_field(3, self.voucher)
        return out

    @classmethod
    def decode(cls, data: bytes) -> Reservation:
        expire: int | None = None
        addrs: list[bytes] = []
        voucher: bytes | None = None
        for number, value in decode_fields(data):
            if number == 1:
                expire = _want_int(number, value, "Reservation")
            elif number == 2:
                addrs.append(_want_bytes(number, value, "Reservation"))
            elif number == 3:
                voucher = _want_bytes(number, value, "Reservation")
        return cls(expire, tuple(addrs), voucher)


@dataclass(frozen=True, slots=True)
class HopMessage:
    """``HopMessage{type=1, peer=2, reservation=3, limit=4, status=5}``.

    Decoding rejects a missing or unknown ``type``; an unknown ``status`` code is kept
    as a plain int.
    """

    type: HopType
    peer: Peer | None = None
    reservation: Reservation | None = None
    limit: Limit | None = None
    status: Status | int | None = None

    def encode(self) -> bytes:
        out = encode_varint_field(1, self.type)
        if self.peer is not None:
            out += encode_bytes_field(2, self.peer.encode())
        if self.reservation is not None:
            out += encode_bytes_field(3, self.reservation.encode())
        if self.limit is not None:
            out += encode_bytes_field(4, self.limit.encode())
        if self.status is not None:
            out += encode_varint_field(5, self.status)
        return out

    @classmethod
    def decode(cls, data: bytes) -> HopMessage:
        """Parse; raises :class:`RemoteProtocolError` if malformed."""
        kind: int | None = None
        peer = reservation = limit = status = None
        for number, value in decode_fields(data):
            if number == 1:
                kind = _want_int(number, value, "HopMessage")
            elif number == 2:
                peer = Peer.decode(_want_bytes(number, value, "HopMessage"))
            elif number == 3:
                reservation = Reservation.decode(_want_bytes(number, value, "HopMessage"))
            elif number == 4:
                limit = Limit.decode(_want_bytes(number, value, "HopMessage"))
            elif number == 5:
                status = _status(_want_int(number, value, "HopMessage"))
        if kind is None:
            raise RemoteProtocolError("HopMessage without a type")
        try:
            hop_type = HopType(kind)
        except ValueError:
            raise RemoteProtocolError(f"HopMessage of unknown type {kind}") from None
        return cls(hop_type, peer, reservation, limit, status)


@dataclass(frozen=True, slots=True)
class StopMessage:
    """``StopMessage{type=1, peer=2, limit=3, status=4}`` (decoding as :class:`HopMessage`)."""

    type: StopType
    peer: Peer | None = None
    limit: Limit | None = None
    status: Status | int | None = None

    def encode(self) -> bytes:
        out = encode_varint_field(1, self.type)
        if self.peer is not None:
            out += encode_bytes_field(2, self.peer.encode())
        if self.limit is not None:
            out += encode_bytes_field(3, self.limit.encode())
        if self.status is not None:
            out += encode_varint_field(4, self.status)
        return out

    @classmethod
    def decode(cls, data: bytes) -> StopMessage:
        """Parse; raises :class:`RemoteProtocolError` if malformed."""
        kind: int | None = None
        peer = limit = status = None
        for number, value in decode_fields(data):
            if number == 1:
                kind = _want_int(number, value, "StopMessage")
            elif number == 2:
                peer = Peer.decode(_want_bytes(number, value, "StopMessage"))
            elif number == 3:
                limit = Limit.decode(_want_bytes(number, value, "StopMessage"))
            elif number == 4:
                status = _status(_want_int(number, value, "StopMessage"))
        if kind is None:
            raise RemoteProtocolError("StopMessage without a type")
        try:
            stop_type = StopType(kind)
        except ValueError:
            raise RemoteProtocolError(f"StopMessage of unknown type {kind}") from None
        return cls(stop_type, peer, limit, status)


_WHAT: Final = "relay message"  # names the message in the framing errors


def encode_frame(message: HopMessage | StopMessage, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """``uvarint(len) + message``; raises :class:`LocalProtocolError` above ``max_bytes``."""
    return encode_uvarint_frame(message.encode(), max_bytes, _WHAT)


# --------------------------------------------------------------------------- vouchers


@dataclass(frozen=True, slots=True)
class ReservationVoucher:
    """``Voucher{relay=1, peer=2, expiration=3 (UNIX seconds)}``: the relay vouches it will
    relay to ``peer`` until ``expiration``.  Encoded canonically (field order, no extras)."""

    relay: PeerId
    peer: PeerId
    expiration: int

    def encode(self) -> bytes:
        return (
            encode_bytes_field(1, self.relay.to_bytes())
            + encode_bytes_field(2, self.peer.to_bytes())
            + encode_varint_field(3, self.expiration)
        )

    @classmethod
    def decode(cls, data: bytes) -> ReservationVoucher:
        relay = peer = None
        expiration: int | None = None
        for number, value in decode_fields(data):
            if number == 1:
                relay = _peer_id(_want_bytes(number, value, "Voucher"), "Voucher.relay")
            elif number == 2:
                peer = _peer_id(_want_bytes(number, value, "Voucher"), "Voucher.peer")
            elif number == 3:
                expiration = _want_int(number, value, "Voucher")
        if relay is None or peer is None or expiration is None:
            raise RemoteProtocolError("Voucher lacks its relay, peer or expiration")
        return cls(relay, peer, expiration)


Voucher = ReservationVoucher


def make_voucher(relay_key: KeyPair, peer: PeerId, expiration: int) -> bytes:
    """A voucher for ``peer`` until ``expiration`` (UNIX seconds), sealed by the relay."""
    payload = ReservationVoucher(relay_key.peer_id, peer, int(expiration)).encode()
    return envelope.seal(
        relay_key, RELAY_VOUCHER_DOMAIN, RELAY_VOUCHER_PAYLOAD_TYPE, payload
    ).encode()


def verify_voucher(
    data: bytes, relay: PeerId, peer: PeerId, *, now: float | None = None
) -> ReservationVoucher:
    """Check a voucher received from ``relay`` for ``peer``; return it.

    Raises :class:`InvalidSignatureError` if the signature does not verify or was not made
    by ``relay``'s key, :class:`RemoteProtocolError` if it is malformed, names other
    peers, or (when ``now`` is given) has expired.
    """
    env = envelope.open(data, RELAY_VOUCHER_DOMAIN, RELAY_VOUCHER_PAYLOAD_TYPE)
    signer = env.peer_id
    if signer != relay:
        raise InvalidSignatureError(f"voucher signed by {signer}, not by the relay {relay}")
    voucher = ReservationVoucher.decode(env.payload)
    if voucher.relay != relay:
        raise RemoteProtocolError(f"voucher names relay {voucher.relay}, not {relay}")
    if voucher.peer != peer:
        raise RemoteProtocolError(f"voucher is for peer {voucher.peer}, not {peer}")
    if now is not None and voucher.expiration < now:
        raise RemoteProtocolError(f"voucher expired at {voucher.expiration}")
    return voucher


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class ReservationAccepted:
    """The relay holds a slot for us until ``expire`` (UNIX seconds).

    ``addrs`` are the relay's public addresses (with its ``/p2p`` id, without
    ``/p2p-circuit``); those that do not parse are skipped.  ``voucher`` is the raw
    envelope, unchecked (see :func:`verify_voucher`).
    """

    expire: int
    addrs: tuple[Multiaddr, ...]
    limit: Limit | None
    voucher: bytes | None

    def seconds_left(self, now: float) -> float:
        """Seconds until the reservation expires (negative once it has); ``now`` is UNIX
        wall-clock time (``time.time()``), not the event loop's monotonic clock."""
        return self.expire - now


@dataclass(frozen=True, slots=True)
class ReservationRefused:
    status: Status | int


@dataclass(frozen=True, slots=True)
class CircuitEstablished:
    """The hop stream is now the relayed connection; ``leftover`` bytes belong to it."""

    limit: Limit | None
    leftover: bytes


@dataclass(frozen=True, slots=True)
class CircuitRefused:
    status: Status | int


@dataclass(frozen=True, slots=True)
class ReserveRequested:
    """``peer`` (the stream's remote) asks for a reservation: accept or refuse it."""

    peer: PeerId


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    """``source`` asks to be connected to ``target``: open a stop stream, then answer."""

    source: PeerId
    target: PeerId
    target_addrs: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StopAccepted:
    """The target accepted; the stop stream is now the relayed connection."""

    leftover: bytes


@dataclass(frozen=True, slots=True)
class StopRefused:
    status: Status | int


@dataclass(frozen=True, slots=True)
class IncomingCircuit:
    """The relay announces a circuit from ``source_peer``: :meth:`StopServer.accept` or refuse."""

    source_peer: PeerId
    limit: Limit | None


@dataclass(frozen=True, slots=True)
class RelayFailed:
    """Terminal: the exchange failed (malformed or unexpected input, early EOF)."""

    error: P2PError


RelayEvent = (
    ReservationAccepted
    | ReservationRefused
    | CircuitEstablished
    | CircuitRefused
    | ReserveRequested
    | ConnectRequested
    | StopAccepted
    | StopRefused
    | IncomingCircuit
    | RelayFailed
)


# --------------------------------------------------------------------------- machines


class _Machine(SansIOMachine[RelayEvent]):
    """Buffering, framing and the terminal states shared by the four machines."""

    __slots__ = ("max_message_bytes",)

    _HANDED_OVER = "the stream is a relayed connection now"

    def __init__(self, max_message_bytes: int) -> None:
        check_positive("max_message_bytes", max_message_bytes)
        super().__init__()
        self.max_message_bytes = max_message_bytes
        """Largest message accepted or sent, bytes (length prefix excluded)."""

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; never raises for peer misbehaviour.

        Raises :class:`InvalidStateError` once the stream carries a relayed connection
        (its bytes are not for this machine any more).
        """
        self._feed(data)

    def receive_eof(self) -> None:
        """The peer closed its side (see each machine for the consequence)."""
        if not self._done:
            self._on_eof()

    def _send(self, message: HopMessage | StopMessage) -> None:
        self._out += encode_frame(message, self.max_message_bytes)

    def _take_frame(self) -> bytes | None:
        return take_uvarint_frame(self._buffer, self.max_message_bytes, _WHAT)

    def _fail(self, error: P2PError) -> None:
        self._finish(RelayFailed(error))

    def _on_eof(self) -> None:
        self._fail(RemoteProtocolError("stream closed before the exchange completed"))


class _Client(_Machine):
    """Sends one request, then waits for one STATUS answer."""

    __slots__ = ("_request",)

    def __init__(self, max_message_bytes: int) -> None:
        super().__init__(max_message_bytes)
        self._request: int | None = None

    def _start(self, request: int, message: HopMessage | StopMessage) -> None:
        if self._done:
            raise InvalidStateError("the exchange is over")
        if self._request is not None:
            raise InvalidStateError("this machine already sent its request; use a new stream")
        self._send(message)
        self._request = request

    def _process(self) -> None:
        if self._request is None:
            raise RemoteProtocolError("the peer sent data before our request")
        frame = self._take_frame()
        if frame is not None:
            self._answer(frame)

    def _answer(self, frame: bytes) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class HopClient(_Client):
    """A client's side of a hop stream: call :meth:`reserve` or :meth:`connect` once."""

    __slots__ = ()

    def __init__(self, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        super().__init__(max_message_bytes)

    def reserve(self) -> None:
        """Ask for a reservation (→ :class:`ReservationAccepted` / :class:`ReservationRefused`)."""
        self._start(HopType.RESERVE, HopMessage(HopType.RESERVE))

    def connect(self, peer: PeerId, addrs: Sequence[Multiaddr | bytes] = ()) -> None:
        """Ask for a circuit to ``peer`` (→ :class:`CircuitEstablished` / :class:`CircuitRefused`).

        ``addrs`` are only for active relays, a deprecated feature; leave them empty.
        """
        self._start(HopType.CONNECT, HopMessage(HopType.CONNECT, Peer(peer, _addr_bytes(addrs))))

    def _answer(self, frame: bytes) -> None:
        msg = HopMessage.decode(frame)
        if msg.type != HopType.STATUS:
            raise RemoteProtocolError(f"relay answered with a hop {msg.type.name}, not STATUS")
        status = msg.status
        if status is None:
            raise RemoteProtocolError("hop STATUS without a status code")
        if self._request == HopType.RESERVE:
            if status != Status.OK:
                self._finish(ReservationRefused(status))
                return
            rsvp = msg.reservation
            if rsvp is None or rsvp.expire is None:
                raise RemoteProtocolError("reservation accepted without its expiry")
            self._finish(
                ReservationAccepted(rsvp.expire, _parse_addrs(rsvp.addrs), msg.limit, rsvp.voucher)
            )
        elif status != Status.OK:
            self._finish(CircuitRefused(status))
        else:
            self._finish(CircuitEstablished(msg.limit, bytes(self._buffer)), handed_over=True)


class StopClient(_Client):
    """The relay's side of a stop stream: :meth:`connect` announces the source peer."""

    __slots__ = ()

    def __init__(self, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        super().__init__(max_message_bytes)

    def connect(
        self,
        source: PeerId,
        limit: Limit | None = None,
        source_addrs: Sequence[Multiaddr | bytes] = (),
    ) -> None:
        """Announce a circuit from ``source`` (→ :class:`StopAccepted` / :class:`StopRefused`)."""
        message = StopMessage(StopType.CONNECT, Peer(source, _addr_bytes(source_addrs)), limit)
        self._start(StopType.CONNECT, message)

    def _answer(self, frame: bytes) -> None:
        msg = StopMessage.decode(frame)
        if msg.type != StopType.STATUS:
            raise RemoteProtocolError(f"target answered with a stop {msg.type.name}, not STATUS")
        status = msg.status
        if status is None:
            raise RemoteProtocolError("stop STATUS without a status code")
        if status != Status.OK:
            self._finish(StopRefused(status))
        else:
            self._finish(StopAccepted(bytes(self._buffer)), handed_over=True)


_AWAIT: Final = 0
_PENDING_RESERVE: Final = 1
_PENDING_CONNECT: Final = 2


class _Server(_Machine):
    """Reads one request, lets the driver decide, writes one STATUS answer."""

    __slots__ = ("_state", "max_early_data_bytes")

    def __init__(self, max_message_bytes: int, max_early_data_bytes: int) -> None:
        super().__init__(max_message_bytes)
        check_positive("max_early_data_bytes", max_early_data_bytes)
        self.max_early_data_bytes = max_early_data_bytes
        """Circuit bytes buffered while a CONNECT awaits the driver's decision, bytes."""
        self._state = _AWAIT

    @property
    def pending(self) -> bool:
        """True while a request awaits the driver's accept or refuse."""
        return not self._done and self._state != _AWAIT

    def _status_message(
        self, status: int, limit: Limit | None = None
    ) -> HopMessage | StopMessage:  # pragma: no cover - overridden
        raise NotImplementedError

    def _reject(self, status: Status, error: P2PError) -> None:
        self._send(self._status_message(status))
        super()._fail(error)

    def _fail(self, error: P2PError) -> None:
        if self._state == _AWAIT and not self._done:
            self._reject(Status.MALFORMED_MESSAGE, error)
        else:
            super()._fail(error)

    def _on_eof(self) -> None:
        if self._state == _AWAIT:  # nothing to answer: fail without writing
            _Machine._fail(self, RemoteProtocolError("stream closed before the request"))
        # EOF after the request: the answer can still be written; the driver decides.

    def _process(self) -> None:
        if self._state == _AWAIT:
            frame = self._take_frame()
            if frame is not None:
                self._request(frame)
        if self._state == _PENDING_RESERVE:
            self._buffer.clear()  # nothing may follow a RESERVE; ignore it
        elif self._state == _PENDING_CONNECT and len(self._buffer) > self.max_early_data_bytes:
            raise LimitExceededError(
                f"more than {self.max_early_data_bytes} circuit bytes before the circuit exists"
            )

    def _request(self, frame: bytes) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _check_pending(self, state: int, what: str) -> None:
        if self._done:
            raise InvalidStateError("the exchange is over")
        if self._state != state:
            raise InvalidStateError(f"no pending request to {what}")

    def refuse(self, status: Status | int) -> None:
        """Answer the pending request with a non-OK ``status``; the stream may then close."""
        if status == Status.OK:
            raise InvalidArgumentError("refuse() needs a status other than OK")
        if self._done or self._state == _AWAIT:
            raise InvalidStateError("no pending request to refuse")
        self._send(self._status_message(status))
        self._finish()


class HopServer(_Server):
    """The relay's side of a hop stream opened by ``remote_peer``.

    Emits :class:`ReserveRequested` (answer with :meth:`accept_reservation` or
    :meth:`refuse`) or :class:`ConnectRequested` (answer with :meth:`accept_connect` or
    :meth:`refuse`).  The machine is ``done`` after the answer (no event).
    """

    __slots__ = ("remote_peer",)

    def __init__(
        self,
        remote_peer: PeerId,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_early_data_bytes: int = MAX_EARLY_DATA_BYTES,
    ) -> None:
        super().__init__(max_message_bytes, max_early_data_bytes)
        self.remote_peer = remote_peer

    def _status_message(self, status: int, limit: Limit | None = None) -> HopMessage:
        return HopMessage(HopType.STATUS, limit=limit, status=status)

    def _request(self, frame: bytes) -> None:
        try:
            msg = HopMessage.decode(frame)
        except RemoteProtocolError as exc:
            self._reject(Status.MALFORMED_MESSAGE, exc)
            return
        if msg.type == HopType.RESERVE:
            self._state = _PENDING_RESERVE
            self._events.append(ReserveRequested(self.remote_peer))
        elif msg.type == HopType.CONNECT:
            if msg.peer is None:
                self._reject(Status.MALFORMED_MESSAGE, RemoteProtocolError("CONNECT without peer"))
                return
            self._state = _PENDING_CONNECT
            peer = msg.peer
            self._events.append(ConnectRequested(self.remote_peer, peer.peer_id, peer.addrs))
        else:
            error = RemoteProtocolError(f"unexpected hop {msg.type.name} request")
            self._reject(Status.UNEXPECTED_MESSAGE, error)

    def accept_reservation(
        self,
        expire: int,
        addrs: Sequence[Multiaddr | bytes],
        limit: Limit | None = None,
        voucher: bytes | None = None,
    ) -> None:
        """Grant the pending RESERVE until ``expire`` (UNIX seconds).

        ``addrs``: the relay's public addresses including its ``/p2p/<relay id>``;
        ``voucher``: from :func:`make_voucher`.
        """
        self._check_pending(_PENDING_RESERVE, "accept a reservation for")
        rsvp = Reservation(int(expire), _addr_bytes(addrs), voucher)
        self._send(HopMessage(HopType.STATUS, reservation=rsvp, limit=limit, status=Status.OK))
        self._finish()

    def accept_connect(self, limit: Limit | None = None) -> bytes:
        """Confirm the circuit (once the stop stream was accepted); return the circuit
        bytes already received from the source, to forward to the target first."""
        self._check_pending(_PENDING_CONNECT, "accept a circuit for")
        self._send(self._status_message(Status.OK, limit))
        leftover = bytes(self._buffer)
        self._finish(handed_over=True)
        return leftover


class StopServer(_Server):
    """The target's side of a stop stream opened by a relay.

    Emits :class:`IncomingCircuit`; answer with :meth:`accept` (the stream becomes the
    relayed connection) or :meth:`refuse`.
    """

    __slots__ = ()

    def __init__(
        self,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_early_data_bytes: int = MAX_EARLY_DATA_BYTES,
    ) -> None:
        super().__init__(max_message_bytes, max_early_data_bytes)

    def _status_message(self, status: int, limit: Limit | None = None) -> StopMessage:
        return StopMessage(StopType.STATUS, limit=limit, status=status)

    def _request(self, frame: bytes) -> None:
        try:
            msg = StopMessage.decode(frame)
        except RemoteProtocolError as exc:
            self._reject(Status.MALFORMED_MESSAGE, exc)
            return
        if msg.type != StopType.CONNECT:
            error = RemoteProtocolError(f"unexpected stop {msg.type.name} request")
            self._reject(Status.UNEXPECTED_MESSAGE, error)
            return
        if msg.peer is None:
            self._reject(Status.MALFORMED_MESSAGE, RemoteProtocolError("CONNECT without peer"))
            return
        self._state = _PENDING_CONNECT
        self._events.append(IncomingCircuit(msg.peer.peer_id, msg.limit))

    def accept(self) -> bytes:
        """Accept the circuit; return bytes already received that belong to it."""
        self._check_pending(_PENDING_CONNECT, "accept")
        self._send(self._status_message(Status.OK))
        leftover = bytes(self._buffer)
        self._finish(handed_over=True)
        return leftover
