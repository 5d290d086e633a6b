"""In-process transport over ``/memory/<port>`` addresses, for fast socket-free tests.

A :class:`MemoryHub` maps ports to listeners (one process-wide default hub, or a private
one per test).  Dialling joins two :class:`MemoryPipe` ends: ``write`` on one queues the
bytes for the other, which hands them to its protocol's ``data_received`` from a
``loop.call_soon`` callback, never inside ``write`` (so protocols see the same
re-entrancy rules as on a socket).  Each direction's queue is bounded: above
``high_water_bytes`` the writer gets ``pause_writing``, below ``low_water_bytes``
``resume_writing``; a reader that calls ``pause_reading`` stops delivery, so the queue
fills and throttles the writer end to end.  No sockets, no threads, no tasks.

Closing is TCP-like without half-close: after ``close()`` the peer receives what was
queued, then ``eof_received`` and ``connection_lost(None)``; after ``abort()`` queued
bytes are dropped and the peer gets ``connection_lost(ConnectionResetError)``.
"""

from __future__ import annotations

import asyncio
import errno
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from ..errors import InvalidArgumentError, InvalidMultiaddrError, ListenError
from ..multiaddr import Multiaddr
from ._base import ProtocolFactory

__all__ = [
    "DEFAULT_HUB",
    "MemoryConfig",
    "MemoryHub",
    "MemoryListener",
    "MemoryPipe",
    "MemoryTransport",
    "memory_target",
]

_U64_MAX: Final = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """Per-direction buffer bounds of a memory connection (bytes)."""

    high_water_bytes: int = 1024 * 1024
    """Queued bytes above which the writer's protocol gets ``pause_writing``."""
    low_water_bytes: int = 256 * 1024
    """Queued bytes at or below which a paused writer gets ``resume_writing``."""
    max_buffered_bytes: int = 64 * 1024 * 1024
    """Hard bound for a writer that ignores ``pause_writing``: the connection is aborted."""
    max_read_bytes: int = 256 * 1024
    """Most bytes gathered into one ``data_received`` call (like a socket read); a single
    larger write is still delivered whole rather than copied into pieces."""

    def __post_init__(self) -> None:
        if self.max_read_bytes <= 0:
            raise InvalidArgumentError("max_read_bytes must be positive")
        if not 0 <= self.low_water_bytes <= self.high_water_bytes:
            raise InvalidArgumentError("need 0 <= low_water_bytes <= high_water_bytes")
        if self.max_buffered_bytes < self.high_water_bytes:
            raise InvalidArgumentError("max_buffered_bytes must be >= high_water_bytes")


def memory_target(addr: Multiaddr) -> int | None:
    """The port of ``/memory/<port>`` (optionally ending in /p2p), else None."""
    parts = addr.components()
    if not parts or parts[0][0] != "memory" or parts[0][1] is None:
        return None
    if len(parts) > 2 or (len(parts) == 2 and parts[1][0] != "p2p"):
        return None
    return int(parts[0][1])


class MemoryHub:
    """A namespace of memory ports: listeners bind here and dials look them up.

    Port 0 and each dialer's own (ephemeral) port come from one counter that skips bound
    ports, so every one of them is unique within the hub.
    """

    def __init__(self) -> None:
        self._listeners: dict[int, MemoryListener] = {}
        self._next_port = 1

    def allocate_port(self) -> int:
        """A port no listener holds and this hub has not handed out before."""
        port = self._next_port
        while port in self._listeners or port == 0:
            port = port + 1 if port < _U64_MAX else 1
        self._next_port = port + 1 if port < _U64_MAX else 1
        return port

    def _bind(self, port: int, listener: MemoryListener) -> int:
        if port == 0:
            port = self.allocate_port()
        elif port in self._listeners:
            raise ListenError(f"cannot listen on /memory/{port}: port in use")
        self._listeners[port] = listener
        return port

    def _unbind(self, port: int, listener: MemoryListener) -> None:
        if self._listeners.get(port) is listener:
            del self._listeners[port]

    def listener(self, port: int) -> MemoryListener | None:
        return self._listeners.get(port)

    @property
    def ports(self) -> list[int]:
        """Ports with a listener, for tests and debugging."""
        return list(self._listeners)


DEFAULT_HUB: Final = MemoryHub()
"""The hub a :class:`MemoryTransport` uses when given none."""


class MemoryListener:
    def __init__(
        self,
        hub: MemoryHub,
        factory: ProtocolFactory,
        loop: asyncio.AbstractEventLoop,
        config: MemoryConfig,
    ) -> None:
        self._hub = hub
        self._factory = factory
        self._loop = loop
        self._config = config
        self.port = 0
        self._addr = Multiaddr("/memory/0")
        self.closed = False

    @property
    def addrs(self) -> list[Multiaddr]:
        return [] if self.closed else [self._addr]

    @property
    def bound_addrs(self) -> list[Multiaddr]:
        return [] if self.closed else [self._addr]

    async def close(self) -> None:
        """Refuse new dials; connections already made stay up (as with TCP)."""
        if not self.closed:
            self.closed = True
            self._hub._unbind(self.port, self)


class MemoryTransport:
    """Dial and listen on ``/memory/<port>`` within one :class:`MemoryHub`.

    Not among a ``Node``'s default transports: pass it explicitly, e.g.
    ``Node(transports=[MemoryTransport(hub)])``.
    """

    def __init__(self, hub: MemoryHub | None = None, config: MemoryConfig | None = None) -> None:
        self.hub = DEFAULT_HUB if hub is None else hub
        self.config = MemoryConfig() if config is None else config

    def can_dial(self, addr: Multiaddr) -> bool:
        return memory_target(addr) is not None

    def can_listen(self, addr: Multiaddr) -> bool:
        return memory_target(addr) is not None

    async def listen(self, addr: Multiaddr, factory: ProtocolFactory) -> MemoryListener:
        port = memory_target(addr)
        if port is None:
            raise InvalidMultiaddrError(f"cannot listen on {addr}: expected /memory/<port>")
        listener = MemoryListener(self.hub, factory, asyncio.get_running_loop(), self.config)
        listener.port = self.hub._bind(port, listener)
        listener._addr = Multiaddr(f"/memory/{listener.port}")
        return listener

    async def dial(self, addr: Multiaddr, factory: ProtocolFactory) -> asyncio.Protocol:
        """Connect to the listener on the port; ``ConnectionRefusedError`` if there is none."""
        port = memory_target(addr)
        if port is None:
            raise InvalidMultiaddrError(f"not a memory address: {addr}")
        loop = asyncio.get_running_loop()
        listener = self.hub.listener(port)
        if listener is None or listener.closed:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"no listener on /memory/{port}")
        if listener._loop is not loop:
            raise ConnectionRefusedError(
                errno.ECONNREFUSED, f"the listener on /memory/{port} runs in another event loop"
            )
        local = Multiaddr(f"/memory/{self.hub.allocate_port()}")
        remote = listener._addr
        client, server = MemoryPipe.pair(loop, self.config, listener._config, local, remote)
        outbound = factory(local, remote)
        client._protocol = outbound
        try:
            inbound: asyncio.Protocol | None = listener._factory(remote, local)
        except Exception as exc:  # the listener's problem: the dialer sees a reset, as on TCP
            inbound = None
            loop.call_exception_handler(
                {"message": f"memory listener on {remote}: protocol factory failed",
                 "exception": exc}
            )  # fmt: skip
        if inbound is not None:
            server._protocol = inbound
            inbound.connection_made(server)
        outbound.connection_made(client)
        if inbound is None:
            server.abort()
        return outbound


def _reset() -> ConnectionResetError:
    return ConnectionResetError(errno.ECONNRESET, "memory connection reset by peer")


class MemoryPipe(asyncio.Transport):
    """One end of an in-memory connection; what its protocol sees as the transport.

    The queue of bytes travelling towards an end lives on that end (``_inbox``); the
    writer's backpressure state is judged against its peer's inbox.
    """

    __slots__ = (
        "_closing",
        "_eof_pending",
        "_high",
        "_inbox",
        "_inbox_bytes",
        "_loop",
        "_lost",
        "_low",
        "_max",
        "_max_read",
        "_peer",
        "_protocol",
        "_reading_paused",
        "_scheduled",
        "_writing_paused",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: MemoryConfig,
        extra: dict[str, Any],
    ) -> None:
        super().__init__(extra)
        self._loop = loop
        self._protocol: asyncio.Protocol = asyncio.Protocol()
        self._peer: MemoryPipe = self
        self._inbox: deque[bytes] = deque()
        self._inbox_bytes = 0
        self._high = config.high_water_bytes
        self._low = config.low_water_bytes
        self._max = config.max_buffered_bytes
        self._max_read = config.max_read_bytes
        self._scheduled = False  # a _deliver callback is pending
        self._reading_paused = False
        self._writing_paused = False
        self._eof_pending = False  # the peer closed: EOF follows the queued bytes
        self._closing = False  # close()/abort() called, or the connection is lost
        self._lost = False  # connection_lost delivered to our protocol

    @classmethod
    def pair(
        cls,
        loop: asyncio.AbstractEventLoop,
        dialer_config: MemoryConfig,
        listener_config: MemoryConfig,
        dialer_addr: Multiaddr,
        listener_addr: Multiaddr,
    ) -> tuple[MemoryPipe, MemoryPipe]:
        """(dialer end, listener end), joined; each writes under its own config's bounds."""
        a = cls(loop, dialer_config, {"sockname": dialer_addr, "peername": listener_addr})
        b = cls(loop, listener_config, {"sockname": listener_addr, "peername": dialer_addr})
        a._peer, b._peer = b, a
        return a, b

    # -- writing -------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data or self._closing:
            return  # after close()/abort() or loss, bytes have nowhere to go
        peer = self._peer
        if peer._closing:
            return  # the peer is gone; its EOF or reset is on its way to us
        if type(data) is not bytes:
            data = bytes(data)  # the caller may reuse its buffer
        peer._inbox.append(data)
        queued = peer._inbox_bytes + len(data)
        peer._inbox_bytes = queued
        peer._schedule()
        if queued > self._high:
            if queued > self._max:
                self._overrun()
            elif not self._writing_paused:
                self._writing_paused = True
                self._protocol.pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False  # no half-close: close() ends both directions

    def get_write_buffer_size(self) -> int:
        return 0 if self._closing else self._peer._inbox_bytes

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = self._high if low is None else 4 * low
        if low is None:
            low = high // 4
        if not 0 <= low <= high or high > self._max:
            raise ValueError(f"need 0 <= low ({low}) <= high ({high}) <= {self._max}")
        self._high, self._low = high, low

    def _overrun(self) -> None:
        error = OSError(errno.ENOBUFS, f"more than {self._max} bytes queued, pause_writing ignored")
        self._shutdown(error, _reset())

    # -- reading -------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return not self._reading_paused and not self._closing

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if self._inbox or self._eof_pending:
                self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and not self._reading_paused and not self._lost:
            self._scheduled = True
            self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        if self._lost or self._reading_paused:
            return
        inbox = self._inbox
        if inbox:
            data = inbox.popleft()
            limit = self._max_read
            size = len(data)
            if inbox and size + len(inbox[0]) <= limit:
                parts = [data]
                while inbox and size + len(inbox[0]) <= limit:
                    chunk = inbox.popleft()
                    parts.append(chunk)
                    size += len(chunk)
                data = b"".join(parts)
            self._inbox_bytes -= len(data)
            peer = self._peer
            if peer._writing_paused and self._inbox_bytes <= peer._low and not peer._closing:
                peer._writing_paused = False
                peer._protocol.resume_writing()
            self._protocol.data_received(data)
            if self._lost or self._reading_paused:
                return
            if inbox:  # more than one read's worth: the rest on a later turn, EOF after it
                self._schedule()
                return
        if self._eof_pending:
            self._eof_pending = False
            self._closing = True
            self._protocol.eof_received()
            self._lose(None)  # the peer closed both directions: no half-open state

    # -- closing -------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Queued bytes still reach the peer, then its ``eof_received``."""
        if self._closing:
            return
        self._closing = True
        self._drop_inbox()
        peer = self._peer
        if not peer._closing:
            peer._eof_pending = True
            peer._schedule()
        self._loop.call_soon(self._lose, None)

    def abort(self) -> None:
        """Drop queued bytes both ways; the peer sees a connection reset."""
        if self._lost:
            return
        self._shutdown(None, _reset())

    def _shutdown(self, mine: Exception | None, theirs: Exception) -> None:
        self._closing = True
        self._drop_inbox()
        peer = self._peer
        if not peer._lost:
            peer._closing = True
            peer._drop_inbox()
            self._loop.call_soon(peer._lose, theirs)
        self._loop.call_soon(self._lose, mine)

    def _drop_inbox(self) -> None:
        """Nothing more will be read here: forget queued bytes and a pending EOF."""
        self._inbox.clear()
        self._inbox_bytes = 0
        self._eof_pending = False

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._drop_inbox()
        self._protocol.connection_lost(exc)

    # -- protocol ------------------------------------------------------------------------

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol
