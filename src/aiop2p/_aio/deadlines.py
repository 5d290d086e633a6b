"""Deadlines for many things with the same timeout, each set on one timer.

``asyncio.timeout`` arms and cancels a timer per use; at thousands of requests per
second that is measurable.  Requests of one network share one timeout, so their
deadlines arrive in order: a deque and a single timer armed for the oldest deadline
suffice (:class:`DeadlineQueue`).  Finished entries are dropped from the front as new ones
come in, so the deque stays as short as the number of requests in flight (plus any
finished out of order).

:class:`ConnectionDeadlines` applies the same idea to the deadlines of one established
connection (stream negotiation, lingering streams, idleness) without a loop: time is an
argument, so they are tested without sockets or sleeps, and the connection arms one
timer for all of them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

__all__ = ["Cancellable", "ConnectionDeadlines", "Deadline", "DeadlineQueue", "Expired"]

K = TypeVar("K")
T = TypeVar("T")


class Cancellable(Protocol):
    """What a deadline cancels: a task, or a callback-driven exchange that has none."""

    def cancel(self) -> object: ...


class Deadline:
    """One task's deadline; ``expired`` tells a cancellation that came from it."""

    __slots__ = ("active", "at", "expired", "task")

    def __init__(self, at: float, task: Cancellable) -> None:
        self.at = at
        self.task: Cancellable | None = task
        self.active = True
        self.expired = False

    def finish(self) -> None:
        # Drop the task: the task's frame holds this entry, and a cycle would keep every
        # finished request alive until the cyclic garbage collector runs.
        self.active = False
        self.task = None


class DeadlineQueue:
    """Cancels each registered task ``timeout`` seconds after it registered, unless it
    finished first (``Deadline.finish``)."""

    __slots__ = ("_entries", "_loop", "_timer", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._entries: deque[Deadline] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, task: Cancellable) -> Deadline:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        entries = self._entries
        while entries and not entries[0].active:
            entries.popleft()
        entry = Deadline(loop.time() + self.timeout, task)
        entries.append(entry)
        if self._timer is None:
            self._timer = loop.call_at(entry.at, self._expire)
        return entry

    def _expire(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        entries = self._entries
        while entries and (entries[0].at <= now or not entries[0].active):
            entry = entries.popleft()
            if entry.active and entry.task is not None:
                entry.expired = True
                entry.task.cancel()
                entry.finish()
        if entries:
            self._timer = loop.call_at(entries[0].at, self._expire)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._entries.clear()


@dataclass(slots=True)
class Expired(Generic[K, T]):
    """What :meth:`ConnectionDeadlines.handle_timer` found due."""

    negotiations: list[K] = field(default_factory=list)
    """Streams whose protocol negotiation ran out of time, oldest first."""
    lingering: list[T] = field(default_factory=list)
    """Lingering streams whose grace period is over, oldest first."""
    idle: bool = False
    """The connection has had no stream for the whole idle timeout."""


class ConnectionDeadlines(Generic[K, T]):
    """The timed duties of one established connection, as ``get_timer``/``handle_timer``.

    Nothing is cancelled on the hot path: a stream that finishes negotiating leaves a
    dict (O(1)), and a connection that gets busy again is only found busy when its idle
    deadline comes (``handle_timer(busy=True)``), then forgotten until
    :meth:`became_idle`.  Negotiations share one timeout, so the dict's insertion order
    is deadline order.  Lingering streams are kept in call order (one timeout per caller
    in practice).  Each registering method returns its deadline so that the driver can
    move its one timer earlier if needed, without recomputing :meth:`get_timer`.
    """

    __slots__ = (
        "_idle_check",
        "_idle_since",
        "_lingering",
        "_negotiating",
        "idle_timeout",
        "negotiation_timeout",
    )

    def __init__(self, *, negotiation_timeout: float, idle_timeout: float | None) -> None:
        self.negotiation_timeout = negotiation_timeout
        self.idle_timeout = idle_timeout
        """None: never close for idleness."""
        self._negotiating: dict[K, float] = {}
        self._lingering: deque[tuple[float, T]] = deque()
        self._idle_since: float | None = None
        self._idle_check = 0.0

    def start_negotiation(self, key: K, now: float) -> float:
        deadline = now + self.negotiation_timeout
        self._negotiating[key] = deadline
        return deadline

    def end_negotiation(self, key: K) -> None:
        self._negotiating.pop(key, None)

    def linger(self, item: T, deadline: float) -> float:
        self._lingering.append((deadline, item))
        return deadline

    def became_idle(self, now: float) -> float | None:
        """The connection has no stream since ``now``; None if idleness never closes it."""
        if self.idle_timeout is None:
            return None
        self._idle_since = now
        self._idle_check = now + self.idle_timeout
        return self._idle_check

    def get_timer(self) -> float | None:
        """The earliest time :meth:`handle_timer` has something to do (None: nothing)."""
        at: float | None = None
        if self._negotiating:
            at = next(iter(self._negotiating.values()))
        if self._lingering:
            linger_at = self._lingering[0][0]
            at = linger_at if at is None or linger_at < at else at
        if self._idle_since is not None and (at is None or self._idle_check < at):
            at = self._idle_check
        return at

    def handle_timer(self, now: float, *, busy: bool, keep_alive: bool) -> Expired[K, T]:
        """Take out everything due at ``now``.

        ``busy``: the connection has streams now.  ``keep_alive``: a service holds the
        connection open; its idleness is checked again one timeout later.
        """
        expired: Expired[K, T] = Expired()
        negotiating = self._negotiating
        while negotiating:
            key, deadline = next(iter(negotiating.items()))
            if deadline > now:
                break
            del negotiating[key]
            expired.negotiations.append(key)
        lingering = self._lingering
        while lingering and lingering[0][0] <= now:
            expired.lingering.append(lingering.popleft()[1])
        idle_since = self._idle_since
        if idle_since is not None and self._idle_check <= now:
            assert self.idle_timeout is not None
            if busy:
                self._idle_since = None  # became_idle starts the count again
            elif keep_alive:
                self._idle_check = now + self.idle_timeout
            elif idle_since + self.idle_timeout <= now:
                self._idle_since = None
                expired.idle = True
            else:
                self._idle_check = idle_since + self.idle_timeout
        return expired

    def clear(self) -> None:
        self._negotiating.clear()
        self._lingering.clear()
        self._idle_since = None
