"""What every ``aiop2p`` command shares: output, key loading, one-line errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..identity import KeyPair

__all__ = [
    "Output",
    "default_address_book_path",
    "default_key_path",
    "describe",
    "load_key",
    "stop_on_signals",
]


def default_key_path() -> Path:
    """``$XDG_DATA_HOME/aiop2p/identity.key`` (``~/.local/share`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "aiop2p" / "identity.key"


def default_address_book_path() -> Path:
    """The address book of the persisted identity, next to its key file."""
    return default_key_path().with_name("address-book.json")


def load_key(path: str | None) -> KeyPair:
    return KeyPair.load_or_generate(Path(path) if path else default_key_path())


class Output:
    """Human text on stdout, or one JSON object per line with ``--json``.

    Notices and prompts meant for a person go to stderr in text mode, so that stdout
    stays the command's result; with ``--json`` they are JSON lines on stdout too.
    """

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, text: str, **fields: object) -> None:
        if self.as_json:
            print(json.dumps(fields), flush=True)
        else:
            print(text, flush=True)

    def notice(self, text: str, **fields: object) -> None:
        if self.as_json:
            print(json.dumps(fields), flush=True)
        else:
            print(text, file=sys.stderr, flush=True)

    def error(self, command: str, message: str, type_name: str) -> None:
        """The one-line failure report: stderr always, plus a JSON line with ``--json``."""
        message = one_line(message)
        if self.as_json:
            print(json.dumps({"error": message, "type": type_name}), flush=True)
        print(f"aiop2p {command}: {message}", file=sys.stderr, flush=True)


def one_line(text: str) -> str:
    return " ".join(text.split())


def describe(exc: BaseException) -> str:
    """One line for the user: OS errors without the ``[Errno N]`` noise."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    message = one_line(str(exc))  # exactly one line, whatever the message holds
    return message or type(exc).__name__


@contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (handlers removed after).

    Install it before starting up, so a signal arriving meanwhile still means a clean stop.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
