"""What a user meets first, in-process (see ``harness.py``): ``--version``, help texts that
are whole and show every default, and the progress of ``perf`` and ``discover`` — on a
terminal only, never on a pipe or with ``--json``.  The console script and
``python -m aiop2p`` are in ``test_process.py``."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

import aiop2p
from aiop2p.cli.main import DESCRIPTION, HelpFormatter
from aiop2p.cli.startup import command_name
from aiop2p.identity import KeyPair
from aiop2p.multiaddr import Multiaddr
from aiop2p.services.mdns import MdnsConfig, MdnsEvent, PeerDiscovered

from .harness import KIB, LOOPBACK, MIB, run, serve

pytestmark = pytest.mark.timeout(60)

cli_main = importlib.import_module("aiop2p.cli.main")  # aiop2p.cli.main is also the function

ERASE = "\r\x1b[K"
"""What a progress line starts with, and what is left of it at the end."""


def _parsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli_main._parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {"aiop2p": parser, **sub.choices}


COMMANDS = sorted(_parsers())


async def test_version_is_the_installed_distributions() -> None:
    result = await run("--version")
    result.assert_ok()
    assert result.stdout == f"aiop2p {importlib.metadata.version('aiop2p')}\n"
    assert aiop2p.__version__ == importlib.metadata.version("aiop2p")


@pytest.mark.parametrize("command", COMMANDS)
async def test_help_is_whole_and_shows_every_default(command: str) -> None:
    parser = _parsers()[command]
    result = await run(*([] if command == "aiop2p" else [command]), "--help")
    result.assert_ok()
    text = " ".join(result.stdout.split())  # argparse wraps lines anywhere
    description = parser.description
    assert description is not None and description.endswith("."), description
    assert " ".join(description.split()) in text  # whole, not its first line
    formatter = HelpFormatter(parser.prog)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help, f"{command} {action.dest}: no help"
        if action.default in (None, False, argparse.SUPPRESS):
            continue  # nothing to show (its help says what happens without it)
        shown = formatter._get_help_string(action)
        assert shown is not None and "default" in shown, f"{command} {action.dest}: {shown}"
        if "%(default)s" in shown:
            assert f"(default: {action.default})" in text, f"{command} {action.dest}"


async def test_help_lists_the_description_whole() -> None:
    result = await run("--help")
    assert " ".join(DESCRIPTION.split()) in " ".join(result.stdout.split())
    assert "ping or measure any libp2p peer." in " ".join(result.stdout.split())


def test_the_formatter_adds_a_default_only_where_none_is_said() -> None:
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--a", default=3, help="three")
    parser.add_argument("--b", default=3, help="three (default: three)")
    parser.add_argument("--c", help="none")
    parser.add_argument("--d", action="store_true", help="a flag")
    text = " ".join(parser.format_help().split())
    assert "three (default: 3)" in text
    assert "three (default: three)" in text and "(default: three) (default" not in text
    assert "none (default" not in text and "a flag (default" not in text


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        ("/usr/lib/python3/site-packages/pytest/__main__.py", None),  # python -m: see below
        ("/nowhere/bin/aiop2p", "/nowhere/bin/aiop2p"),  # not what the PATH runs
        ("embedded", "aiop2p"),
    ],
)
def test_suggested_commands_name_the_running_script(argv0: str, expected: str | None) -> None:
    name = command_name(argv0)
    assert name == (expected or f"{shlex.quote(sys.executable)} -m aiop2p")


# -- progress ----------------------------------------------------------------------------


async def test_perf_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    async with serve("--listen", LOOPBACK) as server:
        args = ["perf", server.addr, "--upload", str(MIB), "--download", str(256 * KIB)]
        shown = await run(*args, terminal=True)
        assert shown.returncode == 0 and shown.stdout.startswith("upload ")
        assert shown.stderr.startswith(f"{ERASE}aiop2p perf: dialling")
        assert shown.stderr.endswith(ERASE)  # erased before the result is printed
        for quiet in (await run(*args), await run(*args, "--json", terminal=True)):
            quiet.assert_ok()  # nothing on stderr: a pipe, or --json
        (line,) = quiet.json_lines()
        assert line["download_bytes"] == 256 * KIB


@pytest.fixture
def found_peer(monkeypatch: pytest.MonkeyPatch) -> PeerDiscovered:
    """``discover`` in the CLI finds one peer without any multicast (the mDNS service is
    replaced: tests must not multicast on the host's interfaces)."""
    found = PeerDiscovered(KeyPair.generate().peer_id, (Multiaddr("/ip4/10.0.0.7/tcp/4001"),))

    async def fake_discover(seconds: float, **kwargs: Any) -> list[PeerDiscovered]:
        assert isinstance(kwargs["config"], MdnsConfig)
        on_event: Any = kwargs.get("on_event")
        if on_event is not None:
            event: MdnsEvent = found
            on_event(event)
        return [found]

    monkeypatch.setattr(cli_main, "discover", fake_discover)
    return found


async def test_discover_shows_progress_on_a_terminal_only(found_peer: PeerDiscovered) -> None:
    shown = await run("discover", "--seconds", "1", terminal=True)
    assert shown.returncode == 0
    assert shown.stdout.split()[0] == str(found_peer.peer)
    assert shown.stderr.startswith(f"{ERASE}aiop2p discover: 0 peers found, 1 s left")
    assert shown.stderr.endswith(ERASE)
    quiet = await run("discover", "--seconds", "1", "--json", terminal=True)
    quiet.assert_ok()
    assert [line["peer_id"] for line in quiet.json_lines()] == [str(found_peer.peer)]
    (await run("discover", "--seconds", "1")).assert_ok()
