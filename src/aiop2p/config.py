"""Frozen configuration for a :class:`~aiop2p.node.Node`.

Every limit is a named field whose name carries its unit, here and in every config
class of the package: ``*_timeout`` are seconds (other durations end in ``_seconds``),
``*_bytes`` are bytes (``max_*_bytes`` for bounds), other ``max_*`` are counts.  Nothing
is unbounded by default.  Connection limits have one vocabulary, the seed's
:class:`ConnectionLimits`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ._version import __version__
from .errors import InvalidArgumentError
from .multiaddr import Multiaddr
from .protocols.autonat_v2 import AutonatLimits
from .protocols.kad import KAD_PROTOCOL_ID, KadLimits
from .protocols.yamux import YamuxConfig

__all__ = [
    "AutonatConfig",
    "AutonatLimits",
    "ConnectionLimits",
    "KadConfig",
    "KadLimits",
    "NodeConfig",
    "YamuxConfig",
]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The seed's ``ConnectionLimits`` (counts): ``None`` means no limit.

    The seed left every limit unset; here the two that bound memory against any peer have
    defaults, so a node is never unbounded unless it asks to be.
    """

    max_pending_incoming: int | None = 256
    """Inbound connections still in their handshake.  When full, a newcomer takes the
    place of the oldest handshake of the busiest source if that source holds more than
    the newcomer's would; otherwise the newcomer is closed at once."""
    max_pending_incoming_per_ip: int = 32
    """Inbound connections still in their handshake from one IPv4 address or IPv6 /64;
    further ones from there are closed at once.  A lawful host handshakes with us a few
    times at once (go-libp2p allows 8 connections per IPv4 address in all); 32 leaves
    room for busy NATs and multi-node hosts, while one address holds at most 1/8 of
    ``max_pending_incoming``.  Relayed circuits count per relay, uncapped."""
    max_pending_outgoing: int | None = None
    max_established_incoming: int | None = None
    max_established_outgoing: int | None = None
    max_established_per_peer: int | None = None
    max_established_total: int | None = 4096
    """Established connections, all peers together; further ones are closed."""


@dataclass(frozen=True, slots=True)
class KadConfig:
    """The Kademlia DHT (peer routing), ``NodeConfig.kad``.

    A ``server`` answers ``FIND_NODE`` and is announced by identify, so other peers put
    it in their routing tables: for publicly reachable nodes, or private deployments (a
    LAN, a test on loopback).  A ``client`` only asks (the spec's mode for peers behind
    NATs).
    """

    mode: Literal["client", "server", "auto"] = "client"
    """``auto`` starts as a client and follows AutoNAT (``NodeConfig.autonat``): a
    server while some address of ours is confirmed publicly reachable."""
    protocol_id: str = KAD_PROTOCOL_ID
    """Another id makes a private DHT that does not mix with the public one."""
    bootstrap: tuple[Multiaddr, ...] = ()
    """Peers to join through, each with its ``/p2p/<id>``."""
    k: int = 20
    """Bucket size and the number of closest peers a lookup looks for (the spec's k)."""
    alpha: int = 3
    """Queries in flight per lookup."""
    max_queries_per_lookup: int = 100
    lookup_timeout: float = 30.0
    """Seconds a whole lookup may take (it ends with what it has then)."""
    query_timeout: float = 10.0
    """Seconds for one query: connecting to the peer, its answer included."""
    max_queries_in_flight: int = 32
    """Outbound queries at once, all lookups and pings together."""
    refresh_interval_seconds: float = 600.0
    """Seconds between routing-table refreshes (a lookup of our own id and a random one)."""
    max_inbound_streams: int = 64
    """Inbound DHT streams served at once; further ones are reset."""
    max_requests_per_stream: int = 16
    """Requests answered on one inbound stream (the spec lets a peer reuse a stream)."""
    stream_idle_timeout: float = 10.0
    """Seconds an inbound stream may wait for its next request."""
    limits: KadLimits = field(default_factory=KadLimits)
    """Bounds on each message a peer sends (bytes, peers, addresses, key size)."""

    def __post_init__(self) -> None:
        if self.mode not in ("client", "server", "auto"):
            raise InvalidArgumentError(
                f"kad mode must be 'client', 'server' or 'auto': {self.mode!r}"
            )
        for addr in self.bootstrap:
            if addr.peer_id is None:
                raise InvalidArgumentError(f"a bootstrap address needs its /p2p/<id>: {addr}")
        for name in (
            "k",
            "alpha",
            "max_queries_per_lookup",
            "max_queries_in_flight",
            "max_inbound_streams",
            "max_requests_per_stream",
        ):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"kad {name} must be positive")


@dataclass(frozen=True, slots=True)
class AutonatConfig:
    """AutoNAT v2, ``NodeConfig.autonat``: learn which of our addresses are publicly
    reachable (client) and answer others' dial requests (server)."""

    client: bool = True
    """Ask peers that serve AutoNAT about our addresses (and accept their dial-backs)."""
    server: bool = True
    """Dial back the addresses other peers ask about."""
    confidence: int = 3
    """Agreeing servers needed for a verdict on an address (the spec suggests 3)."""
    check_interval_seconds: float = 60.0
    """Seconds between rounds of questions about addresses without a verdict (a new
    connection to an AutoNAT server starts one sooner)."""
    recheck_interval_seconds: float = 900.0
    """Seconds before the same server is asked about the same address again."""
    request_timeout: float = 30.0
    """One question, client side: the server's dial-back and dial data included."""
    max_dial_data_bytes: int = 100_000
    """Most dial data the client sends when a server asks (the spec: 30k to 100k)."""
    max_candidate_addrs: int = 8
    """Our addresses checked (listen addresses, then observed ones)."""
    min_observers: int = 2
    """Peers that must report the same observed address before it is checked."""
    dial_back_timeout: float = 10.0
    """Server: the dial-back connection and its nonce exchange."""
    server_timeout: float = 30.0
    """Server: a whole request (dial data and dial-back included)."""
    dial_data_bytes: int = 30_000
    """Dial data the server asks for before dialling an IP other than the requester's."""
    max_dial_data_messages: int = 1000
    """DialDataResponse messages the server reads for one request."""
    max_requests_per_peer: int = 12
    """Requests served per peer per ``rate_window_seconds`` (more are rejected)."""
    max_requests: int = 60
    """Requests served in all per ``rate_window_seconds``."""
    max_concurrent_requests: int = 8
    """Requests served at once."""
    rate_window_seconds: float = 60.0
    allow_private_addrs: bool = False
    """Check and dial private (RFC 1918, ULA, link-local) addresses: for labs and private
    deployments.  The spec asks servers never to dial them on the public network."""
    allow_loopback_addrs: bool = False
    """Check and dial loopback addresses (tests)."""
    limits: AutonatLimits = field(default_factory=AutonatLimits)

    def __post_init__(self) -> None:
        for name in (
            "confidence",
            "max_dial_data_bytes",
            "max_candidate_addrs",
            "min_observers",
            "dial_data_bytes",
            "max_dial_data_messages",
            "max_requests_per_peer",
            "max_requests",
            "max_concurrent_requests",
        ):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"autonat {name} must be positive")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Connection-level settings of a node."""

    handshake_timeout: float = 10.0
    """Seconds from TCP connect until Noise and Yamux are both negotiated."""
    dial_timeout: float = 10.0
    """Seconds for one whole dial (TCP connect plus upgrade) to one address."""
    dial_stagger_seconds: float = 0.25
    """Seconds a dial of a peer with several addresses waits on one address before it
    starts the next one as well (staggered parallel dialing, as in RFC 8305's Happy
    Eyeballs): an address that never answers costs this, not ``dial_timeout``.  A failed
    address starts the next one at once."""
    max_parallel_dials_per_peer: int = 4
    """Addresses of one peer dialed at once; each also counts against
    ``limits.max_pending_outgoing``."""
    negotiation_timeout: float = 10.0
    """Seconds for multistream-select on a new stream (either direction); a stream still
    negotiating then is reset (``NegotiationTimeoutError``)."""
    protocol_idle_timeout: float = 60.0
    """Seconds the built-in ping and perf handlers wait for the peer's next bytes, or for it
    to take ours, before resetting the stream (a ping stream may be reused between pings)."""
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    """Configurable connection limits; exceeding one fails the dial or drops the connection."""
    idle_connection_timeout: float | None = None
    """Seconds a connection with no open stream stays up; ``None`` keeps it until closed."""
    stream_linger_timeout: float = 10.0
    """Seconds an inbound stream may stay half-open after its handler returned."""
    max_inbound_streams_per_connection: int = 1024
    """Inbound streams that may be negotiating or open at once on one connection."""
    max_negotiation_message_bytes: int = 1024
    """Largest multistream-select message accepted, bytes."""
    early_muxer_negotiation: bool = True
    """Offer Yamux in the Noise handshake payload (``stream_muxers``): with a peer that
    offers it too, the multistream round for the muxer is skipped (one round trip less
    per dial).  Off, the muxer is always negotiated with multistream."""
    yamux: YamuxConfig = field(default_factory=YamuxConfig)
    """Stream multiplexer limits (windows, stream counts, buffered bytes)."""
    write_flush_bytes: int = 256 * 1024
    """Bytes queued on a connection after which a stream write flushes at once; also the
    largest piece a stream write hands the socket while it is not paused."""
    max_reply_backlog_bytes: int = 256 * 1024
    """Bytes of answers to a peer's input (pongs, window updates, resets, negotiation
    replies) queued while it does not read them (our socket paused); above it we stop
    reading from that peer until it drains."""
    agent_version: str = f"aiop2p/{__version__}"
    """What identify tells peers about us."""
    enable_identify: bool = True
    enable_ping: bool = True
    enable_perf: bool = True
    identify_timeout: float = 10.0
    """Seconds to wait for a peer's identify answer."""
    max_identify_message_bytes: int = 64 * 1024
    """Largest identify message accepted, bytes."""
    kad: KadConfig | None = None
    """The Kademlia DHT service (``Node.kad``); None runs none."""
    autonat: AutonatConfig | None = None
    """AutoNAT v2 (``Node.autonat``); None runs none."""

    def __post_init__(self) -> None:
        if not self.dial_stagger_seconds > 0:
            raise InvalidArgumentError("dial_stagger_seconds must be positive")
        if self.max_parallel_dials_per_peer < 1:
            raise InvalidArgumentError("max_parallel_dials_per_peer must be at least 1")
