"""``aiop2p`` command-line peers in lab namespaces: long-lived daemons whose ``--json``
lines are kept, and one-shot ``aiop2p send`` to a bare peer id.

Shared by the lab tests that drive the CLI (``test_reach_by_id.py``,
``test_reach_by_id_js.py``, ``test_cli_punch.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .topology import Host

__all__ = ["CLI", "Daemon", "cli_env", "send_by_id", "send_until_ok"]

CLI = [sys.executable, "-m", "aiop2p"]
LINE_CAP = 20.0
"""Seconds a daemon may take to print an expected line (normally well under one)."""
SEND_ATTEMPTS = 10
"""A send may come before the public node knows the target's circuit address (identify
push on its way): sends are retried, this many times at most, until one is answered."""


class Daemon:
    """An ``aiop2p`` daemon run with ``--json`` in a namespace; its stdout lines kept."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.stderr = b""
        self._changed = asyncio.Event()
        self._tasks = [
            asyncio.get_running_loop().create_task(self._read()),
            asyncio.get_running_loop().create_task(self._read_stderr()),
        ]

    @classmethod
    async def start(cls, host: Host, env: dict[str, str], *args: str) -> Daemon:
        proc = await asyncio.create_subprocess_exec(
            *host.command(*CLI, *args),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                obj = json.loads(line)
            except ValueError:
                obj = {"text": line.decode(errors="replace")}
            self.lines.append(obj if isinstance(obj, dict) else {"value": obj})
            self._changed.set()
        self._changed.set()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(1 << 16):
            self.stderr = (self.stderr + chunk)[-(1 << 16) :]

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], cap: float = LINE_CAP
    ) -> dict[str, Any]:
        """The first line (already printed or to come) for which ``predicate`` holds."""
        seen = 0
        async with asyncio.timeout(cap):
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                if self.proc.returncode is not None:
                    raise AssertionError(f"exited: {self.lines} {self.stderr!r}")
                self._changed.clear()
                await self._changed.wait()

    def count(self, predicate: Callable[[dict[str, Any]], bool]) -> int:
        return sum(1 for line in self.lines if predicate(line))

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for task in self._tasks:
            try:
                async with asyncio.timeout(5):
                    await task
            except TimeoutError:
                task.cancel()


def cli_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), PYTHONUNBUFFERED="1")
    return env


async def send_by_id(
    host: Host, env: dict[str, str], peer_id: str, relay_addr: str, n: int
) -> tuple[int, dict[str, Any] | str, float]:
    """One ``aiop2p send`` to a bare peer id: exit status, answer (or stderr), seconds."""
    started = time.monotonic()
    request = json.dumps({"n": n})
    argv = [*CLI, "send", "--json", peer_id, request, "--bootstrap", relay_addr, "--timeout", "10"]
    proc = await asyncio.create_subprocess_exec(
        *host.command(*argv),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        async with asyncio.timeout(40):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        return proc.returncode or 1, err.decode(errors="replace").strip(), elapsed
    answer: dict[str, Any] = json.loads(out.decode().splitlines()[0])
    return 0, answer, elapsed


async def send_until_ok(
    host: Host, env: dict[str, str], peer_id: str, relay_addr: str, n: int
) -> tuple[dict[str, Any], float, int]:
    """Sends until one is answered (at most ``SEND_ATTEMPTS``): the answer, the seconds
    of the send that succeeded, and how many sends it took."""
    failures: list[str] = []
    for attempt in range(1, SEND_ATTEMPTS + 1):
        code, answer, elapsed = await send_by_id(host, env, peer_id, relay_addr, n)
        if code == 0:
            assert isinstance(answer, dict)
            return answer, elapsed, attempt
        failures.append(str(answer))
    raise AssertionError(f"no answer in {SEND_ATTEMPTS} sends: {failures}")
