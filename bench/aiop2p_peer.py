"""An aiop2p peer driven over JSON lines on stdin/stdout, the twin of ``tests/interop/js/peer.mjs``.

``bench/run.py`` starts one process per peer and sends it the same commands as the js peer, so
both implementations are measured by identical client logic (timers, warm-ups, quantiles). The
protocol is documented in ``tests/interop/js/README.md``; this file mirrors its semantics,
including how ``perf`` splits upload and download time.

    .venv/bin/python bench/aiop2p_peer.py [--listen MULTIADDR]... [--seed HEX64] [--network]
                                          [--relay-server] [--via-relay RELAY_ADDR] [--uvloop]

stdout carries protocol lines only; logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiop2p._aio.connection import Connection
from aiop2p._aio.quic_transport import QuicTransport
from aiop2p._aio.stream import Stream
from aiop2p.config import ConnectionLimits, NodeConfig
from aiop2p.errors import P2PError, RemoteProtocolError
from aiop2p.identity import KeyPair, PeerId
from aiop2p.multiaddr import Multiaddr
from aiop2p.network import Network
from aiop2p.network.firewall import FirewallRules
from aiop2p.node import Node
from aiop2p.protocols.perf import PERF_PROTOCOL_ID, encode_perf_header
from aiop2p.services.peerstore import PeerInfo
from aiop2p.services.relay.server import RelayServer, RelayServerConfig
from aiop2p.transports._base import Transport
from aiop2p.transports.tcp import TcpTransport
from aiop2p.transports.websocket import WebSocketTransport

# ---- limits and constants (units in the names) -----------------------------------------------
ECHO_PROTOCOL = "/p2p/1.0.0"
ECHO_MAX_MESSAGE_BYTES = 1024 * 1024
PERF_WRITE_CHUNK_BYTES = 256 * 1024  # one stream.write per chunk; yamux splits it into frames
PERF_READ_CHUNK_BYTES = 1024 * 1024
MAX_BENCH_COUNT = 1_000_000
MAX_HELD_CONNECTIONS = 10_000
MAX_CONCURRENCY = 4096
MAX_SAFE_INTEGER = 2**53 - 1  # the js peer's bound on byte counts; kept identical
# Same untimed warm-ups as the js peer (a command's "warmup"/"warmup_bytes" overrides them).
DEFAULT_ECHO_WARMUP_REQUESTS = 2000
DEFAULT_DIAL_WARMUP_DIALS = 20
DEFAULT_PERF_WARMUP_BYTES = 128 * 1024 * 1024
RSS_SETTLE_SECONDS = 0.05
STOP_TIMEOUT_SECONDS = 5.0
MAX_COMMAND_LINE_BYTES = 1024 * 1024
AGENT_VERSION = "aiop2p-bench/1"
# --relay-server: no data limit and an hour per circuit, so no benchmark hits a relay limit.
BENCH_RELAY_CONFIG = RelayServerConfig(circuit_duration_seconds=3600.0, circuit_data_bytes=0)

log = logging.getLogger("aiop2p_peer")
_PAGE_SIZE_BYTES = os.sysconf("SC_PAGE_SIZE")
_PERF_ZEROS = memoryview(bytes(PERF_WRITE_CHUNK_BYTES))


class CommandError(Exception):
    """A command failed; its message becomes the reply's ``error``."""


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def error_message(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def current_rss() -> int:
    """Resident set size in bytes (what ``process.memoryUsage().rss`` reports in node)."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE_SIZE_BYTES


async def settled_rss() -> int:
    """RSS after collecting garbage twice, so the per-connection figure is less noisy."""
    gc.collect()
    await asyncio.sleep(RSS_SETTLE_SECONDS)
    gc.collect()
    return current_rss()


def quantile(ordered: list[float], q: float) -> float | None:
    """Linear-interpolation quantile of an ascending list (numpy's default, as the js peer)."""
    if not ordered:
        return None
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def to_int(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise CommandError(f"{name} must be an integer in [{lo}, {hi}], got {json.dumps(value)}")
    n = int(value)
    if not lo <= n <= hi:
        raise CommandError(f"{name} must be an integer in [{lo}, {hi}], got {n}")
    return n


def require_str(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise CommandError(f"{name} is required")
    return value


def info_fields(info: PeerInfo) -> dict[str, Any]:
    return {
        "peerId": str(info.peer_id),
        "protocols": list(info.protocols),
        "listenAddrs": [str(a) for a in info.addrs],
        "agentVersion": info.agent_version,
        "protocolVersion": info.protocol_version,
        "observedAddr": str(info.observed_addr) if info.observed_addr is not None else None,
    }


async def handle_echo(stream: Stream) -> None:
    """``/p2p/1.0.0``: one length-prefixed message back; the node closes the stream after."""
    await stream.write_message(await stream.read_message(ECHO_MAX_MESSAGE_BYTES))


async def close_quietly(conn: Connection) -> None:
    try:
        await conn.close()
    except P2PError as exc:
        conn.abort(exc)


class Peer:
    """The command interpreter around one :class:`Node`."""

    def __init__(self, node: Node, network: Network[Any, Any] | None = None) -> None:
        self.node = node
        self.network = network
        """Set in ``--network`` mode: echo requests go through ``Network.send_request``."""
        self.held: list[Connection] = []  # bench_conns keeps these open until close_all
        self.commands: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "ping": self.ping,
            "echo": self.echo,
            "identify": self.identify,
            "peer_info": self.peer_info,
            "perf": self.perf,
            "bench_dial": self.bench_dial,
            "bench_echo": self.bench_echo,
            "bench_conns": self.bench_conns,
            "close_all": self.close_all,
            "rss": self.rss,
            "connections": self.connections,
            "gc": self.gc_counts,
        }

    async def dial(self, addr: Any) -> Connection:
        return await self.node.dial(Multiaddr(require_str(addr, "addr")))

    # ---- client operations ---------------------------------------------------------------

    async def echo_once(self, conn: Connection, payload: bytes) -> bytes:
        stream = await conn.new_stream(ECHO_PROTOCOL)
        try:
            await stream.write_message(payload)
            response = await stream.read_message(ECHO_MAX_MESSAGE_BYTES)
            await stream.close()
        except BaseException:
            stream.reset()
            raise
        return response

    async def perf_client(self, conn: Connection, upload: int, download: int) -> dict[str, Any]:
        """perf.md client with the js peer's timers: t0 before the stream opens, t1 at the
        local write-side close, t2 at the server's EOF."""
        t0 = time.perf_counter()
        stream = await conn.new_stream(PERF_PROTOCOL_ID)
        try:
            await stream.write(encode_perf_header(download))
            remaining = upload
            while remaining > 0:
                size = min(remaining, PERF_WRITE_CHUNK_BYTES)
                await stream.write(_PERF_ZEROS[:size])
                remaining -= size
            await stream.close()
            t1 = time.perf_counter()
            received = 0
            while chunk := await stream.read(PERF_READ_CHUNK_BYTES):
                received += len(chunk)
            t2 = time.perf_counter()
        except BaseException:
            stream.reset()
            raise
        if received != download:
            raise RemoteProtocolError(f"perf: expected {download} bytes, received {received}")
        total = t2 - t0
        return {
            "upload_seconds": total if download == 0 else t1 - t0,
            "download_seconds": total if upload == 0 else t2 - t1,
            "total_seconds": total,
            "upload_bytes": upload,
            "download_bytes": received,
        }

    # ---- commands ------------------------------------------------------------------------

    async def ping(self, cmd: dict[str, Any]) -> dict[str, Any]:
        conn = await self.dial(cmd.get("addr"))
        t0 = time.perf_counter()
        rtts = await self.node.ping(conn, count=1)
        return {"rtt_ms": (time.perf_counter() - t0) * 1000, "lib_rtt_ms": rtts[0] * 1000}

    async def echo(self, cmd: dict[str, Any]) -> dict[str, Any]:
        b64 = cmd.get("data_b64", "")
        if not isinstance(b64, str):
            raise CommandError("data_b64 must be a base64 string")
        payload = base64.b64decode(b64)
        response = await self.echo_once(await self.dial(cmd.get("addr")), payload)
        return {"data_b64": base64.b64encode(response).decode()}

    async def identify(self, cmd: dict[str, Any]) -> dict[str, Any]:
        conn = await self.dial(cmd.get("addr"))
        return info_fields(await self.node.identify_peer(conn))

    async def peer_info(self, cmd: dict[str, Any]) -> dict[str, Any]:
        peer = PeerId.from_string(require_str(cmd.get("peerId"), "peerId"))
        info = self.node.peer_store.get(peer)
        if info is None or info.agent_version is None:
            raise CommandError("unknown")
        return info_fields(info)

    async def perf(self, cmd: dict[str, Any]) -> dict[str, Any]:
        upload = to_int(cmd.get("upload", 0), "upload", 0, MAX_SAFE_INTEGER)
        download = to_int(cmd.get("download", 0), "download", 0, MAX_SAFE_INTEGER)
        warmup_bytes = to_int(
            cmd.get("warmup_bytes", DEFAULT_PERF_WARMUP_BYTES), "warmup_bytes", 0, MAX_SAFE_INTEGER
        )
        conn = await self.dial(cmd.get("addr"))
        if warmup_bytes > 0:
            await self.perf_client(conn, min(upload, warmup_bytes), min(download, warmup_bytes))
        return {**(await self.perf_client(conn, upload, download)), "warmup_bytes": warmup_bytes}

    async def bench_dial(self, cmd: dict[str, Any]) -> dict[str, Any]:
        count = to_int(cmd.get("count", 50), "count", 1, MAX_BENCH_COUNT)
        addr = Multiaddr(require_str(cmd.get("addr"), "addr"))
        warmup = to_int(cmd.get("warmup", DEFAULT_DIAL_WARMUP_DIALS), "warmup", 0, MAX_BENCH_COUNT)
        node = self.node
        for _ in range(warmup):
            await close_quietly(await node.dial(addr, force=True))
        samples: list[float] = []
        seen: set[int] = set()
        gc.collect()  # garbage of earlier figures is not collected inside this one
        for _ in range(count):
            t0 = time.perf_counter()
            conn = await node.dial(addr, force=True)  # force: never reuse a connection
            samples.append((time.perf_counter() - t0) * 1000)
            if conn.id in seen:
                raise CommandError("bench_dial: a connection was reused")
            seen.add(conn.id)
            await close_quietly(conn)
        ordered = sorted(samples)
        return {
            "median_ms": quantile(ordered, 0.5),
            "p90_ms": quantile(ordered, 0.9),
            "samples_ms": samples,
            "warmup": warmup,
        }

    async def bench_echo(self, cmd: dict[str, Any]) -> dict[str, Any]:
        count = to_int(cmd.get("count", 1000), "count", 1, MAX_BENCH_COUNT)
        concurrency = to_int(cmd.get("concurrency", 1), "concurrency", 1, MAX_CONCURRENCY)
        size = to_int(cmd.get("size", 64), "size", 0, ECHO_MAX_MESSAGE_BYTES)
        payload = bytes(i & 0xFF for i in range(size))
        warmup = to_int(
            cmd.get("warmup", DEFAULT_ECHO_WARMUP_REQUESTS), "warmup", 0, MAX_BENCH_COUNT
        )
        conn = await self.dial(cmd.get("addr"))
        latencies = [0.0] * count
        echo_once = self.echo_once
        network = self.network
        if network is not None:
            # JSON codec: a string of ``size`` characters (``size + 2`` bytes on the wire).
            text = "x" * size
            target = conn.remote_peer

            async def echo_once(conn: Connection, payload: bytes) -> bytes:
                reply = await network.send_request(target, text)
                return payload if reply == text else b""

        clock = time.perf_counter

        async def run(total: int, record: bool) -> None:
            next_index = 0

            async def worker() -> None:
                nonlocal next_index
                while next_index < total:
                    index = next_index
                    next_index += 1
                    t0 = clock()
                    response = await echo_once(conn, payload)
                    if record:
                        latencies[index] = (clock() - t0) * 1000
                    if len(response) != size:
                        raise CommandError(
                            f"bench_echo: response of {len(response)} bytes, sent {size}"
                        )

            try:
                async with asyncio.TaskGroup() as tg:
                    for _ in range(min(concurrency, total)):
                        tg.create_task(worker())
            except* Exception as group:  # report the first failure, as Promise.all does
                raise group.exceptions[0] from None

        await run(warmup, False)
        gc.collect()  # garbage of earlier figures is not collected inside this one
        start = clock()
        await run(count, True)
        total_s = clock() - start
        latencies.sort()
        # Relayed only if every connection the requests could have taken goes through a relay
        # (Network picks a direct connection to the peer over a relayed one).
        relayed = all(c.is_relayed for c in self.node.connections_to(conn.remote_peer))
        return {
            "p50_ms": quantile(latencies, 0.5),
            "p99_ms": quantile(latencies, 0.99),
            "req_per_s": count / total_s,
            "total_s": total_s,
            "warmup": warmup,
            "relayed": relayed,
        }

    async def bench_conns(self, cmd: dict[str, Any]) -> dict[str, Any]:
        count = to_int(cmd.get("count", 1000), "count", 1, MAX_HELD_CONNECTIONS - len(self.held))
        addr = Multiaddr(require_str(cmd.get("addr"), "addr"))
        rss_before = await settled_rss()
        start = time.perf_counter()
        opened = 0
        error: str | None = None
        for _ in range(count):  # sequential, like the js peer
            try:
                self.held.append(await self.node.dial(addr, force=True))
            except P2PError as exc:
                error = error_message(exc)
                break
            opened += 1
        dial_seconds = time.perf_counter() - start
        rss_after = await settled_rss()
        reply: dict[str, Any] = {
            "rss_before": rss_before,
            "rss_after": rss_after,
            "per_conn_bytes": (rss_after - rss_before) / opened if opened else None,
            "opened": opened,
            "dial_seconds": dial_seconds,
            "open_total": len(self.node.connections),
        }
        if error is not None:
            reply["error"] = error
        return reply

    async def close_all(self, cmd: dict[str, Any]) -> dict[str, Any]:
        held, self.held = self.held, []
        await asyncio.gather(*(close_quietly(c) for c in held))
        return {"closed": len(held)}

    async def rss(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return {"rss": await settled_rss() if cmd.get("gc") is True else current_rss()}

    async def gc_counts(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Garbage collections so far, per generation (bench/costs.py counts them per request)."""
        return {"collections": [s["collections"] for s in gc.get_stats()]}

    async def connections(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return {
            "connections": len(self.node.connections),
            "peers": len(self.node.connected_peers),
        }

    # ---- dispatch ------------------------------------------------------------------------

    async def run_command(self, line: bytes, stop: asyncio.Event) -> None:
        try:
            cmd = json.loads(line)
        except ValueError:
            emit({"id": None, "ok": False, "error": "invalid JSON"})
            return
        cid = cmd.get("id") if isinstance(cmd, dict) else None
        name = cmd.get("cmd") if isinstance(cmd, dict) else None
        if not isinstance(name, str):
            emit({"id": cid, "ok": False, "error": 'missing "cmd"'})
            return
        if name == "quit":
            emit({"id": cid, "ok": True})
            stop.set()
            return
        handler = self.commands.get(name)
        if handler is None:
            emit({"id": cid, "ok": False, "error": f"unknown command: {name}"})
            return
        try:
            result = await handler(cmd)
        except CommandError as exc:
            emit({"id": cid, "ok": False, "error": str(exc)})
        except Exception as exc:
            log.debug("command %s failed", name, exc_info=True)
            emit({"id": cid, "ok": False, "error": error_message(exc)})
        else:
            emit({"id": cid, "ok": True, **result})


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--listen", action="append", default=[], metavar="MULTIADDR")
    parser.add_argument("--seed", default=None, help="64 hex chars: a 32-byte Ed25519 seed")
    parser.add_argument(
        "--network",
        action="store_true",
        help="serve and send /p2p/1.0.0 through the Network API (JSON, firewall allow-all)",
    )
    parser.add_argument(
        "--relay-server",
        action="store_true",
        help="also act as a circuit relay v2 server (no data limit, one hour per circuit)",
    )
    parser.add_argument(
        "--via-relay",
        default=None,
        metavar="RELAY_ADDR",
        help="with --network: listen through this relay (its address ending in /p2p/<id>); "
        "the circuit address comes first in the ready line",
    )
    parser.add_argument(
        "--uvloop", action="store_true", help="run on uvloop instead of asyncio's default loop"
    )
    args = parser.parse_args(argv)
    if args.via_relay is not None:
        if not args.network:
            parser.error("--via-relay needs --network")
        try:
            relay_addr = Multiaddr(args.via_relay)
        except ValueError as exc:
            parser.error(f"--via-relay: {exc}")
        if relay_addr.peer_id is None:
            parser.error("--via-relay: the relay address must end in /p2p/<peer id>")
        args.via_relay = relay_addr
    if args.seed is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", args.seed):
        parser.error("--seed must be 64 hex characters (a 32-byte Ed25519 seed)")
    if not args.listen:
        args.listen = ["/ip4/127.0.0.1/tcp/0"]
    return args


async def read_lines(reader: asyncio.StreamReader, peer: Peer, stop: asyncio.Event) -> None:
    tasks: set[asyncio.Task[None]] = set()
    while not stop.is_set():
        try:
            line = await reader.readline()
        except ValueError:  # a line above the reader's limit
            emit({"id": None, "ok": False, "error": "command line too long"})
            continue
        if not line:
            break
        if not line.strip():
            continue
        task = asyncio.create_task(peer.run_command(line, stop))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks and not stop.is_set():  # EOF: let commands already sent finish (bounded)
        await asyncio.wait(tasks, timeout=STOP_TIMEOUT_SECONDS)
    stop.set()


async def main(args: argparse.Namespace) -> int:
    # The heap of the imports is frozen, as the aiop2p CLI's main does: a full collection
    # walks what the peer made since, not ~50,000 module objects (~30 ms here).
    gc.freeze()
    key = KeyPair.from_ed25519_seed(bytes.fromhex(args.seed)) if args.seed else None
    config = NodeConfig(
        agent_version=AGENT_VERSION,
        limits=ConnectionLimits(max_established_total=MAX_HELD_CONNECTIONS),
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_COMMAND_LINE_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    stop = asyncio.Event()
    # --listen: /ws and /udp/N/quic-v1 too
    transports: list[Transport] = [TcpTransport(), WebSocketTransport(), QuicTransport()]
    network: Network[Any, Any] | None = None
    responder: asyncio.Task[None] | None = None
    if args.network:
        network = Network(
            key,
            firewall=FirewallRules.allow_all(),
            mdns=None,
            node=config,
            connection_timeout=3600.0,
            relay_server=BENCH_RELAY_CONFIG if args.relay_server else None,
            dcutr=None,  # the relay figures measure the relayed path itself
        )
        await network.start()
        node_cm: Any = contextlib.nullcontext(network._node)
        responder = asyncio.create_task(answer_requests(network))
    else:
        node_cm = Node(key, config=config, transports=transports)
    relay_server: RelayServer | None = None
    async with node_cm as node:
        if network is None:
            node.set_stream_handler(ECHO_PROTOCOL, handle_echo)
            if args.relay_server:
                relay_server = RelayServer(node, config=BENCH_RELAY_CONFIG)
                relay_server.start()
        for addr in args.listen:
            await node.listen(addr)
        addrs = [str(a.with_peer_id(node.peer_id)) for a in node.listen_addrs]
        if args.via_relay is not None:
            assert network is not None and args.via_relay.peer_id is not None
            circuit = await network.start_relayed_listening(args.via_relay.peer_id, args.via_relay)
            addrs.insert(0, str(circuit))
        # "loop": the event loop's package, "asyncio" or "uvloop" (run.py checks it).
        loop_name = type(loop).__module__.partition(".")[0]
        emit({"event": "ready", "peerId": str(node.peer_id), "addrs": addrs, "loop": loop_name})
        peer = Peer(node, network)
        lines = asyncio.create_task(read_lines(reader, peer, stop))
        await stop.wait()
        lines.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lines
        if responder is not None:
            responder.cancel()
        if relay_server is not None:
            await relay_server.close()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
                await (network.close() if network is not None else node.close())
        except TimeoutError:
            log.warning("node did not stop within %s s", STOP_TIMEOUT_SECONDS)
    return 0


async def answer_requests(network: Network[Any, Any]) -> None:
    """The Network-mode echo server: answer every approved request with its own value."""
    async for request in network.requests():
        request.respond_nowait(request.request)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format=f"[aiop2p-peer {os.getpid()}] %(levelname)s %(message)s",
    )
    arguments = parse_args(sys.argv[1:])
    loop_factory = None
    if arguments.uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            sys.exit(runner.run(main(arguments)))
    except (BrokenPipeError, KeyboardInterrupt):
        sys.exit(0)
