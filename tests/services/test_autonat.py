"""AutoNAT v2 between aiop2p nodes on loopback: a reachable address is confirmed, a
closed port is not, the amplification protection, rate limits, hostile clients and
servers, and the DHT following the verdict."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from aiop2p._aio.stream import Stream
from aiop2p.config import AutonatConfig, KadConfig, NodeConfig
from aiop2p.errors import AutonatError, P2PError
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node
from aiop2p.protocols.autonat_v2 import (
    DIAL_BACK_PROTOCOL_ID,
    DIAL_REQUEST_PROTOCOL_ID,
    DialDataRequest,
    DialDataResponse,
    DialRequest,
    DialResponse,
    DialStatus,
    ResponseStatus,
    decode_message,
    encode_message,
)
from aiop2p.services.autonat import AutonatService, ReachabilityChanged

from ..helpers import wait_for

LOOPBACK = "/ip4/127.0.0.1/tcp/0"


def config(**kw: object) -> AutonatConfig:
    base: dict[str, object] = {
        "allow_loopback_addrs": True,
        "confidence": 1,
        "request_timeout": 10.0,
    }
    base.update(kw)
    return AutonatConfig(**base)  # type: ignore[arg-type]


@asynccontextmanager
async def pair(
    server: AutonatConfig | None = None,
    client_listen: str = LOOPBACK,
) -> AsyncIterator[tuple[Node, Node]]:
    """A started server node and a client node connected to it.  The client's service
    is not started (``Node.autonat`` would check on its own): tests ask when they mean to."""
    async with AsyncExitStack() as stack:
        s = await stack.enter_async_context(
            Node(config=NodeConfig(autonat=server or config(client=False)))
        )
        await s.listen(LOOPBACK)
        c = await stack.enter_async_context(Node())
        c.autonat = AutonatService(c, config(server=False))
        stack.push_async_callback(c.autonat.close)
        await c.listen(client_listen)
        await c.connect(s.peer_id, s.listen_addrs)
        await wait_for(lambda: c.peer_id in s.connected_peers, cap=5)
        yield s, c


def autonat(node: Node) -> AutonatService:
    assert node.autonat is not None
    return node.autonat


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


async def test_a_reachable_address_is_confirmed_by_event() -> None:
    async with pair() as (_s, c):
        seen: list[ReachabilityChanged] = []
        autonat(c).events.subscribe(seen.append)
        await autonat(c).check()
        addr = c.listen_addrs[0]
        assert autonat(c).verdicts() == {addr: True}
        assert seen == [ReachabilityChanged(addr, True, 1)]
        assert autonat(c).reachable is True


async def test_the_client_checks_on_its_own_when_a_server_connects() -> None:
    async with AsyncExitStack() as stack:
        s = await stack.enter_async_context(Node(config=NodeConfig(autonat=config())))
        c = await stack.enter_async_context(Node(config=NodeConfig(autonat=config())))
        await s.listen(LOOPBACK)
        await c.listen(LOOPBACK)
        seen: list[ReachabilityChanged] = []
        autonat(c).events.subscribe(seen.append)
        await c.connect(s.peer_id, s.listen_addrs)
        await wait_for(lambda: autonat(c).reachable is True and autonat(s).reachable is True, 10)
        assert seen == [ReachabilityChanged(c.listen_addrs[0], True, 1)]


async def test_a_closed_port_is_reported_unreachable() -> None:
    async with pair() as (s, c):
        closed = Multiaddr(f"/ip4/127.0.0.1/tcp/{closed_port()}")
        assert await autonat(c).probe(s.peer_id, closed) is False
        verdict = autonat(c).tally.record(closed, s.peer_id, False)
        assert verdict is False


async def test_another_ip_costs_dial_data() -> None:
    # The client is seen from 127.0.0.1 and asks about 127.0.0.2: the server wants
    # dial data first, the client pays it, and the dial-back confirms the address.
    async with pair(client_listen="/ip4/127.0.0.2/tcp/0") as (s, c):
        conn = c.connections_to(s.peer_id)[0]
        assert conn.local_addr is not None and "127.0.0.1" in str(conn.local_addr)
        assert await autonat(c).probe(s.peer_id, c.listen_addrs[0]) is True


async def test_a_client_that_does_not_pay_gets_no_dial() -> None:
    async with pair(client_listen="/ip4/127.0.0.2/tcp/0") as (s, c):
        dialled: list[Stream] = []

        async def record(stream: Stream) -> None:
            dialled.append(stream)
            stream.reset()

        c.set_stream_handler(DIAL_BACK_PROTOCOL_ID, record)
        stream = await c.new_stream(s.peer_id, DIAL_REQUEST_PROTOCOL_ID)
        await stream.write_message(encode_message(DialRequest.of([c.listen_addrs[0]], 5)))
        ask = decode_message(await stream.read_message(8192))
        assert ask == DialDataRequest(0, 30_000)
        await stream.write_message(encode_message(DialResponse(ResponseStatus.OK)))
        with pytest.raises(P2PError):
            await stream.read_message(8192)  # reset: a DialResponse is not dial data
        assert dialled == []


async def test_the_client_refuses_to_pay_too_much() -> None:
    async with pair(
        server=config(client=False, dial_data_bytes=200_000),
        client_listen="/ip4/127.0.0.2/tcp/0",
    ) as (s, c):
        with pytest.raises(AutonatError, match="200000 bytes of dial data"):
            await autonat(c).probe(s.peer_id, c.listen_addrs[0])


async def test_private_and_relayed_addresses_are_refused() -> None:
    async with pair(server=config(client=False, allow_loopback_addrs=False)) as (s, c):
        for addr in (
            c.listen_addrs[0],  # loopback, not allowed by this server
            Multiaddr("/ip4/10.1.2.3/tcp/4001"),
            Multiaddr(f"/ip4/1.2.3.4/tcp/1/p2p/{s.peer_id}/p2p-circuit"),
            Multiaddr("/dns4/example.com/tcp/4001"),
        ):
            stream = await c.new_stream(s.peer_id, DIAL_REQUEST_PROTOCOL_ID)
            await stream.write_message(encode_message(DialRequest.of([addr], 1)))
            answer = decode_message(await stream.read_message(8192))
            assert answer == DialResponse(ResponseStatus.E_DIAL_REFUSED), addr


async def test_rate_limit_per_peer() -> None:
    async with pair(server=config(client=False, max_requests_per_peer=2)) as (s, c):
        addr = c.listen_addrs[0]
        assert await autonat(c).probe(s.peer_id, addr) is True
        assert await autonat(c).probe(s.peer_id, addr) is True
        stream = await c.new_stream(s.peer_id, DIAL_REQUEST_PROTOCOL_ID)
        await stream.write_message(encode_message(DialRequest.of([addr], 1)))
        answer = decode_message(await stream.read_message(8192))
        assert answer == DialResponse(ResponseStatus.E_REQUEST_REJECTED)


async def test_hostile_client_messages_reset_the_stream() -> None:
    async with pair() as (s, c):
        for payload in (b"\xff\xff", encode_message(DialResponse(ResponseStatus.OK))):
            stream = await c.new_stream(s.peer_id, DIAL_REQUEST_PROTOCOL_ID)
            await stream.write_message(payload)
            with pytest.raises(P2PError):
                await stream.read_message(8192)
        # The server still serves well-behaved requests.
        assert await autonat(c).probe(s.peer_id, c.listen_addrs[0]) is True


async def test_a_server_that_claims_a_dial_it_did_not_make_is_caught() -> None:
    async with pair() as (s, c):

        async def liar(stream: Stream) -> None:
            await stream.read_message(8192)
            await stream.write_message(
                encode_message(DialResponse(ResponseStatus.OK, 0, DialStatus.OK))
            )
            await stream.close()

        s.set_stream_handler(DIAL_REQUEST_PROTOCOL_ID, liar)
        with pytest.raises(AutonatError, match="never received"):
            await autonat(c).probe(s.peer_id, c.listen_addrs[0])
        await autonat(c).check()
        assert autonat(c).reachable is None  # the lie cast no vote


async def test_a_server_sending_garbage_or_too_much_is_an_error() -> None:
    async with pair() as (s, c):
        answers = iter([b"\x12\x02\x08", encode_message(DialDataRequest(3, 10))])

        async def garbage(stream: Stream) -> None:
            await stream.read_message(8192)
            await stream.write_message(next(answers))
            await stream.close()

        s.set_stream_handler(DIAL_REQUEST_PROTOCOL_ID, garbage)
        for _ in range(2):
            with pytest.raises(AutonatError):
                await autonat(c).probe(s.peer_id, c.listen_addrs[0])


async def test_dht_auto_mode_becomes_server_once_reachable() -> None:
    async with AsyncExitStack() as stack:
        s = await stack.enter_async_context(Node(config=NodeConfig(autonat=config(client=False))))
        await s.listen(LOOPBACK)
        c = await stack.enter_async_context(
            Node(
                config=NodeConfig(
                    autonat=config(server=False),
                    kad=KadConfig(mode="auto", query_timeout=2.0, lookup_timeout=4.0),
                )
            )
        )
        await c.listen(LOOPBACK)
        assert c.kad is not None and c.kad.mode == "client"
        await c.connect(s.peer_id, s.listen_addrs)
        await wait_for(lambda: c.kad is not None and c.kad.mode == "server", cap=10)
        assert "/ipfs/kad/1.0.0" in c.protocols


async def test_dial_data_in_crumbs_is_bounded() -> None:
    server = config(client=False, dial_data_bytes=1000, max_dial_data_messages=5)
    async with pair(server=server, client_listen="/ip4/127.0.0.2/tcp/0") as (s, c):
        stream = await c.new_stream(s.peer_id, DIAL_REQUEST_PROTOCOL_ID)
        await stream.write_message(encode_message(DialRequest.of([c.listen_addrs[0]], 5)))
        assert decode_message(await stream.read_message(8192)) == DialDataRequest(0, 1000)
        for _ in range(5):
            await stream.write_message(encode_message(DialDataResponse(b"x")))
        with pytest.raises(P2PError):
            await stream.read_message(8192)  # reset after 5 messages brought 5 bytes
