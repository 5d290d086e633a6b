"""Deadlines for many tasks with the same timeout, on one timer.

``asyncio.timeout`` arms and cancels a timer per use; at thousands of requests per
second that is measurable.  Requests of one network share one timeout, so their
deadlines arrive in order: a deque and a single timer armed for the oldest deadline
suffice.  Finished entries are dropped from the front as new ones come in, so the deque
stays as short as the number of requests in flight (plus any finished out of order).
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Deadline", "DeadlineQueue"]


class Deadline:
    """One task's deadline; ``expired`` tells a cancellation that came from it."""

    __slots__ = ("active", "at", "expired", "task")

    def __init__(self, at: float, task: asyncio.Task[object]) -> None:
        self.at = at
        self.task: asyncio.Task[object] | None = task
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

    def start(self, task: asyncio.Task[object]) -> Deadline:
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
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
