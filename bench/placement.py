"""Issue 10's sequential echo (TCP, 64 B, a new stream each) per placement of the two
processes: unpinned, both on one CPU, and on two different CPUs, for aiop2p, the
``--base`` checkout and the floor, interleaved round by round.

``bench/run.py`` runs its peers unpinned, and the scheduler then keeps a pair on one vCPU
or two for a whole run (bench/RESULTS.md, "Round six"); this script measures each
placement on purpose, with the same peers and commands (``quic_figures``' pinning).  It
prints each run's requests/s, p50 and both sides' CPU per request, then per placement
the medians, aiop2p / base and aiop2p as a percentage of the floor.

    .venv/bin/python bench/placement.py --base PATH [--rounds N] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import quic_figures
import run

PLACEMENTS = (("unpinned", None), ("one core", (0, 0)), ("two cores", (0, 1)))
"""A name and the (server, client) indices among the CPUs this process may use."""
IMPLS = ("aiop2p", run.BASE_IMPL, run.FLOOR_IMPL)
WARMUP = 500


async def main(args: argparse.Namespace) -> None:
    settings = replace(run.FULL, echo_count=args.requests)
    log_dir = Path(tempfile.mkdtemp(prefix="aiop2p-placement-"))
    started: list[run.PeerProcess] = []
    rates: dict[tuple[str, str], list[float]] = {}
    allowed = sorted(os.sched_getaffinity(0))
    try:
        pairs = [
            await run.start_pair(impl, run.Setup(base=args.base), log_dir, started)
            for impl in IMPLS
        ]
        for round_ in range(args.rounds):
            for placement, cpus in PLACEMENTS:
                if cpus is not None and max(cpus) >= len(allowed):
                    continue
                for pair in pairs:
                    if cpus is not None:
                        quic_figures.pin(pair.server, {allowed[cpus[0]]})
                        quic_figures.pin(pair.client, {allowed[cpus[1]]})
                    try:
                        addr = quic_figures.target(pair.server, "tcp")
                        r, cpu = await quic_figures.sequential_echo(pair, addr, settings, WARMUP)
                    finally:
                        quic_figures.pin(pair.server, set(allowed))
                        quic_figures.pin(pair.client, set(allowed))
                    rates.setdefault((placement, pair.impl), []).append(r["req_per_s"])
                    print(
                        f"round {round_ + 1}, {placement}, {pair.impl}: {r['req_per_s']:.0f} "
                        f"req/s, p50 {r['p50_ms']:.3f} ms, CPU {cpu[0] * 1e6:.0f} / "
                        f"{cpu[1] * 1e6:.0f} µs per request",
                        flush=True,
                    )
    finally:
        for peer in started:
            await peer.stop()
    for placement, _ in PLACEMENTS:
        medians = {impl: statistics.median(rates.get((placement, impl), [0.0])) for impl in IMPLS}
        ours, base, floor = (medians[impl] for impl in IMPLS)
        if ours and base and floor:
            print(
                f"{placement}: aiop2p {ours:.0f}, base {base:.0f}, floor {floor:.0f} req/s "
                f"(medians of {args.rounds}): aiop2p / base {ours / base:.2f}x, "
                f"{100 * ours / floor:.0f} % of the floor"
            )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base", type=Path, required=True, help="another checkout")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (5)")
    parser.add_argument("--requests", type=int, default=5000, help="timed requests (5000)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
