"""Stream.read_message / write against a recording owner: the one-piece fast paths give
the same bytes, window credit and errors as the general paths, for whatever the peer sends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aiop2p._aio.stream import Stream
from aiop2p.errors import (
    MessageTooLargeError,
    RemoteProtocolError,
    StreamClosedError,
    StreamResetError,
)
from aiop2p.protocols.multistream import MULTISTREAM_PROTOCOL_ID, encode_message
from aiop2p.protocols.role import Role
from aiop2p.protocols.yamux import StreamId

from ..helpers import wait_for

SID = StreamId(3)


class Owner:
    """The parts of a connection a negotiated stream calls, recorded."""

    def __init__(self, window: int = 1 << 20) -> None:
        self.loop = asyncio.get_running_loop()
        self.write_paused = False
        self.write_piece_size = 1024
        self.max_negotiation_message_bytes = 1024
        self.window = window
        self.sent: list[bytes] = []
        self.acked = 0
        self.resets = 0
        self.drain: asyncio.Future[None] | None = None
        self.pause_on_send = False  # the socket pauses once this write is queued

    def send_stream_data(self, sid: StreamId, data: Any) -> int:
        take = bytes(data[: self.window])
        self.window -= len(take)
        self.sent.append(take)
        self.write_paused = self.write_paused or self.pause_on_send
        return len(take)

    def acknowledge(self, sid: StreamId, size: int) -> None:
        self.acked += size

    def reset_stream(self, sid: StreamId) -> None:
        self.resets += 1

    def forget_stream(self, sid: StreamId) -> None:
        pass

    def note_wakeup(self) -> None:
        pass

    def stream_negotiated(self, stream: Stream) -> None:
        pass

    def drained(self) -> asyncio.Future[None]:
        self.drain = self.loop.create_future()
        return self.drain


def negotiated(owner: Owner) -> Stream:
    return Stream(owner, SID, role=Role.RESPONDER, negotiator=None)  # type: ignore[arg-type]


async def test_messages_in_one_piece_or_split_read_the_same_and_credit_every_byte() -> None:
    owner = Owner()
    stream = negotiated(owner)
    big = bytes(range(256)) * 2  # a two-byte length prefix
    stream._feed_data(b"\x02hi\x03abc" + b"\x80\x04" + big[:10])  # two whole, one cut
    assert await stream.read_message(1024) == b"hi"
    assert await stream.read_message(1024) == b"abc"
    reader = asyncio.ensure_future(stream.read_message(1024))
    await asyncio.sleep(0)
    assert not reader.done()
    stream._feed_data(big[10:])
    assert await reader == big
    stream._feed_data(b"\x05")  # the prefix alone, then the body
    stream._feed_data(b"hello")
    assert await stream.read_message(1024) == b"hello"
    assert owner.acked == 3 + 4 + 2 + len(big) + 6
    assert stream._buffered == 0 and owner.resets == 0


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x81\x01" + bytes(129), MessageTooLargeError),  # above max_size, in one piece
        (b"\x80\x00", RemoteProtocolError),  # a length prefix that is not minimal
        (b"\xff" * 10, RemoteProtocolError),  # a length prefix longer than 9 bytes
    ],
)
async def test_a_bad_length_prefix_resets_the_stream(data: bytes, error: type[Exception]) -> None:
    owner = Owner()
    stream = negotiated(owner)
    stream._feed_data(data)
    with pytest.raises(error):
        await stream.read_message(128)
    assert owner.resets == 1


async def test_a_small_write_is_one_piece_and_still_waits_for_a_paused_socket() -> None:
    owner = Owner()
    stream = negotiated(owner)
    await stream.write_message(b"ping")
    assert owner.sent == [b"\x04ping"]

    owner.sent.clear()
    owner.pause_on_send = True
    write = asyncio.ensure_future(stream.write(b"x" * 10))
    await asyncio.sleep(0)
    assert owner.sent == [b"x" * 10] and not write.done()  # sent, now waiting to drain
    assert owner.drain is not None
    owner.write_paused = False
    owner.drain.set_result(None)
    await write


async def test_a_small_write_beyond_the_window_waits_for_credit() -> None:
    owner = Owner(window=3)
    stream = negotiated(owner)
    write = asyncio.ensure_future(stream.write(b"abcdef"))
    await asyncio.sleep(0)
    assert owner.sent[0] == b"abc" and not write.done()
    owner.window = 10
    stream._wake_writer()  # the peer granted more window
    await asyncio.wait_for(write, 10)
    assert b"".join(owner.sent) == b"abcdef"


async def test_write_message_waits_like_write_when_paused_short_of_window_or_closed() -> None:
    """write_message's one-piece path (no ``write`` coroutine) keeps write's waits and errors."""
    owner = Owner()
    stream = negotiated(owner)
    owner.pause_on_send = True
    write = asyncio.ensure_future(stream.write_message(b"x" * 10))
    await wait_for(lambda: owner.drain is not None)
    assert owner.sent == [b"\x0a" + b"x" * 10] and not write.done()  # sent, waiting to drain
    assert owner.drain is not None
    owner.write_paused = owner.pause_on_send = False
    owner.drain.set_result(None)
    await asyncio.wait_for(write, 10)

    owner.sent.clear()
    owner.drain = None
    owner.write_paused = True  # paused before the write: it waits, then sends
    write = asyncio.ensure_future(stream.write_message(b"late"))
    await wait_for(lambda: owner.drain is not None)
    assert owner.sent == [] and not write.done()
    drain = owner.drain
    assert drain is not None
    owner.write_paused = False
    drain.set_result(None)
    await asyncio.wait_for(write, 10)
    assert owner.sent == [b"\x04late"]

    owner.sent.clear()
    owner.window = 3  # the window takes a part: the rest waits for credit
    write = asyncio.ensure_future(stream.write_message(b"abcdef"))
    await wait_for(lambda: stream._write_waiter is not None)
    assert owner.sent[0] == b"\x06ab" and not write.done()
    owner.window = 10
    stream._wake_writer()
    await asyncio.wait_for(write, 10)
    assert b"".join(owner.sent) == b"\x06abcdef"

    big = bytes(owner.write_piece_size)  # above one piece: write's loop, same bytes
    owner.sent.clear()
    owner.window = 1 << 20
    await stream.write_message(big)
    assert b"".join(owner.sent) == b"\x80\x08" + big

    stream._write_closed = True
    with pytest.raises(StreamClosedError):
        await stream.write_message(b"after close")
    stream._write_closed = False
    stream._fail(StreamResetError("reset by the remote"))
    with pytest.raises(StreamResetError):
        await stream.write_message(b"after reset")


PROPOSAL = encode_message(MULTISTREAM_PROTOCOL_ID) + encode_message("/echo/1.0.0")


class Sink:
    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.data = b""

    def sink_data(self, data: bytes) -> None:
        self.data += data
        self.stream.consume(len(data))  # used at once

    def sink_eof(self) -> None:
        pass

    def sink_failed(self, error: Exception) -> None:
        pass

    def sink_writable(self) -> None:
        pass


@pytest.mark.parametrize("reader", ["read_message", "read", "sink"])
async def test_negotiation_bytes_with_a_request_are_credited_with_its_first_read(
    reader: str,
) -> None:
    """A proposal and the request in one input: the proposal's bytes are credited with the
    request's first read, so every received byte is credited exactly once, by any reader."""
    owner = Owner()
    stream = Stream(owner, SID, role=Role.RESPONDER, negotiator=("/echo/1.0.0",))  # type: ignore[arg-type]
    stream._feed_data(PROPOSAL + b"\x02hi")
    assert stream.protocol == "/echo/1.0.0" and owner.sent == [PROPOSAL]
    assert owner.acked == 0  # nothing read yet
    if reader == "read_message":
        assert await stream.read_message(16) == b"hi"
    elif reader == "read":
        assert await stream.read(2) == b"\x02h"
        assert owner.acked == len(PROPOSAL) + 2
        assert await stream.read(5) == b"i"
    else:
        sink = Sink(stream)
        stream.set_sink(sink)
        assert sink.data == b"\x02hi"
    assert owner.acked == len(PROPOSAL) + 3
    stream._feed_data(b"\x01x")  # later input: credited alone
    if reader == "sink":
        assert owner.acked == len(PROPOSAL) + 5
    else:
        assert await stream.read(5) == b"\x01x"
        assert owner.acked == len(PROPOSAL) + 5


async def test_a_proposal_alone_is_credited_at_once() -> None:
    owner = Owner()
    stream = Stream(owner, SID, role=Role.RESPONDER, negotiator=("/echo/1.0.0",))  # type: ignore[arg-type]
    stream._feed_data(PROPOSAL)
    assert stream.protocol == "/echo/1.0.0" and owner.acked == len(PROPOSAL)
