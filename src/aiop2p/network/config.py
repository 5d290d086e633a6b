"""What shapes a :class:`~aiop2p.network.Network`: its config types, every limit with its unit."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConnectionLimits, NodeConfig
from ..errors import InvalidArgumentError
from ..services.dcutr import DcutrConfig
from ..services.mdns import MdnsConfig
from ..services.relay.auto import AutoRelayConfig
from ..services.relay.client import RelayClientConfig
from ..services.relay.server import RelayServerConfig
from .event_channel import ChannelSinkConfig

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_MAX_RESPONSE_CHUNKS",
    "DEFAULT_PROTOCOL",
    "MAX_ERROR_MESSAGE_BYTES",
    "ChannelConfig",
    "Framing",
    "NetworkConfig",
    "ProtocolConfig",
]

DEFAULT_PROTOCOL = "/p2p/1.0.0"
DEFAULT_MAX_REQUEST_BYTES = 1 << 20
DEFAULT_MAX_RESPONSE_BYTES = 10 << 20
DEFAULT_MAX_RESPONSE_CHUNKS = 1024
MAX_ERROR_MESSAGE_BYTES = 256
"""Longest error message of an error chunk (chunked framing), as the Ethereum req/resp's
``ErrorMessage``; a longer one from a peer is refused, ours are cut to it."""


class Framing(enum.Enum):
    """How one message is delimited on its stream (see :mod:`aiop2p.network.exchange`)."""

    LENGTH_PREFIXED = "length-prefixed"
    EOF_DELIMITED = "eof-delimited"
    CHUNKED = "chunked"
    """Length-prefixed request; the response is chunks, each a result byte then a
    length-prefixed payload, ended by the stream's FIN (docs/network.md)."""


@dataclass(frozen=True, slots=True)
class ProtocolConfig:
    """One request protocol of a Network: its ids (preference order), framing and sizes.

    With ``CHUNKED``, ``max_response_bytes`` bounds each chunk and
    ``max_response_chunks`` their number (so a stream is bounded by their product)."""

    protocols: tuple[str, ...] = (DEFAULT_PROTOCOL,)
    framing: Framing = Framing.LENGTH_PREFIXED
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_response_chunks: int = DEFAULT_MAX_RESPONSE_CHUNKS

    def __post_init__(self) -> None:
        if not self.protocols or not all(isinstance(p, str) and p for p in self.protocols):
            raise InvalidArgumentError(
                f"protocol ids must be one or more non-empty strings: {self.protocols!r}"
            )
        if not isinstance(self.framing, Framing):
            raise InvalidArgumentError(f"framing must be a Framing, not {self.framing!r}")
        for name in ("max_request_bytes", "max_response_bytes", "max_response_chunks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(f"{name} must be an int >= 1, not {value!r}")


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """Size and overflow policy of one of the network's outgoing channels."""

    capacity: int = 64
    policy: ChannelSinkConfig = ChannelSinkConfig.BLOCK


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """Everything that shapes a :class:`Network`; every limit carries its unit."""

    request_timeout: float = 10.0
    """Seconds for one whole exchange: negotiation, request, firewall, answer, response."""
    connection_timeout: float = 60.0
    """Seconds an idle connection (no stream open, either direction) is kept before it is
    closed.  The seed used 10 s; 60 s follows the field: js-libp2p closes no idle
    connection and pings each peer every 10 s (so 10 s raced those pings), go-libp2p gives
    new connections a one-minute grace period, rust-libp2p leaves it to the application."""
    firewall_timeout: float = 10.0
    """Seconds to wait for a rule or an approval from the application before rejecting."""
    connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    protocols: tuple[str, ...] = (DEFAULT_PROTOCOL,)
    """Request-response protocol ids, in preference order."""
    framing: Framing = Framing.LENGTH_PREFIXED
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_response_chunks: int = DEFAULT_MAX_RESPONSE_CHUNKS
    """Response chunks a ``CHUNKED`` stream may carry (``max_response_bytes`` each)."""
    requests_channel: ChannelConfig = field(default_factory=ChannelConfig)
    events_channel: ChannelConfig = field(
        default_factory=lambda: ChannelConfig(256, ChannelSinkConfig.BUFFER_LATEST)
    )
    firewall_channel_capacity: int = 16
    """Firewall questions waiting for the application; more wait for room (bounded by
    ``firewall_timeout``)."""
    max_concurrent_inbound_requests_per_connection: int = 128
    """Inbound requests one connection may have in flight (arrived, not yet answered);
    beyond it a new request's stream is reset unread (``InboundFailure.OVERLOADED``,
    ``RequestRefusedError`` to the requester), so one peer cannot take the whole node."""
    max_concurrent_inbound_requests: int = 32768
    """Inbound requests in flight on the whole node; beyond it new ones are refused as
    above instead of queueing until they time out.  Sized so that 1,000 peers with 32
    requests in flight each fit."""
    relay_client: bool | RelayClientConfig = True
    """Listen and dial through circuit relays (on by default; a
    :class:`~aiop2p.services.relay.client.RelayClientConfig` tunes reservation timeouts
    and the re-reservation backoff)."""
    relay_server: RelayServerConfig | None = None
    """Act as a relay for others with these limits (off by default: a node is never a
    relay by accident)."""
    auto_relay: AutoRelayConfig | None = None
    """Automatic relays (off by default): while AutoNAT (``node.autonat``) finds none of
    our addresses reachable, or always with ``mode="always"``, listen through a few
    relays, replace lost ones, and report it as :class:`~aiop2p.events.AutoRelayAdded` /
    :class:`~aiop2p.events.AutoRelayRemoved`.  Needs ``relay_client``."""
    dcutr: DcutrConfig | None = field(default_factory=DcutrConfig)
    """Hole punching (DCUtR) over relayed connections; ``None`` turns it off."""
    mdns: MdnsConfig | None = field(default_factory=MdnsConfig)
    """LAN discovery (on by default, as in the seed); ``None`` turns it off."""
    address_book_path: Path | None = None
    """Persist the address book there (loaded at start, saved on change and at close)."""
    node: NodeConfig = field(default_factory=NodeConfig)

    def __post_init__(self) -> None:
        for name in ("request_timeout", "connection_timeout", "firewall_timeout"):
            if getattr(self, name) <= 0:
                raise InvalidArgumentError(f"{name} must be positive")
        for name in (
            "max_concurrent_inbound_requests_per_connection",
            "max_concurrent_inbound_requests",
        ):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"{name} must be at least 1")
        if not self.protocols:
            raise InvalidArgumentError("at least one request protocol is needed")
        if self.auto_relay is not None and not self.relay_client:
            raise InvalidArgumentError("auto_relay needs relay_client")
        if (
            self.auto_relay is not None
            and self.auto_relay.mode == "auto"
            and self.node.autonat is None
        ):
            raise InvalidArgumentError(
                "auto_relay mode 'auto' follows AutoNAT: set node.autonat (or mode 'always')"
            )

    def default_protocol(self) -> ProtocolConfig:
        """The Network's default request protocol (``protocols``, ``framing``, sizes)."""
        return ProtocolConfig(
            self.protocols,
            self.framing,
            self.max_request_bytes,
            self.max_response_bytes,
            self.max_response_chunks,
        )
