"""Issue 8, item 12: errors are what the docs say (request side), on loopback TCP."""

from __future__ import annotations

from typing import Any

import aiop2p
from aiop2p.errors import (
    LimitExceededError,
    OutboundFailure,
    RequestError,
    RequestRefusedError,
    RequestTooLargeError,
)
from aiop2p.events import InboundFailure, InboundRequestFailed
from aiop2p.network.firewall import FirewallRules

from .conftest import CONNECTION_NOISE, drain_events, link, networks, next_event, outcome

ALLOW: dict[str, Any] = {"firewall": FirewallRules.allow_all(), "dcutr": None}


async def test_an_oversized_request_is_a_request_error() -> None:
    async with networks({**ALLOW, "max_request_bytes": 100}, ALLOW) as (client, server):
        await link(client, server)
        error = await outcome(client.send_request(server.peer_id, "x" * 200))
        assert isinstance(error, RequestError), repr(error)
        assert isinstance(error, RequestTooLargeError) and isinstance(error, LimitExceededError)
        assert error.kind is OutboundFailure.REQUEST_TOO_LARGE
        assert "max_request_bytes" in str(error)
        assert isinstance(error, aiop2p.RequestError)  # the documented import path
        assert not [e for e in drain_events(server) if isinstance(e, InboundRequestFailed)]


async def test_a_request_above_the_responders_limit_is_refused() -> None:
    """The responder's own limit is smaller: it resets unread (never a silent close)."""
    async with networks(ALLOW, {**ALLOW, "max_request_bytes": 100}) as (client, server):
        await link(client, server)
        error = await outcome(client.send_request(server.peer_id, "x" * 200))
        assert isinstance(error, RequestRefusedError), repr(error)
        event = await next_event(server, InboundRequestFailed, skip=CONNECTION_NOISE)
        assert event.failure is InboundFailure.INVALID_REQUEST
