"""What ``aiop2p serve`` logs about refused and failed requests, rate-limited.

A flood of refusals (a peer the firewall rejects, an overloaded node, a handler that
raises on every request) must not become a flood of output: at most
``MAX_LOG_LINES_PER_SECOND`` lines are written per one-second window; the rest are
counted, and one line at the window's end says how many were left out.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from ._common import Output

__all__ = ["MAX_LOG_LINES_PER_SECOND", "RateLimitedLog", "routed_logging"]

MAX_LOG_LINES_PER_SECOND: Final = 10
WINDOW_SECONDS: Final = 1.0


class RateLimitedLog:
    """Log lines through :meth:`Output.log`, at most ``max_lines`` per window; the lines
    over the bound become one "… and K more" line when the window ends."""

    def __init__(
        self,
        out: Output,
        *,
        max_lines: int = MAX_LOG_LINES_PER_SECOND,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._out = out
        self._max = max_lines
        self._loop = asyncio.get_running_loop()
        self._clock = clock or self._loop.time
        self._window_end = float("-inf")
        self._shown = 0
        self._left_out = 0
        self._timer: asyncio.TimerHandle | None = None

    def write(self, text: str, **fields: object) -> None:
        now = self._clock()
        if now >= self._window_end:
            self._summarize()
            self._window_end = now + WINDOW_SECONDS
            self._shown = 0
        if self._shown < self._max:
            self._shown += 1
            self._out.log(text, **fields)
            return
        self._left_out += 1
        if self._timer is None:  # the count goes out when the window ends
            self._timer = self._loop.call_later(self._window_end - now, self._summarize)

    def _summarize(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        count, self._left_out = self._left_out, 0
        if count:
            self._out.log(
                f"aiop2p serve: … and {count} more (at most {self._max} log lines a second)",
                more=count,
            )

    def close(self) -> None:
        """Say how many were left out in the last window, if any."""
        self._summarize()


class _Handler(logging.Handler):
    """Library log records (a handler's traceback, the firewall's warnings) as log lines."""

    def __init__(self, log: RateLimitedLog, as_json: bool) -> None:
        super().__init__(logging.WARNING)
        self._log = log
        self._as_json = as_json
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        trace = "".join(traceback.format_exception(*record.exc_info)) if record.exc_info else ""
        text = f"aiop2p serve: {record.levelname.lower()}: {message}"
        if trace and not self._as_json:
            text += "\n" + trace.rstrip("\n")
        fields: dict[str, object] = {"log": record.levelname.lower(), "message": message}
        if trace:
            fields["traceback"] = trace
        if threading.get_ident() == self._thread:
            self._log.write(text, **fields)
        else:
            self._loop.call_soon_threadsafe(lambda: self._log.write(text, **fields))


@contextmanager
def routed_logging(log: RateLimitedLog, as_json: bool) -> Iterator[None]:
    """Within the block, warnings and errors of the ``aiop2p`` logger go to ``log``."""
    logger = logging.getLogger("aiop2p")
    handler = _Handler(log, as_json)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
