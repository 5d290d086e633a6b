"""mDNS discovery between real processes on virtual LANs (Linux network namespaces).

Topology (made by the test, removed afterwards even on failure)::

    LAN A 10.61.1.0/24 (bridge)          LAN B 10.61.2.0/24 (bridge)
      a1 .1   a2 .2   a3 .3   ── router .254 | .254 ──   b1 .1   b2 .2

The router forwards unicast between the LANs, so a peer on B *can* reach LAN A, yet
mDNS (link-local multicast, never routed) must keep discovery on each LAN.  Every peer is
its own process in its own namespace; nothing multicasts on the machine's interfaces.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from .topology import Host, LinePeer, Topology, netns_unavailable_reason

ROOT = Path(__file__).resolve().parents[2]
PY_PEER = Path(__file__).with_name("mdns_peer.py")
JS_PEER = ROOT / "tests" / "interop" / "js" / "mdns_peer.mjs"
DISCOVERY_CAP = 10.0
"""Seconds allowed for two peers to discover each other (seen: well under 1 s)."""
ISOLATION_MARGIN = 2.0
"""Seconds LAN B keeps listening after LAN A's peers found each other (> the 1 s response
spacing, so any leaked announcement would have arrived)."""

_REASON = netns_unavailable_reason()
if _REASON is not None:
    print(f"skipping network-namespace tests: {_REASON}", file=sys.stderr)
pytestmark = [
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
    pytest.mark.timeout(40),
]


@pytest.fixture(scope="module")
def lans() -> Iterator[dict[str, Host]]:
    topo = Topology()
    try:
        topo.add_lan("a", "10.61.1")
        topo.add_lan("b", "10.61.2")
        hosts = {
            "a1": topo.add_host("a1", "a", 1, gateway=254),
            "a2": topo.add_host("a2", "a", 2, gateway=254),
            "a3": topo.add_host("a3", "a", 3, gateway=254),
            "b1": topo.add_host("b1", "b", 1, gateway=254),
            "b2": topo.add_host("b2", "b", 2, gateway=254),
        }
        topo.add_router("rt", {"a": 254, "b": 254})
        yield hosts
    finally:
        topo.destroy()


async def start_py(stack: AsyncExitStack, host: Host) -> LinePeer:
    peer = await LinePeer.start(host.command(sys.executable, str(PY_PEER)))
    stack.push_async_callback(peer.stop)
    return peer


async def start_js(stack: AsyncExitStack, host: Host) -> LinePeer:
    node = shutil.which("node")
    assert node is not None, "node is required for the js-libp2p mDNS test"
    peer = await LinePeer.start(host.command(node, str(JS_PEER)))
    stack.push_async_callback(peer.stop)
    return peer


def discovery_time(peer: LinePeer, other: LinePeer) -> float | None:
    times = [
        m["t"]
        for m in peer.lines
        if m.get("event") == "discovered" and m["peerId"] == other.peer_id
    ]
    return times[0] if times else None


async def test_two_peers_on_a_lan_discover_each_other_and_talk(
    lans: dict[str, Host], peers: AsyncExitStack
) -> None:
    a1 = await start_py(peers, lans["a1"])
    a2 = await start_py(peers, lans["a2"])
    await a1.wait_for(lambda: a2.peer_id in a1.discovered(), DISCOVERY_CAP)
    await a2.wait_for(lambda: a1.peer_id in a2.discovered(), DISCOVERY_CAP)
    # Only LAN addresses are announced (no loopback), with the port the peer listens on.
    assert a1.discovered()[a2.peer_id] == [a for a in a2.addrs if "/10.61.1.2/" in a]
    assert a2.discovered()[a1.peer_id] == [a for a in a1.addrs if "/10.61.1.1/" in a]
    print(f"discovery: a1 saw a2 after {discovery_time(a1, a2)} s, a2 saw a1 after "
          f"{discovery_time(a2, a1)} s (from each one's mDNS start)")  # fmt: skip

    # The discovered address is enough to talk: ping, then an echo request.
    pong = await a1.request({"cmd": "ping", "peerId": a2.peer_id})
    assert pong["ok"], pong
    echo = await a2.request({"cmd": "echo", "peerId": a1.peer_id, "data": "hello over mDNS"})
    assert echo == {**echo, "ok": True, "data": "hello over mDNS"}


async def test_discovery_stays_on_its_lan(lans: dict[str, Host], peers: AsyncExitStack) -> None:
    b1 = await start_py(peers, lans["b1"])
    a1 = await start_py(peers, lans["a1"])
    a2 = await start_py(peers, lans["a2"])
    b2 = await start_py(peers, lans["b2"])
    lan_a = {a1.peer_id, a2.peer_id}

    def b1_saw_lan_a() -> bool:
        return bool(lan_a & b1.discovered().keys())

    await a1.wait_for(lambda: a2.peer_id in a1.discovered(), DISCOVERY_CAP)
    await a2.wait_for(lambda: a1.peer_id in a2.discovered(), DISCOVERY_CAP)
    # Positive control on LAN B: b1 does receive mDNS (from b2, started last).
    await b1.wait_for(lambda: b2.peer_id in b1.discovered(), DISCOVERY_CAP)
    # b1 listened for the whole time LAN A needed; give leaks a bounded margin more.
    with pytest.raises(TimeoutError):
        await b1.wait_for(b1_saw_lan_a, ISOLATION_MARGIN)
    assert set(b1.discovered()) == {b2.peer_id}
    assert set(b2.discovered()) == {b1.peer_id}
    assert not {b1.peer_id, b2.peer_id} & (a1.discovered().keys() | a2.discovered().keys())

    # Not for lack of connectivity: unicast is routed, so b1 reaches a1 given its address.
    a1_lan_addr = [a for a in a1.addrs if "/10.61.1.1/" in a]
    pong = await b1.request({"cmd": "ping", "peerId": a1.peer_id, "addrs": a1_lan_addr})
    assert pong["ok"], pong


async def test_aiop2p_and_js_libp2p_discover_each_other(
    lans: dict[str, Host], peers: AsyncExitStack
) -> None:
    js = await start_js(peers, lans["a3"])
    py = await start_py(peers, lans["a1"])
    await py.wait_for(lambda: js.peer_id in py.discovered(), DISCOVERY_CAP)
    await js.wait_for(lambda: py.peer_id in js.discovered(), DISCOVERY_CAP)
    assert py.discovered()[js.peer_id] == ["/ip4/10.61.1.3/tcp/" + js.addrs[0].split("/")[4]]
    assert "/ip4/10.61.1.1/tcp/" + py.addrs[0].split("/")[4] in js.discovered()[py.peer_id]
    print(f"discovery: aiop2p saw js after {discovery_time(py, js)} s")

    # Each side dials the other through what mDNS told it (js first: it has no connection yet).
    pong = await js.request({"cmd": "ping", "peerId": py.peer_id})
    assert pong["ok"], pong
    pong = await py.request({"cmd": "ping", "peerId": js.peer_id})
    assert pong["ok"], pong


DISCOVER_SCRIPT = """
import asyncio, json
from aiop2p.cli.discover import discover
found = asyncio.run(discover({seconds}))
print(json.dumps({{str(p.peer): [str(a) for a in p.addrs] for p in found}}))
"""


async def test_discover_function_lists_the_lan_peers(
    lans: dict[str, Host], peers: AsyncExitStack
) -> None:
    a1 = await start_py(peers, lans["a1"])
    proc = await asyncio.create_subprocess_exec(
        *lans["a2"].command(sys.executable, "-c", DISCOVER_SCRIPT.format(seconds=1.5)),
        stdout=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(15):
        out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert json.loads(out) == {a1.peer_id: [a for a in a1.addrs if "/10.61.1.1/" in a]}
