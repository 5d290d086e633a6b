"""``aiop2p serve --default-rule ask``: the firewall asks on stdin, per new peer and then
per request, in-process with stdin a pipe (see ``harness.py``); on a real terminal in
``test_process.py``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from .harness import LOOPBACK, key_of, run, serve

pytestmark = pytest.mark.timeout(60)


async def test_ask_mode_prompts_per_peer_then_per_request(tmp_path: Path) -> None:
    key, peer_id = key_of(tmp_path, "asker")
    args = ["--default-rule", "ask", "--echo", "--listen", LOOPBACK]
    async with serve(*args, interactive=True) as server:
        sending = asyncio.ensure_future(run("send", server.addr, '"first"', "--key", key))
        prompt = await server.wait_for("prompt")
        assert prompt == {
            "prompt": "rule",
            "peer_id": peer_id,
            "choices": ["yes", "no", "ask", "ping"],
        }
        server.answer("maybe")  # invalid: asked again
        assert (await server.next_line())["prompt_result"] == "invalid"
        server.answer("ask")
        assert (await server.wait_for("decision"))["rule"] == "ask"
        prompt = await server.wait_for("prompt")
        assert (prompt["prompt"], prompt["request"], prompt["peer_id"]) == (
            "approve",
            "first",
            peer_id,
        )
        server.answer("yes")
        result = await sending
        result.assert_ok()
        assert result.stdout == '"first"\n'
        # The rule "ask" is kept for the peer: the next request is approved one by one.
        sending = asyncio.ensure_future(run("send", server.addr, '"second"', "--key", key))
        assert (await server.wait_for("prompt"))["request"] == "second"
        server.answer("no")
        result = await sending
        assert "rejected" in result.assert_one_line_error("send", as_json=False)
        # Three bad answers reject.
        sending = asyncio.ensure_future(run("send", server.addr, '"third"', "--key", key))
        await server.wait_for("prompt")
        for _ in range(3):
            server.answer("what")
        assert (await server.wait_for("prompt_result"))["prompt_result"] == "invalid"
        assert (await server.wait_for("prompt_result"))["prompt_result"] == "invalid"
        assert (await server.wait_for("prompt_result"))["prompt_result"] == "aborted"
        (await sending).assert_one_line_error("send", as_json=False)


async def test_ask_mode_with_closed_stdin_answers_no() -> None:
    args = ["--default-rule", "ask", "--echo", "--listen", LOOPBACK]
    async with serve(*args) as server:  # stdin is /dev/null
        result = await run("send", server.addr, '"x"')
        assert "rejected" in result.assert_one_line_error("send", as_json=False)
        assert (await server.wait_for("prompt_result"))["prompt_result"] == "eof"
