"""Running the ``aiop2p`` command for the tests.

Most tests run it in-process: :func:`aiop2p.cli.main.run` in the test's event loop, with
its output captured (:func:`run` for a command that ends; :func:`serve` and :func:`relay`
for the daemons, whose output is read line by line from pipes while they run, and whose
``stop`` event stands in for SIGTERM).  What only a real process shows (the console
script, signals, a terminal, a blocked stdout pipe, the exit status) is tested with
:func:`run_process` and :func:`serve_process` in ``test_process.py``.

HOME and XDG_DATA_HOME point into ``tmp_path`` (``conftest.py``), so the user's own key
is never touched, in-process or not.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pytest

from aiop2p import FirewallRules, Network, RawCodec
from aiop2p.cli.main import CommandIO
from aiop2p.cli.main import run as run_command
from aiop2p.identity import KeyPair, PeerId
from aiop2p.multiaddr import Multiaddr

from ..helpers import run_capped

ENTRY_POINT = Path(sys.executable).with_name("aiop2p")
CLI = [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "aiop2p.cli"]
LOOPBACK = "/ip4/127.0.0.1/tcp/0"
RUN_TIMEOUT = 30.0
"""Seconds any one command may take (it normally takes milliseconds)."""
KIB = 1 << 10
MIB = 1 << 20
MAX_LINE_BYTES = 1 << 20
"""The longest output line the tests read (a request shown whole with ``--json``)."""


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        objects = [json.loads(line) for line in self.stdout.splitlines()]
        assert all(isinstance(o, dict) for o in objects), self.stdout
        return objects

    def assert_ok(self) -> None:
        assert (self.returncode, self.stderr) == (0, ""), self

    def assert_one_line_error(self, command: str, *, as_json: bool) -> str:
        """Non-zero exit, one ``aiop2p <command>:`` line on stderr; the line is returned."""
        assert self.returncode not in (0, 2), self  # 2 is argparse's usage error
        assert "Traceback" not in self.stderr, self.stderr
        lines = self.stderr.splitlines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith(f"aiop2p {command}: "), lines[0]
        if as_json:
            (obj,) = self.json_lines()
            assert isinstance(obj["error"], str) and obj["error"], obj
            assert isinstance(obj["type"], str), obj
        else:
            assert self.stdout == "", self.stdout
        return lines[0]


@functools.cache
def devnull_fd() -> int:
    """One descriptor on /dev/null for the whole session: the stdin of in-process
    commands that are not asked anything (a prompt reading it sees end of file)."""
    return os.open(os.devnull, os.O_RDONLY)


class _TerminalBytes(io.BytesIO):
    def isatty(self) -> bool:
        return True


class _Capture:
    """A text stream whose bytes (``send --raw`` writes bytes) are kept in memory; with
    ``terminal``, it says it is a terminal (``isatty()``), as a user's stderr does."""

    def __init__(self, *, terminal: bool = False) -> None:
        self.bytes = _TerminalBytes() if terminal else io.BytesIO()
        self.stream = io.TextIOWrapper(self.bytes, encoding="utf-8", write_through=True)

    def text(self) -> str:
        self.stream.flush()
        return self.bytes.getvalue().decode()


async def run(*args: str, terminal: bool = False, stdin: bytes | None = None) -> Result:
    """``aiop2p ARGS`` in-process; its exit status and output.  A ``serve`` or ``relay``
    that starts stops at once (its stop event is already set).  With ``terminal``, its
    stderr says it is a terminal (progress lines are written there).  ``stdin``: the
    bytes its stdin holds (a pipe, written by a thread, then closed), else /dev/null."""
    stdout, stderr = _Capture(), _Capture(terminal=terminal)
    stop = asyncio.Event()
    stop.set()
    if stdin is None:
        command_io = CommandIO(devnull_fd(), stdout.stream, stderr.stream, stop)
        async with asyncio.timeout(RUN_TIMEOUT):
            code = await run_command(list(args), command_io)
        return Result(code, stdout.text(), stderr.text())
    read_fd, write_fd = os.pipe()
    writer = threading.Thread(target=_write_all, args=(write_fd, stdin), daemon=True)
    writer.start()
    try:
        command_io = CommandIO(read_fd, stdout.stream, stderr.stream, stop)
        async with asyncio.timeout(RUN_TIMEOUT):
            code = await run_command(list(args), command_io)
    finally:
        os.close(read_fd)  # a writer still blocked sees a broken pipe
        writer.join(RUN_TIMEOUT)
    return Result(code, stdout.text(), stderr.text())


def _write_all(fd: int, data: bytes) -> None:
    try:
        with open(fd, "wb") as pipe:
            pipe.write(data)
    except BrokenPipeError:
        pass  # the command read only what it needed


@dataclass
class Daemon:
    """A ``serve`` or ``relay`` running in-process until :meth:`stop`."""

    task: asyncio.Task[int]
    stop_event: asyncio.Event
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader
    stdin: int | None
    """The write end of its stdin pipe (``interactive=True``)."""
    addrs: list[str]
    lines: list[dict[str, Any]]
    """JSON lines printed before the addresses (the secure-default notice), but for the
    identity line."""
    identity: dict[str, Any] | None = None
    """The line where ``serve`` names its identity (keys ``identity``, ``peer_id``)."""

    @property
    def addr(self) -> str:
        return self.addrs[0]

    @property
    def port(self) -> int:
        return int(self.addr.split("/")[4])

    async def next_line(self) -> dict[str, Any]:
        """The next JSON line on stdout (a prompt, a request, an event)."""
        async with asyncio.timeout(RUN_TIMEOUT):
            line = await self.stdout.readline()
        assert line, "the command exited"
        obj: dict[str, Any] = json.loads(line)
        return obj

    async def wait_for(self, key: str) -> dict[str, Any]:
        """Skip lines until one has ``key``."""
        while True:
            line = await self.next_line()
            if key in line:
                return line

    async def next_log(self) -> dict[str, Any]:
        """The next JSON log line on stderr (refusals, handler errors)."""
        async with asyncio.timeout(RUN_TIMEOUT):
            line = await self.stderr.readline()
        assert line, "the command exited"
        obj: dict[str, Any] = json.loads(line)
        return obj

    async def wait_for_log(self, key: str) -> dict[str, Any]:
        """Skip stderr's JSON log lines until one has ``key``."""
        while True:
            if key in (obj := await self.next_log()):
                return obj

    def answer(self, text: str) -> None:
        """Type ``text`` and a newline on its stdin."""
        assert self.stdin is not None, "not interactive"
        os.write(self.stdin, text.encode() + b"\n")  # a few bytes: a pipe takes them at once

    async def stop(self) -> Result:
        """Stop it as SIGTERM does; its exit status and the output not read yet."""
        self.stop_event.set()
        async with asyncio.timeout(RUN_TIMEOUT):
            code = await self.task
            out, err = await self.stdout.read(), await self.stderr.read()
        return Result(code, out.decode(), err.decode())


def _text_pipe() -> tuple[int, TextIO]:
    """An OS pipe: its read end, and its write end as a text stream."""
    read_fd, write_fd = os.pipe()
    return read_fd, open(write_fd, "w", encoding="utf-8")  # closed by daemon()


async def _reader(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader, transport


@asynccontextmanager
async def daemon(*args: str, addrs: int = 1, interactive: bool = False) -> AsyncIterator[Daemon]:
    """``aiop2p ARGS`` (with ``--json``) in-process, once it printed ``addrs`` addresses;
    stopped at the end.  Its stdout and stderr are pipes (serve's output thread writes to
    file descriptors), closed when it ends, as a process's are when it exits.  Its stdin
    is a pipe the test types into with ``interactive``, else /dev/null."""
    out_r, stdout = _text_pipe()
    err_r, stderr = _text_pipe()
    stdin_r, stdin_w = os.pipe() if interactive else (devnull_fd(), None)
    out_reader, out_transport = await _reader(out_r)
    err_reader, err_transport = await _reader(err_r)
    before = {t for t in threading.enumerate() if t.name == "aiop2p stdin"}
    stop = asyncio.Event()
    task = asyncio.create_task(run_command(list(args), CommandIO(stdin_r, stdout, stderr, stop)))
    task.add_done_callback(lambda _: (stdout.close(), stderr.close()))
    running = Daemon(task, stop, out_reader, err_reader, stdin_w, [], [])
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            while len(running.addrs) < addrs:
                line = await out_reader.readline()
                if not line:
                    err = await err_reader.read()
                    pytest.fail(f"{args[0]} exited before listening: {err.decode()}")
                obj = json.loads(line)
                if "address" in obj:
                    running.addrs.append(obj["address"])
                elif "identity" in obj:
                    running.identity = obj
                else:
                    running.lines.append(obj)
        yield running
    finally:
        stop.set()
        try:
            async with asyncio.timeout(RUN_TIMEOUT):  # on timeout, cancels the command too
                await asyncio.gather(task, return_exceptions=True)
        finally:
            out_transport.close()
            err_transport.close()
            if stdin_w is not None:
                # The prompt's reader thread sees end of file and ends; only then may
                # its descriptor be closed (the number could be reused under it).
                os.close(stdin_w)
                for thread in threading.enumerate():
                    if thread.name == "aiop2p stdin" and thread not in before:
                        thread.join(RUN_TIMEOUT)
                os.close(stdin_r)


def serve(
    *args: str, addrs: int = 1, interactive: bool = False
) -> AbstractAsyncContextManager[Daemon]:
    """``aiop2p serve --json --no-mdns ARGS`` in-process (see :func:`daemon`).  mDNS stays
    off: tests must not multicast on the host's interfaces."""
    return daemon("serve", "--json", "--no-mdns", *args, addrs=addrs, interactive=interactive)


def relay(*args: str) -> AbstractAsyncContextManager[Daemon]:
    """``aiop2p relay --json --listen LOOPBACK ARGS`` in-process (see :func:`daemon`)."""
    return daemon("relay", "--json", "--listen", LOOPBACK, *args)


async def run_process(*args: str) -> Result:
    """``aiop2p ARGS`` as a process of the console script, stdin /dev/null."""
    return Result(*await run_capped([*CLI, *args], RUN_TIMEOUT))


@asynccontextmanager
async def serve_process(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``aiop2p ARGS`` (a daemon, with ``--json``) as a process, once it printed its first
    address; yields the process and the address; killed at the end."""
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        async with asyncio.timeout(RUN_TIMEOUT):
            while True:
                line = await proc.stdout.readline()
                if not line:
                    pytest.fail(f"{args[0]} exited before listening: {await proc.stderr.read()!r}")
                if "address" in (obj := json.loads(line)):
                    break
        yield proc, obj["address"]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()  # wait() alone hangs on a full, unread stdout pipe


@asynccontextmanager
async def client_of(
    addr: str, **options: Any
) -> AsyncIterator[tuple[Network[bytes, bytes], PeerId]]:
    """A raw-bytes network that knows ``addr``; yields it and the peer there."""
    target = Multiaddr(addr)
    peer = target.peer_id
    assert peer is not None
    net: Network[bytes, bytes] = Network(
        firewall=FirewallRules.allow_none(), codec=RawCodec(), mdns=None, **options
    )
    async with net:
        net.add_address(peer, target.without_peer_id())
        yield net, peer


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def other_peer_id() -> str:
    return str(KeyPair.generate().peer_id)


def key_of(tmp_path: Path, name: str) -> tuple[str, str]:
    """A key file and its peer id."""
    path = tmp_path / f"{name}.key"
    return str(path), str(KeyPair.load_or_generate(path).peer_id)
