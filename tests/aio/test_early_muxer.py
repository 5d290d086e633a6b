"""Early muxer negotiation between two nodes: the muxer's multistream round is gone.

Every ``transport.write`` and every ``data_received`` of both connections is recorded,
with whether the connection was established at that moment.  The dialer's round trips
before it is established (reads that follow a write) are two with the multistream round
for the muxer, one without.
"""

from __future__ import annotations

import struct

import pytest

from aiop2p._aio.connection import MAX_STREAMS_BEFORE_ANSWER, Connection
from aiop2p._aio.stream import Stream
from aiop2p.config import NodeConfig
from aiop2p.node import Node

from ..helpers import Wire, record_wire, wait_for


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    return record_wire(monkeypatch)


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
    assert wire.round_trips_before_established(conn) == 1
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
    assert wire.round_trips_before_established(conn) == 2
    # The listener's muxer echo leads its first Yamux frames.
    assert noise_frames(wire.first_write_once_established(inbound)) >= 2


ECHO = "/test/echo/1.0.0"


async def echo(stream: Stream) -> None:
    await stream.write_message(await stream.read_message(100))
    await stream.close()


@pytest.mark.parametrize("identify", [True, False])
async def test_a_burst_of_streams_right_after_an_early_dial_completes(identify: bool) -> None:
    """Streams beyond MAX_STREAMS_BEFORE_ANSWER wait for the listener's first bytes; with
    nothing on the wire yet (no identify stream), the burst goes at once, so the listener
    always has something to answer and nothing waits forever."""
    config = NodeConfig(enable_identify=identify)
    async with Node(config=config) as dialer, Node(config=config) as listener:
        listener.set_stream_handler(ECHO, echo)
        (addr,) = await listener.listen("/ip4/127.0.0.1/tcp/0")
        conn = await dialer.dial(addr.with_peer_id(listener.peer_id))
        assert conn.muxer_negotiated_early
        streams = [conn.open_stream([ECHO]) for _ in range(3 * MAX_STREAMS_BEFORE_ANSWER)]
        for i, stream in enumerate(streams):
            await stream.write_message(b"%d" % i)
        assert [await s.read_message(100) for s in streams] == [
            b"%d" % i for i in range(len(streams))
        ]
