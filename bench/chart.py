"""``bench/run.py --chart PATH.png``: the figures of one run as a grouped bar chart.

One group per figure, one bar per implementation, every bar relative to aiop2p's (1.0) and
turned so that taller is always better (rates divide by aiop2p's, times and memory the other
way round), on a log scale: the floor, js-libp2p and py-libp2p differ from aiop2p by factors.
The floor's bars are its matching figure (its bulk figure for perf upload and download, its
raw echo for request-response: ``run.FLOOR_REF``).  matplotlib is the ``bench`` extra,
imported only here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# The figures drawn (latency quantiles stay in the tables), in table order.
CHART_KEYS = (
    "dial_median_ms",
    "echo1_req_per_s",
    "echoN_req_per_s",
    "upload_mib_s",
    "download_mib_s",
    "ws_upload_mib_s",
    "ws_download_mib_s",
    "rr1_req_per_s",
    "rrN_req_per_s",
    "relay1_req_per_s",
    "relayN_req_per_s",
    "client_bytes_per_conn",
)
SHORT_LABELS = {
    "dial_median_ms": "dial",
    "echo1_req_per_s": "echo\nsequential",
    "echoN_req_per_s": "echo\n32 in flight",
    "upload_mib_s": "perf\nupload",
    "download_mib_s": "perf\ndownload",
    "ws_upload_mib_s": "WS\nupload",
    "ws_download_mib_s": "WS\ndownload",
    "rr1_req_per_s": "req-resp\nsequential",
    "rrN_req_per_s": "req-resp\n32 in flight",
    "relay1_req_per_s": "relayed\nsequential",
    "relayN_req_per_s": "relayed\n32 in flight",
    "client_bytes_per_conn": "memory\nper conn",
}
COLOURS = {
    "aiop2p": "#1f77b4",
    "aiop2p-uvloop": "#17becf",
    "base": "#7f7f7f",
    "floor": "#2ca02c",
    "js": "#ff7f0e",
    "py": "#9467bd",
}
MISSING_EXTRA = (
    "--chart needs matplotlib, the bench extra: .venv/bin/pip install -e '.[bench]' "
    "(or pip install matplotlib)"
)


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit(MISSING_EXTRA) from None


def relative(value: float | None, ours: float | None, better: str) -> float | None:
    """``value`` relative to aiop2p's, taller is better."""
    if value is None or ours is None or value <= 0 or ours <= 0:
        return None
    return ours / value if better == "lower" else value / ours


def bars(
    impls: list[str], rows: list[dict[str, Any]], floor_ref: dict[str, str]
) -> tuple[list[str], dict[str, list[float]]]:
    """Figure labels and, per implementation, its relative value per figure (NaN: none);
    ``floor_ref`` names the floor's figure behind an aiop2p figure."""
    by_key = {r["key"]: r for r in rows}
    keys = [k for k in CHART_KEYS if k in by_key and by_key[k]["median"].get("aiop2p")]
    values: dict[str, list[float]] = {i: [] for i in impls}
    for key in keys:
        row = by_key[key]
        ours = row["median"]["aiop2p"]
        for impl in impls:
            value = row["median"].get(impl)
            if impl == "floor":
                ref = by_key.get(floor_ref.get(key, ""))
                value = ref["median"].get("floor") if ref is not None else None
            rel = relative(value, ours, row["better"])
            values[impl].append(math.nan if rel is None else rel)
    return [SHORT_LABELS[k] for k in keys], values


def draw(
    path: Path,
    impls: list[str],
    rows: list[dict[str, Any]],
    floor_ref: dict[str, str],
    *,
    title: str,
    base: str | None,
) -> None:
    """Write the chart to ``path`` (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(MISSING_EXTRA) from None
    labels, values = bars(impls, rows, floor_ref)
    shown = [i for i in impls if any(not math.isnan(v) for v in values[i])]
    if not labels or not shown:
        raise SystemExit("--chart: no figure with an aiop2p value to draw")
    width = 0.8 / len(shown)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.3 * len(labels)), 5.5), layout="constrained")
    for n, impl in enumerate(shown):
        xs = [x + (n - (len(shown) - 1) / 2) * width for x in range(len(labels))]
        name = f"base ({base})" if impl == "base" and base else impl
        ax.bar(xs, values[impl], width, label=name, color=COLOURS.get(impl))
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.6)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("relative to aiop2p (taller is better, log scale)")
    ax.set_title(title, fontsize=10)
    fig.legend(fontsize=8, ncols=min(len(shown), 6), loc="outside lower center")
    ax.grid(axis="y", which="both", linewidth=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
