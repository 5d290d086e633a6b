"""examples/browser runs as its README says: serve.py serves the page and prints a link per
address (WebTransport, WebSocket), the page (bundled by esbuild) sends a message from headless
Chromium over each, Python prints it and the page shows the reply."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from .harness import ROOT, bundle_page, chromium_at

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

EXAMPLE = ROOT / "examples" / "browser"
LINE_CAP = 20.0
ADDRESSES = 2
"""serve.py listens on WebTransport and WebSocket: an address and a link for each."""


async def expect_line(stream: asyncio.StreamReader, prefix: str) -> str:
    """The next line of ``stream`` starting with ``prefix``."""
    async with asyncio.timeout(LINE_CAP):
        while line := (await stream.readline()).decode():
            if line.startswith(prefix):
                return line.strip()
    raise AssertionError(f"serve.py ended before printing {prefix!r}")


@pytest.mark.parametrize("transport", ["/webtransport/", "/ws/"])
async def test_page_messages_python_peer(chromium: str, tmp_path: Path, transport: str) -> None:
    bundle_page(tmp_path, EXAMPLE / "page.js")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE / "serve.py"),
        "--http-port=0",
        f"--bundle={tmp_path / 'page.js'}",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        links = {}  # address -> the page's URL without the fragment
        for _ in range(ADDRESSES):
            addr = (await expect_line(proc.stdout, "peer address: ")).removeprefix("peer address: ")
            link = (await expect_line(proc.stdout, "open ")).removeprefix("open ")
            base, _, fragment = link.partition("#")
            assert fragment == addr
            links[addr] = base
        (addr,) = (a for a in links if transport in a)
        async with chromium_at(chromium, f"{links[addr]}?send=hi%20Python#{addr}") as browser:
            heard = await expect_line(proc.stdout, "[")
            reply = await browser.expect("reply: ")
        assert heard.endswith("] hi Python")
        assert """reply: {"reply":"Python heard 9 characters: 'hi Python'"}""" in reply
    finally:
        proc.terminate()
        try:
            async with asyncio.timeout(LINE_CAP):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
