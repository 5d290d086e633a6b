"""The ``aiop2p`` command as a real process, for what only a process shows: the console
script, SIGINT and SIGTERM, the prompt on a terminal, a stdout nobody reads, the exit
status.  Everything else runs in-process (see ``harness.py``)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import pty
import signal
import sys
from pathlib import Path

import pytest

from ..helpers import run_capped
from .harness import (
    CLI,
    ENTRY_POINT,
    KIB,
    LOOPBACK,
    MIB,
    RUN_TIMEOUT,
    Result,
    client_of,
    run,
    run_process,
    serve,
    serve_process,
)

pytestmark = pytest.mark.timeout(60)


async def test_entry_point_is_installed() -> None:
    assert ENTRY_POINT.exists(), "the console script `aiop2p` is missing from the venv"
    result = await run_process("--help")
    result.assert_ok()
    for command in ("id", "serve", "send", "discover", "ping", "perf"):
        assert command in result.stdout


async def test_version_from_the_console_script_and_python_m() -> None:
    expected = f"aiop2p {importlib.metadata.version('aiop2p')}\n"
    script = await run_process("--version")
    script.assert_ok()
    assert script.stdout == expected
    module = Result(*await run_capped([sys.executable, "-m", "aiop2p", "--version"], RUN_TIMEOUT))
    module.assert_ok()
    assert module.stdout == expected
    usage = Result(*await run_capped([sys.executable, "-m", "aiop2p"], RUN_TIMEOUT))
    assert usage.returncode == 2 and usage.stderr.startswith("usage: aiop2p")


async def test_exit_status_is_the_commands(tmp_path: Path) -> None:
    """1 with one line on stderr for a failure, 2 for a usage error."""
    failed = await run_process("id", "--key", str(tmp_path))  # a directory
    failed.assert_one_line_error("id", as_json=False)
    assert failed.returncode == 1
    usage = await run_process("frobnicate")
    assert usage.returncode == 2 and "usage: aiop2p" in usage.stderr


@pytest.mark.parametrize(
    ("command", "sig"),
    [("serve", signal.SIGTERM), ("serve", signal.SIGINT), ("relay", signal.SIGTERM)],
    ids=["serve-SIGTERM", "serve-SIGINT", "relay-SIGTERM"],
)
async def test_daemon_stops_cleanly_on_signal(command: str, sig: signal.Signals) -> None:
    args = ["--no-mdns", "--echo"] if command == "serve" else []
    async with serve_process(command, "--json", "--listen", LOOPBACK, *args) as (proc, _):
        proc.send_signal(sig)
        async with asyncio.timeout(RUN_TIMEOUT):
            _, err = await proc.communicate()
    assert (proc.returncode, err) == (0, b"")


async def test_ask_mode_through_a_terminal() -> None:
    """Text mode on a real pty: the prompt is printed for a person, who types "yes"."""
    controller, terminal = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        *CLI, "serve", "--no-mdns", "--default-rule", "ask", "--echo", "--listen", LOOPBACK,
        stdin=terminal, stdout=asyncio.subprocess.PIPE, stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    loop = asyncio.get_running_loop()
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(RUN_TIMEOUT):
            addr = (await proc.stdout.readline()).decode().split()[-1]
            sending = asyncio.ensure_future(run("send", addr, '"hi"'))
            seen = b""
            while b"Allow requests from them?: (yes/no/ask/ping)" not in seen:
                seen += await loop.run_in_executor(None, os.read, controller, 4096)
            os.write(controller, b"yes\n")
            result = await sending
        result.assert_ok()
        assert result.stdout == '"hi"\n'
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(controller)


async def test_perf_progress_on_a_real_terminal() -> None:
    """stderr on a pty: the progress line is drawn there and erased; stdout (a pipe) gets
    the result alone."""
    async with serve("--listen", LOOPBACK) as server:
        controller, terminal = pty.openpty()
        try:
            proc = await asyncio.create_subprocess_exec(
                *CLI, "perf", server.addr, "--upload", str(MIB), "--download", str(MIB),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=terminal,
            )  # fmt: skip
            os.close(terminal)
            async with asyncio.timeout(RUN_TIMEOUT):
                out, _ = await proc.communicate()
            drawn = b""
            for _ in range(1000):  # bounded: the process is gone, only its output is left
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # EIO: every writer closed, all read
                    break
                if not chunk:
                    break
                drawn += chunk
        finally:
            os.close(controller)
    assert proc.returncode == 0 and out.startswith(b"upload ") and b"\x1b" not in out
    assert drawn.startswith(b"\r\x1b[Kaiop2p perf: dialling") and drawn.endswith(b"\r\x1b[K")


async def test_serve_never_blocks_on_an_unread_stdout() -> None:
    """Nobody reads serve's stdout pipe after its address: every request is still answered."""
    requests, in_flight, size = 400, 16, 8 * KIB  # ~3.2 MiB of output: far above a pipe
    args = ["serve", "--json", "--no-mdns", "--default-rule", "allow", "--echo"]
    async with serve_process(*args, "--listen", LOOPBACK) as (proc, addr):
        async with client_of(addr) as (client, peer):
            slots = asyncio.Semaphore(in_flight)
            answered = 0

            async def one(i: int) -> None:
                nonlocal answered
                body = json.dumps({"i": i, "pad": "x" * size}).encode()
                async with slots:
                    assert await client.send_request(peer, body) == body
                answered += 1

            async with asyncio.timeout(RUN_TIMEOUT), asyncio.TaskGroup() as group:
                for i in range(requests):
                    group.create_task(one(i))
            assert answered == requests
        # Read at last: every request line is there, or counted as dropped.
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(RUN_TIMEOUT):
            out, err = await proc.communicate()
        assert proc.returncode is not None
        stopped = Result(proc.returncode, out.decode(), err.decode())
        stopped.assert_ok()
        lines = stopped.json_lines()
        shown = sum(1 for line in lines if "request_id" in line)
        dropped = sum(line.get("dropped_lines", 0) for line in lines)
        assert dropped > 0 and shown + dropped == requests, (shown, dropped)
