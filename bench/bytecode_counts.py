"""Bytecodes executed per Python function while a bench script runs: a deterministic
picture of where the interpreter's work goes, function by function, which cProfile's
per-call overhead distorts (it makes many cheap calls look costly) and cachegrind does
not give (it sees the interpreter's C functions only).

Counted with ``sys.settrace`` and per-opcode events, so the script runs ~50 times slower
(timers fire as they would in a much slower run).  Two runs with different request counts
give the counts per request, as with cachegrind::

    PYTHONPATH=src:bench .venv/bin/python bench/bytecode_counts.py --out /tmp/a.json \\
        bench/quic_machine_echo.py --requests 1200
    PYTHONPATH=src:bench .venv/bin/python bench/bytecode_counts.py --out /tmp/b.json \\
        bench/quic_machine_echo.py --requests 200
    .venv/bin/python bench/bytecode_counts.py --diff /tmp/a.json /tmp/b.json 1000

The second form prints bytecodes and calls per request (the difference divided by the
request counts' difference), largest first, and their totals.  An instruction count (from
cachegrind) divided by the bytecode count is the average cost of a bytecode: ~50
instructions in the QUIC echo, where a C call that makes an object (``enumerate``, a
slice, a ``struct`` pack) costs hundreds.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

Key = tuple[str, int, str]  # file name, first line, function name


def count(script: str, args: list[str]) -> tuple[Counter[Key], Counter[Key]]:
    """Bytecodes and calls per function while ``script`` runs with ``args``."""
    ops: Counter[Key] = Counter()
    calls: Counter[Key] = Counter()

    def on_call(frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        key = (Path(code.co_filename).name, code.co_firstlineno, code.co_name)
        calls[key] += 1
        frame.f_trace_opcodes = True

        def on_event(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                ops[key] += 1
            return on_event

        return on_event

    sys.argv = [script, *args]
    sys.settrace(on_call)
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit:
        pass
    finally:
        sys.settrace(None)
    return ops, calls


def diff(more: Path, fewer: Path, requests: int, rows: int) -> None:
    """Print the counts per request: ``more`` minus ``fewer`` over ``requests``."""
    loaded = []
    for path in (more, fewer):
        loaded.append({tuple(key): (n, c) for key, n, c in json.loads(path.read_text())})
    a, b = loaded
    per = sorted(
        (
            ((n - b.get(key, (0, 0))[0]) / requests, (c - b.get(key, (0, 0))[1]) / requests, key)
            for key, (n, c) in a.items()
        ),
        reverse=True,
    )
    print(f"bytecodes per request {sum(p[0] for p in per):.1f}, calls {sum(p[1] for p in per):.1f}")
    for ops, calls, (name, line, function) in per[:rows]:
        print(f"{ops:9.1f} {calls:7.2f}  {name}:{line} {function}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, help="where to write the counts (JSON)")
    parser.add_argument("--diff", nargs=3, metavar=("MORE", "FEWER", "REQUESTS"))
    parser.add_argument("--rows", type=int, default=40)
    options, rest = parser.parse_known_args(argv)
    if options.diff:
        more, fewer, requests = options.diff
        diff(Path(more), Path(fewer), int(requests), options.rows)
        return
    if options.out is None or not rest:
        parser.error("--out PATH SCRIPT [ARGS...], or --diff MORE FEWER REQUESTS")
    ops, calls = count(rest[0], rest[1:])
    rows = [[list(key), n, calls[key]] for key, n in ops.items()]
    options.out.write_text(json.dumps(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
