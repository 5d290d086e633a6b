"""``aiop2p serve`` behind its firewall, answered by ``aiop2p send``, in-process (see
``harness.py``); the prompts of ``--default-rule ask`` are in ``test_firewall_prompt.py``."""

from __future__ import annotations

import asyncio
import io
import json
import shlex
import socket
import stat
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from aiop2p._aio.stream import Stream
from aiop2p.cli._common import CommandIO, Output
from aiop2p.cli.main import ECHO_PROTOCOL_ID
from aiop2p.cli.serve import _report_connectivity
from aiop2p.config import NodeConfig
from aiop2p.errors import DialError
from aiop2p.events import (
    DirectConnectionUpgraded,
    HolePunchFailed,
    HolePunchStarted,
    NetworkEvent,
    RelayReservationLost,
    RelayReservationRestored,
)
from aiop2p.identity import KeyPair
from aiop2p.multiaddr import Multiaddr
from aiop2p.network import DEFAULT_PROTOCOL
from aiop2p.node import Node
from aiop2p.protocols.perf import PERF_PROTOCOL_ID
from aiop2p.protocols.ping import PING_PROTOCOL_ID
from aiop2p.protocols.yamux import YamuxConfig

from ..helpers import wait_for
from ..interop.peers import PeerCommandError, js_command, start_peer
from .harness import KIB, LOOPBACK, RUN_TIMEOUT, client_of, daemon, key_of, run, serve

pytestmark = pytest.mark.timeout(60)


# -- listening ---------------------------------------------------------------------------


async def test_serve_uses_the_default_key_and_every_listen_address() -> None:
    peer_id = (await run("id")).stdout.strip()
    async with serve("--listen", LOOPBACK, "--listen", LOOPBACK, addrs=2) as server:
        assert all(a.endswith(f"/p2p/{peer_id}") for a in server.addrs)
        assert len({a.split("/")[4] for a in server.addrs}) == 2
        (await run("ping", server.addrs[1])).assert_ok()
        (await server.stop()).assert_ok()


async def test_serve_text_output_is_addresses_on_stdout_and_the_notices_on_stderr(
    tmp_path: Path,
) -> None:
    peer_id = (await run("id")).stdout.strip()
    async with daemon("serve", "--no-mdns", "--listen", LOOPBACK, addrs=0) as server:
        async with asyncio.timeout(RUN_TIMEOUT):
            line = (await server.stdout.readline()).decode()
        assert line.startswith("listening on /ip4/127.0.0.1/tcp/") and "/p2p/12D3KooW" in line
        stopped = await server.stop()
    assert (stopped.returncode, stopped.stdout) == (0, "")
    address = line.split()[-1]
    identity, notice, try_it, ping = stopped.stderr.splitlines()
    key_file = tmp_path / "xdg" / "aiop2p" / "identity.key"
    assert identity == f"aiop2p serve: identity {peer_id}, stored in {key_file}"
    # Secure by default, said once, naming the flag that allows requests: no send to try.
    assert "rejecting every request" in notice and "--default-rule allow" in notice
    assert try_it == "aiop2p serve: try it from another terminal:"
    assert ping == f"  aiop2p ping {address}"


@pytest.mark.parametrize("rule", ["allow", "ask"])
async def test_serve_first_lines_give_commands_that_work(tmp_path: Path, rule: str) -> None:
    """What ``make run`` shows first: the identity file, the addresses, and commands that
    work as printed (the ``send`` one only when the firewall may let it through)."""
    key, peer_id = key_of(tmp_path, "server")
    args = ["serve", "--no-mdns", "--echo", "--default-rule", rule, "--key", key]
    async with daemon(*args, "--listen", LOOPBACK, addrs=0) as server:
        async with asyncio.timeout(RUN_TIMEOUT):
            first = [(await server.stderr.readline()).decode() for _ in range(4)]
        identity, try_it, ping, send = (line.rstrip("\n") for line in first)
        assert identity == f"aiop2p serve: identity {peer_id}, stored in {key}"
        assert try_it == "aiop2p serve: try it from another terminal:"
        command = shlex.split(ping)
        assert command[:2] == ["aiop2p", "ping"] and command[2].endswith(f"/p2p/{peer_id}")
        (await run(*command[1:])).assert_ok()
        hint = "   (answer the question here)"
        assert send.endswith(hint) is (rule == "ask")
        command = shlex.split(send.removesuffix(hint))
        assert command[:2] == ["aiop2p", "send"] and command[2:] == [command[2], '"hello"']
        if rule == "allow":
            sent = await run(*command[1:])
            sent.assert_ok()
            assert sent.stdout == '"hello"\n'
        stopped = await server.stop()
    assert stopped.returncode == 0


async def test_serve_json_says_its_identity_before_its_addresses(tmp_path: Path) -> None:
    key, peer_id = key_of(tmp_path, "server")
    async with serve("--default-rule", "allow", "--listen", LOOPBACK, "--key", key) as server:
        assert server.identity == {"identity": key, "peer_id": peer_id}
        assert server.lines == []
        stopped = await server.stop()
    stopped.assert_ok()
    assert stopped.stdout == ""  # no commands to try: --json is read by programs


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
async def test_serve_listen_errors_are_one_line(as_json: bool) -> None:
    flags = ["--json"] if as_json else []
    with closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await run(
            "serve", "--no-mdns", "--default-rule", "allow", "--listen",
            f"/ip4/127.0.0.1/tcp/{port}", *flags,
        )  # fmt: skip
    assert str(port) in result.assert_one_line_error("serve", as_json=as_json)
    for bad in ("garbage", "/ip4/999.1.1.1/tcp/1", "/ip4/127.0.0.1/udp/1"):
        result = await run("serve", "--no-mdns", "--default-rule", "allow", "--listen", bad,
                           *flags)  # fmt: skip
        result.assert_one_line_error("serve", as_json=as_json)


async def test_serve_persists_its_address_book(tmp_path: Path) -> None:
    default_book = tmp_path / "xdg" / "aiop2p" / "address-book.json"
    async with serve("--listen", LOOPBACK) as server:
        (await server.stop()).assert_ok()
    assert default_book.is_file()
    assert stat.S_IMODE(default_book.stat().st_mode) == 0o600
    json.loads(default_book.read_text())
    default_book.unlink()
    key, _ = key_of(tmp_path, "other")
    async with serve("--listen", LOOPBACK, "--key", key) as server:  # no book with --key
        (await server.stop()).assert_ok()
    assert not default_book.exists()
    book = tmp_path / "book.json"
    args = ["--listen", LOOPBACK, "--key", key, "--address-book", str(book)]
    async with serve(*args) as server:
        (await server.stop()).assert_ok()
    assert book.is_file()
    book.write_text("{corrupt")
    result = await run("serve", "--no-mdns", *args)
    assert str(book) in result.assert_one_line_error("serve", as_json=False)


# -- the firewall ------------------------------------------------------------------------


async def test_serve_rejects_every_request_by_default_and_says_so() -> None:
    async with serve("--echo", "--listen", LOOPBACK) as server:
        (notice,) = server.lines
        assert notice["default_rule"] == "reject"
        assert notice["allow_with"] == "--default-rule allow"
        line = (await run("send", server.addr, '"hello"')).assert_one_line_error(
            "send", as_json=False
        )
        assert "rejected" in line and "/p2p/1.0.0" in line
        result = await run("send", server.addr, '"hello"', "--json")
        result.assert_one_line_error("send", as_json=True)
        assert result.json_lines()[0]["type"] == "UnsupportedProtocolsError"
        stopped = await server.stop()
    stopped.assert_ok()
    assert stopped.stdout == ""  # no request reached the application


async def test_allow_and_echo_answer_json_text_and_raw_requests() -> None:
    async with serve("--default-rule", "allow", "--echo", "--listen", LOOPBACK) as server:
        assert server.lines == []  # a firewall option given: no notice
        text = await run("send", server.addr, '{"op": "ping", "n": [1, 2]}')
        text.assert_ok()
        assert json.loads(text.stdout) == {"op": "ping", "n": [1, 2]}
        as_json = await run("send", server.addr, '"héllo"', "--json")
        as_json.assert_ok()
        peer_id = server.addr.rsplit("/", 1)[1]
        assert as_json.json_lines() == [{"response": "héllo", "peer_id": peer_id}]
        raw = await run("send", server.addr.split("/p2p/")[0], "not json", "--raw")
        raw.assert_ok()
        assert raw.stdout == "not json\n"
        seen = [await server.wait_for("request") for _ in range(3)]
        assert [line["request"] for line in seen] == [
            {"op": "ping", "n": [1, 2]},
            "héllo",
            {"bytes": 8},
        ]
        (await server.stop()).assert_ok()


async def test_serve_on_webtransport_prints_the_certhashes_and_answers_through_them() -> None:
    listen = "/ip4/127.0.0.1/udp/0/quic-v1/webtransport"
    async with serve("--default-rule", "allow", "--echo", "--listen", listen) as server:
        (addr,) = server.addrs
        assert addr.startswith("/ip4/127.0.0.1/udp/") and "/quic-v1/webtransport/" in addr
        assert addr.count("/certhash/u") == 2  # the current and the next certificate
        (await run("ping", addr)).assert_ok()
        sent = await run("send", addr, '"over webtransport"')
        sent.assert_ok()
        assert sent.stdout == '"over webtransport"\n'
        # Without its certhashes the address cannot be dialled: no CA vouches for it.
        bare = addr.split("/certhash/")[0] + "/p2p/" + addr.rsplit("/", 1)[1]
        refused = await run("ping", bare)
        assert refused.returncode != 0 and "certhash" in refused.stderr
        (await server.stop()).assert_ok()


async def test_serve_without_echo_drops_approved_requests() -> None:
    async with serve("--default-rule", "allow", "--listen", LOOPBACK) as server:
        line = (await run("send", server.addr, "1")).assert_one_line_error("send", as_json=False)
        assert "rejected: the remote closed the stream without answering" in line
        assert (await server.wait_for("request"))["request"] == 1


async def test_reject_peer_and_allow_peer_choose_who_is_answered(tmp_path: Path) -> None:
    bad_key, bad_id = key_of(tmp_path, "bad")
    good_key, good_id = key_of(tmp_path, "good")
    args = ["--default-rule", "allow", "--echo", "--reject-peer", bad_id, "--listen", LOOPBACK]
    async with serve(*args) as server:
        result = await run("send", server.addr, "1", "--key", bad_key)
        assert "rejected" in result.assert_one_line_error("send", as_json=False)
        (await run("send", server.addr, "2", "--key", good_key)).assert_ok()
    # Only one peer allowed; everyone else rejected (no notice: an option was given).
    async with serve("--echo", "--allow-peer", good_id, "--listen", LOOPBACK) as server:
        assert server.lines == []
        (await run("send", server.addr, "3", "--key", good_key)).assert_ok()
        result = await run("send", server.addr, "4", "--key", bad_key)
        result.assert_one_line_error("send", as_json=False)
        (await run("send", server.addr, "5")).assert_one_line_error("send", as_json=False)


async def test_firewall_file_rules_apply_and_the_command_line_overrides_them(
    tmp_path: Path,
) -> None:
    good_key, good_id = key_of(tmp_path, "good")
    ping_key, ping_id = key_of(tmp_path, "ping")
    rules = tmp_path / "firewall.json"
    rules.write_text(
        json.dumps(
            {"default": "reject", "peers": {good_id: "allow", ping_id: {"restricted": "ping"}}}
        )
    )
    async with serve("--echo", "--firewall", str(rules), "--listen", LOOPBACK) as server:
        assert server.lines == []
        (await run("send", server.addr, '"x"', "--key", good_key)).assert_ok()
        (await run("send", server.addr, '"Ping"', "--key", ping_key)).assert_ok()
        result = await run("send", server.addr, '"x"', "--key", ping_key)
        assert "closed the stream without answering" in result.assert_one_line_error(
            "send", as_json=False
        )
        (await run("send", server.addr, '"x"')).assert_one_line_error("send", as_json=False)
    # The command line overrides the file.
    args = ["--echo", "--firewall", str(rules), "--default-rule", "allow", "--listen", LOOPBACK]
    async with serve(*args) as server:
        (await run("send", server.addr, '"x"')).assert_ok()
    for bad in ('{"default": "maybe"}', "not json", json.dumps({"peers": {"nope": "allow"}})):
        rules.write_text(bad)
        result = await run("serve", "--no-mdns", "--firewall", str(rules))
        assert str(rules) in result.assert_one_line_error("serve", as_json=False)
    result = await run("serve", "--no-mdns", "--firewall", str(tmp_path / "missing"))
    result.assert_one_line_error("serve", as_json=False)


# -- hostile peers -----------------------------------------------------------------------


async def test_serve_echoes_a_deep_json_request_and_keeps_serving() -> None:
    args = ["--default-rule", "allow", "--echo", "--listen", LOOPBACK]
    async with serve(*args) as server:
        # 100,000 brackets: what fits in one command-line argument, still far too deep.
        deep = await run("send", server.addr, "[" * 100_000, "--raw")
        deep.assert_ok()
        assert deep.stdout == "[" * 100_000 + "\n"
        assert (await server.wait_for("request"))["request"] == {"bytes": 100_000}
        after = await run("send", server.addr, "[1]")
        after.assert_ok()
        assert json.loads(after.stdout) == [1]
        stopped = await server.stop()
    assert "Traceback" not in stopped.stderr, stopped.stderr


async def test_a_peer_that_never_reads_does_not_stall_others() -> None:
    """One raw client sends large requests and never reads the echoes (its streams grant
    no more than the initial 256 KiB window); another client's requests are answered."""
    hog_requests, hog_size = 4, 768 * KIB  # each echo is 3x the hog's receive window
    async with serve("--default-rule", "allow", "--echo", "--listen", LOOPBACK) as server:
        seen: list[dict[str, Any]] = []

        async def read_stdout() -> None:
            while line := await server.stdout.readline():
                seen.append(json.loads(line))

        reader = asyncio.create_task(read_stdout())
        small = YamuxConfig(receive_window_bytes=256 * KIB)
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


# -- against any libp2p peer (js-libp2p) -------------------------------------------------


@pytest.mark.interop
async def test_js_peer_echoes_pings_and_identifies_served_peer() -> None:
    async with (
        start_peer(js_command()) as js,
        serve("--echo", "--default-rule", "allow", "--listen", LOOPBACK) as server,
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
        (await server.stop()).assert_ok()


@pytest.mark.interop
async def test_serve_by_default_does_not_offer_requests() -> None:
    async with start_peer(js_command()) as js, serve("--listen", LOOPBACK) as server:
        info = await js.command("identify", addr=server.addr)
        assert {PING_PROTOCOL_ID, "/ipfs/id/1.0.0", PERF_PROTOCOL_ID} <= set(info["protocols"])
        with pytest.raises(PeerCommandError):  # the firewall rejects all: not negotiated
            await js.echo(server.addr, b"hello")


def test_relay_and_hole_punch_events_are_logged() -> None:
    """`serve` prints one line per reservation loss/restore and per hole-punch attempt and
    outcome, on either side, in text and in JSON."""
    peer, relay = KeyPair.generate().peer_id, KeyPair.generate().peer_id
    events: list[NetworkEvent] = [
        RelayReservationLost(relay, DialError("connection closed")),
        RelayReservationRestored(relay, 3),
        HolePunchStarted(peer, 1, initiator=False),
        HolePunchFailed(peer, DialError("refused"), 1, initiator=False),
        DirectConnectionUpgraded(peer, Multiaddr("/ip4/192.0.2.1/tcp/1"), 2),
    ]
    texts, jsons = io.StringIO(), io.StringIO()
    for stream, as_json in ((texts, False), (jsons, True)):
        out = Output(as_json, CommandIO(stdout=stream, stderr=stream))
        for event in events:
            _report_connectivity(out, event)
    lines = texts.getvalue().splitlines()
    assert len(lines) == 5
    assert "reservation lost" in lines[0] and str(relay) in lines[0]
    assert "restored (attempt 3)" in lines[1]
    assert "attempt 1 (responder)" in lines[2]
    assert "failed (attempt 1)" in lines[3] and "staying relayed" in lines[3]
    assert "direct connection via /ip4/192.0.2.1/tcp/1" in lines[4]
    objs = [json.loads(line) for line in jsons.getvalue().splitlines()]
    assert [o.get("reservation") or o.get("hole_punch") for o in objs] == [
        "lost", "restored", "started", "failed", "succeeded",
    ]  # fmt: skip
    assert objs[1]["attempts"] == 3 and objs[3]["initiator"] is False
