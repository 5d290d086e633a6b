"""``aiop2p relay``, and the commands that reach a peer through it (circuit addresses),
in-process (see ``harness.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import KIB, LOOPBACK, daemon, free_port, relay, run, serve

pytestmark = pytest.mark.timeout(60)


async def test_relay_daemon_and_serve_through_it(tmp_path: Path) -> None:
    """`aiop2p relay` relays; `serve --relay` listens through it; `send` reaches it there."""
    async with relay("--max-circuits", "4") as relay_daemon:
        limits = (await relay_daemon.next_line())["limits"]
        assert limits["max_circuits"] == 4
        async with serve(
            "--default-rule", "allow", "--echo", "--listen", LOOPBACK,
            "--relay", relay_daemon.addr, "--key", str(tmp_path / "server.key"), addrs=2,
        ) as server:  # fmt: skip
            circuit = server.addrs[1]
            assert "/p2p-circuit/p2p/" in circuit and circuit.startswith(relay_daemon.addr)
            sent = await run("send", "--json", circuit, '{"via": "relay"}')
            sent.assert_ok()
            assert sent.json_lines()[0]["response"] == {"via": "relay"}


async def test_serve_is_reachable_again_after_the_relay_restarts(tmp_path: Path) -> None:
    """The relay stops and a new one starts with its key on its address: `serve --relay`
    says it lost the reservation, re-reserves by itself, says so, and `send` reaches it
    through the circuit again (no restart of serve)."""
    relay_args = (
        "relay", "--json", "--key", str(tmp_path / "relay.key"),
        "--listen", f"/ip4/127.0.0.1/tcp/{free_port()}",
    )  # fmt: skip
    async with daemon(*relay_args) as first:
        relay_addr = first.addr
        async with serve(
            "--default-rule", "allow", "--echo", "--listen", LOOPBACK,
            "--relay", relay_addr, "--key", str(tmp_path / "server.key"), addrs=2,
        ) as server:  # fmt: skip
            circuit = server.addrs[1]
            (await run("send", "--json", circuit, '"before"')).assert_ok()
            (await first.stop()).assert_ok()
            lost = await server.wait_for("reservation")
            assert lost["reservation"] == "lost" and relay_addr.endswith(lost["relay"])
            async with daemon(*relay_args) as second:
                assert second.addr == relay_addr
                restored = await server.wait_for("reservation")
                assert restored["reservation"] == "restored", restored
                assert restored["attempts"] >= 1
                sent = await run("send", "--json", circuit, '"after"')
                sent.assert_ok()
                assert sent.json_lines()[0]["response"] == "after"


async def test_ping_and_perf_dial_a_circuit_address(tmp_path: Path) -> None:
    """`ping` and `perf` reach a peer listening through a relay, as `send` does."""
    async with (
        relay() as relay_daemon,
        serve("--listen", LOOPBACK, "--relay", relay_daemon.addr, "--key",
              str(tmp_path / "server.key"), addrs=2) as server,
    ):  # fmt: skip
        circuit = server.addrs[1]
        assert "/p2p-circuit/p2p/" in circuit
        pings = await run("ping", circuit, "-n", "2", "--json")
        pings.assert_ok()
        assert [p["ok"] for p in pings.json_lines()] == [True, True]
        # Small transfers: the relay's default data limit is 128 KiB per direction.
        perf = await run(
            "perf", circuit, "--upload", str(16 * KIB), "--download", str(16 * KIB), "--json"
        )
        perf.assert_ok()
        (line,) = perf.json_lines()
        assert (line["upload_bytes"], line["download_bytes"]) == (16 * KIB, 16 * KIB)


async def test_relay_and_serve_default_keys_are_distinct(tmp_path: Path) -> None:
    """The relay guide on one machine: `relay` and `serve`, both with their default key."""
    async with relay() as relay_daemon:
        relay_addr = relay_daemon.addr
        relay_key = tmp_path / "xdg" / "aiop2p" / "relay.key"
        assert relay_key.is_file()
        async with serve("--listen", LOOPBACK, "--relay", relay_addr, addrs=2) as server:
            serve_id = (await run("id")).stdout.strip()
            assert server.addrs[0].endswith(f"/p2p/{serve_id}")
            assert not relay_addr.endswith(f"/p2p/{serve_id}")
            assert server.addrs[1].startswith(relay_addr + "/p2p-circuit/p2p/")
    # `id --key` names the relay's identity too.
    relay_id = (await run("id", "--key", str(relay_key))).stdout.strip()
    assert relay_addr.endswith(f"/p2p/{relay_id}")


async def test_circuit_address_without_target_fails_at_once() -> None:
    """`…/p2p/RELAY/p2p-circuit` names no peer: every command says so, without waiting
    out a timeout (timeouts are set far beyond the run cap)."""
    async with relay() as relay_daemon:
        circuit = relay_daemon.addr + "/p2p-circuit"
        for args in (
            ["send", circuit, "1", "--timeout", "1000"],
            ["ping", circuit, "--timeout", "1000"],
            ["perf", circuit],
        ):
            result = await run(*args)
            line = result.assert_one_line_error(args[0], as_json=False)
            assert "/p2p/<target>" in line, line
