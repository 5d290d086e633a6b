"""The seed's ``Network``: typed request-response between peers behind a firewall.

Re-exports only.  The package is laid out by job: :mod:`._network` (the ``Network``
façade: lifecycle, listeners, dialing, address book), :mod:`.exchange` (both directions
of a request), :mod:`.inbound` (one inbound request, served without a task),
:mod:`.server` (``Network.serve``'s bounded handler tasks), :mod:`.protocol` (one
request protocol, ``Network.add_protocol``), :mod:`.gate` (running
firewall decisions and their timers), :mod:`.config`, and the pure parts it builds on:
:mod:`.firewall`, :mod:`.permissions`,
:mod:`.address_book`, :mod:`.codecs` (and :mod:`.typed_codec`, on msgspec),
:mod:`.event_channel`.  ``__all__`` also names the
service configurations that are :class:`NetworkConfig` fields and the types of the
firewall's and address book's public signatures.
"""

from ..services.dcutr import DcutrConfig
from ..services.mdns import MdnsConfig
from ..services.relay.auto import AutoRelayConfig
from ..services.relay.client import RelayClientConfig
from ..services.relay.server import RelayServerConfig
from ._network import Listener, Network
from .address_book import AddressBookLimits, AddressInfo, PeerAddress, assemble_relayed_addr
from .codecs import Codec, JsonCodec, RawCodec, RequestResponseCodec
from .config import DEFAULT_PROTOCOL, ChannelConfig, Framing, NetworkConfig, ProtocolConfig
from .event_channel import ChannelSinkConfig, EventChannel
from .exchange import ResponseStream
from .firewall import FirewallRules, Rule, RuleKind
from .gate import ApprovalRequest, FirewallRequest, PeerRuleQuery
from .inbound import InboundRequest
from .permissions import FirewallPermission, PermissionEnum, PermissionValue, VariantPermission
from .protocol import RequestProtocol
from .typed_codec import TypedCodec

__all__ = [
    "DEFAULT_PROTOCOL",
    "AddressBookLimits",
    "AddressInfo",
    "ApprovalRequest",
    "AutoRelayConfig",
    "ChannelConfig",
    "ChannelSinkConfig",
    "Codec",
    "DcutrConfig",
    "EventChannel",
    "FirewallPermission",
    "FirewallRequest",
    "FirewallRules",
    "Framing",
    "InboundRequest",
    "JsonCodec",
    "Listener",
    "MdnsConfig",
    "Network",
    "NetworkConfig",
    "PeerAddress",
    "PeerRuleQuery",
    "PermissionEnum",
    "PermissionValue",
    "ProtocolConfig",
    "RawCodec",
    "RelayClientConfig",
    "RelayServerConfig",
    "RequestProtocol",
    "RequestResponseCodec",
    "ResponseStream",
    "Rule",
    "RuleKind",
    "TypedCodec",
    "VariantPermission",
    "assemble_relayed_addr",
]
