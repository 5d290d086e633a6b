"""AutoNAT and automatic relays on the command line: ``serve`` says what AutoNAT found
and switches the DHT mode (``--dht-mode auto``), and listens through its bootstrap
relay with ``--auto-relay always`` (in-process, see ``harness.py``)."""

from __future__ import annotations

import pytest

from .harness import LOOPBACK, relay, run, serve

pytestmark = pytest.mark.timeout(60)


async def test_serve_reports_reachability_and_becomes_a_dht_server() -> None:
    async with relay("--autonat-private-addrs") as relay_daemon, serve(
        "--listen", LOOPBACK, "--bootstrap", relay_daemon.addr, "--dht-mode", "auto",
        "--autonat-private-addrs", "--autonat-confidence", "1",
    ) as server:  # fmt: skip
        line = await server.wait_for("reachable")
        assert line["reachable"] is True and line["servers"] == 1
        assert line["addr"] == server.addr.rsplit("/p2p/", 1)[0]
        assert line["dht_mode"] == "server"


async def test_serve_listens_through_its_bootstrap_relay() -> None:
    async with relay() as relay_daemon:
        relay_id = relay_daemon.addr.rsplit("/p2p/", 1)[1]
        async with serve(
            "--listen", LOOPBACK, "--bootstrap", relay_daemon.addr, "--auto-relay", "always",
        ) as server:  # fmt: skip
            line = await server.wait_for("auto_relay")
            assert line["auto_relay"] == "always" and line["max_relays"] == 2
            added = await server.wait_for("auto_relay")
            assert added["auto_relay"] == "added" and added["relay"] == relay_id
            assert added["address"].startswith(relay_daemon.addr + "/p2p-circuit")


async def test_auto_needs_autonat() -> None:
    for flags in (["--auto-relay", "auto"], ["--dht-mode", "auto"]):
        result = await run(
            "serve", "--no-mdns", "--listen", LOOPBACK, "--no-autonat", "--bootstrap",
            "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
            *flags,
        )  # fmt: skip
        assert "follows AutoNAT" in result.assert_one_line_error("serve", as_json=False)
