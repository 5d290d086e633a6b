"""The Network façade over QUIC: requests, firewall and refusals as over TCP.

Networks are given ``transports=[QuicTransport()]`` and listen on ``/udp/0/quic-v1``; the
rest is what the TCP tests check, on the stream surface QUIC offers instead of Yamux.
"""

from __future__ import annotations

from typing import Any

from aiop2p._aio.quic_connection import QuicConnection
from aiop2p._aio.quic_transport import QuicTransport
from aiop2p.errors import UnsupportedProtocolsError
from aiop2p.network import FirewallRules, Rule

from .conftest import networks, outcome, serving

QUIC_LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"


def quic(**kwargs: Any) -> dict[str, Any]:
    return {"transports": [QuicTransport()], "dcutr": None, "relay_client": False, **kwargs}


async def test_requests_over_quic() -> None:
    async with networks(quic(firewall=FirewallRules.allow_all()), quic()) as (server, client):
        addr = await server.start_listening(QUIC_LOOPBACK)
        client.add_address(server.peer_id, addr)
        async with serving(server, lambda rq: {"echo": rq}) as seen:
            for i in range(20):
                assert await client.send_request(server.peer_id, i) == {"echo": i}
            big = "z" * 500_000
            assert await client.send_request(server.peer_id, big) == {"echo": big}
        assert len(seen) == 21
        (conn,) = client._node.connections_to(server.peer_id)
        assert isinstance(conn, QuicConnection)


async def test_firewall_rules_over_quic() -> None:
    async with networks(quic(firewall=FirewallRules.allow_all()), quic(), quic()) as (
        server,
        friend,
        stranger,
    ):
        addr = await server.start_listening(QUIC_LOOPBACK)
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
