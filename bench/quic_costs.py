"""QUIC vs TCP cost counters: CPU seconds and syscalls per MiB of bulk, per small request.

A server and a client ``bench/aiop2p_peer.py`` (as in ``run.py``) listen and dial on
loopback TCP and QUIC; for each transport the client runs a perf upload, a perf download
and sequential 64 B echo requests.  Around each figure, for each process:

- **CPU**: the threads' run time from ``/proc/<pid>/task/*/schedstat`` (nanoseconds; the
  process's own CPU time: it holds on a busy machine, where wall-clock rates do not), and
  the system share from ``/proc/<pid>/stat``;
- **syscalls**, **sends** (``sendto``/``sendmsg``/``write``/``writev``) and **receives**
  (``recvfrom``/``recvmsg``/``read``): ``perf stat -e`` tracepoints attached to the
  process (``-p``) for the figure only;
- **switches**: its context switches (``perf stat -e context-switches``).  A bulk receiver
  that keeps up with its sender hardly ever sleeps; a few switches per MiB mean it waited
  for data (or lost its core), and then both sides cost more per MiB.

Per MiB for bulk, per request for echo.  A CPU-bound side sets the rate: MiB/s is about
1 / (CPU s per MiB) of the busier side; bulk rows give the wall-clock MiB/s too.

    .venv/bin/python bench/quic_costs.py [--mib N] [--requests N] [--uvloop] [--markdown]
                                         [--profile DIR] [--only tcp|quic] [--base PATH]
                                         [--repeat N]

``--mib 0`` measures the echo requests only.  ``--repeat N`` measures every figure N
times, the transports interleaved (tcp, quic, tcp, ...: a busy spell of the shared machine
falls on both), and prints each number as the median and its range over the repeats;
echo rows also give the client's p50 latency, so QUIC's and TCP's are set side by side
from one run.

``--base PATH`` runs another checkout's peers (its ``bench/aiop2p_peer.py`` on its ``src``),
to set the counts of a change beside those before it.  With ``--only`` the server listens
on that transport alone, so a checkout from before QUIC can be the base of a TCP run.

``--profile DIR`` runs each peer under cProfile (``DIR/{server,client}.prof``; the counts
include the profiler's overhead, so read them for where the time goes, not for totals).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import costs
import run

MIB = run.MIB
SEND_EVENTS = (
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_sendmsg",
    "syscalls:sys_enter_sendmmsg",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_writev",
)
RECV_EVENTS = (
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_recvmsg",
    "syscalls:sys_enter_recvmmsg",
    "syscalls:sys_enter_read",
)
SWITCH_EVENT = "context-switches"
EVENTS = [costs.SYSCALL_EVENT, *SEND_EVENTS, *RECV_EVENTS, SWITCH_EVENT]
LISTEN = ("/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1")
TRANSPORTS = ("tcp", "quic")
COMMAND_TIMEOUT_S = 900.0
WARMUP_MIB = 16
WARMUP_REQUESTS = 300
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Cost:
    cpu_s: float
    sys_s: float
    syscalls: float
    sends: float
    recvs: float
    switches: float


def cpu_seconds(pid: int) -> tuple[float, float, float]:
    """CPU seconds of ``pid`` so far, and its user and system clock ticks in seconds.

    The CPU time sums the threads' ``schedstat`` run times (nanoseconds: a 256 MiB figure is
    some 20 clock ticks, so ``stat``'s ticks alone swing it by 5 %); the ticks
    (``/proc/<pid>/stat`` fields 14 and 15) give the system share of it.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    run_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            run_ns += int((task / "schedstat").read_text().split()[0])
    return run_ns / 1e9, int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def system_seconds(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
    """The system part of the CPU seconds between two :func:`cpu_seconds` readings."""
    ticks = (after[1] - before[1]) + (after[2] - before[2])
    if ticks <= 0:
        return 0.0
    return (after[0] - before[0]) * (after[2] - before[2]) / ticks


def target(server: run.PeerProcess, transport: str) -> str:
    marker = "/quic-v1" if transport == "quic" else "/tcp/"
    return next(a for a in server.addrs if marker in a)


async def measure(
    pair: run.Pair, log_dir: Path, name: str, command: str, fields: dict[str, Any]
) -> tuple[dict[str, Cost], dict[str, Any]]:
    """CPU and syscalls of each process over one command of the client."""
    pids = {}
    for role, peer in (("client", pair.client), ("server", pair.server)):
        assert peer.proc is not None
        pids[role] = peer.proc.pid
    perfs = {
        role: (
            await costs.perf_attach(pid, EVENTS, log_dir / f"{name}-{role}.perf"),
            log_dir / f"{name}-{role}.perf",
        )
        for role, pid in pids.items()
    }
    before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    reply = await pair.client.call(command, COMMAND_TIMEOUT_S, **fields)
    after = {role: cpu_seconds(pid) for role, pid in pids.items()}
    out = {}
    for role, (proc, path) in perfs.items():
        counts = await costs.perf_detach(proc, path)
        out[role] = Cost(
            after[role][0] - before[role][0],
            system_seconds(before[role], after[role]),
            counts.get(costs.SYSCALL_EVENT, 0.0),
            sum(counts.get(e, 0.0) for e in SEND_EVENTS),
            sum(counts.get(e, 0.0) for e in RECV_EVENTS),
            counts.get(SWITCH_EVENT, 0.0),
        )
    return out, reply


def impl_of(args: argparse.Namespace) -> str:
    if args.base is not None:
        return run.BASE_IMPL
    return run.UVLOOP_IMPL if args.uvloop else "aiop2p"


def launch(role: str, args: argparse.Namespace) -> run.Launch:
    # role: server, client-tcp, client-quic; --only listens on that transport alone (a
    # --base checkout from before QUIC cannot listen on it).
    wanted = [a for a, t in zip(LISTEN, TRANSPORTS, strict=True) if args.only in (None, t)]
    listen = tuple(wanted) if role == "server" else ()
    base = run.peer_launch(impl_of(args), run.Setup(base=args.base), listen=listen)
    argv = base.argv
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        argv = [argv[0], "-m", "cProfile", "-o", str(args.profile / f"{role}.prof"), *argv[1:]]
    return run.Launch(argv, base.env, base.cwd)


async def main(args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    log_dir = Path(tempfile.mkdtemp(prefix="aiop2p-quic-costs-"))
    impl = impl_of(args)
    server = run.PeerProcess(impl, "server", log_dir, launch("server", args))
    peers = [server]
    results: dict[str, dict[str, list[float]]] = {}
    try:
        await server.start()
        size = args.mib * MIB
        pairs: dict[str, tuple[run.Pair, str]] = {}
        for transport in (args.only,) if args.only else TRANSPORTS:
            # A client per transport: a dial to a peer we are connected to reuses the connection.
            client = run.PeerProcess(
                impl, f"client-{transport}", log_dir, launch(f"client-{transport}", args)
            )
            peers.append(client)
            await client.start()
            pair = run.Pair(impl, server, client)
            addr = target(pair.server, transport)
            pairs[transport] = (pair, addr)
            if args.mib:
                await pair.client.call(
                    "perf",
                    COMMAND_TIMEOUT_S,
                    addr=addr,
                    upload=WARMUP_MIB * MIB,
                    download=WARMUP_MIB * MIB,
                    warmup_bytes=0,
                )
            await pair.client.call(
                "bench_echo", COMMAND_TIMEOUT_S, addr=addr, count=WARMUP_REQUESTS, warmup=0
            )
        figures = (
            ("upload", "perf", {"upload": size, "download": 0, "warmup_bytes": 0}, args.mib),
            ("download", "perf", {"upload": 0, "download": size, "warmup_bytes": 0}, args.mib),
            (
                "echo",
                "bench_echo",
                {"count": args.requests, "warmup": 0, "size": 64},
                args.requests,
            ),
        )
        for repeat in range(args.repeat):
            for transport, (pair, addr) in pairs.items():
                for figure, command, fields, units in figures:
                    if not units:
                        continue
                    cost, reply = await measure(
                        pair,
                        log_dir,
                        f"{transport}-{figure}-{repeat}",
                        command,
                        {"addr": addr, **fields},
                    )
                    row = results.setdefault(f"{transport} {figure}", {})
                    for role, c in cost.items():
                        for key, value in (
                            ("cpu", c.cpu_s / units),
                            ("sys", c.sys_s / max(c.cpu_s, 1e-9)),
                            ("syscalls", c.syscalls / units),
                            ("sends", c.sends / units),
                            ("recvs", c.recvs / units),
                            ("switches", c.switches / units),
                        ):
                            row.setdefault(f"{role} {key}", []).append(value)
                    if figure == "echo":
                        row.setdefault("p50 ms", []).append(float(reply["p50_ms"]))
                    else:
                        row.setdefault("MiB/s", []).append(units / reply["total_seconds"])
                    progress(f"{transport} {figure} #{repeat + 1}: {row}")
    finally:
        await costs.stop_all(peers)
    return results


def progress(text: str) -> None:
    sys.stderr.write(text + "\n")


def spread(values: list[float], fmt: str) -> str:
    """The median, and the range when there are several values."""
    ordered = sorted(values)
    middle = ordered[len(ordered) // 2]
    if len(ordered) == 1:
        return fmt.format(middle)
    return f"{fmt.format(middle)} ({fmt.format(ordered[0])}-{fmt.format(ordered[-1])})"


def table(results: dict[str, dict[str, list[float]]], markdown: bool) -> str:
    cols = ["figure", "unit"]
    for role in ("client", "server"):
        cols += [f"{role} CPU", "sys", f"{role} syscalls", f"{role} sends", f"{role} recvs"]
        cols.append(f"{role} switches")
    cols += ["p50", "MiB/s"]
    rows = []
    for name, row in results.items():
        per_mib = not name.endswith("echo")
        line = [name, "per MiB" if per_mib else "per request"]
        for role in ("client", "server"):
            cpu = row[f"{role} cpu"]
            if per_mib:
                line.append(spread([v * 1000 for v in cpu], "{:.2f}") + " ms")
            else:
                line.append(spread([v * 1e6 for v in cpu], "{:.0f}") + " µs")
            line.append(spread([v * 100 for v in row[f"{role} sys"]], "{:.0f}") + "%")
            for what in ("syscalls", "sends", "recvs", "switches"):
                line.append(spread(row[f"{role} {what}"], "{:.1f}"))
        line.append(spread(row["p50 ms"], "{:.3f}") + " ms" if "p50 ms" in row else "-")
        line.append(spread(row["MiB/s"], "{:.0f}") if "MiB/s" in row else "-")
        rows.append(line)
    if markdown:
        out = ["| " + " | ".join(cols) + " |", "|---|---|" + "---:|" * (len(cols) - 2)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    out = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    out += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--mib", type=int, default=256, help="MiB per bulk figure (256; 0: echo only)"
    )
    parser.add_argument("--requests", type=int, default=2000, help="echo requests (2000)")
    parser.add_argument("--uvloop", action="store_true", help="run the peers on uvloop")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR")
    parser.add_argument("--only", choices=TRANSPORTS, default=None, help="one transport only")
    parser.add_argument("--base", type=Path, default=None, metavar="PATH", help="another checkout")
    parser.add_argument(
        "--repeat", type=int, default=1, help="measure each figure N times, interleaved (1)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    with contextlib.suppress(KeyboardInterrupt):
        print(table(asyncio.run(main(arguments)), arguments.markdown))
