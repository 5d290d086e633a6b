"""A js-libp2p page in headless Chromium dials aiop2p over WebSocket (/ws, Noise, Yamux) at
an address naming another peer: refused.  (Ping, requests and the firewall over WebSocket:
``test_firewall.py``.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from aiop2p import KeyPair
from aiop2p.network import Network
from aiop2p.network.firewall import Rule

from .harness import PAGE_PEER, PAGE_SEED, PageServer, echo_network

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]


@pytest_asyncio.fixture
async def net() -> AsyncIterator[Network[Any, Any]]:
    async with echo_network("/ip4/127.0.0.1/tcp/0/ws") as network:
        yield network


async def test_wrong_peer_id_refused(browser: PageServer, net: Network[Any, Any]) -> None:
    # The address names another peer: Noise proves aiop2p's own id and the page hangs up.
    net.set_peer_rule(PAGE_PEER, Rule.allow_all())
    other = KeyPair.generate().peer_id
    addr = str(net.listeners()[0].addrs[0].with_peer_id(other))
    report = await browser.visit(addr, PAGE_SEED, [{"op": "ping"}])
    assert report["dial"]["ok"] is False
    assert report["dial"]["name"] == "EncryptionFailedError", report
    assert report["results"] == []
