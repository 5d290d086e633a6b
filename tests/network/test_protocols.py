"""Issue 11, items 3 and 4 on loopback TCP: several request protocols on one Network
(``add_protocol``), the firewall and identify per protocol, and the chunked framing:
result codes (``RemoteError``), streamed responses (``request_stream``) with flow control
and cancellation from either side.  Hostile cases: a responder that sends an unknown
result code, a chunk above the limit, endless chunks, garbage, an over-long error
message; a requester that never reads a streamed response.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from aiop2p._aio.stream import Stream
from aiop2p._wire.varint import encode_uvarint
from aiop2p.config import NodeConfig
from aiop2p.errors import (
    InvalidArgumentError,
    InvalidStateError,
    RemoteError,
    RequestConnectionClosedError,
    ResponseOmittedError,
    ResponseTooLargeError,
    ResultCode,
    ShutdownError,
)
from aiop2p.events import InboundFailure, InboundRequestFailed
from aiop2p.network import (
    DEFAULT_PROTOCOL,
    ApprovalRequest,
    Framing,
    InboundRequest,
    RawCodec,
    TypedCodec,
)
from aiop2p.network.config import MAX_ERROR_MESSAGE_BYTES
from aiop2p.network.firewall import FirewallRules, Rule
from aiop2p.network.inbound import CHUNKS_PER_TURN
from aiop2p.protocols.yamux import YamuxConfig

from ..helpers import wait_for
from .conftest import CAP, CONNECTION_NOISE, FirewallInbox, background, link, networks, next_event

ALLOW: dict[str, Any] = {
    "firewall": FirewallRules.allow_all(),
    "dcutr": None,
    "relay_client": False,
}
CLIENT: dict[str, Any] = {"dcutr": None, "relay_client": False}
KV = "/kv/1.0.0"


class Get(msgspec.Struct):
    key: str


async def count_to(request: InboundRequest[Any, Any]) -> AsyncIterator[int]:
    for i in range(request.request):
        yield i


# -- several protocols --------------------------------------------------------------------


async def test_each_protocol_has_its_codec_and_the_default_keeps_working() -> None:
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        raw = server.add_protocol("/raw/1", codec=RawCodec(), framing=Framing.EOF_DELIMITED)
        raw_client = client.add_protocol("/raw/1", codec=RawCodec(), framing=Framing.EOF_DELIMITED)

        async def upper(request: InboundRequest[Any, Any]) -> bytes:
            return bytes(request.request).upper()

        async def seed_loop() -> None:  # the seed's surface on the default protocol
            async for request in server.requests():
                await request.respond({"echo": request.request})

        async with background(raw.serve(upper)), background(seed_loop()):
            assert await raw_client.send_request(server.peer_id, b"abc") == b"ABC"
            assert await client.send_request(server.peer_id, [1]) == {"echo": [1]}
        assert server.default_protocol.protocol_id == DEFAULT_PROTOCOL
        assert len(raw.requests()) == 0


async def test_a_protocol_id_is_served_once() -> None:
    async with networks(ALLOW) as (server,):
        server.add_protocol(KV)
        with pytest.raises(InvalidArgumentError):
            server.add_protocol(KV)
        with pytest.raises(InvalidArgumentError):
            server.add_protocol(DEFAULT_PROTOCOL)
        with pytest.raises(InvalidArgumentError):
            server.add_protocol("/x/1", max_response_chunks=0)


async def test_the_firewall_sees_the_protocol_and_identify_advertises_per_peer() -> None:
    ask = {"firewall": FirewallRules(default=Rule.ask()), "dcutr": None, "relay_client": False}
    async with networks(ask, CLIENT, CLIENT) as (server, client, banned):
        kv = server.add_protocol(KV, firewall_view=lambda value: ("kv", value))
        kv_client = client.add_protocol(KV)
        await link(client, server)
        await link(banned, server)
        server.set_peer_rule(banned.peer_id, Rule.reject_all())
        inbox = FirewallInbox(server)
        try:
            async with background(kv.serve(lambda rq: _value(rq.request))):
                pending = asyncio.ensure_future(kv_client.send_request(server.peer_id, 7))
                question = await inbox.next()
                assert isinstance(question, ApprovalRequest)
                assert question.protocol == KV and question.request == ("kv", 7)
                question.approve()
                assert await asyncio.wait_for(pending, CAP) == 7
                # On the default protocol the question names the default protocol.
                pending = asyncio.ensure_future(client.send_request(server.peer_id, 8))
                question = await inbox.next()
                assert isinstance(question, ApprovalRequest)
                assert question.protocol == DEFAULT_PROTOCOL and question.request == 8
                question.reject()
                with pytest.raises(ResponseOmittedError):
                    await asyncio.wait_for(pending, CAP)
                # Identify: the client is offered both protocols, the banned peer neither.
                conn = client._node.connections_to(server.peer_id)[0]
                info = await client._node.identify.identify(conn)  # type: ignore[union-attr]
                assert {KV, DEFAULT_PROTOCOL} <= set(info.protocols)
                await banned.connect_peer(server.peer_id)
                conn = banned._node.connections_to(server.peer_id)[0]
                info = await banned._node.identify.identify(conn)  # type: ignore[union-attr]
                assert KV not in info.protocols and DEFAULT_PROTOCOL not in info.protocols
        finally:
            await inbox.aclose()


async def _value(value: Any) -> Any:
    return value


# -- chunked framing: result codes --------------------------------------------------------


async def test_chunked_single_response_and_result_codes() -> None:
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        kv = server.add_protocol(KV, framing=Framing.CHUNKED)
        kv_client = client.add_protocol(KV, framing=Framing.CHUNKED)

        async def handler(request: InboundRequest[Any, Any]) -> Any:
            op = request.request
            if op == "missing":
                raise RemoteError(ResultCode.RESOURCE_UNAVAILABLE, "no such key")
            if op == "boom":
                raise KeyError("secret internal detail")
            return {"ok": op}

        async with background(kv.serve(handler)):
            assert await kv_client.send_request(server.peer_id, "a") == {"ok": "a"}
            with pytest.raises(RemoteError) as missing:
                await kv_client.send_request(server.peer_id, "missing")
            assert missing.value.code is ResultCode.RESOURCE_UNAVAILABLE
            assert missing.value.message == "no such key"
            with pytest.raises(RemoteError) as boom:
                await kv_client.send_request(server.peer_id, "boom")
            assert boom.value.code is ResultCode.SERVER_ERROR
            assert "KeyError" in boom.value.message and "secret" not in boom.value.message
            event = await next_event(server, InboundRequestFailed, skip=CONNECTION_NOISE)
            assert event.failure is InboundFailure.HANDLER_ERROR
            # A handler error is not a firewall rejection, nor a closed connection.
            assert not isinstance(boom.value, RequestConnectionClosedError)
            assert await kv_client.send_request(server.peer_id, "b") == {"ok": "b"}


async def test_chunked_invalid_request_names_the_field() -> None:
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        kv = server.add_protocol(KV, framing=Framing.CHUNKED, codec=TypedCodec(Get, str))
        loose = client.add_protocol(KV, framing=Framing.CHUNKED)  # JSON, unchecked
        async with background(kv.serve(lambda rq: _value(rq.request.key))):
            assert await loose.send_request(server.peer_id, {"key": "k"}) == "k"
            with pytest.raises(RemoteError) as error:
                await loose.send_request(server.peer_id, {"key": 5})
        assert error.value.code is ResultCode.INVALID_REQUEST
        assert "$.key" in error.value.message


# -- chunked framing: streams -------------------------------------------------------------


async def test_a_generator_handler_streams_and_the_requester_iterates() -> None:
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        kv = server.add_protocol(KV, framing=Framing.CHUNKED)
        kv_client = client.add_protocol(KV, framing=Framing.CHUNKED)
        async with background(kv.serve(count_to)):
            items = [item async for item in kv_client.request_stream(server.peer_id, 50)]
            assert items == list(range(50))
            assert [item async for item in kv_client.request_stream(server.peer_id, 0)] == []
            # send_request takes the first response of a stream
            assert await kv_client.send_request(server.peer_id, 3) == 0


async def test_request_stream_needs_the_chunked_framing() -> None:
    async with networks(CLIENT) as (client,):
        with pytest.raises(InvalidArgumentError):
            client.default_protocol.request_stream(client.peer_id, 1)


async def test_an_error_after_some_items_reaches_the_requester() -> None:
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        kv = server.add_protocol(KV, framing=Framing.CHUNKED)
        kv_client = client.add_protocol(KV, framing=Framing.CHUNKED)

        async def two_then_fail(request: InboundRequest[Any, Any]) -> AsyncIterator[int]:
            yield 1
            yield 2
            raise RemoteError(ResultCode.RESOURCE_UNAVAILABLE, "x" * 1000)

        async with background(kv.serve(two_then_fail)):
            got = []
            with pytest.raises(RemoteError) as error:
                async for item in kv_client.request_stream(server.peer_id, None):
                    got.append(item)
        assert got == [1, 2]
        assert error.value.code is ResultCode.RESOURCE_UNAVAILABLE
        assert len(error.value.message) == MAX_ERROR_MESSAGE_BYTES  # cut to the bound


async def test_requester_break_resets_and_closes_the_generator() -> None:
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        kv = server.add_protocol(KV, framing=Framing.CHUNKED)
        kv_client = client.add_protocol(KV, framing=Framing.CHUNKED)
        closed = asyncio.Event()

        async def endless(request: InboundRequest[Any, Any]) -> AsyncIterator[int]:
            try:
                for i in range(10**9):  # bounded only by the requester
                    yield i
            finally:
                closed.set()

        async with background(kv.serve(endless)):
            async for item in kv_client.request_stream(server.peer_id, None):
                if item == 3:
                    break
            await asyncio.wait_for(closed.wait(), CAP)
            event = await next_event(server, InboundRequestFailed, skip=CONNECTION_NOISE)
            assert event.failure is InboundFailure.CANCELLED


async def test_an_iterator_that_never_awaits_does_not_hold_the_loop() -> None:
    """Chunks the send window takes at once do not yield: the responder yields every
    ``CHUNKS_PER_TURN`` chunks itself, so other work on the node runs meanwhile (counted
    in chunks produced before a callback scheduled at the start ran)."""
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        kv = server.add_protocol(KV, framing=Framing.CHUNKED)
        kv_client = client.add_protocol(KV, framing=Framing.CHUNKED)
        produced = 0
        loop_ran_at: list[int] = []

        async def greedy(request: InboundRequest[Any, Any]) -> AsyncIterator[int]:
            nonlocal produced
            asyncio.get_running_loop().call_soon(lambda: loop_ran_at.append(produced))
            for i in range(10**9):  # bounded only by the requester
                produced += 1
                yield i

        async with background(kv.serve(greedy)):
            async for item in kv_client.request_stream(server.peer_id, None):
                if item == 3:
                    break
            await wait_for(lambda: bool(loop_ran_at), cap=CAP)
        assert loop_ran_at[0] <= CHUNKS_PER_TURN + 1


async def test_server_cancel_gives_the_requester_a_clear_error() -> None:
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        kv = server.add_protocol(KV, framing=Framing.CHUNKED)
        kv_client = client.add_protocol(KV, framing=Framing.CHUNKED)
        hold = asyncio.Event()
        closed = asyncio.Event()

        async def one_then_wait(request: InboundRequest[Any, Any]) -> AsyncIterator[int]:
            try:
                yield 1
                await hold.wait()  # never set: serve() is cancelled meanwhile
                yield 2
            finally:
                closed.set()

        serving = asyncio.ensure_future(kv.serve(one_then_wait))
        stream = kv_client.request_stream(server.peer_id, None)
        assert await asyncio.wait_for(anext(stream), CAP) == 1
        serving.cancel()
        with pytest.raises(RemoteError) as error:
            await asyncio.wait_for(anext(stream), CAP)
        assert error.value.code is ResultCode.SERVER_ERROR
        assert closed.is_set()
        with pytest.raises(asyncio.CancelledError):
            await serving


async def test_a_requester_that_does_not_read_suspends_the_generator() -> None:
    chunk = 64 * 1024
    window = 256 * 1024
    small = {**CLIENT, "node": NodeConfig(yamux=YamuxConfig(receive_window_bytes=window))}
    async with networks(ALLOW, small) as (server, client):
        await link(client, server)
        kv = server.add_protocol(KV, framing=Framing.CHUNKED, codec=RawCodec())
        kv_client = client.add_protocol(KV, framing=Framing.CHUNKED, codec=RawCodec())
        produced = 0
        exchanges: list[Any] = []

        async def big(request: InboundRequest[Any, Any]) -> AsyncIterator[bytes]:
            nonlocal produced
            exchanges.append(request._exchange)
            for _ in range(1000):  # 64 MB if nobody stopped it
                produced += 1
                yield b"x" * chunk

        def blocked() -> bool:  # the generator's last chunk waits for window
            if not exchanges or exchanges[0].stream is None:
                return False
            return bool(exchanges[0]._mid_chunk and exchanges[0].stream._write_waiter)

        async with background(kv.serve(big)):
            stream = kv_client.request_stream(server.peer_id, b"")
            assert len(await asyncio.wait_for(anext(stream), CAP)) == chunk
            for read in range(1, 4):
                await wait_for(blocked, CAP)
                # The requester's receive window, and one chunk in each of the writer
                # and the read: the generator ran at most that far ahead.
                assert produced <= read + window // chunk + 2
                assert len(await asyncio.wait_for(anext(stream), CAP)) == chunk
            await stream.aclose()
            await wait_for(lambda: exchanges[0].ended, CAP)
        assert produced < 20


# -- chunked framing: hostile responders --------------------------------------------------


async def raw_responder(server: Any, reply: bytes | None, *, repeat: int = 1) -> None:
    """The server answers ``KV`` with ``reply`` (``repeat`` times), below the Network."""

    async def handler(stream: Stream) -> None:
        await stream.read_message(1024)
        for _ in range(repeat):
            await stream.write(reply or b"")
        await stream.close()

    server._node.set_stream_handler(KV, handler)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"\x07\x01x", RequestConnectionClosedError),  # unknown result code
        (b"\x00" + encode_uvarint(2000) + b"y" * 2000, ResponseTooLargeError),
        (b"\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", RequestConnectionClosedError),
        (b"\x02" + encode_uvarint(5000) + b"e" * 5000, ResponseTooLargeError),  # long error
        (b"\x00\x03", ResponseOmittedError),  # cut short
    ],
)
async def test_hostile_chunks_are_refused(reply: bytes, error: type[Exception]) -> None:
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        await raw_responder(server, reply)
        kv_client = client.add_protocol(
            KV, framing=Framing.CHUNKED, codec=RawCodec(), max_response_bytes=1024
        )
        with pytest.raises(error):
            await kv_client.send_request(server.peer_id, b"q")
        with pytest.raises(error):
            async for _ in kv_client.request_stream(server.peer_id, b"q"):
                pass


async def test_endless_chunks_stop_at_max_response_chunks() -> None:
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        await raw_responder(server, b"\x00\x01z", repeat=100)
        kv_client = client.add_protocol(
            KV, framing=Framing.CHUNKED, codec=RawCodec(), max_response_chunks=10
        )
        got = 0
        with pytest.raises(ResponseTooLargeError):
            async for _ in kv_client.request_stream(server.peer_id, b"q"):
                got += 1
        assert got == 10


async def test_a_generator_handler_on_a_length_prefixed_protocol_is_a_handler_error() -> None:
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        async with background(server.serve(count_to)):
            with pytest.raises(ResponseOmittedError):
                await client.send_request(server.peer_id, 3)
            event = await next_event(server, InboundRequestFailed, skip=CONNECTION_NOISE)
            assert event.failure is InboundFailure.HANDLER_ERROR


async def test_closing_the_network_ends_a_stream_being_read() -> None:
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        kv = server.add_protocol(KV, framing=Framing.CHUNKED)
        kv_client = client.add_protocol(KV, framing=Framing.CHUNKED)
        hold = asyncio.Event()

        async def one_then_wait(request: InboundRequest[Any, Any]) -> AsyncIterator[int]:
            yield 1
            await hold.wait()  # never set
            yield 2

        async with background(kv.serve(one_then_wait)):
            stream = kv_client.request_stream(server.peer_id, None)
            assert await asyncio.wait_for(anext(stream), CAP) == 1
            pending = asyncio.ensure_future(anext(stream))
            await client.close()
            with pytest.raises(ShutdownError):
                await asyncio.wait_for(pending, CAP)


async def test_a_requester_that_never_reads_is_cut_at_the_deadline() -> None:
    fast = {**ALLOW, "request_timeout": 0.5}
    window = 256 * 1024
    small = {**CLIENT, "node": NodeConfig(yamux=YamuxConfig(receive_window_bytes=window))}
    async with networks(fast, small) as (server, client):
        await link(client, server)
        kv = server.add_protocol(KV, framing=Framing.CHUNKED, codec=RawCodec())
        closed = asyncio.Event()
        produced = 0

        async def endless(request: InboundRequest[Any, Any]) -> AsyncIterator[bytes]:
            nonlocal produced
            try:
                for _ in range(10**6):
                    produced += 1
                    yield b"y" * 65536
            finally:
                closed.set()

        async with background(kv.serve(endless)):
            conn = await client._node.connect(server.peer_id)
            stream = conn.open_stream((KV,))
            await stream.write_message(b"go")
            await stream.close()  # and never reads
            await asyncio.wait_for(closed.wait(), CAP)
            event = await next_event(server, InboundRequestFailed, skip=CONNECTION_NOISE)
            assert event.failure is InboundFailure.SEND_TIMEOUT
        assert produced <= window // 65536 + 2


async def test_an_undecodable_request_gets_an_invalid_request_chunk() -> None:
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        kv = server.add_protocol(KV, framing=Framing.CHUNKED)
        async with background(kv.serve(lambda rq: _value(rq.request))):
            conn = await client._node.connect(server.peer_id)
            stream = conn.open_stream((KV,))
            await stream.write_message(b"\xff{not json")
            await stream.close()
            reply = await asyncio.wait_for(stream.read_until_eof(1024), CAP)
        assert reply[0] == ResultCode.INVALID_REQUEST
        assert b"invalid JSON" in reply[2:]


@pytest.mark.parametrize("framing", [Framing.LENGTH_PREFIXED, Framing.CHUNKED])
async def test_a_handler_failing_after_answering_leaves_the_answer_whole(framing: Framing) -> None:
    big = b"z" * (4 << 20)  # written by a task: more than a piece and the first window
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        kv = server.add_protocol(KV, framing=framing, codec=RawCodec())
        kv_client = client.add_protocol(KV, framing=framing, codec=RawCodec())

        async def answer_then_fail(request: InboundRequest[Any, Any]) -> bytes:
            request.respond_nowait(big)
            raise RuntimeError("after the answer")

        async with background(kv.serve(answer_then_fail)):
            assert await kv_client.send_request(server.peer_id, b"q") == big


async def test_respond_error_answers_a_requests_user_with_an_error_chunk() -> None:
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        kv = server.add_protocol(KV, framing=Framing.CHUNKED)
        kv_client = client.add_protocol(KV, framing=Framing.CHUNKED)

        async def next_request() -> InboundRequest[Any, Any]:
            async with asyncio.timeout(CAP):
                return await kv.requests().receive()

        missing = asyncio.ensure_future(kv_client.send_request(server.peer_id, "missing"))
        request = await next_request()
        with pytest.raises(InvalidArgumentError):
            request.respond_error(ResultCode.SUCCESS, "not an error")  # still unanswered
        request.respond_error(ResultCode.RESOURCE_UNAVAILABLE, "no such key")
        with pytest.raises(RemoteError) as error:
            await missing
        assert error.value.code is ResultCode.RESOURCE_UNAVAILABLE
        assert error.value.message == "no such key"
        event = await next_event(server, InboundRequestFailed, skip=CONNECTION_NOISE)
        assert event.failure is InboundFailure.HANDLER_ERROR
        assert request.answered
        with pytest.raises(InvalidStateError):
            request.respond_error(ResultCode.SERVER_ERROR, "twice")
        with pytest.raises(InvalidStateError):
            await request.respond("late")

        # A stream ends with it too; the message is bounded like any error chunk's.
        items: list[Any] = []

        async def read_stream() -> None:
            async for item in kv_client.request_stream(server.peer_id, "range"):
                items.append(item)  # none: the error is the only chunk

        streaming = asyncio.ensure_future(read_stream())
        request = await next_request()
        request.respond_error(ResultCode.INVALID_REQUEST, "é" * MAX_ERROR_MESSAGE_BYTES)
        with pytest.raises(RemoteError) as error:
            await streaming
        assert error.value.code is ResultCode.INVALID_REQUEST
        assert error.value.message == "é" * (MAX_ERROR_MESSAGE_BYTES // 2)
        assert items == []


async def test_respond_error_needs_the_chunked_framing() -> None:
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        pending = asyncio.ensure_future(client.send_request(server.peer_id, "x"))
        async with asyncio.timeout(CAP):
            request = await server.requests().receive()
        with pytest.raises(InvalidArgumentError):
            request.respond_error(ResultCode.SERVER_ERROR, "no error chunk here")
        await request.respond("still answerable")
        assert await pending == "still answerable"
