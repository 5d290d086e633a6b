"""multistream-select 1.0.0 as two sans-IO machines: a dialer and a listener.

Wire format (libp2p ``connections/README.md``, multiformats ``multistream-select``):
every message is ``uvarint(len(text) + 1) + utf8(text) + b"\\n"``.  Both sides open with
the header ``/multistream/1.0.0``; the dialer proposes protocol ids one at a time, the
listener echoes the one it accepts or answers ``na``.  Whatever follows the echo in
the byte stream already belongs to the selected protocol and is handed out as
``leftover``.

The dialer writes the header and its first proposal together (one packet, as the spec
recommends); with ``optimistic=True`` the caller may write protocol data right behind
them without waiting for the echo (one round trip saved, as js-libp2p does for a single
protocol).

``ls`` (optional in the spec) is answered with one message whose payload is a
concatenation of embedded messages ``uvarint(len(p) + 1) + p + b"\\n"`` and a final
``b"\\n"``.  When reading one we also accept entries whose length excludes the newline
and a missing final newline (forms some implementations have written).  A message
carrying several newline-separated lines is processed line by line, which tolerates
peers that put the header and their answer into a single length prefix.

The common case has fixed bytes, so it has a fast path without machines (see "The fast
path" below): :class:`Proposal` (a dialer's single proposal, built once per protocol id)
and :func:`match_proposal` (a listener's first input).  Anything else falls back to the
full machines, fed what the fast path saw, so the bytes and events are the same.

Peer misbehaviour never raises: the machine emits :class:`NegotiationFailed` and then
ignores its input.  Local misuse raises :class:`LocalProtocolError`,
:class:`InvalidStateError` or :class:`InvalidArgumentError`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache

from .._wire.framing import take_uvarint_frame
from .._wire.varint import decode_uvarint, encode_uvarint
from ..errors import (
    InvalidArgumentError,
    InvalidStateError,
    LocalProtocolError,
    NegotiationError,
    P2PError,
    ProtocolNotSupportedError,
    RemoteProtocolError,
)
from ._base import SansIOMachine, check_positive

__all__ = [
    "MULTISTREAM_PROTOCOL_ID",
    "MultistreamDialer",
    "MultistreamEvent",
    "MultistreamListener",
    "NegotiationFailed",
    "Proposal",
    "ProtocolSelected",
    "ProtocolsListed",
    "encode_message",
    "match_proposal",
    "outbound_negotiation",
    "single_proposal",
]

MULTISTREAM_PROTOCOL_ID = "/multistream/1.0.0"
_NA = "na"
_LS = "ls"
_WHAT = "multistream message"  # names the message in MessageTooLargeError


@dataclass(frozen=True, slots=True)
class ProtocolSelected:
    """Negotiation succeeded; ``leftover`` bytes already belong to ``protocol``."""

    protocol: str
    leftover: bytes


@dataclass(frozen=True, slots=True)
class ProtocolsListed:
    """The listener's answer to our ``ls``."""

    protocols: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NegotiationFailed:
    """Terminal: negotiation is over without a protocol; the channel should be closed."""

    error: P2PError


MultistreamEvent = ProtocolSelected | ProtocolsListed | NegotiationFailed


def encode_message(text: str) -> bytes:
    """One multistream message: ``uvarint(len) + text + "\\n"``."""
    raw = text.encode() + b"\n"
    return encode_uvarint(len(raw)) + raw


_HEADER = encode_message(MULTISTREAM_PROTOCOL_ID)
_NA_MESSAGE = encode_message(_NA)
_LS_MESSAGE = encode_message(_LS)


def _check_protocol_id(protocol: str, max_message_size: int) -> None:
    if not protocol or "\n" in protocol or protocol in (_NA, _LS):
        raise InvalidArgumentError(f"invalid protocol id {protocol!r}")
    if len(protocol.encode()) + 1 > max_message_size:
        raise InvalidArgumentError(
            f"protocol id {protocol!r} does not fit in max_message_size={max_message_size}"
        )


def _lines(message: bytes) -> list[str]:
    """The text lines of one message; raises :class:`RemoteProtocolError` if malformed."""
    if not message.endswith(b"\n"):
        raise RemoteProtocolError("multistream message does not end with a newline")
    try:
        text = message[:-1].decode()
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError("multistream message is not valid UTF-8") from exc
    return text.split("\n")


def _parse_ls_response(payload: bytes) -> tuple[str, ...]:
    """Decode the payload of an ``ls`` answer (see the module docstring for the forms)."""
    protocols: list[str] = []
    pos = 0
    end = len(payload)
    while pos < end:
        if pos + 1 == end and payload[pos] == 0x0A:  # the final "\n"
            break
        got = decode_uvarint(payload, pos)
        if got is None:
            raise RemoteProtocolError("ls response: truncated entry length")
        length, pos = got
        stop = pos + length
        if stop > end:
            raise RemoteProtocolError("ls response: entry overruns the message")
        entry = payload[pos:stop]
        if entry.endswith(b"\n"):
            entry = entry[:-1]
            pos = stop
        elif payload[stop : stop + 1] == b"\n":  # length excluded the newline
            pos = stop + 1
        else:
            raise RemoteProtocolError("ls response: entry does not end with a newline")
        try:
            protocols.append(entry.decode())
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError("ls response: entry is not valid UTF-8") from exc
    return tuple(protocols)


def _encode_ls_response(protocols: Sequence[str]) -> bytes:
    payload = b"".join(map(encode_message, protocols)) + b"\n"
    return encode_uvarint(len(payload)) + payload


class _Machine(SansIOMachine[MultistreamEvent]):
    """Shared buffering, message framing and the terminal states of both roles."""

    __slots__ = ("max_message_size",)

    _HANDED_OVER = "negotiation already succeeded: later bytes belong to the selected protocol"

    def __init__(self, max_message_size: int) -> None:
        check_positive("max_message_size", max_message_size)
        super().__init__()
        self.max_message_size = max_message_size
        """Largest message accepted from the peer, bytes (length prefix excluded)."""

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; never raises for peer misbehaviour."""
        self._feed(data)  # RemoteProtocolError, MessageTooLargeError, NegotiationError: _fail

    def receive_eof(self) -> None:
        """The peer closed its side; fails the negotiation unless it is already over."""
        if not self._done:
            self._fail(NegotiationError("connection closed during multistream negotiation"))

    def _select(self, protocol: str) -> None:
        self._finish(ProtocolSelected(protocol, bytes(self._buffer)), handed_over=True)

    def _fail(self, error: P2PError) -> None:
        self._finish(NegotiationFailed(error))


class MultistreamDialer(_Machine):
    """Proposes protocols in order until the listener accepts one.

    Construction queues the header and the first proposal (one write).  On ``na`` the
    next protocol is proposed; when every one is refused the machine emits
    ``NegotiationFailed(ProtocolNotSupportedError)``.  With ``protocols`` empty the
    dialer only lists (call :meth:`list_protocols`) and is done after ``ProtocolsListed``.
    """

    __slots__ = (
        "_header_received",
        "_index",
        "_ls_pending",
        "_ls_requested",
        "_optimistic",
        "_protocols",
        "_sent_any",
        "max_ls_response_size",
    )

    def __init__(
        self,
        protocols: Sequence[str],
        *,
        optimistic: bool = False,
        max_message_size: int = 1024,
        max_ls_response_size: int = 64 * 1024,
    ) -> None:
        super().__init__(max_message_size)
        check_positive("max_ls_response_size", max_ls_response_size)
        self._protocols = tuple(protocols)
        for protocol in self._protocols:
            _check_protocol_id(protocol, max_message_size)
        if optimistic and len(self._protocols) != 1:
            raise LocalProtocolError("optimistic negotiation needs exactly one protocol")
        self._optimistic = optimistic
        self.max_ls_response_size = max_ls_response_size
        """Largest ``ls`` answer accepted, bytes."""
        self._index = 0
        self._header_received = False
        self._ls_requested = False
        self._ls_pending = False
        self._sent_any = False
        self._out += _HEADER
        if self._protocols:
            self._out += encode_message(self._protocols[0])

    @property
    def optimistic(self) -> bool:
        """True if the caller may send protocol data before the listener's echo."""
        return self._optimistic

    def data_to_send(self) -> bytes:
        out = super().data_to_send()
        if out:
            self._sent_any = True
        return out

    def list_protocols(self) -> None:
        """Ask the listener for its protocols (answered by :class:`ProtocolsListed`).

        Must be called before the first :meth:`data_to_send` when protocols were given:
        the ``ls`` is then sent ahead of the first proposal, so its answer cannot be
        mistaken for protocol data after an accepted proposal.
        """
        if self._done:
            raise InvalidStateError("negotiation is over")
        if self._ls_requested:
            raise InvalidStateError("ls was already requested")
        if self._protocols and self._sent_any:
            raise InvalidStateError("ls must be requested before the first proposal is sent")
        self._ls_requested = True
        self._ls_pending = True
        if self._protocols:
            self._out = bytearray(_HEADER + _LS_MESSAGE + encode_message(self._protocols[0]))
        else:
            self._out += _LS_MESSAGE

    def _process(self) -> None:
        while not self._done:
            if self._header_received and self._ls_pending:
                message = take_uvarint_frame(self._buffer, self.max_ls_response_size, _WHAT)
                if message is None:
                    return
                self._ls_pending = False
                listed = ProtocolsListed(_parse_ls_response(message))
                if self._protocols:
                    self._events.append(listed)
                else:  # a list-only dialer ends here; later bytes are a caller error
                    self._finish(listed, handed_over=True)
                continue
            message = take_uvarint_frame(self._buffer, self.max_message_size, _WHAT)
            if message is None:
                return
            lines = _lines(message)
            last = len(lines) - 1
            for i, line in enumerate(lines):
                if not self._header_received:
                    if line != MULTISTREAM_PROTOCOL_ID:
                        raise NegotiationError(f"expected {MULTISTREAM_PROTOCOL_ID}, got {line!r}")
                    self._header_received = True
                    if self._ls_pending and i != last:
                        raise RemoteProtocolError("ls answer shares a message with the header")
                    continue
                if self._index >= len(self._protocols):
                    raise RemoteProtocolError(f"unexpected multistream message {line!r}")
                proposed = self._protocols[self._index]
                if line == proposed:
                    if i != last:
                        raise RemoteProtocolError("data after the protocol echo in one message")
                    self._select(proposed)
                    return
                if line != _NA:
                    raise RemoteProtocolError(f"expected {proposed!r} or 'na', got {line!r}")
                self._index += 1
                if self._index == len(self._protocols):
                    raise ProtocolNotSupportedError(self._protocols)
                self._out += encode_message(self._protocols[self._index])


class MultistreamListener(_Machine):
    """Answers proposals: echoes a supported protocol, ``na`` otherwise.

    ``supported`` is either a predicate or a collection of protocol ids; only a
    collection can be listed in an ``ls`` answer (a predicate lists nothing).
    Construction queues our header; the driver may hold it back until the answer to the
    first proposal is queued too, so both leave in one packet.
    """

    __slots__ = ("_accepts", "_attempts", "_header_received", "_listed", "max_attempts")

    def __init__(
        self,
        supported: Callable[[str], bool] | Collection[str],
        *,
        max_message_size: int = 1024,
        max_attempts: int = 32,
    ) -> None:
        super().__init__(max_message_size)
        check_positive("max_attempts", max_attempts)
        self.max_attempts = max_attempts
        """Refused proposals plus ``ls`` requests tolerated before giving up, count."""
        if isinstance(supported, str):  # a lone id, not a collection of characters
            supported = (supported,)
        if callable(supported):
            self._accepts: Callable[[str], bool] = supported
            self._listed: tuple[str, ...] = ()
        else:
            self._listed = tuple(supported)
            self._accepts = frozenset(self._listed).__contains__
        self._attempts = 0
        self._header_received = False
        self._out += _HEADER

    def _process(self) -> None:
        while not self._done:
            message = take_uvarint_frame(self._buffer, self.max_message_size, _WHAT)
            if message is None:
                return
            lines = _lines(message)
            last = len(lines) - 1
            for i, line in enumerate(lines):
                if not self._header_received:
                    if line != MULTISTREAM_PROTOCOL_ID:
                        raise NegotiationError(f"expected {MULTISTREAM_PROTOCOL_ID}, got {line!r}")
                    self._header_received = True
                    continue
                if line != _NA and line != _LS and self._accepts(line):
                    if i != last:
                        raise RemoteProtocolError("data after the protocol proposal in one message")
                    self._out += encode_message(line)
                    self._select(line)
                    return
                self._attempts += 1
                if self._attempts > self.max_attempts:
                    raise NegotiationError(
                        f"peer made more than {self.max_attempts} negotiation attempts"
                    )
                if line == _LS:
                    self._out += _encode_ls_response(self._listed)
                else:
                    self._out += _NA_MESSAGE


# --- the fast path -------------------------------------------------------------------------
#
# A stream that offers one protocol which the peer accepts sees fixed bytes: the dialer
# writes header + proposal, the listener answers header + echo, i.e. the same bytes.  The
# drivers build no machine for it.  On input that does not match they build the full
# machine in the state the fast path reached and feed it that input, so everything else
# (a header split from its proposal, ``ls``, ``na``, several proposals, an unknown
# protocol, malformed or oversized messages) behaves exactly as without the fast path.
# The listener's fast path takes only a first input holding header and proposal (what
# aiop2p, js-libp2p and the lazy dialers send); the dialer's also takes the header alone
# and then the echo (what js-libp2p and py-libp2p answer).

_HEADER_SIZE = len(_HEADER)
_HEADER_PAYLOAD_SIZE = _HEADER_SIZE - 1  # its one-byte length prefix excluded


class Proposal:
    """A dialer's single optimistic proposal of ``protocol``, shared by its streams.

    ``wire`` (header + proposal) is what the dialer sends first; a listener that accepts
    answers with the same bytes, in one frame or, as js-libp2p and py-libp2p do, the
    header in a frame of its own: then the stream moves on to :attr:`after_header`, the
    same proposal waiting for the echo alone.  Get one from :func:`single_proposal`.
    """

    __slots__ = ("_echo", "_header_seen", "after_header", "max_message_size", "protocol", "wire")

    def __init__(self, protocol: str, max_message_size: int, *, header_seen: bool = False) -> None:
        check_positive("max_message_size", max_message_size)
        _check_protocol_id(protocol, max_message_size)
        self.protocol = protocol
        self.max_message_size = max_message_size
        self.wire = _HEADER + encode_message(protocol)
        self._header_seen = header_seen
        # Below the header's size the full dialer refuses the header echo itself.
        fast = max_message_size >= _HEADER_PAYLOAD_SIZE
        self._echo = (self.wire[_HEADER_SIZE:] if header_seen else self.wire) if fast else None
        self.after_header: Proposal | None = (
            Proposal(protocol, max_message_size, header_seen=True)
            if fast and not header_seen
            else None
        )
        """The state after the listener's header came alone (None once it was seen)."""

    def match_echo(self, data: bytes) -> bytes | None:
        """The leftover if ``data`` starts with the rest of the listener's answer (header
        and echo, or the echo after :attr:`after_header`), else None: then see
        :meth:`match_header` or feed ``data`` to :meth:`dialer`."""
        echo = self._echo
        if echo is not None and data.startswith(echo):
            return data[len(echo) :]
        return None

    def match_header(self, data: bytes) -> Proposal | None:
        """:attr:`after_header` if ``data`` is exactly the listener's header, else None."""
        if self.after_header is not None and data == _HEADER:
            return self.after_header
        return None

    def dialer(self) -> MultistreamDialer:
        """The full machine in this state (``wire`` sent, the header seen if it was): the
        fallback for any other input."""
        dialer = MultistreamDialer(
            (self.protocol,), optimistic=True, max_message_size=self.max_message_size
        )
        dialer.data_to_send()  # that is ``wire``, already sent
        if self._header_seen:
            dialer.receive_data(_HEADER)
        return dialer


@lru_cache(maxsize=256)
def single_proposal(protocol: str, max_message_size: int) -> Proposal:
    """The shared :class:`Proposal` of ``protocol`` (our own protocol ids: few, cached).

    Raises :class:`InvalidArgumentError` for an id :class:`MultistreamDialer` refuses.
    """
    return Proposal(protocol, max_message_size)


def outbound_negotiation(
    protocols: Sequence[str], max_message_size: int
) -> tuple[Proposal | MultistreamDialer, bytes]:
    """What a new outbound stream offering ``protocols`` negotiates with, and its first
    bytes: the shared :class:`Proposal` for one protocol (the fast path), else a
    :class:`MultistreamDialer`."""
    if len(protocols) == 1:
        proposal = single_proposal(protocols[0], max_message_size)
        return proposal, proposal.wire
    dialer = MultistreamDialer(protocols, max_message_size=max_message_size)
    return dialer, dialer.data_to_send()


def match_proposal(
    data: bytes, supported: Collection[str], max_message_size: int
) -> tuple[str, int] | None:
    """A listener's fast path: ``(protocol, end)`` if its first input ``data`` is the header
    and one proposal of a ``supported`` protocol, each a message of its own.

    The answer is then ``data[:end]`` (header + echo: the same bytes) and ``data[end:]``
    already belongs to ``protocol``.  None means anything else (incomplete, ``ls``, ``na``,
    unsupported, malformed, oversized, a proposal of 127 bytes or more): feed ``data`` to
    a :class:`MultistreamListener` built with the same arguments.
    """
    global _last_proposal  # a memo of a pure function of the bytes (see below)
    wire, checked_size, protocol = _last_proposal
    if data.startswith(wire) and max_message_size == checked_size:
        end = len(wire)  # the header and the very proposal parsed last time
    else:
        if not data.startswith(_HEADER) or len(data) <= _HEADER_SIZE:
            return None
        size = data[_HEADER_SIZE]  # a one-byte length: always minimal
        end = _HEADER_SIZE + 1 + size
        if (
            size >= 0x80
            or len(data) < end
            or data[end - 1] != 0x0A
            or size > max_message_size
            or max_message_size < _HEADER_PAYLOAD_SIZE
        ):
            return None
        payload = data[_HEADER_SIZE + 1 : end - 1]
        if b"\n" in payload:  # several lines: the machine decides
            return None
        try:
            protocol = payload.decode()
        except UnicodeDecodeError:
            return None
        if protocol in (_NA, _LS):
            return None
        _last_proposal = (data[:end], max_message_size, protocol)
    if isinstance(supported, str):  # a lone id, as MultistreamListener takes it
        supported = (supported,)
    if protocol not in supported:  # asked every time: what is offered may change
        return None
    return protocol, end


_last_proposal: tuple[bytes, int | None, str] = (b"", None, "")
"""The header and proposal :func:`match_proposal` last parsed, the message size limit it
parsed them under, and the protocol: a listener answering the same protocol request
after request parses and decodes the same bytes once, then matches them with one
``startswith`` (and finds its handler by the same ``str``, whose hash is kept).  No
limit equals None: nothing matches before the first parse."""
