"""``serve --punch-private-addrs``: hole punching (DCUtR) may use private and loopback
addresses, as a lab or LAN whose "public" side is a private range needs (in-process, see
``harness.py``; the punch through real NATs is ``tests/netns/test_cli_punch.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiop2p import DcutrConfig, Multiaddr

from .harness import LOOPBACK, client_of, relay, serve

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("private", [True, False])
async def test_serve_punches_to_loopback_only_when_told(tmp_path: Path, private: bool) -> None:
    """A peer reaches ``serve`` through a relay; serve (the DCUtR initiator) dials the
    peer's loopback address directly with the flag, and without it says it has nothing
    to punch with and stays relayed."""
    flags = ["--punch-private-addrs"] if private else []
    async with relay() as relay_daemon, serve(
        "--default-rule", "allow", "--echo", "--listen", LOOPBACK, "--relay", relay_daemon.addr,
        "--key", str(tmp_path / "server.key"), *flags, addrs=2,
    ) as server:  # fmt: skip
        circuit = server.addrs[1]
        async with client_of(circuit, dcutr=DcutrConfig(allow_loopback_addrs=True)) as (
            net,
            peer,
        ):
            await net.start_listening(Multiaddr(LOOPBACK))
            assert await net.send_request(peer, b"via relay") == b"via relay"
            outcome = await server.wait_for("hole_punch")
            if private:
                assert outcome["hole_punch"] == "succeeded", outcome
                assert outcome["addr"].startswith("/ip4/127.0.0.1/tcp/"), outcome
                assert outcome["attempts"] == 0  # the direct dial of the advertised address
                assert await net.send_request(peer, b"direct") == b"direct"
                conns = net._node.connections_to(peer)
                assert conns and not conns[0].is_relayed, conns
            else:
                assert outcome["hole_punch"] == "started" and outcome["initiator"], outcome
                outcome = await server.wait_for("hole_punch")
                assert outcome["hole_punch"] == "failed", outcome
                assert "no observed address" in outcome["error"], outcome
                assert await net.send_request(peer, b"still") == b"still"
                assert all(c.is_relayed for c in net._node.connections_to(peer))
