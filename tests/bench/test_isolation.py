"""``bench/run.py`` runs each figure with every other implementation's processes stopped, so
work one implementation defers (timers, collections) cannot land in another's figure."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from .test_report import run

pytestmark = pytest.mark.timeout(120)


def _children() -> dict[int, str]:
    """Our child processes and their scheduler state (``T``: stopped)."""
    found: dict[int, str] = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me:
            found[int(entry)] = fields[0]
    return found


async def test_other_pairs_are_stopped_while_one_pair_runs_a_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, tuple[set[int], dict[int, str]]] = {}

    async def probe(pair: Any, s: Any) -> dict[str, float]:
        own = {p.proc.pid for p in pair.processes}
        seen[pair.impl] = (own, _children())
        await pair.client.call("rss", 10.0)  # the pair itself answers
        return {}

    # The floor runs its own version of known figures; this probe runs for both pairs.
    monkeypatch.setattr(run, "bench_for", lambda impl, name, bench: bench)
    runner = run.Runner(["aiop2p", "floor"], run.QUICK, tmp_path, run.Setup())
    async with asyncio.timeout(90):
        await runner.run_benches(0, [("probe", probe)])
    assert runner.errors == []
    assert set(seen) == {"aiop2p", "floor"}
    for impl, (own, states) in seen.items():
        others = set(states) - own
        assert own <= set(states) and len(others) == 2, (impl, states)
        assert all(states[pid] != "T" for pid in own), (impl, states)
        assert all(states[pid] == "T" for pid in others), (impl, states)
    # Every process was resumed and asked to quit: none is left.
    assert not set(_children()) & {pid for own, _ in seen.values() for pid in own}
