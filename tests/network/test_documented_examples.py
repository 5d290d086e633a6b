"""The documentation examples of the seed (the original crate), as behaviour
checks through the ``Network`` API."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from aiop2p.errors import InvalidArgumentError, ListenError, RequestConnectionClosedError
from aiop2p.events import InboundFailure, InboundRequestFailed
from aiop2p.network import ChannelConfig, Network, NetworkConfig
from aiop2p.network.event_channel import ChannelSinkConfig
from aiop2p.network.firewall import FirewallRules, Rule
from aiop2p.network.permissions import FirewallPermission, PermissionEnum
from aiop2p.transports.tcp import TcpTransport

from .conftest import CONNECTION_NOISE, link, networks, next_event, outcome, serving

pytestmark = pytest.mark.timeout(20)


# -- permissions over request variants ---------------------------------------------------


class MessagePermission(PermissionEnum):
    PING = 0
    MESSAGE = 1
    OTHER = 2


def message_kind(message: Any) -> MessagePermission:
    """``Message = "Ping" | {"Message": str} | "Other"`` (serde's JSON enum forms)."""
    if message == "Ping":
        return MessagePermission.PING
    if isinstance(message, dict) and "Message" in message:
        return MessagePermission.MESSAGE
    return MessagePermission.OTHER


async def test_restricted_permissions_admit_only_the_ping_variant() -> None:
    assert [m.permission() for m in MessagePermission] == [1, 2, 4]
    only_ping: Rule[MessagePermission] = Rule.restricted(
        lambda rq: (
            FirewallPermission.none()
            .add_permissions([MessagePermission.PING.permission()])
            .permits(rq.permission())
        )
    )
    assert only_ping.restriction is not None
    assert only_ping.restriction(MessagePermission.PING)
    assert not only_ping.restriction(MessagePermission.MESSAGE)
    assert not only_ping.restriction(MessagePermission.OTHER)
    b_config = {"firewall": FirewallRules(only_ping), "firewall_view": message_kind}
    async with networks({"firewall": FirewallRules.allow_all()}, b_config) as (a, b):
        await link(a, b)
        async with serving(b, lambda rq: "pong"):
            assert await a.send_request(b.peer_id, "Ping") == "pong"
            for rejected in ({"Message": "hi"}, "Other"):
                error = await outcome(a.send_request(b.peer_id, rejected))
                assert isinstance(error, RequestConnectionClosedError), error
                event = await next_event(b, InboundRequestFailed, skip=CONNECTION_NOISE)
                assert event.failure is InboundFailure.NOT_PERMITTED
    # A Network<Message, str, MessagePermission> with allow_all builds (and starts).
    net: Network[Any, str] = Network(
        firewall=FirewallRules.allow_all(), firewall_view=message_kind, mdns=None
    )
    async with net:
        assert net.peer_id


# -- the firewall view (the seed's FwRequest) --------------------------------------------


@dataclass(frozen=True)
class Read:
    key: str


@dataclass(frozen=True)
class Write:
    key: str
    data: str


class RequestType(PermissionEnum):
    READ = 0
    WRITE = 1


def decode(rq: dict[str, Any]) -> Read | Write:
    return Read(**rq["Read"]) if "Read" in rq else Write(**rq["Write"])


def request_type(rq: dict[str, Any]) -> RequestType:
    """``from_request``: the firewall sees only the kind, never key or data."""
    return RequestType.READ if isinstance(decode(rq), Read) else RequestType.WRITE


async def test_firewall_view_maps_requests_to_kinds() -> None:
    assert request_type({"Read": {"key": "k"}}) is RequestType.READ
    assert request_type({"Write": {"key": "k", "data": "d"}}) is RequestType.WRITE
    b_config = {
        "firewall": FirewallRules(Rule.permissions([RequestType.READ])),
        "firewall_view": request_type,
    }
    async with networks({"firewall": FirewallRules.allow_all()}, b_config) as (a, b):
        await link(a, b)
        async with serving(b, lambda rq: f"value of {decode(rq).key}"):
            assert await a.send_request(b.peer_id, {"Read": {"key": "k"}}) == "value of k"
            write = {"Write": {"key": "k", "data": "d"}}
            assert isinstance(await outcome(a.send_request(b.peer_id, write)), Exception)


# -- a Network with firewall, request and event channels ---------------------------------


async def test_network_with_every_channel_configured_answers() -> None:
    config = NetworkConfig(
        requests_channel=ChannelConfig(10, ChannelSinkConfig.BLOCK),
        events_channel=ChannelConfig(10, ChannelSinkConfig.BUFFER_LATEST),
        firewall_channel_capacity=10,
        mdns=None,
    )
    with pytest.raises(InvalidArgumentError):
        NetworkConfig(request_timeout=0)
    a: Network[str, dict[str, str]] = Network(firewall=FirewallRules.allow_all(), config=config)
    b: Network[str, dict[str, str]] = Network(firewall=FirewallRules.allow_all(), config=config)
    async with a, b:
        await link(a, b)
        async with serving(b, lambda rq: {"Response": rq}):
            assert await a.send_request(b.peer_id, "Request") == {"Response": "Request"}


# -- a custom transport (the seed's build_with_transport) --------------------------------


async def test_plain_tcp_transport_answers_and_refuses_websocket() -> None:
    def tcp_only() -> Network[str, str]:
        return Network(firewall=FirewallRules.allow_all(), transports=[TcpTransport()], mdns=None)

    async with tcp_only() as a, tcp_only() as b:
        # No WebSocket transport: not listenable (MultiaddrNotSupportedError, a ListenError).
        with pytest.raises((ListenError, InvalidArgumentError)):
            await b.start_listening("/ip4/127.0.0.1/tcp/0/ws")
        await link(a, b)
        async with serving(b, lambda rq: rq.upper()):
            assert await asyncio.wait_for(a.send_request(b.peer_id, "str"), 5) == "STR"
