"""Start a foreign libp2p peer (js-libp2p or py-libp2p) as a process and drive it.

The peers speak JSON lines: one ``ready`` line at start, then one answer per command.
See ``js/README.md`` and ``py/README.md``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from aiop2p._aio.stream import Stream
from aiop2p.cli.main import ECHO_PROTOCOL_ID
from aiop2p.node import Node
from aiop2p.transports._base import Transport

ROOT = Path(__file__).resolve().parents[2]
JS_PEER = ROOT / "tests" / "interop" / "js" / "peer.mjs"
PY_PEER = ROOT / "tests" / "interop" / "py" / "peer.py"
PY_PEER_PYTHON = ROOT / ".venv-pylibp2p" / "bin" / "python"
START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0


class PeerCommandError(Exception):
    """The foreign peer answered ``ok: false``."""


class PeerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, ready: dict[str, Any]) -> None:
        self.proc = proc
        self.peer_id: str = ready["peerId"]
        self.addrs: list[str] = ready["addrs"]
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @property
    def addr(self) -> str:
        return self.addrs[0]

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            fut = self._pending.pop(msg.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(PeerCommandError("peer process exited"))

    async def command(self, cmd: str, cap: float = COMMAND_TIMEOUT, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        ident = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = fut
        self.proc.stdin.write((json.dumps({"id": ident, "cmd": cmd, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        async with asyncio.timeout(cap):
            answer = await fut
        if not answer.get("ok"):
            raise PeerCommandError(f"{cmd}: {answer.get('error')}")
        return answer

    async def echo(self, addr: str, data: bytes) -> bytes:
        answer = await self.command("echo", addr=addr, data_b64=base64.b64encode(data).decode())
        return base64.b64decode(answer["data_b64"])

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with suppress(PeerCommandError, TimeoutError, ConnectionError):
                await self.command("quit", cap=5)
            try:
                async with asyncio.timeout(5):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


def js_command(*args: str) -> list[str]:
    node = shutil.which("node")
    assert node is not None, "node is required for the js-libp2p interop tests"
    return [node, str(JS_PEER), *args]


def py_command(*args: str) -> list[str]:
    assert PY_PEER_PYTHON.exists(), "run `make deps` to create .venv-pylibp2p"
    return [str(PY_PEER_PYTHON), str(PY_PEER), *args]


@asynccontextmanager
async def start_peer(command: list[str]) -> AsyncIterator[PeerProcess]:
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=None if os.environ.get("INTEROP_VERBOSE") else asyncio.subprocess.DEVNULL,
        limit=1 << 22,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            line = await proc.stdout.readline()
        if not line:
            raise PeerCommandError(f"{command[1]} exited before it was ready")
        ready = json.loads(line)
        assert ready.get("event") == "ready", ready
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    peer = PeerProcess(proc, ready)
    try:
        yield peer
    finally:
        await peer.stop()


async def serve_echo(stream: Stream) -> None:
    """The interop echo: one length-prefixed message back, as the foreign peers do."""
    await stream.write_message(await stream.read_message(1 << 20))


@asynccontextmanager
async def echo_node(
    listen: str = "/ip4/127.0.0.1/tcp/0", transports: list[Transport] | None = None
) -> AsyncIterator[Node]:
    """A started node serving the echo on ``/p2p/1.0.0`` and listening on ``listen``."""
    async with Node(transports=transports) as node:
        node.set_stream_handler(ECHO_PROTOCOL_ID, serve_echo)
        await node.listen(listen)
        yield node


def our_addr(node: Node) -> str:
    """The node's (single) listen address with its ``/p2p`` id, for the foreign peer."""
    (addr,) = node.listen_addrs
    return str(addr.with_peer_id(node.peer_id))


async def eventually(check: Callable[[], Awaitable[bool]], cap: float = 10.0) -> None:
    """Poll a remote process until ``check()`` holds; the cap bounds the wait.

    A foreign process cannot signal us, so this polls (every 50 ms) — the one place the
    interop tests wait by polling.
    """
    async with asyncio.timeout(cap):
        while not await check():  # noqa: ASYNC110 - remote state; bounded by the cap
            await asyncio.sleep(0.05)


async def retry_command(peer: PeerProcess, cmd: str, **args: Any) -> dict[str, Any]:
    """Run ``cmd`` until the peer answers ``ok`` (e.g. once identify has run there)."""
    answer: dict[str, Any] = {}

    async def succeeded() -> bool:
        nonlocal answer
        try:
            answer = await peer.command(cmd, **args)
        except PeerCommandError:
            return False
        return True

    await eventually(succeeded)
    return answer
