"""Reach by id on the command line: ``aiop2p relay`` serves the DHT, ``serve --bootstrap``
joins it, and ``send``/``ping``/``perf`` reach the peer by its bare id with
``--bootstrap`` (in-process, see ``harness.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiop2p.identity import KeyPair

from .harness import LOOPBACK, Result, relay, run, serve

pytestmark = pytest.mark.timeout(60)

ATTEMPTS = 20
"""A peer that just joined announces its listen addresses to the DHT server by identify
push, which may still be on its way when the first lookup asks: sends are retried, a
bounded number of times, until one is answered."""


async def until_ok(*args: str) -> Result:
    result = await run(*args)
    for _ in range(ATTEMPTS):
        if result.returncode == 0:
            break
        result = await run(*args)
    return result


async def test_send_ping_perf_to_a_bare_peer_id(tmp_path: Path) -> None:
    async with relay() as relay_daemon:
        seed = relay_daemon.addr
        async with serve(
            "--default-rule", "allow", "--echo", "--listen", LOOPBACK,
            "--bootstrap", seed, "--key", str(tmp_path / "server.key"),
        ) as server:  # fmt: skip
            assert (await server.wait_for("dht_mode"))["dht_mode"] == "client"
            target = server.addrs[0].rsplit("/p2p/", 1)[1]
            sent = await until_ok("send", "--json", target, '{"by": "id"}', "--bootstrap", seed)
            sent.assert_ok()
            assert sent.json_lines()[0] == {"response": {"by": "id"}, "peer_id": target}
            pings = await run("ping", "--json", target, "--bootstrap", seed)
            pings.assert_ok()
            assert pings.json_lines()[0]["peer_id"] == target
            perf = await run(
                "perf", target, "--bootstrap", seed, "--upload", "1024", "--download", "1024"
            )
            perf.assert_ok()


async def test_relay_says_it_serves_the_dht_and_can_stop() -> None:
    async with relay() as relay_daemon:
        line = await relay_daemon.wait_for("dht_mode")
        assert line["dht_mode"] == "server" and line["bootstrap"] == []
    async with relay("--no-dht") as relay_daemon:
        stopped = await relay_daemon.stop()
    assert "dht_mode" not in stopped.stdout


async def test_bare_peer_id_errors_are_one_line() -> None:
    nobody = str(KeyPair.generate().peer_id)
    line = (await run("send", nobody, "1")).assert_one_line_error("send", as_json=False)
    assert "--bootstrap" in line
    line = (await run("ping", nobody)).assert_one_line_error("ping", as_json=False)
    assert "--bootstrap" in line
    async with relay() as relay_daemon:
        result = await run("send", nobody, "1", "--bootstrap", relay_daemon.addr)
        line = result.assert_one_line_error("send", as_json=False)
        assert "unreachable" in line and "DHT lookup" in line
    bad = (await run("send", nobody, "1", "--bootstrap", "/ip4/127.0.0.1/tcp/1")).stderr
    assert "/p2p/<id>" in bad
