"""A js-libp2p page in headless Chromium dials aiop2p over WebTransport
(``/quic-v1/webtransport/certhash/…``: no domain, no certificate authority): ping, requests
through the firewall, a rejected peer refused, and an address with a wrong certhash refused."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from aiop2p._wire import multibase
from aiop2p.events import InboundFailure
from aiop2p.multiaddr import Multiaddr
from aiop2p.network import Network
from aiop2p.network.firewall import Rule

from .harness import PAGE_PEER, PAGE_SEED, PageServer, echo_network, failure_of, listen_addr

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

# sha2-256 multihash (code 0x12, 32 bytes) of something that is not the listener's certificate
WRONG_CERTHASH = multibase.encode(
    "u", b"\x12\x20" + hashlib.sha256(b"not the certificate").digest()
)


@pytest_asyncio.fixture
async def net() -> AsyncIterator[Network[Any, Any]]:
    async with echo_network("/ip4/127.0.0.1/udp/0/quic-v1/webtransport") as network:
        yield network


def with_certhashes(addr: str, certhash: str) -> str:
    """``addr`` with every ``/certhash`` value replaced by ``certhash``."""
    parts = [
        f"/{name}" + (f"/{certhash if name == 'certhash' else value}" if value is not None else "")
        for name, value in Multiaddr(addr).components()
    ]
    return "".join(parts)


async def test_listen_address_announces_certhashes(net: Network[Any, Any]) -> None:
    names = Multiaddr(listen_addr(net)).protocol_names()
    assert names[:4] == ("ip4", "udp", "quic-v1", "webtransport")
    assert names.count("certhash") >= 1


async def test_dial_ping_and_requests(browser: PageServer, net: Network[Any, Any]) -> None:
    net.set_peer_rule(PAGE_PEER, Rule.allow_all())
    ops: list[dict[str, Any]] = [
        {"op": "ping"},
        {"op": "request", "body": {"n": 1}},
        {"op": "request", "body": "héllo"},
    ]
    report = await browser.visit(listen_addr(net), PAGE_SEED, ops)
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
    assert refused["ok"] is False
    assert refused["name"] == "UnexpectedEOFError", refused
    assert await failure_of(net, PAGE_PEER) is InboundFailure.NOT_PERMITTED


async def test_wrong_certhash_refused(browser: PageServer, net: Network[Any, Any]) -> None:
    # The browser checks the listener's certificate against the address's hashes alone.
    net.set_peer_rule(PAGE_PEER, Rule.allow_all())
    addr = with_certhashes(listen_addr(net), WRONG_CERTHASH)
    assert addr != listen_addr(net)
    report = await browser.visit(addr, PAGE_SEED, [{"op": "ping"}])
    assert report["dial"]["ok"] is False
    # the browser refuses the certificate itself, before any libp2p byte
    assert report["dial"]["name"] == "WebTransportError", report
    assert report["results"] == []
    assert not net.is_connected(PAGE_PEER)
