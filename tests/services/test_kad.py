"""The Kademlia service between aiop2p nodes on loopback: bootstrap, lookups over several
hops, client mode, and hostile DHT peers on both sides of a query."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from aiop2p._aio.stream import Stream
from aiop2p._wire.protobuf import encode_bytes_field, encode_varint_field
from aiop2p.config import KadConfig, NodeConfig
from aiop2p.errors import (
    InvalidArgumentError,
    NoAddressesError,
    P2PError,
    PeerNotFoundError,
    ProtocolNotSupportedError,
    StreamClosedError,
)
from aiop2p.identity import KeyPair, PeerId
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node
from aiop2p.protocols.kad import KAD_PROTOCOL_ID, KadMessage, KadPeer, MessageType
from aiop2p.services.kad import KadService

from ..helpers import wait_for

LOOPBACK = "/ip4/127.0.0.1/tcp/0"


def kad_config(**kw: object) -> KadConfig:
    return KadConfig(mode="server", query_timeout=5.0, lookup_timeout=15.0, **kw)  # type: ignore[arg-type]


@asynccontextmanager
async def kad_nodes(count: int, **kw: object) -> AsyncIterator[list[Node]]:
    async with AsyncExitStack() as stack:
        nodes = []
        for _ in range(count):
            node = await stack.enter_async_context(Node(config=NodeConfig(kad=kad_config(**kw))))
            await node.listen(LOOPBACK)
            nodes.append(node)
        yield nodes


def kad(node: Node) -> KadService:
    assert node.kad is not None
    return node.kad


def bogus_peer(i: int) -> PeerId:
    return PeerId(b"\x12\x20" + hashlib.sha256(b"bogus %d" % i).digest())


async def test_bootstrap_joins_and_peers_find_each_other() -> None:
    async with kad_nodes(1) as (seed,):
        addr = seed.listen_addrs[0].with_peer_id(seed.peer_id)
        async with kad_nodes(4, bootstrap=(addr,)) as joiners:
            await wait_for(lambda: len(kad(seed).table) == 4, cap=20)
            for node in joiners:
                service = kad(node)
                await wait_for(lambda: seed.peer_id in service.table, cap=20)  # noqa: B023
            first, last = joiners[0], joiners[-1]
            addrs = await kad(first).find_peer(last.peer_id)
            assert set(addrs) == set(last.listen_addrs)
            assert await first.ping(last.peer_id)  # the dialer uses what the DHT found
            closest = await kad(first).closest_peers(last.peer_id.to_bytes())
            assert last.peer_id in {p.peer_id for p in closest}


@pytest.mark.parametrize("hops", [2, 3])
async def test_find_peer_through_a_chain_of_servers(hops: int) -> None:
    # A knows only the first server of the chain, each server only the next one, and
    # the last server the target: the lookup must walk the whole chain.
    async with kad_nodes(hops + 2) as nodes:
        asker, *chain, target = nodes
        for node, nxt in zip([asker, *chain], [*chain, target], strict=True):
            kad(node).table.add(nxt.peer_id, nxt.listen_addrs)
        assert not asker.is_connected(target.peer_id)
        addrs = await kad(asker).find_peer(target.peer_id)
        assert addrs == target.listen_addrs
        for server in chain:
            assert asker.is_connected(server.peer_id)  # each was queried in turn
        assert await asker.ping(target.peer_id)


async def test_unknown_peer_is_not_found() -> None:
    async with kad_nodes(3) as (a, b, c):
        kad(a).table.add(b.peer_id, b.listen_addrs)
        kad(b).table.add(c.peer_id, c.listen_addrs)
        with pytest.raises(PeerNotFoundError) as err:
            await kad(a).find_peer(bogus_peer(0))
        assert isinstance(err.value, NoAddressesError)
    async with kad_nodes(1) as (lonely,):
        with pytest.raises(PeerNotFoundError):
            await kad(lonely).find_peer(bogus_peer(1))  # an empty table: no query at all


async def test_client_mode_neither_serves_nor_enters_tables() -> None:
    async with kad_nodes(1) as (server,), Node(config=NodeConfig(kad=KadConfig())) as client:
        await client.listen(LOOPBACK)
        conn = await client.dial(server.listen_addrs[0].with_peer_id(server.peer_id))
        await wait_for(lambda: server.peer_id in kad(client).table, cap=10)
        info = await server.identify_peer(server.connections_to(client.peer_id)[0])
        assert KAD_PROTOCOL_ID not in info.protocols
        assert client.peer_id not in kad(server).table
        stream = await server.new_stream(client.peer_id, KAD_PROTOCOL_ID)
        with pytest.raises(ProtocolNotSupportedError):
            await stream.read(1)
        # A server still tells who asks for the client by id what it knows of it.
        other = await kad(client).closest_peers(client.peer_id.to_bytes())
        assert [p.peer_id for p in other] == [server.peer_id]
        assert conn.is_established


# -- hostile peers -----------------------------------------------------------------------


def hostile_server(answer: Callable[[KadMessage], bytes]) -> Callable[[Stream], Awaitable[None]]:
    async def serve(stream: Stream) -> None:
        request = KadMessage.decode(await stream.read_message(1 << 20))
        await stream.write_message(answer(request))

    return serve


def bogus_peers(count: int, n_addrs: int = 1) -> tuple[KadPeer, ...]:
    closed = Multiaddr("/ip4/127.0.0.1/tcp/1")  # nothing listens there: refused at once
    return tuple(KadPeer(bogus_peer(i), (closed,) * n_addrs) for i in range(count))


@pytest.mark.parametrize(
    "answer",
    [
        # 20 made-up peers at a closed port: each query to them fails fast.
        lambda req: KadMessage(
            MessageType.FIND_NODE, req.key, closer_peers=bogus_peers(20)
        ).encode(),
        # 500 peers: above max_peers_per_message, the whole answer is refused.
        lambda req: KadMessage(MessageType.FIND_NODE, closer_peers=bogus_peers(500)).encode(),
        # A peer entry with 300 addresses: above max_addrs_per_peer.
        lambda req: KadMessage(MessageType.FIND_NODE, closer_peers=bogus_peers(1, 300)).encode(),
        # Not a protobuf; then an answer of another type.
        lambda req: b"\x0a\xff\xff\xff\x0f",
        lambda req: KadMessage(MessageType.PING).encode(),
    ],
    ids=["bogus-peers", "huge-list", "huge-addrs", "garbage", "wrong-type"],
)
async def test_lookup_survives_a_hostile_dht_peer(answer: Callable[[KadMessage], bytes]) -> None:
    async with kad_nodes(3) as (asker, honest, target), Node() as hostile:
        await hostile.listen(LOOPBACK)
        hostile.set_stream_handler(KAD_PROTOCOL_ID, hostile_server(answer))
        kad(asker).table.add(hostile.peer_id, hostile.listen_addrs)
        kad(asker).table.add(honest.peer_id, honest.listen_addrs)
        kad(honest).table.add(target.peer_id, target.listen_addrs)
        addrs = await kad(asker).find_peer(target.peer_id)
        assert addrs == target.listen_addrs
        for bogus in bogus_peers(20):
            assert bogus.peer_id not in kad(asker).table
        # Full lookups never stop early: each asks the hostile peer, which answers badly
        # or sends peers that cannot be reached; neither stays in the table.
        closest = await kad(asker).closest_peers(target.peer_id.to_bytes())
        assert {p.peer_id for p in closest} >= {honest.peer_id, target.peer_id}
        assert not {p.peer_id for p in closest} & {p.peer_id for p in bogus_peers(20)}
        well_formed = hostile.peer_id in {p.peer_id for p in closest}
        # A well-formed answer keeps its sender (it does serve the DHT); a bad one drops it.
        assert (hostile.peer_id in kad(asker).table) == well_formed
        assert well_formed == is_well_formed(answer)


def is_well_formed(answer: Callable[[KadMessage], bytes]) -> bool:
    """Whether ``answer`` is a well-formed FIND_NODE answer (the bogus-peers case)."""
    try:
        msg = KadMessage.decode(answer(KadMessage(MessageType.FIND_NODE, b"k")))
    except P2PError:
        return False
    return msg.type is MessageType.FIND_NODE


async def test_server_refuses_hostile_requests_and_keeps_serving() -> None:
    async with kad_nodes(2) as (server, other), Node() as attacker:
        kad(server).table.add(other.peer_id, other.listen_addrs)
        target = server.listen_addrs[0].with_peer_id(server.peer_id)
        await attacker.dial(target)
        bad_requests = [
            b"\x0a\xff\xff\xff\x0f",  # not a protobuf
            encode_varint_field(1, 77),  # unknown message type
            encode_varint_field(1, 0) + encode_bytes_field(2, b"key"),  # PUT_VALUE: not served
            encode_varint_field(1, 4) + encode_bytes_field(2, b"k" * 1000),  # key too long
        ]
        for data in bad_requests:
            stream = await attacker.new_stream(server.peer_id, KAD_PROTOCOL_ID)
            await stream.write_message(data)
            with pytest.raises(P2PError):
                await stream.read_message(1 << 16)
        stream = await attacker.new_stream(server.peer_id, KAD_PROTOCOL_ID)
        await stream.write(b"\xff\xff\xff\xff\x0f")  # a length prefix far above the limit
        with pytest.raises(P2PError):
            await stream.read_message(1 << 16)
        # Several requests on one stream are answered, up to max_requests_per_stream.
        stream = await attacker.new_stream(server.peer_id, KAD_PROTOCOL_ID)
        for _ in range(kad(server).config.max_requests_per_stream):
            await stream.write_message(KadMessage(MessageType.PING).encode())
            assert KadMessage.decode(await stream.read_message(1 << 16)).type is MessageType.PING
        await stream.write_message(KadMessage(MessageType.PING).encode())
        with pytest.raises(StreamClosedError):
            await stream.read_message(1 << 16)
        # And the server still answers FIND_NODE with what it knows.
        stream = await attacker.new_stream(server.peer_id, KAD_PROTOCOL_ID)
        await stream.write_message(
            KadMessage(MessageType.FIND_NODE, other.peer_id.to_bytes()).encode()
        )
        answer = KadMessage.decode(await stream.read_message(1 << 16))
        assert [p.peer_id for p in answer.closer_peers] == [other.peer_id]
        assert answer.closer_peers[0].addrs == tuple(other.listen_addrs)


async def test_inbound_streams_are_bounded() -> None:
    async with kad_nodes(1, max_inbound_streams=2) as (server,), Node() as attacker:
        await attacker.dial(server.listen_addrs[0].with_peer_id(server.peer_id))
        held = []
        for _ in range(2):  # two streams that never send a request hold both places
            stream = await attacker.new_stream(server.peer_id, KAD_PROTOCOL_ID)
            await stream.write(b"")
            held.append(stream)
        ping = KadMessage(MessageType.PING).encode()
        await held[0].write_message(ping)  # negotiated, the handler now runs
        await held[0].read_message(1 << 16)
        await held[1].write_message(ping)
        await held[1].read_message(1 << 16)
        third = await attacker.new_stream(server.peer_id, KAD_PROTOCOL_ID)
        await third.write_message(ping)
        with pytest.raises(P2PError):
            await third.read_message(1 << 16)
        await held[0].close()
        await wait_for(lambda: kad(server)._inbound < 2, cap=10)
        fourth = await attacker.new_stream(server.peer_id, KAD_PROTOCOL_ID)
        await fourth.write_message(ping)
        assert KadMessage.decode(await fourth.read_message(1 << 16)).type is MessageType.PING


async def test_refresh_runs_periodically_and_stops_at_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with kad_nodes(1) as (seed,):
        addr = seed.listen_addrs[0].with_peer_id(seed.peer_id)
        config = kad_config(bootstrap=(addr,), refresh_interval_seconds=0.01)
        async with Node(config=NodeConfig(kad=config)) as node:
            service = kad(node)
            refreshes = 0
            original = service.refresh

            async def counting(*, random_lookup: bool = True) -> None:
                nonlocal refreshes
                refreshes += 1
                await original(random_lookup=random_lookup)

            monkeypatch.setattr(service, "refresh", counting)
            await wait_for(lambda: refreshes >= 3, cap=10)
            assert seed.peer_id in service.table
            task = service._task
            assert task is not None and not task.done()
            await service.close()
            assert task.done()
            assert KAD_PROTOCOL_ID not in node.protocols
        closed = seed.kad
        assert closed is not None
        await closed.close()
        await closed.close()  # twice: nothing left to do


async def test_dial_by_id_retries_past_a_poisoned_first_answer() -> None:
    """A hostile peer answers first with bogus addresses for the target: the dial to them
    fails, and the dialer asks once more with a lookup that hears every peer."""
    async with kad_nodes(3) as (asker, honest, target), Node() as hostile:
        await hostile.listen(LOOPBACK)
        lie = KadPeer(target.peer_id, (Multiaddr("/ip4/127.0.0.1/tcp/1"),))
        honest_entry = KadPeer(honest.peer_id, tuple(honest.listen_addrs))
        hostile.set_stream_handler(
            KAD_PROTOCOL_ID,
            hostile_server(
                lambda req: KadMessage(
                    MessageType.FIND_NODE, req.key, closer_peers=(lie, honest_entry)
                ).encode()
            ),
        )
        kad(asker).table.add(hostile.peer_id, hostile.listen_addrs)  # all the asker knows
        kad(honest).table.add(target.peer_id, target.listen_addrs)
        assert await kad(asker).find_peer(target.peer_id) == list(lie.addrs)  # poisoned
        assert asker.peer_store.addrs(target.peer_id) == []  # nothing stored unverified
        assert await asker.ping(target.peer_id)  # the retry found the real addresses
        assert asker.peer_store.addrs(target.peer_id) == target.listen_addrs


async def test_a_node_alone_joins_again_once_its_bootstrap_peer_is_back() -> None:
    key = KeyPair.generate()
    async with Node(key, config=NodeConfig(kad=kad_config())) as seed:
        addr = (await seed.listen(LOOPBACK))[0]
    # The bootstrap peer is down: the node starts alone, and keeps trying on refresh.
    config = kad_config(bootstrap=(addr.with_peer_id(key.peer_id),), refresh_interval_seconds=0.05)
    async with Node(config=NodeConfig(kad=config)) as node:
        service = kad(node)
        await wait_for(lambda: service._joined.is_set(), cap=10)
        assert len(service.table) == 0
        async with Node(key, config=NodeConfig(kad=kad_config())) as back:
            await back.listen(addr)
            await wait_for(lambda: key.peer_id in service.table, cap=10)


@pytest.mark.parametrize(
    "kw",
    [
        {"mode": "sometimes"},
        {"bootstrap": (Multiaddr("/ip4/127.0.0.1/tcp/4001"),)},  # no /p2p/<id>
        {"k": 0},
        {"max_inbound_streams": 0},
    ],
)
def test_kad_config_refuses_what_cannot_work(kw: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        KadConfig(**kw)  # type: ignore[arg-type]
