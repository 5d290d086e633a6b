"""Streams negotiate the common case without multistream machines, and fall back to them
for everything else.

The common case (one proposal, accepted; the listener's header and echo in one frame or
two) builds no ``MultistreamDialer`` or ``MultistreamListener`` (counted here).  Peers
that split the header from the proposal or inside the echo, ask ``ls``, get ``na``,
propose what is not offered, or send garbage get the full machines and exactly the
answers they got before the fast path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from aiop2p._aio.connection import Connection
from aiop2p._aio.stream import Stream
from aiop2p._wire.varint import encode_uvarint
from aiop2p.errors import (
    ProtocolNotSupportedError,
    RemoteProtocolError,
    StreamResetError,
)
from aiop2p.node import Node
from aiop2p.protocols import multistream
from aiop2p.protocols.multistream import (
    MULTISTREAM_PROTOCOL_ID,
    MultistreamDialer,
    MultistreamListener,
    encode_message,
)
from aiop2p.protocols.role import Role
from aiop2p.protocols.yamux import StreamId, YamuxSession

from ..helpers import wait_for

ECHO = "/test/echo/1.0.0"
HEADER = encode_message(MULTISTREAM_PROTOCOL_ID)
PROPOSAL = HEADER + encode_message(ECHO)


class Built:
    """How many full multistream machines were constructed."""

    def __init__(self) -> None:
        self.dialers = 0
        self.listeners = 0


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Iterator[Built]:
    counts = Built()
    dialer_init = MultistreamDialer.__init__
    listener_init = MultistreamListener.__init__

    def count_dialer(self: MultistreamDialer, *args: object, **kwargs: object) -> None:
        counts.dialers += 1
        dialer_init(self, *args, **kwargs)  # type: ignore[arg-type]

    def count_listener(self: MultistreamListener, *args: object, **kwargs: object) -> None:
        counts.listeners += 1
        listener_init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(MultistreamDialer, "__init__", count_dialer)
    monkeypatch.setattr(MultistreamListener, "__init__", count_listener)
    yield counts


async def echo_handler(stream: Stream) -> None:
    assert stream._negotiator is None  # no machine held once negotiated
    await stream.write_message(await stream.read_message(1 << 16))
    await stream.close()


def message(payload: bytes) -> bytes:
    return encode_uvarint(len(payload)) + payload


def open_raw_stream(conn: Connection, frames: list[bytes]) -> Stream:
    """An outbound stream without negotiation that sends ``frames`` as Yamux data frames."""
    yamux = conn._require_established()
    sid = yamux.open_stream()
    stream = Stream(conn, sid, role=Role.INITIATOR, negotiator=None)
    conn._streams[sid] = stream
    for frame in frames:
        assert yamux.send_data(sid, frame) == len(frame)
        conn._flush()  # one data frame each: the session joins data frames queued together
    return stream


async def read_all(stream: Stream) -> tuple[bytes, Exception | None]:
    """Everything the peer sent on ``stream`` until EOF or reset (and the reset)."""
    data = b""
    for _ in range(1000):
        try:
            chunk = await stream.read(1 << 16)
        except StreamResetError as exc:
            return data, exc
        if not chunk:
            return data, None
        data += chunk
    raise AssertionError("no end of stream")


async def test_the_common_case_builds_no_machine(
    node_pair: tuple[Node, Node], built: Built
) -> None:
    a, b = node_pair
    b.set_stream_handler(ECHO, echo_handler)
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    await a.ping(b.peer_id, count=1)  # identify and the first streams are over
    built.dialers = built.listeners = 0
    for i in range(20):
        stream = await conn.new_stream(ECHO)
        await stream.write_message(b"request %d" % i)
        assert await stream.read_message(1 << 16) == b"request %d" % i
        assert stream._negotiator is None
        await stream.close()
    assert (built.dialers, built.listeners) == (0, 0)
    # Several protocols offered: the full dialer, as before (the listener is fast).
    stream = await conn.new_stream(["/unknown/1.0.0", ECHO])
    assert stream.protocol == ECHO
    await stream.write_message(b"x")
    assert await stream.read_message(16) == b"x"
    assert (built.dialers, built.listeners) == (1, 1)  # the listener saw "na" first


ECHOED = PROPOSAL + message(b"hi")  # header, echo, the handler's reply


@pytest.mark.parametrize(
    ("frames", "answer"),
    [
        # header split from the proposal, and inside
        ([HEADER, encode_message(ECHO) + message(b"hi")], ECHOED),
        ([HEADER[:5], HEADER[5:] + encode_message(ECHO), message(b"hi")], ECHOED),
        # proposal split, the request in the same frame as its end
        ([PROPOSAL[:-3], PROPOSAL[-3:] + message(b"hi")], ECHOED),
        # refused first ("na"), then accepted
        (
            [HEADER + encode_message("/unknown/1.0.0"), encode_message(ECHO) + message(b"hi")],
            HEADER + encode_message("na") + encode_message(ECHO) + message(b"hi"),
        ),
        # ls first: answered with what is offered, then the echo
        (
            [HEADER + encode_message("ls") + encode_message(ECHO) + message(b"hi")],
            None,  # checked below: header, the ls answer, echo, reply
        ),
    ],
)
async def test_misbehaving_dialers_are_answered_by_the_full_listener(
    node_pair: tuple[Node, Node], built: Built, frames: list[bytes], answer: bytes | None
) -> None:
    a, b = node_pair
    b.set_stream_handler(ECHO, echo_handler)
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    await a.ping(b.peer_id, count=1)
    built.listeners = 0
    stream = open_raw_stream(conn, frames)
    stream.close_write()
    got, reset = await read_all(stream)
    assert reset is None
    if answer is not None:
        assert got == answer
    else:
        listed = multistream._encode_ls_response(tuple(b.protocols))
        assert got == HEADER + listed + encode_message(ECHO) + message(b"hi")
    assert built.listeners == 1
    assert not conn.is_closed


@pytest.mark.parametrize(
    ("frames", "answer"),
    [
        ([HEADER + encode_message("/unknown/1.0.0")], encode_message("na")),
        ([HEADER + encode_uvarint(5000)], b""),  # oversized message
        ([b"\xff" * 20], b""),  # garbage
        ([encode_message("/multistream/2.0.0")], b""),  # another header
        # too many attempts (32 are tolerated)
        (
            [HEADER + encode_message("/unknown/1.0.0") * 33],
            encode_message("na") * 32,
        ),
    ],
)
async def test_failed_negotiations_reset_the_stream(
    node_pair: tuple[Node, Node], built: Built, frames: list[bytes], answer: bytes
) -> None:
    a, b = node_pair
    handled: list[Stream] = []

    async def handler(stream: Stream) -> None:
        handled.append(stream)

    b.set_stream_handler(ECHO, handler)
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    await a.ping(b.peer_id, count=1)
    built.listeners = 0
    stream = open_raw_stream(conn, frames)
    stream.close_write()  # "na": the dialer gives up, the listener sees EOF
    got, reset = await read_all(stream)
    assert isinstance(reset, StreamResetError)
    assert got == HEADER + answer  # our header goes out with the first answer
    assert built.listeners == 1
    assert handled == []
    assert not conn.is_closed


async def raw_listener(
    a: Node, b: Node, monkeypatch: pytest.MonkeyPatch
) -> tuple[Connection, asyncio.Queue[Stream]]:
    """Connect ``a`` to ``b`` and let the test answer ``b``'s inbound streams by hand."""
    conn = await a.dial(b.listen_addrs[0].with_peer_id(b.peer_id))
    await a.ping(b.peer_id, count=1)
    (server,) = b.connections_to(a.peer_id)
    accepted: asyncio.Queue[Stream] = asyncio.Queue()

    def accept(yamux: YamuxSession, sid: StreamId) -> None:
        stream = Stream(server, sid, role=Role.RESPONDER, negotiator=None)
        server._streams[sid] = stream
        server._inbound_streams += 1
        accepted.put_nowait(stream)

    monkeypatch.setattr(server, "_accept_stream", accept)
    return conn, accepted


async def answer(stream: Stream, frames: list[bytes]) -> None:
    """Take the proposal and send ``frames`` as separate Yamux data frames."""
    assert await stream.readexactly(len(PROPOSAL)) == PROPOSAL
    conn = stream.connection
    assert isinstance(conn, Connection)
    for frame in frames:
        await stream.write(frame)
        conn._flush()  # one data frame each: the session joins data frames queued together


@pytest.mark.parametrize(
    ("frames", "machines"),
    [
        # header and echo apart (js-libp2p, py-libp2p): still the fast path
        ([HEADER, encode_message(ECHO), message(b"reply")], 0),
        ([HEADER, encode_message(ECHO) + message(b"reply")], 0),
        ([PROPOSAL[:3], PROPOSAL[3:] + message(b"reply")], 1),
        ([PROPOSAL[:-1], PROPOSAL[-1:], message(b"reply")], 1),
        ([HEADER, encode_message(ECHO)[:2], encode_message(ECHO)[2:] + message(b"reply")], 1),
    ],
)
async def test_listeners_that_split_the_echo_are_understood(
    node_pair: tuple[Node, Node],
    built: Built,
    monkeypatch: pytest.MonkeyPatch,
    frames: list[bytes],
    machines: int,
) -> None:
    a, b = node_pair
    conn, accepted = await raw_listener(a, b, monkeypatch)
    built.dialers = 0
    stream = await conn.new_stream(ECHO)
    await stream.write_message(b"request")
    server = await accepted.get()
    await answer(server, frames)
    assert await stream.read_message(64) == b"reply"
    assert stream.protocol == ECHO and stream._negotiator is None
    assert await server.read_message(64) == b"request"
    assert built.dialers == machines


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        ([HEADER + encode_message("na")], ProtocolNotSupportedError),
        ([HEADER, encode_message("na")], ProtocolNotSupportedError),
        ([HEADER + encode_message("/other/1.0.0")], RemoteProtocolError),
        ([HEADER, HEADER], RemoteProtocolError),
        ([b"\x00"], RemoteProtocolError),
    ],
)
async def test_refusing_or_garbled_listeners_fail_the_stream(
    node_pair: tuple[Node, Node],
    built: Built,
    monkeypatch: pytest.MonkeyPatch,
    frames: list[bytes],
    error: type[Exception],
) -> None:
    a, b = node_pair
    conn, accepted = await raw_listener(a, b, monkeypatch)
    built.dialers = 0
    stream = await conn.new_stream(ECHO)
    await stream.write_message(b"request")
    await answer(await accepted.get(), frames)
    with pytest.raises(error):
        await stream.read_message(64)
    assert built.dialers == 1
    await wait_for(lambda: stream.stream_id not in conn._streams)
    assert not conn.is_closed
