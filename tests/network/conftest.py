"""Helpers for the ``Network`` tests on loopback TCP.

Every network made here has mDNS off (``mdns=None``) so nothing multicasts on the host's
interfaces; tests that need mDNS run it inside a network namespace.  Waiting is always on
events or predicates with a cap (never a bare sleep).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from aiop2p.events import (
    ConnectionClosed,
    ConnectionEstablished,
    NetworkEvent,
    NewListenAddr,
)
from aiop2p.multiaddr import Multiaddr
from aiop2p.network import FirewallRequest, InboundRequest, Network
from aiop2p.network.event_channel import ChannelClosedError

CAP = 5.0
"""Seconds any single expected thing may take on loopback (it normally takes milliseconds)."""

LOOPBACK = "/ip4/127.0.0.1/tcp/0"

CONNECTION_NOISE: tuple[type, ...] = (ConnectionEstablished, ConnectionClosed, NewListenAddr)
"""Events the tests skip when looking for the next interesting one."""


def new_network(*args: Any, **kwargs: Any) -> Network[Any, Any]:
    """A ``Network`` with mDNS off unless the caller says otherwise."""
    kwargs.setdefault("mdns", None)
    return Network(*args, **kwargs)


@asynccontextmanager
async def networks(*configs: dict[str, Any]) -> AsyncIterator[list[Network[Any, Any]]]:
    """Start one network per config (keyword arguments of ``Network``); close all after."""
    async with AsyncExitStack() as stack:
        nets = [await stack.enter_async_context(new_network(**c)) for c in configs]
        yield nets


async def listen(net: Network[Any, Any]) -> Multiaddr:
    return await net.start_listening(LOOPBACK)


async def link(dialer: Network[Any, Any], listener: Network[Any, Any]) -> Multiaddr:
    """``listener`` listens on loopback and ``dialer`` learns the address (no dial yet)."""
    addr = await listen(listener)
    dialer.add_address(listener.peer_id, addr)
    return addr


async def next_event(
    net: Network[Any, Any],
    wanted: type | tuple[type, ...],
    *,
    skip: tuple[type, ...] = (),
    cap: float = CAP,
) -> Any:
    """The next event of ``net`` not in ``skip``; it must be a ``wanted`` one."""
    try:
        async with asyncio.timeout(cap):
            while True:
                event = await net.events().receive()
                if isinstance(event, skip) and not isinstance(event, wanted):
                    continue
                assert isinstance(event, wanted), f"unexpected event {event!r}, wanted {wanted}"
                return event
    except TimeoutError:
        pytest.fail(f"no {wanted} event within {cap} s")


def drain_events(net: Network[Any, Any]) -> list[NetworkEvent]:
    """Every event queued right now."""
    out: list[NetworkEvent] = []
    with contextlib.suppress(ChannelClosedError):
        while (event := net.events().receive_nowait()) is not None:
            out.append(event)
    return out


async def next_request(net: Network[Any, Any], cap: float = CAP) -> InboundRequest[Any, Any]:
    try:
        async with asyncio.timeout(cap):
            return await net.requests().receive()
    except TimeoutError:
        pytest.fail(f"no inbound request within {cap} s")


@asynccontextmanager
async def serving(
    net: Network[Any, Any], answer: Callable[[Any], Any] = lambda rq: rq
) -> AsyncIterator[list[InboundRequest[Any, Any]]]:
    """Answer every inbound request of ``net`` with ``answer(request)`` in the background;
    yields the list of requests answered so far."""
    seen: list[InboundRequest[Any, Any]] = []

    async def run() -> None:
        async for request in net.requests():
            seen.append(request)
            await request.respond(answer(request.request))

    async with background(run()):
        yield seen


@asynccontextmanager
async def background(coro: Awaitable[Any]) -> AsyncIterator[asyncio.Task[Any]]:
    """Run ``coro`` as a task for the block; cancel it afterwards (re-raising its failure)."""
    task = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class FirewallInbox:
    """Pumps ``net.firewall_requests()`` into a queue so tests can wait on it with caps
    (cancelling a wait must not finalise the network's async generator)."""

    def __init__(self, net: Network[Any, Any]) -> None:
        self.queue: asyncio.Queue[FirewallRequest] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._pump(net))

    async def _pump(self, net: Network[Any, Any]) -> None:
        async for request in net.firewall_requests():
            self.queue.put_nowait(request)

    async def next(self, cap: float = CAP) -> FirewallRequest:
        try:
            async with asyncio.timeout(cap):
                return await self.queue.get()
        except TimeoutError:
            pytest.fail(f"no firewall request within {cap} s")

    def empty(self) -> bool:
        return self.queue.empty()

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def outcome(coro: Awaitable[Any], cap: float = CAP) -> Any:
    """The result of ``coro`` or the exception it raised (capped)."""
    try:
        async with asyncio.timeout(cap):
            return await coro
    except TimeoutError:
        raise
    except Exception as exc:
        return exc


@pytest.fixture(autouse=True)
async def no_task_left_behind() -> AsyncIterator[None]:
    """Closing every network must leave no task running."""
    yield
    current = asyncio.current_task()
    for _ in range(3):  # let cancelled tasks finish unwinding
        await asyncio.sleep(0)
    leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not leftover, f"tasks left behind: {leftover}"
