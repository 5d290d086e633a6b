"""A js-libp2p page in headless Chromium dials aiop2p over WebSocket (/ws, Noise, Yamux) and
over WebTransport (``/quic-v1/webtransport/certhash/…``: no domain, no certificate
authority): ping, requests through the firewall, a rejected peer and a restricted rule.
What only one transport has is in ``test_websocket.py`` / ``test_webtransport.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from aiop2p.events import InboundFailure
from aiop2p.network import Network
from aiop2p.network.firewall import Rule

from .harness import PAGE_PEER, PAGE_SEED, PageServer, echo_network, failure_of, listen_addr

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

LISTEN = {
    "websocket": "/ip4/127.0.0.1/tcp/0/ws",
    "webtransport": "/ip4/127.0.0.1/udp/0/quic-v1/webtransport",
}


@pytest_asyncio.fixture(params=list(LISTEN))
async def net(request: pytest.FixtureRequest) -> AsyncIterator[Network[Any, Any]]:
    async with echo_network(LISTEN[request.param]) as network:
        yield network


async def test_dial_ping_and_requests(browser: PageServer, net: Network[Any, Any]) -> None:
    net.set_peer_rule(PAGE_PEER, Rule.allow_all())
    ops: list[dict[str, Any]] = [
        {"op": "ping"},
        {"op": "request", "body": {"n": 1}},
        {"op": "request", "body": "héllo"},
    ]
    report = await browser.visit(listen_addr(net), PAGE_SEED, ops)
    assert report["peer_id"] == str(PAGE_PEER)
    assert report["dial"] == {"ok": True, "remote_peer": str(net.peer_id)}, report
    pinged, first, second = report["results"]
    assert pinged["ok"] is True and pinged["rtt_ms"] >= 0
    me = str(PAGE_PEER)
    assert first == {"ok": True, "response": {"echo": {"n": 1}, "from": me}}
    assert second == {"ok": True, "response": {"echo": "héllo", "from": me}}


async def test_rejected_peer_refused(browser: PageServer, net: Network[Any, Any]) -> None:
    net.set_peer_rule(PAGE_PEER, Rule.reject_all())
    ops: list[dict[str, Any]] = [{"op": "ping"}, {"op": "request", "body": "let me in"}]
    report = await browser.visit(listen_addr(net), PAGE_SEED, ops)
    assert report["dial"]["ok"] is True, report
    pinged, refused = report["results"]
    assert pinged["ok"] is True  # ping is for anyone; the request protocol is not offered
    assert refused["ok"] is False
    assert refused["name"] == "UnsupportedProtocolError", refused


async def test_restricted_rule_refuses_one_request(
    browser: PageServer, net: Network[Any, Any]
) -> None:
    net.set_peer_rule(PAGE_PEER, Rule.restricted(lambda request: request == "allowed"))
    ops: list[dict[str, Any]] = [
        {"op": "request", "body": "allowed"},
        {"op": "request", "body": "other"},
    ]
    report = await browser.visit(listen_addr(net), PAGE_SEED, ops)
    allowed, refused = report["results"]
    assert allowed == {"ok": True, "response": {"echo": "allowed", "from": str(PAGE_PEER)}}
    # aiop2p ends the stream without an answer: the page reads an EOF where the answer goes
    assert refused["ok"] is False
    assert refused["name"] == "UnexpectedEOFError", refused
    assert await failure_of(net, PAGE_PEER) is InboundFailure.NOT_PERMITTED
