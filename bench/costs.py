"""Cost counters per request: what one 64 B echo costs the client and the server.

For each implementation (aiop2p, ``--base``'s aiop2p, the floor, and the floor with a task
per request, ``floor-tasks``) and each workload a server and a client peer run as in
``bench/run.py``, and the client sends 64 B echo requests.
Workloads (``--workload``, repeatable; default ``echo1``): ``echo1`` raw echo streams one at
a time, ``echoN`` with ``--concurrency`` (32) requests in flight, ``rr1`` / ``rrN`` the same
through the ``Network`` request-response API (aiop2p only; the floor has no such path).
Per request, for each process:

- **instructions**: user-space instructions.  ``perf stat -e instructions:u`` where the CPU's
  counters are visible; in a VM without them (as here) Valgrind's cachegrind counts them
  instead: two runs of ``W + N1`` and ``W + N2`` requests, and the difference of the totals
  divided by ``N2 - N1``, so start-up, imports, the dial and the warm-up cancel out.
  Cachegrind is slow (about 30-50x): its runs are short and separate from the syscall runs.
- **syscalls**: ``perf stat -e raw_syscalls:sys_enter`` attached to the process (``-p``) for
  the ``N`` timed requests only (kernel tracepoints: no CPU counters needed).
- **writes**: the ``write``, ``writev``, ``sendto`` and ``sendmsg`` calls among them: one per
  transport flush, so a reply sent in one piece is one write on the server.
- **gc**: garbage collections per 1,000 requests by generation (0/1/2) over the same
  ``N`` requests (the peer's ``gc`` command; ``-`` for a ``--base`` checkout without it).
  Frequent generation-0 collections mean objects that outlive their request.  The
  client's count includes the full collection ``bench_echo`` runs before it starts timing.

    .venv/bin/python bench/costs.py [--base PATH] [--requests N] [--instructions auto|perf|
                                    cachegrind|none] [--workload echo1|echoN|rr1|rrN]...
                                    [--concurrency C] [--markdown]

The counters are counts, not times: they hold on a busy machine too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import run

WRITE_EVENTS = (
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_sendmsg",
)
SYSCALL_EVENT = "raw_syscalls:sys_enter"
INSTRUCTION_EVENT = "instructions:u"
PERF_ATTACH_SECONDS = 0.5  # perf stat -p needs a moment before it counts
VALGRIND_READY_TIMEOUT_S = 600.0
VALGRIND_EXIT_TIMEOUT_S = 300.0
COMMAND_TIMEOUT_S = 1800.0
DEFAULT_REQUESTS = 3000
DEFAULT_WARMUP = 500
DEFAULT_CONCURRENCY = 32
CACHEGRIND_REQUESTS = (200, 1200)
"""N1 and N2 of the cachegrind difference (after the same warm-up), one request at a time."""
CACHEGRIND_REQUESTS_IN_FLIGHT = (500, 3500)
"""The same with requests in flight: more of them, so the batches' edges cancel out."""
CACHEGRIND_WARMUP = 200
IMPLS = ("aiop2p", run.BASE_IMPL, run.FLOOR_IMPL, run.FLOOR_TASKS_IMPL)
WORKLOADS = ("echo1", "echoN", "rr1", "rrN")


@dataclass(frozen=True)
class Workload:
    """What the client sends: raw echo streams or Network requests, and how many at once."""

    name: str
    network: bool
    concurrency: int

    @classmethod
    def parse(cls, name: str, concurrency: int) -> Workload:
        return cls(name, name.startswith("rr"), 1 if name.endswith("1") else concurrency)

    def runs_on(self, impl: str) -> bool:
        return not (self.network and impl in (run.FLOOR_IMPL, run.FLOOR_TASKS_IMPL))

    def describe(self) -> str:
        kind = "Network request-response" if self.network else "raw echo"
        many = "sequential" if self.concurrency == 1 else f"{self.concurrency} in flight"
        return f"{kind}, {many}"


class CostError(Exception):
    """A counter is not available or a run failed."""


@dataclass
class Costs:
    instructions: dict[str, float | None]
    syscalls: dict[str, float]
    writes: dict[str, float]
    gc: dict[str, list[float] | None]
    """Garbage collections per 1,000 requests by generation (None: the peer cannot say)."""


def perf_path() -> str:
    path = shutil.which("perf")
    if path is None:
        raise CostError("perf is not installed (needed for the syscall counters)")
    return path


def perf_counts_instructions() -> bool:
    """True if ``perf stat -e instructions:u`` counts here (not in a VM without a PMU)."""
    try:
        out = subprocess.run(
            [perf_path(), "stat", "-x", ";", "-e", INSTRUCTION_EVENT, "--", "true"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stderr
    except (OSError, subprocess.SubprocessError):
        return False
    return any(
        line.split(";")[2:3] == [INSTRUCTION_EVENT] and line.split(";")[0].isdigit()
        for line in out.splitlines()
    )


def parse_perf(text: str) -> dict[str, float]:
    """``perf stat -x ;`` lines: count;unit;event;... ("<not counted>" lines are dropped)."""
    counts: dict[str, float] = {}
    for line in text.splitlines():
        fields = line.split(";")
        if len(fields) >= 3 and fields[0].replace(".", "", 1).isdigit():
            counts[fields[2]] = counts.get(fields[2], 0.0) + float(fields[0])
    return counts


async def perf_attach(pid: int, events: list[str], out: Path) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        perf_path(),
        "stat",
        "-x",
        ";",
        "-o",
        str(out),
        "-e",
        ",".join(events),
        "-p",
        str(pid),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await asyncio.sleep(PERF_ATTACH_SECONDS)
    if proc.returncode is not None:
        raise CostError(f"perf stat -p {pid} exited at once (status {proc.returncode})")
    return proc


async def perf_detach(proc: asyncio.subprocess.Process, out: Path) -> dict[str, float]:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(30):
        await proc.wait()
    return parse_perf(out.read_text())  # noqa: ASYNC240 (a small file, written already)


async def start_pair(
    impl: str,
    setup: run.Setup,
    log_dir: Path,
    started: list[run.PeerProcess],
    workload: Workload,
    wrap: list[str] | None = None,
    tag: str = "",
) -> run.Pair:
    """A server and a client as in ``run.py``; ``wrap`` prefixes each command line with
    ``{role}`` in it replaced by the role (the cachegrind output file)."""
    peers = []
    for role in ("server", "client"):
        launch = run.peer_launch(impl, setup, network=workload.network)
        if wrap is not None:
            prefix = [arg.replace("{role}", f"{impl}-{role}{tag}") for arg in wrap]
            launch = run.Launch([*prefix, *launch.argv], launch.env, launch.cwd)
        peer = run.PeerProcess(
            impl,
            role + tag,
            log_dir,
            launch,
            ready_timeout_s=VALGRIND_READY_TIMEOUT_S if wrap else run.READY_TIMEOUT_S,
        )
        started.append(peer)
        peers.append(peer)
    await asyncio.gather(*(p.start() for p in peers))
    return run.Pair(impl, peers[0], peers[1])


async def echo(pair: run.Pair, workload: Workload, count: int, warmup: int) -> dict[str, Any]:
    return await pair.client.call(
        "bench_echo",
        COMMAND_TIMEOUT_S,
        addr=pair.target,
        count=count,
        concurrency=workload.concurrency,
        size=64,
        warmup=warmup,
    )


async def stop_all(started: list[run.PeerProcess]) -> None:
    await asyncio.gather(*(p.stop() for p in started), return_exceptions=True)
    for p in started:
        p.kill()


async def gc_collections(peer: run.PeerProcess) -> list[int] | None:
    """The peer's garbage collections so far by generation; None if it has no ``gc``
    command (an older checkout given as ``--base``)."""
    try:
        reply = await peer.call("gc", COMMAND_TIMEOUT_S)
    except run.BenchError:
        return None
    return [int(n) for n in reply["collections"]]


async def syscall_costs(
    impl: str,
    workload: Workload,
    setup: run.Setup,
    log_dir: Path,
    requests: int,
    perf_instructions: bool,
) -> tuple[
    dict[str, float],
    dict[str, float],
    dict[str, float] | None,
    dict[str, list[float] | None],
]:
    """Syscalls, writes (and instructions when perf counts them) per request, and garbage
    collections per 1,000 requests, by role."""
    started: list[run.PeerProcess] = []
    events = [SYSCALL_EVENT, *WRITE_EVENTS] + ([INSTRUCTION_EVENT] if perf_instructions else [])
    try:
        pair = await start_pair(impl, setup, log_dir, started, workload)
        await echo(pair, workload, DEFAULT_WARMUP, 0)  # dial, code paths, caches
        perfs = {}
        for role, peer in (("client", pair.client), ("server", pair.server)):
            assert peer.proc is not None
            out = log_dir / f"{impl}-{workload.name}-{role}.perf"
            perfs[role] = (await perf_attach(peer.proc.pid, events, out), out)
        peers = {"client": pair.client, "server": pair.server}
        gc_before = {role: await gc_collections(peer) for role, peer in peers.items()}
        await echo(pair, workload, requests, 0)
        gc_after = {role: await gc_collections(peer) for role, peer in peers.items()}
        counts = {role: await perf_detach(proc, out) for role, (proc, out) in perfs.items()}
    finally:
        await stop_all(started)
    gcs: dict[str, list[float] | None] = {}
    for role, before in gc_before.items():
        after = gc_after[role]
        gcs[role] = (
            None
            if before is None or after is None
            else [(a - b) * 1000 / requests for b, a in zip(before, after, strict=True)]
        )
    syscalls = {role: c.get(SYSCALL_EVENT, 0.0) / requests for role, c in counts.items()}
    writes = {
        role: sum(c.get(e, 0.0) for e in WRITE_EVENTS) / requests for role, c in counts.items()
    }
    instructions = None
    if perf_instructions:
        instructions = {r: c.get(INSTRUCTION_EVENT, 0.0) / requests for r, c in counts.items()}
    return syscalls, writes, instructions, gcs


def cachegrind_total(path: Path) -> float:
    for line in path.read_text().splitlines():
        if line.startswith("summary:"):
            return float(line.split()[1])
    raise CostError(f"{path}: no summary line (did the process exit normally?)")


async def cachegrind_run(
    impl: str, workload: Workload, setup: run.Setup, log_dir: Path, requests: int
) -> dict[str, float]:
    """Total instructions of each process over start-up, warm-up and ``requests`` echoes."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise CostError(
            "no instruction counter: perf cannot count instructions:u here (no CPU counters) "
            "and valgrind is not installed; use --instructions none"
        )
    wrap = [
        valgrind,
        "--tool=cachegrind",
        "--cache-sim=no",
        f"--cachegrind-out-file={log_dir}/{{role}}.cg",
    ]
    tag = f"-{workload.name}-{requests}"
    started: list[run.PeerProcess] = []
    try:
        pair = await start_pair(impl, setup, log_dir, started, workload, wrap, tag)
        await echo(pair, workload, requests, CACHEGRIND_WARMUP)
        for peer in (pair.client, pair.server):
            await peer.call("quit", COMMAND_TIMEOUT_S)
        for peer in (pair.client, pair.server):
            assert peer.proc is not None
            async with asyncio.timeout(VALGRIND_EXIT_TIMEOUT_S):
                await peer.proc.wait()
    finally:
        await stop_all(started)
    return {
        role: cachegrind_total(log_dir / f"{impl}-{role}{tag}.cg") for role in ("client", "server")
    }


async def measure(
    impl: str,
    workload: Workload,
    setup: run.Setup,
    log_dir: Path,
    requests: int,
    instructions: str,
) -> Costs:
    use_perf = instructions == "perf"
    syscalls, writes, counted, gcs = await syscall_costs(
        impl, workload, setup, log_dir, requests, use_perf
    )
    per_request: dict[str, float | None] = {"client": None, "server": None}
    if counted is not None:
        per_request = dict(counted)
    elif instructions == "cachegrind":
        n1, n2 = CACHEGRIND_REQUESTS if workload.concurrency == 1 else CACHEGRIND_REQUESTS_IN_FLIGHT
        small = await cachegrind_run(impl, workload, setup, log_dir, n1)
        large = await cachegrind_run(impl, workload, setup, log_dir, n2)
        per_request = {role: (large[role] - small[role]) / (n2 - n1) for role in small}
    return Costs(per_request, syscalls, writes, gcs)


def fmt_k(value: float | None) -> str:
    return "-" if value is None else f"{value / 1000:.0f} k"


def fmt_gc(per_1k: list[float] | None) -> str:
    """Collections per 1,000 requests as generation 0/1/2."""
    return "-" if per_1k is None else "/".join(f"{n:.2f}" for n in per_1k)


def table(results: dict[tuple[str, str], Costs], markdown: bool) -> str:
    cols = [
        "workload",
        "implementation",
        "instructions client",
        "instructions server",
        "syscalls client",
        "syscalls server",
        "writes client",
        "writes server",
        "gc / 1k client",
        "gc / 1k server",
    ]
    rows = [
        [
            name,
            impl,
            fmt_k(c.instructions["client"]),
            fmt_k(c.instructions["server"]),
            f"{c.syscalls['client']:.1f}",
            f"{c.syscalls['server']:.1f}",
            f"{c.writes['client']:.2f}",
            f"{c.writes['server']:.2f}",
            fmt_gc(c.gc["client"]),
            fmt_gc(c.gc["server"]),
        ]
        for (name, impl), c in results.items()
    ]
    if markdown:
        lines = ["| " + " | ".join(cols) + " |", "|---|" + "---:|" * (len(cols) - 1)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--base",
        type=Path,
        default=None,
        metavar="PATH",
        help="also count the aiop2p checkout at PATH (as run.py --base)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=DEFAULT_REQUESTS,
        metavar="N",
        help=f"timed requests for the syscall counters (default {DEFAULT_REQUESTS})",
    )
    parser.add_argument(
        "--instructions",
        choices=("auto", "perf", "cachegrind", "none"),
        default="auto",
        help="instruction counter: perf where the CPU counters "
        "are visible, else cachegrind (auto), or none",
    )
    parser.add_argument(
        "--workload",
        choices=WORKLOADS,
        action="append",
        default=None,
        help="echo1 (default): raw echo one at a time; echoN: --concurrency in flight; "
        "rr1 / rrN: the same through the Network API (repeatable)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        metavar="C",
        help=f"requests in flight for echoN and rrN (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--only",
        choices=IMPLS,
        action="append",
        default=None,
        help="count these implementations only (repeatable)",
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--markdown", action="store_true")
    out.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 1_000_000:
        parser.error("--requests must be in [1, 1000000]")
    if not 2 <= args.concurrency <= 256:
        parser.error("--concurrency must be in [2, 256]")
    if args.base is not None:
        args.base = args.base.resolve()
        if not (args.base / "bench" / "aiop2p_peer.py").is_file():
            parser.error(f"--base: no bench/aiop2p_peer.py in {args.base}")
    return args


async def amain(args: argparse.Namespace) -> dict[tuple[str, str], Costs]:
    instructions = args.instructions
    if instructions == "auto":
        instructions = "perf" if perf_counts_instructions() else "cachegrind"
        run.progress(f"instructions counted with {instructions}")
    elif instructions == "perf" and not perf_counts_instructions():
        raise CostError("perf cannot count instructions:u here (no CPU counters visible)")
    impls = args.only or [i for i in IMPLS if i != run.BASE_IMPL or args.base is not None]
    if run.BASE_IMPL in impls and args.base is None:
        raise CostError("--only base needs --base PATH")
    setup = run.Setup(base=args.base)
    workloads = [Workload.parse(w, args.concurrency) for w in args.workload or ["echo1"]]
    results = {}
    with tempfile.TemporaryDirectory(prefix="aiop2p-costs-") as tmp:
        for workload in workloads:
            for impl in (i for i in impls if workload.runs_on(i)):
                run.progress(f"{workload.name} {impl}: counting")
                key = (workload.name, impl)
                results[key] = await measure(
                    impl, workload, setup, Path(tmp), args.requests, instructions
                )
                run.progress(f"{workload.name} {impl}: {results[key]}")
    return results


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        results = asyncio.run(amain(args))
    except TimeoutError:
        sys.stderr.write("costs: a process did not finish in time\n")
        return 1
    except (CostError, run.BenchError) as exc:
        sys.stderr.write(f"costs: {exc}\n")
        return 1
    if args.json:
        print(json.dumps({f"{w} {i}": vars(c) for (w, i), c in results.items()}, indent=2))
        return 0
    for name in dict.fromkeys(w for w, _ in results):
        print(f"# {name}: {Workload.parse(name, args.concurrency).describe()}")
    print(
        f"# per 64 B echo request; syscalls over {args.requests} requests"
        f"{'' if args.base is None else f'; base: {run.describe_base(args.base)}'}"
    )
    print(table(results, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
