"""``aiop2p serve``: run a :class:`~aiop2p.network.Network` peer behind a firewall.

Secure by default: without a firewall option every request is rejected (the request
protocol is not even offered), and the command says once which flag would allow it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from ..config import KadConfig, NodeConfig
from ..errors import InvalidArgumentError
from ..events import (
    AutoRelayAdded,
    AutoRelayRemoved,
    ConnectionEstablished,
    DirectConnectionUpgraded,
    HolePunchFailed,
    HolePunchStarted,
    InboundRequestFailed,
    ListenerError,
    NetworkEvent,
    ReachabilityChanged,
    RelayReservationLost,
    RelayReservationRestored,
)
from ..identity import PeerId
from ..multiaddr import Multiaddr
from ..network import DcutrConfig, InboundRequest, Network
from ..network.codecs import JsonCodec, RawCodec, json_loads
from ..network.firewall import FirewallRules, InvalidFirewallConfigError, Rule, RuleKind
from ..network.server import RequestHandler
from ..node import Node
from ..services.relay.auto import AutoRelayConfig
from ._common import (
    Output,
    add_autonat_private_argument,
    add_dht_arguments,
    add_protocol_argument,
    autonat_config,
    default_address_book_path,
    default_key_path,
    dht_config,
    load_key,
    stop_on_signals,
)
from .discover import add_mdns_interface_argument, mdns_config
from .firewall_prompt import FirewallPrompter, LineReader, is_ping
from .handler import AsyncHandler, load_handler
from .log_limit import MAX_LOG_LINES_PER_SECOND, RateLimitedLog, routed_logging
from .startup import announce_identity, suggest_commands

__all__ = ["DEFAULT_RULES", "RequestView", "build_firewall", "cmd_serve", "request_view"]

DEFAULT_RULES: dict[str, Rule[Any] | None] = {
    "allow": Rule.allow_all(),
    "reject": Rule.reject_all(),
    "ask": None,  # no default: each new peer is asked for its rule
}
DEFAULT_LISTEN = "/ip4/0.0.0.0/tcp/0"
"""``--listen``: every interface, a port the system picks."""
DEFAULT_MAX_CONCURRENT_REQUESTS = 256
"""``--max-concurrent-requests``: answers in progress at once (each may wait for a slow
reader until the request timeout)."""
MAX_SHOWN_CHARS = 200
"""A request shown in text longer than this is cut (the JSON output has it whole)."""


class RequestView(dict[str, int]):
    """The firewall view of a request that is not JSON: only its size."""


def request_view(body: bytes) -> Any:
    """What the firewall and the prompts see of a request: its JSON value if it is
    JSON, else ``{"bytes": size}`` (serve echoes any bytes, JSON or not)."""
    try:
        return json_loads(body)  # a CodecError (a ValueError) also for JSON nested too deeply
    except ValueError:
        return RequestView(bytes=len(body))


def show(view: Any) -> str:
    text = json.dumps(view, ensure_ascii=False)
    if isinstance(view, RequestView):
        text = f"<{view['bytes']} bytes, not JSON>"
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _peer(text: str) -> PeerId:
    return PeerId.from_string(text)


def build_firewall(args: argparse.Namespace) -> tuple[FirewallRules[Any], bool]:
    """The rules from ``--firewall``, ``--default-rule``, ``--allow-peer``, ``--reject-peer``
    (later ones override); the flag says that no option was given (reject all)."""
    given = bool(args.firewall or args.default_rule or args.allow_peer or args.reject_peer)
    rules: FirewallRules[Any] = FirewallRules.allow_none()
    if args.firewall:
        text = Path(args.firewall).read_text()
        try:
            rules = FirewallRules.from_json(text, restrictions={"ping": is_ping})
        except InvalidFirewallConfigError as exc:
            raise InvalidFirewallConfigError(f"{args.firewall}: {exc}") from None
    if args.default_rule:
        rules.set_default(DEFAULT_RULES[args.default_rule])
    for text in args.allow_peer or ():
        rules.set_rule(_peer(text), Rule.allow_all())
    for text in args.reject_peer or ():
        rules.set_rule(_peer(text), Rule.reject_all())
    return rules, not given


async def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    key = load_key(args.key)
    listen = args.listen or [DEFAULT_LISTEN]
    addrs = [Multiaddr(a) for a in listen]  # a malformed one fails before any listening
    relays = [Multiaddr(a) for a in args.relay or []]
    for relay_addr in relays:
        if relay_addr.peer_id is None:
            raise InvalidArgumentError(f"--relay needs the relay's /p2p/<id>: {relay_addr}")
    if args.mdns_interface and not args.mdns:
        raise InvalidArgumentError("--mdns-interface needs mDNS (drop --no-mdns)")
    kad = dht_config(args.bootstrap, args.dht_mode, default_mode="client")
    # AutoNAT runs with the DHT unless told otherwise: what it learns drives the DHT mode
    # (--dht-mode auto) and the automatic relays.
    autonat = args.autonat if args.autonat is not None else kad is not None
    auto_relay = args.auto_relay or ("auto" if kad is not None and kad.bootstrap else "off")
    if auto_relay == "auto" and not autonat:
        raise InvalidArgumentError("--auto-relay auto follows AutoNAT: drop --no-autonat")
    if kad is not None and kad.mode == "auto" and not autonat:
        raise InvalidArgumentError("--dht-mode auto follows AutoNAT: drop --no-autonat")
    rules, secure_default = build_firewall(args)
    if args.address_book:
        book: Path | None = Path(args.address_book)
    else:
        book = default_address_book_path() if args.key is None else None
    handler = _user_handler(args, out)
    if handler is None:
        return 2
    raw = args.echo or args.raw or args.handler is None
    net: Network[Any, Any] = Network(
        key,
        firewall=rules,
        codec=RawCodec() if raw else JsonCodec(),
        firewall_view=request_view if raw else None,
        firewall_handler=FirewallPrompter(out, LineReader(out.io.stdin), show=show),
        mdns=mdns_config(args.mdns_interface) if args.mdns else None,
        address_book_path=book,
        node=NodeConfig(kad=kad, autonat=autonat_config(args) if autonat else None),
        dcutr=DcutrConfig(
            allow_private_addrs=args.punch_private_addrs,
            allow_loopback_addrs=args.punch_private_addrs,
        ),
        protocols=(args.protocol,),
        auto_relay=_auto_relay_config(auto_relay, kad, args.max_relays),
    )
    # Output goes through a bounded queue: a stdout nobody reads never blocks the node.
    with stop_on_signals(out.io) as stop, out.nonblocking():
        async with net:
            listening: list[Multiaddr] = []  # printed once all listen (or one error alone)
            for addr in addrs:
                await net.start_listening(addr)
                listening += (b.with_peer_id(net.peer_id) for b in net.listeners()[-1].addrs)
            announce_identity(out, Path(args.key) if args.key else default_key_path(), net.peer_id)
            if secure_default:
                out.notice(
                    "aiop2p serve: rejecting every request (no firewall rule given); "
                    "--default-rule allow accepts them (see also --allow-peer, --firewall)",
                    notice="rejecting every request (no firewall rule given)",
                    default_rule="reject",
                    allow_with="--default-rule allow",
                )
            for full in listening:
                out.emit(f"listening on {full}", address=str(full))
            for relay_addr in relays:
                relay_id = relay_addr.peer_id
                assert relay_id is not None  # checked above
                circuit = await net.start_relayed_listening(relay_id, relay_addr)
                out.emit(f"listening via relay on {circuit}", address=str(circuit), relayed=True)
                listening.append(circuit)
            if kad is not None:
                out.emit(
                    f"dht: {kad.mode} mode, joining through {len(kad.bootstrap)} peers",
                    dht_mode=kad.mode,
                    bootstrap=[str(a) for a in kad.bootstrap],
                )
            if net.auto_relay is not None:
                max_relays = net.auto_relay.config.max_relays
                out.emit(
                    f"auto relay: {auto_relay} (up to {max_relays} relays)",
                    auto_relay=auto_relay,
                    max_relays=max_relays,
                )
            suggest_commands(out, listening, rules, echo=args.echo, protocol=args.protocol)
            log = RateLimitedLog(out)
            with routed_logging(log, out.as_json):
                await _serve_until(stop, net, out, log, handler, args.max_concurrent_requests)
            log.close()
    return 0


def _user_handler(args: argparse.Namespace, out: Output) -> RequestHandler[Any, Any] | None:
    """What answers each approved request: ``--handler``'s function, the echo, or a drop
    (no answer) — each preceded by the request's line on stdout.  ``None`` (after one
    error line) when ``--handler`` cannot be used."""
    if args.handler is not None and args.echo:
        out.error("serve", "--handler and --echo exclude each other", "InvalidArgumentError")
        return None
    if args.raw and args.handler is None:
        out.error("serve", "--raw needs --handler (--echo echoes bytes)", "InvalidArgumentError")
        return None
    if args.handler is None:
        answer: AsyncHandler = _echo if args.echo else _drop
        raw = True
    else:
        try:
            answer = load_handler(args.handler)
        except InvalidArgumentError as exc:
            out.error("serve", str(exc), type(exc).__name__)
            return None
        raw = args.raw

    async def handle(request: InboundRequest[Any, Any]) -> Any:
        _print_request(out, request, raw=raw)
        return await answer(request)

    return handle


async def _echo(request: InboundRequest[bytes, bytes]) -> bytes:
    return request.request


async def _drop(request: InboundRequest[bytes, bytes]) -> None:
    request.drop()


def _auto_relay_config(mode: str, kad: KadConfig | None, max_relays: int) -> AutoRelayConfig | None:
    """``--auto-relay``'s automatic relays, on the bootstrap peers first (None when off)."""
    if mode == "off":
        return None
    return AutoRelayConfig(
        mode="always" if mode == "always" else "auto",
        relays=kad.bootstrap if kad is not None else (),
        max_relays=max_relays,
    )


def _report_reachability(out: Output, node: Node, event: ReachabilityChanged) -> None:
    """The DHT follows the verdict before the Network reports it (``--dht-mode auto``)."""
    word = {True: "publicly reachable", False: "not reachable", None: "unknown"}
    dht = f"; dht: {node.kad.mode} mode" if node.kad is not None else ""
    out.emit(
        f"autonat: {event.addr} is {word[event.reachable]} ({event.servers} servers){dht}",
        addr=str(event.addr),
        reachable=event.reachable,
        servers=event.servers,
        dht_mode=node.kad.mode if node.kad is not None else None,
    )


def _report_auto_relay(out: Output, event: AutoRelayAdded | AutoRelayRemoved) -> None:
    if isinstance(event, AutoRelayAdded):
        out.emit(
            f"auto relay: listening via {event.relay} on {event.addr}",
            relay=str(event.relay),
            auto_relay="added",
            address=str(event.addr),
            relayed=True,
        )
    else:
        reason = f": {event.error}" if event.error is not None else " (not needed)"
        out.emit(
            f"auto relay: stopped listening via {event.relay}{reason}",
            relay=str(event.relay),
            auto_relay="removed",
            error=str(event.error) if event.error is not None else None,
        )


async def _serve_until(
    stop: asyncio.Event,
    net: Network[Any, Any],
    out: Output,
    log: RateLimitedLog,
    handler: RequestHandler[Any, Any],
    max_concurrency: int,
) -> None:
    """``net.serve(handler)`` and the event report, until ``stop``: each request in its
    own task, at most ``max_concurrency`` at once, so a peer that does not read its
    responses holds only its own answers, never the requests of others."""
    loop = asyncio.get_running_loop()
    workers = [
        loop.create_task(net.serve(handler, max_concurrency=max_concurrency)),
        loop.create_task(_report_events(net, out, log)),
    ]
    try:
        await stop.wait()
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


def _print_request(out: Output, request: InboundRequest[Any, Any], *, raw: bool) -> None:
    body = request.request
    view = request_view(body) if raw else body
    size = {"size": len(body)} if raw else {}
    out.emit(
        f"request {int(request.request_id)} from {request.peer}: {show(view)}",
        request_id=int(request.request_id),
        peer_id=str(request.peer),
        request=view,
        **size,
    )


async def _report_events(net: Network[Any, Any], out: Output, log: RateLimitedLog) -> None:
    async for event in net.events():
        if isinstance(event, InboundRequestFailed):
            log.write(
                f"aiop2p serve: request {int(event.request_id)} from {event.peer} "
                f"failed: {event.failure.value}",
                request_id=int(event.request_id),
                peer_id=str(event.peer),
                failure=event.failure.name.lower(),
            )
        elif isinstance(event, ReachabilityChanged):
            _report_reachability(out, net._node, event)
        elif isinstance(event, AutoRelayAdded | AutoRelayRemoved):
            _report_auto_relay(out, event)
        elif isinstance(event, ConnectionEstablished) and _refused(net, event.peer):
            # Its requests never reach the exchange: the protocol is not even offered.
            log.write(
                f"aiop2p serve: peer {event.peer} connected; its rule refuses its requests",
                peer_id=str(event.peer),
                refused="peer",
            )
        else:
            _report_connectivity(out, event)


def _refused(net: Network[Any, Any], peer: PeerId) -> bool:
    """Whether ``peer`` has a reject-all rule of its own (its streams are refused at
    negotiation).  A reject-all default is said once at start, not per connection: every
    peer that only pings would be reported."""
    rule = net.get_peer_rule(peer)
    return rule is not None and rule.kind is RuleKind.REJECT_ALL


def _report_connectivity(out: Output, event: NetworkEvent) -> None:
    """Relay reservations and hole punches, as they happen (one line each)."""
    if isinstance(event, RelayReservationLost):
        reason = f": {event.error}" if event.error is not None else ""
        out.emit(
            f"relay {event.relay}: reservation lost{reason}; re-reserving",
            relay=str(event.relay),
            reservation="lost",
            error=str(event.error) if event.error is not None else None,
        )
    elif isinstance(event, RelayReservationRestored):
        out.emit(
            f"relay {event.relay}: reservation restored (attempt {event.attempts})",
            relay=str(event.relay),
            reservation="restored",
            attempts=event.attempts,
        )
    elif isinstance(event, ListenerError):
        out.emit(f"listener error: {event.error}", listener_error=str(event.error))
    elif isinstance(event, HolePunchStarted):
        side = "initiator" if event.initiator else "responder"
        out.emit(
            f"hole punch with {event.peer}: attempt {event.attempt} ({side})",
            peer_id=str(event.peer),
            hole_punch="started",
            attempt=event.attempt,
            initiator=event.initiator,
        )
    elif isinstance(event, DirectConnectionUpgraded):
        out.emit(
            f"hole punch with {event.peer}: direct connection via {event.addr}",
            peer_id=str(event.peer),
            hole_punch="succeeded",
            addr=str(event.addr) if event.addr is not None else None,
            attempts=event.attempts,
            initiator=event.initiator,
        )
    elif isinstance(event, HolePunchFailed):
        out.emit(
            f"hole punch with {event.peer} failed (attempt {event.attempts}): {event.error}; "
            "staying relayed",
            peer_id=str(event.peer),
            hole_punch="failed",
            attempts=event.attempts,
            initiator=event.initiator,
            error=str(event.error),
        )


def add_parser(sub: Any, common: argparse.ArgumentParser, key_help: str) -> None:
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="run a peer until SIGINT/SIGTERM",
        description="Run a peer until SIGINT or SIGTERM: ping, identify and perf for anyone; "
        "requests (on --protocol) only as the firewall allows (without a firewall "
        "option: none), answered by --handler's function, echoed with --echo, else left "
        "unanswered. It first prints its identity file, its addresses and a command to "
        "try against it. Refused and failed requests are logged on stderr, at most "
        f"{MAX_LOG_LINES_PER_SECOND} lines a second.",
    )
    p.add_argument(
        "--listen",
        action="append",
        metavar="MULTIADDR",
        help=f"listen on this address; repeatable (default: {DEFAULT_LISTEN})",
    )
    p.add_argument("--key", metavar="FILE", help=key_help)
    p.add_argument(
        "--handler",
        metavar="MODULE:FUNCTION",
        help="answer each approved request with this async function, handler(request) -> "
        "response, imported as uvicorn does (the current directory first on sys.path); it "
        "gets and returns JSON values (bytes with --raw)",
    )
    p.add_argument(
        "--raw",
        action="store_true",
        help="--handler gets the request bytes and returns the response bytes",
    )
    p.add_argument(
        "--echo", action="store_true", help="answer every approved request with the same value"
    )
    add_protocol_argument(p)
    p.add_argument(
        "--max-concurrent-requests",
        type=_positive_int,
        default=DEFAULT_MAX_CONCURRENT_REQUESTS,
        metavar="N",
        help="requests answered at once; more wait their turn",
    )
    p.add_argument(
        "--default-rule",
        choices=sorted(DEFAULT_RULES),
        help="for peers without a rule: allow, reject, or ask on the terminal per peer "
        "(default: reject; said once when no firewall option is given)",
    )
    p.add_argument(
        "--allow-peer",
        action="append",
        metavar="PEER_ID",
        help="accept every request of this peer; repeatable",
    )
    p.add_argument(
        "--reject-peer",
        action="append",
        metavar="PEER_ID",
        help="reject every request of this peer; repeatable",
    )
    p.add_argument(
        "--firewall",
        metavar="FILE",
        help='rules as JSON: {"default": "allow"|"reject"|"ask"|null, '
        '"peers": {"<peer id>": "allow"|"reject"|"ask"|{"restricted": "ping"}}}; '
        "the options above override it",
    )
    p.add_argument(
        "--address-book",
        metavar="FILE",
        help="persist known peer addresses there (default: next to the default key; "
        "none with --key)",
    )
    p.add_argument(
        "--relay",
        action="append",
        metavar="MULTIADDR",
        help="also listen through this circuit relay (its address with /p2p/<id>); repeatable",
    )
    p.add_argument(
        "--mdns",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="announce and discover peers on the LAN with mDNS (default: on)",
    )
    add_mdns_interface_argument(p)
    add_dht_arguments(p, mode_default="client")
    p.add_argument(
        "--autonat",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="learn with AutoNAT v2 which of our addresses are publicly reachable, and "
        "answer other peers' checks (default: on with the DHT)",
    )
    add_autonat_private_argument(p)
    p.add_argument(
        "--punch-private-addrs",
        action="store_true",
        help="hole punching (DCUtR) offers and dials private and loopback addresses too "
        "(labs and LANs whose 'public' side uses private ranges; on the Internet only "
        "public addresses are punched)",
    )
    p.add_argument(
        "--auto-relay",
        choices=("auto", "always", "off"),
        default=None,
        help="listen through relays picked from the --bootstrap peers and from peers that "
        "offer the relay protocol: auto while AutoNAT finds us not publicly reachable, "
        "always, or off (default: auto with --bootstrap, else off)",
    )
    p.add_argument(
        "--max-relays",
        type=_positive_int,
        default=2,
        metavar="N",
        help="relays the automatic relays listen through at once (default: 2)",
    )
    p.set_defaults(run=cmd_serve)
