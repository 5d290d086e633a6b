"""``aiop2p serve --handler MODULE:FUNCTION`` serves the user's code (as ``uvicorn
module:app`` does), logs refusals and handler errors rate-limited on stderr; ``send``
reads its request from a file or stdin; ``--protocol`` on both.  In-process (see
``harness.py``)."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import sys
from pathlib import Path

import pytest

from aiop2p import FirewallRules, KeyPair, Network, RawCodec
from aiop2p.cli._common import CommandIO, Output
from aiop2p.cli.log_limit import RateLimitedLog
from aiop2p.errors import RequestError
from aiop2p.multiaddr import Multiaddr
from aiop2p.network.config import DEFAULT_MAX_REQUEST_BYTES

from .harness import LOOPBACK, Result, daemon, run, serve

pytestmark = pytest.mark.timeout(60)

_names = itertools.count()

HANDLERS = """
import aiop2p

async def handle(request):
    if request.request == "boom":
        raise RuntimeError("the handler broke on purpose")
    return {"got": request.request, "from": str(request.peer)}

async def shout(request):
    return request.request.upper()

def sync_handler(request):
    return request.request

not_callable = 3

class Handlers:
    @staticmethod
    async def nested(request):
        return ["nested", request.request]
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of handlers in the current directory (found as uvicorn finds one); its
    name, new per test (imported modules stay in sys.modules)."""
    name = f"cli_handlers_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(HANDLERS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the command prepends the cwd
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def allow(*args: str) -> list[str]:
    return ["--default-rule", "allow", "--listen", LOOPBACK, *args]


async def test_handler_answers_with_json_values(app: str) -> None:
    async with serve(*allow("--handler", f"{app}:handle")) as server:
        result = await run("send", server.addr, '{"n": [1, 2]}', "--json")
        result.assert_ok()
        (line,) = result.json_lines()
        assert line["response"]["got"] == {"n": [1, 2]}
        assert line["response"]["from"].startswith("12D3KooW")
        assert (await server.wait_for("request"))["request"] == {"n": [1, 2]}
        nested = await run("send", server.addr, '"x"')  # a dotted attribute
        nested.assert_ok()
        (await server.stop()).assert_ok()
    async with serve(*allow("--handler", f"{app}:Handlers.nested")) as server:
        nested = await run("send", server.addr, '"x"')
        nested.assert_ok()
        assert json.loads(nested.stdout) == ["nested", "x"]


async def test_handler_with_raw_gets_and_returns_bytes(app: str) -> None:
    async with serve(*allow("--handler", f"{app}:shout", "--raw")) as server:
        result = await run("send", server.addr, "not json", "--raw")
        result.assert_ok()
        assert result.stdout == "NOT JSON\n"


async def test_a_handler_that_raises_is_logged_and_serving_goes_on(app: str) -> None:
    async with serve(*allow("--handler", f"{app}:handle")) as server:
        failed = await run("send", server.addr, '"boom"')
        assert "without answering" in failed.assert_one_line_error("send", as_json=False)
        logged = await server.wait_for_log("traceback")
        assert logged["log"] == "error"
        assert "RuntimeError: the handler broke on purpose" in logged["traceback"]
        failure = await server.wait_for_log("failure")
        assert failure["failure"] == "handler_error"
        for value in ("after", "again"):
            ok = await run("send", server.addr, json.dumps(value))
            ok.assert_ok()
            assert json.loads(ok.stdout)["got"] == value
        stopped = await server.stop()
    assert stopped.returncode == 0


async def test_a_handler_error_in_text_mode_shows_its_traceback_on_stderr(app: str) -> None:

    args = ["serve", "--no-mdns", *allow("--handler", f"{app}:handle")]
    async with daemon(*args, addrs=0) as server:
        async with asyncio.timeout(30):
            while not (line := (await server.stdout.readline()).decode()).startswith(
                "listening on "
            ):
                pass
        addr = line.split()[-1]
        await run("send", addr, '"boom"')
        ok = await run("send", addr, '"fine"')
        ok.assert_ok()
        stopped = await server.stop()
    assert stopped.returncode == 0
    assert "aiop2p serve: error: request handler failed on request" in stopped.stderr
    assert "Traceback (most recent call last)" in stopped.stderr
    assert "RuntimeError: the handler broke on purpose" in stopped.stderr
    assert "failed: The request handler raised an exception" in stopped.stderr


def assert_usage_error(result: Result, *needles: str) -> None:
    """Exit status 2, one ``aiop2p serve:`` line naming the problem, no traceback."""
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("aiop2p serve: --handler"), line
    for needle in needles:
        assert needle in line, line


async def test_bad_handler_specs_are_usage_errors(app: str, tmp_path: Path) -> None:
    (tmp_path / f"{app}_broken.py").write_text("raise ValueError('no config file')\n")
    (tmp_path / f"{app}_syntax.py").write_text("def (:\n")
    (tmp_path / f"{app}_imports.py").write_text("import not_installed_anywhere_xyz\n")
    cases = {
        "nocolon": ("expected MODULE:FUNCTION",),
        f"{app}:": ("expected MODULE:FUNCTION",),
        "no_such_module_xyz:handle": ("no module named 'no_such_module_xyz'",),
        f"{app}_broken:handle": ("importing", "ValueError: no config file"),
        f"{app}_syntax:handle": ("importing", "SyntaxError", "line 1"),
        f"{app}_imports:handle": ("importing", "not_installed_anywhere_xyz"),
        f"{app}:missing": ("has no attribute 'missing'",),
        f"{app}:not_callable": ("int is not callable",),
        f"{app}:sync_handler": ("not an async function", "async def"),
    }
    for spec, needles in cases.items():
        for flags in ([], ["--json"]):
            result = await run("serve", "--no-mdns", "--handler", spec, *flags)
            assert_usage_error(result, *needles)
            if flags:
                (obj,) = result.json_lines()
                assert obj["type"] == "InvalidArgumentError"
    both = await run("serve", "--no-mdns", "--handler", f"{app}:handle", "--echo")
    assert both.returncode == 2 and "exclude each other" in both.stderr
    raw = await run("serve", "--no-mdns", "--raw", "--echo")
    assert raw.returncode == 2 and "--raw needs --handler" in raw.stderr


async def test_a_peer_under_a_reject_rule_is_logged_when_it_connects() -> None:
    """Its requests never reach the exchange (the protocol is not offered to it), so the
    connection is what the log reports; the refused request fails on the client."""
    key = KeyPair.generate()
    async with serve(
        "--echo", "--default-rule", "allow", "--reject-peer", str(key.peer_id), "--listen", LOOPBACK
    ) as server:
        net: Network[bytes, bytes] = Network(
            key, firewall=FirewallRules.allow_none(), codec=RawCodec(), mdns=None
        )
        async with net:
            with pytest.raises(RequestError):
                await net.send_request(Multiaddr(server.addr), b'"hello"')
            line = await server.wait_for_log("refused")
        assert line == {"peer_id": str(net.peer_id), "refused": "peer"}
        stopped = await server.stop()
    assert stopped.returncode == 0


async def test_refusals_are_logged_rate_limited(tmp_path: Path) -> None:
    """A peer allowed only pings sends many other requests at once: each is refused by the
    firewall; every refusal is either shown or counted in an "… and K more" line."""
    rules = tmp_path / "firewall.json"
    rules.write_text(json.dumps({"default": {"restricted": "ping"}}))
    flood = 60
    async with serve("--echo", "--firewall", str(rules), "--listen", LOOPBACK) as server:
        target = Multiaddr(server.addr)
        net: Network[bytes, bytes] = Network(
            KeyPair.generate(), firewall=FirewallRules.allow_none(), codec=RawCodec(), mdns=None
        )
        async with net:
            assert await net.send_request(target, b'"Ping"') == b'"Ping"'
            results = await asyncio.gather(
                *(net.send_request(target, b'"other"') for _ in range(flood)),
                return_exceptions=True,
            )
        assert all(isinstance(r, RequestError) for r in results), results
        shown = more = 0
        while shown + more < flood:  # the "more" line comes when its window ends
            line = await server.next_log()
            if "more" in line:
                more += line["more"]
            else:
                assert line["failure"] == "not_permitted"
                shown += 1
        assert shown + more == flood
        stopped = await server.stop()
    assert stopped.returncode == 0
    assert "failure" not in stopped.stderr  # no refusal logged twice


async def test_rate_limited_log_shows_at_most_n_lines_per_window() -> None:
    now = 0.0
    stream = io.StringIO()
    out = Output(False, CommandIO(stdout=io.StringIO(), stderr=stream))
    log = RateLimitedLog(out, max_lines=3, clock=lambda: now)
    for i in range(10):
        log.write(f"refused {i}")
    now = 1.5  # the next window: the count of the last one first
    log.write("refused 10")
    log.write("refused 11")
    log.close()  # nothing left out in this window: nothing more
    assert stream.getvalue().splitlines() == [
        "refused 0",
        "refused 1",
        "refused 2",
        "aiop2p serve: … and 7 more (at most 3 log lines a second)",
        "refused 10",
        "refused 11",
    ]
    for i in range(5):  # same window: one more line shown, four counted
        log.write(f"late {i}")
    log.close()
    assert stream.getvalue().splitlines()[-2:] == [
        "late 0",
        "aiop2p serve: … and 4 more (at most 3 log lines a second)",
    ]


# -- send: the request from a file or stdin --------------------------------------------


async def test_send_reads_the_request_from_a_file_or_stdin(tmp_path: Path) -> None:
    body = tmp_path / "request.json"
    body.write_text('{"from": "a file", "n": [1, 2, 3]}\n')
    binary = tmp_path / "request.bin"
    binary.write_bytes(bytes(range(256)))
    async with serve("--echo", *allow()) as server:
        from_file = await run("send", server.addr, f"@{body}")
        from_file.assert_ok()
        assert json.loads(from_file.stdout) == {"from": "a file", "n": [1, 2, 3]}
        from_stdin = await run("send", server.addr, "-", stdin=b'["piped", true]')
        from_stdin.assert_ok()
        assert json.loads(from_stdin.stdout) == ["piped", True]
        raw = await run("send", server.addr, f"@{binary}", "--raw", "--json")
        raw.assert_ok()
        assert raw.json_lines()[0]["response_hex"] == bytes(range(256)).hex()
        raw_stdin = await run("send", server.addr, "-", "--raw", stdin=b"bytes\x00in")
        raw_stdin.assert_ok()
        assert raw_stdin.stdout == "bytes\x00in\n"


async def test_send_refuses_missing_oversized_and_non_json_input(tmp_path: Path) -> None:
    addr = f"/ip4/127.0.0.1/tcp/1/p2p/{KeyPair.generate().peer_id}"  # never dialled
    missing = await run("send", addr, f"@{tmp_path / 'missing.json'}")
    assert "missing.json" in missing.assert_one_line_error("send", as_json=False)
    huge = b'"' + b"x" * DEFAULT_MAX_REQUEST_BYTES + b'"'
    for where, stdin in ((f"@{_write(tmp_path / 'huge', huge)}", None), ("-", huge)):
        result = await run("send", addr, where, stdin=stdin)
        line = result.assert_one_line_error("send", as_json=False)
        assert "larger than the 1048576-byte request limit" in line
    not_json = await run("send", addr, "-", stdin=b"{not json")
    assert not_json.returncode == 2 and "not JSON" in not_json.stderr


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- --protocol ----------------------------------------------------------------------------


async def test_protocol_chooses_the_request_protocol_on_both_sides(app: str) -> None:
    kv = "/kv/1.0.0"
    async with serve(*allow("--handler", f"{app}:handle", "--protocol", kv)) as server:
        ok = await run("send", server.addr, '"hi"', "--protocol", kv)
        ok.assert_ok()
        assert json.loads(ok.stdout)["got"] == "hi"
        default = await run("send", server.addr, '"hi"')
        line = default.assert_one_line_error("send", as_json=False)
        assert "does not offer /p2p/1.0.0" in line
    for bad in ("kv", "/with space", "/" + "x" * 300):
        result = await run("send", "/ip4/127.0.0.1/tcp/1", "1", "--protocol", bad)
        assert result.returncode == 2 and "protocol id" in result.stderr
        result = await run("serve", "--no-mdns", "--protocol", bad)
        assert result.returncode == 2 and "protocol id" in result.stderr
