"""The ``aiop2p`` command, run as real processes (the console entry point of the venv).

HOME and XDG_DATA_HOME point into ``tmp_path``, so the user's own key is never touched.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aiop2p._aio.stream import Stream
from aiop2p.cli.main import ECHO_PROTOCOL_ID
from aiop2p.identity import KeyPair
from aiop2p.node import Node
from aiop2p.protocols.perf import PERF_PROTOCOL_ID
from aiop2p.protocols.ping import PING_PROTOCOL_ID

from .interop.peers import js_command, start_peer

pytestmark = pytest.mark.timeout(60)

ENTRY_POINT = Path(sys.executable).with_name("aiop2p")
CLI = [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "aiop2p.cli"]
LOOPBACK = "/ip4/127.0.0.1/tcp/0"
RUN_TIMEOUT = 30.0
MIB = 1 << 20


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        objects = [json.loads(line) for line in self.stdout.splitlines()]
        assert all(isinstance(o, dict) for o in objects), self.stdout
        return objects

    def assert_ok(self) -> None:
        assert (self.returncode, self.stderr) == (0, ""), self

    def assert_one_line_error(self, command: str, *, as_json: bool) -> str:
        """Non-zero exit, one ``aiop2p <command>:`` line on stderr; the line is returned."""
        assert self.returncode not in (0, 2), self  # 2 is argparse's usage error
        assert "Traceback" not in self.stderr, self.stderr
        lines = self.stderr.splitlines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith(f"aiop2p {command}: "), lines[0]
        if as_json:
            (obj,) = self.json_lines()
            assert isinstance(obj["error"], str) and obj["error"], obj
            assert isinstance(obj["type"], str), obj
        else:
            assert self.stdout == "", self.stdout
        return lines[0]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["HOME"] = str(tmp_path / "home")
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    return env


async def run(env: dict[str, str], *args: str) -> Result:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


@dataclass
class Server:
    proc: asyncio.subprocess.Process
    addrs: list[str]

    @property
    def addr(self) -> str:
        return self.addrs[0]

    @property
    def port(self) -> int:
        return int(self.addr.split("/")[4])

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> Result:
        self.proc.send_signal(sig)
        async with asyncio.timeout(RUN_TIMEOUT):
            out, err = await self.proc.communicate()
        assert self.proc.returncode is not None
        return Result(self.proc.returncode, out.decode(), err.decode())


@asynccontextmanager
async def serve(env: dict[str, str], *args: str, addrs: int = 1) -> AsyncIterator[Server]:
    """``aiop2p serve --json ARGS``, once it printed ``addrs`` addresses; killed at the end."""
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "serve",
        "--json",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        printed: list[str] = []
        async with asyncio.timeout(RUN_TIMEOUT):
            while len(printed) < addrs:
                line = await proc.stdout.readline()
                if not line:
                    err = await proc.stderr.read()
                    pytest.fail(f"serve exited before listening: {err.decode()}")
                printed.append(json.loads(line)["address"])
        yield Server(proc, printed)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def other_peer_id() -> str:
    return str(KeyPair.generate().peer_id)


# -- id ----------------------------------------------------------------------------------


async def test_entry_point_is_installed(env: dict[str, str]) -> None:
    assert ENTRY_POINT.exists(), "the console script `aiop2p` is missing from the venv"
    result = await run(env, "--help")
    result.assert_ok()
    for command in ("id", "serve", "ping", "perf"):
        assert command in result.stdout


async def test_id_creates_the_key_once_under_xdg_data_home(
    env: dict[str, str], tmp_path: Path
) -> None:
    key_file = tmp_path / "xdg" / "aiop2p" / "identity.key"
    first = await run(env, "id")
    first.assert_ok()
    peer_id = first.stdout.strip()
    assert peer_id.startswith("12D3KooW") and first.stdout == peer_id + "\n"
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = await run(env, "id", "--json")
    second.assert_ok()
    assert second.json_lines() == [{"peer_id": peer_id}]
    assert not (tmp_path / "home").exists()  # nothing written outside XDG_DATA_HOME


async def test_id_defaults_to_home_without_xdg_data_home(
    env: dict[str, str], tmp_path: Path
) -> None:
    del env["XDG_DATA_HOME"]
    first, second = await run(env, "id"), await run(env, "id")
    first.assert_ok()
    assert first.stdout == second.stdout
    key_file = tmp_path / "home" / ".local" / "share" / "aiop2p" / "identity.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


async def test_id_with_key_file(env: dict[str, str], tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "a.key"
    first = await run(env, "id", "--key", str(key_file))
    first.assert_ok()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (await run(env, "id", "--key", str(key_file))).stdout == first.stdout
    assert str(KeyPair.load(key_file).peer_id) == first.stdout.strip()
    assert (await run(env, "id")).stdout != first.stdout  # the default key is another one


@pytest.mark.parametrize("as_json", [False, True])
async def test_id_with_unreadable_key_file(
    env: dict[str, str], tmp_path: Path, as_json: bool
) -> None:
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"not a key")
    flags = ["--json"] if as_json else []
    (await run(env, "id", "--key", str(bad), *flags)).assert_one_line_error("id", as_json=as_json)
    result = await run(env, "id", "--key", str(tmp_path), *flags)  # a directory
    result.assert_one_line_error("id", as_json=as_json)
    assert bad.read_bytes() == b"not a key"  # never overwritten


# -- serve, ping, perf -------------------------------------------------------------------


async def test_serve_then_ping_and_perf_it(env: dict[str, str], tmp_path: Path) -> None:
    key = str(tmp_path / "server.key")
    peer_id = (await run(env, "id", "--key", key)).stdout.strip()
    async with serve(env, "--echo", "--listen", LOOPBACK, "--key", key) as server:
        assert server.addr.startswith("/ip4/127.0.0.1/tcp/")
        assert server.addr.endswith(f"/p2p/{peer_id}")

        pings = await run(env, "ping", server.addr, "-n", "3", "--json")
        pings.assert_ok()
        lines = pings.json_lines()
        assert [line["seq"] for line in lines] == [0, 1, 2]
        for line in lines:
            assert line["ok"] is True and line["peer_id"] == peer_id and line["rtt_ms"] > 0

        perf = await run(
            env, "perf", server.addr, "--upload", str(MIB), "--download", str(MIB), "--json"
        )
        perf.assert_ok()
        (line,) = perf.json_lines()
        assert (line["upload_bytes"], line["download_bytes"]) == (MIB, MIB)
        assert line["upload_mib_s"] > 0 and line["download_mib_s"] > 0

        # Text output, and an address without /p2p (any peer answering there will do).
        text = await run(env, "ping", server.addr.split("/p2p/")[0])
        text.assert_ok()
        assert text.stdout.startswith("ping 0: ") and peer_id in text.stdout
        text = await run(env, "perf", server.addr, "--upload", "0", "--download", "1000")
        text.assert_ok()
        assert text.stdout.startswith("upload ") and "MiB/s" in text.stdout

        stopped = await server.stop()
        stopped.assert_ok()
        assert stopped.stdout == ""


async def test_serve_uses_the_default_key_and_every_listen_address(
    env: dict[str, str],
) -> None:
    peer_id = (await run(env, "id")).stdout.strip()
    async with serve(env, "--listen", LOOPBACK, "--listen", LOOPBACK, addrs=2) as server:
        assert all(a.endswith(f"/p2p/{peer_id}") for a in server.addrs)
        assert len({a.split("/")[4] for a in server.addrs}) == 2
        (await run(env, "ping", server.addrs[1])).assert_ok()
        (await server.stop()).assert_ok()


async def test_serve_text_output(env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *CLI, "serve", "--listen", LOOPBACK, stdout=asyncio.subprocess.PIPE, env=env
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(RUN_TIMEOUT):
            line = (await proc.stdout.readline()).decode()
            assert line.startswith("listening on /ip4/127.0.0.1/tcp/") and "/p2p/12D3KooW" in line
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serve_stops_cleanly_on_signal(env: dict[str, str], sig: signal.Signals) -> None:
    async with serve(env, "--echo", "--listen", LOOPBACK) as server:
        stopped = await server.stop(sig)
    stopped.assert_ok()


# -- against any libp2p peer (js-libp2p) -------------------------------------------------


@pytest.mark.interop
async def test_js_peer_echoes_pings_and_identifies_served_peer(env: dict[str, str]) -> None:
    async with (
        start_peer(js_command()) as js,
        serve(env, "--echo", "--listen", LOOPBACK) as server,
    ):
        for payload in (b"x", b"hello from js", bytes(range(256)) * 1000):
            assert await js.echo(server.addr, payload) == payload
        assert (await js.command("ping", addr=server.addr))["rtt_ms"] >= 0
        info = await js.command("identify", addr=server.addr)
        assert info["peerId"] == server.addr.rsplit("/", 1)[1]
        assert {PING_PROTOCOL_ID, "/ipfs/id/1.0.0", PERF_PROTOCOL_ID, ECHO_PROTOCOL_ID} <= set(
            info["protocols"]
        )
        # Stopping while js is still connected is clean too.
        (await server.stop(signal.SIGINT)).assert_ok()


@pytest.mark.interop
async def test_serve_without_echo_does_not_offer_it(env: dict[str, str]) -> None:
    async with start_peer(js_command()) as js, serve(env, "--listen", LOOPBACK) as server:
        info = await js.command("identify", addr=server.addr)
        assert {PING_PROTOCOL_ID, "/ipfs/id/1.0.0", PERF_PROTOCOL_ID} <= set(info["protocols"])
        assert ECHO_PROTOCOL_ID not in info["protocols"]


@pytest.mark.interop
async def test_ping_and_perf_a_js_peer(env: dict[str, str]) -> None:
    async with start_peer(js_command()) as js:
        pings = await run(env, "ping", js.addr, "-n", "2", "--json")
        pings.assert_ok()
        assert [(p["ok"], p["peer_id"]) for p in pings.json_lines()] == [(True, js.peer_id)] * 2
        perf = await run(
            env, "perf", js.addr, "--upload", str(MIB), "--download", str(MIB), "--json"
        )
        perf.assert_ok()
        (line,) = perf.json_lines()
        assert (line["upload_bytes"], line["download_bytes"]) == (MIB, MIB)
        assert line["upload_mib_s"] > 0 and line["download_mib_s"] > 0


# -- unanswered pings --------------------------------------------------------------------


async def test_ping_exit_status_is_one_unless_every_ping_is_answered(
    env: dict[str, str],
) -> None:
    async def never_answer(stream: Stream) -> None:
        await stream.read()  # no echo: blocks until the node closes

    async with Node() as node:
        node.remove_stream_handler(PING_PROTOCOL_ID)
        (addr,) = await node.listen(LOOPBACK)
        target = str(addr.with_peer_id(node.peer_id))
        result = await run(env, "ping", target, "-n", "2", "--json")
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr == "aiop2p ping: 0 of 2 pings answered\n"
        lines = result.json_lines()
        assert [(p["seq"], p["ok"]) for p in lines] == [(0, False), (1, False)]
        assert all(isinstance(p["error"], str) for p in lines)

        node.set_stream_handler(PING_PROTOCOL_ID, never_answer)
        result = await run(env, "ping", target, "-n", "2", "--timeout", "0.1")
        assert result.returncode == 1
        assert result.stdout.splitlines() == [
            "ping 0: no answer (timed out)",
            "ping 1: no answer (timed out)",
        ]
        assert result.stderr == "aiop2p ping: 0 of 2 pings answered\n"


# -- errors ------------------------------------------------------------------------------


ERROR_CASES = ["unreachable", "bad-ip4", "garbage", "wrong-peer-id"]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("command", ["ping", "perf"])
@pytest.mark.parametrize("case", ERROR_CASES)
async def test_dial_errors_are_one_line(
    env: dict[str, str], case: str, command: str, as_json: bool
) -> None:
    flags = ["--json"] if as_json else []
    if case == "wrong-peer-id":
        wrong = other_peer_id()
        async with serve(env, "--listen", LOOPBACK) as server:
            target = f"/ip4/127.0.0.1/tcp/{server.port}/p2p/{wrong}"
            result = await run(env, command, target, *flags)
            (await server.stop()).assert_ok()  # the failed dial did not hurt the server
        line = result.assert_one_line_error(command, as_json=as_json)
        assert wrong in line
        return
    target = {
        "unreachable": f"/ip4/127.0.0.1/tcp/{free_port()}",
        "bad-ip4": "/ip4/999.1.1.1/tcp/1",
        "garbage": "garbage",
    }[case]
    line = (await run(env, command, target, *flags)).assert_one_line_error(
        command, as_json=as_json
    )
    assert ("127.0.0.1" if case == "unreachable" else "multiaddr") in line


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
async def test_serve_listen_errors_are_one_line(env: dict[str, str], as_json: bool) -> None:
    flags = ["--json"] if as_json else []
    with closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await run(env, "serve", "--listen", f"/ip4/127.0.0.1/tcp/{port}", *flags)
    assert str(port) in result.assert_one_line_error("serve", as_json=as_json)
    for bad in ("garbage", "/ip4/999.1.1.1/tcp/1", "/ip4/127.0.0.1/udp/1"):
        result = await run(env, "serve", "--listen", bad, *flags)
        result.assert_one_line_error("serve", as_json=as_json)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["ping"],
        ["ping", "/ip4/127.0.0.1/tcp/1", "-n", "0"],
        ["ping", "/ip4/127.0.0.1/tcp/1", "--timeout", "0"],
        ["perf", "/ip4/127.0.0.1/tcp/1", "--upload", "-1"],
        ["perf", "/ip4/127.0.0.1/tcp/1", "--download", str(1 << 64)],
        ["frobnicate"],
    ],
)
async def test_usage_errors_exit_2(env: dict[str, str], args: list[str]) -> None:
    result = await run(env, *args)
    assert result.returncode == 2 and "usage: aiop2p" in result.stderr
    assert "Traceback" not in result.stderr
