"""Firewall rules, their declarative form and the decision engine.

Everything is synchronous and socket-free: the engine is driven with facts and its actions
are compared with what the Network must do (docs/network.md; the fixes of the seed's
firewall quirks are the "compat:" entries of docs/compat.md).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings, target
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aiop2p._aio.stream import ConnectionId
from aiop2p.errors import InvalidArgumentError, InvalidStateError
from aiop2p.identity import KeyPair, PeerId
from aiop2p.network.firewall import (
    ALLOW_ALL,
    ASK,
    REJECT_ALL,
    AskApproval,
    CancelApproval,
    CancelRuleQuery,
    Deliver,
    FirewallAction,
    FirewallEngine,
    FirewallLimits,
    FirewallRules,
    InvalidFirewallConfigError,
    QueryRule,
    Reject,
    RejectReason,
    RequestId,
    Rule,
    RuleKind,
    SupportChanged,
)
from aiop2p.network.permissions import FirewallPermission, PermissionEnum

NP = RejectReason.NOT_PERMITTED
CC = RejectReason.CONNECTION_CLOSED


class Req(PermissionEnum):
    """The firewall view of E's requests: Ping -> bit 0, Other -> bit 1."""

    PING = 0
    OTHER = 1


def _peer(n: int) -> PeerId:
    return KeyPair.from_ed25519_seed(bytes([n]) * 32).peer_id


A, B, C = _peer(1), _peer(2), _peer(3)
C1, C2, C3 = ConnectionId(1), ConnectionId(2), ConnectionId(3)


def rid(n: int) -> RequestId:
    return RequestId(n)


def restricted(x: Req) -> Rule[Req]:
    """E's ``restricted(x)``: a Restricted rule that permits only x."""
    return Rule.restricted(
        lambda rq: FirewallPermission.none().add_permissions([x.permission()]).permits(rq),
        name=f"only_{x.name.lower()}",
    )


def engine(
    rules: FirewallRules[Req] | None = None, limits: FirewallLimits | None = None
) -> FirewallEngine[Req]:
    return FirewallEngine(rules, limits)


def connected(
    rules: FirewallRules[Req] | None = None, *, inbound: bool = False
) -> FirewallEngine[Req]:
    """An engine with A connected on C1 (outbound by default, so no proactive query)."""
    fw = engine(rules)
    fw.on_connection_established(A, C1, inbound=inbound)
    return fw


# ================================================================================================
# Rules


def test_rule_constants_and_repr() -> None:
    assert Rule.allow_all() is ALLOW_ALL is Rule.ALLOW_ALL
    assert Rule.reject_all() is REJECT_ALL is Rule.REJECT_ALL
    assert Rule.ask() is ASK is Rule.ASK
    assert repr(ALLOW_ALL) == "Rule.ALLOW_ALL"
    assert repr(REJECT_ALL) == "Rule.REJECT_ALL"
    assert repr(ASK) == "Rule.ASK"

    def only_small(x: int) -> bool:
        return x < 3

    assert repr(Rule.restricted(only_small)) == "Rule.restricted(<only_small>)"
    assert repr(Rule.restricted(only_small, name="small")) == "Rule.restricted(<small>)"
    assert repr(Rule.restricted(lambda x: True)) == "Rule.restricted(<lambda>)"
    assert repr(Rule.permissions(3)) == "Rule.permissions(FirewallPermission(0x00000003))"
    assert Rule.permissions(3) == Rule.permissions([Req.PING, Req.OTHER])
    assert Rule.permissions(3) != Rule.permissions(1)
    assert Rule.restricted(only_small).kind is RuleKind.RESTRICTED
    assert Rule.restricted(only_small) == Rule.restricted(only_small)
    with pytest.raises(InvalidArgumentError):
        Rule.restricted(42)  # type: ignore[arg-type]


def test_firewall_rules_methods() -> None:
    rules: FirewallRules[Req] = FirewallRules.empty()
    assert rules.get_default_rule() is None and rules.peer_rules == {}
    assert FirewallRules[Req].allow_all().default is ALLOW_ALL
    assert FirewallRules[Req].allow_none().default is REJECT_ALL
    assert rules.get_effective_rule(A) is None
    rules.set_default(ASK)
    assert rules.get_effective_rule(A) is ASK
    assert rules.get_rule(A) is None
    rules.set_rule(A, REJECT_ALL)
    assert rules.get_rule(A) is REJECT_ALL
    assert rules.get_effective_rule(A) is REJECT_ALL
    assert rules.get_effective_rule(B) is ASK
    copy = rules.copy()
    assert copy == rules
    copy.set_rule(B, ALLOW_ALL)
    copy.set_default(None)
    assert rules.get_rule(B) is None and rules.default is ASK
    assert rules.remove_rule(A) is REJECT_ALL
    assert rules.remove_rule(A) is None
    assert rules.get_effective_rule(A) is ASK
    explicit = FirewallRules[Req](ALLOW_ALL, {A: ASK})
    assert explicit.get_effective_rule(A) is ASK


# ================================================================================================
# Declarative form


def _full_rules() -> tuple[FirewallRules[Req], dict[str, Callable[[Req], bool]]]:
    def only_ping(rq: Req) -> bool:
        return rq is Req.PING

    registry: dict[str, Callable[[Req], bool]] = {"only_ping": only_ping}
    rules: FirewallRules[Req] = FirewallRules(
        ASK,
        {
            A: ALLOW_ALL,
            B: REJECT_ALL,
            C: Rule.restricted(only_ping, name="only_ping"),
            _peer(4): ASK,
            _peer(5): Rule.permissions([Req.OTHER]),
            _peer(6): Rule.restricted(only_ping),  # anonymous: named through the registry
        },
    )
    return rules, registry


def test_to_dict_shape() -> None:
    rules, registry = _full_rules()
    data = rules.to_dict(restrictions=registry)
    assert data == {
        "default": "ask",
        "peers": {
            str(A): "allow",
            str(B): "reject",
            str(C): {"restricted": "only_ping"},
            str(_peer(4)): "ask",
            str(_peer(5)): {"permissions": [1]},
            str(_peer(6)): {"restricted": "only_ping"},
        },
    }
    assert FirewallRules[Req]().to_dict() == {"default": None, "peers": {}}


def test_round_trip_dict_and_json() -> None:
    rules, registry = _full_rules()
    for loaded in (
        FirewallRules[Req].from_dict(rules.to_dict(restrictions=registry), restrictions=registry),
        FirewallRules[Req].from_json(rules.to_json(restrictions=registry), restrictions=registry),
    ):
        assert loaded.to_dict(restrictions=registry) == rules.to_dict(restrictions=registry)
        assert loaded.default is ASK
        assert loaded.peer_rules[A] is ALLOW_ALL
        assert loaded.peer_rules[B] is REJECT_ALL
        c_rule = loaded.peer_rules[C]
        assert c_rule.restriction is registry["only_ping"] and c_rule.name == "only_ping"
        perm_rule = loaded.peer_rules[_peer(5)]
        assert perm_rule.restriction is not None
        assert perm_rule.restriction(Req.OTHER) and not perm_rule.restriction(Req.PING)
        assert list(loaded.peer_rules) == list(rules.peer_rules)


def test_from_dict_permission_forms() -> None:
    data = {
        "peers": {
            str(A): {"permissions": 2},
            str(B): {"permissions": ["PING", 1]},
            str(C): {"permissions": ["ping"]},  # case-insensitive fallback
        }
    }
    rules: FirewallRules[Req] = FirewallRules.from_dict(data, permission_names=Req)
    assert rules.default is None
    for peer, ping, other in ((A, False, True), (B, True, True), (C, True, False)):
        predicate = rules.peer_rules[peer].restriction
        assert predicate is not None
        assert predicate(Req.PING) is ping
        assert predicate(Req.OTHER) is other
    by_mapping: FirewallRules[Req] = FirewallRules.from_dict(
        {"peers": {str(A): {"permissions": ["read"]}}}, permission_names={"read": 5}
    )
    assert by_mapping.peer_rules[A].permission_set == 32
    assert by_mapping.to_dict()["peers"][str(A)] == {"permissions": [5]}


def test_permissions_rule_accepts_int_views_and_rejects_others() -> None:
    predicate = Rule.permissions(0b10).restriction
    assert predicate is not None
    assert predicate(2) and predicate(3) and not predicate(1)
    assert not predicate("PING") and not predicate(None)
    assert not predicate(True)  # a bool is not a bit set


def test_anonymous_restriction_cannot_be_serialised() -> None:
    rules: FirewallRules[Req] = FirewallRules(None, {A: Rule.restricted(lambda rq: True)})
    with pytest.raises(InvalidFirewallConfigError, match=r"peers\[.*has no name"):
        rules.to_dict()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected an object"),
        ({"rules": {}}, "unknown key"),
        ({"default": "allow_all"}, r"default: unknown rule 'allow_all'"),
        ({"default": 3}, "default: expected"),
        ({"default": {"restricted": "nope"}}, r"default.restricted: unknown restriction 'nope'"),
        ({"default": {"restricted": 1}}, r"default.restricted: expected a name"),
        ({"default": {"restricted": "x", "permissions": 1}}, "exactly one key"),
        ({"default": {"forbid": "x"}}, "unknown rule key 'forbid'"),
        ({"peers": []}, "'peers' must be an object"),
        ({"peers": {"not-a-peer": "allow"}}, r"peers\['not-a-peer'\]: invalid peer id"),
        ({"peers": {str(A): None}}, "cannot be null"),
        ({"peers": {str(A): {"permissions": [32]}}}, r"permissions\[0\]: permission index 32"),
        ({"peers": {str(A): {"permissions": [0, "nope"]}}}, r"\[1\]: unknown permission name"),
        ({"peers": {str(A): {"permissions": [True]}}}, "an index or a name"),
        ({"peers": {str(A): {"permissions": 2**32}}}, "fits 32 bits"),
        ({"peers": {str(A): {"permissions": "PING"}}}, "expected a bit set"),
    ],
)
def test_from_dict_validation(data: Any, message: str) -> None:
    with pytest.raises(InvalidFirewallConfigError, match=message) as info:
        FirewallRules[Req].from_dict(data, restrictions={"x": lambda rq: True})
    assert isinstance(info.value, InvalidArgumentError)


def test_from_json_rejects_malformed_json() -> None:
    with pytest.raises(InvalidFirewallConfigError, match="invalid JSON"):
        FirewallRules[Req].from_json("{")
    loaded: FirewallRules[Req] = FirewallRules.from_json(json.dumps({"default": None}))
    assert loaded == FirewallRules()


def test_from_dict_rejects_a_peer_listed_twice() -> None:
    # The same peer in base58 and in CIDv1 spelling.
    data = {"peers": {str(A): "allow", A.to_cid_string(): "reject"}}
    with pytest.raises(InvalidFirewallConfigError, match="listed twice"):
        FirewallRules[Req].from_dict(data)


# ================================================================================================
# Engine: evaluating a request


def test_no_rule_parks_and_queries_once() -> None:
    fw = connected()
    assert fw.on_request(rid(1), A, C1, Req.PING) == [QueryRule(A)]
    assert fw.on_request(rid(2), A, C1, Req.PING) == []  # query already pending
    assert fw.is_parked(rid(1)) and fw.is_parked(rid(2))
    assert fw.is_rule_query_pending(A)
    assert fw.parked_count == 2 and fw.parked_count_of(A) == 2


def test_ask_sends_one_approval_per_request() -> None:
    fw = connected(FirewallRules(ASK))
    assert fw.on_request(rid(1), A, C1, Req.PING) == [AskApproval(rid(1), A, Req.PING)]
    assert fw.on_request(rid(2), A, C1, Req.OTHER) == [AskApproval(rid(2), A, Req.OTHER)]
    assert fw.is_awaiting_approval(rid(1))


def test_allow_all_delivers() -> None:
    fw = connected(FirewallRules(ALLOW_ALL))
    assert fw.on_request(rid(1), A, C1, Req.PING) == [Deliver(rid(1))]
    assert not fw.is_parked(rid(1))


@pytest.mark.parametrize(
    "rules",
    [
        FirewallRules(REJECT_ALL),
        FirewallRules(ASK),
        FirewallRules(restricted(Req.PING)),
        FirewallRules(),
        FirewallRules(ALLOW_ALL, {A: REJECT_ALL}),
    ],
)
def test_allows_at_once_only_where_allow_all_rules(rules: FirewallRules[Req]) -> None:
    """The Network's fast path says yes only when on_request would deliver at once, on a
    connection the engine knows to be the peer's; otherwise on_request decides."""
    assert not connected(rules).allows_at_once(A, C1)
    fw = connected(FirewallRules(ALLOW_ALL))
    assert fw.allows_at_once(A, C1)
    assert not fw.allows_at_once(A, C2)  # a connection it does not know (or no longer)
    assert not fw.allows_at_once(B, C1)  # not the connection of that peer
    fw.on_connection_closed(A, C1)
    assert not fw.allows_at_once(A, C1)
    assert not engine(FirewallRules(ALLOW_ALL)).allows_at_once(A, C1)


def test_reject_all_rejects() -> None:
    fw = connected(FirewallRules(REJECT_ALL))
    assert fw.on_request(rid(1), A, C1, Req.PING) == [Reject(rid(1), NP)]


@pytest.mark.parametrize(("view", "delivered"), [(Req.PING, True), (Req.OTHER, False)])
def test_restricted_evaluates_the_view(view: Req, delivered: bool) -> None:
    fw = connected(FirewallRules(restricted(Req.PING)))
    expected: FirewallAction[Req] = Deliver(rid(1)) if delivered else Reject(rid(1), NP)
    assert fw.on_request(rid(1), A, C1, view) == [expected]


def test_restriction_that_raises_rejects(caplog: pytest.LogCaptureFixture) -> None:
    def broken(rq: Req) -> bool:
        raise RuntimeError("boom")

    fw = connected(FirewallRules(Rule.restricted(broken)))
    assert fw.on_request(rid(1), A, C1, Req.PING) == [Reject(rid(1), NP)]
    assert "raised" in caplog.text


def test_peer_rule_overrides_default() -> None:
    fw = connected(FirewallRules(REJECT_ALL, {A: ALLOW_ALL}))
    assert fw.on_request(rid(1), A, C1, Req.PING) == [Deliver(rid(1))]


def test_duplicate_request_id_is_a_bug() -> None:
    fw = connected()
    fw.on_request(rid(1), A, C1, Req.PING)
    with pytest.raises(InvalidStateError):
        fw.on_request(rid(1), A, C1, Req.PING)


# ================================================================================================
# Engine: connections


def test_inbound_connection_without_rule_queries_proactively() -> None:
    fw = engine()
    assert fw.on_connection_established(A, C1, inbound=True) == [QueryRule(A)]
    assert fw.on_connection_established(A, C2, inbound=True) == []  # pending
    assert fw.on_connection_established(B, C3, inbound=False) == []  # we dialled


def test_inbound_connection_with_rule_does_not_query() -> None:
    fw = engine(FirewallRules(REJECT_ALL))
    assert fw.on_connection_established(A, C1, inbound=True) == []
    fw2 = engine(FirewallRules(None, {A: ASK}))
    assert fw2.on_connection_established(A, C1, inbound=True) == []


def test_duplicate_connection_is_a_bug() -> None:
    fw = connected()
    with pytest.raises(InvalidStateError):
        fw.on_connection_established(A, C1, inbound=False)


def test_last_close_cancels_rule_query_and_fails_parked_requests() -> None:
    fw = engine()
    assert fw.on_connection_established(A, C1, inbound=True) == [QueryRule(A)]
    fw.on_connection_established(A, C2, inbound=False)
    fw.on_request(rid(1), A, C1, Req.PING)
    fw.on_request(rid(2), A, C2, Req.PING)
    # Not the last connection: only that connection's request fails, the query stays.
    assert fw.on_connection_closed(A, C1) == [Reject(rid(1), CC)]
    assert fw.is_rule_query_pending(A)
    assert fw.on_connection_closed(A, C2) == [Reject(rid(2), CC), CancelRuleQuery(A)]
    assert not fw.is_rule_query_pending(A) and fw.parked_count == 0
    assert not fw.is_connected(A)
    # A late answer (the user answers after the query was withdrawn) is ignored.
    assert fw.on_rule_answer(A, ALLOW_ALL) == []
    assert fw.get_rules().get_rule(A) is None


def test_close_cancels_approvals_of_that_connection_q2() -> None:
    fw = engine(FirewallRules(ASK))
    fw.on_connection_established(A, C1, inbound=True)
    fw.on_connection_established(A, C2, inbound=True)
    fw.on_request(rid(1), A, C1, Req.PING)
    fw.on_request(rid(2), A, C2, Req.PING)
    assert fw.on_connection_closed(A, C1) == [CancelApproval(rid(1)), Reject(rid(1), CC)]
    assert fw.on_approval(rid(1), True) == []  # no delivery of a dead request
    assert fw.on_approval(rid(2), True) == [Deliver(rid(2))]


def test_close_of_unknown_connection_is_ignored() -> None:
    fw = connected()
    assert fw.on_connection_closed(A, C2) == []
    assert fw.on_connection_closed(B, C1) == []  # wrong peer for that id
    assert fw.is_connected(A)


def test_request_on_closed_connection_q3() -> None:
    fw = engine()
    assert fw.on_request(rid(1), A, C1, Req.PING) == [Reject(rid(1), CC)]
    assert not fw.is_rule_query_pending(A)  # no query for a dead request
    fw.on_connection_established(A, C1, inbound=False)
    fw.on_connection_closed(A, C1)
    assert fw.on_request(rid(2), A, C1, Req.PING) == [Reject(rid(2), CC)]


# ================================================================================================
# Engine: rule query answers


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (ALLOW_ALL, [Deliver(rid(1)), Deliver(rid(2))]),
        (
            REJECT_ALL,
            [SupportChanged(A, False), Reject(rid(1), NP), Reject(rid(2), NP)],
        ),
        (ASK, [AskApproval(rid(1), A, Req.PING), AskApproval(rid(2), A, Req.OTHER)]),
        (restricted(Req.PING), [Deliver(rid(1)), Reject(rid(2), NP)]),
        (None, [Reject(rid(1), NP), Reject(rid(2), NP)]),
    ],
)
def test_rule_answer_resolves_parked_requests(
    answer: Rule[Req] | None, expected: list[FirewallAction[Req]]
) -> None:
    fw = connected(inbound=True)
    fw.on_request(rid(1), A, C1, Req.PING)
    fw.on_request(rid(2), A, C1, Req.OTHER)
    assert fw.on_rule_answer(A, answer) == expected
    assert not fw.is_rule_query_pending(A)
    assert fw.get_rules().get_rule(A) is answer  # the answer persists as the peer rule
    if answer is not ASK:
        assert fw.parked_count == 0


def test_rule_answer_without_requests_still_persists() -> None:
    fw = connected(inbound=True)
    assert fw.on_rule_answer(A, ALLOW_ALL) == []
    assert fw.on_request(rid(1), A, C1, Req.PING) == [Deliver(rid(1))]


def test_no_rule_answer_then_next_request_queries_again() -> None:
    """The user drops the rule query -> no rule stored; a later request re-queries."""
    fw = connected(inbound=True)
    fw.on_request(rid(1), A, C1, Req.PING)
    assert fw.on_rule_answer(A, None) == [Reject(rid(1), NP)]
    assert fw.get_rules().get_rule(A) is None
    assert fw.on_request(rid(2), A, C1, Req.PING) == [QueryRule(A)]


def test_unsolicited_rule_answer_is_ignored() -> None:
    fw = connected()
    assert fw.on_rule_answer(A, ALLOW_ALL) == []
    assert fw.get_rules().get_rule(A) is None


# ================================================================================================
# Engine: approvals


@pytest.mark.parametrize(
    ("approved", "action"), [(True, Deliver(rid(1))), (False, Reject(rid(1), NP))]
)
def test_approval_outcome(approved: bool, action: FirewallAction[Req]) -> None:
    fw = connected(FirewallRules(ASK))
    fw.on_request(rid(1), A, C1, Req.PING)
    assert fw.on_approval(rid(1), approved) == [action]
    assert fw.on_approval(rid(1), approved) == []  # answered once
    assert fw.parked_count == 0


def test_approval_for_request_awaiting_rule_is_ignored() -> None:
    fw = connected()
    fw.on_request(rid(1), A, C1, Req.PING)
    assert fw.on_approval(rid(1), True) == []
    assert fw.is_parked(rid(1))


def test_finished_request_cancels_its_approval_q1() -> None:
    """Inbound timeout while awaiting approval: one failure (the Network's), no Reject."""
    fw = connected(FirewallRules(ASK))
    fw.on_request(rid(1), A, C1, Req.PING)
    assert fw.on_request_finished(rid(1)) == [CancelApproval(rid(1))]
    assert fw.on_approval(rid(1), False) == []
    assert fw.on_request_finished(rid(1)) == []


def test_finished_request_awaiting_rule_is_never_resolved_q1() -> None:
    fw = connected(inbound=True)
    fw.on_request(rid(1), A, C1, Req.PING)
    fw.on_request(rid(2), A, C1, Req.PING)
    assert fw.on_request_finished(rid(1)) == []
    assert fw.is_rule_query_pending(A)  # still wanted for the other request
    assert fw.on_rule_answer(A, ALLOW_ALL) == [Deliver(rid(2))]


def test_finish_of_delivered_request_is_a_no_op() -> None:
    fw = connected(FirewallRules(ALLOW_ALL))
    fw.on_request(rid(1), A, C1, Req.PING)
    assert fw.on_request_finished(rid(1)) == []
    assert fw.on_connection_closed(A, C1) == []  # delivered requests belong to the Network


# ================================================================================================
# Engine: rule changes


def test_set_default_affects_connected_peers_without_peer_rule() -> None:
    fw = engine(FirewallRules(None, {B: ASK}))
    fw.on_connection_established(A, C1, inbound=False)
    fw.on_connection_established(B, C2, inbound=False)
    fw.on_connection_established(C, C3, inbound=False)
    fw.on_request(rid(1), A, C1, Req.PING)  # -> QueryRule(A)
    fw.on_request(rid(2), B, C2, Req.PING)  # -> AskApproval
    fw.on_request(rid(3), C, C3, Req.OTHER)  # -> QueryRule(C)
    actions = fw.set_default(REJECT_ALL)
    assert actions == [
        SupportChanged(A, False),
        Reject(rid(1), NP),
        SupportChanged(C, False),
        Reject(rid(3), NP),
    ]
    assert fw.is_awaiting_approval(rid(2))  # B has its own rule
    # The queries are still pending (their answer becomes a peer rule), no second query.
    assert fw.is_rule_query_pending(A)
    assert fw.set_default(ALLOW_ALL) == [SupportChanged(A, True), SupportChanged(C, True)]
    assert fw.set_default(ASK) == []  # support unchanged, nothing parked


def test_set_peer_rule_resolves_parked_and_cancels_query_q4() -> None:
    fw = connected(inbound=True)
    fw.on_request(rid(1), A, C1, Req.PING)
    fw.on_request(rid(2), A, C1, Req.OTHER)
    assert fw.set_peer_rule(A, ASK) == [
        CancelRuleQuery(A),
        AskApproval(rid(1), A, Req.PING),
        AskApproval(rid(2), A, Req.OTHER),
    ]
    # The late answer to the cancelled query cannot overwrite the user's rule.
    assert fw.on_rule_answer(A, REJECT_ALL) == []
    assert fw.get_rules().get_rule(A) is ASK


def test_set_peer_rule_for_unconnected_peer_only_stores() -> None:
    fw = engine()
    assert fw.set_peer_rule(B, REJECT_ALL) == []
    assert not fw.offers_protocol(B)


def test_remove_peer_rule_falls_back_to_default() -> None:
    fw = connected(FirewallRules(ALLOW_ALL, {A: REJECT_ALL}))
    assert not fw.offers_protocol(A)
    assert fw.remove_peer_rule(A) == [SupportChanged(A, True)]
    assert fw.remove_peer_rule(A) == []  # nothing to remove
    assert fw.on_request(rid(1), A, C1, Req.PING) == [Deliver(rid(1))]


def test_remove_peer_rule_without_default_then_requests_query() -> None:
    fw = connected(FirewallRules(None, {A: ALLOW_ALL}))
    assert fw.remove_peer_rule(A) == []
    assert fw.on_request(rid(1), A, C1, Req.PING) == [QueryRule(A)]


def test_remove_default_clears_it() -> None:
    """compat: removing the default clears it."""
    fw = connected(FirewallRules(ALLOW_ALL))
    assert fw.remove_default() == []
    assert fw.get_rules().default is None
    assert fw.on_request(rid(1), A, C1, Req.PING) == [QueryRule(A)]


def test_default_none_while_query_pending_keeps_parked_q5() -> None:
    fw = connected(inbound=True)
    fw.on_request(rid(1), A, C1, Req.PING)
    assert fw.set_default(None) == []
    assert fw.remove_default() == []
    assert fw.is_parked(rid(1))
    assert fw.on_request(rid(2), A, C1, Req.PING) == []  # no second concurrent query
    assert fw.on_rule_answer(A, ALLOW_ALL) == [Deliver(rid(1)), Deliver(rid(2))]


def test_default_set_then_cleared_while_query_pending_q5() -> None:
    fw = connected(inbound=True)
    fw.on_request(rid(1), A, C1, Req.PING)
    assert fw.set_default(ALLOW_ALL) == [Deliver(rid(1))]
    assert fw.set_default(None) == []
    assert fw.on_request(rid(2), A, C1, Req.PING) == []  # the first query still answers
    assert fw.on_rule_answer(A, None) == [Reject(rid(2), NP)]
    assert fw.on_request(rid(3), A, C1, Req.PING) == [QueryRule(A)]


def test_replace_rules() -> None:
    fw = engine()
    fw.on_connection_established(A, C1, inbound=True)
    fw.on_connection_established(B, C2, inbound=True)
    fw.on_request(rid(1), A, C1, Req.PING)
    fw.on_request(rid(2), B, C2, Req.PING)
    actions = fw.replace_rules(FirewallRules(REJECT_ALL, {A: ALLOW_ALL}))
    assert actions == [
        CancelRuleQuery(A),
        Deliver(rid(1)),
        SupportChanged(B, False),
        Reject(rid(2), NP),
    ]
    assert fw.is_rule_query_pending(B)


def test_get_rules_is_a_copy() -> None:
    rules: FirewallRules[Req] = FirewallRules(ALLOW_ALL)
    fw = engine(rules)
    rules.set_default(REJECT_ALL)  # the engine copied its input
    copy = fw.get_rules()
    copy.set_default(REJECT_ALL)
    assert fw.get_rules().default is ALLOW_ALL
    assert fw.effective_rule(A) is ALLOW_ALL


# ================================================================================================
# Protocol support: reject-all is not offered


def test_offers_protocol_unless_reject_all() -> None:
    assert engine().offers_protocol(A)  # no rule: offered (a query decides later)
    assert engine(FirewallRules(ALLOW_ALL)).offers_protocol(A)
    assert engine(FirewallRules(ASK)).offers_protocol(A)
    assert not engine(FirewallRules(REJECT_ALL)).offers_protocol(A)  # never-seen peer
    assert engine(FirewallRules(REJECT_ALL, {A: ASK})).offers_protocol(A)
    assert not engine(FirewallRules(ALLOW_ALL, {A: REJECT_ALL})).offers_protocol(A)


# ================================================================================================
# Firewall questions nobody answers, expressed as the Network's reports


def test_channel_closed_rejects_rule_and_approval_queries() -> None:
    """Receiver dropped: every query fails at once -> ``None`` rule / ``False`` approval."""
    fw = connected(inbound=True)
    fw.on_request(rid(1), A, C1, Req.PING)
    assert fw.on_rule_answer(A, None) == [Reject(rid(1), NP)]
    fw.set_peer_rule(A, ASK)
    assert fw.on_request(rid(2), A, C1, Req.PING) == [AskApproval(rid(2), A, Req.PING)]
    assert fw.on_approval(rid(2), False) == [Reject(rid(2), NP)]


def test_unanswered_rule_query_times_out() -> None:
    """``firewall_timeout`` fires first: the Network reports ``None`` -> NotPermitted."""
    fw = connected(inbound=True)
    fw.on_request(rid(1), A, C1, Req.PING)
    assert fw.on_rule_answer(A, None) == [Reject(rid(1), NP)]
    assert fw.on_rule_answer(A, ALLOW_ALL) == []  # answer after the timeout: ignored


def test_request_timeout_before_firewall_timeout() -> None:
    """The request's own timeout fires first: one failure (Timeout, by the Network)."""
    fw = connected(inbound=True)
    fw.on_request(rid(1), A, C1, Req.PING)
    assert fw.on_request_finished(rid(1)) == []
    assert fw.on_rule_answer(A, None) == []  # nothing left to reject


# ================================================================================================
# Limits


def test_parking_limits_reject_immediately() -> None:
    fw = engine(limits=FirewallLimits(max_parked_requests_per_peer=2, max_parked_requests=3))
    fw.on_connection_established(A, C1, inbound=False)
    fw.on_connection_established(B, C2, inbound=False)
    assert fw.on_request(rid(1), A, C1, Req.PING) == [QueryRule(A)]
    assert fw.on_request(rid(2), A, C1, Req.PING) == []
    assert fw.on_request(rid(3), A, C1, Req.PING) == [Reject(rid(3), NP)]  # per peer
    assert fw.on_request(rid(4), B, C2, Req.PING) == [QueryRule(B)]
    assert fw.on_request(rid(5), B, C2, Req.PING) == [Reject(rid(5), NP)]  # total
    fw.set_peer_rule(B, ASK)
    assert fw.on_request(rid(6), B, C2, Req.PING) == [Reject(rid(6), NP)]  # approvals count
    assert fw.parked_count == 3
    fw.on_approval(rid(4), True)
    assert fw.on_request(rid(7), B, C2, Req.PING) == [AskApproval(rid(7), B, Req.PING)]


@pytest.mark.parametrize("bad", [-1, True, 1.5])
def test_limits_validation(bad: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        FirewallLimits(max_parked_requests=bad)
    with pytest.raises(InvalidArgumentError):
        FirewallLimits(max_parked_requests_per_peer=bad)


# ================================================================================================
# The seed's firewall tests (every rule combination, asking) at engine level


_RULE_CHOICES: list[tuple[str, Rule[Req]]] = [
    ("allow", ALLOW_ALL),
    ("reject", REJECT_ALL),
    ("ping", restricted(Req.PING)),
    ("other", restricted(Req.OTHER)),
]


@pytest.mark.parametrize(("default_name", "default"), _RULE_CHOICES)
@pytest.mark.parametrize(("individual_name", "individual"), [*_RULE_CHOICES, ("none", None)])
@pytest.mark.parametrize("req", list(Req))
def test_engine_permissions_every_combination(
    default_name: str,
    default: Rule[Req],
    individual_name: str,
    individual: Rule[Req] | None,
    req: Req,
) -> None:
    fw = connected(inbound=True)  # A -> B; B has no rules: proactive query, then configured
    if individual is not None:
        fw.set_peer_rule(A, individual)
    fw.set_default(default)
    effective_name = individual_name if individual is not None else default_name
    allowed = effective_name == "allow" or effective_name == req.name.lower()
    assert fw.offers_protocol(A) == (effective_name != "reject")
    actions = fw.on_request(rid(1), A, C1, req)
    assert actions == [Deliver(rid(1)) if allowed else Reject(rid(1), NP)]
    # Clean-up as in the seed's permissions test.
    fw.remove_peer_rule(A)
    fw.remove_default()
    assert fw.get_rules() == FirewallRules()


@pytest.mark.parametrize("rule_answer", ["allow", "reject", "ask", "drop"])
@pytest.mark.parametrize("approval", ["allow", "reject", "drop"])
def test_engine_asks_for_a_rule_then_for_approval(rule_answer: str, approval: str) -> None:
    """The first firewall message for a new inbound peer is QueryRule, then one approval."""
    answers: dict[str, Rule[Req] | None] = {
        "allow": ALLOW_ALL,
        "reject": REJECT_ALL,
        "ask": ASK,
        "drop": None,
    }
    fw = engine()
    for iteration, conn in enumerate((C1, C2)):
        req = rid(10 * iteration + 1)
        firewall_messages = fw.on_connection_established(A, conn, inbound=True)
        firewall_messages += fw.on_request(req, A, conn, Req.PING)
        assert firewall_messages == [QueryRule(A)]
        actions = fw.on_rule_answer(A, answers[rule_answer])
        if rule_answer == "ask":
            assert actions == [AskApproval(req, A, Req.PING)]
            actions = fw.on_approval(req, approval == "allow")
        allowed = rule_answer == "allow" or (rule_answer == "ask" and approval == "allow")
        assert [a for a in actions if not isinstance(a, SupportChanged)] == [
            Deliver(req) if allowed else Reject(req, NP)
        ]
        # Clean-up: remove the peer rule; the rejection closes the connection on A's side.
        fw.remove_peer_rule(A)
        assert fw.on_connection_closed(A, conn) == []


# ================================================================================================
# State machine: random sequences keep every invariant


PEERS = [A, B, C]
RULE_CHOICES: list[Rule[Req] | None] = [ALLOW_ALL, REJECT_ALL, ASK, restricted(Req.PING), None]
LIMITS = FirewallLimits(max_parked_requests_per_peer=2, max_parked_requests=3)


class FirewallMachine(RuleBasedStateMachine):
    """Drives the engine as the Network would and checks the outcome contract."""

    def __init__(self) -> None:
        super().__init__()
        self.fw: FirewallEngine[Req] = FirewallEngine(limits=LIMITS)
        self.conn_ids = itertools.count(1)
        self.request_ids = itertools.count(1)
        self.open_conns: dict[ConnectionId, PeerId] = {}
        self.all_conns: dict[ConnectionId, PeerId] = {}
        self.outcome: dict[RequestId, str] = {}  # terminal outcome of each request
        self.parked: dict[RequestId, ConnectionId] = {}  # issued, not yet decided
        self.delivered: set[RequestId] = set()  # owned by the "Network" now
        self.queries: set[PeerId] = set()  # outstanding QueryRule
        self.approvals: set[RequestId] = set()  # outstanding AskApproval
        self.offered: dict[PeerId, bool] = {}
        self.max_parked = 0

    def teardown(self) -> None:
        target(float(self.max_parked), label="max parked")  # steer the search towards the limits

    # -- applying actions, checking each against the model ------------------------------------

    def _terminal(self, request_id: RequestId, what: str) -> None:
        assert request_id not in self.outcome, (request_id, self.outcome[request_id], what)
        assert request_id not in self.approvals, "decided while an approval is outstanding"
        self.outcome[request_id] = what
        self.parked.pop(request_id, None)

    def apply(self, actions: list[FirewallAction[Req]], new: RequestId | None = None) -> None:
        for action in actions:
            match action:
                case Deliver(request_id):
                    assert request_id in self.parked or request_id == new
                    self._terminal(request_id, "deliver")
                    self.delivered.add(request_id)
                case Reject(request_id, reason):
                    assert request_id in self.parked or request_id == new
                    self._terminal(request_id, f"reject:{reason.name}")
                case QueryRule(peer):
                    assert peer not in self.queries, "second concurrent rule query"
                    assert peer in self.open_conns.values()
                    self.queries.add(peer)
                case CancelRuleQuery(peer):
                    assert peer in self.queries
                    self.queries.discard(peer)
                case AskApproval(request_id, peer, _view):
                    assert request_id not in self.approvals
                    assert request_id not in self.outcome
                    self.approvals.add(request_id)
                case CancelApproval(request_id):
                    assert request_id in self.approvals
                    self.approvals.discard(request_id)
                case SupportChanged(peer, offered):
                    assert self.offered.get(peer) is not offered
                    self.offered[peer] = offered
                case _:  # pragma: no cover
                    raise AssertionError(action)

    # -- rules --------------------------------------------------------------------------------

    @rule(peer=st.sampled_from(PEERS), inbound=st.booleans())
    def connect(self, peer: PeerId, inbound: bool) -> None:
        conn = ConnectionId(next(self.conn_ids))
        first = peer not in self.open_conns.values()
        self.open_conns[conn] = peer
        self.all_conns[conn] = peer
        self.apply(self.fw.on_connection_established(peer, conn, inbound=inbound))
        if first:
            self.offered[peer] = self.fw.offers_protocol(peer)

    @precondition(lambda self: self.open_conns)
    @rule(index=st.integers(0, 1000))
    def close(self, index: int) -> None:
        conn = sorted(self.open_conns)[index % len(self.open_conns)]
        peer = self.open_conns.pop(conn)
        self.apply(self.fw.on_connection_closed(peer, conn))
        if peer not in self.open_conns.values():
            self.offered.pop(peer, None)
            assert peer not in self.queries

    @precondition(lambda self: self.all_conns)
    @rule(index=st.integers(0, 1000), view=st.sampled_from(list(Req)))
    def request(self, index: int, view: Req) -> None:
        conn = sorted(self.all_conns)[index % len(self.all_conns)]
        peer = self.all_conns[conn]
        request_id = RequestId(next(self.request_ids))
        actions = self.fw.on_request(request_id, peer, conn, view)
        if conn not in self.open_conns:
            assert actions == [Reject(request_id, CC)]
        self.apply(actions, new=request_id)
        if request_id not in self.outcome:
            self.parked[request_id] = conn

    @rule(peer=st.sampled_from(PEERS), answer=st.sampled_from(RULE_CHOICES))
    def rule_answer(self, peer: PeerId, answer: Rule[Req] | None) -> None:
        pending = peer in self.queries
        self.queries.discard(peer)
        actions = self.fw.on_rule_answer(peer, answer)
        if not pending:
            assert actions == []
        self.apply(actions)

    @precondition(lambda self: self.approvals)
    @rule(index=st.integers(0, 1000), approved=st.booleans())
    def approval(self, index: int, approved: bool) -> None:
        request_id = sorted(self.approvals)[index % len(self.approvals)]
        self.approvals.discard(request_id)
        self.apply(self.fw.on_approval(request_id, approved))

    @rule(request=st.integers(1, 60), approved=st.booleans())
    def stale_approval(self, request: int, approved: bool) -> None:
        request_id = RequestId(request)
        if request_id not in self.approvals:
            assert self.fw.on_approval(request_id, approved) == []

    @rule(request=st.integers(1, 60))
    def finish(self, request: int) -> None:
        """The Network ends a request: timeout, response sent/omitted, stream error."""
        request_id = RequestId(request)
        actions = self.fw.on_request_finished(request_id)
        if request_id in self.parked:
            assert actions in ([], [CancelApproval(request_id)])
            self.apply(actions)
            self._terminal(request_id, "finished")
        else:
            assert actions == []

    @rule(answer=st.sampled_from(RULE_CHOICES))
    def set_default(self, answer: Rule[Req] | None) -> None:
        self.apply(self.fw.set_default(answer))

    @rule(peer=st.sampled_from(PEERS), answer=st.sampled_from(RULE_CHOICES))
    def set_peer_rule(self, peer: PeerId, answer: Rule[Req] | None) -> None:
        if answer is None:
            self.apply(self.fw.remove_peer_rule(peer))
        else:
            self.apply(self.fw.set_peer_rule(peer, answer))

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def parked_matches_model(self) -> None:
        self.max_parked = max(self.max_parked, self.fw.parked_count)
        assert self.fw.parked_count == len(self.parked)
        assert self.fw.parked_count <= LIMITS.max_parked_requests
        for peer in PEERS:
            assert self.fw.parked_count_of(peer) <= LIMITS.max_parked_requests_per_peer
        for request_id, conn in self.parked.items():
            assert self.fw.is_parked(request_id)
            assert conn in self.open_conns, "parked after its connection closed"
            if self.fw.is_awaiting_approval(request_id):
                assert request_id in self.approvals
            else:
                peer = self.open_conns[conn]
                assert peer in self.queries, "parked for a rule with no query pending"
        assert self.approvals <= set(self.parked)

    @invariant()
    def queries_match_model(self) -> None:
        for peer in PEERS:
            assert self.fw.is_rule_query_pending(peer) == (peer in self.queries)
            if peer in self.queries:
                assert peer in self.open_conns.values()

    @invariant()
    def support_matches_model(self) -> None:
        for peer in set(self.open_conns.values()):
            assert self.offered[peer] == self.fw.offers_protocol(peer)
            rule = self.fw.effective_rule(peer)  # the flag is kept per peer, not looked up
            assert self.fw.offers_protocol(peer) == (
                rule is None or rule.kind is not RuleKind.REJECT_ALL
            )

    @invariant()
    def allows_at_once_matches_rules(self) -> None:
        """The per-connection answer of the fast path follows every rule change and
        connection close (it is cached per connection, not looked up per request)."""
        for conn, peer in self.all_conns.items():
            rule = self.fw.effective_rule(peer)
            expected = (
                conn in self.open_conns and rule is not None and rule.kind is RuleKind.ALLOW_ALL
            )
            assert self.fw.allows_at_once(peer, conn) == expected


TestFirewallMachine = FirewallMachine.TestCase
TestFirewallMachine.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
