"""``aiop2p``: run a peer, and ping, perf or echo any libp2p peer.

Every command takes ``--json`` to print one JSON object per line.  Errors are one line
on stderr (no traceback) and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .._aio.stream import Stream
from ..errors import P2PError
from ..identity import KeyPair
from ..multiaddr import Multiaddr
from ..node import Node

__all__ = ["ECHO_PROTOCOL_ID", "default_key_path", "main"]

ECHO_PROTOCOL_ID = "/p2p/1.0.0"
MAX_ECHO_MESSAGE_SIZE = 1 << 20


def default_key_path() -> Path:
    """``$XDG_DATA_HOME/aiop2p/identity.key`` (``~/.local/share`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "aiop2p" / "identity.key"


class _Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, text: str, **fields: object) -> None:
        if self.as_json:
            print(json.dumps(fields), flush=True)
        else:
            print(text, flush=True)


def _load_key(path: str | None) -> KeyPair:
    return KeyPair.load_or_generate(Path(path) if path else default_key_path())


async def _serve_echo(stream: Stream) -> None:
    data = await stream.read_message(MAX_ECHO_MESSAGE_SIZE)
    await stream.write_message(data)


async def cmd_id(args: argparse.Namespace, out: _Output) -> int:
    key = _load_key(args.key)
    out.emit(str(key.peer_id), peer_id=str(key.peer_id))
    return 0


async def cmd_serve(args: argparse.Namespace, out: _Output) -> int:
    key = _load_key(args.key)
    listen = args.listen or ["/ip4/0.0.0.0/tcp/0"]
    addrs = [Multiaddr(a) for a in listen]  # a malformed one fails before any listening
    # Handlers first, so a signal arriving while we start up still means a clean stop.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Node(key) as node:
            if args.echo:
                node.set_stream_handler(ECHO_PROTOCOL_ID, _serve_echo)
            for addr in addrs:
                for bound in await node.listen(addr):
                    full = bound.with_peer_id(node.peer_id)
                    out.emit(f"listening on {full}", address=str(full))
            await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return 0


async def cmd_ping(args: argparse.Namespace, out: _Output) -> int:
    target = Multiaddr(args.address)
    async with Node() as node:
        conn = await node.dial(target)
        answered = 0
        for seq in range(args.count):
            try:
                (rtt,) = await asyncio.wait_for(node.ping(conn), args.timeout)
            except (P2PError, TimeoutError) as exc:
                reason = _describe(exc)
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
        print(f"aiop2p ping: {answered} of {args.count} pings answered", file=sys.stderr)
        return 1
    return 0


async def cmd_perf(args: argparse.Namespace, out: _Output) -> int:
    async with Node() as node:
        result = await node.perf(
            Multiaddr(args.address), upload=args.upload, download=args.download
        )
    out.emit(
        f"upload {result.upload_mib_s:.1f} MiB/s, download {result.download_mib_s:.1f} MiB/s",
        upload_bytes=result.upload_bytes,
        download_bytes=result.download_bytes,
        upload_mib_s=result.upload_mib_s,
        download_mib_s=result.download_mib_s,
    )
    return 0


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


def _describe(exc: BaseException) -> str:
    """One line for the user: OS errors without the ``[Errno N]`` noise."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    message = " ".join(str(exc).split())  # exactly one line, whatever the message holds
    return message or type(exc).__name__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiop2p", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="one JSON object per line")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("id", parents=[common], help="print our peer id")
    p.add_argument("--key", help=f"key file (default {default_key_path()}); created if missing")
    p.set_defaults(run=cmd_id)

    p = sub.add_parser("serve", parents=[common], help="run a peer until SIGINT/SIGTERM")
    p.add_argument("--listen", action="append", metavar="MULTIADDR", help="repeatable")
    p.add_argument("--key", help=f"key file (default {default_key_path()}); created if missing")
    p.add_argument(
        "--echo", action="store_true", help=f"answer {ECHO_PROTOCOL_ID} with the same bytes"
    )
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser("ping", parents=[common], help="ping a peer (/ipfs/ping/1.0.0)")
    p.add_argument("address", metavar="MULTIADDR")
    p.add_argument("-n", "--count", type=_positive_int, default=1, help="pings to send")
    p.add_argument("--timeout", type=_positive_float, default=10.0, help="seconds per ping")
    p.set_defaults(run=cmd_ping)

    p = sub.add_parser("perf", parents=[common], help="measure throughput (/perf/1.0.0)")
    p.add_argument("address", metavar="MULTIADDR")
    p.add_argument("--upload", type=_byte_count, default=64 << 20, metavar="BYTES")
    p.add_argument("--download", type=_byte_count, default=64 << 20, metavar="BYTES")
    p.set_defaults(run=cmd_perf)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = _Output(args.json)
    try:
        code: int = asyncio.run(args.run(args, out))
        return code
    except KeyboardInterrupt:
        return 130
    except (P2PError, OSError) as exc:
        message = _describe(exc)
        if args.json:
            print(json.dumps({"error": message, "type": type(exc).__name__}), flush=True)
        print(f"aiop2p {args.command}: {message}", file=sys.stderr)
        return 1
