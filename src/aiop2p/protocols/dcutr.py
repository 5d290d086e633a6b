"""Direct Connection Upgrade through Relay (libp2p ``relay/DCUtR.md``), sans-IO.

Peers A and B share a relayed connection that A dialled (A is its outbound side).  To
hole-punch a direct connection, **B, the inbound side, opens** a ``/libp2p/dcutr``
stream and runs :class:`DcutrInitiator`; A answers with :class:`DcutrResponder`::

    B (initiator)                              A (responder)
    CONNECT(B's observed addrs)  ---------->   (RTT timer starts at B)
                                 <----------   CONNECT(A's observed addrs)
    RTT = now - start; SYNC      ---------->
    after RTT/2: DialNow(A's addrs)            on SYNC: DialNow(B's addrs)

Both dial at about the same moment, so that for TCP the SYNs cross (simultaneous
open).  On the resulting connection A acts as the client and B as the server whatever
the TCP roles turn out to be: :attr:`DialNow.upgrade_role` says which.  If every
attempt fails, B starts over on a new stream (:data:`MAX_ATTEMPTS` in total): each
attempt re-measures the RTT.

Messages: protobuf ``HolePunch{type=1 (CONNECT=100, SYNC=300), ObsAddrs=2 (repeated
binary multiaddrs)}``, proto2 with ``type`` required, each behind an unsigned-varint
length prefix, at most :data:`MAX_MESSAGE_BYTES` long.  Time enters as ``now``
arguments (any monotonic clock, in seconds).  Peer misbehaviour never raises: it ends
the machine with :class:`DcutrFailed`.  Addresses that do not parse are skipped; a
CONNECT without any usable address fails the attempt (there would be nothing to dial).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from .._wire.framing import encode_uvarint_frame, take_uvarint_frame
from .._wire.protobuf import decode_fields, encode_bytes_field, encode_varint_field
from ..errors import (
    InvalidMultiaddrError,
    InvalidStateError,
    P2PError,
    RemoteProtocolError,
)
from ..multiaddr import Multiaddr
from ._base import SansIOMachine, check_positive
from .role import Role

__all__ = [
    "DCUTR_PROTOCOL_ID",
    "MAX_ATTEMPTS",
    "MAX_MESSAGE_BYTES",
    "DcutrEvent",
    "DcutrFailed",
    "DcutrInitiator",
    "DcutrResponder",
    "DialNow",
    "DialScheduled",
    "HolePunch",
    "HolePunchType",
    "encode_frame",
]

DCUTR_PROTOCOL_ID: Final = "/libp2p/dcutr"
MAX_MESSAGE_BYTES: Final = 4096
"""Largest HolePunch message accepted or sent, bytes, length prefix excluded (spec: 4 KiB)."""
MAX_ATTEMPTS: Final = 3
"""Hole-punch attempts by the initiator before giving up (the spec's SHOULD: 1 + 2 retries)."""


class HolePunchType(enum.IntEnum):
    CONNECT = 100
    SYNC = 300


@dataclass(frozen=True, slots=True)
class HolePunch:
    """One DCUtR message; ``obs_addrs`` stay binary (parsed by the machines)."""

    type: HolePunchType
    obs_addrs: tuple[bytes, ...] = ()

    def encode(self) -> bytes:
        return encode_varint_field(1, self.type) + b"".join(
            encode_bytes_field(2, a) for a in self.obs_addrs
        )

    @classmethod
    def decode(cls, data: bytes) -> HolePunch:
        """Parse; raises :class:`RemoteProtocolError` if malformed or of unknown type."""
        kind: int | None = None
        addrs: list[bytes] = []
        for number, value in decode_fields(data):
            if number == 1:
                if isinstance(value, bytes):
                    raise RemoteProtocolError("HolePunch.type has the wrong wire type")
                kind = value
            elif number == 2:
                if isinstance(value, int):
                    raise RemoteProtocolError("HolePunch.ObsAddrs has the wrong wire type")
                addrs.append(value)
        if kind is None:
            raise RemoteProtocolError("HolePunch without its (required) type")
        try:
            punch_type = HolePunchType(kind)
        except ValueError:
            raise RemoteProtocolError(f"HolePunch of unknown type {kind}") from None
        return cls(punch_type, tuple(addrs))


_WHAT: Final = "HolePunch message"  # names the message in the framing errors


def encode_frame(message: HolePunch, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """``uvarint(len) + message``; raises :class:`LocalProtocolError` above ``max_bytes``."""
    return encode_uvarint_frame(message.encode(), max_bytes, _WHAT)


def _addrs_to_dial(raws: tuple[bytes, ...]) -> tuple[Multiaddr, ...]:
    out: list[Multiaddr] = []
    for raw in raws:
        try:
            out.append(Multiaddr.from_bytes(raw))
        except InvalidMultiaddrError:
            continue
    if not out:
        raise RemoteProtocolError("HolePunch CONNECT carries no usable address")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class DialScheduled:
    """Initiator: SYNC is queued; call :meth:`DcutrInitiator.handle_timer` at ``at``."""

    at: float
    rtt: float
    addrs: tuple[Multiaddr, ...]


@dataclass(frozen=True, slots=True)
class DialNow:
    """Dial every address of ``addrs`` now (in parallel), then the machine is done.

    ``upgrade_role``: the role to run the security handshake (and multistream) in on the
    new connection, whichever side TCP says dialled: INITIATOR for A (the DCUtR
    responder), RESPONDER for B (the DCUtR initiator).
    """

    addrs: tuple[Multiaddr, ...]
    upgrade_role: Role


@dataclass(frozen=True, slots=True)
class DcutrFailed:
    """Terminal: this attempt failed (malformed or unexpected message, early EOF)."""

    error: P2PError


DcutrEvent = DialScheduled | DialNow | DcutrFailed


def _addr_bytes(addrs: Sequence[Multiaddr | bytes]) -> tuple[bytes, ...]:
    return tuple(a.to_bytes() if isinstance(a, Multiaddr) else bytes(a) for a in addrs)


class _Machine(SansIOMachine[DcutrEvent]):
    """Framing, our addresses and the terminal states of both roles.

    ``receive_data`` is each role's own (the initiator's takes the arrival time), so the
    base's ``_feed``/``_process`` are not used.
    """

    __slots__ = ("_obs_addrs", "max_message_bytes")

    def __init__(self, obs_addrs: Sequence[Multiaddr | bytes], max_message_bytes: int) -> None:
        check_positive("max_message_bytes", max_message_bytes)
        self.max_message_bytes = max_message_bytes
        """Largest message accepted or sent, bytes (length prefix excluded)."""
        self._obs_addrs = _addr_bytes(obs_addrs)
        # Fail now, not mid-protocol, if our own CONNECT cannot be sent.
        encode_frame(HolePunch(HolePunchType.CONNECT, self._obs_addrs), max_message_bytes)
        super().__init__()

    def receive_eof(self) -> None:
        """The peer closed its side; fails the attempt unless it is already decided."""
        if not self._done and not self._eof_ok():
            self._fail(RemoteProtocolError("DCUtR stream closed before the exchange completed"))

    def _eof_ok(self) -> bool:
        return False

    def _send(self, kind: HolePunchType, addrs: tuple[bytes, ...] = ()) -> None:
        self._out += encode_frame(HolePunch(kind, addrs), self.max_message_bytes)

    def _next(self, data: bytes) -> HolePunch | None:
        self._buffer += data
        frame = take_uvarint_frame(self._buffer, self.max_message_bytes, _WHAT)
        return None if frame is None else HolePunch.decode(frame)

    def _fail(self, error: P2PError) -> None:
        self._finish(DcutrFailed(error))


_IDLE: Final = 0
_AWAIT_CONNECT: Final = 1
_AWAIT_TIMER: Final = 2  # initiator: SYNC sent, waiting for RTT/2
_AWAIT_SYNC: Final = 3  # responder: CONNECT answered, waiting for SYNC


class DcutrInitiator(_Machine):
    """B's side (the inbound side of the relayed connection): opens the stream.

    Call :meth:`start` and write its bytes at once (the RTT clock starts then); feed the
    answer with ``receive_data(data, now)``; on :class:`DialScheduled` arm a timer and
    call :meth:`handle_timer` when it fires, which emits :class:`DialNow`.
    """

    __slots__ = ("_deadline", "_dial_addrs", "_rtt", "_sent_at", "_state")

    def __init__(
        self,
        obs_addrs: Sequence[Multiaddr | bytes],
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        """``obs_addrs``: our observed (and predicted) public addresses, from identify."""
        super().__init__(obs_addrs, max_message_bytes)
        self._state = _IDLE
        self._sent_at = 0.0
        self._rtt: float | None = None
        self._deadline: float | None = None
        self._dial_addrs: tuple[Multiaddr, ...] = ()

    @property
    def rtt(self) -> float | None:
        """The relayed round-trip time measured by this attempt, seconds."""
        return self._rtt

    @property
    def deadline(self) -> float | None:
        """When :meth:`handle_timer` is due (None while no dial is scheduled)."""
        return self._deadline if self._state == _AWAIT_TIMER and not self._done else None

    def start(self, now: float) -> None:
        """Queue our CONNECT; ``now`` is when it is written."""
        if self._state != _IDLE or self._done:
            raise InvalidStateError("this DCUtR attempt has already started")
        self._send(HolePunchType.CONNECT, self._obs_addrs)
        self._sent_at = now
        self._state = _AWAIT_CONNECT

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the peer, ``now`` being their arrival time; never raises for
        peer misbehaviour.  Bytes after the peer's CONNECT are ignored."""
        if self._done or self._state == _AWAIT_TIMER or not data:
            return
        try:
            if self._state == _IDLE:
                raise RemoteProtocolError("the peer sent DCUtR data before our CONNECT")
            message = self._next(data)
            if message is None:
                return
            if message.type != HolePunchType.CONNECT:
                raise RemoteProtocolError(f"expected a HolePunch CONNECT, got {message.type.name}")
            addrs = _addrs_to_dial(message.obs_addrs)
        except P2PError as exc:
            self._fail(exc)
            return
        rtt = max(0.0, now - self._sent_at)
        self._rtt = rtt
        self._dial_addrs = addrs
        self._deadline = now + rtt / 2
        self._state = _AWAIT_TIMER
        self._buffer.clear()
        self._send(HolePunchType.SYNC)
        self._events.append(DialScheduled(self._deadline, rtt, addrs))

    def _eof_ok(self) -> bool:
        return self._state == _AWAIT_TIMER  # the peer may close once it has our SYNC

    def handle_timer(self, now: float) -> None:
        """Emit :class:`DialNow` if the scheduled dial time has come (else nothing)."""
        if self._done or self._state != _AWAIT_TIMER:
            return
        assert self._deadline is not None
        if now >= self._deadline:
            self._finish(DialNow(self._dial_addrs, upgrade_role=Role.RESPONDER))


class DcutrResponder(_Machine):
    """A's side (the outbound side of the relayed connection): answers the stream.

    Answers the peer's CONNECT with ours at once, then emits :class:`DialNow` on SYNC.
    """

    __slots__ = ("_dial_addrs", "_state")

    def __init__(
        self,
        obs_addrs: Sequence[Multiaddr | bytes],
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        """``obs_addrs``: our observed (and predicted) public addresses, from identify."""
        super().__init__(obs_addrs, max_message_bytes)
        self._state = _AWAIT_CONNECT
        self._dial_addrs: tuple[Multiaddr, ...] = ()

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; never raises for peer misbehaviour."""
        if self._done or not data:
            return
        try:
            message = self._next(data)
            while message is not None and not self._done:
                self._handle(message)
                message = self._next(b"") if not self._done else None
        except P2PError as exc:
            self._fail(exc)

    def _handle(self, message: HolePunch) -> None:
        if self._state == _AWAIT_CONNECT:
            if message.type != HolePunchType.CONNECT:
                raise RemoteProtocolError(f"expected a HolePunch CONNECT, got {message.type.name}")
            self._dial_addrs = _addrs_to_dial(message.obs_addrs)
            self._send(HolePunchType.CONNECT, self._obs_addrs)
            self._state = _AWAIT_SYNC
        else:
            if message.type != HolePunchType.SYNC:
                raise RemoteProtocolError(f"expected a HolePunch SYNC, got {message.type.name}")
            self._finish(DialNow(self._dial_addrs, upgrade_role=Role.INITIATOR))
