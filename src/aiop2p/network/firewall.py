"""The inbound-request firewall: rules, their file form, and a pure decision engine.

* :class:`Rule` — allow all / reject all / restricted (a predicate over the firewall *view*
  of a request) / ask (per-request approval).
* :class:`FirewallRules` — an optional default rule plus per-peer rules; the effective rule of
  a peer is its own rule, else the default, else none (which triggers a rule query).
  ``to_dict``/``from_dict`` (and JSON) give the declarative form used by configuration files.
* :class:`FirewallEngine` — the decision logic (``docs/compat.md``, "The firewall model")
  without I/O: the ``Network``
  feeds it facts (connections, requests, answers, rule changes) and executes the
  :data:`FirewallAction` list each call returns, in order.  It holds no timers: the
  ``Network`` runs ``firewall_timeout`` itself and reports an expiry as a ``None`` rule answer
  or a ``False`` approval.

The engine's outcome contract: every request passed to :meth:`FirewallEngine.on_request`
gets **at most one** of ``Deliver``/``Reject``, and exactly one unless the ``Network`` ended it
first with :meth:`FirewallEngine.on_request_finished` (then none, ever).  After ``Deliver`` or
``Reject`` the engine forgets the request; the ``Network`` owns delivered requests.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Generic, TypeAlias, TypeVar

from ..errors import (
    InvalidArgumentError,
    InvalidFirewallConfigError,
    InvalidPeerIdError,
    InvalidStateError,
)
from ..events import RequestId
from ..identity import PeerId
from .codecs import CodecError, json_loads
from .permissions import (
    MAX_PERMISSION_INDEX,
    FirewallPermission,
    PermissionEnum,
    VariantPermission,
    permission_bits,
)

__all__ = [
    "ALLOW_ALL",
    "ASK",
    "REJECT_ALL",
    "AskApproval",
    "CancelApproval",
    "CancelRuleQuery",
    "Deliver",
    "FirewallAction",
    "FirewallEngine",
    "FirewallLimits",
    "FirewallRules",
    "InvalidFirewallConfigError",
    "QueryRule",
    "Reject",
    "RejectReason",
    "RequestId",
    "Rule",
    "RuleKind",
    "SupportChanged",
]

ConnectionKey: TypeAlias = Hashable
"""A connection's id (``aiop2p.ConnectionId``); the engine only compares them, so it
needs nothing from the connection layer."""

log = logging.getLogger(__name__)

#: Locally unique id of a request (inbound and outbound share one counter, from 1).

TRq = TypeVar("TRq")
TRq_contra = TypeVar("TRq_contra", contravariant=True)


# --------------------------------------------------------------------------------------------
# Rules


class RuleKind(enum.Enum):
    """What a :class:`Rule` does with an inbound request."""

    ALLOW_ALL = "allow"
    REJECT_ALL = "reject"
    RESTRICTED = "restricted"
    ASK = "ask"


# Members the per-request checks read, as globals: on Python 3.11 an attribute of an Enum
# class goes through EnumType.__getattr__'s slot on every read (several times the cost).
_ALLOW_ALL_KIND: Final = RuleKind.ALLOW_ALL
_REJECT_ALL_KIND: Final = RuleKind.REJECT_ALL


@dataclass(frozen=True, slots=True)
class Rule(Generic[TRq_contra]):
    """A firewall rule; build with the constructors, not the dataclass fields.

    ``Rule[object]`` (allow/reject/ask) is usable wherever any ``Rule[View]`` is expected:
    a rule is contravariant in the view type it inspects.  ``REJECT_ALL`` also withdraws the
    request protocol from the peer's connections (it is not offered to the peer).
    """

    kind: RuleKind
    #: The predicate of a RESTRICTED rule: approve iff ``restriction(view)`` is true.
    restriction: Callable[[TRq_contra], bool] | None = None
    #: Registry name of a RESTRICTED rule, for the declarative form (``{"restricted": name}``).
    name: str | None = None
    #: The permission set of a rule built by :meth:`permissions` (``{"permissions": [...]}``).
    permission_set: FirewallPermission | None = None

    ALLOW_ALL: ClassVar[Rule[object]]
    REJECT_ALL: ClassVar[Rule[object]]
    ASK: ClassVar[Rule[object]]

    @staticmethod
    def allow_all() -> Rule[object]:
        """Approve every request."""
        return ALLOW_ALL

    @staticmethod
    def reject_all() -> Rule[object]:
        """Reject every request and stop offering the protocol to the peer."""
        return REJECT_ALL

    @staticmethod
    def ask() -> Rule[object]:
        """Ask the application (an approval query) for every request."""
        return ASK

    @staticmethod
    def restricted(predicate: Callable[[TRq], bool], *, name: str | None = None) -> Rule[TRq]:
        """Approve iff ``predicate(view)``; ``name`` lets ``to_dict`` write the rule out.

        A predicate that raises is logged and counts as a rejection (fail closed).
        """
        if not callable(predicate):
            raise InvalidArgumentError(f"a restriction must be callable, not {predicate!r}")
        return Rule(RuleKind.RESTRICTED, predicate, name)

    @staticmethod
    def permissions(
        allowed: FirewallPermission | int | Iterable[int | VariantPermission],
    ) -> Rule[object]:
        """Approve a request whose kind is in ``allowed`` (a permission bit set).

        ``allowed`` is a bit set (int / :class:`FirewallPermission`) or an iterable of permission
        values / :class:`~.permissions.VariantPermission` objects.  The view is checked through
        its ``permission()`` method, or taken as a bit set if it is an int; any other view is
        rejected.
        """
        if isinstance(allowed, int):
            perm = FirewallPermission(allowed)
        else:
            perm = FirewallPermission.of(*allowed)
        return Rule(RuleKind.RESTRICTED, _PermissionCheck(perm), None, perm)

    def __repr__(self) -> str:
        if self.kind is not RuleKind.RESTRICTED:
            return f"Rule.{self.kind.name}"
        if self.permission_set is not None:
            return f"Rule.permissions({self.permission_set!r})"
        label = self.name or getattr(self.restriction, "__name__", None) or "?"
        return f"Rule.restricted({label if label.startswith('<') else f'<{label}>'})"


class _PermissionCheck:
    """The predicate of :meth:`Rule.permissions` (a class so that it has a useful repr)."""

    __slots__ = ("bits",)

    def __init__(self, perm: FirewallPermission) -> None:
        self.bits = int(perm)

    def __call__(self, view: object) -> bool:
        method = getattr(view, "permission", None)
        if method is not None and callable(method):
            return (self.bits & int(method())) != 0
        if isinstance(view, int) and not isinstance(view, bool):
            return (self.bits & view) != 0
        return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _PermissionCheck) and other.bits == self.bits

    def __hash__(self) -> int:
        return hash((_PermissionCheck, self.bits))

    def __repr__(self) -> str:
        return f"<permits 0x{self.bits:08x}>"


ALLOW_ALL: Final[Rule[object]] = Rule(RuleKind.ALLOW_ALL)
REJECT_ALL: Final[Rule[object]] = Rule(RuleKind.REJECT_ALL)
ASK: Final[Rule[object]] = Rule(RuleKind.ASK)
Rule.ALLOW_ALL = ALLOW_ALL
Rule.REJECT_ALL = REJECT_ALL
Rule.ASK = ASK

_SIMPLE_RULES: Final[dict[str, Rule[object]]] = {
    "allow": ALLOW_ALL,
    "reject": REJECT_ALL,
    "ask": ASK,
}


@dataclass(eq=True)
class FirewallRules(Generic[TRq]):
    """The rule set: an optional default and per-peer rules. Mutable.

    The effective rule of a peer is its peer rule, else the default, else ``None``.
    """

    default: Rule[TRq] | None = None
    peer_rules: dict[PeerId, Rule[TRq]] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> FirewallRules[TRq]:
        """No default and no peer rules: every new peer is queried."""
        return cls()

    @classmethod
    def allow_all(cls) -> FirewallRules[TRq]:
        """Default ``ALLOW_ALL``."""
        return cls(ALLOW_ALL)

    @classmethod
    def allow_none(cls) -> FirewallRules[TRq]:
        """Default ``REJECT_ALL``."""
        return cls(REJECT_ALL)

    def get_default_rule(self) -> Rule[TRq] | None:
        return self.default

    def set_default(self, rule: Rule[TRq] | None) -> None:
        self.default = rule

    def get_rule(self, peer: PeerId) -> Rule[TRq] | None:
        """The peer-specific rule only (``None`` if the peer has none)."""
        return self.peer_rules.get(peer)

    def get_effective_rule(self, peer: PeerId) -> Rule[TRq] | None:
        """The peer's rule, else the default, else ``None``."""
        rule = self.peer_rules.get(peer)
        return self.default if rule is None else rule

    def set_rule(self, peer: PeerId, rule: Rule[TRq]) -> None:
        self.peer_rules[peer] = rule

    def remove_rule(self, peer: PeerId) -> Rule[TRq] | None:
        """Remove and return the peer's rule (``None`` if it had none)."""
        return self.peer_rules.pop(peer, None)

    def copy(self) -> FirewallRules[TRq]:
        """An independent copy (rules themselves are immutable and shared)."""
        return FirewallRules(self.default, dict(self.peer_rules))

    # -- declarative form -------------------------------------------------------------------

    def to_dict(
        self, *, restrictions: Mapping[str, Callable[[TRq], bool]] | None = None
    ) -> dict[str, Any]:
        """The declarative form (JSON-ready); see :meth:`from_dict`.

        A restricted rule is written by its ``name``, or by the name under which its predicate
        appears in ``restrictions``; an anonymous one raises
        :class:`InvalidFirewallConfigError`.
        """
        return {
            "default": _rule_to_data(self.default, "default", restrictions),
            "peers": {
                str(peer): _rule_to_data(rule, f"peers[{str(peer)!r}]", restrictions)
                for peer, rule in self.peer_rules.items()
            },
        }

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        restrictions: Mapping[str, Callable[[TRq], bool]] | None = None,
        permission_names: Mapping[str, int] | type[PermissionEnum] | None = None,
    ) -> FirewallRules[TRq]:
        """Build rules from their declarative form::

            {"default": "allow" | "reject" | "ask" | null,
             "peers": {"<peer id>": "allow" | "reject" | "ask"
                                    | {"restricted": "<name in restrictions>"}
                                    | {"permissions": <int bit set> | [<index or name>, ...]}}}

        Both keys are optional.  Permission names resolve through ``permission_names`` (a
        :class:`PermissionEnum` class or a name → bit index mapping; exact, then
        case-insensitive).  Errors raise :class:`InvalidFirewallConfigError` naming the place.
        """
        if not isinstance(data, Mapping):
            raise InvalidFirewallConfigError(
                f"firewall config: expected an object, got {type(data).__name__}"
            )
        unknown = set(data) - {"default", "peers"}
        if unknown:
            raise InvalidFirewallConfigError(
                f"firewall config: unknown key(s) {sorted(map(str, unknown))}; "
                "expected 'default' and 'peers'"
            )
        names = _permission_name_table(permission_names)
        default = _rule_from_data(data.get("default"), "default", restrictions, names)
        peers_data = data.get("peers", {})
        if peers_data is None:
            peers_data = {}
        if not isinstance(peers_data, Mapping):
            raise InvalidFirewallConfigError(
                f"firewall config: 'peers' must be an object, got {type(peers_data).__name__}"
            )
        peer_rules: dict[PeerId, Rule[TRq]] = {}
        for key, value in peers_data.items():
            where = f"peers[{key!r}]"
            if not isinstance(key, str):
                raise InvalidFirewallConfigError(f"firewall config {where}: key is not a string")
            try:
                peer = PeerId.from_string(key)
            except InvalidPeerIdError as exc:
                raise InvalidFirewallConfigError(
                    f"firewall config {where}: invalid peer id: {exc}"
                ) from exc
            if peer in peer_rules:
                raise InvalidFirewallConfigError(
                    f"firewall config {where}: peer listed twice (another spelling)"
                )
            rule = _rule_from_data(value, where, restrictions, names)
            if rule is None:
                raise InvalidFirewallConfigError(
                    f"firewall config {where}: a peer rule cannot be null"
                )
            peer_rules[peer] = rule
        return cls(default, peer_rules)

    def to_json(
        self,
        *,
        restrictions: Mapping[str, Callable[[TRq], bool]] | None = None,
        indent: int | None = 2,
    ) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(restrictions=restrictions), indent=indent)

    @classmethod
    def from_json(
        cls,
        text: str | bytes,
        *,
        restrictions: Mapping[str, Callable[[TRq], bool]] | None = None,
        permission_names: Mapping[str, int] | type[PermissionEnum] | None = None,
    ) -> FirewallRules[TRq]:
        """:meth:`from_dict` of JSON text; malformed JSON is an InvalidFirewallConfigError."""
        try:
            data = json_loads(text)
        except CodecError as exc:
            raise InvalidFirewallConfigError(f"firewall config: {exc}") from exc
        rules: FirewallRules[TRq] = cls.from_dict(
            data, restrictions=restrictions, permission_names=permission_names
        )
        return rules


def _rule_to_data(
    rule: Rule[TRq] | None,
    where: str,
    restrictions: Mapping[str, Callable[[TRq], bool]] | None,
) -> str | dict[str, Any] | None:
    if rule is None:
        return None
    if rule.kind is not RuleKind.RESTRICTED:
        value: str = rule.kind.value
        return value
    if rule.permission_set is not None:
        return {"permissions": rule.permission_set.indices()}
    if rule.name is not None:
        return {"restricted": rule.name}
    for name, predicate in (restrictions or {}).items():
        if predicate is rule.restriction:
            return {"restricted": name}
    raise InvalidFirewallConfigError(
        f"firewall config {where}: {rule!r} has no name; give it name= or list its "
        "predicate in restrictions="
    )


def _permission_name_table(
    names: Mapping[str, int] | type[PermissionEnum] | None,
) -> dict[str, int]:
    if names is None:
        return {}
    if isinstance(names, type):
        return {member.name: member.permission().index for member in names}
    return dict(names)


def _permission_index(item: object, where: str, names: Mapping[str, int]) -> int:
    if isinstance(item, str):
        index = names.get(item)
        if index is None:
            folded = [v for k, v in names.items() if k.casefold() == item.casefold()]
            if len(set(folded)) == 1:
                index = folded[0]
        if index is None:
            known = ", ".join(sorted(names)) or "none given"
            raise InvalidFirewallConfigError(
                f"firewall config {where}: unknown permission name {item!r} (known: {known})"
            )
        item = index
    if isinstance(item, bool) or not isinstance(item, int):
        raise InvalidFirewallConfigError(
            f"firewall config {where}: a permission is an index or a name, not {item!r}"
        )
    if not 0 <= item <= MAX_PERMISSION_INDEX:
        raise InvalidFirewallConfigError(
            f"firewall config {where}: permission index {item} outside 0..{MAX_PERMISSION_INDEX}"
        )
    return item


def _rule_from_data(
    value: object,
    where: str,
    restrictions: Mapping[str, Callable[[TRq], bool]] | None,
    names: Mapping[str, int],
) -> Rule[TRq] | None:
    if value is None:
        return None
    if isinstance(value, str):
        rule = _SIMPLE_RULES.get(value)
        if rule is None:
            raise InvalidFirewallConfigError(
                f"firewall config {where}: unknown rule {value!r}; expected 'allow', 'reject', "
                "'ask', {'restricted': name} or {'permissions': [...]}"
            )
        return rule
    if not isinstance(value, Mapping) or len(value) != 1:
        raise InvalidFirewallConfigError(
            f"firewall config {where}: expected 'allow', 'reject', 'ask' or an object with "
            f"exactly one key 'restricted' or 'permissions', got {value!r}"
        )
    ((key, arg),) = value.items()
    if key == "restricted":
        if not isinstance(arg, str):
            raise InvalidFirewallConfigError(
                f"firewall config {where}.restricted: expected a name, got {arg!r}"
            )
        predicate = (restrictions or {}).get(arg)
        if predicate is None:
            known = ", ".join(sorted(restrictions or {})) or "none registered"
            raise InvalidFirewallConfigError(
                f"firewall config {where}.restricted: unknown restriction {arg!r} (known: {known})"
            )
        return Rule.restricted(predicate, name=arg)
    if key == "permissions":
        here = f"{where}.permissions"
        if isinstance(arg, int) and not isinstance(arg, bool):
            try:
                bits = permission_bits(arg)
            except InvalidArgumentError as exc:
                raise InvalidFirewallConfigError(f"firewall config {here}: {exc}") from exc
            return Rule.permissions(bits)
        if not isinstance(arg, list):
            raise InvalidFirewallConfigError(
                f"firewall config {here}: expected a bit set (int) or a list of indices/names, "
                f"got {arg!r}"
            )
        indices = [_permission_index(item, f"{here}[{i}]", names) for i, item in enumerate(arg)]
        return Rule.permissions(FirewallPermission.from_indices(indices))
    raise InvalidFirewallConfigError(
        f"firewall config {where}: unknown rule key {key!r}; expected 'restricted' or 'permissions'"
    )


# --------------------------------------------------------------------------------------------
# Engine actions


class RejectReason(enum.Enum):
    """Why the engine rejected a request (maps to the seed's ``InboundFailure``)."""

    NOT_PERMITTED = "not_permitted"
    CONNECTION_CLOSED = "connection_closed"


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand the request to the application."""

    request_id: RequestId


@dataclass(frozen=True, slots=True)
class Reject:
    """Fail the request (report ``InboundFailure(reason)``; close its stream unanswered)."""

    request_id: RequestId
    reason: RejectReason


@dataclass(frozen=True, slots=True)
class QueryRule:
    """Ask the application for a rule for ``peer``; report with ``on_rule_answer``.

    At most one is outstanding per peer until answered or cancelled.
    """

    peer: PeerId


@dataclass(frozen=True, slots=True)
class CancelRuleQuery:
    """Abort the outstanding rule query of ``peer``; do not report its answer."""

    peer: PeerId


@dataclass(frozen=True, slots=True)
class AskApproval(Generic[TRq]):
    """Ask the application to approve one request; report with ``on_approval``."""

    request_id: RequestId
    peer: PeerId
    view: TRq


@dataclass(frozen=True, slots=True)
class CancelApproval:
    """Abort the outstanding approval query of a request; do not report its answer."""

    request_id: RequestId


@dataclass(frozen=True, slots=True)
class SupportChanged:
    """Whether the request protocol is offered to ``peer``'s connections changed."""

    peer: PeerId
    offered: bool


FirewallAction: TypeAlias = (
    Deliver
    | Reject
    | QueryRule
    | CancelRuleQuery
    | AskApproval[TRq]
    | CancelApproval
    | SupportChanged
)


# --------------------------------------------------------------------------------------------
# Engine


@dataclass(frozen=True, slots=True)
class FirewallLimits:
    """Bounds on what the engine holds; a request over a bound is rejected NOT_PERMITTED.

    "Parked" counts requests waiting for a rule query and requests waiting for approval.
    """

    max_parked_requests_per_peer: int = 64
    max_parked_requests: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_parked_requests_per_peer", "max_parked_requests"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgumentError(f"FirewallLimits.{name} must be an int >= 0")


class _Stage(enum.Enum):
    AWAITING_RULE = 1
    AWAITING_APPROVAL = 2


class _Parked(Generic[TRq]):
    __slots__ = ("connection_id", "peer", "stage", "view")

    def __init__(
        self, peer: PeerId, connection_id: ConnectionKey, view: TRq, stage: _Stage
    ) -> None:
        self.peer = peer
        self.connection_id = connection_id
        self.view = view
        self.stage = stage


class FirewallEngine(Generic[TRq]):
    """Firewall decisions and bookkeeping (rule queries, approvals, protocol support,
    rule changes), without I/O.

    Inputs are methods named ``on_*`` (facts) and rule setters (commands); each returns the
    actions to execute, in order.  Fixes relative to the original (``docs/compat.md``):

    * "compat: removing the default clears it": :meth:`remove_default` clears the default.
    * "compat: one outcome per request": a request ends exactly once;
      :meth:`on_request_finished` and connection close withdraw it everywhere (its approval
      query is cancelled).
    * "compat: no question for a closed connection": a request on a connection the engine
      does not know (already closed) is rejected ``CONNECTION_CLOSED`` before any query.
    * "compat: a user rule wins over a pending query": setting a peer rule cancels that
      peer's pending rule query (``CancelRuleQuery``); answers for queries that are not
      pending are ignored.
    * "compat: one rule query per peer": requests parked for a rule wait as long as their
      peer's rule query is pending; a rule change that leaves the peer without an effective
      rule does not reject them, and there is never a second concurrent query for a peer.
    """

    def __init__(
        self,
        rules: FirewallRules[TRq] | None = None,
        limits: FirewallLimits | None = None,
    ) -> None:
        self._rules: FirewallRules[TRq] = rules.copy() if rules is not None else FirewallRules()
        self.limits = limits if limits is not None else FirewallLimits()
        self._connections: dict[PeerId, set[ConnectionKey]] = {}
        self._conn_peer: dict[ConnectionKey, PeerId] = {}
        self._offered: dict[PeerId, bool] = {}  # last support flag, per connected peer
        self._allowing: dict[ConnectionKey, PeerId] = {}
        """The live connections whose peer's effective rule is ``ALLOW_ALL``, to that peer:
        :meth:`allows_at_once` answers with one lookup per request.  Kept with ``_offered``
        wherever a connection comes or goes or a connected peer's rule changes."""
        self._rule_queries: set[PeerId] = set()  # peers with an outstanding QueryRule
        self._parked: dict[RequestId, _Parked[TRq]] = {}
        self._parked_by_peer: dict[PeerId, dict[RequestId, None]] = {}  # insertion-ordered

    # -- queries ----------------------------------------------------------------------------

    def get_rules(self) -> FirewallRules[TRq]:
        """A copy of the current rules (``get_firewall_config``)."""
        return self._rules.copy()

    def effective_rule(self, peer: PeerId) -> Rule[TRq] | None:
        return self._rules.get_effective_rule(peer)

    def peer_rule(self, peer: PeerId) -> Rule[TRq] | None:
        return self._rules.get_rule(peer)

    def offers_protocol(self, peer: PeerId) -> bool:
        """Whether to offer the request protocol to ``peer``: effective rule is not RejectAll.

        Asked on every inbound stream: a connected peer's answer is its ``_offered`` flag,
        which every rule change of a connected peer renews (:meth:`_rule_changed`)."""
        offered = self._offered.get(peer)
        return self._offers_by_rule(peer) if offered is None else offered

    def _offers_by_rule(self, peer: PeerId) -> bool:
        rule = self._rules.get_effective_rule(peer)
        return rule is None or rule.kind is not _REJECT_ALL_KIND

    def _note_allowing(self, peer: PeerId, connection_ids: Iterable[ConnectionKey]) -> None:
        """Renew ``_allowing`` for ``peer``'s live ``connection_ids`` after its rule changed."""
        rule = self._rules.get_effective_rule(peer)
        allowing = self._allowing
        if rule is not None and rule.kind is _ALLOW_ALL_KIND:
            for connection_id in connection_ids:
                allowing[connection_id] = peer
        else:
            for connection_id in connection_ids:
                allowing.pop(connection_id, None)

    def is_connected(self, peer: PeerId) -> bool:
        return peer in self._connections

    def is_rule_query_pending(self, peer: PeerId) -> bool:
        return peer in self._rule_queries

    def is_parked(self, request_id: RequestId) -> bool:
        """True while the request waits for a rule or an approval."""
        return request_id in self._parked

    def is_awaiting_approval(self, request_id: RequestId) -> bool:
        parked = self._parked.get(request_id)
        return parked is not None and parked.stage is _Stage.AWAITING_APPROVAL

    @property
    def parked_count(self) -> int:
        return len(self._parked)

    def parked_count_of(self, peer: PeerId) -> int:
        return len(self._parked_by_peer.get(peer, ()))

    # -- connections ------------------------------------------------------------------------

    def on_connection_established(
        self, peer: PeerId, connection_id: ConnectionKey, *, inbound: bool
    ) -> list[FirewallAction[TRq]]:
        """Record a connection; an inbound one from a peer without a rule starts a query.

        The protocol support of the new connection is :meth:`offers_protocol` (no action).
        """
        if connection_id in self._conn_peer:
            raise InvalidStateError(f"connection {connection_id} is already established")
        self._conn_peer[connection_id] = peer
        conns = self._connections.get(peer)
        if conns is None:
            self._connections[peer] = {connection_id}
            self._offered[peer] = self._offers_by_rule(peer)
        else:
            conns.add(connection_id)
        self._note_allowing(peer, (connection_id,))
        if (
            inbound
            and peer not in self._rule_queries
            and self._rules.get_effective_rule(peer) is None
        ):
            self._rule_queries.add(peer)
            return [QueryRule(peer)]
        return []

    def on_connection_closed(
        self, peer: PeerId, connection_id: ConnectionKey
    ) -> list[FirewallAction[TRq]]:
        """Fail the connection's parked requests (CONNECTION_CLOSED, approvals cancelled);
        on the peer's last connection also cancel its rule query.  Unknown ids are ignored."""
        if self._conn_peer.get(connection_id) != peer:
            return []
        del self._conn_peer[connection_id]
        self._allowing.pop(connection_id, None)
        actions: list[FirewallAction[TRq]] = []
        by_peer = self._parked_by_peer.get(peer)
        if by_peer:
            for request_id in [
                r for r in by_peer if self._parked[r].connection_id == connection_id
            ]:
                parked = self._unpark(request_id)
                if parked.stage is _Stage.AWAITING_APPROVAL:
                    actions.append(CancelApproval(request_id))
                actions.append(Reject(request_id, RejectReason.CONNECTION_CLOSED))
        conns = self._connections[peer]
        conns.discard(connection_id)
        if not conns:
            del self._connections[peer]
            del self._offered[peer]
            if peer in self._rule_queries:
                self._rule_queries.discard(peer)
                actions.append(CancelRuleQuery(peer))
        return actions

    # -- requests ---------------------------------------------------------------------------

    def allows_at_once(self, peer: PeerId, connection_id: ConnectionKey) -> bool:
        """Whether the peer's rule delivers every request on this live connection at once
        (``ALLOW_ALL``): what :meth:`on_request` would answer with a lone ``Deliver``, for a
        caller that wants no action list per request.  ``False``: ask :meth:`on_request`.

        ``peer`` is compared by identity: the caller passes the ``PeerId`` the connection
        was established with (an equal copy gets ``False``, so :meth:`on_request` decides;
        ``==`` would cost a Python ``__eq__`` call per request)."""
        return self._allowing.get(connection_id) is peer

    def on_request(
        self, request_id: RequestId, peer: PeerId, connection_id: ConnectionKey, view: TRq
    ) -> list[FirewallAction[TRq]]:
        """Evaluate an inbound request; ``view`` is the firewall view of it."""
        if request_id in self._parked:
            raise InvalidStateError(f"request {request_id} is already in the firewall")
        if self._conn_peer.get(connection_id) != peer:
            return [Reject(request_id, RejectReason.CONNECTION_CLOSED)]
        rule = self._rules.get_effective_rule(peer)
        if rule is None:
            if not self._may_park(peer):
                return [Reject(request_id, RejectReason.NOT_PERMITTED)]
            self._park(request_id, peer, connection_id, view, _Stage.AWAITING_RULE)
            if peer in self._rule_queries:
                return []
            self._rule_queries.add(peer)
            return [QueryRule(peer)]
        kind = rule.kind
        if kind is RuleKind.ALLOW_ALL:
            return [Deliver(request_id)]
        if kind is RuleKind.ASK:
            if not self._may_park(peer):
                return [Reject(request_id, RejectReason.NOT_PERMITTED)]
            self._park(request_id, peer, connection_id, view, _Stage.AWAITING_APPROVAL)
            return [AskApproval(request_id, peer, view)]
        if kind is RuleKind.RESTRICTED and _check(rule, view):
            return [Deliver(request_id)]
        return [Reject(request_id, RejectReason.NOT_PERMITTED)]

    def on_request_finished(self, request_id: RequestId) -> list[FirewallAction[TRq]]:
        """The Network ended the request itself (timeout, stream failure, response sent or
        omitted): forget it; cancel its approval query.  No Reject follows; unknown ids (e.g.
        already delivered) are ignored."""
        if request_id not in self._parked:
            return []
        parked = self._unpark(request_id)
        if parked.stage is _Stage.AWAITING_APPROVAL:
            return [CancelApproval(request_id)]
        return []

    # -- answers ----------------------------------------------------------------------------

    def on_rule_answer(self, peer: PeerId, rule: Rule[TRq] | None) -> list[FirewallAction[TRq]]:
        """The outcome of ``QueryRule(peer)``: a rule, or ``None`` for a dropped responder,
        timeout or closed firewall channel.  A rule becomes the peer's persistent rule;
        parked requests are then decided (``None`` rejects them).  Ignored if no
        query is pending for the peer (late answer after cancel)."""
        if peer not in self._rule_queries:
            return []
        self._rule_queries.discard(peer)
        if rule is not None:
            self._rules.set_rule(peer, rule)
        return self._rule_changed(peer)

    def on_approval(self, request_id: RequestId, approved: bool) -> list[FirewallAction[TRq]]:
        """The outcome of ``AskApproval``; ``False`` also for timeout, dropped responder or a
        closed firewall channel.  Ignored unless the request is awaiting approval."""
        parked = self._parked.get(request_id)
        if parked is None or parked.stage is not _Stage.AWAITING_APPROVAL:
            return []
        self._unpark(request_id)
        if approved:
            return [Deliver(request_id)]
        return [Reject(request_id, RejectReason.NOT_PERMITTED)]

    # -- rule changes -------------------------------------------------------------------------

    def set_default(self, rule: Rule[TRq] | None) -> list[FirewallAction[TRq]]:
        """Set (or clear) the default; re-decide connected peers without a peer rule."""
        self._rules.set_default(rule)
        actions: list[FirewallAction[TRq]] = []
        for peer in list(self._connections):
            if peer not in self._rules.peer_rules:
                actions += self._rule_changed(peer)
        return actions

    def remove_default(self) -> list[FirewallAction[TRq]]:
        """Clear the default (compat: removing the default clears it): ``set_default(None)``."""
        return self.set_default(None)

    def set_peer_rule(self, peer: PeerId, rule: Rule[TRq]) -> list[FirewallAction[TRq]]:
        """Set the peer's rule; cancels its pending rule query (compat: a user rule wins over
        a pending query), then re-decides."""
        self._rules.set_rule(peer, rule)
        actions: list[FirewallAction[TRq]] = []
        if peer in self._rule_queries:
            self._rule_queries.discard(peer)
            actions.append(CancelRuleQuery(peer))
        actions += self._rule_changed(peer)
        return actions

    def remove_peer_rule(self, peer: PeerId) -> list[FirewallAction[TRq]]:
        """Remove the peer's rule (falls back to the default), then re-decide."""
        if self._rules.remove_rule(peer) is None:
            return []
        return self._rule_changed(peer)

    def replace_rules(self, rules: FirewallRules[TRq]) -> list[FirewallAction[TRq]]:
        """Replace the whole rule set (e.g. a reloaded config file); like setting each rule."""
        self._rules = rules.copy()
        actions: list[FirewallAction[TRq]] = []
        for peer in [p for p in self._rule_queries if p in self._rules.peer_rules]:
            self._rule_queries.discard(peer)
            actions.append(CancelRuleQuery(peer))
        for peer in list(self._connections):
            actions += self._rule_changed(peer)
        return actions

    # -- internals --------------------------------------------------------------------------

    def _may_park(self, peer: PeerId) -> bool:
        limits = self.limits
        return (
            len(self._parked) < limits.max_parked_requests
            and len(self._parked_by_peer.get(peer, ())) < limits.max_parked_requests_per_peer
        )

    def _park(
        self,
        request_id: RequestId,
        peer: PeerId,
        connection_id: ConnectionKey,
        view: TRq,
        stage: _Stage,
    ) -> None:
        self._parked[request_id] = _Parked(peer, connection_id, view, stage)
        self._parked_by_peer.setdefault(peer, {})[request_id] = None

    def _unpark(self, request_id: RequestId) -> _Parked[TRq]:
        parked = self._parked.pop(request_id)
        by_peer = self._parked_by_peer[parked.peer]
        del by_peer[request_id]
        if not by_peer:
            del self._parked_by_peer[parked.peer]
        return parked

    def _rule_changed(self, peer: PeerId) -> list[FirewallAction[TRq]]:
        """Re-send protocol support if it changed; decide requests parked for a rule."""
        actions: list[FirewallAction[TRq]] = []
        if peer in self._offered:
            offered = self._offers_by_rule(peer)
            if offered != self._offered[peer]:
                self._offered[peer] = offered
                actions.append(SupportChanged(peer, offered))
            self._note_allowing(peer, self._connections[peer])
        by_peer = self._parked_by_peer.get(peer)
        if not by_peer:
            return actions
        rule = self._rules.get_effective_rule(peer)
        if rule is None and peer in self._rule_queries:
            return actions  # compat: one rule query per peer; keep waiting for it
        for request_id in list(by_peer):
            parked = self._parked[request_id]
            if parked.stage is not _Stage.AWAITING_RULE:
                continue
            if rule is not None and rule.kind is RuleKind.ASK:
                parked.stage = _Stage.AWAITING_APPROVAL
                actions.append(AskApproval(request_id, peer, parked.view))
                continue
            self._unpark(request_id)
            if rule is not None and (
                rule.kind is RuleKind.ALLOW_ALL
                or (rule.kind is RuleKind.RESTRICTED and _check(rule, parked.view))
            ):
                actions.append(Deliver(request_id))
            else:
                actions.append(Reject(request_id, RejectReason.NOT_PERMITTED))
        return actions


def _check(rule: Rule[TRq], view: TRq) -> bool:
    """Run a restriction; an exception in the user's predicate rejects (fail closed)."""
    predicate = rule.restriction
    if predicate is None:
        return False
    try:
        return bool(predicate(view))
    except Exception:
        log.exception("firewall restriction %r raised; rejecting the request", rule)
        return False
