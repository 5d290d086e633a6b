"""The long fuzz pass over every wire parser (not part of the pytest run).

    .venv/bin/python tests/fuzz/run_fuzz.py [--seed N] [--count N] [--only a,b]

Feeds ``--count`` inputs (default 100,000) to each parser of ``harness.build_targets()``
and prints one table row per parser: inputs, accepted, refused the documented way,
crashes (any other exception, or an undocumented event), hangs (one input over
``--hang-seconds``), seconds.  The first crashing inputs are printed in hex with their
traceback.  Exit status 1 if anything crashed or hung.  Same seed and count, same inputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from tests.fuzz.harness import build_targets, format_table, run_target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--count", type=int, default=100_000, help="inputs per parser")
    parser.add_argument("--only", help="comma-separated parser names (default: all)")
    parser.add_argument(
        "--hang-seconds", type=float, default=5.0, help="one input taking longer is a hang"
    )
    args = parser.parse_args(argv)
    targets = build_targets()
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {t.name for t in targets}
        if unknown:
            parser.error(f"unknown parsers: {', '.join(sorted(unknown))}")
        targets = [t for t in targets if t.name in wanted]
    print(f"seed {args.seed}, {args.count} inputs per parser, {len(targets)} parsers", flush=True)
    results = []
    for target in targets:
        stats = run_target(target, args.count, args.seed, hang_seconds=args.hang_seconds)
        results.append(stats)
        print(
            f"  {stats.name}: {stats.crashes} crashes, {stats.hangs} hangs, {stats.seconds:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        for data, why in stats.examples:
            print(f"\n{stats.name} input {data.hex()}\n{why}", file=sys.stderr)
    print(format_table(results))
    total = sum(s.seconds for s in results)
    print(f"total: {sum(s.inputs for s in results)} inputs in {total:.0f} s")
    return 1 if any(s.crashes or s.hangs for s in results) else 0


if __name__ == "__main__":
    sys.exit(main())
