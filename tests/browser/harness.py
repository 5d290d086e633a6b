"""A real browser in the tests: headless Chromium runs a js-libp2p page against aiop2p.

``page.js`` (next to this file) is bundled with the esbuild pinned in
``tests/interop/js/package.json`` (once per session, into a temporary directory) and served
by a small HTTP server on ``http://127.0.0.1:<port>``.  Each :meth:`PageServer.visit`
launches Chromium on the page with the target multiaddr, the page's identity seed and the
operations in the URL; the page POSTs one JSON report to ``/report`` and Chromium is killed
and reaped, whatever happened.  Nothing is downloaded at test time.

Where no Chromium runs (not installed, or it fails to start) the tests skip with the reason;
``.ci/run`` installs Debian's ``chromium``, so on the project's machines they run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiop2p.events import InboundFailure, InboundRequestFailed
from aiop2p.identity import KeyPair, PeerId
from aiop2p.network import Network

ROOT = Path(__file__).resolve().parents[2]
PAGE_SOURCE = Path(__file__).with_name("page.js")
NODE_MODULES = ROOT / "tests" / "interop" / "js" / "node_modules"
ESBUILD = NODE_MODULES / ".bin" / "esbuild"
CHROMIUM_NAMES = ("chromium", "chromium-browser")
PROBE_TIMEOUT = 30.0
BUNDLE_TIMEOUT = 60.0
VISIT_TIMEOUT = 40.0
"""Seconds from Chromium's start to the page's report (dial and operations included)."""
MAX_HEAD_BYTES = 16 * 1024
MAX_REPORT_BYTES = 1024 * 1024
HTTP_READ_TIMEOUT = 10.0
TAIL_LINES = 60
MAX_QUEUED_LINES = 10_000
MAX_LOG_LINES = 1_000_000
MAX_LOG_LINE_BYTES = 1024 * 1024
EVENT_TIMEOUT = 10.0
PAGE_SEED = bytes(range(32))
"""The page's Ed25519 identity: the tests set its firewall rule before it dials."""
PAGE_PEER = KeyPair.from_ed25519_seed(PAGE_SEED).peer_id

# Chromium makes no request of its own: every host name fails to resolve except 127.0.0.1,
# and the background services that would phone home are off.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-gpu",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--mute-audio",
    "--enable-logging=stderr",
)

PAGE_HTML = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>aiop2p browser test</title></head>
<body><script type="module" src="/page.js"></script></body></html>
"""


def private_home(directory: Path) -> dict[str, str]:
    """The environment with HOME and the XDG directories in ``directory``: Chromium writes
    there (crash reports, caches), not in the user's home."""
    return {
        **os.environ,
        "HOME": str(directory),
        "XDG_CONFIG_HOME": str(directory / "config"),
        "XDG_CACHE_HOME": str(directory / "cache"),
    }


def find_chromium() -> tuple[str | None, str]:
    """The Chromium binary that runs here, or ``None`` and why not."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path is None:
            continue
        try:
            with tempfile.TemporaryDirectory(prefix="aiop2p-chromium-") as home:
                probe = subprocess.run(
                    [path, "--headless=new", "--no-sandbox", "--version"],
                    capture_output=True,
                    timeout=PROBE_TIMEOUT,
                    check=False,
                    env=private_home(Path(home)),
                )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{path} does not run: {exc}"
        if probe.returncode != 0:
            tail = probe.stderr.decode(errors="replace")[-500:]
            return None, f"{path} --version exited {probe.returncode}: {tail}"
        return path, probe.stdout.decode(errors="replace").strip()
    return None, f"no Chromium on PATH (looked for {', '.join(CHROMIUM_NAMES)})"


def bundle_page(out_dir: Path, source: Path = PAGE_SOURCE) -> bytes:
    """Bundle ``source`` and its js-libp2p imports from the pinned node_modules."""
    assert ESBUILD.exists(), "run `make deps` (npm ci in tests/interop/js) to install esbuild"
    out = out_dir / "page.js"
    subprocess.run(
        [
            str(ESBUILD),
            str(source),
            "--bundle",
            "--format=esm",
            "--platform=browser",
            f"--outfile={out}",
            "--log-level=warning",
        ],
        # page.js lives outside tests/interop/js: esbuild looks up its imports there
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        check=True,
        timeout=BUNDLE_TIMEOUT,
    )
    return out.read_bytes()


class PageServer:
    """Serves the page and its bundle on loopback HTTP and collects the page's reports."""

    def __init__(self, chromium: str, bundle: bytes) -> None:
        self.chromium = chromium
        self.bundle = bundle
        self.reports: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HTTP_READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
                method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
                length = 0
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if not 0 <= length <= MAX_REPORT_BYTES:
                    raise ValueError(f"body of {length} bytes")
                body = await reader.readexactly(length)
            path = target.split("?", 1)[0]
            if method == "GET" and path == "/":
                self._respond(writer, "200 OK", "text/html; charset=utf-8", PAGE_HTML)
            elif method == "GET" and path == "/page.js":
                self._respond(writer, "200 OK", "text/javascript", self.bundle)
            elif method == "POST" and path == "/report":
                self.reports.put_nowait(json.loads(body))
                self._respond(writer, "204 No Content", "text/plain", b"")
            else:
                self._respond(writer, "404 Not Found", "text/plain", b"not found")
            await writer.drain()
        except (ValueError, OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # a malformed or abandoned request: drop the connection
        finally:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()

    @staticmethod
    def _respond(writer: asyncio.StreamWriter, status: str, kind: str, body: bytes) -> None:
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode()
            + body
        )

    async def visit(self, addr: str, seed: bytes, ops: list[dict[str, Any]]) -> dict[str, Any]:
        """Open the page in a fresh headless Chromium; return the page's report."""
        query = urlencode({"addr": addr, "seed": seed.hex(), "ops": json.dumps(ops)})
        async with chromium_at(self.chromium, f"http://127.0.0.1:{self.port}/?{query}") as browser:
            report = asyncio.ensure_future(self.reports.get())
            exited = asyncio.ensure_future(browser.proc.wait())
            try:
                done, _ = await asyncio.wait(
                    {report, exited}, timeout=VISIT_TIMEOUT, return_when="FIRST_COMPLETED"
                )
            finally:
                for waiter in (report, exited):
                    waiter.cancel()
                await asyncio.gather(report, exited, return_exceptions=True)
            if report in done:
                body = report.result()
                assert "crashed" not in body, f"the page failed: {body['crashed']}"
                return body
            why = "exited" if exited in done else f"sent no report in {VISIT_TIMEOUT} s"
            raise AssertionError(f"Chromium {why}; its log ends with:\n{browser.tail()}")


class Chromium:
    """A running headless Chromium: its process and its log (stderr, page console included)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._lines: asyncio.Queue[str | None] = asyncio.Queue(maxsize=MAX_QUEUED_LINES)
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        try:
            for _ in range(MAX_LOG_LINES):
                try:
                    raw = await self.proc.stderr.readline()
                except ValueError:  # one line above the reader's limit: skip it
                    continue
                if not raw:
                    break
                line = raw.decode(errors="replace").rstrip()
                self._tail.append(line)
                with suppress(asyncio.QueueFull):
                    self._lines.put_nowait(line)
        finally:
            with suppress(asyncio.QueueFull):
                self._lines.put_nowait(None)

    def tail(self) -> str:
        """The last lines Chromium logged."""
        return "\n".join(self._tail)

    async def expect(self, text: str, cap: float = VISIT_TIMEOUT) -> str:
        """The next log line containing ``text`` (a page's ``console.log`` shows up here)."""
        async with asyncio.timeout(cap):
            while (line := await self._lines.get()) is not None:
                if text in line:
                    return line
        raise AssertionError(f"Chromium ended without logging {text!r}:\n{self.tail()}")

    async def close(self) -> None:
        """Kill Chromium's whole process group and reap it."""
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


@asynccontextmanager
async def chromium_at(chromium: str, url: str) -> AsyncIterator[Chromium]:
    """Headless Chromium showing ``url``, with a fresh profile; killed and reaped on exit."""
    with tempfile.TemporaryDirectory(prefix="aiop2p-chromium-") as home:
        proc = await asyncio.create_subprocess_exec(
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={Path(home) / 'profile'}",
            url,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=private_home(Path(home)),
            start_new_session=True,  # its own process group, killed whole by close()
            limit=MAX_LOG_LINE_BYTES,
        )
        browser = Chromium(proc)
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def page_server(chromium: str, bundle: bytes) -> AsyncIterator[PageServer]:
    """A started :class:`PageServer` serving ``bundle`` on an ephemeral loopback port."""
    server = PageServer(chromium, bundle)
    listener = await asyncio.start_server(server._handle, "127.0.0.1", 0, limit=MAX_HEAD_BYTES)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        await listener.wait_closed()


@asynccontextmanager
async def echo_network(listen: str) -> AsyncIterator[Network[Any, Any]]:
    """A Network listening on ``listen`` answering each request with
    ``{"echo": request, "from": peer id}`` (so a test sees who aiop2p heard).

    Nobody answers its firewall questions: a peer with no rule of its own is rejected."""
    network: Network[Any, Any] = Network(mdns=None, dcutr=None, firewall_timeout=0.5)
    async with network:
        await network.start_listening(listen)

        async def answer() -> None:
            async for request in network.requests():
                await request.respond({"echo": request.request, "from": str(request.peer)})

        server = asyncio.create_task(answer())
        try:
            yield network
        finally:
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)


def listen_addr(net: Network[Any, Any]) -> str:
    """The network's (first) listen address with its ``/p2p`` id: what the page dials."""
    return str(net.listeners()[0].addrs[0].with_peer_id(net.peer_id))


async def failure_of(net: Network[Any, Any], peer: PeerId) -> InboundFailure:
    """The failure of the first inbound request from ``peer`` that failed."""
    async with asyncio.timeout(EVENT_TIMEOUT):
        async for event in net.events():
            if isinstance(event, InboundRequestFailed) and event.peer == peer:
                return event.failure
    raise AssertionError("the network's events ended")
