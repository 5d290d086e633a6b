"""Issue 11, items 1, 2 and 6 on loopback TCP: ``Network.serve``, ``send_request`` to any
target with a per-call timeout, ``Network.ping``, and a firewall that fails fast when
nobody can answer it.  Hostile cases: handlers that raise, hang past the deadline or are
abandoned by their requester, a peer flooding past ``max_concurrency``, bad targets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from aiop2p.errors import (
    InvalidArgumentError,
    InvalidStateError,
    P2PError,
    RequestTimeoutError,
    ResponseOmittedError,
)
from aiop2p.events import InboundFailure, InboundRequestFailed
from aiop2p.multiaddr import Multiaddr
from aiop2p.network import InboundRequest
from aiop2p.network.firewall import FirewallRules, Rule
from aiop2p.network.gate import PeerRuleQuery

from ..helpers import wait_for
from .conftest import (
    CAP,
    CONNECTION_NOISE,
    background,
    link,
    listen,
    networks,
    next_event,
    outcome,
)

ALLOW: dict[str, Any] = {
    "firewall": FirewallRules.allow_all(),
    "dcutr": None,
    "relay_client": False,
}
CLIENT: dict[str, Any] = {"dcutr": None, "relay_client": False}

Handler = Callable[[InboundRequest[Any, Any]], Awaitable[Any]]


async def echo(request: InboundRequest[Any, Any]) -> Any:
    return {"echo": request.request, "from": str(request.peer), "id": request.request_id}


# -- serve --------------------------------------------------------------------------------


async def test_serve_answers_with_the_handlers_value() -> None:
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        async with background(server.serve(echo)):
            for i in range(3):
                reply = await client.send_request(server.peer_id, i)
                assert reply["echo"] == i and reply["from"] == str(client.peer_id)
            assert len(server.requests()) == 0  # nothing went to the channel


async def test_serve_returns_when_the_network_closes() -> None:
    async with networks(ALLOW) as (server,):
        serving = asyncio.ensure_future(server.serve(echo))
        await wait_for(lambda: server._exchange._server is not None, CAP)
        with pytest.raises(InvalidStateError):
            await server.serve(echo)  # one serve at a time
        with pytest.raises(InvalidArgumentError):
            await server.serve(echo, max_concurrency=0)
    async with asyncio.timeout(CAP):
        await serving  # returned, not cancelled


async def test_handler_exception_is_logged_reported_and_serving_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(request: InboundRequest[Any, Any]) -> Any:
        if request.request == "boom":
            raise RuntimeError("handler bug")
        return request.request

    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        with caplog.at_level(logging.ERROR, logger="aiop2p"):
            async with background(server.serve(handler)):
                error = await outcome(client.send_request(server.peer_id, "boom"))
                assert isinstance(error, ResponseOmittedError), error
                event = await next_event(server, InboundRequestFailed, skip=CONNECTION_NOISE)
                assert event.failure is InboundFailure.HANDLER_ERROR
                assert await client.send_request(server.peer_id, "fine") == "fine"
        logged = [r for r in caplog.records if r.exc_info and "handler" in r.getMessage()]
        assert len(logged) == 1
        assert logged[0].name.startswith("aiop2p")
        assert "handler bug" in str(logged[0].exc_info[1])  # type: ignore[index]


async def test_unencodable_response_is_a_handler_error() -> None:
    async def handler(request: InboundRequest[Any, Any]) -> Any:
        return object()  # JSON cannot encode it

    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        async with background(server.serve(handler)):
            assert isinstance(await outcome(client.send_request(server.peer_id, 1)), P2PError)
            event = await next_event(server, InboundRequestFailed, skip=CONNECTION_NOISE)
            assert event.failure is InboundFailure.HANDLER_ERROR


def hanging() -> tuple[Handler, asyncio.Event, asyncio.Event]:
    """A handler that never answers; events: it started, it was cancelled."""
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(request: InboundRequest[Any, Any]) -> Any:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    return handler, started, cancelled


async def test_handler_past_the_deadline_is_cancelled() -> None:
    handler, _, cancelled = hanging()
    async with networks({**ALLOW, "request_timeout": 0.5}, {**CLIENT, "request_timeout": 1.0}) as (
        server,
        client,
    ):
        await link(client, server)
        async with background(server.serve(handler)):
            error = await outcome(client.send_request(server.peer_id, "slow"))
            assert isinstance(error, RequestTimeoutError), error
            event = await next_event(server, InboundRequestFailed, skip=CONNECTION_NOISE)
            assert event.failure is InboundFailure.RESPONSE_TIMEOUT
            async with asyncio.timeout(CAP):
                await cancelled.wait()


async def test_requester_cancel_cancels_the_handler() -> None:
    handler, started, cancelled = hanging()
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        async with background(server.serve(handler)):
            sending = asyncio.ensure_future(client.send_request(server.peer_id, "x"))
            async with asyncio.timeout(CAP):
                await started.wait()
            sending.cancel()
            async with asyncio.timeout(CAP):
                await cancelled.wait()
            event = await next_event(server, InboundRequestFailed, skip=CONNECTION_NOISE)
            assert event.failure is InboundFailure.CANCELLED
            assert server.is_connected(client.peer_id)


async def test_cancelling_serve_cancels_running_handlers() -> None:
    handler, started, cancelled = hanging()
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        serving = asyncio.ensure_future(server.serve(handler))
        sending = asyncio.ensure_future(outcome(client.send_request(server.peer_id, "x")))
        async with asyncio.timeout(CAP):
            await started.wait()
        serving.cancel()
        async with asyncio.timeout(CAP):
            await cancelled.wait()
        assert isinstance(await sending, ResponseOmittedError)
        with pytest.raises(asyncio.CancelledError):
            await serving
        # Serving again works.
        async with background(server.serve(echo)):
            assert (await client.send_request(server.peer_id, 2))["echo"] == 2


async def test_flood_beyond_max_concurrency_waits_its_turn() -> None:
    gate = asyncio.Event()
    running = 0
    most = 0

    async def handler(request: InboundRequest[Any, Any]) -> Any:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await gate.wait()
            return request.request
        finally:
            running -= 1

    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        async with background(server.serve(handler, max_concurrency=2)):
            sends = [
                asyncio.ensure_future(outcome(client.send_request(server.peer_id, i)))
                for i in range(12)
            ]
            await wait_for(lambda: server._exchange._inflight_total == 12, CAP)
            assert running == 2
            gate.set()
            assert [await s for s in sends] == list(range(12))
            assert most == 2


async def test_prompt_handler_answers_with_the_ack_in_one_write() -> None:
    async with networks(ALLOW, CLIENT) as (server, client):
        await link(client, server)
        async with background(server.serve(echo)):
            await client.send_request(server.peer_id, "warm-up")
            conn = server._node.connections_to(client.peer_id)[0]
            client_conn = client._node.connections_to(server.peer_id)[0]
            assert server._node.identify is not None and client._node.identify is not None
            await server._node.identify.identify(conn)
            await client._node.identify.identify(client_conn)
            await wait_for(lambda: not conn.streams and not client_conn.streams, CAP)
            transport = conn._transport
            assert transport is not None
            writes: list[int] = []
            real_write = transport.write

            def counting_write(data: Any) -> None:
                writes.append(len(data))
                real_write(data)

            transport.write = counting_write  # type: ignore[method-assign]
            try:
                for i in range(3):
                    writes.clear()
                    assert (await client.send_request(server.peer_id, i))["echo"] == i
                    assert len(writes) == 1, writes
            finally:
                transport.write = real_write  # type: ignore[method-assign]


# -- send_request targets and timeout; ping -------------------------------------------------


async def test_send_to_a_multiaddr_learns_the_address() -> None:
    async with networks(ALLOW, CLIENT) as (server, client), background(server.serve(echo)):
        addr = (await listen(server)).with_peer_id(server.peer_id)
        assert (await client.send_request(str(addr), "text"))["echo"] == "text"
        assert addr.without_peer_id() in client.get_addrs(server.peer_id)
        assert (await client.send_request(addr, "object"))["echo"] == "object"
        assert (await client.send_request(str(server.peer_id), "id"))["echo"] == "id"
        rtts = await client.ping(str(addr))
        assert len(rtts) == 1 and rtts[0] >= 0
        assert len(await client.ping(server.peer_id, 2)) == 2


@pytest.mark.parametrize(
    "target",
    [
        "not-a-peer-id",
        "",
        "/ip4/127.0.0.1/tcp/1",  # no /p2p/<id>
        "/ip4/127.0.0.1/tcp/1/p2p/nonsense",
        "/bogus/1",
        "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA/p2p-circuit",
        Multiaddr("/ip4/127.0.0.1/tcp/1"),
        42,
    ],
)
async def test_bad_targets_are_clear_errors(target: Any) -> None:
    async with networks(CLIENT) as (client,):
        with pytest.raises(InvalidArgumentError):
            await client.send_request(target, "x")
        with pytest.raises(InvalidArgumentError):
            await client.ping(target)


async def test_per_call_timeout_replaces_request_timeout() -> None:
    handler, _, _ = hanging()
    async with networks(ALLOW, {**CLIENT, "request_timeout": 60.0}) as (server, client):
        await link(client, server)
        async with background(server.serve(handler)):
            # Capped at CAP (5 s), far below the 60 s request_timeout.
            error = await outcome(client.send_request(server.peer_id, "x", timeout=0.3))
            assert isinstance(error, RequestTimeoutError), error
            bad_timeouts: list[Any] = [0, -1, float("inf"), float("nan"), "1", True]
            for bad in bad_timeouts:
                with pytest.raises(InvalidArgumentError):
                    await client.send_request(server.peer_id, "x", timeout=bad)


# -- a firewall nobody answers fails fast ---------------------------------------------------


async def test_no_rule_and_nobody_answering_rejects_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The default firewall_timeout is 10 s; each request here is capped at CAP (5 s)."""
    async with networks({"dcutr": None, "relay_client": False}, CLIENT) as (server, client):
        await link(client, server)
        with caplog.at_level(logging.WARNING, logger="aiop2p"):
            async with background(server.serve(echo)):
                for _ in range(2):
                    error = await outcome(client.send_request(server.peer_id, "x"))
                    assert isinstance(error, ResponseOmittedError), error
                    event = await next_event(server, InboundRequestFailed, skip=CONNECTION_NOISE)
                    assert event.failure is InboundFailure.NOT_PERMITTED
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert "firewall=" in warnings[0].getMessage()


async def test_someone_iterating_firewall_requests_is_asked() -> None:
    async with networks({"dcutr": None, "relay_client": False}, CLIENT) as (server, client):
        await link(client, server)

        async def answer() -> None:
            async for question in server.firewall_requests():
                assert isinstance(question, PeerRuleQuery)
                question.answer(Rule.allow_all())

        async with background(answer()), background(server.serve(echo)):
            await wait_for(lambda: server._firewall.listeners == 1, CAP)
            assert (await client.send_request(server.peer_id, "asked"))["echo"] == "asked"
