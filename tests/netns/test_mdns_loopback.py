"""mDNS over loopback: peers on one host, bound to 127.0.0.1 or with no LAN, find each other.

Every multicast happens inside network namespaces the tests create (nothing on the
machine's own interfaces):

- ``solo``: a namespace with only ``lo`` (up), the "offline laptop";
- ``lan``: a host on a bridged LAN (``eth0``) that also has ``lo``.

A fresh namespace's ``lo`` lacks the ``MULTICAST`` flag, yet Linux loops multicast back
on it all the same; the ``solo`` test runs both without and with
``ip link set lo multicast on`` to show the flag is not needed.

The pure selection policy and the idle warning are tested without any socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiop2p.node import Node
from aiop2p.services import mdns as mdns_mod
from aiop2p.services.mdns import MdnsConfig, MdnsInterface, MdnsService, select_interfaces

from ..helpers import run_capped
from .topology import IP, Host, Topology, netns_unavailable_reason

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "aiop2p.cli"]
RUN_CAP = 30.0
"""Seconds a helper process may run (discovery itself is seen well under 1 s)."""

_REASON = netns_unavailable_reason()
needs_netns = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
pytestmark = pytest.mark.timeout(60)


# -- the selection policy (pure) ---------------------------------------------------------


def iface(
    name: str,
    *,
    loopback: bool = False,
    multicast: bool = True,
    up: bool = True,
    running: bool = True,
    ipv4: str | None = "10.0.0.1",
) -> MdnsInterface:
    return MdnsInterface(name, 1, ipv4, (), up, loopback, multicast, running)


LO = iface("lo", loopback=True, multicast=False, ipv4="127.0.0.1")
ETH = iface("eth0")


def names(chosen: list[MdnsInterface]) -> list[str]:
    return [i.name for i in chosen]


def test_loopback_is_used_when_nothing_else_is_usable() -> None:
    config = MdnsConfig()
    assert names(select_interfaces(config, [LO])) == ["lo"]
    # A LAN interface without carrier or without an address does not count as usable.
    unplugged = iface("wlan0", running=False)
    assert names(select_interfaces(config, [LO, unplugged])) == ["wlan0", "lo"]
    no_addr = iface("eth1", ipv4=None)
    assert names(select_interfaces(config, [LO, no_addr])) == ["eth1", "lo"]
    # With a usable LAN, loopback only when we listen there.
    assert names(select_interfaces(config, [LO, ETH])) == ["eth0"]
    assert names(select_interfaces(config, [LO, ETH], listening_on_loopback=True)) == [
        "eth0",
        "lo",
    ]


def test_loopback_choice_can_be_forced_either_way() -> None:
    assert names(select_interfaces(MdnsConfig(include_loopback=True), [LO, ETH])) == [
        "eth0",
        "lo",
    ]
    never = MdnsConfig(include_loopback=False)
    assert select_interfaces(never, [LO]) == []
    assert names(select_interfaces(never, [LO, ETH], listening_on_loopback=True)) == ["eth0"]
    # Explicit names win over everything.
    assert names(select_interfaces(MdnsConfig(interfaces=("lo",)), [LO, ETH])) == ["lo"]


def test_a_down_loopback_is_never_used() -> None:
    assert select_interfaces(MdnsConfig(), [iface("lo", loopback=True, up=False)]) == []


async def test_idle_warning_names_the_fix(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(mdns_mod, "list_interfaces", lambda: [])  # no socket is opened
    caplog.set_level(logging.WARNING, logger="aiop2p.services.mdns")
    async with Node() as node, MdnsService(node) as service:
        assert service.interfaces == []
    (record,) = [r for r in caplog.records if "idle" in r.getMessage()]
    text = record.getMessage()
    assert "--mdns-interface" in text and "MdnsConfig(interfaces=" in text, text


# -- namespaces ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hosts() -> Iterator[dict[str, Host]]:
    if _REASON is not None:
        pytest.skip(_REASON)
    topo = Topology()
    try:
        solo = Host(topo._namespace("solo"))  # lo only (Topology brings it up)
        topo.add_lan("l", "10.63.1")
        lan = topo.add_host("lan", "l", 1)
        lan2 = topo.add_host("lan2", "l", 2)
        yield {"solo": solo, "lan": lan, "lan2": lan2}
    finally:
        topo.destroy()


def lo_flags(host: Host) -> str:
    assert IP is not None
    out = subprocess.run(
        [IP, "-n", host.namespace, "link", "show", "lo"], capture_output=True, text=True, check=True
    ).stdout
    return out.split("<", 1)[1].split(">", 1)[0]


def set_lo_multicast(host: Host, on: bool) -> None:
    assert IP is not None
    state = "on" if on else "off"
    subprocess.run([IP, "-n", host.namespace, "link", "set", "lo", "multicast", state], check=True)


TWO_NETWORKS = """
import asyncio, json
from aiop2p.events import PeerDiscovered
from aiop2p.network import Network
from aiop2p.network.firewall import FirewallRules

async def main():
    def net():
        return Network(firewall=FirewallRules.allow_all(), dcutr=None, relay_client=False)
    result = {}
    async with net() as a, net() as b:
        for n in (a, b):
            await n.start_listening("/ip4/127.0.0.1/tcp/0")
        async def discovers(n, peer):
            async for event in n.events():
                if isinstance(event, PeerDiscovered) and event.peer == peer:
                    return [str(x) for x in event.addrs]
        try:
            async with asyncio.timeout(%(cap)s):
                seen = await asyncio.gather(discovers(a, b.peer_id), discovers(b, a.peer_id))
        except TimeoutError:
            print(json.dumps({"discovered": False}))
            return
        async def serve():
            request = await b.requests().receive()
            await request.respond("pong " + request.request)
        server = asyncio.ensure_future(serve())
        answer = await a.send_request(b.peer_id, "ping")
        server.cancel()
        print(json.dumps({"discovered": True, "a_sees_b": seen[0], "b_sees_a": seen[1],
                          "b_addrs": [str(x) for x in b._node.listen_addrs], "answer": answer}))

asyncio.run(main())
"""


async def run_in(host: Host, *argv: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return await run_capped(host.command(*argv), RUN_CAP, env=env, stdin=None)


async def two_networks(host: Host, cap: float = 5.0) -> dict[str, Any]:
    code, out, err = await run_in(host, sys.executable, "-c", TWO_NETWORKS % {"cap": cap})
    assert code == 0, err[-3000:]
    result: dict[str, Any] = json.loads(out)
    return result


@needs_netns
@pytest.mark.parametrize("multicast_flag", [False, True], ids=["lo-plain", "lo-multicast"])
async def test_offline_host_two_networks_discover_each_other_over_lo(
    hosts: dict[str, Host], multicast_flag: bool
) -> None:
    solo = hosts["solo"]
    set_lo_multicast(solo, multicast_flag)
    assert ("MULTICAST" in lo_flags(solo).split(",")) is multicast_flag
    result = await two_networks(solo)
    assert result["discovered"], "no discovery over loopback"
    assert result["a_sees_b"] == [a.split("/p2p/")[0] for a in result["b_addrs"]]
    assert all(a.startswith("/ip4/127.0.0.1/tcp/") for a in result["a_sees_b"])
    assert result["answer"] == "pong ping"  # the discovered address is enough to talk


@needs_netns
async def test_lan_host_listening_on_loopback_also_uses_lo(hosts: dict[str, Host]) -> None:
    """eth0 is usable, but both peers listen on 127.0.0.1 only: they meet on lo."""
    result = await two_networks(hosts["lan"])
    assert result["discovered"], "peers bound to 127.0.0.1 on a LAN host did not meet"
    assert all(a.startswith("/ip4/127.0.0.1/tcp/") for a in result["b_sees_a"])


async def serve_json(host: Host, *args: str) -> tuple[asyncio.subprocess.Process, str]:
    """``aiop2p serve --json ARGS`` in ``host``; returns the process and its first address."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = await asyncio.create_subprocess_exec(
        *host.command(*CLI, "serve", "--json", "--default-rule", "allow", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(RUN_CAP):
            obj = json.loads(await proc.stdout.readline())
            if "identity" in obj:  # serve names its identity first
                obj = json.loads(await proc.stdout.readline())
        address: str = obj["address"]
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc, address


async def discover_in(host: Host, *args: str) -> list[dict[str, Any]]:
    code, out, err = await run_in(host, *CLI, "discover", "--json", "--seconds", "1.5", *args)
    assert (code, err) == (0, ""), err
    return [json.loads(line) for line in out.splitlines()]


@needs_netns
async def test_cli_serve_and_discover_on_loopback(hosts: dict[str, Host]) -> None:
    lan, solo = hosts["lan"], hosts["solo"]
    # On a LAN host, an explicit --mdns-interface lo on both sides.
    proc, served = await serve_json(
        lan, "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns-interface", "lo"
    )
    try:
        found = await discover_in(lan, "--mdns-interface", "lo")
        assert [(f["peer_id"], f["addrs"]) for f in found] == [(served.rsplit("/", 1)[1], [served])]
    finally:
        proc.kill()
        await proc.wait()
    # Nor on the LAN host: serve joins lo once it listens there, discover asks on lo too.
    proc, served = await serve_json(lan, "--listen", "/ip4/127.0.0.1/tcp/0")
    try:
        found = await discover_in(lan)
        assert [f["addrs"] for f in found] == [[served]]
    finally:
        proc.kill()
        await proc.wait()
    # On the offline host, no flag is needed on either side.
    proc, served = await serve_json(solo, "--listen", "/ip4/127.0.0.1/tcp/0")
    try:
        found = await discover_in(solo)
        assert [f["addrs"] for f in found] == [[served]]
    finally:
        proc.kill()
        await proc.wait()


@needs_netns
async def test_cli_unknown_mdns_interface_is_a_clear_error(hosts: dict[str, Host]) -> None:
    code, _, err = await run_in(
        hosts["solo"], *CLI, "discover", "--seconds", "0.2", "--mdns-interface", "nosuch0"
    )
    assert code != 0 and "nosuch0" in err and "Traceback" not in err, err
    print(f"error shown: {err.strip()}")


SOCKETS_SCRIPT = """
import json, select, socket, sys, time
from aiop2p.services.mdns import _ipv4_socket, list_interfaces
ifaces = {i.name: i for i in list_interfaces()}
socks = {name: _ipv4_socket(ifaces[name], 5353) for name in ("lo", "eth0")}  # lo first
print("ready", flush=True)
got = {name: 0 for name in socks}
deadline = time.monotonic() + %(cap)s
while sum(got.values()) < %(count)s and time.monotonic() < deadline:
    ready, _, _ = select.select(list(socks.values()), [], [], 0.1)
    for name, sock in socks.items():
        if sock in ready:
            sock.recv(100)
            got[name] += 1
print(json.dumps(got))
"""

SENDER_SCRIPT = """
import socket
for _ in range(%(count)s):  # each from its own source port: the kernel hashes on it
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("%(src)s"))
        s.sendto(b"hello", ("224.0.0.251", 5353))
"""


@needs_netns
async def test_lan_traffic_reaches_the_lan_socket_not_the_loopback_one(
    hosts: dict[str, Host],
) -> None:
    """One process, one socket per interface on port 5353: each gets its own traffic.

    With ``SO_REUSEPORT`` on Linux, multicast from another host went to whichever socket
    of the reuse group the kernel's hash picked, here the loopback one, so a LAN peer's
    queries and answers were lost when loopback was in use as well.
    """
    lan = hosts["lan"]
    count = 16
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    receiver = await asyncio.create_subprocess_exec(
        *lan.command(sys.executable, "-c", SOCKETS_SCRIPT % {"cap": 5.0, "count": count}),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert receiver.stdout is not None
        async with asyncio.timeout(RUN_CAP):
            assert await receiver.stdout.readline() == b"ready\n"
            other = hosts["lan2"]
            code, _, err = await run_in(
                other, sys.executable, "-c", SENDER_SCRIPT % {"count": count, "src": "10.63.1.2"}
            )
            assert code == 0, err
            got = json.loads(await receiver.stdout.readline())
    finally:
        if receiver.returncode is None:
            receiver.kill()
        await receiver.wait()
    assert got == {"lo": 0, "eth0": count}
