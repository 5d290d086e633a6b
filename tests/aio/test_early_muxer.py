"""Early muxer negotiation between two nodes: the muxer's multistream round is gone.

Every ``transport.write`` and every ``data_received`` of both connections is recorded,
with whether the connection was established at that moment.  The dialer's inbound reads
before it is established are the round trips of its dial (on loopback each flight of the
listener arrives as one read): two with the multistream round for the muxer, one without.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

import pytest

from aiop2p._aio.connection import Connection
from aiop2p.config import NodeConfig
from aiop2p.node import Node

from ..helpers import wait_for


@dataclass
class Wire:
    """What each connection wrote and read, and whether it was established then."""

    writes: dict[int, list[tuple[bool, bytes]]] = field(default_factory=dict)
    reads: dict[int, list[bool]] = field(default_factory=dict)

    def writes_before_established(self, conn: Connection) -> int:
        return sum(1 for established, _ in self.writes[id(conn)] if not established)

    def reads_before_established(self, conn: Connection) -> int:
        return sum(1 for established in self.reads[id(conn)] if not established)

    def first_write_once_established(self, conn: Connection) -> bytes:
        return next(data for established, data in self.writes[id(conn)] if established)


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    recorded = Wire()
    made, received = Connection.connection_made, Connection.data_received

    def connection_made(self: Connection, transport: asyncio.BaseTransport) -> None:
        writes = recorded.writes.setdefault(id(self), [])
        write = transport.write  # type: ignore[attr-defined]

        def counted(data: bytes) -> None:
            writes.append((self.is_established, bytes(data)))
            write(data)

        transport.write = counted  # type: ignore[attr-defined]
        made(self, transport)

    def data_received(self: Connection, data: bytes) -> None:
        recorded.reads.setdefault(id(self), []).append(self.is_established)
        received(self, data)

    monkeypatch.setattr(Connection, "connection_made", connection_made)
    monkeypatch.setattr(Connection, "data_received", data_received)
    return recorded


def noise_frames(data: bytes) -> int:
    """How many length-prefixed Noise messages ``data`` holds (it must hold whole ones)."""
    count = pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from(">H", data, pos)
        pos += 2 + length
        count += 1
    assert pos == len(data)
    return count


async def dial(dialer_early: bool, listener_early: bool) -> tuple[Connection, Connection]:
    """Dial and wait until both sides are established; return (dialer's, listener's)."""
    dialer = Node(config=NodeConfig(early_muxer_negotiation=dialer_early))
    listener = Node(config=NodeConfig(early_muxer_negotiation=listener_early))
    async with dialer, listener:
        (addr,) = await listener.listen("/ip4/127.0.0.1/tcp/0")
        conn = await dialer.dial(addr.with_peer_id(listener.peer_id))
        await wait_for(lambda: listener.is_connected(dialer.peer_id))
        (inbound,) = listener.connections_to(dialer.peer_id)
        # A stream each way works, whatever agreed the muxer.
        assert len(await dialer.ping(listener.peer_id, count=1)) == 1
        assert len(await listener.ping(dialer.peer_id, count=1)) == 1
        return conn, inbound


async def test_both_sides_early_one_round_trip_and_message_3_leads_the_first_frames(
    wire: Wire,
) -> None:
    conn, inbound = await dial(True, True)
    assert conn.muxer_negotiated_early and inbound.muxer_negotiated_early
    # The dialer: one flight out (header, /noise, message 1), one flight in (message 2).
    assert wire.writes_before_established(conn) == 1
    assert wire.reads_before_established(conn) == 1
    # Message 3 and identify's first Yamux frames leave in one write.
    assert noise_frames(wire.first_write_once_established(conn)) >= 2
    # The listener never answers a muxer proposal: one flight out before it is done.
    assert wire.writes_before_established(inbound) == 1


@pytest.mark.parametrize(
    ("dialer_early", "listener_early"), [(True, False), (False, True), (False, False)]
)
async def test_without_early_negotiation_on_either_side_the_muxer_round_stays(
    wire: Wire, dialer_early: bool, listener_early: bool
) -> None:
    conn, inbound = await dial(dialer_early, listener_early)
    assert not conn.muxer_negotiated_early and not inbound.muxer_negotiated_early
    # Flight 1, then message 3 with the /yamux/1.0.0 proposal; the echo is the second read.
    assert wire.writes_before_established(conn) == 2
    assert wire.reads_before_established(conn) == 2
    # The listener's muxer echo leads its first Yamux frames.
    assert noise_frames(wire.first_write_once_established(inbound)) >= 2
