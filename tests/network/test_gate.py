"""``FirewallGate``: what a request leaves behind once it ends.

A request a rule answers at once never enters the gate, so its end costs one lookup
(``request_finished``); one that waited for a question must leave nothing behind when it
is answered, and withdraw its question when it ends first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiop2p._aio.stream import ConnectionId
from aiop2p.events import RequestId
from aiop2p.identity import KeyPair
from aiop2p.network.firewall import ALLOW_ALL, ASK, FirewallRules, RejectReason
from aiop2p.network.gate import ApprovalRequest, FirewallGate

PEER = KeyPair.generate().peer_id
CONN = ConnectionId(1)
PROTOCOL = "/test/req/1"


def gate(rules: FirewallRules[Any]) -> FirewallGate:
    def spawn(coro: Any, *, name: str | None = None) -> object:
        return asyncio.get_running_loop().create_task(coro, name=name)

    fw = FirewallGate(
        rules, timeout=30.0, capacity=8, handler=None, spawn=spawn, support_changed=lambda: None
    )
    fw.listeners = 1  # someone iterates firewall_requests(): questions are queued
    fw.connection_established(PEER, CONN, inbound=True)
    return fw


def held(fw: FirewallGate, request_id: RequestId) -> bool:
    """Whether the gate or its engine still holds anything of the request."""
    return (
        request_id in fw._decisions
        or request_id in fw._protocols
        or request_id in fw._approvals
        or fw.engine.is_parked(request_id)
    )


async def test_an_approved_request_leaves_nothing_behind() -> None:
    fw = gate(FirewallRules(ASK))
    verdicts: list[RejectReason | None] = []
    fw.decide(RequestId(7), PEER, CONN, "view", verdicts.append, PROTOCOL)
    question = await asyncio.wait_for(fw.next_question(), 5)
    assert isinstance(question, ApprovalRequest) and question.protocol == PROTOCOL
    assert held(fw, RequestId(7)) and verdicts == []
    assert question.approve()
    assert verdicts == [None]
    assert not held(fw, RequestId(7))  # its protocol too, before the request ends
    fw.request_finished(RequestId(7))
    assert verdicts == [None] and not held(fw, RequestId(7))


async def test_a_request_that_ends_first_withdraws_its_question() -> None:
    fw = gate(FirewallRules(ASK))
    verdicts: list[RejectReason | None] = []
    fw.decide(RequestId(8), PEER, CONN, "view", verdicts.append, PROTOCOL)
    question = await asyncio.wait_for(fw.next_question(), 5)
    assert isinstance(question, ApprovalRequest)
    fw.request_finished(RequestId(8))  # e.g. its deadline struck
    assert question.answered  # withdrawn: a late answer is refused
    assert not question.approve()
    assert verdicts == [] and not held(fw, RequestId(8))


async def test_a_request_decided_at_once_is_not_kept() -> None:
    fw = gate(FirewallRules(ALLOW_ALL))
    verdicts: list[RejectReason | None] = []
    fw.decide(RequestId(9), PEER, CONN, "view", verdicts.append, PROTOCOL)
    assert verdicts == [None] and not held(fw, RequestId(9))
    fw.request_finished(RequestId(9))
    fw.request_finished(RequestId(10))  # never seen: nothing to do
    assert verdicts == [None]
