"""The event loop ``aiop2p`` runs on: uvloop when it is installed (it is, in the dev
extra), asyncio's default with ``--no-uvloop`` before the command."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiop2p.cli.main import loop_factory, main

from .harness import LOOPBACK, RUN_TIMEOUT, Result, client_of, run, run_process, serve_process

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the dev extra except on Windows
    uvloop = None  # type: ignore[assignment]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    """``main`` freezes the heap it finds; the test process's is given back afterwards."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_uvloop_unless_no_uvloop_precedes_the_command() -> None:
    uv = None if uvloop is None else uvloop.new_event_loop
    assert loop_factory(["id"]) is uv
    assert loop_factory([]) is uv
    assert loop_factory(["--no-uvloop", "id"]) is None
    assert loop_factory(["--help", "--no-uvloop"]) is None
    # After the command it is not the top-level flag (and ``run`` refuses it there).
    assert loop_factory(["send", "/ip4/127.0.0.1/tcp/1", "--no-uvloop"]) is uv


@pytest.mark.parametrize("flags", [[], ["--no-uvloop"]], ids=["uvloop", "default"])
def test_main_runs_a_command_on_either_loop(
    flags: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*flags, "id", "--json", "--key", str(tmp_path / "k")]) == 0
    assert '"peer_id": "12D3KooW' in capsys.readouterr().out


def test_main_freezes_the_heap_of_the_imports(tmp_path: Path) -> None:
    assert gc.get_freeze_count() == 0
    assert main(["--no-uvloop", "id", "--key", str(tmp_path / "k")]) == 0
    # The modules' objects at least (~50,000 in the command's own process).
    assert gc.get_freeze_count() > 10_000


async def test_no_uvloop_after_the_command_is_a_usage_error() -> None:
    result = await run("id", "--no-uvloop")
    assert result.returncode == 2 and "unrecognized arguments: --no-uvloop" in result.stderr


async def test_help_documents_the_flag() -> None:
    result = await run("--help")
    result.assert_ok()
    assert "--no-uvloop" in result.stdout


def _maps_uvloop(pid: int) -> bool | None:
    """Whether the process has uvloop's extension mapped (None: no /proc here)."""
    maps = Path(f"/proc/{pid}/maps")
    if not maps.exists():  # pragma: no cover - Linux has /proc
        return None
    return "/uvloop/" in maps.read_text()


@pytest.mark.parametrize("flags", [[], ["--no-uvloop"]], ids=["uvloop", "default"])
async def test_serve_process_answers_and_stops_on_either_loop(flags: list[str]) -> None:
    """The console script on its loop: serves a request, stops cleanly on SIGTERM."""
    args = [*flags, "serve", "--json", "--no-mdns", "--default-rule", "allow", "--echo"]
    async with serve_process(*args, "--listen", LOOPBACK) as (proc, addr):
        loaded = _maps_uvloop(proc.pid)
        if loaded is not None:
            assert loaded is (uvloop is not None and not flags)
        async with client_of(addr) as (client, peer):
            assert await client.send_request(peer, b'"hi"') == b'"hi"'
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(RUN_TIMEOUT):
            out, err = await proc.communicate()
    assert proc.returncode is not None
    Result(proc.returncode, out.decode(), err.decode()).assert_ok()


async def test_send_process_on_the_default_loop() -> None:
    async with serve_process(
        "serve", "--json", "--no-mdns", "--default-rule", "allow", "--echo", "--listen", LOOPBACK
    ) as (_, addr):
        result = await run_process("--no-uvloop", "send", addr, '{"a": 1}')
        result.assert_ok()
        assert result.stdout == '{"a": 1}\n'
