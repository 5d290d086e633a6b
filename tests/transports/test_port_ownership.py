"""A listening port belongs to one process (issue 8, item 8).

With port reuse on (hole punching), listeners set ``SO_REUSEPORT`` so that our own
dials can leave from the listen port; the kernel would then also let a second listener
of the same user share the port and split inbound connections between the two.  A
listen on a port that another socket already listens on must fail with
:class:`AddressInUseError`, while dials from the listen port keep working.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from aiop2p.errors import AddressInUseError, ListenError
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node
from aiop2p.services.dcutr import DcutrService
from aiop2p.transports.tcp import TcpTransport

CAP = 30.0
ENTRY_POINT = Path(sys.executable).with_name("aiop2p")
CLI = [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "aiop2p.cli"]


def port_of(addr: Multiaddr) -> int:
    return int(addr.components()[1][1] or 0)


@asynccontextmanager
async def hole_punching_node() -> AsyncIterator[Node]:
    """A node as ``aiop2p serve`` makes it: DCUtR on, so TCP listeners reuse ports."""
    async with Node() as node:
        DcutrService(node)
        assert isinstance(node.transports[0], TcpTransport) and node.transports[0].port_reuse
        yield node


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("/ip4/127.0.0.1", "/ip4/127.0.0.1"),
        ("/ip4/127.0.0.1", "/ip4/0.0.0.0"),
        ("/ip4/0.0.0.0", "/ip4/127.0.0.1"),
        ("/ip6/::1", "/ip6/::1"),
        ("/ip6/::", "/ip6/::1"),
    ],
)
async def test_second_node_on_a_taken_port_fails(first: str, second: str) -> None:
    async with hole_punching_node() as a, hole_punching_node() as b:
        (addr,) = (await a.listen(f"{first}/tcp/0"))[:1]
        port = port_of(addr)
        with pytest.raises(AddressInUseError, match="address already in use"):
            await b.listen(f"{second}/tcp/{port}")
        with pytest.raises(AddressInUseError):
            await a.listen(f"{second}/tcp/{port}")  # the same node twice, too
        assert b.listen_addrs == []


async def test_ip4_and_ip6_wildcards_are_separate_ports() -> None:
    """IPv6 listeners are IPv6-only, so the IPv4 and IPv6 wildcards do not collide."""
    async with hole_punching_node() as a, hole_punching_node() as b:
        port = port_of((await a.listen("/ip4/0.0.0.0/tcp/0"))[0])
        assert await b.listen(f"/ip6/::/tcp/{port}")


async def test_websocket_listener_on_a_taken_port_fails() -> None:
    async with hole_punching_node() as a, hole_punching_node() as b:
        tcp_port = port_of((await a.listen("/ip4/127.0.0.1/tcp/0"))[0])
        with pytest.raises(AddressInUseError):
            await b.listen(f"/ip4/127.0.0.1/tcp/{tcp_port}/ws")
        ws_port = port_of((await a.listen("/ip4/127.0.0.1/tcp/0/ws"))[0])
        with pytest.raises(AddressInUseError):
            await b.listen(f"/ip4/127.0.0.1/tcp/{ws_port}/ws")
        with pytest.raises(AddressInUseError):
            await b.listen(f"/ip4/127.0.0.1/tcp/{ws_port}")


_FOREIGN_LISTENER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if sys.argv[1] == "reuseport":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("kind", ["reuseport", "plain"])
async def test_port_taken_by_another_process(kind: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _FOREIGN_LISTENER,
        kind,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(CAP):
            port = int(await proc.stdout.readline())
        async with hole_punching_node() as node:
            with pytest.raises(AddressInUseError) as info:
                await node.listen(f"/ip4/127.0.0.1/tcp/{port}")
            assert isinstance(info.value, ListenError)
            assert f"/ip4/127.0.0.1/tcp/{port}" in str(info.value)
    finally:
        proc.kill()
        await proc.wait()


async def test_cli_serve_on_a_taken_port_prints_one_line_and_fails(tmp_path: Path) -> None:
    env = dict(os.environ, HOME=str(tmp_path / "home"), XDG_DATA_HOME=str(tmp_path / "xdg"))
    async with hole_punching_node() as node:
        port = port_of((await node.listen("/ip4/127.0.0.1/tcp/0"))[0])
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "serve",
            "--default-rule",
            "reject",  # no secure-default notice on stderr
            "--listen",
            f"/ip4/127.0.0.1/tcp/{port}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            async with asyncio.timeout(CAP):
                # Old behaviour: serve listens too and runs on.  Stop at the first line.
                first = await proc.stdout.readline()
                assert b"listening on" not in first, first
                _, stderr = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode not in (0, 2, None)
        lines = stderr.decode().splitlines()
        assert len(lines) == 1, stderr
        assert lines[0].startswith("aiop2p serve: "), lines
        assert "address already in use" in lines[0], lines
        assert f"/tcp/{port}" in lines[0], lines


async def test_a_later_reuseport_listener_gets_no_connection() -> None:
    """Should a process of the same user slip in with ``SO_REUSEPORT`` anyway (one that
    skips the check, or wins a race with ours), the kernel still hands every new
    connection to our socket: the port is never split."""
    count = 32
    loop = asyncio.get_running_loop()
    async with hole_punching_node() as node:
        port = port_of((await node.listen("/ip4/127.0.0.1/tcp/0"))[0])
        intruder = socket.socket()
        clients: list[socket.socket] = []
        stolen: list[socket.socket] = []
        try:
            intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            intruder.bind(("127.0.0.1", port))
            intruder.listen(count)
            intruder.setblocking(False)
            for _ in range(count):
                client = socket.socket()
                clients.append(client)
                client.setblocking(False)
                await loop.sock_connect(client, ("127.0.0.1", port))
            # Each connection is now queued at the listener the kernel chose for it.
            for _ in range(count):
                try:
                    stolen.append(intruder.accept()[0])
                except BlockingIOError:
                    break
            assert len(stolen) == 0, f"{len(stolen)} of {count} connections went elsewhere"
        finally:
            for sock in [*stolen, *clients, intruder]:
                sock.close()


async def test_relisten_while_dials_from_the_port_are_open() -> None:
    """Our own outbound sockets bound to the port (hole-punch dials) never block it."""
    async with hole_punching_node() as a, Node() as b:
        await b.listen("/ip4/127.0.0.1/tcp/0")
        addr = (await a.listen("/ip4/127.0.0.1/tcp/0"))[0]
        conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
        assert conn.local_addr == addr  # the dial left from the listen port
        assert await a.stop_listening_addr(addr)
        assert await a.listen(addr) == [addr]  # the connection from that port is still up
        assert not conn.is_closed
        other = await b.dial(addr.with_peer_id(a.peer_id), force=True)
        assert other.remote_peer == a.peer_id
