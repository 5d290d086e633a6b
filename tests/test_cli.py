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

from .interop.peers import PeerCommandError, js_command, start_peer
from .netns.topology import Topology, netns_unavailable_reason

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
    lines: list[dict[str, Any]]
    """JSON lines printed before the addresses (the secure-default notice)."""

    @property
    def addr(self) -> str:
        return self.addrs[0]

    @property
    def port(self) -> int:
        return int(self.addr.split("/")[4])

    async def next_line(self) -> dict[str, Any]:
        """The next JSON line on stdout (a prompt, a request, an event)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(RUN_TIMEOUT):
            line = await self.proc.stdout.readline()
        assert line, "serve exited"
        obj: dict[str, Any] = json.loads(line)
        return obj

    async def wait_for(self, key: str) -> dict[str, Any]:
        """Skip lines until one has ``key``."""
        while True:
            line = await self.next_line()
            if key in line:
                return line

    async def answer(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> Result:
        self.proc.send_signal(sig)
        async with asyncio.timeout(RUN_TIMEOUT):
            out, err = await self.proc.communicate()
        assert self.proc.returncode is not None
        return Result(self.proc.returncode, out.decode(), err.decode())


@asynccontextmanager
async def serve(
    env: dict[str, str], *args: str, addrs: int = 1, stdin: int = asyncio.subprocess.DEVNULL
) -> AsyncIterator[Server]:
    """``aiop2p serve --json --no-mdns ARGS``, once it printed ``addrs`` addresses; killed
    at the end.  mDNS stays off: tests must not multicast on the host's interfaces."""
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "serve",
        "--json",
        "--no-mdns",
        *args,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        printed: list[str] = []
        before: list[dict[str, Any]] = []
        async with asyncio.timeout(RUN_TIMEOUT):
            while len(printed) < addrs:
                line = await proc.stdout.readline()
                if not line:
                    err = await proc.stderr.read()
                    pytest.fail(f"serve exited before listening: {err.decode()}")
                obj = json.loads(line)
                if "address" in obj:
                    printed.append(obj["address"])
                else:
                    before.append(obj)
        yield Server(proc, printed, before)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()  # wait() alone hangs on a full, unread stdout pipe


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
    for command in ("id", "serve", "send", "discover", "ping", "perf"):
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
    (tmp_path / "keys").mkdir()  # only the file is created (a missing directory is an error)
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
        *CLI,
        "serve",
        "--no-mdns",
        "--listen",
        LOOPBACK,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        async with asyncio.timeout(RUN_TIMEOUT):
            line = (await proc.stdout.readline()).decode()
            assert line.startswith("listening on /ip4/127.0.0.1/tcp/") and "/p2p/12D3KooW" in line
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
            # Secure by default, said once on stderr, naming the flag that allows requests.
            (notice,) = (await proc.stderr.read()).decode().splitlines()
            assert "rejecting every request" in notice and "--default-rule allow" in notice
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
        serve(env, "--echo", "--default-rule", "allow", "--listen", LOOPBACK) as server,
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
async def test_serve_by_default_does_not_offer_requests(env: dict[str, str]) -> None:
    async with start_peer(js_command()) as js, serve(env, "--listen", LOOPBACK) as server:
        info = await js.command("identify", addr=server.addr)
        assert {PING_PROTOCOL_ID, "/ipfs/id/1.0.0", PERF_PROTOCOL_ID} <= set(info["protocols"])
        with pytest.raises(PeerCommandError):  # the firewall rejects all: not negotiated
            await js.echo(server.addr, b"hello")


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
    line = (await run(env, command, target, *flags)).assert_one_line_error(command, as_json=as_json)
    assert ("127.0.0.1" if case == "unreachable" else "multiaddr") in line


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
async def test_serve_listen_errors_are_one_line(env: dict[str, str], as_json: bool) -> None:
    flags = ["--json"] if as_json else []
    with closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await run(
            env, "serve", "--no-mdns", "--default-rule", "allow", "--listen",
            f"/ip4/127.0.0.1/tcp/{port}", *flags,
        )  # fmt: skip
    assert str(port) in result.assert_one_line_error("serve", as_json=as_json)
    for bad in ("garbage", "/ip4/999.1.1.1/tcp/1", "/ip4/127.0.0.1/udp/1"):
        result = await run(env, "serve", "--no-mdns", "--default-rule", "allow", "--listen", bad,
                           *flags)  # fmt: skip
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


# -- serve behind its firewall, send -----------------------------------------------------


def key_of(tmp_path: Path, name: str) -> tuple[str, str]:
    """A key file and its peer id."""
    path = tmp_path / f"{name}.key"
    return str(path), str(KeyPair.load_or_generate(path).peer_id)


async def test_serve_rejects_every_request_by_default_and_says_so(env: dict[str, str]) -> None:
    async with serve(env, "--echo", "--listen", LOOPBACK) as server:
        (notice,) = server.lines
        assert notice["default_rule"] == "reject"
        assert notice["allow_with"] == "--default-rule allow"
        line = (await run(env, "send", server.addr, '"hello"')).assert_one_line_error(
            "send", as_json=False
        )
        assert "rejected" in line and "/p2p/1.0.0" in line
        result = await run(env, "send", server.addr, '"hello"', "--json")
        result.assert_one_line_error("send", as_json=True)
        assert result.json_lines()[0]["type"] == "UnsupportedProtocolsError"
        stopped = await server.stop()
    stopped.assert_ok()
    assert stopped.stdout == ""  # no request reached the application


async def test_allow_and_echo_round_trip(env: dict[str, str]) -> None:
    async with serve(env, "--default-rule", "allow", "--echo", "--listen", LOOPBACK) as server:
        assert server.lines == []  # a firewall option given: no notice
        text = await run(env, "send", server.addr, '{"op": "ping", "n": [1, 2]}')
        text.assert_ok()
        assert json.loads(text.stdout) == {"op": "ping", "n": [1, 2]}
        as_json = await run(env, "send", server.addr, '"héllo"', "--json")
        as_json.assert_ok()
        peer_id = server.addr.rsplit("/", 1)[1]
        assert as_json.json_lines() == [{"response": "héllo", "peer_id": peer_id}]
        raw = await run(env, "send", server.addr.split("/p2p/")[0], "not json", "--raw")
        raw.assert_ok()
        assert raw.stdout == "not json\n"
        seen = [await server.wait_for("request") for _ in range(3)]
        assert [line["request"] for line in seen] == [
            {"op": "ping", "n": [1, 2]},
            "héllo",
            {"bytes": 8},
        ]
        (await server.stop()).assert_ok()


async def test_serve_without_echo_drops_approved_requests(env: dict[str, str]) -> None:
    async with serve(env, "--default-rule", "allow", "--listen", LOOPBACK) as server:
        line = (await run(env, "send", server.addr, "1")).assert_one_line_error(
            "send", as_json=False
        )
        assert "rejected: the remote closed the stream without answering" in line
        assert (await server.wait_for("request"))["request"] == 1


async def test_reject_peer_and_allow_peer(env: dict[str, str], tmp_path: Path) -> None:
    bad_key, bad_id = key_of(tmp_path, "bad")
    good_key, good_id = key_of(tmp_path, "good")
    args = ["--default-rule", "allow", "--echo", "--reject-peer", bad_id, "--listen", LOOPBACK]
    async with serve(env, *args) as server:
        result = await run(env, "send", server.addr, "1", "--key", bad_key)
        assert "rejected" in result.assert_one_line_error("send", as_json=False)
        (await run(env, "send", server.addr, "2", "--key", good_key)).assert_ok()
    # Only one peer allowed; everyone else rejected (no notice: an option was given).
    async with serve(env, "--echo", "--allow-peer", good_id, "--listen", LOOPBACK) as server:
        assert server.lines == []
        (await run(env, "send", server.addr, "3", "--key", good_key)).assert_ok()
        result = await run(env, "send", server.addr, "4", "--key", bad_key)
        result.assert_one_line_error("send", as_json=False)
        (await run(env, "send", server.addr, "5")).assert_one_line_error("send", as_json=False)


async def test_firewall_file(env: dict[str, str], tmp_path: Path) -> None:
    good_key, good_id = key_of(tmp_path, "good")
    ping_key, ping_id = key_of(tmp_path, "ping")
    rules = tmp_path / "firewall.json"
    rules.write_text(
        json.dumps(
            {"default": "reject", "peers": {good_id: "allow", ping_id: {"restricted": "ping"}}}
        )
    )
    async with serve(env, "--echo", "--firewall", str(rules), "--listen", LOOPBACK) as server:
        assert server.lines == []
        (await run(env, "send", server.addr, '"x"', "--key", good_key)).assert_ok()
        (await run(env, "send", server.addr, '"Ping"', "--key", ping_key)).assert_ok()
        result = await run(env, "send", server.addr, '"x"', "--key", ping_key)
        assert "closed the stream without answering" in result.assert_one_line_error(
            "send", as_json=False
        )
        (await run(env, "send", server.addr, '"x"')).assert_one_line_error("send", as_json=False)
    # The command line overrides the file.
    args = ["--echo", "--firewall", str(rules), "--default-rule", "allow", "--listen", LOOPBACK]
    async with serve(env, *args) as server:
        (await run(env, "send", server.addr, '"x"')).assert_ok()
    for bad in ('{"default": "maybe"}', "not json", json.dumps({"peers": {"nope": "allow"}})):
        rules.write_text(bad)
        result = await run(env, "serve", "--no-mdns", "--firewall", str(rules))
        assert str(rules) in result.assert_one_line_error("serve", as_json=False)
    result = await run(env, "serve", "--no-mdns", "--firewall", str(tmp_path / "missing"))
    result.assert_one_line_error("serve", as_json=False)


async def test_ask_mode_prompts_per_peer_then_per_request(
    env: dict[str, str], tmp_path: Path
) -> None:
    key, peer_id = key_of(tmp_path, "asker")
    args = ["--default-rule", "ask", "--echo", "--listen", LOOPBACK]
    async with serve(env, *args, stdin=asyncio.subprocess.PIPE) as server:
        sending = asyncio.ensure_future(run(env, "send", server.addr, '"first"', "--key", key))
        prompt = await server.wait_for("prompt")
        assert prompt == {
            "prompt": "rule",
            "peer_id": peer_id,
            "choices": ["yes", "no", "ask", "ping"],
        }
        await server.answer("maybe")  # invalid: asked again
        assert (await server.next_line())["prompt_result"] == "invalid"
        await server.answer("ask")
        assert (await server.wait_for("decision"))["rule"] == "ask"
        prompt = await server.wait_for("prompt")
        assert (prompt["prompt"], prompt["request"], prompt["peer_id"]) == (
            "approve",
            "first",
            peer_id,
        )
        await server.answer("yes")
        result = await sending
        result.assert_ok()
        assert result.stdout == '"first"\n'
        # The rule "ask" is kept for the peer: the next request is approved one by one.
        sending = asyncio.ensure_future(run(env, "send", server.addr, '"second"', "--key", key))
        assert (await server.wait_for("prompt"))["request"] == "second"
        await server.answer("no")
        result = await sending
        assert "rejected" in result.assert_one_line_error("send", as_json=False)
        # Three bad answers reject.
        sending = asyncio.ensure_future(run(env, "send", server.addr, '"third"', "--key", key))
        await server.wait_for("prompt")
        for _ in range(3):
            await server.answer("what")
        assert (await server.wait_for("prompt_result"))["prompt_result"] == "invalid"
        assert (await server.wait_for("prompt_result"))["prompt_result"] == "invalid"
        assert (await server.wait_for("prompt_result"))["prompt_result"] == "aborted"
        (await sending).assert_one_line_error("send", as_json=False)


async def test_ask_mode_with_closed_stdin_answers_no(env: dict[str, str]) -> None:
    args = ["--default-rule", "ask", "--echo", "--listen", LOOPBACK]
    async with serve(env, *args) as server:  # stdin is /dev/null
        result = await run(env, "send", server.addr, '"x"')
        assert "rejected" in result.assert_one_line_error("send", as_json=False)
        assert (await server.wait_for("prompt_result"))["prompt_result"] == "eof"


async def test_ask_mode_through_a_terminal(env: dict[str, str], tmp_path: Path) -> None:
    """Text mode on a real pty: the prompt is printed for a person, who types "yes"."""
    import pty

    controller, terminal = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        *CLI, "serve", "--no-mdns", "--default-rule", "ask", "--echo", "--listen", LOOPBACK,
        stdin=terminal, stdout=asyncio.subprocess.PIPE, stderr=terminal, env=env,
    )  # fmt: skip
    os.close(terminal)
    loop = asyncio.get_running_loop()
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(RUN_TIMEOUT):
            addr = (await proc.stdout.readline()).decode().split()[-1]
            sending = asyncio.ensure_future(run(env, "send", addr, '"hi"'))
            seen = b""
            while b"Allow requests from them?: (yes/no/ask/ping)" not in seen:
                seen += await loop.run_in_executor(None, os.read, controller, 4096)
            os.write(controller, b"yes\n")
            result = await sending
        result.assert_ok()
        assert result.stdout == '"hi"\n'
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(controller)


async def test_send_timeout_and_unreachable_are_one_line(env: dict[str, str]) -> None:
    async def never_answer(stream: Stream) -> None:
        await stream.read()  # blocks until the node closes

    async with Node() as node:
        node.set_stream_handler(ECHO_PROTOCOL_ID, never_answer)
        (addr,) = await node.listen(LOOPBACK)
        target = str(addr.with_peer_id(node.peer_id))
        for flags in ([], ["--json"]):
            result = await run(env, "send", target, "1", "--timeout", "0.3", *flags)
            line = result.assert_one_line_error("send", as_json=bool(flags))
            assert "timed out: no response within 0.3 s" in line
    unreachable = f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/{other_peer_id()}"
    for target in (unreachable, unreachable.split("/p2p/")[0]):
        line = (await run(env, "send", target, "1")).assert_one_line_error("send", as_json=False)
        assert "unreachable" in line and "127.0.0.1" in line


@pytest.mark.parametrize(
    "args",
    [
        ["send", "/ip4/127.0.0.1/tcp/1"],
        ["send", "/ip4/127.0.0.1/tcp/1", "1", "--timeout", "0"],
        ["serve", "--default-rule", "maybe"],
        ["discover", "--seconds", "0"],
    ],
)
async def test_new_commands_usage_errors_exit_2(env: dict[str, str], args: list[str]) -> None:
    result = await run(env, *args)
    assert result.returncode == 2 and "usage: aiop2p" in result.stderr


async def test_send_rejects_a_request_that_is_not_json(env: dict[str, str]) -> None:
    result = await run(env, "send", "/ip4/127.0.0.1/tcp/1", "{not json")
    assert result.returncode == 2 and "use --raw" in result.stderr
    assert len(result.stderr.splitlines()) == 1


async def test_serve_persists_its_address_book(env: dict[str, str], tmp_path: Path) -> None:
    default_book = tmp_path / "xdg" / "aiop2p" / "address-book.json"
    async with serve(env, "--listen", LOOPBACK) as server:
        (await server.stop()).assert_ok()
    assert default_book.is_file()
    assert stat.S_IMODE(default_book.stat().st_mode) == 0o600
    json.loads(default_book.read_text())
    default_book.unlink()
    key, _ = key_of(tmp_path, "other")
    async with serve(env, "--listen", LOOPBACK, "--key", key) as server:  # no book with --key
        (await server.stop()).assert_ok()
    assert not default_book.exists()
    book = tmp_path / "book.json"
    args = ["--listen", LOOPBACK, "--key", key, "--address-book", str(book)]
    async with serve(env, *args) as server:
        (await server.stop()).assert_ok()
    assert book.is_file()
    book.write_text("{corrupt")
    result = await run(env, "serve", "--no-mdns", *args)
    assert str(book) in result.assert_one_line_error("serve", as_json=False)


# -- discover (mDNS: only inside network namespaces, never on the host) ------------------

_NETNS = netns_unavailable_reason()


@pytest.mark.skipif(_NETNS is not None, reason=_NETNS or "")
async def test_discover_finds_a_served_peer_on_a_lan(env: dict[str, str]) -> None:
    topo = Topology()
    try:
        topo.add_lan("a", "10.62.1")
        server_host = topo.add_host("s", "a", 1)
        client_host = topo.add_host("c", "a", 2)
        proc = await asyncio.create_subprocess_exec(
            *server_host.command(
                *CLI, "serve", "--json", "--mdns", "--default-rule", "allow", "--echo",
                "--listen", "/ip4/0.0.0.0/tcp/0",
            ),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            served = ""
            async with asyncio.timeout(RUN_TIMEOUT):
                while "/10.62.1.1/" not in served:  # 0.0.0.0 is expanded: lo, then eth0
                    served = json.loads(await proc.stdout.readline())["address"]
            peer_id = served.rsplit("/", 1)[1]
            disc = await asyncio.create_subprocess_exec(
                *client_host.command(*CLI, "discover", "--seconds", "1.5", "--json"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            async with asyncio.timeout(RUN_TIMEOUT):
                out, err = await disc.communicate()
            assert (disc.returncode, err) == (0, b""), err
            lines = [json.loads(line) for line in out.decode().splitlines()]
            assert [line["peer_id"] for line in lines] == [peer_id]
            assert served in lines[0]["addrs"]
            sent = await asyncio.create_subprocess_exec(
                *client_host.command(*CLI, "send", served, '"over the lan"'),
                stdout=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            async with asyncio.timeout(RUN_TIMEOUT):
                out, _ = await sent.communicate()
            assert out == b'"over the lan"\n'
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        topo.destroy()


async def test_relay_daemon_and_serve_through_it(env: dict[str, str], tmp_path: Path) -> None:
    """`aiop2p relay` relays; `serve --relay` listens through it; `send` reaches it there."""
    relay = await asyncio.create_subprocess_exec(
        *CLI,
        "relay",
        "--json",
        "--listen",
        LOOPBACK,
        "--max-circuits",
        "4",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert relay.stdout is not None
        async with asyncio.timeout(RUN_TIMEOUT):
            relay_addr = json.loads(await relay.stdout.readline())["address"]
            limits = json.loads(await relay.stdout.readline())["limits"]
        assert limits["max_circuits"] == 4
        async with serve(
            env,
            "--default-rule",
            "allow",
            "--echo",
            "--listen",
            LOOPBACK,
            "--relay",
            relay_addr,
            "--key",
            str(tmp_path / "server.key"),
            addrs=2,
        ) as server:
            circuit = server.addrs[1]
            assert "/p2p-circuit/p2p/" in circuit and circuit.startswith(relay_addr)
            sent = await run(env, "send", "--json", circuit, '{"via": "relay"}')
            sent.assert_ok()
            assert sent.json_lines()[0]["response"] == {"via": "relay"}
    finally:
        if relay.returncode is None:
            relay.kill()
            await relay.wait()
