"""A js-libp2p peer sends requests on /p2p/1.0.0 through the aiop2p firewall."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from aiop2p.events import InboundFailure, InboundRequestFailed
from aiop2p.identity import PeerId
from aiop2p.network import ApprovalRequest, Network, PeerRuleQuery
from aiop2p.network.firewall import Rule

from .peers import PeerCommandError, PeerProcess, js_command, start_peer

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]
CAP = 10.0


@pytest_asyncio.fixture
async def js() -> AsyncIterator[PeerProcess]:
    async with start_peer(js_command()) as peer:
        yield peer


@pytest_asyncio.fixture
async def net() -> AsyncIterator[Network[Any, Any]]:
    network: Network[Any, Any] = Network(mdns=None, dcutr=None, firewall_timeout=0.5)
    async with network:
        await network.start_listening("/ip4/127.0.0.1/tcp/0")

        async def answer() -> None:
            async for request in network.requests():
                await request.respond({"echo": request.request})

        server = asyncio.create_task(answer())
        try:
            yield network
        finally:
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)


def target(net: Network[Any, Any]) -> str:
    return str(net.listeners()[0].addrs[0].with_peer_id(net.peer_id))


async def js_request(js: PeerProcess, net: Network[Any, Any], value: object) -> object:
    reply = await js.echo(target(net), json.dumps(value).encode())
    return json.loads(reply)


async def failure_of(net: Network[Any, Any], peer: PeerId) -> InboundFailure:
    async with asyncio.timeout(CAP):
        async for event in net.events():
            if isinstance(event, InboundRequestFailed) and event.peer == peer:
                return event.failure
    raise AssertionError("events ended")


async def test_allowed_by_peer_rule(js: PeerProcess, net: Network[Any, Any]) -> None:
    net.set_peer_rule(PeerId.from_string(js.peer_id), Rule.allow_all())
    assert await js_request(js, net, {"op": "ping"}) == {"echo": {"op": "ping"}}


async def test_rejected_by_rule(js: PeerProcess, net: Network[Any, Any]) -> None:
    peer = PeerId.from_string(js.peer_id)
    # Reject-all: the protocol is not even offered to this peer.
    net.set_peer_rule(peer, Rule.reject_all())
    with pytest.raises(PeerCommandError):
        await js_request(js, net, "blocked")
    # A restriction that says no: the request reaches the firewall and is rejected.
    net.set_peer_rule(peer, Rule.restricted(lambda rq: rq == "allowed"))
    assert await js_request(js, net, "allowed") == {"echo": "allowed"}
    with pytest.raises(PeerCommandError):
        await js_request(js, net, "other")
    assert await failure_of(net, peer) is InboundFailure.NOT_PERMITTED


async def test_rejected_by_ask_answered_no(js: PeerProcess, net: Network[Any, Any]) -> None:
    peer = PeerId.from_string(js.peer_id)
    questions: list[object] = []

    async def firewall() -> None:
        async for question in net.firewall_requests():
            questions.append(question)
            if isinstance(question, PeerRuleQuery):
                question.answer(Rule.ask())
            elif isinstance(question, ApprovalRequest):
                question.approve(question.request == "yes please")

    answering = asyncio.create_task(firewall())
    try:
        assert await js_request(js, net, "yes please") == {"echo": "yes please"}
        with pytest.raises(PeerCommandError):
            await js_request(js, net, "no thanks")
        assert await failure_of(net, peer) is InboundFailure.NOT_PERMITTED
    finally:
        answering.cancel()
        await asyncio.gather(answering, return_exceptions=True)
    kinds = [type(q).__name__ for q in questions]
    assert kinds == ["PeerRuleQuery", "ApprovalRequest", "ApprovalRequest"]


async def test_unanswered_firewall_times_out(js: PeerProcess, net: Network[Any, Any]) -> None:
    # No rule and nobody answering the rule query: rejected at once (compat: nobody answers
    # the firewall).
    peer = PeerId.from_string(js.peer_id)
    with pytest.raises(PeerCommandError):
        await js_request(js, net, "anyone?")
    assert await failure_of(net, peer) is InboundFailure.NOT_PERMITTED
