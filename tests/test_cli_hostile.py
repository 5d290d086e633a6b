"""The ``aiop2p`` command as a new user and a hostile peer meet it (issue 8, items 5 and 10):
every dialing command dials circuit addresses, the relay has its own identity, a key in a
missing directory is an error, a circuit address without a target fails at once, and
neither an unread stdout nor a peer that never reads its responses stalls ``serve``.

Runs the real command, as ``tests/test_cli.py`` does (HOME and XDG_DATA_HOME in
``tmp_path``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from aiop2p._aio.stream import Stream
from aiop2p.config import NodeConfig
from aiop2p.identity import PeerId
from aiop2p.multiaddr import Multiaddr
from aiop2p.network import DEFAULT_PROTOCOL, Network
from aiop2p.network.codecs import RawCodec
from aiop2p.network.firewall import FirewallRules
from aiop2p.node import Node
from aiop2p.protocols.yamux import YamuxConfig

from .helpers import wait_for
from .test_cli import CLI, LOOPBACK, RUN_TIMEOUT, env, run, serve

__all__ = ["env"]  # the fixture, re-exported for the tests below

pytestmark = pytest.mark.timeout(60)

KIB = 1 << 10


@asynccontextmanager
async def relay_daemon(env: dict[str, str], *args: str) -> AsyncIterator[str]:
    """``aiop2p relay --json --listen LOOPBACK ARGS``; yields its address (with /p2p)."""
    proc = await asyncio.create_subprocess_exec(
        *CLI, "relay", "--json", "--listen", LOOPBACK, *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        async with asyncio.timeout(RUN_TIMEOUT):
            line = await proc.stdout.readline()
            if not line:
                pytest.fail(f"relay exited: {(await proc.stderr.read()).decode()}")
            yield json.loads(line)["address"]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


@asynccontextmanager
async def client_of(
    addr: str, **options: Any
) -> AsyncIterator[tuple[Network[bytes, bytes], PeerId]]:
    """A raw-bytes network that knows ``addr``; yields it and the peer there."""
    target = Multiaddr(addr)
    peer = target.peer_id
    assert peer is not None
    net: Network[bytes, bytes] = Network(
        firewall=FirewallRules.allow_none(), codec=RawCodec(), mdns=None, **options
    )
    async with net:
        await net.add_address(peer, target.without_peer_id())
        yield net, peer


# -- item 10: dialing, identities, key paths ---------------------------------------------


async def test_ping_and_perf_dial_a_circuit_address(env: dict[str, str], tmp_path: Path) -> None:
    """`ping` and `perf` reach a peer listening through a relay, as `send` does."""
    async with (
        relay_daemon(env) as relay_addr,
        serve(env, "--listen", LOOPBACK, "--relay", relay_addr, "--key",
              str(tmp_path / "server.key"), addrs=2) as server,
    ):  # fmt: skip
        circuit = server.addrs[1]
        assert "/p2p-circuit/p2p/" in circuit
        pings = await run(env, "ping", circuit, "-n", "2", "--json")
        pings.assert_ok()
        assert [p["ok"] for p in pings.json_lines()] == [True, True]
        # Small transfers: the relay's default data limit is 128 KiB per direction.
        perf = await run(
            env, "perf", circuit, "--upload", str(16 * KIB), "--download", str(16 * KIB), "--json"
        )
        perf.assert_ok()
        (line,) = perf.json_lines()
        assert (line["upload_bytes"], line["download_bytes"]) == (16 * KIB, 16 * KIB)


async def test_relay_and_serve_default_keys_are_distinct(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The relay guide on one machine: `relay` and `serve`, both with their default key."""
    async with relay_daemon(env) as relay_addr:
        relay_key = tmp_path / "xdg" / "aiop2p" / "relay.key"
        assert relay_key.is_file()
        async with serve(env, "--listen", LOOPBACK, "--relay", relay_addr, addrs=2) as server:
            serve_id = (await run(env, "id")).stdout.strip()
            assert server.addrs[0].endswith(f"/p2p/{serve_id}")
            assert not relay_addr.endswith(f"/p2p/{serve_id}")
            assert server.addrs[1].startswith(relay_addr + "/p2p-circuit/p2p/")
    # `id --key` names the relay's identity too.
    relay_id = (await run(env, "id", "--key", str(relay_key))).stdout.strip()
    assert relay_addr.endswith(f"/p2p/{relay_id}")


@pytest.mark.parametrize("command", ["id", "serve", "relay", "send"])
async def test_key_in_a_missing_directory_is_an_error(
    env: dict[str, str], tmp_path: Path, command: str
) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    key = missing / "a.key"
    args = {
        "id": [],
        "serve": ["--no-mdns", "--listen", LOOPBACK],
        "relay": ["--listen", LOOPBACK],
        "send": ["/ip4/127.0.0.1/tcp/1", "1"],
    }[command]
    result = await run(env, command, *args, "--key", str(key))
    line = result.assert_one_line_error(command, as_json=False)
    assert str(missing) in line and "does not exist" in line
    assert not (tmp_path / "no").exists()


async def test_circuit_address_without_target_fails_at_once(env: dict[str, str]) -> None:
    """`…/p2p/RELAY/p2p-circuit` names no peer: every command says so, without waiting
    out a timeout (timeouts are set far beyond the run cap)."""
    async with relay_daemon(env) as relay_addr:
        circuit = relay_addr + "/p2p-circuit"
        for args in (
            ["send", circuit, "1", "--timeout", "1000"],
            ["ping", circuit, "--timeout", "1000"],
            ["perf", circuit],
        ):
            result = await run(env, *args)
            line = result.assert_one_line_error(args[0], as_json=False)
            assert "/p2p/<target>" in line, line


# -- serve under load --------------------------------------------------------------------


async def test_serve_never_blocks_on_an_unread_stdout(env: dict[str, str]) -> None:
    """Nobody reads serve's stdout after its address: every request is still answered."""
    requests, in_flight, size = 400, 16, 8 * KIB  # ~3.2 MiB of output: far above a pipe
    async with serve(env, "--default-rule", "allow", "--echo", "--listen", LOOPBACK) as server:
        async with client_of(server.addr) as (client, peer):
            slots = asyncio.Semaphore(in_flight)
            answered = 0

            async def one(i: int) -> None:
                nonlocal answered
                body = json.dumps({"i": i, "pad": "x" * size}).encode()
                async with slots:
                    assert await client.send_request(peer, body) == body
                answered += 1

            async with asyncio.timeout(RUN_TIMEOUT), asyncio.TaskGroup() as group:
                for i in range(requests):
                    group.create_task(one(i))
            assert answered == requests
        # Read at last: every request line is there, or counted as dropped.
        stopped = await server.stop()
        stopped.assert_ok()
        lines = stopped.json_lines()
        shown = sum(1 for line in lines if "request_id" in line)
        dropped = sum(line.get("dropped_lines", 0) for line in lines)
        assert dropped > 0 and shown + dropped == requests, (shown, dropped)


async def test_a_peer_that_never_reads_does_not_stall_others(env: dict[str, str]) -> None:
    """One raw client sends large requests and never reads the echoes (its streams grant
    no more than the initial 256 KiB window); another client's requests are answered."""
    hog_requests, hog_size = 4, 768 * KIB  # each echo is 3x the hog's receive window
    async with serve(env, "--default-rule", "allow", "--echo", "--listen", LOOPBACK) as server:
        assert server.proc.stdout is not None
        seen: list[dict[str, Any]] = []

        async def read_stdout() -> None:
            assert server.proc.stdout is not None
            while line := await server.proc.stdout.readline():
                seen.append(json.loads(line))

        reader = asyncio.create_task(read_stdout())
        small = YamuxConfig(receive_window_size=256 * KIB)
        try:
            async with Node(config=replace(NodeConfig(), yamux=small)) as hog:
                streams: list[Stream] = []
                for _ in range(hog_requests):
                    stream = await hog.new_stream(server.addr, DEFAULT_PROTOCOL)
                    await stream.write_message(b"h" * hog_size)
                    streams.append(stream)  # never read
                await wait_for(lambda: any(s.get("size") == hog_size for s in seen), RUN_TIMEOUT)
                # Half serve's 10 s request timeout: answered only if serve does not wait
                # for the hog's echoes (each blocks until serve gives up on it).
                async with client_of(server.addr, request_timeout=5.0) as (other, peer):
                    for i in range(5):
                        body = f"other {i}".encode()
                        assert await other.send_request(peer, body) == body
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
