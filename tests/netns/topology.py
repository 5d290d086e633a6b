"""Throw-away LANs made of Linux network namespaces, for multi-host tests.

A LAN is a "switch" namespace holding a bridge; each host is a namespace whose ``eth0``
is one end of a veth pair, the other end plugged into the bridge.  Every veth is created
directly inside its namespaces (``ip -n``), addresses exist only there, and multicast is
routed to ``eth0`` inside the host namespace: nothing touches the machine's own
interfaces.  Names carry a random suffix so parallel runs do not collide, and
:meth:`Topology.destroy` removes everything (deleting a namespace deletes its links).

An optional router namespace joins two LANs and forwards unicast between them, so a test
can show that peers reach each other by unicast yet mDNS (link-local multicast) stays on
its own LAN.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

IP = shutil.which("ip")


def netns_unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None if they can."""
    if IP is None:
        return "the `ip` command (iproute2) is missing"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"aiop2p-probe-{secrets.token_hex(3)}"
    made = subprocess.run([IP, "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run([IP, "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    assert IP is not None
    done = subprocess.run([IP, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Host:
    namespace: str
    addrs: dict[str, str] = field(default_factory=dict)
    """Interface name → IPv4 address."""

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this host's namespace."""
        assert IP is not None
        return [IP, "netns", "exec", self.namespace, *argv]


class Topology:
    """Namespaces, bridges and veths created by one test; :meth:`destroy` undoes all."""

    def __init__(self) -> None:
        self.suffix = secrets.token_hex(3)
        self.namespaces: list[str] = []
        self.lans: dict[str, tuple[str, str]] = {}
        """LAN name → (switch namespace, subnet prefix like ``10.61.1``)."""
        self._ports = 0

    def _namespace(self, role: str) -> str:
        name = f"aiop2p-{self.suffix}-{role}"
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def add_lan(self, name: str, prefix: str) -> None:
        """A LAN ``name`` with subnet ``<prefix>.0/24`` (e.g. prefix ``10.61.1``)."""
        switch = self._namespace(f"sw{name}")
        _ip("-n", switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", switch, "link", "set", "br0", "up")
        self.lans[name] = (switch, prefix)

    def _plug(self, namespace: str, ifname: str, lan: str, ip: str) -> None:
        switch = self.lans[lan][0]
        self._ports += 1
        port = f"p{self._ports}"
        _ip("-n", namespace, "link", "add", ifname, "type", "veth", "peer", "name", port,
            "netns", switch)  # fmt: skip
        _ip("-n", switch, "link", "set", port, "master", "br0", "up")
        _ip("-n", namespace, "addr", "add", f"{ip}/24", "dev", ifname)
        _ip("-n", namespace, "link", "set", ifname, "up", "multicast", "on")

    def add_host(self, name: str, lan: str, last_octet: int, *, gateway: int | None = None) -> Host:
        """A host on ``lan`` at ``<prefix>.<last_octet>``, multicast routed to its eth0."""
        ns = self._namespace(name)
        ip = f"{self.lans[lan][1]}.{last_octet}"
        self._plug(ns, "eth0", lan, ip)
        _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
        if gateway is not None:
            _ip("-n", ns, "route", "add", "default", "via", f"{self.lans[lan][1]}.{gateway}")
        return Host(ns, {"eth0": ip})

    def add_router(self, name: str, lans: dict[str, int]) -> Host:
        """A namespace with one interface per LAN (``<prefix>.<octet>``) forwarding unicast."""
        ns = self._namespace(name)
        host = Host(ns)
        for i, (lan, octet) in enumerate(lans.items()):
            ip = f"{self.lans[lan][1]}.{octet}"
            self._plug(ns, f"eth{i}", lan, ip)
            host.addrs[f"eth{i}"] = ip
        assert IP is not None
        subprocess.run(
            [IP, "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True
        )
        return host

    def destroy(self) -> None:
        """Delete every namespace made (their veths and bridges go with them)."""
        for ns in reversed(self.namespaces):
            assert IP is not None
            subprocess.run([IP, "netns", "del", ns], capture_output=True)
        self.namespaces.clear()


class LinePeer:
    """A peer process speaking JSON lines: a ``ready`` line, then events and answers."""

    def __init__(self, proc: asyncio.subprocess.Process, ready: dict[str, Any]) -> None:
        self.proc = proc
        self.peer_id: str = ready["peerId"]
        self.addrs: list[str] = ready["addrs"]
        self.lines: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, command: list[str], start_timeout: float = 20.0) -> LinePeer:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None if os.environ.get("INTEROP_VERBOSE") else asyncio.subprocess.DEVNULL,
        )
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(start_timeout):
                line = await proc.stdout.readline()
            ready = json.loads(line)
            assert ready.get("event") == "ready", ready
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        return cls(proc, ready)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                continue
            self._changed.set()
        self._changed.set()

    def discovered(self) -> dict[str, list[str]]:
        """Peer id → addresses of every ``discovered`` line so far (latest wins)."""
        return {m["peerId"]: m["addrs"] for m in self.lines if m.get("event") == "discovered"}

    async def wait_for(self, predicate: Callable[[], bool], cap: float) -> None:
        """Wait until ``predicate()`` holds, re-checked on each new line; TimeoutError after cap."""
        async with asyncio.timeout(cap):
            while not predicate():
                if self._reader.done():
                    raise AssertionError(f"peer exited: {self.lines}")
                self._changed.clear()
                await self._changed.wait()

    async def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        await self.proc.stdin.drain()

    async def request(self, command: dict[str, Any], cap: float = 10.0) -> dict[str, Any]:
        """Send a command with a fresh id and wait for the line answering it."""
        ident = secrets.randbelow(1 << 30)
        await self.send({**command, "id": ident})
        await self.wait_for(lambda: any(m.get("id") == ident for m in self.lines), cap)
        return next(m for m in self.lines if m.get("id") == ident)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            try:
                await self.send({"cmd": "quit"})
                async with asyncio.timeout(5):
                    await self.proc.wait()
            except (TimeoutError, ConnectionError, RuntimeError):
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
