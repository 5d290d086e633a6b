"""aiop2p vs js-libp2p, side by side: dial, echo latency/throughput, perf, memory per connection.

For each implementation a server peer and a client peer run as separate processes
(``bench/aiop2p_peer.py`` and ``tests/interop/js/peer.mjs``, which speak the same JSON-lines
command protocol); the client is told to measure against the server. Implementations are
interleaved per figure so that machine noise hits both alike. See ``bench/README.md``.

    .venv/bin/python bench/run.py [--quick] [--repeat N] [--only aiop2p|js] [--uvloop]
                                  [--only-figures tcp|ws|rr|relay|quic ...] [--json|--markdown]

The WebSocket figures run on separate server processes listening on ``/ws`` only.  The relay
figures run three processes per implementation: a circuit relay v2 server, a server listening
through it, and a client that reaches the server at its circuit address.

The quic figures (``bench/quic_figures.py``) put QUIC beside TCP for aiop2p and js-libp2p,
across implementations too (aiop2p -> js, js -> aiop2p), with the CPU seconds both
processes spent per MiB and per request; they print as a table of their own.

``--uvloop`` also runs the aiop2p peers on uvloop (``aiop2p-uvloop``, interleaved with the
others) and adds a ``uvloop/default`` column: aiop2p on uvloop over aiop2p on asyncio's loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FLOOR_PEER = REPO / "bench" / "floor_peer.py"
PY_PEER = REPO / "bench" / "py_peer.py"
PY_PYTHON = REPO / ".venv-pylibp2p" / "bin" / "python"
JS_PEER = REPO / "tests" / "interop" / "js" / "peer.mjs"
JS_RELAY_PEER = REPO / "tests" / "interop" / "js" / "relay_peer.mjs"
UVLOOP_IMPL = "aiop2p-uvloop"
"""aiop2p's peers on uvloop (``--uvloop``); "aiop2p" runs on asyncio's default loop."""
BASE_IMPL = "base"
"""aiop2p from another checkout (``--base PATH``), on its own peer script and ``src``."""
FLOOR_IMPL = "floor"
"""``bench/floor_peer.py``: the same wire work in plain asyncio (echo and bulk only)."""
FLOOR_TASKS_IMPL = "floor-tasks"
"""The floor with a task per request on each side (``floor_peer.py --tasks``, echo only):
counted by ``bench/costs.py``, not a figure of this script."""
PY_IMPL = "py"
"""py-libp2p 0.8.1 (``bench/py_peer.py`` in ``.venv-pylibp2p``)."""
IMPLS = ("aiop2p", FLOOR_IMPL, "js", PY_IMPL)
"""What ``--only`` may pick; all four run by default."""
ORDER = ("aiop2p", UVLOOP_IMPL, BASE_IMPL, FLOOR_IMPL, "js", PY_IMPL)
"""Column order, and the order in which the implementations take turns for each figure."""
FIGURE_GROUPS = ("tcp", "ws", "rr", "relay", "quic")
PY_FIGURES = frozenset(
    {
        "dial",
        "echo sequential",
        "echo in flight",
        "perf upload",
        "perf download",
        "request-response sequential",
        "request-response in flight",
    }
)
"""The figures ``bench/py_peer.py`` can do (py-libp2p: no relay server here, see README)."""
# The js relay's per-circuit limits, raised far above what a run needs (its defaults, 128 KiB and
# 2 minutes, end a relayed echo loop after ~220 requests).  js counts the duration in ms.
JS_RELAY_DURATION_MS = 3_600_000
JS_RELAY_DATA_BYTES = 1 << 40
WS_LISTEN = "/ip4/127.0.0.1/tcp/0/ws"
MIB = 1024 * 1024

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
DEFAULT_COMMAND_TIMEOUT_S = 600.0
MAX_REPLY_LINE_BYTES = 16 * MIB  # bench_dial replies carry every sample
STDERR_TAIL_LINES = 20
MAX_REPEAT = 50


class BenchError(Exception):
    """A command failed, timed out, or its peer died."""


class PeerDiedError(BenchError):
    pass


# ---- peer processes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """Where the implementations' peers come from."""

    base: Path | None = None
    """Another checkout (``--base``): its own ``bench/aiop2p_peer.py`` on its own ``src``."""
    py_python: Path = PY_PYTHON


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str] | None = None
    cwd: Path = REPO


def is_aiop2p(impl: str) -> bool:
    """A peer running aiop2p code: this checkout (either loop) or the ``--base`` one."""
    return impl in ("aiop2p", UVLOOP_IMPL, BASE_IMPL)


def venv_python() -> str:
    python = REPO / ".venv" / "bin" / "python"
    return str(python) if python.exists() else sys.executable


def aiop2p_launch(*args: str, impl: str = "aiop2p", setup: Setup = Setup()) -> Launch:
    """This checkout's peer on this checkout's ``src``, or the base's peer on the base's
    ``src`` (PYTHONPATH wins over the venv's editable install)."""
    root = REPO
    loop = ["--uvloop"] if impl == UVLOOP_IMPL else []
    if impl == BASE_IMPL:
        assert setup.base is not None
        root = setup.base
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return Launch([venv_python(), str(root / "bench" / "aiop2p_peer.py"), *args, *loop], env, root)


def node_argv(script: Path, *args: str) -> list[str]:
    node = shutil.which("node")
    if node is None:
        raise BenchError("node is not on PATH (needed for the js-libp2p peer)")
    return [node, str(script), *args]


def peer_launch(
    impl: str, setup: Setup, listen: tuple[str, ...] = (), network: bool = False
) -> Launch:
    extra = [arg for addr in listen for arg in ("--listen", addr)]
    if is_aiop2p(impl):
        return aiop2p_launch(*extra, *(["--network"] if network else []), impl=impl, setup=setup)
    if impl in (FLOOR_IMPL, FLOOR_TASKS_IMPL):
        tasks = ["--tasks"] if impl == FLOOR_TASKS_IMPL else []
        return Launch([venv_python(), str(FLOOR_PEER), *tasks, *extra])
    if impl == PY_IMPL:
        return Launch([str(setup.py_python), str(PY_PEER), *extra])
    return Launch(node_argv(JS_PEER, *extra))


def relay_launch(impl: str, setup: Setup, relay_addr: str | None) -> Launch:
    """A relay role: the relay itself (``relay_addr`` None) or a peer listening via
    ``relay_addr``; the client role is :func:`relay_client_launch`."""
    if is_aiop2p(impl):
        if relay_addr is None:
            return aiop2p_launch("--relay-server", impl=impl, setup=setup)
        return aiop2p_launch("--network", "--via-relay", relay_addr, impl=impl, setup=setup)
    if relay_addr is None:
        return Launch(
            node_argv(
                JS_RELAY_PEER,
                "--relay",
                "--duration-ms",
                str(JS_RELAY_DURATION_MS),
                "--data-bytes",
                str(JS_RELAY_DATA_BYTES),
            )
        )
    return Launch(node_argv(JS_RELAY_PEER, "--echo-once", "--listen", f"{relay_addr}/p2p-circuit"))


def relay_client_launch(impl: str, setup: Setup) -> Launch:
    """aiop2p: the Network client (like the rr figures); js: relay_peer.mjs, which can dial
    circuit addresses (peer.mjs has no circuit relay transport)."""
    if is_aiop2p(impl):
        return aiop2p_launch("--network", impl=impl, setup=setup)
    return Launch(node_argv(JS_RELAY_PEER))


class PeerProcess:
    """One peer process; commands are matched to replies by id."""

    def __init__(
        self,
        impl: str,
        role: str,
        log_dir: Path,
        launch: Launch,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        self.name = f"{impl} {role}"
        self.impl = impl
        self.launch = launch
        self.ready_timeout_s = ready_timeout_s
        self.log_path = log_dir / f"{impl}-{role}.stderr"
        self.proc: asyncio.subprocess.Process | None = None
        self.peer_id = ""
        self.addrs: list[str] = []
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._dead: PeerDiedError | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.launch.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_fd,
                cwd=self.launch.cwd,
                env=self.launch.env,
                limit=MAX_REPLY_LINE_BYTES,
            )
        finally:
            os.close(log_fd)
        self._reader = asyncio.create_task(self._read_loop())
        try:
            async with asyncio.timeout(self.ready_timeout_s):
                ready = await asyncio.shield(self._ready)
        except TimeoutError:
            raise BenchError(f"{self.name}: not ready after {self.ready_timeout_s:.0f} s") from None
        if self.impl == UVLOOP_IMPL and ready.get("loop") != "uvloop":
            raise BenchError(f"{self.name}: runs on {ready.get('loop')!r}, not uvloop")
        self.peer_id = ready["peerId"]
        self.addrs = list(ready["addrs"])
        if not self.addrs:
            raise BenchError(f"{self.name}: ready without listen addresses")

    def stderr_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-STDERR_TAIL_LINES:])

    async def _read_loop(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        try:
            while line := await stdout.readline():
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("event") == "ready":
                    if self._ready is not None and not self._ready.done():
                        self._ready.set_result(msg)
                    continue
                fut = self._pending.pop(msg.get("id", -1), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except (ValueError, OSError) as exc:  # an over-long line or a broken pipe
            sys.stderr.write(f"{self.name}: stdout unreadable: {exc}\n")
        code = await self.proc.wait()
        tail = self.stderr_tail()
        self._dead = PeerDiedError(
            f"{self.name} (pid {self.proc.pid}) exited with code {code}"
            + (f"; last stderr lines:\n{tail}" if tail else " (no stderr output)")
        )
        for fut in [self._ready, *self._pending.values()]:
            if fut is not None and not fut.done():
                fut.set_exception(self._dead)
                fut.exception()
        self._pending.clear()

    @property
    def alive(self) -> bool:
        return self._dead is None and self.proc is not None and self.proc.returncode is None

    async def call(self, cmd: str, timeout_s: float, **fields: Any) -> dict[str, Any]:
        """Send one command; return its reply fields or raise :class:`BenchError`."""
        if self._dead is not None:
            raise self._dead
        assert self.proc is not None and self.proc.stdin is not None
        self._next_id += 1
        cid = self._next_id
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[cid] = fut
        try:
            self.proc.stdin.write((json.dumps({"id": cid, "cmd": cmd, **fields}) + "\n").encode())
            await self.proc.stdin.drain()
            async with asyncio.timeout(timeout_s):
                reply = await fut
        except TimeoutError:
            raise BenchError(
                f"{self.name}: {cmd} did not answer within {timeout_s:.0f} s"
            ) from None
        except (BrokenPipeError, ConnectionResetError):
            await asyncio.sleep(0)  # let the reader record the exit
            raise self._dead or PeerDiedError(f"{self.name}: stdin closed") from None
        finally:
            self._pending.pop(cid, None)
        if not reply.get("ok"):
            raise BenchError(f"{self.name}: {cmd} failed: {reply.get('error')}")
        return reply

    async def stop(self) -> None:
        """Ask the peer to quit; kill it if it does not exit in time."""
        proc = self.proc
        if proc is None:
            return
        try:
            if proc.returncode is None and self._dead is None:
                with contextlib.suppress(BenchError):
                    await self.call("quit", STOP_TIMEOUT_S)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STOP_TIMEOUT_S):
                        await proc.wait()
        finally:
            self.kill()
            if self._reader is not None:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    async with asyncio.timeout(STOP_TIMEOUT_S):
                        await self._reader

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def pause(self) -> None:
        """Stop the process (SIGSTOP) until :meth:`resume`: see :meth:`Runner.run_benches`."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)


@dataclass
class Pair:
    impl: str
    server: PeerProcess
    client: PeerProcess
    relay: PeerProcess | None = None
    """The circuit relay between them (relay figures only)."""
    target_addr: str | None = None
    """The address the client dials, when not the server's first one."""

    @property
    def target(self) -> str:
        return self.target_addr or self.server.addrs[0]

    @property
    def processes(self) -> list[PeerProcess]:
        return [self.server, self.client] + ([self.relay] if self.relay is not None else [])

    @property
    def alive(self) -> bool:
        return all(p.alive for p in self.processes)

    def pause(self) -> None:
        for p in self.processes:
            p.pause()

    def resume(self) -> None:
        for p in self.processes:
            p.resume()


# ---- benchmarks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    dial_count: int
    dial_warmup: int
    echo_count: int
    echo_warmup: int
    echo_size_bytes: int
    echo_concurrency: int
    perf_bytes: int
    perf_warmup_bytes: int
    conns_count: int
    conns_warmup: int
    command_timeout_s: float


MAX_REQUESTS = 1_000_000
"""The peers' own bound on one command's request count."""

FULL = Settings(
    50, 20, 1000, 2000, 64, 32, 256 * MIB, 128 * MIB, 1000, 50, DEFAULT_COMMAND_TIMEOUT_S
)
QUICK = Settings(10, 5, 200, 200, 64, 32, 16 * MIB, 8 * MIB, 100, 20, 120.0)


def settings_for(impl: str, s: Settings) -> Settings:
    """py-libp2p runs with smaller counts (its echo does ~40 req/s here, so the full counts
    would take minutes per figure); its figures are rates and medians all the same."""
    if impl != PY_IMPL:
        return s
    return replace(
        s,
        dial_count=max(5, s.dial_count // 2),
        dial_warmup=min(s.dial_warmup, 5),
        echo_count=max(20, s.echo_count // 5),
        echo_warmup=max(5, s.echo_warmup // 40),
        perf_bytes=max(MIB, s.perf_bytes // 8),
        perf_warmup_bytes=s.perf_warmup_bytes // 16,
    )


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    better: str  # "lower" or "higher"


METRICS = [
    Metric("dial_median_ms", "dial + handshake, median", "ms", "lower"),
    Metric("dial_p90_ms", "dial + handshake, p90", "ms", "lower"),
    Metric("echo1_req_per_s", "echo sequential", "req/s", "higher"),
    Metric("echo1_p50_ms", "echo sequential p50", "ms", "lower"),
    Metric("echo1_p99_ms", "echo sequential p99", "ms", "lower"),
    Metric("echoN_req_per_s", "echo in flight", "req/s", "higher"),
    Metric("echoN_p50_ms", "echo in flight p50", "ms", "lower"),
    Metric("echoN_p99_ms", "echo in flight p99", "ms", "lower"),
    Metric("upload_mib_s", "perf upload", "MiB/s", "higher"),
    Metric("download_mib_s", "perf download", "MiB/s", "higher"),
    Metric("bulk_mib_s", "bulk, receiver-bound (floor)", "MiB/s", "higher"),
    Metric("ws_upload_mib_s", "perf upload over WS", "MiB/s", "higher"),
    Metric("ws_download_mib_s", "perf download over WS", "MiB/s", "higher"),
    Metric("rr1_req_per_s", "request-response sequential", "req/s", "higher"),
    Metric("rr1_p50_ms", "request-response sequential p50", "ms", "lower"),
    Metric("rr1_p99_ms", "request-response sequential p99", "ms", "lower"),
    Metric("rrN_req_per_s", "request-response in flight", "req/s", "higher"),
    Metric("rrN_p50_ms", "request-response in flight p50", "ms", "lower"),
    Metric("rrN_p99_ms", "request-response in flight p99", "ms", "lower"),
    Metric("relay1_req_per_s", "relayed req-resp sequential", "req/s", "higher"),
    Metric("relay1_p50_ms", "relayed req-resp sequential p50", "ms", "lower"),
    Metric("relay1_p99_ms", "relayed req-resp sequential p99", "ms", "lower"),
    Metric("relayN_req_per_s", "relayed req-resp in flight", "req/s", "higher"),
    Metric("relayN_p50_ms", "relayed req-resp in flight p50", "ms", "lower"),
    Metric("relayN_p99_ms", "relayed req-resp in flight p99", "ms", "lower"),
    Metric("client_bytes_per_conn", "memory per idle conn, client", "KiB", "lower"),
    Metric("server_bytes_per_conn", "memory per idle conn, server", "KiB", "lower"),
]
METRIC_BY_KEY = {m.key: m for m in METRICS}

FLOOR_REF = {
    "echo1_req_per_s": "echo1_req_per_s",
    "echo1_p50_ms": "echo1_p50_ms",
    "echoN_req_per_s": "echoN_req_per_s",
    "echoN_p50_ms": "echoN_p50_ms",
    "upload_mib_s": "bulk_mib_s",
    "download_mib_s": "bulk_mib_s",
    "rr1_req_per_s": "echo1_req_per_s",
    "rrN_req_per_s": "echoN_req_per_s",
}
"""The floor's figure each aiop2p figure is read against (the floor has one bulk figure, and
no Network layer: request-response is read against the raw echo floor)."""


@dataclass(frozen=True)
class Target:
    key: str
    text: str
    op: str  # "<=" or ">="
    ratio: float
    ratio_key: str = "ratio_aiop2p_js"
    """The row's ratio the target is about: aiop2p/js, pct_floor, aiop2p/base, ..."""


TARGETS = [
    Target("dial_median_ms", "dial time <= 0.5x js", "<=", 0.5),
    Target("echo1_req_per_s", "sequential req/s >= 2x js", ">=", 2.0),
    Target("echoN_req_per_s", "in-flight req/s >= 2x js", ">=", 2.0),
    Target("upload_mib_s", "perf upload >= 1.0x js", ">=", 1.0),
    Target("download_mib_s", "perf download >= 1.0x js", ">=", 1.0),
    Target("rr1_req_per_s", "Network req/s sequential >= 3x js echo", ">=", 3.0),
    Target("rrN_req_per_s", "Network req/s in flight >= 3x js echo", ">=", 3.0),
    Target("ws_upload_mib_s", "perf upload over WS >= 1.5x js", ">=", 1.5),
    Target("ws_download_mib_s", "perf download over WS >= 1.5x js", ">=", 1.5),
    Target("relay1_req_per_s", "relayed req/s sequential >= 3x js", ">=", 3.0),
    Target("relayN_req_per_s", "relayed req/s in flight >= 3x js", ">=", 3.0),
]

UVLOOP_TARGETS = [
    Target(
        "echo1_req_per_s",
        "uvloop sequential req/s >= 1.15x default loop",
        ">=",
        1.15,
        "ratio_uvloop_default",
    ),
]

# Issue 10's targets: against the floor, and against "today's main" run as --base.
ISSUE10_TARGETS = [
    Target("echo1_req_per_s", "sequential echo >= 65% of the floor", ">=", 0.65, "pct_floor"),
    Target("echo1_req_per_s", "sequential echo >= 1.4x base", ">=", 1.4, "ratio_aiop2p_base"),
    Target("echoN_req_per_s", "32-in-flight echo >= 1.3x base", ">=", 1.3, "ratio_aiop2p_base"),
    Target(
        "rr1_req_per_s", "Network req/s sequential >= 1.4x base", ">=", 1.4, "ratio_aiop2p_base"
    ),
    Target("rrN_req_per_s", "Network req/s in flight >= 1.4x base", ">=", 1.4, "ratio_aiop2p_base"),
    Target("dial_median_ms", "dial time <= 0.7x base", "<=", 0.7, "ratio_aiop2p_base"),
    Target(
        "upload_mib_s", "perf upload >= 80% of the receiver-bound floor", ">=", 0.8, "pct_floor"
    ),
    Target(
        "download_mib_s", "perf download >= 80% of the receiver-bound floor", ">=", 0.8, "pct_floor"
    ),
    *UVLOOP_TARGETS,
]

Figures = dict[str, float]


async def bench_dial(pair: Pair, s: Settings) -> Figures:
    r = await pair.client.call(
        "bench_dial",
        s.command_timeout_s,
        addr=pair.target,
        count=s.dial_count,
        warmup=s.dial_warmup,
    )
    if len(r["samples_ms"]) != s.dial_count:
        raise BenchError(f"{pair.impl}: bench_dial returned {len(r['samples_ms'])} samples")
    return {"dial_median_ms": r["median_ms"], "dial_p90_ms": r["p90_ms"]}


async def _echo(pair: Pair, s: Settings, concurrency: int, prefix: str) -> Figures:
    r = await pair.client.call(
        "bench_echo",
        s.command_timeout_s,
        addr=pair.target,
        count=s.echo_count,
        concurrency=concurrency,
        size=s.echo_size_bytes,
        warmup=s.echo_warmup,
    )
    if pair.relay is not None and r.get("relayed") is not True:
        raise BenchError(f"{pair.impl}: the requests did not go through the relay")
    return {
        f"{prefix}_req_per_s": r["req_per_s"],
        f"{prefix}_p50_ms": r["p50_ms"],
        f"{prefix}_p99_ms": r["p99_ms"],
    }


async def bench_echo_sequential(pair: Pair, s: Settings) -> Figures:
    return await _echo(pair, s, 1, "echo1")


async def bench_echo_concurrent(pair: Pair, s: Settings) -> Figures:
    return await _echo(pair, s, s.echo_concurrency, "echoN")


async def _perf(pair: Pair, s: Settings, upload: int, download: int) -> dict[str, Any]:
    r = await pair.client.call(
        "perf",
        s.command_timeout_s,
        addr=pair.target,
        upload=upload,
        download=download,
        warmup_bytes=s.perf_warmup_bytes,
    )
    if r["upload_bytes"] != upload or r["download_bytes"] != download:
        raise BenchError(f"{pair.impl}: perf moved {r['upload_bytes']}/{r['download_bytes']} B")
    return r


async def bench_perf_upload(pair: Pair, s: Settings) -> Figures:
    r = await _perf(pair, s, s.perf_bytes, 0)
    return {"upload_mib_s": s.perf_bytes / MIB / r["upload_seconds"]}


async def bench_perf_download(pair: Pair, s: Settings) -> Figures:
    r = await _perf(pair, s, 0, s.perf_bytes)
    return {"download_mib_s": s.perf_bytes / MIB / r["download_seconds"]}


async def bench_ws_perf_upload(pair: Pair, s: Settings) -> Figures:
    r = await _perf(pair, s, s.perf_bytes, 0)
    return {"ws_upload_mib_s": s.perf_bytes / MIB / r["upload_seconds"]}


async def bench_ws_perf_download(pair: Pair, s: Settings) -> Figures:
    r = await _perf(pair, s, 0, s.perf_bytes)
    return {"ws_download_mib_s": s.perf_bytes / MIB / r["download_seconds"]}


async def bench_conns(pair: Pair, s: Settings) -> Figures:
    t = s.command_timeout_s
    # A few dials first so that one-time costs (code loading, JIT, caches) stay out of the delta.
    await pair.client.call("bench_dial", t, addr=pair.target, count=s.conns_warmup, warmup=0)
    before = await pair.server.call("rss", t, gc=True)
    try:
        r = await pair.client.call("bench_conns", t, addr=pair.target, count=s.conns_count)
        if r.get("error") or r["opened"] != s.conns_count:
            raise BenchError(
                f"{pair.impl}: bench_conns opened {r['opened']}/{s.conns_count}: {r.get('error')}"
            )
        after = await pair.server.call("rss", t, gc=True)
        held = await pair.server.call("connections", t)
        if held["connections"] < s.conns_count:
            raise BenchError(
                f"{pair.impl}: the server holds {held['connections']} connections, "
                f"expected at least {s.conns_count}"
            )
    finally:
        if pair.client.alive:
            await pair.client.call("close_all", t)
    return {
        "client_bytes_per_conn": r["per_conn_bytes"],
        "server_bytes_per_conn": (after["rss"] - before["rss"]) / s.conns_count,
    }


Bench = Callable[[Pair, Settings], Awaitable[Figures]]

# Run on one pair of processes per implementation, interleaved per figure.
SHARED_BENCHES: list[tuple[str, Bench]] = [
    ("dial", bench_dial),
    ("echo sequential", bench_echo_sequential),
    ("echo in flight", bench_echo_concurrent),
    ("perf upload", bench_perf_upload),
    ("perf download", bench_perf_download),
]


async def bench_floor_bulk(pair: Pair, s: Settings) -> Figures:
    r = await _perf(pair, s, s.perf_bytes, 0)
    return {"bulk_mib_s": s.perf_bytes / MIB / r["upload_seconds"]}


# The floor's figures: echo as aiop2p's, and its bulk figure in the slot of perf upload.
FLOOR_BENCHES: dict[str, Bench] = {
    "echo sequential": bench_echo_sequential,
    "echo in flight": bench_echo_concurrent,
    "perf upload": bench_floor_bulk,
}
# Run on fresh processes: heap freed by earlier figures would absorb the new connections and
# understate the RSS growth.
FRESH_BENCHES: list[tuple[str, Bench]] = [
    ("memory per connection", bench_conns),
]
# aiop2p through the Network API (JSON codec, firewall allow-all) against js-libp2p echo.
RR_BENCHES: list[tuple[str, Bench]] = [
    ("request-response sequential", lambda pair, s: _echo(pair, s, 1, "rr1")),
    ("request-response in flight", lambda pair, s: _echo(pair, s, s.echo_concurrency, "rrN")),
]
# aiop2p (Network client, as in RR_BENCHES) and js, each through its own circuit relay v2 server.
RELAY_BENCHES: list[tuple[str, Bench]] = [
    ("relayed req-resp sequential", lambda pair, s: _echo(pair, s, 1, "relay1")),
    ("relayed req-resp in flight", lambda pair, s: _echo(pair, s, s.echo_concurrency, "relayN")),
]
# Run on a pair whose server listens on /ws only, so the client dials over WebSocket.
WS_BENCHES: list[tuple[str, Bench]] = [
    ("perf upload over WS", bench_ws_perf_upload),
    ("perf download over WS", bench_ws_perf_download),
]


# ---- running --------------------------------------------------------------------------------


def progress(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


async def start_pair(
    impl: str,
    setup: Setup,
    log_dir: Path,
    started: list[PeerProcess],
    listen: tuple[str, ...] = (),
    network: bool = False,
) -> Pair:
    """Start a server and a client; both are added to ``started`` first, so they get stopped.

    ``listen`` are the server's listen addresses (the peer's default when empty);
    ``network`` runs aiop2p peers on the ``Network`` API (request-response + firewall).
    """
    role = "ws-server" if listen else ("rr-server" if network else "server")
    server = PeerProcess(impl, role, log_dir, peer_launch(impl, setup, listen, network))
    client = PeerProcess(
        impl, "rr-client" if network else "client", log_dir, peer_launch(impl, setup, (), network)
    )
    started += [server, client]
    await asyncio.gather(server.start(), client.start())
    return Pair(impl, server, client)


async def start_relayed_pair(
    impl: str, setup: Setup, log_dir: Path, started: list[PeerProcess]
) -> Pair:
    """Start a relay, then a server listening through it and a client; all are added to
    ``started`` first, so they get stopped.  The client's target is the circuit address."""
    relay = PeerProcess(impl, "relay", log_dir, relay_launch(impl, setup, None))
    started.append(relay)
    client = PeerProcess(impl, "relay-client", log_dir, relay_client_launch(impl, setup))
    started.append(client)
    await asyncio.gather(relay.start(), client.start())
    relay_addr = next((a for a in relay.addrs if "/p2p/" in a), None)
    if relay_addr is None:
        raise BenchError(f"{relay.name}: no address with /p2p among {relay.addrs}")
    server = PeerProcess(impl, "relayed-server", log_dir, relay_launch(impl, setup, relay_addr))
    started.append(server)
    await server.start()
    circuit = next((a for a in server.addrs if "/p2p-circuit/" in a), None)
    if circuit is None:
        raise BenchError(f"{server.name}: no circuit address among {server.addrs}")
    return Pair(impl, server, client, relay, circuit)


def bench_for(impl: str, name: str, bench: Bench) -> Bench | None:
    """What ``impl`` runs for the figure ``name``: the bench itself, the floor's own version
    of it, or None where the implementation has no such figure."""
    if impl == FLOOR_IMPL:
        return FLOOR_BENCHES.get(name)
    if impl == PY_IMPL:
        return bench if name in PY_FIGURES else None
    return bench


class Runner:
    """Collects samples and errors over all repeats."""

    def __init__(self, impls: list[str], s: Settings, log_dir: Path, setup: Setup) -> None:
        self.impls = impls
        self.s = s
        self.setup = setup
        self.log_dir = log_dir
        self.samples: dict[str, dict[str, list[float]]] = {
            i: {m.key: [] for m in METRICS} for i in impls
        }
        self.errors: list[str] = []

    def error(self, text: str) -> None:
        self.errors.append(text)
        progress(f"!! {text}")

    async def run_benches(
        self,
        rep: int,
        benches: list[tuple[str, Bench]],
        listen: tuple[str, ...] = (),
        network: bool = False,
        relayed: bool = False,
    ) -> None:
        """Start a pair per implementation, run ``benches`` interleaved, stop every process.

        While one pair runs a figure, every other pair's processes are stopped (SIGSTOP):
        work an idle implementation defers would otherwise land in another's figure (the
        js-libp2p peers, idle after 3,000 echo streams, spend 20-50 ms of CPU per 250 ms for
        seconds from ~9 s later); stopped, it lands in that implementation's own next figure,
        as it would on a peer that is never idle.

        ``relayed``: each pair talks through a circuit relay (:func:`start_relayed_pair`)."""
        started: list[PeerProcess] = []
        pairs: dict[str, Pair] = {}
        try:
            for impl in self.impls:
                if not any(bench_for(impl, name, bench) for name, bench in benches):
                    continue  # no figure of this group for this implementation
                try:
                    if relayed:
                        pairs[impl] = await start_relayed_pair(
                            impl, self.setup, self.log_dir, started
                        )
                    else:
                        pairs[impl] = await start_pair(
                            impl, self.setup, self.log_dir, started, listen, network
                        )
                except BenchError as exc:
                    self.error(f"repeat {rep + 1}: {impl}: start failed: {exc}")
            for pair in pairs.values():
                pair.pause()
            for name, bench in benches:
                for pair in pairs.values():
                    own = bench_for(pair.impl, name, bench)
                    if own is not None and pair.alive:
                        pair.resume()
                        try:
                            await self.run_one(rep, name, own, pair)
                        finally:
                            pair.pause()
        finally:
            for p in started:
                p.resume()  # a stopped process cannot answer "quit"
            await asyncio.gather(*(p.stop() for p in started), return_exceptions=True)
            for p in started:
                p.kill()

    async def run_one(self, rep: int, name: str, bench: Bench, pair: Pair) -> None:
        t0 = time.perf_counter()
        try:
            figures = await bench(pair, settings_for(pair.impl, self.s))
        except BenchError as exc:
            self.error(f"repeat {rep + 1}: {name}: {exc}")
            if "did not answer" in str(exc) or not pair.alive:
                # a stuck or dead pair is not trusted for the rest of this repeat
                for p in pair.processes:
                    p.kill()
            return
        for key, value in figures.items():
            self.samples[pair.impl][key].append(value)
        shown = ", ".join(f"{k}={format_value(k, v)}" for k, v in figures.items())
        progress(
            f"[{rep + 1}] {name:<28} {pair.impl:<6} {shown} ({time.perf_counter() - t0:.1f} s)"
        )


async def run_all(
    impls: list[str],
    s: Settings,
    repeat: int,
    groups: tuple[str, ...] = FIGURE_GROUPS,
    setup: Setup = Setup(),
) -> tuple[dict[str, dict[str, list[float]]], list[str]]:
    """Run every benchmark ``repeat`` times; return the samples per impl and metric, and errors.

    Each repeat starts fresh processes; within a repeat the implementations alternate for
    every figure.  ``groups`` selects the figure groups (tcp, ws, rr, relay) to run.
    """
    with tempfile.TemporaryDirectory(prefix="aiop2p-bench-") as tmp:
        runner = Runner(impls, s, Path(tmp), setup)
        for rep in range(repeat):
            if "tcp" in groups:
                await runner.run_benches(rep, SHARED_BENCHES)
                await runner.run_benches(rep, FRESH_BENCHES)
            if "ws" in groups:
                await runner.run_benches(rep, WS_BENCHES, (WS_LISTEN,))
            if "rr" in groups:
                await runner.run_benches(rep, RR_BENCHES, network=True)
            if "relay" in groups:
                await runner.run_benches(rep, RELAY_BENCHES, relayed=True)
    return runner.samples, runner.errors


# ---- reporting ------------------------------------------------------------------------------


def format_value(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    unit = METRIC_BY_KEY[key].unit
    if unit == "KiB":
        return f"{value / 1024:.1f}"
    if unit == "ms":
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio_of(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


def pct_of_floor(key: str, medians: dict[str, float | None]) -> float | None:
    """aiop2p's speed as a fraction of the floor's on the floor's matching figure: rates
    divide, times divide the other way round."""
    ref = FLOOR_REF.get(key)
    if ref is None:
        return None
    ours, floor = medians.get("aiop2p"), medians.get(f"{FLOOR_IMPL}:{ref}")
    if METRIC_BY_KEY[key].better == "lower":
        return ratio_of(floor, ours)
    return ratio_of(ours, floor)


def summarise(impls: list[str], samples: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    floor_medians = {
        f"{FLOOR_IMPL}:{m.key}": median(samples[FLOOR_IMPL][m.key])
        for m in METRICS
        if FLOOR_IMPL in samples
    }
    rows = []
    for m in METRICS:
        medians = {i: median(samples[i][m.key]) for i in impls}
        if all(v is None for v in medians.values()):
            continue  # a figure group that was not run
        ours = medians.get("aiop2p")
        rows.append(
            {
                "key": m.key,
                "label": m.label,
                "unit": m.unit,
                "better": m.better,
                "median": medians,
                "pct_floor": pct_of_floor(m.key, {"aiop2p": ours, **floor_medians}),
                "ratio_aiop2p_base": ratio_of(ours, medians.get(BASE_IMPL)),
                "ratio_aiop2p_js": ratio_of(ours, medians.get("js")),
                "ratio_aiop2p_py": ratio_of(ours, medians.get(PY_IMPL)),
                "ratio_uvloop_default": ratio_of(medians.get(UVLOOP_IMPL), ours),
            }
        )
    return rows


def evaluate_targets(
    rows: list[dict[str, Any]], targets: list[Target], impls: list[str]
) -> list[dict[str, Any]]:
    """``targets`` met or not, for those whose ratio column ran (see :func:`ratio_columns`)."""
    shown = {key for _, key in ratio_columns(impls)}
    by_key = {r["key"]: r for r in rows}
    out = []
    for t in targets:
        if t.key not in by_key or t.ratio_key not in shown:
            continue
        ratio = by_key[t.key][t.ratio_key]
        met = None if ratio is None else (ratio <= t.ratio if t.op == "<=" else ratio >= t.ratio)
        out.append(
            {
                "key": t.key,
                "target": t.text,
                "ratio_key": t.ratio_key,
                "ratio": ratio,
                "met": met,
            }
        )
    return out


def ratio_text(key: str, ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio * 100:.0f}%" if key == "pct_floor" else f"{ratio:.2f}x"


def status_text(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "MISSED")


def environment() -> dict[str, Any]:
    node_version = None
    node = shutil.which("node")
    if node is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            node_version = subprocess.run(
                [node, "--version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
    return {
        "python": platform.python_version(),
        "node": node_version,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def settings_text(s: Settings, repeat: int) -> str:
    py = settings_for(PY_IMPL, s)
    return (
        f"dial: median of {s.dial_count} fresh connections ({s.dial_warmup} warm-up); "
        f"echo: {s.echo_count} x {s.echo_size_bytes} B requests, a new stream each "
        f"({s.echo_warmup} warm-up), in flight = {s.echo_concurrency}; "
        f"request-response and relayed request-response: as echo; "
        f"perf (over TCP and over /ws): {s.perf_bytes // MIB} MiB each way "
        f"({s.perf_warmup_bytes // MIB} MiB warm-up); "
        f"memory: RSS delta over {s.conns_count} idle connections "
        f"(after {s.conns_warmup} warm-up dials, fresh processes); "
        f"median of {repeat} run(s); py-libp2p with {py.dial_count} dials, "
        f"{py.echo_count} requests ({py.echo_warmup} warm-up) and "
        f"{py.perf_bytes / MIB:g} MiB ({py.perf_warmup_bytes / MIB:g} MiB warm-up)"
    )


def print_text(
    impls: list[str],
    rows: list[dict[str, Any]],
    targets: list[dict[str, Any]],
    s: Settings,
    repeat: int,
    env: dict[str, Any],
) -> None:
    ratios = ratio_columns(impls)
    print(f"# {settings_text(s, repeat)}")
    print(f"# python {env['python']}, node {env['node']}, {env['cpus']} CPUs, {env['platform']}")
    if env.get("base"):
        print(f"# base: {env['base']}")
    widths = {i: max(9, len(i) + 1) for i in impls}
    header = f"{'figure':<34} {'unit':<6}" + "".join(f"{i:>{widths[i]}}" for i in impls)
    header += "".join(f"{title:>15}" for title, _ in ratios)
    if ratios:
        header += "  better"
    print(header)
    print("-" * len(header))
    for r in rows:
        line = f"{r['label']:<34} {r['unit']:<6}" + "".join(
            f"{format_value(r['key'], r['median'][i]):>{widths[i]}}" for i in impls
        )
        for _, key in ratios:
            line += f"{ratio_text(key, r[key]):>15}"
        if ratios:
            line += f"  {r['better']}"
        print(line)
    if targets:
        print("\ntargets")
        for t in targets:
            print(
                f"  {t['target']:<52} {ratio_text(t['ratio_key'], t['ratio']):>8}  "
                f"{status_text(t['met'])}"
            )


def print_markdown(
    impls: list[str],
    rows: list[dict[str, Any]],
    targets: list[dict[str, Any]],
    s: Settings,
    repeat: int,
    env: dict[str, Any],
) -> None:
    ratios = ratio_columns(impls)
    print(f"{settings_text(s, repeat)}.\n")
    print(f"Python {env['python']}, Node {env['node']}, {env['cpus']} CPUs, {env['platform']}.\n")
    if env.get("base"):
        print(f"Base: {env['base']}.\n")
    cols = ["figure", "unit", *impls, *(title for title, _ in ratios)]
    cols += ["better"] if ratios else []
    print("| " + " | ".join(cols) + " |")
    print(
        "|" + "|".join("---" if c in ("figure", "unit", "better") else "---:" for c in cols) + "|"
    )
    for r in rows:
        cells = [r["label"], r["unit"], *(format_value(r["key"], r["median"][i]) for i in impls)]
        cells += [ratio_text(key, r[key]) for _, key in ratios]
        if ratios:
            cells.append(r["better"])
        print("| " + " | ".join(cells) + " |")
    if targets:
        print("\n| target | ratio | status |\n|---|---:|---|")
        for t in targets:
            print(
                f"| {t['target']} | {ratio_text(t['ratio_key'], t['ratio'])} | "
                f"{status_text(t['met'])} |"
            )


def ratio_columns(impls: list[str]) -> list[tuple[str, str]]:
    """The ratio columns the table shows: (title, row key), for the impls that ran."""
    if "aiop2p" not in impls:
        return []
    columns = [
        ("% of floor", "pct_floor", FLOOR_IMPL),
        ("aiop2p/base", "ratio_aiop2p_base", BASE_IMPL),
        ("aiop2p/js", "ratio_aiop2p_js", "js"),
        ("aiop2p/py", "ratio_aiop2p_py", PY_IMPL),
        ("uvloop/default", "ratio_uvloop_default", UVLOOP_IMPL),
    ]
    return [(title, key) for title, key, other in columns if other in impls]


def chosen_groups(only: list[str] | None) -> tuple[str, ...]:
    """The figure groups to run, in their usual order: all, or those ``--only-figures``
    names (repeatable)."""
    return tuple(g for g in FIGURE_GROUPS if g in only) if only else FIGURE_GROUPS


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="aiop2p against its floor, js-libp2p, py-libp2p and another checkout"
    )
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        metavar="N",
        help="timed requests per echo and request-response figure (default 1000, 200 with "
        "--quick): at 25,000 req/s in flight, 1,000 requests are 40 ms, which one scheduler "
        "hiccup on a shared machine can swing",
    )
    parser.add_argument("--only", choices=IMPLS, help="run one implementation only")
    parser.add_argument(
        "--skip",
        choices=[i for i in IMPLS if i != "aiop2p"],
        action="append",
        default=[],
        help="leave an implementation out (repeatable)",
    )
    parser.add_argument(
        "--uvloop",
        action="store_true",
        help=f"also run aiop2p on uvloop ({UVLOOP_IMPL}) and print the uvloop/default ratios",
    )
    parser.add_argument(
        "--base",
        type=Path,
        default=None,
        metavar="PATH",
        help="also run the aiop2p checkout at PATH (its own bench/aiop2p_peer.py "
        "on its own src), interleaved, and print aiop2p/base ratios",
    )
    parser.add_argument(
        "--only-figures",
        choices=FIGURE_GROUPS,
        default=None,
        action="append",
        help="run these figure groups only (repeatable): tcp, ws (perf "
        "over /ws), rr "
        "(Network request-response), relay (request-response via a relay) "
        "or quic (QUIC beside TCP, with CPU per MiB and per request)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run everything N times and report medians (default 1)",
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="machine-readable output")
    out.add_argument("--markdown", action="store_true", help="a table for bench/RESULTS.md")
    parser.add_argument(
        "--chart",
        type=Path,
        default=None,
        metavar="PATH.png",
        help="also draw the figures as a grouped bar chart (needs the bench "
        "extra: pip install '.[bench]')",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="per-command timeout (default 600, 120 with --quick)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= MAX_REPEAT:
        parser.error(f"--repeat must be in [1, {MAX_REPEAT}]")
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.requests is not None and not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be in [1, {MAX_REQUESTS}]")
    if args.uvloop and args.only not in (None, "aiop2p"):
        parser.error("--uvloop runs aiop2p on uvloop: not with --only " + args.only)
    if args.base is not None:
        args.base = args.base.resolve()
        if not (args.base / "bench" / "aiop2p_peer.py").is_file():
            parser.error(f"--base: no bench/aiop2p_peer.py in {args.base}")
        if args.only not in (None, "aiop2p"):
            parser.error("--base compares with aiop2p: not with --only " + args.only)
    if args.chart is not None and args.chart.suffix.lower() != ".png":
        parser.error("--chart writes a PNG: give a path ending in .png")
    return args


def chosen_impls(args: argparse.Namespace) -> list[str]:
    chosen = {args.only} if args.only else set(IMPLS) - set(args.skip)
    if args.uvloop:
        chosen.add(UVLOOP_IMPL)
    if args.base is not None:
        chosen.add(BASE_IMPL)
    if PY_IMPL in chosen and not PY_PYTHON.exists():
        progress(f"py-libp2p left out: no {PY_PYTHON.relative_to(REPO)} (make deps creates it)")
        chosen.discard(PY_IMPL)
    return [i for i in ORDER if i in chosen]


def describe_base(base: Path) -> str:
    """The base checkout's path and commit (read-only git)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(base), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        if commit:
            return f"{base} at {commit}"
    return str(base)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    impls = chosen_impls(args)
    s = QUICK if args.quick else FULL
    if args.timeout is not None:
        s = Settings(**{**asdict(s), "command_timeout_s": args.timeout})
    if args.requests is not None:
        s = replace(s, echo_count=args.requests)
    env = environment()
    if args.base is not None:
        env["base"] = describe_base(args.base)
    if args.chart is not None:
        import chart  # the optional plotting extra is checked before the run, not after

        chart.require_matplotlib()
    groups = chosen_groups(args.only_figures)
    setup = Setup(base=args.base)
    samples, errors = asyncio.run(run_all(impls, s, args.repeat, groups, setup))
    quic_text = None
    if "quic" in groups:
        import quic_figures

        with tempfile.TemporaryDirectory(prefix="aiop2p-bench-quic-") as tmp:
            quic = asyncio.run(quic_figures.run_quic(impls, s, args.repeat, Path(tmp)))
        errors += quic.errors
        quic_rows = quic_figures.summarise(quic)
        quic_targets = quic_figures.targets(quic_rows)
        quic_text = (
            quic_figures.table(quic_rows, args.markdown)
            + "\n\n"
            + quic_figures.targets_text(quic_targets, args.markdown)
        )
    rows = summarise(impls, samples)
    targets = evaluate_targets(rows, [*TARGETS, *ISSUE10_TARGETS], impls)
    if args.json:
        print(
            json.dumps(
                {
                    "settings": asdict(s),
                    "repeat": args.repeat,
                    "implementations": impls,
                    "environment": env,
                    "samples": samples,
                    "figures": rows,
                    "targets": targets,
                    "errors": errors,
                },
                indent=2,
            )
        )
    elif args.markdown and rows:
        print_markdown(impls, rows, targets, s, args.repeat, env)
    elif rows:
        print_text(impls, rows, targets, s, args.repeat, env)
    if quic_text is not None and not args.json:
        print(f"\n# QUIC beside TCP ({settings_text(s, args.repeat)})\n")
        print(quic_text)
    if args.chart is not None:
        title = f"aiop2p, its floor, js-libp2p and py-libp2p: median of {args.repeat} run(s)"
        chart.draw(
            args.chart,
            impls,
            rows,
            FLOOR_REF,
            title=title,
            base=env.get("base", "").rpartition(" at ")[2] or None,
        )
        progress(f"chart written to {args.chart}")
    if errors:
        progress(f"\n{len(errors)} error(s):")
        for e in errors:
            progress(f"  {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
