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
    ApprovalRequest,
    ChannelConfig,
    FirewallRequest,
    InboundRequest,
    Listener,
    Network,
    NetworkConfig,
    PeerRuleQuery,
)
from .node import Node
from .services.address_book import AddressInfo, PeerAddress, assemble_relayed_addr
from .services.codecs import Codec, JsonCodec, RawCodec
from .services.event_channel import ChannelSinkConfig, EventChannel
from .services.firewall import FirewallRules, Rule
from .services.permissions import FirewallPermission, PermissionValue
from .services.request_response import Framing

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
