"""Reach by id through two NATs with a js-libp2p public node, and after its restart.

The NAT lab of ``test_reach_by_id.py`` (``nat_topology.py``, made by the test and always
removed), with ``aiop2p relay`` on the public segment replaced by a js-libp2p node
(``tests/interop/js/public_node.mjs``: js-libp2p 3.3.11, ``@libp2p/circuit-relay-v2``
server, ``@libp2p/kad-dht`` 16.4.5 server, identify)::

    host a ── NAT router na ──┐ public segment ┌── NAT router nb ── host b
    10.77.1.2   (masquerade)  └─ js node ───── ┘   (masquerade)     10.77.2.2
                              10.77.0.10

- js: the public node, its key in a file so that a restart keeps its peer id;
- a: ``aiop2p serve --bootstrap <js> --auto-relay always --echo`` behind NAT 1;
- b: ``aiop2p send <a's bare peer id> --bootstrap <js>`` behind NAT 2, and
  ``id_probe.py`` there for the figures without process start.

What the js node needs here, and why a's flags differ from the aiop2p lab's:

- The DHT server answers FIND_NODE for a's id from its peer store (a's addresses as a's
  identify reported them, the circuit address through js among them) even though a, a
  DHT client, is in no routing table; ``peerInfoMapper: passthroughMapper`` keeps the
  lab's private addresses in those answers, ``clientMode: false`` makes it a server
  from the start.
- js's AutoNAT v2 server refuses to dial private addresses, and the lab's "public"
  segment is a private range: a would never get a verdict, so it relays regardless
  (``--auto-relay always``) and is a DHT client (``--dht-mode client``, no AutoNAT).
- js's relay keeps its default limits (2 minutes and 128 KiB per circuit): every circuit
  here carries a few hundred bytes for well under a minute, so none is cut.

The js node is then killed (SIGKILL) and, once a has failed to re-reserve
``FAILED_REATTEMPTS`` times (about 15 s), restarted on the same address with the same
key; a, never restarted, re-reserves by itself and b reaches it by id again.  Figures are
printed (``pytest -s``), nothing asserts a speed: the lookup of a's id through the js DHT
node, the first relayed request and the relayed request latency (``id_probe.py``), and
the time from the restart to a's restored reservation and to b's first answer.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from .cli_peers import Daemon, cli_env, send_by_id, send_until_ok
from .nat_topology import PUBLIC, NatLab, nat_unavailable_reason
from .topology import LinePeer

JS_PORT = 4001
A_PORT = 4002
FAILED_REATTEMPTS = 6
"""Failed re-reservations a reports before the js node comes back: its backoff (0.5 s,
doubling) makes this an outage of about 15 s, with a's own events as the clock."""
ROOT = Path(__file__).resolve().parents[2]
PUBLIC_NODE = ROOT / "tests" / "interop" / "js" / "public_node.mjs"
PROBE = Path(__file__).with_name("id_probe.py")
PROBE_REQUESTS = 5
NODE = shutil.which("node")

_REASON = nat_unavailable_reason()
if _REASON is not None:
    print(f"skipping NAT namespace tests: {_REASON}", file=sys.stderr)
pytestmark = [
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
    pytest.mark.interop,
    pytest.mark.timeout(90),
]


async def start_js(lab: NatLab, key: Path) -> LinePeer:
    """The js public node on the lab's public segment (its key made on first start)."""
    assert NODE is not None, "node is required for the js-libp2p lab (tests/interop/js)"
    argv = [
        NODE, str(PUBLIC_NODE), "--listen", f"/ip4/{lab.relay_ip}/tcp/{JS_PORT}",
        "--key", str(key), "--allow", f"/ip4/{PUBLIC}.0/ipcidr/24",
    ]  # fmt: skip
    return await LinePeer.start(lab.relay.command(*argv))


async def kill(peer: LinePeer) -> None:
    peer.proc.send_signal(signal.SIGKILL)
    async with asyncio.timeout(10):
        await peer.proc.wait()
    await peer.stop()


async def probe(lab: NatLab, env: dict[str, str], a_id: str, js_addr: str) -> dict[str, Any]:
    """``id_probe.py`` in b's namespace: lookup through js, then timed requests."""
    argv = [sys.executable, str(PROBE), a_id, js_addr, str(PROBE_REQUESTS)]
    proc = await asyncio.create_subprocess_exec(
        *lab.b.command(*argv),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")
    result: dict[str, Any] = json.loads(out)
    return result


async def test_reach_a_peer_by_id_through_a_js_relay_and_dht_and_after_its_restart(
    lab: NatLab, peers: AsyncExitStack, tmp_path: Path
) -> None:
    env = cli_env(tmp_path)
    js_key = tmp_path / "js.key"
    js = await start_js(lab, js_key)
    peers.push_async_callback(lambda: js.stop())
    js_addr = js.addrs[0]
    assert js_addr == f"/ip4/{lab.relay_ip}/tcp/{JS_PORT}/p2p/{js.peer_id}", js.addrs

    a = await Daemon.start(
        lab.a, env,
        "serve", "--json", "--listen", f"/ip4/{lab.a.addrs['eth0']}/tcp/{A_PORT}",
        "--key", str(tmp_path / "a.key"), "--echo", "--default-rule", "allow", "--no-mdns",
        "--bootstrap", js_addr, "--auto-relay", "always", "--dht-mode", "client",
        "--no-autonat",
    )  # fmt: skip
    peers.push_async_callback(a.stop)
    a_id = (await a.wait_for(lambda line: "peer_id" in line and "identity" in line))["peer_id"]
    added = await a.wait_for(lambda line: line.get("auto_relay") == "added")
    assert added["relay"] == js.peer_id, added
    circuit = f"{js_addr}/p2p-circuit/p2p/{a_id}"
    assert added["address"] == circuit, added
    assert (await js.request({"cmd": "reservations"}))["count"] == 1

    # b knows only a's peer id and the js node.
    answer, first_seconds, attempts = await send_until_ok(lab.b, env, a_id, js_addr, 1)
    assert answer == {"response": {"n": 1}, "peer_id": a_id}, answer
    known = (await js.request({"cmd": "peer_addrs", "peerId": a_id}))["addrs"]
    assert any(addr.startswith(f"{js_addr}/p2p-circuit") for addr in known), known
    print(
        f"\nreach by id through js: first send {first_seconds:.2f} s (after {attempts} "
        "sends; process start, lookup at the js DHT node, dial through the js relay, request)"
    )

    found = await probe(lab, env, a_id, js_addr)
    assert found["echo"] == {"n": 0}, found
    assert found["relayed"] and all(found["relayed"]), found
    assert f"{js_addr}/p2p-circuit" in found["addrs"], found
    latencies = sorted(found["latencies"])
    print(
        f"lookup of a's id at the js DHT node: {found['lookup_seconds'] * 1e3:.1f} ms (1 hop); "
        f"first request (dial through the js relay + request) "
        f"{found['first_seconds'] * 1e3:.1f} ms; relayed request latency median "
        f"{latencies[len(latencies) // 2] * 1e3:.1f} ms (min {latencies[0] * 1e3:.1f}, "
        f"max {latencies[-1] * 1e3:.1f}, {len(latencies)} requests)"
    )

    # The js node dies; a notices, fails to re-reserve, and b cannot reach a.
    before_kill = len(a.lines)
    await kill(js)
    killed = time.monotonic()
    await a.wait_for(lambda line: line.get("reservation") == "lost")
    code, down, _ = await send_by_id(lab.b, env, a_id, js_addr, 2)
    assert code != 0, down

    def enough_failures(_line: dict[str, Any]) -> bool:
        failed = [line for line in a.lines[before_kill:] if "listener_error" in line]
        return len(failed) >= FAILED_REATTEMPTS

    await a.wait_for(enough_failures, 30)

    # Back on the same address with the same key; a is not touched.
    js = await start_js(lab, js_key)
    restarted = time.monotonic()
    assert js.addrs[0] == js_addr, js.addrs
    restored = await a.wait_for(lambda line: line.get("reservation") == "restored", 30)
    assert restored["relay"] == js.peer_id, restored
    restored_seconds = time.monotonic() - restarted
    answer, _, attempts = await send_until_ok(lab.b, env, a_id, js_addr, 3)
    assert answer == {"response": {"n": 3}, "peer_id": a_id}, answer
    reachable_seconds = time.monotonic() - restarted
    assert a.proc.returncode is None
    assert a.count(lambda line: line.get("auto_relay") == "added") == 1, a.lines
    print(
        f"js node restart: a's reservation restored {restored_seconds:.2f} s after the "
        f"restart (attempt {restored['attempts']}); b's first answer by id "
        f"{reachable_seconds:.2f} s after it (after {attempts} sends); outage "
        f"{restarted - killed:.1f} s"
    )
