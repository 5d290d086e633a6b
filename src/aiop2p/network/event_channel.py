"""A bounded single-object channel with a chosen overflow policy (the seed's ``EventChannel``).

The library sends into it (requests, events); the application reads from it.  Three
policies decide what happens when the reader falls behind (:class:`ChannelSinkConfig`):

* ``BLOCK`` — the sender waits for room.  Strong delivery, but a slow reader stalls
  whoever sends (in the ``Network``: the whole event loop; docs/compat.md, "compat: a
  full Block channel waits").
* ``DROP_LATEST`` — the new item is dropped.
* ``BUFFER_LATEST`` — the newest ``capacity`` items are kept in a ring behind the
  head item; the oldest *buffered* item is evicted.

Capacities reproduce the seed exactly (compat: channel capacities), because the seed's
channel tests count on them: ``BLOCK``/``DROP_LATEST`` hold ``capacity + 1`` items;
``BUFFER_LATEST`` holds one head item plus a ring of ``capacity``.  With capacity 5 and
items #1-#10 sent to an idle reader: ``DROP_LATEST`` keeps #1-#6, ``BUFFER_LATEST`` keeps
#1 and #6-#10, ``BLOCK`` accepts #1-#6 and waits on #7.

The seed needs a driver task to pump the ring into its 1-slot channel; here the head
slot and the ring are one deque (index 0 is the head, the rest the ring), so a receive
"pulls" the next ring item for free and no driver exists.

Nothing is lost silently: every item dropped by the policy, evicted from the ring, sent
after either side closed, or still queued when the receiver closed, is counted in
:attr:`EventChannel.dropped` and logged at debug level once per burst of drops.

Both sides are the same object (``close`` is the sender's "drop", ``close_receiver``
the receiver's); :meth:`EventChannel.new` returns it twice for code written like the seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

from ..errors import ChannelClosedError, InvalidArgumentError, LimitExceededError

__all__ = ["ChannelClosedError", "ChannelSinkConfig", "EventChannel"]

_log = logging.getLogger(__name__)

T = TypeVar("T")


class ChannelSinkConfig(enum.Enum):
    """What ``send`` does when the channel is full."""

    BLOCK = "block"
    """Wait for room (backpressure onto the sender)."""
    DROP_LATEST = "drop_latest"
    """Drop the item being sent."""
    BUFFER_LATEST = "buffer_latest"
    """Keep it; evict the oldest buffered item (never the head item)."""


class EventChannel(Generic[T]):
    """Bounded channel; ``send``/``close`` for the sender, ``receive``/``async for`` for the reader.

    Several senders and several readers may share it; blocked senders (``BLOCK``) enter
    strictly in the order they started waiting, and a newcomer never overtakes them.
    """

    __slots__ = (
        "_burst",
        "_capacity",
        "_config",
        "_getters",
        "_items",
        "_limit",
        "_loop",
        "_name",
        "_putters",
        "_receiver_closed",
        "_reserved",
        "_sender_closed",
        "dropped",
    )

    def __init__(self, capacity: int, config: ChannelSinkConfig, *, name: str = "channel") -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
            raise InvalidArgumentError(f"channel capacity must be an int >= 0, not {capacity!r}")
        if not isinstance(config, ChannelSinkConfig):
            raise InvalidArgumentError(f"config must be a ChannelSinkConfig, not {config!r}")
        self._capacity = capacity
        self._config = config
        self._name = name
        # Head + queue (BLOCK/DROP_LATEST) or head + ring (BUFFER_LATEST): both hold
        # capacity + 1 items, they differ only in what happens when full.
        self._limit = capacity + 1
        self._items: deque[T] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        # BLOCK only: senders waiting for room (not yet woken), and the number woken
        # whose slot is reserved until they run.
        self._putters: deque[asyncio.Future[None]] = deque()
        self._reserved = 0
        self._loop: asyncio.AbstractEventLoop | None = None  # see _future
        self._sender_closed = False
        self._receiver_closed = False
        self._burst = 0
        self.dropped = 0
        """Items lost to the policy, to eviction, or to a closed side (see module doc)."""

    @classmethod
    def new(
        cls, capacity: int, config: ChannelSinkConfig
    ) -> tuple[EventChannel[T], EventChannel[T]]:
        """``(sender, receiver)`` like the seed; both are this one channel object."""
        ch: EventChannel[T] = cls(capacity, config)
        return ch, ch

    # -- introspection ---------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def config(self) -> ChannelSinkConfig:
        return self._config

    @property
    def closed(self) -> bool:
        """True once either side closed (no item will be accepted any more)."""
        return self._sender_closed or self._receiver_closed

    @property
    def receiver_closed(self) -> bool:
        return self._receiver_closed

    def __len__(self) -> int:
        """Items currently waiting to be received."""
        return len(self._items)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"<EventChannel {self._name} {self._config.name} cap={self._capacity} "
            f"len={len(self._items)} dropped={self.dropped} {state}>"
        )

    # -- sender side -----------------------------------------------------------------

    async def send(self, item: T) -> bool:
        """Send ``item``; True if it was accepted, False if it was dropped (and counted).

        ``BLOCK`` waits while full; the other policies never wait.  A closed channel
        (either side) drops the item.  If a blocked send is cancelled the item is not
        delivered.
        """
        if self._config is not ChannelSinkConfig.BLOCK or (
            not self._putters and len(self._items) + self._reserved < self._limit
        ):
            return self._offer(item)
        if self._sender_closed or self._receiver_closed:
            self._drop(1, "closed")
            return False
        fut = self._future()
        self._putters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                # Woken (a slot was reserved for us) but cancelled before running:
                # hand the slot on.
                self._reserved -= 1
                self._wake_putters()
            else:
                fut.cancel()
                with contextlib.suppress(ValueError):
                    self._putters.remove(fut)
            raise
        self._reserved -= 1
        if self._sender_closed or self._receiver_closed:
            self._drop(1, "closed")
            return False
        self._push(item)
        self._wake_putters()  # room may remain (several receives while we were waking up)
        return True

    def send_nowait(self, item: T) -> bool:
        """Like :meth:`send` without waiting.

        For ``BLOCK`` when full (or when earlier senders are still waiting) this raises
        :class:`LimitExceededError` and the caller keeps the item: it is neither
        delivered nor counted as dropped.
        """
        items = self._items
        if (
            len(items) + self._reserved < self._limit
            and not self._putters
            and not self._sender_closed
            and not self._receiver_closed
            and not self._burst
        ):
            # The common case, any policy (what _offer and _push do, two calls sooner):
            # room, nobody waiting ahead, no burst of drops to report.
            items.append(item)
            if self._getters:
                self._wake_getter()
            return True
        if (
            self._config is ChannelSinkConfig.BLOCK
            and not self._sender_closed
            and not self._receiver_closed
            and (self._putters or len(self._items) + self._reserved >= self._limit)
        ):
            raise LimitExceededError(
                f"{self._name} is full ({self._limit} items); use send() to wait for room"
            )
        return self._offer(item)

    def close(self) -> None:
        """The sender is done: readers drain what is queued, then see the end.

        Senders still blocked return False (their items are counted as dropped).
        """
        if self._sender_closed:
            return
        self._sender_closed = True
        self._release_all()

    def _offer(self, item: T) -> bool:
        """Non-waiting send under the channel's policy."""
        if self._sender_closed or self._receiver_closed:
            self._drop(1, "closed")
            return False
        items = self._items
        if len(items) < self._limit:
            self._push(item)
            return True
        if self._config is ChannelSinkConfig.BUFFER_LATEST and self._capacity:
            del items[1]  # the oldest buffered item; the head stays
            items.append(item)
            self._drop(1, "evicted from the ring")
            return True
        self._drop(1, "full")
        return False

    def _push(self, item: T) -> None:
        self._items.append(item)
        if self._burst:
            _log.debug("%s: dropped %d item(s) in the last burst", self._name, self._burst)
            self._burst = 0
        getters = self._getters
        while getters:
            fut = getters.popleft()
            if not fut.done():
                fut.set_result(None)
                break

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        if not self._burst:
            _log.debug("%s: dropping items (%s); total dropped %d", self._name, why, self.dropped)
        self._burst += count

    def _future(self) -> asyncio.Future[None]:
        """A future on the running loop, found once: ``asyncio.get_running_loop()`` costs
        a ``getpid`` syscall in CPython 3.11, and a reader waits once per request."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop.create_future()

    # -- receiver side ---------------------------------------------------------------

    def receive(self) -> Coroutine[Any, Any, T]:
        """The next item (``await`` it); waits while empty.

        Raises :class:`ChannelClosedError` once the sender closed and everything was
        received, or right away after :meth:`close_receiver`.
        """
        return self._receive(ChannelClosedError)

    async def _receive(self, at_end: type[Exception]) -> T:
        """:meth:`receive`, raising ``at_end`` at the end: ``async for`` gets its
        ``StopAsyncIteration`` from here, one coroutine per item instead of two."""
        while not self._items:
            if self._sender_closed or self._receiver_closed:
                raise at_end(f"{self._name} is closed")
            fut = self._future()
            self._getters.append(fut)
            try:
                await fut
            except BaseException:
                fut.cancel()
                with contextlib.suppress(ValueError):
                    self._getters.remove(fut)
                # If we were woken for an item we will not take, wake another reader.
                if self._items and not self._receiver_closed:
                    self._wake_getter()
                raise
        return self._take()

    def receive_nowait(self) -> T | None:
        """The next item, or None if none is available right now.

        Raises :class:`ChannelClosedError` when the channel is closed and drained (so a
        ``None`` always means "maybe later").
        """
        if self._items:
            return self._take()
        if self._sender_closed or self._receiver_closed:
            raise ChannelClosedError(f"{self._name} is closed")
        return None

    def close_receiver(self) -> None:
        """The reader is gone: queued and later items are dropped (and counted).

        Blocked senders return False; blocked readers raise :class:`ChannelClosedError`.
        """
        if self._receiver_closed:
            return
        self._receiver_closed = True
        if self._items:
            self._drop(len(self._items), "receiver closed")
            self._items.clear()
        self._release_all()

    def __aiter__(self) -> EventChannel[T]:
        return self

    def __anext__(self) -> Coroutine[Any, Any, T]:
        return self._receive(StopAsyncIteration)

    def _take(self) -> T:
        item = self._items.popleft()
        if self._putters:
            self._wake_putters()
        return item

    def _wake_getter(self) -> None:
        getters = self._getters
        while getters:
            fut = getters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _wake_putters(self) -> None:
        """Wake blocked senders, in order, for every free slot not already reserved."""
        putters = self._putters
        while putters and len(self._items) + self._reserved < self._limit:
            fut = putters.popleft()
            if not fut.done():
                fut.set_result(None)
                self._reserved += 1

    def _release_all(self) -> None:
        """After a close: every waiter re-checks the state (and sees the close)."""
        while self._putters:
            fut = self._putters.popleft()
            if not fut.done():
                fut.set_result(None)
                self._reserved += 1
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)
