"""``FirewallGate``: runs the :class:`~aiop2p.network.firewall.FirewallEngine`'s actions.

The engine decides and stays free of I/O; the gate carries its actions out on the event
loop: it resolves the decision a request waits for, puts firewall questions to the
application (a ``firewall_handler`` or :meth:`FirewallGate.questions`), and owns the timer
of each question, so an unanswered one ends as "no" after ``firewall_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Generic, Protocol, TypeVar

from .._aio.stream import ConnectionId
from ..events import RequestId
from ..identity import PeerId
from .config import DEFAULT_PROTOCOL
from .firewall import (
    AskApproval,
    CancelApproval,
    CancelRuleQuery,
    Deliver,
    FirewallAction,
    FirewallEngine,
    FirewallRules,
    QueryRule,
    Reject,
    RejectReason,
    Rule,
    SupportChanged,
)

__all__ = ["ApprovalRequest", "FirewallGate", "FirewallRequest", "PeerRuleQuery"]

Rq = TypeVar("Rq")

log = logging.getLogger(__name__)


class Spawn(Protocol):
    """Runs a background task owned by the node (cancelled at its close)."""

    def __call__(self, coro: Coroutine[Any, Any, None], *, name: str | None = None) -> object: ...


class _Answer:
    """A one-shot answer slot shared by a firewall question and the gate."""

    __slots__ = ("_callback", "answered")

    def __init__(self, callback: Callable[[object], None]) -> None:
        self._callback = callback
        self.answered = False

    def give(self, value: object) -> bool:
        if self.answered:
            return False
        self.answered = True
        self._callback(value)
        return True


class PeerRuleQuery:
    """The firewall has no rule for ``peer``: answer with a :class:`Rule` (kept as the
    peer's rule) or ``None``/:meth:`drop` (its pending requests are rejected)."""

    def __init__(self, peer: PeerId, answer: _Answer) -> None:
        self.peer = peer
        self._answer = answer

    @property
    def answered(self) -> bool:
        return self._answer.answered

    def answer(self, rule: Rule[Any] | None) -> bool:
        """Give the rule; False if the query already ended (timeout, answered, closed)."""
        return self._answer.give(rule)

    def drop(self) -> None:
        self._answer.give(None)

    def __repr__(self) -> str:
        return f"<PeerRuleQuery {self.peer}>"


class ApprovalRequest(Generic[Rq]):
    """The rule for ``peer`` is ``Rule.ask()``: approve or reject this one request."""

    def __init__(
        self,
        peer: PeerId,
        request_id: RequestId,
        request: Rq,
        answer: _Answer,
        protocol: str = DEFAULT_PROTOCOL,
    ) -> None:
        self.peer = peer
        self.request_id = request_id
        self.request = request
        """The firewall view of the request (the protocol's ``firewall_view``)."""
        self.protocol = protocol
        """The protocol id the request came on (``Network.add_protocol``)."""
        self._answer = answer

    @property
    def answered(self) -> bool:
        return self._answer.answered

    def approve(self, approved: bool = True) -> bool:
        return self._answer.give(bool(approved))

    def reject(self) -> bool:
        return self._answer.give(False)

    def drop(self) -> None:
        self._answer.give(False)

    def __repr__(self) -> str:
        return f"<ApprovalRequest {self.request_id} on {self.protocol} from {self.peer}>"


FirewallRequest = PeerRuleQuery | ApprovalRequest[Any]


class FirewallGate:
    """Carries out the firewall engine's actions and owns the timers of its questions.

    ``spawn`` runs a background task owned by the node; ``support_changed`` is called
    when whether the request protocol is offered to some peer changed, so the node can
    tell its peers (identify push).
    """

    def __init__(
        self,
        rules: FirewallRules[Any],
        *,
        timeout: float,
        capacity: int,
        handler: Callable[[FirewallRequest], Awaitable[None]] | None,
        spawn: Spawn,
        support_changed: Callable[[], None],
    ) -> None:
        self.engine: FirewallEngine[Any] = FirewallEngine(rules)
        self._timeout = timeout
        self._handler = handler
        self._spawn = spawn
        self._support_changed = support_changed
        self._queue: asyncio.Queue[FirewallRequest] = asyncio.Queue(capacity)
        self._questions_closed = False
        self.listeners = 0
        """How many ``firewall_requests()`` iterators are open (see :meth:`_put_question`)."""
        self._warned_unanswered = False
        self._closed = False
        self._decisions: dict[RequestId, Callable[[RejectReason | None], None]] = {}
        self._protocols: dict[RequestId, str] = {}
        """The protocol each request in decision came on (for its ``ApprovalRequest``)."""
        self._rule_queries: dict[PeerId, tuple[_Answer, asyncio.TimerHandle]] = {}
        self._approvals: dict[RequestId, tuple[_Answer, asyncio.TimerHandle]] = {}

    # -- configuration -------------------------------------------------------------------

    def set_default(self, rule: Rule[Any] | None) -> None:
        self._apply(self.engine.set_default(rule))

    def remove_default(self) -> None:
        self._apply(self.engine.remove_default())

    def rules(self) -> FirewallRules[Any]:
        return self.engine.get_rules()

    def peer_rule(self, peer: PeerId) -> Rule[Any] | None:
        return self.engine.peer_rule(peer)

    def set_peer_rule(self, peer: PeerId, rule: Rule[Any]) -> None:
        self._apply(self.engine.set_peer_rule(peer, rule))

    def remove_peer_rule(self, peer: PeerId) -> None:
        self._apply(self.engine.remove_peer_rule(peer))

    # -- facts ---------------------------------------------------------------------------

    def connection_established(self, peer: PeerId, conn_id: ConnectionId, *, inbound: bool) -> None:
        self._apply(self.engine.on_connection_established(peer, conn_id, inbound=inbound))

    def connection_closed(self, peer: PeerId, conn_id: ConnectionId) -> None:
        self._apply(self.engine.on_connection_closed(peer, conn_id))

    def decide(
        self,
        request_id: RequestId,
        peer: PeerId,
        conn_id: ConnectionId,
        view: Any,
        decided: Callable[[RejectReason | None], None],
        protocol: str = DEFAULT_PROTOCOL,
    ) -> None:
        """Ask for the firewall's verdict on a request: ``decided`` is called with ``None``
        (deliver) or why it is rejected — before this returns when a rule answers, later
        when a question must be asked.  Not called after :meth:`request_finished`."""
        actions = self.engine.on_request(request_id, peer, conn_id, view)
        if len(actions) == 1:  # the common case: a rule answers at once, nothing to keep
            (action,) = actions
            if isinstance(action, Deliver) and action.request_id == request_id:
                decided(None)
                return
            if isinstance(action, Reject) and action.request_id == request_id:
                decided(action.reason)
                return
        self._decisions[request_id] = decided
        self._protocols[request_id] = protocol
        self._apply(actions)

    def request_finished(self, request_id: RequestId) -> None:
        """The request ended.  One lookup for a request decided already (every request a
        rule answered at once): only one still in :attr:`_decisions` can be parked in
        the engine or have a question open."""
        if self._decisions.pop(request_id, None) is None:
            return
        self._protocols.pop(request_id, None)
        actions = self.engine.on_request_finished(request_id)
        if actions:
            self._apply(actions)

    # -- questions for the application ---------------------------------------------------

    async def next_question(self) -> FirewallRequest:
        """The next question for the application (no ``firewall_handler`` given)."""
        return await self._queue.get()

    def close_questions(self) -> None:
        """From now on every question is answered "no" at once; so are the queued ones."""
        self._questions_closed = True
        queue = self._queue
        while not queue.empty():
            queue.get_nowait().drop()

    def close(self) -> None:
        """End every open question without answering it (the network is closing)."""
        self._closed = True
        for answer, timer in [*self._rule_queries.values(), *self._approvals.values()]:
            timer.cancel()
            answer.answered = True
        self._rule_queries.clear()
        self._approvals.clear()

    def _apply(self, actions: Iterable[FirewallAction[Any]]) -> None:
        for action in actions:
            if isinstance(action, Deliver | Reject):
                decided = self._decisions.pop(action.request_id, None)
                if decided is not None:
                    self._protocols.pop(action.request_id, None)  # kept for its question only
                    decided(action.reason if isinstance(action, Reject) else None)
            elif isinstance(action, QueryRule):
                self._ask_rule(action.peer)
            elif isinstance(action, AskApproval):
                self._ask_approval(action.request_id, action.peer, action.view)
            elif isinstance(action, CancelRuleQuery):
                pending = self._rule_queries.pop(action.peer, None)
                if pending is not None:
                    pending[0].answered = True
                    pending[1].cancel()
            elif isinstance(action, CancelApproval):
                approval = self._approvals.pop(action.request_id, None)
                if approval is not None:
                    approval[0].answered = True
                    approval[1].cancel()
            elif isinstance(action, SupportChanged):
                # Negotiation consults the offer predicate on every new stream; identify
                # push tells the peer its view of our protocols changed.
                self._support_changed()

    def _ask_rule(self, peer: PeerId) -> None:
        loop = asyncio.get_running_loop()

        def answered(value: object) -> None:
            entry = self._rule_queries.pop(peer, None)
            if entry is None:
                return
            entry[1].cancel()
            rule = value if isinstance(value, Rule) else None
            self._apply(self.engine.on_rule_answer(peer, rule))

        answer = _Answer(answered)
        timer = loop.call_later(self._timeout, answer.give, None)
        self._rule_queries[peer] = (answer, timer)
        self._put_question(PeerRuleQuery(peer, answer))

    def _ask_approval(self, request_id: RequestId, peer: PeerId, view: Any) -> None:
        loop = asyncio.get_running_loop()

        def answered(value: object) -> None:
            entry = self._approvals.pop(request_id, None)
            if entry is None:
                return
            entry[1].cancel()
            self._apply(self.engine.on_approval(request_id, value is True))

        answer = _Answer(answered)
        timer = loop.call_later(self._timeout, answer.give, False)
        self._approvals[request_id] = (answer, timer)
        protocol = self._protocols.get(request_id, DEFAULT_PROTOCOL)
        self._put_question(ApprovalRequest(peer, request_id, view, answer, protocol))

    def _put_question(self, request: FirewallRequest) -> None:
        if self._questions_closed or self._closed:
            asyncio.get_running_loop().call_soon(request.drop)
            return
        if self._handler is not None:
            self._spawn(self._run_handler(request), name="firewall handler")
            return
        if not self.listeners:
            # Nobody would answer: reject now rather than after firewall_timeout.
            self._warn_unanswered(request)
            asyncio.get_running_loop().call_soon(request.drop)
            return
        queue = self._queue
        try:
            queue.put_nowait(request)
        except asyncio.QueueFull:
            self._spawn(queue.put(request), name="firewall queue")

    def _warn_unanswered(self, request: FirewallRequest) -> None:
        if self._warned_unanswered:
            log.debug("firewall: nobody answers; rejected at once: %r", request)
            return
        self._warned_unanswered = True
        log.warning(
            "firewall: rejected a request from %s at once: no firewall rule applies to it "
            "and nobody answers firewall questions (no firewall_handler, nobody iterating "
            "firewall_requests()). Give the Network a firewall= (for example "
            "FirewallRules.allow_all()), a firewall_handler=, or iterate "
            "firewall_requests(). (Logged once.)",
            request.peer,
        )

    async def _run_handler(self, request: FirewallRequest) -> None:
        assert self._handler is not None
        try:
            await self._handler(request)
        finally:
            if not request.answered:
                request.drop()
