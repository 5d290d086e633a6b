"""What a :class:`~aiop2p.network.Network` reports: the seed's ``NetworkEvent``s.

Every event is a frozen dataclass named as a past-tense fact; ``NetworkEvent`` is
their union, so ``match`` over it can be exhaustive.  Fields share one spelling: the
remote is ``peer``, addresses are ``addr`` (one) or ``addrs`` (several).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NewType

from .errors import P2PError
from .identity import PeerId
from .multiaddr import Multiaddr

__all__ = [
    "AutoRelayAdded",
    "AutoRelayRemoved",
    "ConnectedPoint",
    "ConnectionClosed",
    "ConnectionEstablished",
    "DirectConnectionUpgraded",
    "HolePunchFailed",
    "HolePunchStarted",
    "InboundFailure",
    "InboundRequestFailed",
    "IncomingConnectionError",
    "ListenerClosed",
    "ListenerError",
    "NetworkEvent",
    "NewListenAddr",
    "PeerDiscovered",
    "PeerExpired",
    "ReachabilityChanged",
    "RelayReservationLost",
    "RelayReservationRestored",
    "RequestId",
]

RequestId = NewType("RequestId", int)
"""Unique per network across both directions, starting at 1 (never the remote's id)."""


class InboundFailure(enum.Enum):
    """Why an inbound request failed: the seed's ``InboundFailure`` (with its texts),
    its ``Timeout`` split by phase so that each reason is exact, plus load shedding
    (docs/compat.md, "compat: inbound failures by phase")."""

    TIMEOUT = "Timeout while receiving request"
    """The requester did not finish sending its request within ``request_timeout``."""
    RESPONSE_TIMEOUT = "The request was not answered within the request timeout"
    """The firewall decision or the application's answer took too long."""
    SEND_TIMEOUT = "Timeout while sending the response (the requester does not read it)"
    """The response write could not finish within ``request_timeout``; stream reset."""
    NOT_PERMITTED = "The firewall blocked the inbound request"
    CONNECTION_CLOSED = "The connection closed directly after the request was received"
    CANCELLED = "The requester reset the stream before the response was sent"
    """The requester gave up (cancelled, or its own timeout); the connection is fine."""
    RESPONSE_OMISSION = "The request was dropped without a response"
    INVALID_REQUEST = "The request could not be read or decoded"
    HANDLER_ERROR = "The request handler raised an exception"
    """``Network.serve``'s handler raised (logged with its traceback); the stream was
    closed without a response (compat: handler errors are named)."""
    OVERLOADED = "Refused: too many inbound requests in flight"
    """``max_concurrent_inbound_requests`` (node) or ``…_per_connection`` was reached;
    the stream was reset unread."""


@dataclass(frozen=True, slots=True)
class ConnectedPoint:
    """How a connection was made: ``dialer`` is True when we dialled."""

    dialer: bool
    remote_addr: Multiaddr | None
    local_addr: Multiaddr | None = None


@dataclass(frozen=True, slots=True)
class ConnectionEstablished:
    peer: PeerId
    endpoint: ConnectedPoint
    num_established: int
    """Connections to this peer now open, this one included."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    peer: PeerId
    endpoint: ConnectedPoint
    num_established: int
    """Connections to this peer still open."""
    cause: P2PError | None
    """Set when the connection broke; None for a graceful or idle close."""


@dataclass(frozen=True, slots=True)
class IncomingConnectionError:
    """An inbound connection failed during its upgrade or hit a limit."""

    local_addr: Multiaddr | None
    send_back_addr: Multiaddr | None
    error: P2PError


@dataclass(frozen=True, slots=True)
class NewListenAddr:
    addr: Multiaddr


@dataclass(frozen=True, slots=True)
class ListenerClosed:
    addrs: tuple[Multiaddr, ...]
    cause: P2PError | None


@dataclass(frozen=True, slots=True)
class ListenerError:
    error: P2PError


@dataclass(frozen=True, slots=True)
class InboundRequestFailed:
    """An inbound request ended without a response being sent (exactly once per request)."""

    request_id: RequestId
    peer: PeerId
    failure: InboundFailure


@dataclass(frozen=True, slots=True)
class PeerDiscovered:
    """A peer announced itself on the LAN via mDNS (new, or with a new address)."""

    peer: PeerId
    addrs: tuple[Multiaddr, ...]
    """All its currently known mDNS addresses, without ``/p2p``."""


@dataclass(frozen=True, slots=True)
class PeerExpired:
    """A peer discovered via mDNS expired or said goodbye."""

    peer: PeerId


@dataclass(frozen=True, slots=True)
class HolePunchStarted:
    """A DCUtR exchange with ``peer`` began over the relayed connection.

    ``initiator`` is True on the side that sends CONNECT (the inbound side of the
    relayed connection), False on the side that answers; ``attempt`` counts the
    exchanges on that relayed connection, from 1."""

    peer: PeerId
    attempt: int
    initiator: bool = True


@dataclass(frozen=True, slots=True)
class DirectConnectionUpgraded:
    """A direct connection to ``peer`` replaced the relayed one; ``addr`` is its remote."""

    peer: PeerId
    addr: Multiaddr | None
    attempts: int
    """DCUtR exchanges it took on this side; 0 when the initiator's unilateral dial of the
    peer's advertised addresses succeeded."""
    initiator: bool = True
    """As in :class:`HolePunchStarted`."""


@dataclass(frozen=True, slots=True)
class HolePunchFailed:
    """Reaching ``peer`` directly failed; the relayed connection stays and keeps working.

    The initiator reports once, when its last attempt failed.  The answering side
    (``initiator=False``) reports each exchange it answered that failed (it cannot know
    whether the initiator retries); ``attempts`` is that exchange's number."""

    peer: PeerId
    error: P2PError
    attempts: int
    local_addrs: tuple[Multiaddr, ...] = ()
    """The observed addresses we offered."""
    remote_addrs: tuple[Multiaddr, ...] = ()
    """The addresses the peer offered (last attempt)."""
    initiator: bool = True
    """As in :class:`HolePunchStarted`."""


@dataclass(frozen=True, slots=True)
class RelayReservationLost:
    """Relayed listening through ``relay`` lost its reservation (the relay connection
    closed, or refreshes failed until it expired): unreachable there until
    :class:`RelayReservationRestored`; re-reserving continues with capped backoff."""

    relay: PeerId
    error: P2PError | None


@dataclass(frozen=True, slots=True)
class RelayReservationRestored:
    """Relayed listening through ``relay`` holds a reservation again; ``attempts`` is the
    number of tries it took since the loss."""

    relay: PeerId
    attempts: int


@dataclass(frozen=True, slots=True)
class ReachabilityChanged:
    """AutoNAT's verdict on one of our addresses changed (``NodeConfig.autonat``):
    ``reachable`` is True (public), False (not reachable from outside) or None (no
    verdict any more: the address is gone)."""

    addr: Multiaddr
    reachable: bool | None
    servers: int
    """Servers whose answers the verdict rests on."""


@dataclass(frozen=True, slots=True)
class AutoRelayAdded:
    """The automatic relays (``NetworkConfig.auto_relay``) picked ``relay`` and hold a
    reservation there: peers reach us at ``addr`` (also a :class:`NewListenAddr`)."""

    relay: PeerId
    addr: Multiaddr


@dataclass(frozen=True, slots=True)
class AutoRelayRemoved:
    """The automatic relays dropped ``relay``: it failed or was lost while a spare was
    free (``error`` set), or relaying is no longer needed (``error`` None)."""

    relay: PeerId
    error: P2PError | None


NetworkEvent = (
    ConnectionEstablished
    | ConnectionClosed
    | IncomingConnectionError
    | NewListenAddr
    | ListenerClosed
    | ListenerError
    | InboundRequestFailed
    | PeerDiscovered
    | PeerExpired
    | HolePunchStarted
    | DirectConnectionUpgraded
    | HolePunchFailed
    | RelayReservationLost
    | RelayReservationRestored
    | ReachabilityChanged
    | AutoRelayAdded
    | AutoRelayRemoved
)
