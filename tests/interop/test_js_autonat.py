"""AutoNAT v2 interop with js-libp2p ``@libp2p/autonat-v2`` (pinned in js/package-lock.json),
both ways, in a throw-away network namespace.

js servers refuse to dial private and loopback addresses and js clients never ask about
them, so the test gives a namespace of its own two public addresses on its ``lo`` (no
other interface: nothing leaves it).  js runs the DHT and AutoNAT on ``11.0.0.1``;
``aiop2p serve --bootstrap js --dht-mode auto`` listens on ``11.0.0.2``.  aiop2p asks js
about ``11.0.0.2`` (its connection comes from ``11.0.0.1``, the source the kernel picks
for a local destination, so js first asks for dial data), js dials back and aiop2p
reports the address reachable and turns into a DHT server; js asks aiop2p about its own
address, aiop2p dials back and js marks it verified.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..netns.topology import IP, netns_unavailable_reason
from .peers import JS_PEER, PeerProcess, eventually, start_peer

_REASON = netns_unavailable_reason()
pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
    pytest.mark.timeout(120),
]

JS_KAD_PEER = JS_PEER.parent / "kad_peer.mjs"
JS_IP, OUR_IP = "11.0.0.1", "11.0.0.2"
CAP = 60.0


@pytest.fixture
def namespace() -> Iterator[str]:
    assert IP is not None
    name = f"aiop2p-autonat-{secrets.token_hex(3)}"
    subprocess.run([IP, "netns", "add", name], check=True)
    try:
        for args in (
            ["link", "set", "lo", "up"],
            ["addr", "add", f"{JS_IP}/32", "dev", "lo"],
            ["addr", "add", f"{OUR_IP}/32", "dev", "lo"],
        ):
            subprocess.run([IP, "-n", name, *args], check=True)
        yield name
    finally:
        subprocess.run([IP, "netns", "del", name], check=False)


def in_namespace(namespace: str, *argv: str) -> list[str]:
    assert IP is not None
    return [IP, "netns", "exec", namespace, *argv]


async def next_json(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    async with asyncio.timeout(CAP):
        while True:
            line = await proc.stdout.readline()
            assert line, "aiop2p serve exited"
            if line.startswith(b"{"):
                obj: dict[str, Any] = json.loads(line)
                return obj


async def js_verified(js: PeerProcess) -> bool:
    addrs = (await js.command("addresses"))["addrs"]
    return any(a["addr"].startswith(f"/ip4/{JS_IP}/tcp/") and a["verified"] for a in addrs)


async def test_autonat_both_ways_with_js(namespace: str, tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "node is required for the js-libp2p interop tests"
    js_cmd = [node, str(JS_KAD_PEER), "--autonat", "--listen", f"/ip4/{JS_IP}/tcp/0"]
    async with start_peer(in_namespace(namespace, *js_cmd)) as js:
        serve = in_namespace(
            namespace, sys.executable, "-m", "aiop2p", "serve", "--json", "--no-mdns",
            "--key", str(tmp_path / "key"), "--listen", f"/ip4/{OUR_IP}/tcp/0",
            "--bootstrap", js.addr, "--dht-mode", "auto", "--autonat-confidence", "1",
            "--auto-relay", "off",
        )  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *serve,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            for _ in range(100):  # bounded: serve prints a few lines before the verdict
                line = await next_json(proc)
                if "reachable" in line:
                    break
            assert line["reachable"] is True, line
            assert line["addr"].startswith(f"/ip4/{OUR_IP}/tcp/")
            assert line["dht_mode"] == "server"
            await eventually(lambda: js_verified(js), cap=CAP)
        finally:
            proc.terminate()
            async with asyncio.timeout(10):
                await proc.wait()
