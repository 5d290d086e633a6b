"""``aiop2p id``, ``ping``, ``perf`` and ``discover``, argument parsing and one-line errors
(``aiop2p.cli.main``), in-process (see ``harness.py``)."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from aiop2p._aio.stream import Stream
from aiop2p.identity import KeyPair
from aiop2p.node import Node
from aiop2p.protocols.ping import PING_PROTOCOL_ID

from ..interop.peers import js_command, start_peer
from ..netns.topology import Topology, netns_unavailable_reason
from .harness import (
    CLI,
    LOOPBACK,
    MIB,
    RUN_TIMEOUT,
    free_port,
    other_peer_id,
    run,
    serve,
)

pytestmark = pytest.mark.timeout(60)


# -- id ----------------------------------------------------------------------------------


async def test_id_creates_the_key_once_under_xdg_data_home(tmp_path: Path) -> None:
    key_file = tmp_path / "xdg" / "aiop2p" / "identity.key"
    first = await run("id")
    first.assert_ok()
    peer_id = first.stdout.strip()
    assert peer_id.startswith("12D3KooW") and first.stdout == peer_id + "\n"
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = await run("id", "--json")
    second.assert_ok()
    assert second.json_lines() == [{"peer_id": peer_id}]
    assert not (tmp_path / "home").exists()  # nothing written outside XDG_DATA_HOME


async def test_id_defaults_to_home_without_xdg_data_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_DATA_HOME")
    first, second = await run("id"), await run("id")
    first.assert_ok()
    assert first.stdout == second.stdout
    key_file = tmp_path / "home" / ".local" / "share" / "aiop2p" / "identity.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


async def test_id_with_a_key_file_uses_that_key(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()  # only the file is created (a missing directory is an error)
    key_file = tmp_path / "keys" / "a.key"
    first = await run("id", "--key", str(key_file))
    first.assert_ok()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (await run("id", "--key", str(key_file))).stdout == first.stdout
    assert str(KeyPair.load(key_file).peer_id) == first.stdout.strip()
    assert (await run("id")).stdout != first.stdout  # the default key is another one


@pytest.mark.parametrize("as_json", [False, True])
async def test_id_with_an_unreadable_key_file_fails_in_one_line(
    tmp_path: Path, as_json: bool
) -> None:
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"not a key")
    flags = ["--json"] if as_json else []
    (await run("id", "--key", str(bad), *flags)).assert_one_line_error("id", as_json=as_json)
    result = await run("id", "--key", str(tmp_path), *flags)  # a directory
    result.assert_one_line_error("id", as_json=as_json)
    assert bad.read_bytes() == b"not a key"  # never overwritten


@pytest.mark.parametrize("command", ["id", "serve", "relay", "send"])
async def test_key_in_a_missing_directory_is_an_error(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    key = missing / "a.key"
    args = {
        "id": [],
        "serve": ["--no-mdns", "--listen", LOOPBACK],
        "relay": ["--listen", LOOPBACK],
        "send": ["/ip4/127.0.0.1/tcp/1", "1"],
    }[command]
    result = await run(command, *args, "--key", str(key))
    line = result.assert_one_line_error(command, as_json=False)
    assert str(missing) in line and "does not exist" in line
    assert not (tmp_path / "no").exists()


# -- ping, perf --------------------------------------------------------------------------


async def test_ping_and_perf_a_served_peer(tmp_path: Path) -> None:
    key = str(tmp_path / "server.key")
    peer_id = (await run("id", "--key", key)).stdout.strip()
    async with serve("--echo", "--listen", LOOPBACK, "--key", key) as server:
        assert server.addr.startswith("/ip4/127.0.0.1/tcp/")
        assert server.addr.endswith(f"/p2p/{peer_id}")

        pings = await run("ping", server.addr, "-n", "3", "--json")
        pings.assert_ok()
        lines = pings.json_lines()
        assert [line["seq"] for line in lines] == [0, 1, 2]
        for line in lines:
            assert line["ok"] is True and line["peer_id"] == peer_id and line["rtt_ms"] > 0

        perf = await run(
            "perf", server.addr, "--upload", str(MIB), "--download", str(MIB), "--json"
        )
        perf.assert_ok()
        (line,) = perf.json_lines()
        assert (line["upload_bytes"], line["download_bytes"]) == (MIB, MIB)
        assert line["upload_mib_s"] > 0 and line["download_mib_s"] > 0

        # Text output, and an address without /p2p (any peer answering there will do).
        text = await run("ping", server.addr.split("/p2p/")[0])
        text.assert_ok()
        assert text.stdout.startswith("ping 0: ") and peer_id in text.stdout
        text = await run("perf", server.addr, "--upload", "0", "--download", "1000")
        text.assert_ok()
        assert text.stdout.startswith("upload ") and "MiB/s" in text.stdout

        stopped = await server.stop()
        stopped.assert_ok()
        assert stopped.stdout == ""


@pytest.mark.interop
async def test_ping_and_perf_a_js_peer() -> None:
    async with start_peer(js_command()) as js:
        pings = await run("ping", js.addr, "-n", "2", "--json")
        pings.assert_ok()
        assert [(p["ok"], p["peer_id"]) for p in pings.json_lines()] == [(True, js.peer_id)] * 2
        perf = await run("perf", js.addr, "--upload", str(MIB), "--download", str(MIB), "--json")
        perf.assert_ok()
        (line,) = perf.json_lines()
        assert (line["upload_bytes"], line["download_bytes"]) == (MIB, MIB)
        assert line["upload_mib_s"] > 0 and line["download_mib_s"] > 0


async def test_ping_exit_status_is_one_unless_every_ping_is_answered() -> None:
    async def never_answer(stream: Stream) -> None:
        await stream.read()  # no echo: blocks until the node closes

    async with Node() as node:
        node.remove_stream_handler(PING_PROTOCOL_ID)
        (addr,) = await node.listen(LOOPBACK)
        target = str(addr.with_peer_id(node.peer_id))
        result = await run("ping", target, "-n", "2", "--json")
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr == "aiop2p ping: 0 of 2 pings answered\n"
        lines = result.json_lines()
        assert [(p["seq"], p["ok"]) for p in lines] == [(0, False), (1, False)]
        assert all(isinstance(p["error"], str) for p in lines)

        node.set_stream_handler(PING_PROTOCOL_ID, never_answer)
        result = await run("ping", target, "-n", "2", "--timeout", "0.1")
        assert result.returncode == 1
        assert result.stdout.splitlines() == [
            "ping 0: no answer (timed out)",
            "ping 1: no answer (timed out)",
        ]
        assert result.stderr == "aiop2p ping: 0 of 2 pings answered\n"


ERROR_CASES = ["unreachable", "bad-ip4", "garbage", "wrong-peer-id"]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("command", ["ping", "perf"])
@pytest.mark.parametrize("case", ERROR_CASES)
async def test_dial_errors_are_one_line(case: str, command: str, as_json: bool) -> None:
    flags = ["--json"] if as_json else []
    if case == "wrong-peer-id":
        wrong = other_peer_id()
        async with serve("--listen", LOOPBACK) as server:
            target = f"/ip4/127.0.0.1/tcp/{server.port}/p2p/{wrong}"
            result = await run(command, target, *flags)
            (await server.stop()).assert_ok()  # the failed dial did not hurt the server
        line = result.assert_one_line_error(command, as_json=as_json)
        assert wrong in line
        return
    target = {
        "unreachable": f"/ip4/127.0.0.1/tcp/{free_port()}",
        "bad-ip4": "/ip4/999.1.1.1/tcp/1",
        "garbage": "garbage",
    }[case]
    line = (await run(command, target, *flags)).assert_one_line_error(command, as_json=as_json)
    assert ("127.0.0.1" if case == "unreachable" else "multiaddr") in line


# -- usage -------------------------------------------------------------------------------


async def test_help_lists_every_command() -> None:
    result = await run("--help")
    result.assert_ok()
    for command in ("id", "serve", "relay", "send", "discover", "ping", "perf"):
        assert command in result.stdout


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
        ["send", "/ip4/127.0.0.1/tcp/1"],
        ["send", "/ip4/127.0.0.1/tcp/1", "1", "--timeout", "0"],
        ["serve", "--default-rule", "maybe"],
        ["discover", "--seconds", "0"],
    ],
)
async def test_usage_errors_exit_2(args: list[str]) -> None:
    result = await run(*args)
    assert result.returncode == 2 and "usage: aiop2p" in result.stderr
    assert "Traceback" not in result.stderr


# -- discover (mDNS: only inside network namespaces, never on the host) ------------------

_NETNS = netns_unavailable_reason()


@pytest.mark.skipif(_NETNS is not None, reason=_NETNS or "")
async def test_discover_finds_a_served_peer_on_a_lan() -> None:
    """Processes, since each host of the LAN is a network namespace."""
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
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            served = ""
            async with asyncio.timeout(RUN_TIMEOUT):
                while "/10.62.1.1/" not in served:  # 0.0.0.0 is expanded: lo, then eth0
                    # (after the line that names the identity)
                    served = json.loads(await proc.stdout.readline()).get("address", "")
            peer_id = served.rsplit("/", 1)[1]
            disc = await asyncio.create_subprocess_exec(
                *client_host.command(*CLI, "discover", "--seconds", "1.5", "--json"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            async with asyncio.timeout(RUN_TIMEOUT):
                out, err = await disc.communicate()
            assert (disc.returncode, err) == (0, b""), err
            lines = [json.loads(line) for line in out.decode().splitlines()]
            assert [line["peer_id"] for line in lines] == [peer_id]
            assert served in lines[0]["addrs"]
            sent = await asyncio.create_subprocess_exec(
                *client_host.command(*CLI, "send", served, '"over the lan"'),
                stdout=asyncio.subprocess.PIPE,
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
