"""aiop2p: asyncio-native libp2p with end-to-end encrypted request-response and a firewall.

Re-exports only; see :mod:`aiop2p.network` (the seed's ``Network``), :mod:`aiop2p.node`
(the libp2p host) and :mod:`aiop2p.errors` (every exception, all exported here).
"""

from . import errors as _errors
from ._aio.connection import Connection, ConnectionId, Direction
from ._aio.stream import Stream
from ._version import __version__
from .config import ConnectionLimits, NodeConfig
from .errors import *  # noqa: F403 - every exception (errors.__all__) is API
from .events import (
    ConnectedPoint,
    ConnectionClosed,
    ConnectionEstablished,
    ExpiredListenAddr,
    InboundFailure,
    InboundRequestFailed,
    IncomingConnectionError,
    ListenerClosed,
    ListenerError,
    NetworkEvent,
    NewListenAddr,
    RequestId,
)
from .identity import KeyPair, KeyType, PeerId, PublicKey
from .multiaddr import Multiaddr
from .network import (
    AddressInfo,
    ApprovalRequest,
    ChannelConfig,
    ChannelSinkConfig,
    Codec,
    EventChannel,
    FirewallPermission,
    FirewallRequest,
    FirewallRules,
    Framing,
    InboundRequest,
    JsonCodec,
    Listener,
    Network,
    NetworkConfig,
    PeerAddress,
    PeerRuleQuery,
    PermissionValue,
    RawCodec,
    Rule,
    assemble_relayed_addr,
)
from .node import Node

__all__ = [
    "AddressInfo",
    "ApprovalRequest",
    "ChannelConfig",
    "ChannelSinkConfig",
    "Codec",
    "ConnectedPoint",
    "Connection",
    "ConnectionClosed",
    "ConnectionEstablished",
    "ConnectionId",
    "ConnectionLimits",
    "Direction",
    "EventChannel",
    "ExpiredListenAddr",
    "FirewallPermission",
    "FirewallRequest",
    "FirewallRules",
    "Framing",
    "InboundFailure",
    "InboundRequest",
    "InboundRequestFailed",
    "IncomingConnectionError",
    "JsonCodec",
    "KeyPair",
    "KeyType",
    "Listener",
    "ListenerClosed",
    "ListenerError",
    "Multiaddr",
    "Network",
    "NetworkConfig",
    "NetworkEvent",
    "NewListenAddr",
    "Node",
    "NodeConfig",
    "PeerAddress",
    "PeerId",
    "PeerRuleQuery",
    "PermissionValue",
    "PublicKey",
    "RawCodec",
    "RequestId",
    "Rule",
    "Stream",
    "__version__",
    "assemble_relayed_addr",
]
__all__ += _errors.__all__
