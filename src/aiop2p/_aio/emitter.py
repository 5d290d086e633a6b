"""``Emitter[E]``: one event, many synchronous subscribers.

The node's connection events and the services' events (relay client and server, DCUtR,
mDNS) all fan out this way.  Subscribers run in order, inside the code that emits (often
an ``asyncio.Protocol`` callback), so an exception in one is logged and does not reach
the emitter or the subscribers after it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Emitter"]

log = logging.getLogger(__name__)

E = TypeVar("E")


class Emitter(Generic[E]):
    """Calls every subscriber with each emitted event; ``name`` is used in log messages."""

    __slots__ = ("_name", "_subscribers")

    def __init__(self, name: str) -> None:
        self._name = name
        self._subscribers: list[Callable[[E], None]] = []

    def subscribe(self, callback: Callable[[E], None]) -> None:
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[E], None]) -> None:
        """Remove ``callback`` (once per subscription); absent callbacks are ignored."""
        with contextlib.suppress(ValueError):
            self._subscribers.remove(callback)

    def emit(self, event: E) -> None:
        # A copy: a subscriber may (un)subscribe while being called.
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("%s subscriber %r failed", self._name, callback)

    def __repr__(self) -> str:
        return f"<Emitter {self._name} ({len(self._subscribers)} subscribers)>"
