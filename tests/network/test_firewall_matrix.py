"""The seed's firewall tests: permissions (every rule combination) and asking.

Each is run twice: as the seed's randomised matrix (100 seeded iterations; the seed is in
every failure message, ``AIOP2P_TEST_SEED`` replays one) and as a deterministic matrix of
every combination, so each branch is covered on every run.

Types: ``Request = "Ping" | "Other"`` (JSON unit variants), ``Response = "Pong"``; the
firewall view of a request is its :class:`RequestPermission` (bit 0 Ping, bit 1 Other).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from aiop2p.errors import (
    OutboundFailure,
    RequestConnectionClosedError,
    RequestError,
    RequestTimeoutError,
    UnsupportedProtocolsError,
)
from aiop2p.events import InboundFailure, InboundRequestFailed
from aiop2p.network import ApprovalRequest, Network, PeerRuleQuery
from aiop2p.network.firewall import FirewallRules, Rule
from aiop2p.network.permissions import FirewallPermission, PermissionEnum

from .conftest import (
    CONNECTION_NOISE,
    FirewallInbox,
    drain_events,
    link,
    new_network,
    next_event,
    next_request,
    outcome,
)

pytestmark = pytest.mark.timeout(60)

ITERATIONS = 100


class RequestPermission(PermissionEnum):
    PING = 0
    OTHER = 1


def view(request: str) -> RequestPermission:
    """The firewall view (the seed's ``FwRequest``): the request's kind."""
    return RequestPermission[request.upper()]


def restricted(allowed: RequestPermission) -> Rule[RequestPermission]:
    """The seed's ``restricted(x)``: a Restricted rule over the firewall view."""
    return Rule.restricted(
        lambda rq: (
            FirewallPermission.none()
            .add_permissions([allowed.permission()])
            .permits(rq.permission())
        ),
        name=f"only-{allowed.name.lower()}",
    )


RULES: dict[str, Rule[Any]] = {
    "allow": Rule.allow_all(),
    "reject": Rule.reject_all(),
    "ping": restricted(RequestPermission.PING),
    "other": restricted(RequestPermission.OTHER),
}


def seed_of_run() -> int:
    env = os.environ.get("AIOP2P_TEST_SEED")
    return int(env) if env else random.randrange(1 << 32)


def rb(rng: random.Random) -> bool:
    """The seed's ``rb()``: a random byte b, ``b % 5 != 0``."""
    return rng.randrange(256) % 5 != 0


def peer(**kwargs: Any) -> Network[str, str]:
    return new_network(firewall=FirewallRules.empty(), firewall_view=view, **kwargs)


async def expect_b_reject(a: Network[Any, Any], b: Network[Any, Any]) -> None:
    event = await next_event(b, InboundRequestFailed, skip=CONNECTION_NOISE)
    assert event.peer == a.peer_id
    assert event.failure is InboundFailure.NOT_PERMITTED


def assert_quiet(b: Network[Any, Any]) -> None:
    """Nothing but connection noise is left on B (no stray failure for a later step)."""
    left = [e for e in drain_events(b) if not isinstance(e, CONNECTION_NOISE)]
    assert left == [], f"unexpected events on B: {left}"


# -- permissions: every rule combination ----------------------------------------------


@asynccontextmanager
async def permission_peers() -> AsyncIterator[tuple[Network[str, str], Network[str, str]]]:
    async with peer() as a, peer() as b:
        for side in (a, b):
            side.close_firewall_requests()  # A: every receiver dropped; B: firewall's
        a.requests().close_receiver()
        await link(a, b)
        yield a, b


async def permission_iteration(
    a: Network[str, str], b: Network[str, str], default: str, individual: str | None, req: str
) -> None:
    if individual is not None:
        b.set_peer_rule(a.peer_id, RULES[individual])
    b.set_firewall_default(RULES[default])
    effective = individual or default
    allowed = effective == "allow" or effective == req.lower()
    result_task = asyncio.ensure_future(outcome(a.send_request(b.peer_id, req)))
    if allowed:
        request = await next_request(b)
        assert request.peer == a.peer_id
        assert request.request == req
        await request.respond("Pong")
        assert await result_task == "Pong"
    elif effective == "reject":
        # The protocol is not offered: the seed accepts ConnectionClosed too, ours is
        # always UnsupportedProtocols, and B reports nothing.
        result = await result_task
        assert isinstance(result, UnsupportedProtocolsError), result
        assert result.kind is OutboundFailure.UNSUPPORTED_PROTOCOLS
    else:
        result = await result_task
        assert isinstance(result, RequestTimeoutError | RequestConnectionClosedError), result
        await expect_b_reject(a, b)
    assert_quiet(b)
    b.remove_peer_rule(a.peer_id)
    b.remove_firewall_default()
    a.remove_peer_rule(b.peer_id)
    a.remove_firewall_default()


async def test_firewall_permissions_random_matrix() -> None:
    seed = seed_of_run()
    rng = random.Random(seed)
    async with permission_peers() as (a, b):
        for i in range(ITERATIONS):
            default = list(RULES)[rng.randrange(256) % 4]
            individual = list(RULES)[rng.randrange(256) % 4] if rng.randrange(256) % 2 else None
            req = "Ping" if rng.randrange(256) % 2 else "Other"
            try:
                await permission_iteration(a, b, default, individual, req)
            except (AssertionError, pytest.fail.Exception) as exc:
                raise AssertionError(
                    f"seed={seed} iteration={i} default={default} individual={individual} "
                    f"request={req}: {exc}"
                ) from exc


async def test_firewall_permissions_every_combination() -> None:
    async with permission_peers() as (a, b):
        for default, individual, req in itertools.product(RULES, [None, *RULES], ["Ping", "Other"]):
            try:
                await permission_iteration(a, b, default, individual, req)
            except (AssertionError, pytest.fail.Exception) as exc:
                raise AssertionError(f"{default=} {individual=} {req=}: {exc}") from exc


# -- asking ---------------------------------------------------------------------------

E2_RULES = {"allow": Rule.allow_all(), "reject": Rule.reject_all(), "ask": Rule.ask()}


@asynccontextmanager
async def ask_peers() -> AsyncIterator[tuple[Network[str, str], Network[str, str], FirewallInbox]]:
    async with peer() as a, peer() as b:
        a.close_firewall_requests()
        a.requests().close_receiver()
        await link(a, b)
        inbox = FirewallInbox(b)
        try:
            yield a, b, inbox
        finally:
            await inbox.aclose()


async def ask_iteration(
    a: Network[str, str], b: Network[str, str], inbox: FirewallInbox, rule: str, approval: str
) -> None:
    allowed = rule == "allow" or (rule == "ask" and approval == "allow")
    result_task = asyncio.ensure_future(outcome(a.send_request(b.peer_id, "Ping")))
    query = await inbox.next()
    assert not isinstance(query, ApprovalRequest), (
        "Unexpected RequestApproval before PeerSpecificRule"
    )
    assert isinstance(query, PeerRuleQuery)
    assert query.peer == a.peer_id
    assert not result_task.done(), "the rule query comes before A's result"
    if rule == "drop":
        query.drop()
    else:
        assert query.answer(E2_RULES[rule])
    if rule == "ask":
        approve = await inbox.next()
        assert isinstance(approve, ApprovalRequest), "Unexpected double PeerRuleQuery"
        assert approve.peer == a.peer_id
        assert approve.request is RequestPermission.PING
        if approval == "allow":
            assert approve.approve(True)
        elif approval == "reject":
            assert approve.approve(False)
        else:
            approve.drop()
    if allowed:
        request = await next_request(b)
        assert request.peer == a.peer_id
        await request.respond("Pong")
        assert await result_task == "Pong"
    else:
        if rule == "drop":
            # The first query may have been the proactive one for A's new connection: the
            # request then asks again; every further rule query is dropped too.
            while not result_task.done():
                getter = asyncio.ensure_future(inbox.queue.get())
                await asyncio.wait([getter, result_task], return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    break
                again = getter.result()
                assert not isinstance(again, ApprovalRequest), "unexpected RequestApproval"
                again.drop()
        result = await result_task
        assert isinstance(result, RequestError), f"expected an error, got {result!r}"
        assert inbox.empty(), "no further firewall question for a decided request"
        if isinstance(result, RequestTimeoutError | RequestConnectionClosedError):
            await expect_b_reject(a, b)
        else:
            assert isinstance(result, UnsupportedProtocolsError), result
            assert rule == "reject"
    assert_quiet(b)
    # Answers became persistent peer rules; remove so that the next request asks again.
    b.remove_peer_rule(a.peer_id)


async def test_firewall_ask_random_matrix() -> None:
    seed = seed_of_run()
    rng = random.Random(seed)
    async with ask_peers() as (a, b, inbox):
        for i in range(ITERATIONS):
            rule = ["allow", "allow", "reject", "ask", "ask", "drop"][rng.randrange(256) % 6]
            approval = ["allow", "allow", "reject", "drop"][rng.randrange(256) % 4]
            try:
                await ask_iteration(a, b, inbox, rule, approval)
            except (AssertionError, pytest.fail.Exception) as exc:
                raise AssertionError(
                    f"seed={seed} iteration={i} rule={rule} approval={approval}: {exc}"
                ) from exc


@pytest.mark.parametrize("rule", ["allow", "reject", "ask", "drop"])
async def test_firewall_ask_every_combination(rule: str) -> None:
    async with ask_peers() as (a, b, inbox):
        for approval in ["allow", "reject", "drop"]:
            try:
                await ask_iteration(a, b, inbox, rule, approval)
            except (AssertionError, pytest.fail.Exception) as exc:
                raise AssertionError(f"{rule=} {approval=}: {exc}") from exc


async def test_firewall_ask_answered_by_a_firewall_handler() -> None:
    """The same questions answered by an async ``firewall_handler=`` callback."""
    asked: list[object] = []

    async def handler(question: PeerRuleQuery | ApprovalRequest[Any]) -> None:
        asked.append(question)
        await asyncio.sleep(0)  # an async handler may await (e.g. ask a user)
        if isinstance(question, PeerRuleQuery):
            question.answer(Rule.ask())
        else:
            question.approve(question.request is RequestPermission.PING)

    async with peer() as a, peer(firewall_handler=handler) as b:
        a.close_firewall_requests()
        await link(a, b)
        ping = asyncio.ensure_future(outcome(a.send_request(b.peer_id, "Ping")))
        request = await next_request(b)
        await request.respond("Pong")
        assert await ping == "Pong"
        other = await outcome(a.send_request(b.peer_id, "Other"))
        assert isinstance(other, RequestConnectionClosedError), other
        await expect_b_reject(a, b)
        assert [type(q) for q in asked] == [PeerRuleQuery, ApprovalRequest, ApprovalRequest]
        assert (b.get_firewall_config()).get_rule(a.peer_id) is Rule.ask()


async def test_firewall_handler_that_does_not_answer_rejects() -> None:
    """A ``firewall_handler`` returning without answering counts as a dropped responder."""

    async def handler(question: PeerRuleQuery | ApprovalRequest[Any]) -> None:
        return None

    async with peer() as a, peer(firewall_handler=handler) as b:
        await link(a, b)
        result = await outcome(a.send_request(b.peer_id, "Ping"))
        assert isinstance(result, RequestConnectionClosedError), result
        await expect_b_reject(a, b)
