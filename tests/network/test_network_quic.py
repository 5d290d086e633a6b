"""The Network façade over QUIC and WebTransport: requests, firewall and refusals as over
TCP.

Networks are given ``transports=[QuicTransport()]`` (listening on ``/udp/0/quic-v1``) or
``[WebTransportTransport()]`` (``/quic-v1/webtransport``, whose listen address carries the
``/certhash`` components a dialler needs); the rest is what the TCP tests check, on the
stream surface QUIC offers instead of Yamux.
"""

from __future__ import annotations

from typing import Any

import pytest

from aiop2p._aio.quic_connection import QuicConnection
from aiop2p._aio.quic_transport import QuicTransport
from aiop2p._aio.webtransport_connection import WebTransportConnection
from aiop2p._aio.webtransport_transport import WebTransportTransport
from aiop2p.errors import UnsupportedProtocolsError
from aiop2p.network import FirewallRules, Rule

from .conftest import networks, outcome, serving

QUIC_LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"
WT_LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1/webtransport"

KINDS = {
    "quic": (QuicTransport, QUIC_LOOPBACK, QuicConnection),
    "webtransport": (WebTransportTransport, WT_LOOPBACK, WebTransportConnection),
}
kinds = pytest.mark.parametrize("kind", list(KINDS))


def config(kind: str, **kwargs: Any) -> dict[str, Any]:
    transport = KINDS[kind][0]
    return {"transports": [transport()], "dcutr": None, "relay_client": False, **kwargs}


def quic(**kwargs: Any) -> dict[str, Any]:
    return config("quic", **kwargs)


@kinds
async def test_requests(kind: str) -> None:
    _, listen, connection_class = KINDS[kind]
    async with networks(config(kind, firewall=FirewallRules.allow_all()), config(kind)) as (
        server,
        client,
    ):
        addr = await server.start_listening(listen)
        if kind == "webtransport":
            assert "/certhash/" in str(addr)
        client.add_address(server.peer_id, addr)
        async with serving(server, lambda rq: {"echo": rq}) as seen:
            for i in range(20):
                assert await client.send_request(server.peer_id, i) == {"echo": i}
            big = "z" * 500_000
            assert await client.send_request(server.peer_id, big) == {"echo": big}
        assert len(seen) == 21
        (conn,) = client._node.connections_to(server.peer_id)
        assert isinstance(conn, connection_class)


@kinds
async def test_firewall_rules(kind: str) -> None:
    _, listen, _ = KINDS[kind]
    async with networks(
        config(kind, firewall=FirewallRules.allow_all()), config(kind), config(kind)
    ) as (server, friend, stranger):
        addr = await server.start_listening(listen)
        friend.add_address(server.peer_id, addr)
        stranger.add_address(server.peer_id, addr)
        server.set_peer_rule(stranger.peer_id, Rule.reject_all())
        async with serving(server) as seen:
            assert await friend.send_request(server.peer_id, "hello") == "hello"
            rejected = await outcome(stranger.send_request(server.peer_id, "x"))
            assert isinstance(rejected, UnsupportedProtocolsError), rejected
        assert [rq.peer for rq in seen] == [friend.peer_id]


async def test_unsupported_protocol_over_quic() -> None:
    """The multistream "na" reaches the requester before the stream's reset."""
    async with networks(
        quic(firewall=FirewallRules.allow_all()),
        quic(firewall=FirewallRules.allow_all(), protocols=("/other/1.0.0",)),
    ) as (a, b):
        addr = await b.start_listening(QUIC_LOOPBACK)
        a.add_address(b.peer_id, addr)
        error = await outcome(a.send_request(b.peer_id, "x"))
        assert isinstance(error, UnsupportedProtocolsError), error
