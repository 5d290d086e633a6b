"""``aiop2p send``: its failures are one line and a non-zero exit, never a traceback,
hostile JSON included; in-process (see ``harness.py``).  Answered requests are in
``test_serve.py``."""

from __future__ import annotations

import pytest

from aiop2p._aio.stream import Stream
from aiop2p.cli.main import ECHO_PROTOCOL_ID
from aiop2p.network import DEFAULT_PROTOCOL
from aiop2p.node import Node

from .harness import LOOPBACK, free_port, other_peer_id, run

pytestmark = pytest.mark.timeout(60)

DEEP = b"[" * 900_000


async def test_send_timeout_and_unreachable_are_one_line() -> None:
    async def never_answer(stream: Stream) -> None:
        await stream.read()  # blocks until the node closes

    async with Node() as node:
        node.set_stream_handler(ECHO_PROTOCOL_ID, never_answer)
        (addr,) = await node.listen(LOOPBACK)
        target = str(addr.with_peer_id(node.peer_id))
        for flags in ([], ["--json"]):
            result = await run("send", target, "1", "--timeout", "0.3", *flags)
            line = result.assert_one_line_error("send", as_json=bool(flags))
            assert "timed out: no response within 0.3 s" in line
    unreachable = f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/{other_peer_id()}"
    for target in (unreachable, unreachable.split("/p2p/")[0]):
        line = (await run("send", target, "1")).assert_one_line_error("send", as_json=False)
        assert "unreachable" in line and "127.0.0.1" in line


async def test_send_rejects_a_request_that_is_not_json() -> None:
    result = await run("send", "/ip4/127.0.0.1/tcp/1", "{not json")
    assert result.returncode == 2 and "use --raw" in result.stderr
    assert len(result.stderr.splitlines()) == 1


async def test_send_with_a_deep_json_answer_prints_one_line() -> None:
    async def deep_answer(stream: Stream) -> None:
        await stream.read_message(1 << 20)  # the request: answered without a look
        await stream.write_message(DEEP)
        await stream.close()

    async with Node() as node:
        node.set_stream_handler(DEFAULT_PROTOCOL, deep_answer)
        (addr,) = await node.listen(LOOPBACK)
        target = str(addr.with_peer_id(node.peer_id))
        for flags in ([], ["--json"]):
            result = await run("send", target, "1", *flags)
            line = result.assert_one_line_error("send", as_json=bool(flags))
            assert result.returncode == 1
            assert "nested deeper than 128" in line, line


async def test_send_with_a_deep_json_argument_is_a_usage_error() -> None:
    result = await run("send", "/ip4/127.0.0.1/tcp/1", "[" * 100_000)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert "nested deeper than 128" in line and "use --raw" in line
