"""Hole punching on the command line, through two NATs: reach a peer by id through the
relay, then DCUtR upgrades to a direct connection (over TCP, and over QUIC), or, behind a
symmetric NAT, fails on both sides with the relay still carrying the requests.

Topology (``nat_topology.py``, one per module, always removed)::

    host a ── NAT router na ──┐ public segment ┌── NAT router nb ── host b
    10.77.1.2   (masquerade)  └── relay r ──── ┘   (masquerade)     10.77.2.2
                              10.77.0.10

- r: ``aiop2p relay`` (relay, DHT server, AutoNAT server: the bootstrap node);
- a: ``aiop2p serve --bootstrap r --punch-private-addrs`` behind NAT 1: AutoNAT finds it
  unreachable, so it reserves on r; reached through r, it starts DCUtR (initiator);
- b: ``punch_probe.py`` behind NAT 2, a long-lived peer on the public API: it looks a's
  bare id up in the DHT, sends through the relay, answers DCUtR, and keeps sending.

The lab's "public" segment is a private range, hence ``--autonat-private-addrs`` (as in
``test_reach_by_id.py``) and ``--punch-private-addrs`` (DCUtR offers and dials the NATs'
private-range "public" addresses).  Figures are printed (``pytest -s``): relayed and
direct request latency, and the time from b's first (relayed) answer to its upgrade.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from .cli_peers import Daemon, cli_env
from .nat_topology import NatLab, nat_unavailable_reason

RELAY_PORT = 4001
A_PORT = 4002
B_PORT = 4003
AFTER = 20
"""Requests b sends once the punch succeeded or failed."""
PROBE = Path(__file__).with_name("punch_probe.py")
OUTCOME_CAP = 60.0
"""Seconds until b's summary: lookup, relayed dial, the punch or its three failures."""

_REASON = nat_unavailable_reason()
pytestmark = [
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
    pytest.mark.timeout(90),
]


def _listen(ip: str, port: int, quic: bool) -> list[str]:
    tcp = f"/ip4/{ip}/tcp/{port}"
    return [tcp, f"/ip4/{ip}/udp/{port}/quic-v1"] if quic else [tcp]


async def _punch(
    lab: NatLab, peers: AsyncExitStack, tmp_path: Path, *, quic: bool, expect: str
) -> tuple[Daemon, Daemon, dict[str, Any]]:
    """r, a and b as above, a and b listening on QUIC too with ``quic``; b's summary
    once ``expect`` happened on its side."""
    env = cli_env(tmp_path)
    relay_args = ["relay", "--json", "--key", str(tmp_path / "relay.key")]
    relay_args += ["--autonat-private-addrs", "--listen", f"/ip4/{lab.relay_ip}/tcp/{RELAY_PORT}"]
    relay = await Daemon.start(lab.relay, env, *relay_args)
    peers.push_async_callback(relay.stop)
    relay_addr = (await relay.wait_for(lambda line: "address" in line))["address"]

    a_args = [
        "serve", "--json", "--key", str(tmp_path / "a.key"), "--echo", "--default-rule",
        "allow", "--no-mdns", "--bootstrap", relay_addr, "--autonat-private-addrs",
        "--autonat-confidence", "1", "--punch-private-addrs",
    ]  # fmt: skip
    for addr in _listen(lab.a.addrs["eth0"], A_PORT, quic):
        a_args += ["--listen", addr]
    a = await Daemon.start(lab.a, env, *a_args)
    peers.push_async_callback(a.stop)
    a_id = (await a.wait_for(lambda line: "peer_id" in line and "identity" in line))["peer_id"]
    await a.wait_for(lambda line: line.get("auto_relay") == "added")

    b_listen = ",".join(_listen(lab.b.addrs["eth0"], B_PORT, quic))
    argv = [sys.executable, str(PROBE), a_id, relay_addr, b_listen, expect, str(AFTER)]
    proc = await asyncio.create_subprocess_exec(
        *lab.b.command(*argv),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    b = Daemon(proc)
    peers.push_async_callback(b.stop)
    try:
        summary = (await b.wait_for(lambda line: "summary" in line, OUTCOME_CAP))["summary"]
    except TimeoutError:
        a_events = [line for line in a.lines if "request_id" not in line]
        answered = len(a.lines) - len(a_events)
        pytest.fail(
            f"no summary from b: a ({answered} requests) {a_events}, b {b.lines} "
            f"{b.stderr[-3000:]!r}"
        )
    assert isinstance(summary, dict)
    return a, b, summary


def _ms(values: list[float]) -> str:
    if not values:
        return "none"
    return (
        f"median {statistics.median(values) * 1e3:.2f} ms (min {min(values) * 1e3:.2f}, "
        f"max {max(values) * 1e3:.2f}, {len(values)} requests)"
    )


def _figures(label: str, summary: dict[str, Any]) -> None:
    requests = summary["requests"]
    relayed = [r["seconds"] for r in requests[1:] if r["relayed"]]
    direct = [r["seconds"] for r in requests if not r["relayed"]]
    print(
        f"\n{label}: first request (lookup + relayed dial + request) "
        f"{requests[0]['seconds'] * 1e3:.1f} ms; outcome "
        f"{summary['outcome_after_seconds']:.3f} s after its answer; relayed {_ms(relayed)}; "
        f"direct {_ms(direct)}"
    )


def _is_punch(outcome: str, **fields: Any) -> Any:
    def predicate(line: dict[str, Any]) -> bool:
        return line.get("hole_punch") == outcome and all(
            line.get(k) == v for k, v in fields.items()
        )

    return predicate


async def test_cli_peers_hole_punch_over_tcp(
    lab: NatLab, peers: AsyncExitStack, tmp_path: Path
) -> None:
    a, b, summary = await _punch(lab, peers, tmp_path, quic=False, expect="upgraded")
    _figures("hole punch over TCP", summary)
    # a (reached through the relay) initiated and says how it got through; b answered.
    done = await a.wait_for(_is_punch("succeeded", initiator=True))
    assert done["attempts"] >= 1, done  # through DCUtR, not a plain dial
    assert done["addr"].startswith(f"/ip4/{lab.router_b_public}/tcp/{B_PORT}"), done
    assert a.count(_is_punch("failed")) == 0, a.lines
    upgraded = [line for line in b.lines if line.get("event") == "upgraded"]
    assert [u["initiator"] for u in upgraded] == [False], b.lines
    assert upgraded[0]["addr"].startswith(f"/ip4/{lab.router_a_public}/tcp/{A_PORT}"), upgraded
    # The requests went through the relay first, and keep flowing over the direct one.
    requests = summary["requests"]
    assert requests[0]["relayed"], requests[0]
    after = requests[-AFTER:]
    assert all(not r["relayed"] for r in after), after
    assert all(r["remote"].startswith(f"/ip4/{lab.router_a_public}/tcp/") for r in after), after


async def test_cli_peers_hole_punch_over_quic(
    lab: NatLab, peers: AsyncExitStack, tmp_path: Path
) -> None:
    """Both listen on TCP and QUIC and reach r over TCP: DCUtR offers both (the NATs kept
    the TCP port, so they keep the UDP one), tries QUIC first, and the punch is QUIC:
    b dials, a sends punch packets and takes b's dial on its listener."""
    a, b, summary = await _punch(lab, peers, tmp_path, quic=True, expect="upgraded")
    _figures("hole punch over QUIC", summary)
    done = await a.wait_for(_is_punch("succeeded", initiator=True))
    assert done["attempts"] >= 1, done
    assert done["addr"] == f"/ip4/{lab.router_b_public}/udp/{B_PORT}/quic-v1", done
    upgraded = [line for line in b.lines if line.get("event") == "upgraded"]
    assert [u["initiator"] for u in upgraded] == [False], b.lines
    a_quic = f"/ip4/{lab.router_a_public}/udp/{A_PORT}/quic-v1"
    assert upgraded[0]["addr"].startswith(a_quic), upgraded
    requests = summary["requests"]
    assert requests[0]["relayed"], requests[0]
    after = requests[-AFTER:]
    assert all(not r["relayed"] and r["remote"].startswith(a_quic) for r in after), after


@pytest.mark.timeout(120)
async def test_cli_punch_fails_behind_a_symmetric_nat_and_the_relay_carries_on(
    lab: NatLab, peers: AsyncExitStack, tmp_path: Path
) -> None:
    """b's NAT maps each connection to a random port (``masquerade random``): the port r
    observed for b is not the one a punch leaves from, so every attempt fails.  Both
    sides say so (a once, after its three attempts; b for each exchange it answered) and
    requests keep going through the relay."""
    lab.symmetric(lab.router_b, True)
    try:
        a, b, summary = await _punch(lab, peers, tmp_path, quic=False, expect="failed:3")
    finally:
        lab.symmetric(lab.router_b, False)
    _figures("symmetric NAT, punch failed", summary)
    failed = await a.wait_for(_is_punch("failed", initiator=True))
    assert failed["attempts"] == 3, failed
    assert "failed after 3 attempt(s)" in failed["error"], failed
    started = [line["attempt"] for line in a.lines if _is_punch("started")(line)]
    assert started == [1, 2, 3], started
    assert a.count(_is_punch("succeeded")) == 0, a.lines
    b_failed = [line for line in b.lines if line.get("event") == "failed"]
    assert [(e["initiator"], e["attempts"]) for e in b_failed] == [
        (False, 1), (False, 2), (False, 3),
    ], b_failed  # fmt: skip
    assert not [line for line in b.lines if line.get("event") == "upgraded"], b.lines
    requests = summary["requests"]
    assert all(r["relayed"] and "/p2p-circuit" in r["remote"] for r in requests), requests
    assert summary["conns"] and all(c["relayed"] for c in summary["conns"]), summary
