"""``bench/run.py``'s report: percent of the floor, ratios against base, js and py, issue 10's
targets, and the chart's bars, computed from given samples (no processes, no timing)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


run = _load("run")
chart = _load("chart")
IMPLS = ["aiop2p", "base", "floor", "js", "py"]


def _samples(values: dict[str, dict[str, float]]) -> dict[str, dict[str, list[float]]]:
    return {
        i: {m.key: [values[i][m.key]] if m.key in values.get(i, {}) else [] for m in run.METRICS}
        for i in IMPLS
    }


SAMPLES = _samples(
    {
        "aiop2p": {
            "echo1_req_per_s": 6500,
            "echo1_p50_ms": 0.2,
            "upload_mib_s": 1200,
            "download_mib_s": 700,
            "dial_median_ms": 1.0,
            "rr1_req_per_s": 5000,
        },
        "base": {
            "echo1_req_per_s": 4000,
            "echo1_p50_ms": 0.25,
            "upload_mib_s": 1000,
            "download_mib_s": 1000,
            "dial_median_ms": 2.0,
            "rr1_req_per_s": 4000,
        },
        "floor": {"echo1_req_per_s": 10000, "echo1_p50_ms": 0.1, "bulk_mib_s": 1500},
        "js": {"echo1_req_per_s": 1000, "echo1_p50_ms": 0.8, "dial_median_ms": 8.0},
        "py": {"echo1_req_per_s": 40, "dial_median_ms": 40.0},
    }
)


def _row(rows: list[dict[str, object]], key: str) -> dict[str, object]:
    return next(r for r in rows if r["key"] == key)


def test_percent_of_floor_reads_each_figure_against_its_floor_figure() -> None:
    rows = run.summarise(IMPLS, SAMPLES)
    assert _row(rows, "echo1_req_per_s")["pct_floor"] == pytest.approx(0.65)
    assert _row(rows, "echo1_p50_ms")["pct_floor"] == pytest.approx(0.5)  # a time: inverted
    assert _row(rows, "upload_mib_s")["pct_floor"] == pytest.approx(0.8)  # the bulk floor
    assert _row(rows, "rr1_req_per_s")["pct_floor"] == pytest.approx(0.5)  # the raw echo floor
    assert _row(rows, "dial_median_ms")["pct_floor"] is None  # the floor does not dial
    echo = _row(rows, "echo1_req_per_s")
    assert echo["ratio_aiop2p_base"] == pytest.approx(1.625)
    assert echo["ratio_aiop2p_js"] == pytest.approx(6.5)
    assert echo["ratio_aiop2p_py"] == pytest.approx(162.5)


def test_issue_10_targets_are_judged_on_their_own_ratio() -> None:
    rows = run.summarise(IMPLS, SAMPLES)
    judged = {t["target"]: t["met"] for t in run.evaluate_targets(rows, run.ISSUE10_TARGETS, IMPLS)}
    assert judged["sequential echo >= 65% of the floor"] is True
    assert judged["sequential echo >= 1.4x base"] is True
    assert judged["dial time <= 0.7x base"] is True  # 0.5x
    assert judged["perf upload >= 80% of the receiver-bound floor"] is True
    assert judged["perf download >= 80% of the receiver-bound floor"] is False  # 47 %
    assert judged["Network req/s sequential >= 1.4x base"] is False  # 1.25x
    assert not any("uvloop" in t for t in judged)  # aiop2p-uvloop did not run


def test_targets_need_the_implementation_they_compare_with() -> None:
    impls = ["aiop2p", "js"]
    rows = run.summarise(impls, SAMPLES)
    targets = run.evaluate_targets(rows, [*run.TARGETS, *run.ISSUE10_TARGETS], impls)
    assert {t["ratio_key"] for t in targets} == {"ratio_aiop2p_js"}
    assert [title for title, _ in run.ratio_columns(impls)] == ["aiop2p/js"]


def test_chart_bars_are_relative_to_aiop2p_and_taller_is_better() -> None:
    rows = run.summarise(IMPLS, SAMPLES)
    labels, bars = chart.bars(IMPLS, rows, run.FLOOR_REF)
    dial = labels.index(chart.SHORT_LABELS["dial_median_ms"])
    echo = labels.index(chart.SHORT_LABELS["echo1_req_per_s"])
    upload = labels.index(chart.SHORT_LABELS["upload_mib_s"])
    assert bars["aiop2p"][echo] == 1.0
    assert bars["floor"][echo] == pytest.approx(10000 / 6500)
    assert bars["floor"][upload] == pytest.approx(1500 / 1200)  # the floor's bulk figure
    assert bars["js"][dial] == pytest.approx(1.0 / 8.0)  # 8x slower dial: an 1/8 bar
    assert math.isnan(bars["floor"][dial])  # no floor dial: no bar


def test_quic_rows_put_quic_beside_tcp_and_judge_issue_13_targets() -> None:
    """The quic figure group: QUIC/TCP ratios per pair, CPU costs per side, and the
    issue-13 targets (200 MiB/s, 1/4 of TCP to js, small requests within 1.5x of TCP)."""
    sys.modules.setdefault("run", run)  # quic_figures imports run as run.py's sibling
    quic = _load("quic_figures")
    samples = quic.QuicSamples()
    same, to_js = quic.pair_name("aiop2p", "aiop2p"), quic.pair_name("aiop2p", "js")
    for transport, up, down, p50, cpu in (
        ("tcp", 800.0, 600.0, 0.2, 0.001),
        ("quic", 250.0, 150.0, 0.5, 0.004),
    ):
        samples.add((same, "perf upload", transport), up, (cpu, cpu / 2))
        samples.add((same, "perf download", transport), down, (cpu, cpu))
        samples.add((same, "echo sequential p50", transport), p50, (cpu / 10, cpu / 20))
        samples.add((same, "echo sequential p50, one core", transport), p50, None)
        two_cores = p50 if transport == "tcp" else p50 / 2  # QUIC 1.25x TCP
        samples.add((same, "echo sequential p50, two cores", transport), two_cores, None)
        samples.add((to_js, "perf upload", transport), up / 10, (cpu, cpu))
    rows = quic.summarise(samples)
    upload = next(r for r in rows if r["pair"] == same and r["figure"] == "perf upload")
    assert upload["ratio"] == pytest.approx(250 / 800)
    assert upload["quic_cpu"] == (0.004, 0.002)
    status = {t["target"]: t["met"] for t in quic.targets(rows)}
    assert status["aiop2p <-> aiop2p QUIC perf upload >= 200 MiB/s"] is True
    assert status["aiop2p <-> aiop2p QUIC perf download >= 200 MiB/s"] is False
    assert status["aiop2p -> js QUIC perf upload >= 1/4 of TCP"] is True
    # Unpinned the two transports' clients may sit in different placements: not judged.
    assert status["aiop2p <-> aiop2p QUIC small-request p50 <= 1.5x TCP (unpinned)"] is None
    assert status["aiop2p <-> aiop2p QUIC small-request p50 <= 1.5x TCP (one core)"] is False
    assert status["aiop2p <-> aiop2p QUIC small-request p50 <= 1.5x TCP (two cores)"] is True
    assert "perf upload" in quic.table(rows, markdown=True)


def test_only_figures_is_repeatable() -> None:
    """``--only-figures tcp --only-figures rr`` runs both (the last alone, before)."""
    args = run.parse_args(["--only-figures", "rr", "--only-figures", "tcp"])
    assert run.chosen_groups(args.only_figures) == ("tcp", "rr")
    assert run.chosen_groups(run.parse_args([]).only_figures) == run.FIGURE_GROUPS


def test_requests_sets_the_timed_echo_count_within_the_peers_bound() -> None:
    assert run.parse_args(["--requests", "10000"]).requests == 10000
    assert run.parse_args([]).requests is None
    for bad in ("0", str(run.MAX_REQUESTS + 1)):
        with pytest.raises(SystemExit):
            run.parse_args(["--requests", bad])


def test_placement_summaries_give_each_issues_ratios() -> None:
    """``bench/placement.py``: issue 10's line (aiop2p / base, aiop2p and the floor with tasks
    as % of the floor, from the requests/s) and issue 13's (QUIC / TCP from the p50 and from
    both sides' CPU), each the ratio of medians over the rounds."""
    sys.modules.setdefault("run", run)  # placement imports run and quic_figures as siblings
    sys.modules.setdefault("quic_figures", _load("quic_figures"))
    placement = _load("placement")
    sample = placement.Sample
    issue10 = placement.parse_args(["--base", "/elsewhere", "--rounds", "3"])
    line = placement.summary(
        "one core",
        [
            [sample(r, 0.1, 100.0) for r in (2000.0, 3000.0, 9000.0)],  # median 3000
            [sample(r, 0.1, 100.0) for r in (1000.0, 1500.0, 1.0)],  # median 1000
            [sample(r, 0.1, 100.0) for r in (6000.0, 5000.0, 4000.0)],  # median 5000
            [sample(r, 0.1, 100.0) for r in (4000.0, 3500.0, 9.0)],  # median 3500
        ],
        issue10,
    )
    assert "aiop2p / base 3.00x" in line and "60 % of the floor" in line
    assert "the floor with tasks 70 % of the floor" in line
    issue13 = placement.parse_args(["--quic", "--rounds", "3"])
    line = placement.summary(
        "two cores",
        [
            [sample(1.0, p50, cpu) for p50, cpu in ((0.2, 200.0), (0.3, 100.0), (0.1, 150.0))],
            [sample(1.0, p50, cpu) for p50, cpu in ((0.3, 300.0), (0.9, 270.0), (0.1, 240.0))],
        ],
        issue13,
    )
    assert "QUIC / TCP p50 1.50x, CPU 1.80x" in line
    with pytest.raises(SystemExit):  # one comparison or the other, never neither
        placement.parse_args(["--rounds", "3"])
