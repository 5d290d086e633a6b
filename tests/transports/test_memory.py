"""Memory transport specifics: delivery order, backpressure, close/abort, ports, refusal.

The shared behaviour (Noise + Yamux on top, echo sizes, ...) is in ``test_conformance``.
"""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import pytest

from aiop2p.errors import DialError, InvalidArgumentError, InvalidMultiaddrError, ListenError
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node
from aiop2p.transports.memory import (
    DEFAULT_HUB,
    MemoryConfig,
    MemoryHub,
    MemoryPipe,
    MemoryTransport,
    memory_target,
)


class Recorder(asyncio.Protocol):
    """Records every callback, in order."""

    def __init__(self, local: Multiaddr, remote: Multiaddr) -> None:
        self.local = local
        self.remote = remote
        self.events: list[tuple[str, Any]] = []
        self.transport: MemoryPipe | None = None
        self.eof_result: bool | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, MemoryPipe)
        self.transport = transport
        self.events.append(("made", None))

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", data))

    def eof_received(self) -> bool | None:
        self.events.append(("eof", None))
        return self.eof_result

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", exc))

    def pause_writing(self) -> None:
        self.events.append(("pause", None))

    def resume_writing(self) -> None:
        self.events.append(("resume", None))

    @property
    def received(self) -> bytes:
        return b"".join(d for kind, d in self.events if kind == "data")

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


async def turns(n: int = 5) -> None:
    """Let the loop run ``n`` iterations (callbacks scheduled with call_soon)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def connect(
    hub: MemoryHub | None = None, config: MemoryConfig | None = None
) -> tuple[Recorder, Recorder]:
    """(dialer protocol, listener protocol) of one fresh connection."""
    transport = MemoryTransport(hub or MemoryHub(), config)
    accepted: list[Recorder] = []

    def on_accept(local: Multiaddr, remote: Multiaddr) -> Recorder:
        accepted.append(Recorder(local, remote))
        return accepted[-1]

    listener = await transport.listen(Multiaddr("/memory/0"), on_accept)
    client = await transport.dial(listener.addrs[0], Recorder)
    assert isinstance(client, Recorder)
    (server,) = accepted
    return client, server


def test_memory_target() -> None:
    assert memory_target(Multiaddr("/memory/7")) == 7
    pid = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
    assert memory_target(Multiaddr(f"/memory/7/p2p/{pid}")) == 7
    assert memory_target(Multiaddr("/memory/7/ws")) is None
    assert memory_target(Multiaddr("/ip4/127.0.0.1/tcp/1")) is None
    transport = MemoryTransport()
    assert transport.hub is DEFAULT_HUB
    assert transport.can_dial(Multiaddr("/memory/1"))
    assert not transport.can_listen(Multiaddr("/ip4/127.0.0.1/tcp/0"))


def test_config_validation() -> None:
    with pytest.raises(InvalidArgumentError):
        MemoryConfig(high_water_bytes=10, low_water_bytes=20)
    with pytest.raises(InvalidArgumentError):
        MemoryConfig(high_water_bytes=10, low_water_bytes=1, max_buffered_bytes=5)
    with pytest.raises(InvalidArgumentError):
        MemoryConfig(max_read_bytes=0)


async def test_port_zero_gives_unique_ports_and_bound_ports_conflict() -> None:
    hub = MemoryHub()
    transport = MemoryTransport(hub)

    def no_factory(local: Multiaddr, remote: Multiaddr) -> asyncio.Protocol:
        raise AssertionError("nobody dials")

    listeners = [await transport.listen(Multiaddr("/memory/0"), no_factory) for _ in range(20)]
    ports = [memory_target(listener.addrs[0]) for listener in listeners]
    assert len(set(ports)) == 20 and 0 not in ports
    assert sorted(hub.ports) == sorted(p for p in ports if p is not None)
    assert listeners[0].bound_addrs == listeners[0].addrs

    taken = listeners[3].addrs[0]
    with pytest.raises(ListenError, match="in use"):
        await transport.listen(taken, no_factory)
    await listeners[3].close()
    await listeners[3].close()  # idempotent
    assert listeners[3].addrs == []
    again = await transport.listen(taken, no_factory)  # a closed port can be bound again
    assert again.addrs == [taken]
    top = await transport.listen(Multiaddr("/memory/18446744073709551615"), no_factory)
    assert top.addrs == [Multiaddr("/memory/18446744073709551615")]
    with pytest.raises(InvalidMultiaddrError):
        await transport.listen(Multiaddr("/ip4/127.0.0.1/tcp/0"), no_factory)


async def test_unknown_port_is_refused() -> None:
    transport = MemoryTransport(MemoryHub())
    with pytest.raises(ConnectionRefusedError, match="no listener on /memory/4242") as info:
        await transport.dial(Multiaddr("/memory/4242"), Recorder)
    assert info.value.errno == errno.ECONNREFUSED
    with pytest.raises(InvalidMultiaddrError):
        await transport.dial(Multiaddr("/ip4/127.0.0.1/tcp/1"), Recorder)


async def test_hubs_are_separate_namespaces() -> None:
    a, b = MemoryTransport(MemoryHub()), MemoryTransport(MemoryHub())
    listener = await a.listen(Multiaddr("/memory/5"), Recorder)
    with pytest.raises(ConnectionRefusedError):
        await b.dial(listener.addrs[0], Recorder)
    await listener.close()


async def test_addresses_and_extra_info() -> None:
    client, server = await connect()
    assert client.remote == server.local and client.local == server.remote
    assert memory_target(client.local) != memory_target(client.remote)
    assert client.transport is not None and server.transport is not None
    assert client.transport.get_extra_info("sockname") == client.local
    assert client.transport.get_extra_info("peername") == client.remote
    assert client.transport.get_protocol() is client
    assert not client.transport.can_write_eof()
    assert client.events == [("made", None)] and server.events == [("made", None)]


async def test_write_is_delivered_later_in_order_and_copied() -> None:
    client, server = await connect()
    assert client.transport is not None
    buf = bytearray(b"abc")
    client.transport.write(buf)
    buf[:] = b"xyz"  # the pipe copied it
    client.transport.writelines([b"de", memoryview(b"f")])
    client.transport.write(b"")
    assert server.kinds() == ["made"]  # never synchronously re-entrant
    await turns()
    assert server.received == b"abcdef"
    assert server.kinds() == ["made", "data"]  # small writes coalesce into one read


async def test_large_backlog_is_delivered_in_reads_of_bounded_size() -> None:
    config = MemoryConfig(max_read_bytes=1000)
    client, server = await connect(config=config)
    assert client.transport is not None
    for _ in range(10):
        client.transport.write(b"x" * 300)
    client.transport.write(b"y" * 5000)  # one big write is delivered whole
    await turns(10)
    sizes = [len(d) for kind, d in server.events if kind == "data"]
    assert sizes == [900, 900, 900, 300, 5000]


async def test_backpressure_pauses_and_resumes_the_writer() -> None:
    config = MemoryConfig(high_water_bytes=1000, low_water_bytes=400, max_read_bytes=300)
    client, server = await connect(config=config)
    assert client.transport is not None and server.transport is not None
    server.transport.pause_reading()
    assert not server.transport.is_reading()
    client.transport.write(b"a" * 600)
    client.transport.write(b"b" * 400)
    assert "pause" not in client.kinds()  # exactly at the high-water mark
    client.transport.write(b"c" * 300)
    assert client.kinds() == ["made", "pause"]
    assert client.transport.get_write_buffer_size() == 1300
    assert client.transport.get_write_buffer_limits() == (400, 1000)
    await turns()
    assert server.received == b""  # paused: nothing delivered, the writer stays paused
    server.transport.resume_reading()
    await turns(1)
    # 600 delivered, 700 left > low water: still paused
    assert server.received == b"a" * 600 and client.kinds() == ["made", "pause"]
    await turns(1)
    assert len(server.received) == 1000 and client.kinds() == ["made", "pause", "resume"]
    await turns()
    assert server.received == b"a" * 600 + b"b" * 400 + b"c" * 300


async def test_writer_ignoring_pause_is_cut_off() -> None:
    config = MemoryConfig(high_water_bytes=100, low_water_bytes=10, max_buffered_bytes=1000)
    client, server = await connect(config=config)
    assert client.transport is not None
    for _ in range(11):
        client.transport.write(b"z" * 100)
    assert client.transport.is_closing()
    await turns()
    assert server.received == b""
    (lost,) = [exc for kind, exc in client.events if kind == "lost"]
    assert isinstance(lost, OSError) and lost.errno == errno.ENOBUFS
    assert isinstance(server.events[-1][1], ConnectionResetError)


async def test_close_delivers_queued_bytes_then_eof_then_lost() -> None:
    client, server = await connect()
    assert client.transport is not None and server.transport is not None
    client.transport.write(b"last words")
    client.transport.close()
    client.transport.close()  # idempotent
    assert client.transport.is_closing()
    client.transport.write(b"dropped")
    server.transport.write(b"towards a closed end")
    assert client.kinds() == ["made"]  # connection_lost comes from the loop, not close()
    await turns()
    assert client.events == [("made", None), ("lost", None)]
    assert server.events == [
        ("made", None),
        ("data", b"last words"),
        ("eof", None),
        ("lost", None),
    ]
    assert server.transport.is_closing()


async def test_eof_waits_while_reading_is_paused() -> None:
    client, server = await connect()
    assert client.transport is not None and server.transport is not None
    server.transport.pause_reading()
    client.transport.write(b"held")
    client.transport.close()
    await turns()
    assert server.kinds() == ["made"]
    server.transport.resume_reading()
    await turns()
    assert server.events[1:] == [("data", b"held"), ("eof", None), ("lost", None)]


async def test_abort_drops_queued_bytes_and_resets_the_peer() -> None:
    client, server = await connect()
    assert client.transport is not None and server.transport is not None
    client.transport.write(b"never delivered")
    client.transport.abort()
    client.transport.abort()  # idempotent
    await turns()
    assert client.events == [("made", None), ("lost", None)]
    assert server.kinds() == ["made", "lost"]
    exc = server.events[-1][1]
    assert isinstance(exc, ConnectionResetError) and exc.errno == errno.ECONNRESET


async def test_both_ends_closing_at_once() -> None:
    client, server = await connect()
    assert client.transport is not None and server.transport is not None
    client.transport.close()
    server.transport.close()
    await turns()
    assert client.kinds() == ["made", "lost"] and server.kinds() == ["made", "lost"]


async def test_listener_close_refuses_new_dials_but_keeps_connections() -> None:
    transport = MemoryTransport(MemoryHub())
    accepted: list[Recorder] = []

    def on_accept(local: Multiaddr, remote: Multiaddr) -> Recorder:
        accepted.append(Recorder(local, remote))
        return accepted[-1]

    listener = await transport.listen(Multiaddr("/memory/0"), on_accept)
    (addr,) = listener.addrs
    client = await transport.dial(addr, Recorder)
    assert isinstance(client, Recorder) and client.transport is not None
    await listener.close()
    with pytest.raises(ConnectionRefusedError):
        await transport.dial(addr, Recorder)
    client.transport.write(b"still up")
    await turns()
    assert accepted[0].received == b"still up"


async def test_failing_listener_factory_resets_the_dialer() -> None:
    transport = MemoryTransport(MemoryHub())
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:

        def broken(local: Multiaddr, remote: Multiaddr) -> asyncio.Protocol:
            raise RuntimeError("boom")

        listener = await transport.listen(Multiaddr("/memory/0"), broken)
        client = await transport.dial(listener.addrs[0], Recorder)
        assert isinstance(client, Recorder)
        await turns()
        assert client.kinds() == ["made", "lost"]
        assert isinstance(client.events[-1][1], ConnectionResetError)
        assert isinstance(reported[0]["exception"], RuntimeError)
    finally:
        loop.set_exception_handler(None)


async def test_nodes_over_a_private_hub() -> None:
    hub = MemoryHub()
    async with (
        Node(transports=[MemoryTransport(hub)]) as a,
        Node(transports=[MemoryTransport(hub)]) as b,
    ):
        (addr,) = await b.listen("/memory/0")
        assert len(await a.ping(addr.with_peer_id(b.peer_id), count=2)) == 2
        with pytest.raises(DialError, match="no listener on /memory/"):
            await a.dial(Multiaddr("/memory/1234567"))
        outsider = MemoryTransport(MemoryHub())
        with pytest.raises(ConnectionRefusedError):
            await outsider.dial(addr, Recorder)
