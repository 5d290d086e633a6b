"""``aiop2p``: run a peer behind a firewall, send it requests, find peers on the LAN, and
ping or measure any libp2p peer.

Every command takes ``--json`` to print one JSON object per line.  Errors are one line
on stderr (no traceback) and a non-zero exit status.  The command runs on uvloop when it
is installed (``pip install aiop2p[uvloop]``), unless ``--no-uvloop`` comes before it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Callable, Sequence
from contextlib import redirect_stderr, redirect_stdout
from typing import Any, Final

from .._version import __version__
from ..config import KadConfig
from ..errors import P2PError
from ..identity import PeerId
from ..multiaddr import Multiaddr
from ..network import DEFAULT_PROTOCOL
from ..services.mdns import MdnsEvent, PeerDiscovered
from . import relay, send, serve
from ._common import (
    TARGET_HELP,
    CommandIO,
    Output,
    Progress,
    add_dht_arguments,
    default_key_path,
    default_relay_key_path,
    describe,
    dht_config,
    dialing_network,
    load_key,
    parse_target,
)
from .discover import add_mdns_interface_argument, discover, mdns_config

__all__ = [
    "ECHO_PROTOCOL_ID",
    "ArgumentParser",
    "CommandIO",
    "HelpFormatter",
    "default_key_path",
    "loop_factory",
    "main",
    "run",
]

MIB: Final = 1 << 20

ECHO_PROTOCOL_ID = DEFAULT_PROTOCOL
"""The request protocol; ``serve --echo`` answers each approved request on it."""


async def cmd_id(args: argparse.Namespace, out: Output) -> int:
    key = load_key(args.key)
    out.emit(str(key.peer_id), peer_id=str(key.peer_id))
    return 0


async def cmd_ping(args: argparse.Namespace, out: Output) -> int:
    target = parse_target(args.address, args.bootstrap)
    async with dialing_network(kad=_dht(args)) as net:
        node = net._node
        if isinstance(target, Multiaddr):
            conn = await node.dial(target)
        else:
            conn = await node.connect(target)
        answered = 0
        for seq in range(args.count):
            try:
                (rtt,) = await asyncio.wait_for(node.ping(conn), args.timeout)
            except (P2PError, TimeoutError) as exc:
                reason = describe(exc)
                out.emit(f"ping {seq}: no answer ({reason})", seq=seq, ok=False, error=reason)
                continue
            answered += 1
            out.emit(
                f"ping {seq}: {rtt * 1000:.3f} ms from {conn.remote_peer}",
                seq=seq,
                ok=True,
                rtt_ms=rtt * 1000,
                peer_id=str(conn.remote_peer),
            )
    if answered < args.count:
        print(f"aiop2p ping: {answered} of {args.count} pings answered", file=out.io.stderr)
        return 1
    return 0


async def cmd_perf(args: argparse.Namespace, out: Output) -> int:
    target = parse_target(args.address, args.bootstrap)
    upload, download = args.upload / MIB, args.download / MIB
    with Progress(out, "perf") as progress:

        def show(sent: int, received: int) -> None:
            progress.show(
                f"uploaded {sent / MIB:.1f} of {upload:.1f} MiB, "
                f"downloaded {received / MIB:.1f} of {download:.1f} MiB"
            )

        progress.show("dialling")
        async with dialing_network(kad=_dht(args)) as net:
            result = await net._node.perf(
                target, upload=args.upload, download=args.download, progress=show
            )
    out.emit(
        f"upload {result.upload_mib_s:.1f} MiB/s, download {result.download_mib_s:.1f} MiB/s",
        upload_bytes=result.upload_bytes,
        download_bytes=result.download_bytes,
        upload_mib_s=result.upload_mib_s,
        download_mib_s=result.download_mib_s,
    )
    return 0


async def cmd_discover(args: argparse.Namespace, out: Output) -> int:
    config = mdns_config(args.mdns_interface, include_loopback=True)
    seconds: float = args.seconds
    with Progress(out, "discover") as progress:
        peers: set[PeerId] = set()
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds

        def show(event: MdnsEvent | None = None) -> None:
            if isinstance(event, PeerDiscovered):
                peers.add(event.peer)
            found = f"{len(peers)} peer{'' if len(peers) == 1 else 's'} found"
            progress.show(f"{found}, {max(0.0, end - loop.time()):.0f} s left")

        with progress.ticking(show):
            results = await discover(seconds, config=config, on_event=show)
    for found in results:
        addrs = [str(a.with_peer_id(found.peer)) for a in found.addrs]
        # The JSON key stays ``peer_id`` (the CLI's output, as ``aiop2p id`` prints it).
        out.emit(" ".join([str(found.peer), *addrs]), peer_id=str(found.peer), addrs=addrs)
    return 0


def _dht(args: argparse.Namespace) -> KadConfig | None:
    """A DHT client when ``--bootstrap`` is given (to reach a bare peer id)."""
    return dht_config(args.bootstrap, None, default_mode="client")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _byte_count(text: str) -> int:
    value = int(text)
    if not 0 <= value < 1 << 64:  # perf sends the download size as a u64
        raise argparse.ArgumentTypeError(f"must be between 0 and 2^64 - 1: {text}")
    return value


def _key_help(default: object) -> str:
    return f"key file, created if missing, in an existing directory (default: {default})"


class HelpFormatter(argparse.HelpFormatter):
    """Every default in the help: ``(default: X)`` after an option's text unless the text
    already says its default or there is none to say (no value, a flag that is off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        default = action.default
        if text is None or "default" in text or default in (None, False, argparse.SUPPRESS):
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text  # a positional argument that must be given
        return f"{text} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """The parser of ``aiop2p`` and of each of its commands: help by :class:`HelpFormatter`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


DESCRIPTION = (
    "Run a peer behind a firewall, send it requests, find peers on the LAN, and ping or "
    "measure any libp2p peer. Every command takes --json to print one JSON object per line; "
    "errors are one line on stderr and a non-zero exit status."
)


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="aiop2p", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"aiop2p {__version__}")
    parser.add_argument(
        "--no-uvloop",
        action="store_true",
        help="run on asyncio's default event loop even if uvloop is installed",
    )
    common = ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object per line")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    key_help = _key_help(default_key_path())

    p = sub.add_parser(
        "id", parents=[common], help="print our peer id", description="Print our peer id."
    )
    p.add_argument("--key", metavar="FILE", help=key_help)
    p.set_defaults(run=cmd_id)

    serve.add_parser(sub, common, key_help)
    relay.add_parser(sub, common, _key_help(default_relay_key_path()))
    send.add_parser(sub, common)

    p = sub.add_parser(
        "discover",
        parents=[common],
        help="list peers found on the LAN (mDNS)",
        description="Ask the LAN for libp2p peers (mDNS) and list those that answered, one "
        "per line with their addresses. A terminal shows the progress on stderr (not with "
        "--json).",
    )
    p.add_argument(
        "--seconds", type=_positive_float, default=3.0, metavar="S", help="how long to listen"
    )
    add_mdns_interface_argument(p)
    p.set_defaults(run=cmd_discover)

    p = sub.add_parser(
        "ping",
        parents=[common],
        help="ping a peer (/ipfs/ping/1.0.0)",
        description="Ping any libp2p peer and print each round trip. Exit status 0 only "
        "if every ping was answered.",
    )
    p.add_argument("address", metavar="TARGET", help=TARGET_HELP)
    add_dht_arguments(p)
    p.add_argument(
        "-n", "--count", type=_positive_int, default=1, metavar="N", help="pings to send"
    )
    p.add_argument(
        "--timeout", type=_positive_float, default=10.0, metavar="S", help="seconds per ping"
    )
    p.set_defaults(run=cmd_ping)

    p = sub.add_parser(
        "perf",
        parents=[common],
        help="measure throughput (/perf/1.0.0)",
        description="Measure the throughput to any libp2p peer: upload, then download, "
        "on one stream. A terminal shows the progress on stderr (not with --json).",
    )
    p.add_argument("address", metavar="TARGET", help=TARGET_HELP)
    add_dht_arguments(p)
    p.add_argument(
        "--upload", type=_byte_count, default=64 << 20, metavar="BYTES", help="bytes to send"
    )
    p.add_argument(
        "--download", type=_byte_count, default=64 << 20, metavar="BYTES", help="bytes to receive"
    )
    p.set_defaults(run=cmd_perf)
    return parser


async def run(argv: Sequence[str], io: CommandIO) -> int:
    """Run the command ``argv`` names in the running event loop, talking to ``io``; its
    exit status.  ``main`` runs it for the process; tests run it in-process."""
    parser = _parser()
    try:
        # argparse prints usage and help to sys.stdout/sys.stderr only; parsing is
        # synchronous, so nothing else writes while they point at ``io``.
        with redirect_stdout(io.stdout), redirect_stderr(io.stderr):
            args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return 0 if exc.code is None else int(exc.code)
    out = Output(args.json, io)
    try:
        code: int = await args.run(args, out)
        return code
    except (P2PError, OSError) as exc:
        out.error(args.command, describe(exc), type(exc).__name__)
        return 1


def loop_factory(argv: Sequence[str]) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``main`` runs ``argv`` on: uvloop's when it is installed and no
    ``--no-uvloop`` precedes the command; ``None``, asyncio's default, otherwise.

    The options before the command are flags (``--help``, ``--no-uvloop``), so the
    command is the first argument that does not start with ``-``.
    """
    for arg in argv:
        if arg == "--no-uvloop":
            return None
        if not arg.startswith("-"):
            break
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    """The ``aiop2p`` console script: ``argv`` defaults to the process's arguments.

    It freezes the heap it finds (``gc.freeze``): the ~50,000 objects of the imported
    modules, classes and functions, which never become garbage.  A full collection then
    walks only what the command made since: ~0.4 ms instead of ~30 ms on the benchmark's
    machine, a pause every request in flight on a busy ``serve`` or ``relay`` waited out
    (bench/RESULTS.md, "The 32-in-flight p99 and full collections").
    """
    args = sys.argv[1:] if argv is None else argv
    gc.freeze()
    try:
        with asyncio.Runner(loop_factory=loop_factory(args)) as runner:
            return runner.run(run(args, CommandIO()))
    except KeyboardInterrupt:
        return 130
