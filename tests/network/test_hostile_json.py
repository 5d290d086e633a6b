"""Issue 8 item 6: hostile JSON (nested far beyond any sane depth) on both request paths.

Real ``Network`` pairs on loopback TCP.  The deep value is a 900 KB ``[[[[…`` that used
to raise ``RecursionError`` out of the JSON codec: a traceback in the server's log and a
non-``P2PError`` out of ``send_request``.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from aiop2p.errors import P2PError, RequestConnectionClosedError
from aiop2p.events import InboundFailure, InboundRequestFailed
from aiop2p.network.codecs import CodecError, RawCodec
from aiop2p.network.firewall import FirewallRules

from .conftest import CONNECTION_NOISE, link, networks, next_event, outcome, serving

pytestmark = pytest.mark.timeout(30)

ALLOW: dict[str, Any] = {"firewall": FirewallRules.allow_all()}
RAW: dict[str, Any] = {**ALLOW, "codec": RawCodec()}
DEEP = b"[" * 900_000
"""900 KB of open brackets: under the 1 MiB request limit, far over any nesting limit."""


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_server_maps_a_deep_json_request_to_invalid_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiop2p")
    async with networks(RAW, ALLOW, ALLOW) as (attacker, server, other):
        await link(attacker, server)
        await link(other, server)
        async with serving(server, lambda rq: {"echo": rq}):
            error = await outcome(attacker.send_request(server.peer_id, DEEP))
            assert isinstance(error, RequestConnectionClosedError), error
            event = await next_event(server, InboundRequestFailed, skip=CONNECTION_NOISE)
            assert event.failure is InboundFailure.INVALID_REQUEST
            # The server keeps serving, the attacker's connection and everyone else.
            assert await other.send_request(server.peer_id, [[1]]) == {"echo": [[1]]}
            assert await attacker.send_request(server.peer_id, b"[2]") == b'{"echo":[2]}'
    assert tracebacks(caplog) == []


async def test_client_maps_a_deep_json_response_to_a_request_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiop2p")
    async with networks(ALLOW, RAW) as (client, server):
        await link(client, server)
        async with serving(server, lambda rq: DEEP if rq == b'"deep"' else rq):
            error = await outcome(client.send_request(server.peer_id, "deep"))
            assert isinstance(error, RequestConnectionClosedError), error
            assert isinstance(error.__cause__, CodecError), error.__cause__
            assert "nested" in str(error)
            assert await client.send_request(server.peer_id, {"a": [1]}) == {"a": [1]}
    assert tracebacks(caplog) == []


async def test_sending_a_value_too_deep_to_encode_is_a_codec_error() -> None:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    async with networks(ALLOW, ALLOW) as (client, server):
        await link(client, server)
        error = await outcome(client.send_request(server.peer_id, value))
        assert isinstance(error, CodecError) and isinstance(error, P2PError), error
