"""aiop2p's WebTransport listen address announces its certhashes, and a js-libp2p page in
headless Chromium refuses an address with a wrong certhash.  (Ping, requests and the
firewall over WebTransport: ``test_firewall.py``.)"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from aiop2p._wire import multibase
from aiop2p.multiaddr import Multiaddr
from aiop2p.network import Network
from aiop2p.network.firewall import Rule

from .harness import PAGE_PEER, PAGE_SEED, PageServer, echo_network, listen_addr

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
