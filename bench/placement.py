"""The sequential echo (64 B, a new stream each) per placement of the two processes:
unpinned, both on one CPU, and on two different CPUs, interleaved round by round.

Two comparisons:

- issue 10 (``--base PATH``): aiop2p, the ``--base`` checkout, the floor and the floor
  with a task per request (``floor_peer.py --tasks``) over TCP; per placement the medians
  of requests/s, aiop2p / base, and aiop2p and the floor with tasks as percentages of the
  floor;
- issue 13 (``--quic``): two aiop2p pairs whose servers listen on TCP and QUIC, one
  echoing over each; per placement the medians of the p50 latency and of both
  sides' CPU per request, QUIC / TCP.

``bench/run.py`` runs its peers unpinned, and the scheduler then keeps a pair on one vCPU
or two for a whole run (bench/RESULTS.md, "Round six"); this script measures each
placement on purpose, with the same peers and commands (``quic_figures``' pinning).  It
prints each run's requests/s, p50 and both sides' CPU per request, then the summary.

    .venv/bin/python bench/placement.py --base PATH [--rounds N] [--requests N]
    .venv/bin/python bench/placement.py --quic [--rounds N] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import quic_figures
import run

PLACEMENTS = (("unpinned", None), ("one core", (0, 0)), ("two cores", (0, 1)))
"""A name and the (server, client) indices among the CPUs this process may use."""
IMPLS = ("aiop2p", run.BASE_IMPL, run.FLOOR_IMPL, run.FLOOR_TASKS_IMPL)
WARMUP = 500


@dataclass(frozen=True)
class Entrant:
    """One thing measured each round: a name, its pair of processes, the transport."""

    name: str
    pair: run.Pair
    transport: str


@dataclass
class Sample:
    req_per_s: float
    p50_ms: float
    cpu_us: float  # both sides' CPU per request


async def entrants(
    args: argparse.Namespace, log_dir: Path, started: list[run.PeerProcess]
) -> list[Entrant]:
    if args.quic:  # a pair each: a client's dial reuses its connection to the peer
        listen = quic_figures.LISTEN
        return [
            Entrant(
                f"aiop2p {t}",
                await run.start_pair("aiop2p", run.Setup(), log_dir, started, listen),
                t,
            )
            for t in quic_figures.TRANSPORTS
        ]
    setup = run.Setup(base=args.base)
    return [
        Entrant(impl, await run.start_pair(impl, setup, log_dir, started), "tcp") for impl in IMPLS
    ]


async def main(args: argparse.Namespace) -> None:
    settings = replace(run.FULL, echo_count=args.requests)
    log_dir = Path(tempfile.mkdtemp(prefix="aiop2p-placement-"))
    started: list[run.PeerProcess] = []
    samples: dict[tuple[str, str], list[Sample]] = {}
    allowed = sorted(os.sched_getaffinity(0))
    try:
        measured = await entrants(args, log_dir, started)
        for round_ in range(args.rounds):
            for placement, cpus in PLACEMENTS:
                if cpus is not None and max(cpus) >= len(allowed):
                    continue
                for e in measured:
                    if cpus is not None:
                        quic_figures.pin(e.pair.server, {allowed[cpus[0]]})
                        quic_figures.pin(e.pair.client, {allowed[cpus[1]]})
                    try:
                        addr = quic_figures.target(e.pair.server, e.transport)
                        r, cpu = await quic_figures.sequential_echo(e.pair, addr, settings, WARMUP)
                    finally:
                        quic_figures.pin(e.pair.server, set(allowed))
                        quic_figures.pin(e.pair.client, set(allowed))
                    sample = Sample(r["req_per_s"], r["p50_ms"], (cpu[0] + cpu[1]) * 1e6)
                    samples.setdefault((placement, e.name), []).append(sample)
                    print(
                        f"round {round_ + 1}, {placement}, {e.name}: {r['req_per_s']:.0f} "
                        f"req/s, p50 {r['p50_ms']:.3f} ms, CPU {cpu[0] * 1e6:.0f} / "
                        f"{cpu[1] * 1e6:.0f} µs per request",
                        flush=True,
                    )
    finally:
        for peer in started:
            await peer.stop()
    names = [e.name for e in measured]
    for placement, _ in PLACEMENTS:
        if all((placement, name) in samples for name in names):
            print(summary(placement, [samples[placement, name] for name in names], args))


def median(samples: list[Sample], field: str) -> float:
    values: list[float] = [getattr(s, field) for s in samples]
    return statistics.median(values)


def summary(placement: str, per_entrant: list[list[Sample]], args: argparse.Namespace) -> str:
    """One placement's line: the medians over the rounds, and the ratios the issue asks."""
    if args.quic:
        tcp, quic = per_entrant
        p50 = median(quic, "p50_ms") / median(tcp, "p50_ms")
        cpu = median(quic, "cpu_us") / median(tcp, "cpu_us")
        return (
            f"{placement}: p50 TCP {median(tcp, 'p50_ms'):.3f} ms, QUIC "
            f"{median(quic, 'p50_ms'):.3f} ms; CPU per request, both sides, TCP "
            f"{median(tcp, 'cpu_us'):.0f} µs, QUIC {median(quic, 'cpu_us'):.0f} µs (medians of "
            f"{args.rounds}): QUIC / TCP p50 {p50:.2f}x, CPU {cpu:.2f}x"
        )
    ours, base, floor, floor_tasks = (median(s, "req_per_s") for s in per_entrant)
    return (
        f"{placement}: aiop2p {ours:.0f}, base {base:.0f}, floor {floor:.0f}, floor with "
        f"tasks {floor_tasks:.0f} req/s (medians of {args.rounds}): aiop2p / base "
        f"{ours / base:.2f}x, {100 * ours / floor:.0f} % of the floor; the floor with tasks "
        f"{100 * floor_tasks / floor:.0f} % of the floor"
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--base", type=Path, help="another checkout (issue 10's comparison)")
    which.add_argument(
        "--quic", action="store_true", help="aiop2p over QUIC beside TCP (issue 13's comparison)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds (5)")
    parser.add_argument("--requests", type=int, default=5000, help="timed requests (5000)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
