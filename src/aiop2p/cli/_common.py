"""What every ``aiop2p`` command shares: output, key loading, dialing, one-line errors."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, TextIO

from ..config import AutonatConfig, KadConfig, NodeConfig
from ..errors import InvalidArgumentError, InvalidMultiaddrError, InvalidPeerIdError
from ..identity import KeyPair, PeerId
from ..multiaddr import Multiaddr
from ..network import DEFAULT_PROTOCOL, Network
from ..network.codecs import Codec, RawCodec
from ..network.firewall import FirewallRules

__all__ = [
    "MAX_QUEUED_OUTPUT_BYTES",
    "OUTPUT_DRAIN_TIMEOUT_SECONDS",
    "PROGRESS_INTERVAL_SECONDS",
    "TARGET_HELP",
    "CommandIO",
    "Output",
    "Progress",
    "add_autonat_private_argument",
    "add_dht_arguments",
    "add_protocol_argument",
    "autonat_config",
    "default_address_book_path",
    "default_key_path",
    "default_relay_key_path",
    "describe",
    "dht_config",
    "dialing_network",
    "load_key",
    "parse_target",
    "stop_on_signals",
]

MAX_QUEUED_OUTPUT_BYTES: Final = 1 << 20
"""Output waiting for a slow stdout/stderr (``serve``), bytes; further lines are dropped
and counted, so output nobody reads never blocks the node (one longer line is let
through when nothing else waits)."""
OUTPUT_DRAIN_TIMEOUT_SECONDS: Final = 2.0
"""At exit, how long the queued output lines may take to be written before they are
given up (the reader may never come back)."""
PROGRESS_INTERVAL_SECONDS: Final = 0.1
"""A progress line is rewritten at most this often (a terminal need not redraw faster)."""


def default_key_path() -> Path:
    """``$XDG_DATA_HOME/aiop2p/identity.key`` (``~/.local/share`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "aiop2p" / "identity.key"


def default_relay_key_path() -> Path:
    """``relay.key`` next to the default identity: a relay and a peer run on one machine
    must not share a peer id (a peer cannot dial itself through itself)."""
    return default_key_path().with_name("relay.key")


def default_address_book_path() -> Path:
    """The address book of the persisted identity, next to its key file."""
    return default_key_path().with_name("address-book.json")


def load_key(path: str | None, *, default: Path | None = None) -> KeyPair:
    """The key at ``path``, created if missing — but only in an existing directory: a
    mistyped ``--key`` is an error, not a new identity in new directories.  Without a
    path, the key at ``default`` (``default_key_path()``), its directory created."""
    if path is None:
        return KeyPair.load_or_generate(default or default_key_path())
    file = Path(path)
    if not file.parent.exists():
        raise InvalidArgumentError(f"key file {file}: directory {file.parent} does not exist")
    return KeyPair.load_or_generate(file)


def dialing_network(
    key: KeyPair | None = None,
    *,
    codec: Codec | None = None,
    timeout: float | None = None,
    kad: KadConfig | None = None,
    protocol: str = DEFAULT_PROTOCOL,
) -> Network[Any, Any]:
    """The network ``ping``, ``perf`` and ``send`` dial through, so each reaches every
    address kind the library does (TCP, WebSocket, DNS, circuit addresses via the relay
    client), and peers by id alone with ``kad`` (the DHT).  It only asks: nothing may
    send it requests, no mDNS.  ``timeout`` (seconds) bounds each dial, handshake and
    request; ``protocol`` is the request protocol."""
    overrides: dict[str, Any] = {"protocols": (protocol,)}
    node = NodeConfig(kad=kad)
    if timeout is not None:
        overrides["request_timeout"] = timeout
        node = replace(node, dial_timeout=timeout, handshake_timeout=timeout)
    return Network(
        key,
        firewall=FirewallRules.allow_none(),
        codec=codec or RawCodec(),
        mdns=None,
        node=node,
        **overrides,
    )


def add_dht_arguments(parser: Any, *, mode_default: str | None = None) -> None:
    """``--bootstrap`` (repeatable) and, with ``mode_default``, ``--dht-mode``."""
    parser.add_argument(
        "--bootstrap",
        action="append",
        metavar="MULTIADDR",
        help="join the Kademlia DHT through this peer (its address with /p2p/<id>); repeatable",
    )
    if mode_default is not None:
        parser.add_argument(
            "--dht-mode",
            choices=("auto", "client", "server"),
            default=None,
            help="server answers DHT queries and is findable by its id from the DHT alone "
            "(public or private deployments: a LAN, loopback); client only asks; auto is a "
            "client until AutoNAT confirms an address of ours publicly reachable "
            f"(default: {mode_default} when the DHT is on)",
        )


def add_autonat_private_argument(parser: Any) -> None:
    parser.add_argument(
        "--autonat-private-addrs",
        action="store_true",
        help="AutoNAT checks and dials private and loopback addresses too (labs and "
        "private deployments; on the Internet only public addresses are checked)",
    )
    parser.add_argument(
        "--autonat-confidence",
        type=int,
        default=AutonatConfig().confidence,
        metavar="N",
        help="agreeing AutoNAT servers needed for a verdict on an address (default: "
        f"{AutonatConfig().confidence}; 1 for a private deployment with one public node)",
    )


def autonat_config(args: Any, *, client: bool = True) -> AutonatConfig:
    private = bool(args.autonat_private_addrs)
    return AutonatConfig(
        client=client,
        allow_private_addrs=private,
        allow_loopback_addrs=private,
        confidence=args.autonat_confidence,
    )


MAX_PROTOCOL_ID_CHARS: Final = 256


def protocol_id(text: str) -> str:
    """A request protocol id as ``--protocol`` takes it: ``/`` first, no whitespace."""
    if not text.startswith("/") or len(text) > MAX_PROTOCOL_ID_CHARS or not text.isprintable():
        raise argparse.ArgumentTypeError(
            f"a protocol id starts with / and has at most {MAX_PROTOCOL_ID_CHARS} "
            f"printable characters: {text!r}"
        )
    if any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"a protocol id has no spaces: {text!r}")
    return text


def add_protocol_argument(parser: Any) -> None:
    """``--protocol``: the request protocol id, ``/p2p/1.0.0`` by default."""
    parser.add_argument(
        "--protocol",
        type=protocol_id,
        default=DEFAULT_PROTOCOL,
        metavar="ID",
        help="the request-response protocol id",
    )


def dht_config(
    bootstrap: list[str] | None, mode: str | None, *, default_mode: str, always: bool = False
) -> KadConfig | None:
    """The DHT settings the flags ask for; None when neither flag is given (and not
    ``always``)."""
    if not bootstrap and mode is None and not always:
        return None
    addrs = tuple(Multiaddr(a) for a in bootstrap or ())
    for addr in addrs:
        if addr.peer_id is None:
            raise InvalidArgumentError(f"--bootstrap needs the peer's /p2p/<id>: {addr}")
    chosen = mode or default_mode
    if chosen not in ("client", "server", "auto"):
        raise InvalidArgumentError(f"--dht-mode must be auto, client or server: {chosen}")
    return KadConfig(mode=chosen, bootstrap=addrs)  # type: ignore[arg-type]


TARGET_HELP: Final = "a multiaddr, or a bare peer id with --bootstrap (found through the DHT)"


def parse_target(text: str, bootstrap: list[str] | None) -> Multiaddr | PeerId:
    """A multiaddr, or a bare peer id (found through the DHT, so ``--bootstrap`` is
    required)."""
    if text.startswith("/"):
        return Multiaddr(text)
    try:
        peer = PeerId.from_string(text)
    except InvalidPeerIdError as exc:
        raise InvalidMultiaddrError(
            f"{text!r} is neither a multiaddr nor a peer id ({exc})"
        ) from None
    if not bootstrap:
        raise InvalidArgumentError(
            f"{text} is a bare peer id: give --bootstrap MULTIADDR to find it through the DHT"
        )
    return peer


@dataclass(frozen=True)
class CommandIO:
    """What a command talks to: by default the process's stdin, stdout, stderr and its
    SIGINT/SIGTERM.  Running a command in-process (the tests do) gives it other streams
    and a ``stop`` event instead of signals."""

    stdin: int = 0
    """The file descriptor the firewall prompt reads answers from."""
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stop: asyncio.Event | None = None
    """Set to stop ``serve`` and ``relay``; ``None``: SIGINT and SIGTERM stop them."""


class Output:
    """Human text on stdout, or one JSON object per line with ``--json``.

    Notices and prompts meant for a person go to stderr in text mode, so that stdout
    stays the command's result; with ``--json`` they are JSON lines on stdout too.
    """

    def __init__(self, as_json: bool, io: CommandIO) -> None:
        self.as_json = as_json
        self.io = io
        self.dropped_lines = 0
        """Lines dropped since the last "dropped" notice (see :meth:`nonblocking`)."""
        self._writer: _LineWriter | None = None

    def emit(self, text: str, **fields: object) -> None:
        self._write(self.io.stdout, json.dumps(fields) if self.as_json else text)

    def notice(self, text: str, **fields: object) -> None:
        if self.as_json:
            self._write(self.io.stdout, json.dumps(fields))
        else:
            self._write(self.io.stderr, text)

    def log(self, text: str, **fields: object) -> None:
        """A log line (refusals, handler errors): stderr always, a JSON object with
        ``--json`` — stdout stays the command's results."""
        self._write(self.io.stderr, json.dumps(fields) if self.as_json else text)

    @contextmanager
    def nonblocking(self, max_queued_bytes: int = MAX_QUEUED_OUTPUT_BYTES) -> Iterator[None]:
        """Within the block, lines go through a bounded queue to a writer thread, so a
        stdout or stderr nobody reads never blocks the event loop.  Lines beyond
        ``max_queued_bytes`` are dropped; once there is room again a notice says how many
        (``{"dropped_lines": N}`` with ``--json``).  At the end the queue is drained for
        at most ``OUTPUT_DRAIN_TIMEOUT_SECONDS``."""
        writer = _LineWriter(max_queued_bytes)
        self._writer = writer
        try:
            yield
        finally:
            if self.dropped_lines:
                self._offer_dropped(writer)
            self._writer = None
            writer.close(OUTPUT_DRAIN_TIMEOUT_SECONDS)

    def _write(self, stream: TextIO, line: str) -> None:
        writer = self._writer
        if writer is None:
            print(line, file=stream, flush=True)
            return
        # The count goes out before the next line, so the reader sees where lines are missing.
        behind = self.dropped_lines > 0 and not self._offer_dropped(writer)
        if behind or not writer.offer(stream, line):
            self.dropped_lines += 1

    def _offer_dropped(self, writer: _LineWriter) -> bool:
        count, io = self.dropped_lines, self.io
        if self.as_json:
            stream, line = io.stdout, json.dumps({"dropped_lines": count})
        else:
            stream, line = io.stderr, f"aiop2p: {count} output lines dropped (not read in time)"
        if not writer.offer(stream, line):
            return False
        self.dropped_lines = 0
        return True

    def error(self, command: str, message: str, type_name: str) -> None:
        """The one-line failure report: stderr always, plus a JSON line with ``--json``."""
        message = one_line(message)
        io = self.io
        if self.as_json:
            print(json.dumps({"error": message, "type": type_name}), file=io.stdout, flush=True)
        print(f"aiop2p {command}: {message}", file=io.stderr, flush=True)


class Progress:
    """One status line on stderr, rewritten in place while a long command runs (``perf``,
    ``discover``) and erased when it ends — only on a terminal: a pipe, a file or ``--json``
    gets nothing, since their reader is a program that wants the results alone."""

    def __init__(self, out: Output, command: str) -> None:
        self._stream = out.io.stderr
        self.enabled = not out.as_json and self._stream.isatty()
        self._prefix = f"aiop2p {command}: "
        self._shown_at: float | None = None

    def show(self, text: str) -> None:
        """Replace the line with ``text``, unless it was replaced a moment ago."""
        if not self.enabled:
            return
        now = time.monotonic()
        if self._shown_at is not None and now - self._shown_at < PROGRESS_INTERVAL_SECONDS:
            return
        self._shown_at = now
        self._stream.write(f"\r\x1b[K{self._prefix}{text}")  # to the line start, clear it
        self._stream.flush()

    @contextmanager
    def ticking(self, show: Callable[[], None], interval: float = 0.5) -> Iterator[None]:
        """Call ``show`` now and every ``interval`` seconds while the block runs, so that a
        countdown moves when nothing else happens."""
        if not self.enabled:
            yield
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def tick() -> None:
            nonlocal handle
            show()
            handle = loop.call_later(interval, tick)

        tick()
        try:
            yield
        finally:
            assert handle is not None
            handle.cancel()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._shown_at is not None:
            self._stream.write("\r\x1b[K")  # the results, or the error line, start clean
            self._stream.flush()


class _LineWriter:
    """Lines written to their file descriptors by a daemon thread, fed by a bounded queue.

    Like :class:`~aiop2p.cli.firewall_prompt.LineReader` it uses ``os.write``: a thread
    blocked there holds no lock that interpreter shutdown needs and never keeps the
    process alive, and the descriptors stay blocking (a non-blocking flag would leak to
    whoever shares the terminal or pipe).
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._queued_bytes = 0
        self._lock = threading.Lock()  # the writer thread gives the bytes back
        self._queue: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="aiop2p output", daemon=True)
        self._thread.start()

    def offer(self, stream: TextIO, line: str) -> bool:
        """Queue ``line`` for ``stream``; False (nothing queued) when the queue is full."""
        data = (line + "\n").encode(stream.encoding or "utf-8", errors="backslashreplace")
        with self._lock:
            if self._queued_bytes and self._queued_bytes + len(data) > self._max_bytes:
                return False
            self._queued_bytes += len(data)
        self._queue.put((stream.fileno(), data))
        return True

    def _run(self) -> None:
        broken: set[int] = set()  # a closed pipe: nobody will ever read the rest
        while (item := self._queue.get()) is not None:
            fd, data = item
            view = memoryview(data)
            while view and fd not in broken:
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:  # someone sharing the descriptor made it non-blocking
                    select.select([], [fd], [])
                except OSError:
                    broken.add(fd)
            with self._lock:
                self._queued_bytes -= len(data)

    def close(self, timeout: float) -> None:
        """Let the queued lines be written, waiting ``timeout`` seconds at most."""
        self._queue.put(None)
        self._thread.join(timeout)


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
def stop_on_signals(io: CommandIO) -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (handlers removed after);
    in-process, ``io.stop`` instead (signal handlers belong to the process).

    Install it before starting up, so a signal arriving meanwhile still means a clean stop.
    """
    if io.stop is not None:
        yield io.stop
        return
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
