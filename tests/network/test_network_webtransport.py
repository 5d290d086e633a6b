"""The Network façade over WebTransport: requests and the firewall as over TCP and QUIC.

Networks are given ``transports=[WebTransportTransport()]``; the listener's address
carries its ``/certhash`` components, which is all a dialler needs to reach it.
"""

from __future__ import annotations

from typing import Any

from aiop2p._aio.webtransport_connection import WebTransportConnection
from aiop2p._aio.webtransport_transport import WebTransportTransport
from aiop2p.errors import UnsupportedProtocolsError
from aiop2p.network import FirewallRules, Rule

from .conftest import networks, outcome, serving

WT_LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1/webtransport"


def wt(**kwargs: Any) -> dict[str, Any]:
    return {"transports": [WebTransportTransport()], "dcutr": None, "relay_client": False, **kwargs}


async def test_requests_over_webtransport() -> None:
    async with networks(wt(firewall=FirewallRules.allow_all()), wt()) as (server, client):
        addr = await server.start_listening(WT_LOOPBACK)
        assert "/certhash/" in str(addr)
        client.add_address(server.peer_id, addr)
        async with serving(server, lambda rq: {"echo": rq}) as seen:
            for i in range(20):
                assert await client.send_request(server.peer_id, i) == {"echo": i}
            big = "z" * 500_000
            assert await client.send_request(server.peer_id, big) == {"echo": big}
        assert len(seen) == 21
        (conn,) = client._node.connections_to(server.peer_id)
        assert isinstance(conn, WebTransportConnection)


async def test_firewall_rules_over_webtransport() -> None:
    async with networks(wt(firewall=FirewallRules.allow_all()), wt(), wt()) as (
        server,
        friend,
        stranger,
    ):
        addr = await server.start_listening(WT_LOOPBACK)
        friend.add_address(server.peer_id, addr)
        stranger.add_address(server.peer_id, addr)
        server.set_peer_rule(stranger.peer_id, Rule.reject_all())
        async with serving(server) as seen:
            assert await friend.send_request(server.peer_id, "hello") == "hello"
            rejected = await outcome(stranger.send_request(server.peer_id, "x"))
            assert isinstance(rejected, UnsupportedProtocolsError), rejected
        assert [rq.peer for rq in seen] == [friend.peer_id]
