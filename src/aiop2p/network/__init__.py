"""The seed's ``Network``: typed request-response between peers behind a firewall.

Re-exports only.  The package is laid out by job: :mod:`._network` (the ``Network``
façade: lifecycle, listeners, dialing, address book), :mod:`.exchange` (both directions
of a request), :mod:`.gate` (running firewall decisions and their timers), :mod:`.config`,
and the pure parts it builds on: :mod:`.firewall`, :mod:`.permissions`,
:mod:`.address_book`, :mod:`.codecs`, :mod:`.event_channel`.
"""

from ..errors import NoAddressesError
from ._network import Listener, Network
from .address_book import AddressInfo, PeerAddress, assemble_relayed_addr
from .codecs import Codec, JsonCodec, RawCodec
from .config import DEFAULT_PROTOCOL, ChannelConfig, Framing, NetworkConfig
from .event_channel import ChannelSinkConfig, EventChannel
from .exchange import InboundRequest
from .firewall import FirewallRules, Rule
from .gate import ApprovalRequest, FirewallRequest, PeerRuleQuery
from .permissions import FirewallPermission, PermissionValue

__all__ = [
    "DEFAULT_PROTOCOL",
    "AddressInfo",
    "ApprovalRequest",
    "ChannelConfig",
    "ChannelSinkConfig",
    "Codec",
    "EventChannel",
    "FirewallPermission",
    "FirewallRequest",
    "FirewallRules",
    "Framing",
    "InboundRequest",
    "JsonCodec",
    "Listener",
    "Network",
    "NetworkConfig",
    "NoAddressesError",
    "PeerAddress",
    "PeerRuleQuery",
    "PermissionValue",
    "RawCodec",
    "Rule",
    "assemble_relayed_addr",
]
