"""The ``Network`` API end to end on loopback TCP: every method, the
request and event channels, outbound/inbound failures with the seed's kinds and texts,
size limits, framings, codecs, channel policies, the firewall plumbing, connection
management and the address book."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
from typing import Any

import pytest

from aiop2p.config import ConnectionLimits
from aiop2p.errors import (
    ConnectionLimitError,
    DialError,
    InvalidStateError,
    LimitExceededError,
    NoAddressesError,
    OutboundFailure,
    RequestConnectionClosedError,
    RequestDialError,
    RequestRefusedError,
    RequestTimeoutError,
    ResponseOmittedError,
    ResponseTooLargeError,
    ShutdownError,
    UnsupportedProtocolsError,
)
from aiop2p.events import (
    ConnectedPoint,
    ConnectionClosed,
    ConnectionEstablished,
    InboundFailure,
    InboundRequestFailed,
    IncomingConnectionError,
    ListenerClosed,
    NewListenAddr,
)
from aiop2p.identity import KeyPair
from aiop2p.multiaddr import Multiaddr
from aiop2p.network import (
    ApprovalRequest,
    ChannelConfig,
    Framing,
    Network,
    PeerRuleQuery,
)
from aiop2p.network.codecs import CodecError, RawCodec
from aiop2p.network.event_channel import ChannelSinkConfig
from aiop2p.network.firewall import FirewallRules, Rule

from ..helpers import wait_for
from .conftest import (
    CAP,
    CONNECTION_NOISE,
    FirewallInbox,
    background,
    drain_events,
    link,
    listen,
    networks,
    new_network,
    next_event,
    next_request,
    outcome,
    serving,
)

pytestmark = pytest.mark.timeout(30)

ALLOW: dict[str, Any] = {"firewall": FirewallRules.allow_all()}


def closed_port_addr() -> Multiaddr:
    """A loopback address nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")


def failures(net: Network[Any, Any]) -> list[InboundRequestFailed]:
    return [e for e in drain_events(net) if isinstance(e, InboundRequestFailed)]


# -- lifecycle, identity -----------------------------------------------------------------


async def test_peer_id_lifecycle_and_close() -> None:
    key = KeyPair.generate()
    net = new_network(key, **ALLOW)
    assert net.peer_id == key.peer_id
    with pytest.raises(InvalidStateError):
        await net.send_request(key.peer_id, "x")  # not started
    async with net:
        assert net.peer_id == key.peer_id
        await listen(net)
    # After close: every call is a shutdown error; the channels end.
    for call in (
        net.send_request(KeyPair.generate().peer_id, "x"),
        net.connect_peer(KeyPair.generate().peer_id),
        net.start_listening("/ip4/127.0.0.1/tcp/0"),
    ):
        error = await outcome(call)
        assert isinstance(error, ShutdownError), error
        assert error.kind is OutboundFailure.SHUTDOWN
    assert [r async for r in net.requests()] == []
    assert [type(e) for e in [e async for e in net.events()]] == [NewListenAddr]
    await net.close()  # idempotent


# -- listening ---------------------------------------------------------------------------


async def test_listening_listeners_and_stop() -> None:
    async with networks(ALLOW, ALLOW) as (a, b):
        first = await b.start_listening("/ip4/127.0.0.1/tcp/0")
        second = await b.start_listening("/ip4/127.0.0.1/tcp/0")
        assert first != second
        assert (await next_event(b, NewListenAddr)).addr == first
        assert (await next_event(b, NewListenAddr)).addr == second
        listeners = b.listeners()
        assert sorted(str(a) for lst in listeners for a in lst.addrs) == sorted(
            [str(first), str(second)]
        )
        assert all(lst.uses_relay is None for lst in listeners)

        await b.stop_listening_addr(first)
        closed = await next_event(b, ListenerClosed)
        assert closed.addrs == (first,) and closed.cause is None
        assert [lst.addrs for lst in b.listeners()] == [[second]]
        a.add_address(b.peer_id, first)
        error = await outcome(a.connect_peer(b.peer_id))
        assert isinstance(error, DialError), error

        await b.stop_listening()
        assert b.listeners() == []
        assert (await next_event(b, ListenerClosed)).addrs == (second,)
        a.add_address(b.peer_id, second)
        assert isinstance(await outcome(a.connect_peer(b.peer_id)), DialError)


# -- connections -------------------------------------------------------------------------


async def test_connect_peer_is_connected_established_connections() -> None:
    async with networks(ALLOW, ALLOW) as (a, b):
        assert not a.is_connected(b.peer_id)
        with pytest.raises(NoAddressesError, match=r"No addresses known for peer\."):
            await a.connect_peer(b.peer_id)
        with pytest.raises(DialError, match=r"Tried to dial local peer id\."):
            await a.connect_peer(a.peer_id)
        addr = await link(a, b)
        remote = await a.connect_peer(b.peer_id)
        assert remote.without_peer_id() == addr
        assert a.is_connected(b.peer_id)
        event = await next_event(a, ConnectionEstablished)
        assert event.peer == b.peer_id and event.num_established == 1
        assert event.endpoint.dialer is True
        await wait_for(lambda: b.is_connected(a.peer_id), CAP)
        inbound = await next_event(b, ConnectionEstablished, skip=(NewListenAddr,))
        assert inbound.endpoint.dialer is False
        assert inbound.endpoint.local_addr == addr
        [(peer, points)] = a.established_connections()
        assert peer == b.peer_id
        assert points == [ConnectedPoint(True, remote, event.endpoint.local_addr)]
        assert [p for p, _ in b.established_connections()] == [a.peer_id]


async def test_one_dial_per_peer_for_concurrent_requests() -> None:
    async with networks(ALLOW, ALLOW) as (a, b):
        await link(a, b)
        async with serving(b, lambda rq: rq * 2):
            results = await asyncio.gather(*(a.send_request(b.peer_id, i) for i in range(20)))
        assert results == [i * 2 for i in range(20)]
        established = [e for e in drain_events(a) if isinstance(e, ConnectionEstablished)]
        assert len(established) == 1
        assert [len(points) for _, points in a.established_connections()] == [1]
        assert [len(points) for _, points in b.established_connections()] == [1]


async def test_idle_connection_closes_and_reopens() -> None:
    async with networks({**ALLOW, "connection_timeout": 0.3}, ALLOW) as (a, b):
        await link(a, b)
        async with serving(b, lambda rq: "pong"):
            assert await a.send_request(b.peer_id, "ping") == "pong"
            await next_event(a, ConnectionEstablished)
            closed = await next_event(a, ConnectionClosed)
            assert closed.cause is None, "an idle close is graceful"
            assert closed.num_established == 0
            assert not a.is_connected(b.peer_id)
            assert await a.send_request(b.peer_id, "ping") == "pong"
            await next_event(a, ConnectionEstablished)


async def test_connection_limit_per_peer() -> None:
    limits = ConnectionLimits(max_established_per_peer=1)
    async with networks(ALLOW, {**ALLOW, "connection_limits": limits}) as (a, b):
        addr = await link(a, b)
        await a.connect_peer(b.peer_id)
        await next_event(b, ConnectionEstablished, skip=(NewListenAddr,))
        # A second connection (forced below the Network, which never opens one itself).
        await outcome(a._node.dial(addr.with_peer_id(b.peer_id), force=True))
        refused = await next_event(b, IncomingConnectionError)
        assert isinstance(refused.error, ConnectionLimitError)
        assert "Connection limit: `1`/`1`" in str(refused.error)
        assert [len(p) for _, p in b.established_connections()] == [1]
        async with serving(b, lambda rq: "pong"):
            assert await a.send_request(b.peer_id, "ping") == "pong"


async def test_connection_limit_total_incoming() -> None:
    limits = ConnectionLimits(max_established_total=1)
    async with networks(ALLOW, ALLOW, {**ALLOW, "connection_limits": limits}) as (a, c, b):
        addr = await link(a, b)
        c.add_address(b.peer_id, addr)
        await a.connect_peer(b.peer_id)
        await next_event(b, ConnectionEstablished, skip=(NewListenAddr,))
        result = await outcome(c.send_request(b.peer_id, "ping"))
        assert isinstance(result, RequestConnectionClosedError | RequestDialError), result
        refused = await next_event(b, IncomingConnectionError)
        assert isinstance(refused.error, ConnectionLimitError)
        assert [p for p, _ in b.established_connections()] == [a.peer_id]


async def test_connection_limit_outgoing_and_pending() -> None:
    out1 = {**ALLOW, "connection_limits": ConnectionLimits(max_established_outgoing=1)}
    pend0 = {**ALLOW, "connection_limits": ConnectionLimits(max_pending_outgoing=0)}
    async with networks(out1, pend0, ALLOW, ALLOW) as (a, p, b, c):
        await link(a, b)
        await link(a, c)
        await a.connect_peer(b.peer_id)
        with pytest.raises(DialError, match="Connection limit"):
            await a.connect_peer(c.peer_id)
        p.add_address(b.peer_id, b.listeners()[0].addrs[0])
        # compat: a refused dial fails the request (instead of hanging).
        failed = await outcome(p.send_request(b.peer_id, "ping"))
        assert isinstance(failed, RequestDialError), failed
        assert "Connection limit" in str(failed.__cause__)


async def test_connection_limit_pending_incoming() -> None:
    limits = ConnectionLimits(max_pending_incoming=0)
    async with networks(ALLOW, {**ALLOW, "connection_limits": limits}) as (a, b):
        await link(a, b)
        assert isinstance(await outcome(a.connect_peer(b.peer_id)), DialError)
        refused = await next_event(b, IncomingConnectionError, skip=(NewListenAddr,))
        assert isinstance(refused.error, ConnectionLimitError)


async def test_incoming_connection_error_for_garbage() -> None:
    async with networks(ALLOW) as (b,):
        addr = await listen(b)
        host, port = addr.value_for("ip4"), int(addr.value_for("tcp") or 0)
        _reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"\x13this is not multistream\n" * 4)
        await writer.drain()
        try:
            event = await next_event(b, IncomingConnectionError, skip=(NewListenAddr,))
        finally:
            writer.close()
        assert event.local_addr == addr
        assert event.send_back_addr is not None
        assert not drain_events(b)


# -- requests: answers, drops --------------------------------------------------------------


async def test_requests_respond_and_ids() -> None:
    async with networks(ALLOW, ALLOW) as (a, b):
        await link(a, b)
        pending = asyncio.ensure_future(a.send_request(b.peer_id, {"op": "echo", "n": 1}))
        request = await next_request(b)
        assert request.peer == a.peer_id
        assert request.request == {"op": "echo", "n": 1}
        assert not request.answered
        await request.respond({"ok": True})
        assert request.answered
        assert await pending == {"ok": True}
        with pytest.raises(InvalidStateError):
            await request.respond({"again": True})
        with pytest.raises(CodecError):
            await a.send_request(b.peer_id, {1, 2})  # not JSON-encodable
        assert failures(b) == []


async def test_request_drop_is_response_omission() -> None:
    async with networks(ALLOW, ALLOW) as (a, b):
        await link(a, b)
        pending = asyncio.ensure_future(outcome(a.send_request(b.peer_id, "x")))
        request = await next_request(b)
        request.drop()
        error = await pending
        assert isinstance(error, ResponseOmittedError), error
        assert error.kind is OutboundFailure.CONNECTION_CLOSED
        event = await next_event(b, InboundRequestFailed, skip=CONNECTION_NOISE)
        assert event == InboundRequestFailed(
            request.request_id, a.peer_id, InboundFailure.RESPONSE_OMISSION
        )
        assert str(event.failure.value) == "The request was dropped without a response"
        with pytest.raises(InvalidStateError):
            await request.respond("late")


async def test_request_garbage_collected_is_response_omission() -> None:
    async with networks(ALLOW, ALLOW) as (a, b):
        await link(a, b)
        pending = asyncio.ensure_future(outcome(a.send_request(b.peer_id, "x")))
        request = await next_request(b)
        request_id = request.request_id
        del request
        gc.collect()
        assert isinstance(await pending, ResponseOmittedError)
        event = await next_event(b, InboundRequestFailed, skip=CONNECTION_NOISE)
        assert (event.request_id, event.failure) == (request_id, InboundFailure.RESPONSE_OMISSION)


# -- outbound failures ---------------------------------------------------------------------


async def test_outbound_dial_failure() -> None:
    async with networks(ALLOW) as (a,):
        target = KeyPair.generate().peer_id
        a.add_address(target, closed_port_addr())
        error = await outcome(a.send_request(target, "x"))
        assert isinstance(error, RequestDialError)
        assert error.kind is OutboundFailure.DIAL_FAILURE
        assert str(error).startswith("Failed to dial the requested peer")
        no_addr = await outcome(a.send_request(KeyPair.generate().peer_id, "x"))
        assert isinstance(no_addr, RequestDialError)
        assert isinstance(no_addr.__cause__, NoAddressesError)


async def test_outbound_timeout_and_inbound_timeout() -> None:
    # Each side's deadline is tested against a peer whose own deadline is twenty times
    # longer, so it always strikes first: with equal timeouts the requester's reset races
    # the responder's deadline (the responder then reports CANCELLED, as it should).
    slow, fast = ALLOW, {**ALLOW, "request_timeout": 0.5}
    async with networks(slow, fast) as (a, b):
        await link(a, b)
        await link(b, a)
        # The responder is too slow: b gives up on a's request and keeps the stream open.
        pending = asyncio.ensure_future(outcome(a.send_request(b.peer_id, "x")))
        request = await next_request(b)  # held, never answered
        event = await next_event(b, InboundRequestFailed, skip=CONNECTION_NOISE)
        # The request was received; the application was too slow (issue 8, item 12).
        assert event.failure is InboundFailure.RESPONSE_TIMEOUT
        assert event.failure.value == "The request was not answered within the request timeout"
        with pytest.raises(InvalidStateError):
            await request.respond("late")
        assert not pending.done()  # b lingers: a waits for its own deadline
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        # The requester is too impatient: b's request to a times out, and a, still holding
        # the request, sees it cancelled by b's reset.
        pending = asyncio.ensure_future(outcome(b.send_request(a.peer_id, "y")))
        held = await next_request(a)  # held, never answered
        error = await pending
        assert isinstance(error, RequestTimeoutError)
        assert error.kind is OutboundFailure.TIMEOUT
        assert str(error) == "Timeout while waiting for a response"
        event = await next_event(a, InboundRequestFailed, skip=CONNECTION_NOISE)
        assert event.failure is InboundFailure.CANCELLED
        with pytest.raises(InvalidStateError):
            await held.respond("late")


async def test_outbound_connection_closed() -> None:
    async with networks(ALLOW) as (a,):
        b = new_network(**ALLOW)
        async with b:
            await link(a, b)
            pending = asyncio.ensure_future(outcome(a.send_request(b.peer_id, "x")))
            await next_request(b)
        error = await pending
        assert isinstance(error, RequestConnectionClosedError), error
        assert error.kind is OutboundFailure.CONNECTION_CLOSED
        assert str(error).startswith("Connection was closed before a response was received")


async def test_outbound_unsupported_protocols() -> None:
    async with networks(ALLOW, {**ALLOW, "protocols": ("/other/1.0.0",)}) as (a, b):
        await link(a, b)
        error = await outcome(a.send_request(b.peer_id, "x"))
        assert isinstance(error, UnsupportedProtocolsError)
        assert str(error) == "The remote supports none of the requested protocols"
        assert failures(b) == []


async def test_outbound_shutdown_while_pending() -> None:
    async with networks(ALLOW) as (b,):
        a = new_network(**ALLOW)
        async with a:
            await link(a, b)
            pending = asyncio.ensure_future(outcome(a.send_request(b.peer_id, "x")))
            request = await next_request(b)
        error = await pending
        assert isinstance(error, ShutdownError)
        assert error.kind is OutboundFailure.SHUTDOWN
        assert str(error) == "The local peer was shut down before a response was received."
        await next_event(b, ConnectionClosed, skip=(NewListenAddr, ConnectionEstablished))
        event = await next_event(b, InboundRequestFailed)
        assert event.failure is InboundFailure.CONNECTION_CLOSED
        assert event.request_id == request.request_id


# -- size limits, framing, codecs --------------------------------------------------------


async def test_request_and_response_size_limits() -> None:
    small = {**ALLOW, "max_request_bytes": 100, "max_response_bytes": 100}
    async with networks(small, small) as (a, b):
        await link(a, b)
        with pytest.raises(LimitExceededError, match="max_request_bytes"):
            await a.send_request(b.peer_id, "x" * 200)
        b.add_address(a.peer_id, await listen(a))
        async with serving(b, lambda rq: "y" * 200 if rq == "big" else "ok"):
            error = await outcome(a.send_request(b.peer_id, "big"))
            assert isinstance(error, ResponseTooLargeError), error
            assert error.kind is OutboundFailure.CONNECTION_CLOSED
            assert "response too large" in str(error) and "100" in str(error)
            assert await a.send_request(b.peer_id, "small") == "ok"
    # The responder enforces its own request limit (the sender's is larger here).
    async with networks(ALLOW, {**ALLOW, "max_request_bytes": 100}) as (a, b):
        await link(a, b)
        error = await outcome(a.send_request(b.peer_id, "x" * 200))
        assert isinstance(error, RequestConnectionClosedError), error
        event = await next_event(b, InboundRequestFailed, skip=CONNECTION_NOISE)
        assert event.failure is InboundFailure.INVALID_REQUEST


async def test_eof_delimited_framing_end_to_end() -> None:
    eof = {**ALLOW, "framing": Framing.EOF_DELIMITED, "max_response_bytes": 100_000}
    async with networks(eof, eof) as (a, b):
        await link(a, b)
        async with serving(b, lambda rq: {"echo": rq}) as seen:
            assert await a.send_request(b.peer_id, "hi") == {"echo": "hi"}
            payload = "z" * 50_000
            assert await a.send_request(b.peer_id, payload) == {"echo": payload}
            error = await outcome(a.send_request(b.peer_id, "w" * 200_000))
            assert isinstance(error, ResponseTooLargeError), error
            assert len(seen) == 3
        pending = asyncio.ensure_future(outcome(a.send_request(b.peer_id, "drop me")))
        (await next_request(b)).drop()
        error = await pending
        assert isinstance(error, RequestConnectionClosedError), error
        event = await next_event(b, InboundRequestFailed, skip=CONNECTION_NOISE)
        assert event.failure is InboundFailure.RESPONSE_OMISSION


async def test_raw_codec_and_user_codec() -> None:
    raw = {**ALLOW, "codec": RawCodec()}
    async with networks(raw, raw) as (a, b):
        await link(a, b)
        async with serving(b, lambda rq: rq[::-1]):
            assert await a.send_request(b.peer_id, b"\x00\x01abc") == b"cba\x01\x00"
            assert await a.send_request(b.peer_id, b"") == b""
        with pytest.raises(CodecError):
            await a.send_request(b.peer_id, "not bytes")

    class PairCodec:
        """Two unsigned 16-bit integers, big endian."""

        def encode(self, value: Any) -> bytes:
            x, y = value
            return int(x).to_bytes(2, "big") + int(y).to_bytes(2, "big")

        def decode(self, data: bytes) -> tuple[int, int]:
            if len(data) != 4:
                raise CodecError(f"want 4 bytes, got {len(data)}")
            return int.from_bytes(data[:2], "big"), int.from_bytes(data[2:], "big")

    user = {**ALLOW, "codec": PairCodec()}
    async with networks(user, user) as (a, b):
        await link(a, b)
        async with serving(b, lambda rq: (rq[1], rq[0])):
            assert await a.send_request(b.peer_id, (1, 700)) == (700, 1)


# -- the requests channel's policies -------------------------------------------------------


def channel(capacity: int, policy: ChannelSinkConfig) -> dict[str, Any]:
    return {**ALLOW, "requests_channel": ChannelConfig(capacity, policy)}


async def test_requests_channel_drop_latest() -> None:
    async with networks(ALLOW, channel(1, ChannelSinkConfig.DROP_LATEST)) as (a, b):
        await link(a, b)
        await a.connect_peer(b.peer_id)
        sends = [asyncio.ensure_future(outcome(a.send_request(b.peer_id, i))) for i in range(4)]
        await wait_for(lambda: sum(t.done() for t in sends) == 2, CAP)
        assert len(b.requests()) == 2 and b.requests().dropped == 2
        dropped = [t.result() for t in sends if t.done()]
        assert all(isinstance(r, ResponseOmittedError) for r in dropped), dropped
        queued = [await next_request(b) for _ in range(2)]
        for request in queued:
            await request.respond(request.request)
        results = [await t for t in sends]
        assert sorted(r for r in results if isinstance(r, int)) == sorted(r.request for r in queued)
        omitted = [f for f in failures(b) if f.failure is InboundFailure.RESPONSE_OMISSION]
        assert len(omitted) == 2, "every dropped request is reported"


async def test_requests_channel_buffer_latest() -> None:
    async with networks(ALLOW, channel(1, ChannelSinkConfig.BUFFER_LATEST)) as (a, b):
        await link(a, b)
        await a.connect_peer(b.peer_id)
        sends = []
        for i, queued, dropped in ((1, 1, 0), (2, 2, 0), (3, 2, 1)):
            sends.append(asyncio.ensure_future(outcome(a.send_request(b.peer_id, i))))

            def arrived(queued: int = queued, dropped: int = dropped) -> bool:
                return len(b.requests()) == queued and b.requests().dropped == dropped

            await wait_for(arrived, CAP)
        # The head (#1) stays, the newest (#3) evicted the oldest buffered (#2).
        assert isinstance(await sends[1], ResponseOmittedError)
        for _ in range(2):
            request = await next_request(b)
            await request.respond(request.request * 10)
        assert [await sends[0], await sends[2]] == [10, 30]
        omitted = [f for f in failures(b) if f.failure is InboundFailure.RESPONSE_OMISSION]
        assert len(omitted) == 1


async def test_requests_channel_block() -> None:
    async with networks(ALLOW, channel(0, ChannelSinkConfig.BLOCK)) as (a, b):
        await link(a, b)
        await a.connect_peer(b.peer_id)
        sends = [asyncio.ensure_future(outcome(a.send_request(b.peer_id, i))) for i in range(3)]
        await wait_for(lambda: len(b.requests()) == 1, CAP)
        # The others wait for room (nothing dropped) and the network is not stalled.
        assert b.requests().dropped == 0
        assert await a.connect_peer(b.peer_id)
        got = []
        for _ in range(3):
            request = await next_request(b)
            got.append(request.request)
            await request.respond(request.request)
        assert sorted(got) == [0, 1, 2]
        assert [await t for t in sends] == [0, 1, 2]
        assert failures(b) == []


# -- firewall plumbing ---------------------------------------------------------------------


async def test_firewall_view_is_what_rules_and_approvals_see() -> None:
    def kind(request: dict[str, Any]) -> str:
        return str(request["kind"])

    only_reads: Rule[str] = Rule.restricted(lambda view: view == "read")
    async with networks(ALLOW, {"firewall": FirewallRules(only_reads), "firewall_view": kind}) as (
        a,
        b,
    ):
        await link(a, b)
        async with serving(b, lambda rq: "done"):
            assert await a.send_request(b.peer_id, {"kind": "read", "key": "k"}) == "done"
            error = await outcome(a.send_request(b.peer_id, {"kind": "write", "key": "k"}))
            assert isinstance(error, RequestConnectionClosedError)
            assert (await next_event(b, InboundRequestFailed, skip=CONNECTION_NOISE)).failure is (
                InboundFailure.NOT_PERMITTED
            )
            b.set_peer_rule(a.peer_id, Rule.ask())
            inbox = FirewallInbox(b)
            try:
                pending = asyncio.ensure_future(
                    a.send_request(b.peer_id, {"kind": "write", "secret": "s"})
                )
                approval = await inbox.next()
                assert isinstance(approval, ApprovalRequest)
                assert approval.request == "write", "the approval carries the view only"
                approval.approve()
                assert await asyncio.wait_for(pending, CAP) == "done"
            finally:
                await inbox.aclose()


async def test_without_a_firewall_view_rules_see_the_request_and_a_failing_view_refuses() -> None:
    """No ``firewall_view``: a restriction is given the decoded request itself.  A view
    that raises refuses the request (``INVALID_REQUEST``), even where every request is
    allowed: the view is asked before any rule."""
    only_ok: Rule[str] = Rule.restricted(lambda request: request == "ok")
    async with networks(ALLOW, {"firewall": FirewallRules(only_ok)}) as (a, b):
        await link(a, b)
        async with serving(b, lambda rq: "done"):
            assert await a.send_request(b.peer_id, "ok") == "done"
            error = await outcome(a.send_request(b.peer_id, "no"))
            assert isinstance(error, RequestConnectionClosedError)

    def broken_view(request: object) -> object:
        raise RuntimeError("no view of this")

    failing = {"firewall": FirewallRules.allow_all(), "firewall_view": broken_view}
    async with networks(ALLOW, failing) as (a, b):
        await link(a, b)
        async with serving(b, lambda rq: "done"):
            error = await outcome(a.send_request(b.peer_id, "ok"))
            assert isinstance(error, RequestRefusedError), error
            assert (await next_event(b, InboundRequestFailed, skip=CONNECTION_NOISE)).failure is (
                InboundFailure.INVALID_REQUEST
            )


async def test_firewall_configuration_methods() -> None:
    async with networks({"firewall": FirewallRules.empty()}) as (b,):
        peer = KeyPair.generate().peer_id
        config = b.get_firewall_config()
        assert config.default is None and config.peer_rules == {}
        b.set_firewall_default(Rule.ask())
        b.set_peer_rule(peer, Rule.reject_all())
        config = b.get_firewall_config()
        assert config.default is Rule.ask()
        assert config.get_rule(peer) is Rule.reject_all()
        assert config.get_effective_rule(peer) is Rule.reject_all()
        config.set_default(None)  # a copy: changing it changes nothing
        assert (b.get_firewall_config()).default is Rule.ask()
        b.remove_peer_rule(peer)
        assert (b.get_firewall_config()).get_effective_rule(peer) is Rule.ask()
        b.remove_firewall_default()
        assert (b.get_firewall_config()) == FirewallRules.empty()


async def test_rule_changes_resolve_parked_requests() -> None:
    async with networks(ALLOW, {"firewall": FirewallRules.empty()}) as (a, b):
        await link(a, b)
        inbox = FirewallInbox(b)
        try:
            async with serving(b, lambda rq: "ok"):
                # Parked for a rule; the user sets a peer rule: the request is delivered,
                # and the now-pointless query is withdrawn (compat: a user rule wins over a
                # pending query).
                pending = asyncio.ensure_future(a.send_request(b.peer_id, 1))
                query = await inbox.next()
                assert isinstance(query, PeerRuleQuery)
                await wait_for(lambda: b._firewall.engine.parked_count == 1, CAP)
                b.set_peer_rule(a.peer_id, Rule.allow_all())
                assert await asyncio.wait_for(pending, CAP) == "ok"
                assert not query.answer(Rule.reject_all())
                assert (b.get_firewall_config()).get_rule(a.peer_id) is Rule.allow_all()

                # Parked again (rule removed: a new query); a default set meanwhile
                # decides the parked request at once.
                b.remove_peer_rule(a.peer_id)
                pending = asyncio.ensure_future(outcome(a.send_request(b.peer_id, 2)))
                query = await inbox.next()
                assert isinstance(query, PeerRuleQuery)
                await wait_for(lambda: b._firewall.engine.parked_count == 1, CAP)
                b.set_firewall_default(Rule.reject_all())
                assert isinstance(await pending, RequestConnectionClosedError)
                failed = await next_event(b, InboundRequestFailed, skip=CONNECTION_NOISE)
                assert failed.failure is InboundFailure.NOT_PERMITTED
                # The query is still open; its answer becomes A's rule.
                assert query.answer(Rule.ask())
                pending = asyncio.ensure_future(outcome(a.send_request(b.peer_id, 3)))
                approval = await inbox.next()
                assert isinstance(approval, ApprovalRequest) and approval.request == 3
                assert approval.reject()
                assert isinstance(await pending, RequestConnectionClosedError)
                failed = await next_event(b, InboundRequestFailed, skip=CONNECTION_NOISE)
                assert failed.failure is InboundFailure.NOT_PERMITTED
                # Removing the default does not touch A's own rule.
                b.remove_firewall_default()
                pending = asyncio.ensure_future(a.send_request(b.peer_id, 4))
                approval = await inbox.next()
                assert isinstance(approval, ApprovalRequest)
                assert approval.approve()
                assert await asyncio.wait_for(pending, CAP) == "ok"
        finally:
            await inbox.aclose()


# -- address book ------------------------------------------------------------------------


async def test_address_book_methods_and_ordering() -> None:
    async with networks(ALLOW, ALLOW) as (a, b):
        good = await listen(b)
        bad1, bad2 = closed_port_addr(), Multiaddr("/ip4/127.0.0.1/tcp/1")
        for addr in (bad1, good, bad2):
            a.add_address(b.peer_id, addr)
        a.add_address(b.peer_id, str(good))  # no duplicate
        assert a.get_addrs(b.peer_id) == [bad1, good, bad2]
        await a.connect_peer(b.peer_id)
        # The address that worked goes to the front, the one that failed to the back.
        assert a.get_addrs(b.peer_id) == [good, bad2, bad1]
        a.remove_address(b.peer_id, bad2)
        assert a.get_addrs(b.peer_id) == [good, bad1]
        info = a.export_address_info()
        assert list(info.peers[b.peer_id].known) == [good, bad1]
        data = json.loads(info.to_json())
        assert data["peers"][str(b.peer_id)] == {
            "known": [str(good), str(bad1)],
            "use_relay_fallback": True,
        }
        assert data["relays"] == []
        info.remove_address(b.peer_id, good)  # a copy
        assert a.get_addrs(b.peer_id) == [good, bad1]


async def test_listen_addresses_learned_from_identify() -> None:
    """compat: listen addresses from identify.  B records A's *listen* address, not the
    ephemeral port of A's inbound connection.  Hole punching is off: with it, TCP dials
    reuse the listen port, and the inbound remote address would equal the listen address."""
    no_reuse = {**ALLOW, "dcutr": None}
    async with networks(no_reuse, no_reuse) as (a, b):
        a_listen = await listen(a)
        await link(a, b)
        await a.connect_peer(b.peer_id)
        inbound = await next_event(b, ConnectionEstablished, skip=(NewListenAddr,))
        await wait_for(lambda: a_listen in b.get_addrs(a.peer_id), CAP)
        ephemeral = inbound.endpoint.remote_addr
        assert ephemeral is not None and ephemeral.without_peer_id() != a_listen
        assert ephemeral not in b.get_addrs(a.peer_id)
        assert ephemeral.without_peer_id() not in b.get_addrs(a.peer_id)
        # B can now reach A by itself.
        await a.ban_peer(b.peer_id)
        a.unban_peer(b.peer_id)
        await wait_for(lambda: not b.is_connected(a.peer_id), CAP)
        async with serving(a, lambda rq: "from a"):
            assert await b.send_request(a.peer_id, "hi") == "from a"


async def test_address_book_file_survives_restart(tmp_path: Any) -> None:
    path = tmp_path / "book" / "address-book.json"
    key = KeyPair.generate()
    async with networks(ALLOW) as (b,):
        addr = await listen(b)
        other = KeyPair.generate().peer_id
        async with new_network(key, address_book_path=path, **ALLOW) as a:
            a.add_address(b.peer_id, addr)
            a.add_address(other, "/ip4/10.1.2.3/tcp/4001")
        assert path.exists()
        async with new_network(key, address_book_path=path, **ALLOW) as a2:
            assert a2.get_addrs(b.peer_id) == [addr]
            assert a2.get_addrs(other) == [Multiaddr("/ip4/10.1.2.3/tcp/4001")]
            async with serving(b, lambda rq: "remembered"):
                assert await a2.send_request(b.peer_id, "hi") == "remembered"


async def test_ban_closes_and_refuses() -> None:
    async with networks(ALLOW, ALLOW) as (a, b):
        await link(a, b)
        async with serving(b, lambda rq: "ok"):
            assert await a.send_request(b.peer_id, "x") == "ok"
            await b.ban_peer(a.peer_id)
            await wait_for(lambda: not a.is_connected(b.peer_id), CAP)
            error = await outcome(a.send_request(b.peer_id, "x"))
            assert isinstance(error, RequestConnectionClosedError | RequestDialError), error
            b.unban_peer(a.peer_id)
            assert await a.send_request(b.peer_id, "x") == "ok"


async def test_background_helper_is_cancelled() -> None:
    async with background(asyncio.sleep(100)) as task:
        pass
    assert task.cancelled()


async def test_eof_delimited_omission_is_not_an_empty_response() -> None:
    """With EOF framing a clean close would read as an empty body: with a codec that
    accepts empty bytes the requester must still see the failure, not ``b""``."""
    raw_eof = {**ALLOW, "framing": Framing.EOF_DELIMITED, "codec": RawCodec()}
    async with networks(raw_eof, raw_eof) as (a, b):
        await link(a, b)
        async with serving(b, lambda rq: b""):
            assert await a.send_request(b.peer_id, b"q") == b""  # a real empty response
        pending = asyncio.ensure_future(outcome(a.send_request(b.peer_id, b"q")))
        (await next_request(b)).drop()
        error = await pending
        assert isinstance(error, RequestConnectionClosedError), error
        b.set_peer_rule(a.peer_id, Rule.restricted(lambda rq: rq == b"ok"))
        error = await outcome(a.send_request(b.peer_id, b"no"))
        assert isinstance(error, RequestConnectionClosedError), error


async def test_identify_push_follows_firewall_support_changes() -> None:
    """Reject-all hides the request protocol from that peer; identify push says so."""
    async with networks(ALLOW, ALLOW) as (a, b):
        await listen(a)
        await link(b, a)
        await b.connect_peer(a.peer_id)
        protocol = a.config.protocols[0]

        def b_sees() -> bool:
            info = b._node.peer_store.get(a.peer_id)
            return info is not None and protocol in info.protocols

        await wait_for(b_sees, CAP)
        a.set_peer_rule(b.peer_id, Rule.reject_all())
        await wait_for(lambda: not b_sees(), CAP)
        a.set_peer_rule(b.peer_id, Rule.allow_all())
        await wait_for(b_sees, CAP)
