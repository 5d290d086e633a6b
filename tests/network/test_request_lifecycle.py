"""The seed's behaviour tests (a request answered, one dropped, one timed out) through the
``Network`` API.

Setup as in the seed's ``init_swarm``: ``allow_all`` rules, the firewall receiver dropped
(``close_firewall_requests``), messages ``Ping(bytes)``/``Pong(bytes)`` as JSON byte arrays.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from aiop2p.errors import (
    InvalidStateError,
    OutboundFailure,
    RequestConnectionClosedError,
    ResponseOmittedError,
)
from aiop2p.events import (
    ConnectionClosed,
    ConnectionEstablished,
    InboundFailure,
    InboundRequestFailed,
    NewListenAddr,
)
from aiop2p.network import Network
from aiop2p.network.firewall import FirewallRules

from .conftest import CAP, drain_events, link, new_network, next_event, next_request, outcome

PING = list(b"ping")
PONG = list(b"pong")

pytestmark = pytest.mark.timeout(30)


def peer() -> Network[Any, Any]:
    net = new_network(firewall=FirewallRules.allow_all())
    return net


async def test_hundred_pings_get_pongs_with_increasing_request_ids() -> None:
    async with peer() as peer1, peer() as peer2:
        peer1.close_firewall_requests()
        peer2.close_firewall_requests()
        await link(peer2, peer1)
        ids: list[int] = []

        async def serve() -> None:
            async for request in peer1.requests():
                assert request.request == PING
                assert request.peer == peer2.peer_id
                ids.append(request.request_id)
                await request.respond(PONG)

        server = asyncio.create_task(serve())
        try:
            for _ in range(100):
                assert await peer2.send_request(peer1.peer_id, PING) == PONG
        finally:
            server.cancel()
        assert len(ids) == 100
        assert ids == sorted(set(ids)), "request ids are unique and increasing"
        # Nothing but the connection (and the listen address) happened on either side.
        ev1 = drain_events(peer1)
        ev2 = drain_events(peer2)
        assert [type(e) for e in ev1] == [NewListenAddr, ConnectionEstablished], ev1
        assert [type(e) for e in ev2] == [ConnectionEstablished], ev2


async def test_requester_shutdown_fails_the_inbound_request_as_connection_closed() -> None:
    async with peer() as peer1:
        peer1.close_firewall_requests()
        peer2 = peer()
        async with peer2:
            peer2.close_firewall_requests()
            await link(peer2, peer1)
            pending = asyncio.create_task(outcome(peer2.send_request(peer1.peer_id, PING)))
            request = await next_request(peer1)
            assert request.request == PING
            assert request.peer == peer2.peer_id
            assert not pending.done()
            assert [type(e) for e in drain_events(peer2)] == [ConnectionEstablished]
            # Shut peer2 down completely while peer1 still holds the unanswered request.
        assert (await pending).kind is OutboundFailure.SHUTDOWN
        await next_event(peer1, ConnectionEstablished, skip=(NewListenAddr,))
        closed = await next_event(peer1, ConnectionClosed)
        assert closed.peer == peer2.peer_id
        failed = await next_event(peer1, InboundRequestFailed)
        assert failed == InboundRequestFailed(
            request.request_id, peer2.peer_id, InboundFailure.CONNECTION_CLOSED
        )
        with pytest.raises(InvalidStateError):
            await request.respond(PONG)
        assert drain_events(peer1) == []


async def test_dropped_request_is_closed_for_the_requester_omitted_for_the_responder() -> None:
    async with peer() as peer1, peer() as peer2:
        peer1.close_firewall_requests()
        peer2.close_firewall_requests()
        await link(peer2, peer1)
        pending = asyncio.create_task(outcome(peer2.send_request(peer1.peer_id, PING)))
        request = await next_request(peer1)
        request_id = request.request_id
        request.drop()
        result = await pending
        # The requester sees a response-less close as CONNECTION_CLOSED, never a timeout.
        assert isinstance(result, ResponseOmittedError)
        assert isinstance(result, RequestConnectionClosedError)
        assert result.kind is OutboundFailure.CONNECTION_CLOSED
        assert str(result).startswith(OutboundFailure.CONNECTION_CLOSED.value)
        # compat: omitted responses are reported (by the responder).
        failed = await next_event(
            peer1, InboundRequestFailed, skip=(NewListenAddr, ConnectionEstablished)
        )
        assert failed == InboundRequestFailed(
            request_id, peer2.peer_id, InboundFailure.RESPONSE_OMISSION
        )
        assert [type(e) for e in drain_events(peer2)] == [ConnectionEstablished]
        assert drain_events(peer1) == []
        del request
        gc.collect()
        await asyncio.sleep(0)
        assert drain_events(peer1) == [], "a dropped request is reported exactly once"
        # The connection survives (only the request failed) and keeps working.
        assert peer2.is_connected(peer1.peer_id)
        assert CAP
