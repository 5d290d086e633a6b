"""``aiop2p send`` against hostile JSON: one line and a non-zero exit, never a traceback
(issue 8 item 6).  Runs the real command, as ``tests/test_cli.py`` does."""

from __future__ import annotations

import json

import pytest

from aiop2p._aio.stream import Stream
from aiop2p.network import DEFAULT_PROTOCOL
from aiop2p.node import Node

from .test_cli import LOOPBACK, env, run, serve

__all__ = ["env"]  # the fixture, re-exported for the tests below

pytestmark = pytest.mark.timeout(60)

DEEP = b"[" * 900_000


async def test_send_with_a_deep_json_answer_prints_one_line(env: dict[str, str]) -> None:
    async def deep_answer(stream: Stream) -> None:
        await stream.read_message(1 << 20)  # the request: answered without a look
        await stream.write_message(DEEP)
        await stream.close()

    async with Node() as node:
        node.set_stream_handler(DEFAULT_PROTOCOL, deep_answer)
        (addr,) = await node.listen(LOOPBACK)
        target = str(addr.with_peer_id(node.peer_id))
        for flags in ([], ["--json"]):
            result = await run(env, "send", target, "1", *flags)
            line = result.assert_one_line_error("send", as_json=bool(flags))
            assert result.returncode == 1
            assert "nested deeper than 128" in line, line


async def test_send_with_a_deep_json_argument_is_a_usage_error(env: dict[str, str]) -> None:
    result = await run(env, "send", "/ip4/127.0.0.1/tcp/1", "[" * 100_000)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert "nested deeper than 128" in line and "use --raw" in line


async def test_serve_echoes_a_deep_json_request_and_keeps_serving(env: dict[str, str]) -> None:
    args = ["--default-rule", "allow", "--echo", "--listen", LOOPBACK]
    async with serve(env, *args) as server:
        # 100,000 brackets: what fits in one command-line argument, still far too deep.
        deep = await run(env, "send", server.addr, "[" * 100_000, "--raw")
        deep.assert_ok()
        assert deep.stdout == "[" * 100_000 + "\n"
        assert (await server.wait_for("request"))["request"] == {"bytes": 100_000}
        after = await run(env, "send", server.addr, "[1]")
        after.assert_ok()
        assert json.loads(after.stdout) == [1]
        stopped = await server.stop()
    assert "Traceback" not in stopped.stderr, stopped.stderr
