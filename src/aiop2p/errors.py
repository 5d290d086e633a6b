"""Every exception aiop2p raises, under one root.

::

    P2PError
    ├── InvalidArgumentError (ValueError)       bad argument given by the caller
    │   ├── InvalidMultiaddrError               a multiaddr that does not parse
    │   ├── InvalidPeerIdError                  a peer id that does not parse
    │   ├── InvalidKeyError                     a key that does not parse or is unsupported
    │   ├── CodecError                          a value the codec cannot encode or decode
    │   │   └── InvalidMessageError             a value not of its declared type (TypedCodec)
    │   ├── InvalidFirewallConfigError          a declarative firewall file that is malformed
    │   └── AddressBookError                    an address book that cannot be read
    ├── InvalidStateError (RuntimeError)        API used in a state that does not allow it
    ├── ProtocolError                           a protocol machine met invalid input
    │   ├── LocalProtocolError                  we misused the protocol (a bug on our side)
    │   └── RemoteProtocolError                 the peer violated the protocol
    │       ├── MessageTooLargeError            a frame or message above its size limit
    │       ├── FlowControlError                the peer sent beyond its window
    │       ├── KadError                        a Kademlia message malformed or out of bounds
    │       └── AutonatError                    an AutoNAT message malformed or out of bounds
    ├── NegotiationError                        multistream-select failed
    │   ├── ProtocolNotSupportedError           the peer supports none of the protocols offered
    │   └── NegotiationTimeoutError             no protocol agreed within negotiation_timeout
    ├── HandshakeError                          the secure channel could not be established
    │   ├── PeerIdMismatchError                 the peer is not the one we dialled
    │   ├── CerthashMismatchError               a WebTransport certificate is not the pinned one
    │   ├── InvalidSignatureError               the peer's identity signature does not verify
    │   ├── DecryptionError                     a ciphertext failed authentication
    │   └── HandshakeTimeoutError               the upgrade took longer than allowed
    ├── ConnectionClosedError                   the connection is gone
    │   └── ConnectionLostError                 the connection broke (reset, I/O error)
    ├── DialError                               no address of the peer could be dialled
    │   ├── NoAddressesError                    no address is known for the peer
    │   │   └── PeerNotFoundError               a DHT lookup did not find the peer
    │   ├── ConnectionLimitError                a configured connection limit was reached
    │   ├── PortUnreachableError                a UDP dial got an ICMP unreachable
    │   └── BannedPeerError                     the peer is banned
    ├── ListenError                             an address could not be listened on
    │   ├── MultiaddrNotSupportedError          no transport for that address
    │   └── AddressInUseError                   another socket listens on that port
    ├── StreamError                             a stream operation failed
    │   ├── StreamResetError                    the stream was reset (by either side)
    │   ├── StreamClosedError                   writing after close, reading after reset
    │   └── StreamTimeoutError                  the peer made no progress within a deadline
    ├── RequestError                            an outbound request failed (``kind``)
    │   ├── RequestDialError                    dialling the peer failed
    │   ├── RequestTimeoutError                 no answer within the request timeout
    │   ├── RequestConnectionClosedError        the connection closed first
    │   │   ├── ResponseOmittedError            the remote closed the stream unanswered
    │   │   ├── RequestRefusedError             the remote reset the stream unanswered
    │   │   │                                   (overloaded, or cannot read the request)
    │   │   └── ResponseTooLargeError           the response exceeded max_response_bytes
    │   ├── RequestTooLargeError                the request exceeds max_request_bytes
    │   │                                       (also a LimitExceededError)
    │   ├── RemoteError                         the remote answered with an error result
    │   │                                       code (chunked framing): ``code``, ``message``
    │   ├── UnsupportedProtocolsError           the remote offers none of our protocols
    │   └── ShutdownError                       the local network was closed
    ├── RelayError                              relay reservation or circuit failed
    │   ├── RelayNotSupportedError              relay support is disabled
    │   ├── ReservationRefusedError             the relay refused, with its status code
    │   ├── CircuitRefusedError (DialError)     a relayed dial was refused, with its status
    │   └── RelayLimitReachedError              the relay cut the circuit at its limit
    │       │                                   (also a ConnectionClosedError)
    │       └── RequestRelayLimitError          a request's circuit was cut at the limit
    │                                           (also a RequestConnectionClosedError)
    ├── LimitExceededError                      a configured count or size limit was hit
    └── ChannelClosedError                      an event channel is closed and drained

Peer misbehaviour never raises out of a sans-IO machine's ``receive_data``: it is
recorded and reported as a terminal event carrying one of these errors.  Foreign
exceptions (``OSError``, ``InvalidTag``) are wrapped with ``raise ... from exc``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

__all__ = [
    "AddressBookError",
    "AddressInUseError",
    "AutonatError",
    "BannedPeerError",
    "CerthashMismatchError",
    "ChannelClosedError",
    "CircuitRefusedError",
    "CodecError",
    "ConnectionClosedError",
    "ConnectionLimitError",
    "ConnectionLostError",
    "DecryptionError",
    "DialError",
    "FlowControlError",
    "HandshakeError",
    "HandshakeTimeoutError",
    "InvalidArgumentError",
    "InvalidFirewallConfigError",
    "InvalidKeyError",
    "InvalidMessageError",
    "InvalidMultiaddrError",
    "InvalidPeerIdError",
    "InvalidSignatureError",
    "InvalidStateError",
    "KadError",
    "LimitExceededError",
    "ListenError",
    "LocalProtocolError",
    "MessageTooLargeError",
    "MultiaddrNotSupportedError",
    "NegotiationError",
    "NegotiationTimeoutError",
    "NoAddressesError",
    "OutboundFailure",
    "P2PError",
    "PeerIdMismatchError",
    "PeerNotFoundError",
    "PortUnreachableError",
    "ProtocolError",
    "ProtocolNotSupportedError",
    "RelayError",
    "RelayLimitReachedError",
    "RelayNotSupportedError",
    "RemoteError",
    "RemoteProtocolError",
    "RequestConnectionClosedError",
    "RequestDialError",
    "RequestError",
    "RequestRefusedError",
    "RequestRelayLimitError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "ReservationRefusedError",
    "ResponseOmittedError",
    "ResponseTooLargeError",
    "ResultCode",
    "ShutdownError",
    "StreamClosedError",
    "StreamError",
    "StreamResetError",
    "StreamTimeoutError",
    "UnsupportedProtocolsError",
]


class P2PError(Exception):
    """Root of every aiop2p exception."""


class InvalidArgumentError(P2PError, ValueError):
    """The caller passed a value that cannot be used."""


class InvalidMultiaddrError(InvalidArgumentError):
    """A multiaddr (text or bytes) that does not parse; the message says what is wrong."""


class InvalidPeerIdError(InvalidArgumentError):
    """A peer id (text or bytes) that does not parse."""


class InvalidKeyError(InvalidArgumentError):
    """A key that does not parse, or of a type we cannot use."""


class CodecError(InvalidArgumentError):
    """A value the codec cannot encode, or bytes it cannot decode (peer input included)."""


class InvalidMessageError(CodecError):
    """A request or response that is not of the type its codec declares
    (:class:`~aiop2p.network.TypedCodec`); the message names the field."""

    def __init__(self, message: str, *, kind: str, path: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        """``"request"`` or ``"response"``."""
        self.path = path
        """Where in the value it is wrong, as ``$.field[0]``; None if not one field."""


class InvalidFirewallConfigError(InvalidArgumentError):
    """A declarative firewall configuration that is malformed; the message says where."""


class AddressBookError(InvalidArgumentError):
    """An address book (JSON text, dict or file) that cannot be read; the message says why."""


class InvalidStateError(P2PError, RuntimeError):
    """The API was used in a state that does not allow it (e.g. after close)."""


class ProtocolError(P2PError):
    """A protocol machine met input it cannot accept."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer violated the protocol."""


class MessageTooLargeError(RemoteProtocolError):
    """A frame or message larger than the configured limit."""

    def __init__(self, size: int, limit: int, what: str = "message") -> None:
        super().__init__(f"{what} of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class FlowControlError(RemoteProtocolError):
    """The peer sent more data than its flow-control window allowed."""


class KadError(RemoteProtocolError):
    """A Kademlia DHT message that is malformed or beyond our bounds (peers, addresses,
    key or message size)."""


class AutonatError(RemoteProtocolError):
    """An AutoNAT v2 message that is malformed, unexpected or beyond our bounds."""


class NegotiationError(P2PError):
    """multistream-select negotiation failed."""


class ProtocolNotSupportedError(NegotiationError):
    """The peer answered ``na`` to every protocol we offered."""

    def __init__(self, protocols: tuple[str, ...] | list[str]) -> None:
        self.protocols = tuple(protocols)
        super().__init__(f"peer supports none of: {', '.join(self.protocols)}")


class NegotiationTimeoutError(NegotiationError):
    """multistream-select did not agree on a protocol within ``negotiation_timeout``."""


class HandshakeError(P2PError):
    """The Noise handshake (or the upgrade around it) failed."""


class PeerIdMismatchError(HandshakeError):
    """The remote proved an identity other than the one we dialled."""

    def __init__(self, expected: object, actual: object) -> None:
        super().__init__(f"expected peer {expected}, but the remote is {actual}")
        self.expected = expected
        self.actual = actual


class InvalidSignatureError(HandshakeError):
    """The remote's signature over its Noise static key does not verify."""


class DecryptionError(HandshakeError):
    """A Noise ciphertext failed authentication."""


class HandshakeTimeoutError(HandshakeError):
    """The connection upgrade did not finish in time."""


class CerthashMismatchError(HandshakeError):
    """A WebTransport listener's certificate is not one its address (``/certhash``)
    pins, or is not among the hashes its Noise handshake announces."""


class ConnectionClosedError(P2PError):
    """The connection was closed; pending operations on it fail with this."""


class ConnectionLostError(ConnectionClosedError):
    """The connection broke (reset, EOF mid-frame, I/O error)."""


class DialError(P2PError):
    """Dialling failed on every address; ``causes`` maps each address to its error."""

    def __init__(self, message: str, causes: Mapping[str, BaseException] | None = None) -> None:
        self.causes: dict[str, BaseException] = dict(causes or {})
        if self.causes:
            detail = "; ".join(f"{addr}: {exc}" for addr, exc in self.causes.items())
            message = f"{message} ({detail})"
        super().__init__(message)


class PortUnreachableError(DialError):
    """A UDP dial was answered with an ICMP unreachable: nothing listens there, or a NAT
    on the way has no mapping for it yet (hole punching retries on this)."""


class NoAddressesError(DialError):
    """No address is known for the peer (the seed's ``DialErr::NoAddresses``)."""


class PeerNotFoundError(NoAddressesError):
    """A DHT lookup ended without finding the peer's addresses."""


class ConnectionLimitError(DialError):
    """A configured connection limit was reached (the seed's ``ConnectionLimit``)."""

    def __init__(self, limit: int, current: int, what: str = "connections") -> None:
        self.limit = limit
        self.current = current
        super().__init__(f"Connection limit: `{limit}`/`{current}` ({what}).")


class BannedPeerError(DialError):
    """The peer is banned (the seed's ``DialErr::Banned``)."""

    def __init__(self, peer: object) -> None:
        self.peer = peer
        super().__init__(f"Peer is banned: {peer}")


class ListenError(P2PError):
    """An address could not be listened on."""


class AddressInUseError(ListenError):
    """Another socket (of any process, or this one) already listens on that address."""


class MultiaddrNotSupportedError(ListenError):
    """No transport can listen on this address (the seed's ``MultiaddrNotSupported``)."""

    def __init__(self, addr: object) -> None:
        self.addr = addr
        super().__init__(f"Transport error: Multiaddress not supported: {addr}")


class StreamError(P2PError):
    """A stream operation failed."""


class StreamResetError(StreamError):
    """The stream was reset, by the remote or locally."""


class StreamClosedError(StreamError):
    """The stream is closed for the attempted direction."""


class StreamTimeoutError(StreamError):
    """The peer neither sent nor accepted bytes on the stream within its deadline."""


class LimitExceededError(P2PError):
    """A configured count or size limit was reached."""


class OutboundFailure(enum.Enum):
    """Why an outbound request failed (the seed's ``OutboundFailure``, with its texts)."""

    DIAL_FAILURE = "Failed to dial the requested peer"
    TIMEOUT = "Timeout while waiting for a response"
    CONNECTION_CLOSED = "Connection was closed before a response was received"
    UNSUPPORTED_PROTOCOLS = "The remote supports none of the requested protocols"
    REQUEST_TOO_LARGE = "The request is larger than max_request_bytes; it was not sent"
    SHUTDOWN = "The local peer was shut down before a response was received."


class RequestError(P2PError):
    """An outbound request failed; ``kind`` says how (an :class:`OutboundFailure`)."""

    kind: OutboundFailure = OutboundFailure.CONNECTION_CLOSED

    def __init__(self, message: str | None = None, *, request_id: object = None) -> None:
        self.request_id = request_id
        super().__init__(message or self.kind.value)


class RequestDialError(RequestError):
    """The request needed a connection and dialling the peer failed (cause chained)."""

    kind = OutboundFailure.DIAL_FAILURE


class RequestTimeoutError(RequestError):
    """No response arrived within the request timeout; the peer may still have processed it."""

    kind = OutboundFailure.TIMEOUT


class RequestConnectionClosedError(RequestError):
    """The connection or stream closed before a response arrived."""

    kind = OutboundFailure.CONNECTION_CLOSED


class ResponseOmittedError(RequestConnectionClosedError):
    """The remote closed the request's stream without answering.

    Its firewall rejected the request, or its application dropped it; the seed's wire
    format cannot tell these apart.  Seen by the requester as ``CONNECTION_CLOSED``.
    """


class RequestRefusedError(RequestConnectionClosedError):
    """The remote reset the request's stream without answering.

    An aiop2p peer does this when it sheds load (too many inbound requests in flight on
    the connection or the node: retry later) or cannot read the request (e.g. above its
    size limit).  Not ``ResponseOmittedError`` (a deliberate close: firewall, dropped)
    nor a timeout (a responder that gives up keeps the stream open until the requester's
    own deadline, so a timeout on either side is a ``RequestTimeoutError``).
    """


class ResponseTooLargeError(RequestConnectionClosedError):
    """The response exceeded ``max_response_bytes``; the stream was reset."""


class RequestTooLargeError(RequestError, LimitExceededError):
    """The request exceeds ``max_request_bytes``; nothing was sent."""

    kind = OutboundFailure.REQUEST_TOO_LARGE


class UnsupportedProtocolsError(RequestError):
    """The remote offers none of the request protocols (or its firewall rejects all)."""

    kind = OutboundFailure.UNSUPPORTED_PROTOCOLS


class ResultCode(enum.IntEnum):
    """The result byte of a response chunk in the chunked framing (docs/network.md,
    "Chunked framing"), the values of the Ethereum consensus req/resp."""

    SUCCESS = 0
    INVALID_REQUEST = 1
    SERVER_ERROR = 2
    RESOURCE_UNAVAILABLE = 3


class RemoteError(RequestError):
    """The remote answered with an error chunk (chunked framing): ``code`` is its
    :class:`ResultCode` (``INVALID_REQUEST``, ``SERVER_ERROR``, ``RESOURCE_UNAVAILABLE``)
    and ``message`` its text.  Not a firewall rejection (that is ``ResponseOmittedError``).

    A handler raises it to answer with that code and message; any other exception of a
    handler reaches the requester as ``SERVER_ERROR`` naming only the exception's type.
    """

    def __init__(
        self, code: ResultCode | int, message: str = "", *, request_id: object = None
    ) -> None:
        self.code: ResultCode | int = (
            ResultCode(code) if code in ResultCode._value2member_map_ else code
        )
        code = self.code
        self.message = message
        name = code.name if isinstance(code, ResultCode) else str(code)
        super().__init__(f"remote error {int(code)} ({name}): {message}", request_id=request_id)


class ShutdownError(RequestError):
    """The local network was closed before the request finished."""

    kind = OutboundFailure.SHUTDOWN


class RelayError(P2PError):
    """A relay reservation or circuit failed."""


class RelayNotSupportedError(RelayError):
    """Relay support is disabled in this network's configuration."""

    def __init__(self, message: str = "Relay Protocol not enabled.") -> None:
        super().__init__(message)


class ReservationRefusedError(RelayError):
    """The relay refused the reservation; ``status`` is its status code."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or f"relay refused the reservation (status {status})")
        self.status = status


class CircuitRefusedError(RelayError, DialError):
    """The relay (or the target behind it) refused the circuit; ``status`` is the code."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or f"relay refused the circuit (status {status})")
        self.status = status


class RelayLimitReachedError(RelayError, ConnectionClosedError):
    """The relay ended a relayed connection because its duration or data limit was reached.

    ``limit_name`` is ``"data"`` (``limit_value`` in bytes) or ``"duration"``
    (``limit_value`` in seconds), as the relay announced them for the circuit.
    """

    def __init__(
        self,
        message: str = "",
        *,
        limit_name: str | None = None,
        limit_value: float | None = None,
    ) -> None:
        super().__init__(message or "the relay ended the circuit at its limit")
        self.limit_name = limit_name
        self.limit_value = limit_value


class RequestRelayLimitError(RequestConnectionClosedError, RelayLimitReachedError):
    """A request failed because the relay cut its connection at the circuit's limit.

    Both a ``RequestError`` (kind ``CONNECTION_CLOSED``) and a
    :class:`RelayLimitReachedError`, carrying the cause's ``limit_name``/``limit_value``.
    """

    def __init__(self, cause: RelayLimitReachedError, *, request_id: object = None) -> None:
        super().__init__(str(cause), request_id=request_id)
        self.limit_name = cause.limit_name
        self.limit_value = cause.limit_value


class ChannelClosedError(P2PError):
    """The channel is closed and drained: no item will ever arrive."""
