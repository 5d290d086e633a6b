"""mDNS packets (socket-free), and the discovery service's logic driven without sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import cast

import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiop2p._aio.emitter import Emitter
from aiop2p.errors import InvalidArgumentError
from aiop2p.identity import KeyPair, PeerId
from aiop2p.multiaddr import Multiaddr
from aiop2p.protocols.mdns import (
    MdnsPeerRecord,
    MdnsQuery,
    MdnsResponse,
    build_meta_response,
    build_query,
    build_responses,
    parse_packet,
    peer_name_from_random,
)
from aiop2p.services.host import Host
from aiop2p.services.mdns import (
    MdnsConfig,
    MdnsInterface,
    MdnsService,
    PeerDiscovered,
    PeerExpired,
    _Endpoint,
)
from aiop2p.services.peerstore import PeerStore

PEER = KeyPair.generate().peer_id
OTHER = KeyPair.generate().peer_id
NAME = peer_name_from_random(bytes(range(40)))


def addr(i: int, peer: PeerId = PEER) -> Multiaddr:
    return Multiaddr(f"/ip4/10.0.{i // 256}.{i % 256}/tcp/4001").with_peer_id(peer)


def txt(rdclass: int, strings: list[bytes]) -> dns.rdata.Rdata:
    cls = dns.rdataclass.RdataClass(rdclass)
    return dns.rdtypes.ANY.TXT.TXT(cls, dns.rdatatype.TXT, strings)


def response(
    answers: list[tuple[str, str, int, list[str] | list[bytes]]],
    additional: list[tuple[str, str, int, list[str] | list[bytes]]] = (),  # type: ignore[assignment]
    *,
    rdclass: int = dns.rdataclass.IN,
) -> bytes:
    """A hand-made response: (owner, type, ttl, values) per record, values as text or TXT bytes."""
    msg = dns.message.Message(id=0)
    msg.flags = dns.flags.QR | dns.flags.AA
    for section, records in ((msg.answer, answers), (msg.additional, additional)):
        for owner, rdtype, ttl, values in records:
            rrset = msg.find_rrset(
                section,
                dns.name.from_text(owner),
                dns.rdataclass.RdataClass(rdclass) if rdtype == "TXT" else dns.rdataclass.IN,
                dns.rdatatype.from_text(rdtype),
                create=True,
            )
            for value in values:
                if isinstance(value, bytes):
                    rrset.add(txt(rdclass, [value]), ttl)
                else:
                    rrset.add(dns.rdata.from_text(dns.rdataclass.IN, rdtype, value), ttl)
    return msg.to_wire(want_shuffle=False)


# -- building and parsing -------------------------------------------------------------------


def test_peer_name() -> None:
    name = peer_name_from_random(bytes(range(256))[:63])
    assert len(name) == 63 and name.isalnum() and name == name.lower()
    assert len(peer_name_from_random(b"\xff" * 32)) == 32
    for size in (0, 31, 64):
        with pytest.raises(InvalidArgumentError):
            peer_name_from_random(b"a" * size)


def test_query_round_trip() -> None:
    assert parse_packet(build_query()) == MdnsQuery(True, False, frozenset(), ())
    private = build_query("_p2p-abcd._udp.local")
    assert parse_packet(private) is None  # another (private) network's query
    assert parse_packet(private, service_name="_p2p-abcd._udp.local") is not None


def test_response_round_trip() -> None:
    addrs = [addr(1), Multiaddr("/ip6/fd00::1/tcp/4001/ws").with_peer_id(PEER)]
    (packet,) = build_responses(NAME, addrs, 120)
    assert parse_packet(packet) == MdnsResponse(
        (MdnsPeerRecord(NAME, PEER, tuple(a.without_peer_id() for a in addrs), 120),), ()
    )
    # Spec layout: the PTR answers, the TXT records are additional, one per address.
    msg = dns.message.from_wire(packet)
    assert [r.rdtype for r in msg.answer] == [dns.rdatatype.PTR]
    assert msg.answer[0].name == dns.name.from_text("_p2p._udp.local")
    assert [len(r) for r in msg.additional] == [2]
    assert msg.id == 0 and msg.flags & dns.flags.AA


@settings(max_examples=50)
@given(
    st.lists(st.integers(0, 65535), min_size=1, max_size=32, unique=True),
    st.integers(0, 0x7FFFFFFF),
    st.binary(min_size=32, max_size=63),
)
def test_response_round_trip_any(ids: list[int], ttl: int, seed: bytes) -> None:
    name = peer_name_from_random(seed)
    addrs = [addr(i) for i in ids]
    packets = build_responses(name, addrs, ttl, max_packet_bytes=512)
    got: list[Multiaddr] = []
    for packet in packets:
        assert len(packet) <= 512
        parsed = parse_packet(packet)
        assert isinstance(parsed, MdnsResponse)
        (record,) = parsed.peers
        assert (record.peer_name, record.peer_id, record.ttl) == (name, PEER, ttl)
        got.extend(record.addrs)
    assert got == [a.without_peer_id() for a in addrs]


def test_long_addresses_are_skipped_and_nothing_to_say_is_no_packet() -> None:
    long = Multiaddr("/dns4/" + "a" * 200 + ".example/tcp/1").with_peer_id(PEER)
    assert build_responses(NAME, [long], 120) == []
    (packet,) = build_responses(NAME, [long, addr(1)], 120)
    parsed = parse_packet(packet)
    assert isinstance(parsed, MdnsResponse)
    assert parsed.peers[0].addrs == (addr(1).without_peer_id(),)
    with pytest.raises(InvalidArgumentError):
        build_responses(NAME, [addr(1)], -1)
    with pytest.raises(InvalidArgumentError):
        build_responses("bad name with spaces and dots." * 3, [addr(1)], 1)


def test_js_libp2p_layout_txt_in_answers() -> None:
    # @libp2p/mdns puts the PTR and every TXT record in the answer section, TTL 120.
    packet = response(
        [
            ("_p2p._udp.local", "PTR", 120, [f"{NAME}._p2p._udp.local."]),
            (f"{NAME}._p2p._udp.local", "TXT", 120, [f"dnsaddr={addr(1)}".encode()]),
            (f"{NAME}._p2p._udp.local", "TXT", 120, [f"dnsaddr={addr(2)}".encode()]),
        ]
    )
    parsed = parse_packet(packet)
    assert isinstance(parsed, MdnsResponse)
    assert parsed.peers[0].addrs == (addr(1).without_peer_id(), addr(2).without_peer_id())


def test_py_libp2p_zeroconf_layout() -> None:
    # zeroconf: PTR answer (TTL 4500), SRV/TXT/A additional with the cache-flush class bit,
    # py-libp2p's numbered keys, plus noise that must be ignored.
    inst = f"{NAME}._p2p._udp.local"
    strings = [
        f"dnsaddr={addr(1)}".encode(),
        f"DNSADDR2={addr(2)}".encode(),
        f"dnsaddr3={addr(3, OTHER)}".encode(),  # another peer id: dropped
        b"dnsaddr4=/ip4/10.0.0.4/tcp/1",  # no /p2p: dropped
        f"dnsaddr5={addr(5)}/p2p-circuit".encode(),  # id not last: dropped
        b"dnsaddrx=/ip4/10.0.0.6/tcp/1",
        b"other=1",
        b"novalue",
        b"dnsaddr=\xff\xfe",
        b"dnsaddr=/not/a/multiaddr",
    ]
    packet = response(
        [("_p2p._udp.local", "PTR", 4500, [f"{inst}."])],
        [
            (inst, "SRV", 120, [f"0 0 4001 {NAME}.local."]),
            (inst, "TXT", 4500, strings),
            (f"{NAME}.local", "A", 120, ["10.0.0.1"]),
        ],
        rdclass=0x8001,
    )
    parsed = parse_packet(packet)
    assert isinstance(parsed, MdnsResponse)
    assert parsed.peers == (
        MdnsPeerRecord(NAME, PEER, (addr(1).without_peer_id(), addr(2).without_peer_id()), 4500),
    )


def test_txt_without_ptr_case_and_goodbyes() -> None:
    inst = f"{NAME.upper()}._P2P._UDP.LOCAL"
    packet = response([(inst, "TXT", 60, [f"dnsaddr={addr(1)}".encode()])])
    parsed = parse_packet(packet)
    assert isinstance(parsed, MdnsResponse) and parsed.peers[0].peer_name == NAME
    assert parsed.peers[0].ttl == 60
    bye = response([("_p2p._udp.local", "PTR", 0, [f"{NAME}._p2p._udp.local."])])
    assert parse_packet(bye) == MdnsResponse((), (NAME,))
    # A PTR with a TTL and no TXT carries no peer id: nothing to report.
    assert (
        parse_packet(response([("_p2p._udp.local", "PTR", 9, [f"{NAME}._p2p._udp.local."])]))
        is None
    )


def test_other_services_and_meta_query() -> None:
    http = response([("_http._tcp.local", "PTR", 120, ["x._http._tcp.local."])])
    assert parse_packet(http) is None
    assert parse_packet(build_meta_response(120)) is None  # a response, not about peers
    meta = dns.message.make_query("_services._dns-sd._udp.local", "PTR").to_wire()
    assert parse_packet(meta) == MdnsQuery(False, True, frozenset(), ())
    direct = dns.message.make_query(f"{NAME}._p2p._udp.local", "TXT").to_wire()
    assert parse_packet(direct) == MdnsQuery(False, False, frozenset({NAME}), ())
    known = dns.message.make_query("_p2p._udp.local", "PTR")
    known.answer.append(
        dns.rrset.from_text("_p2p._udp.local.", 300, "IN", "PTR", f"{NAME}._p2p._udp.local.")
    )
    assert parse_packet(known.to_wire()) == MdnsQuery(True, False, frozenset(), ((NAME, 300),))


_SERVICE_WIRE = b"\x04_p2p\x04_udp\x05local\x00"


@settings(max_examples=500)
@given(
    st.one_of(
        st.binary(max_size=600),
        st.tuples(st.binary(max_size=300), st.binary(max_size=300)).map(
            lambda t: t[0] + _SERVICE_WIRE + t[1]  # reaches the DNS decoder
        ),
    )
)
def test_garbage_never_raises(data: bytes) -> None:
    assert parse_packet(data) is None or isinstance(parse_packet(data), MdnsQuery | MdnsResponse)


@settings(max_examples=300)
@given(st.data())
def test_mutated_packets_never_raise(data: st.DataObject) -> None:
    packet = bytearray(build_responses(NAME, [addr(1), addr(2)], 120)[0])
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(packet) - 1))
        packet[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(packet)))
    parsed = parse_packet(bytes(packet[:cut]))
    assert parsed is None or isinstance(parsed, MdnsQuery | MdnsResponse)


def test_oversized_and_tiny_packets() -> None:
    assert parse_packet(b"") is None
    assert parse_packet(b"\x00" * 11) is None
    assert parse_packet(build_responses(NAME, [addr(1)], 1)[0] + b"_p2p" * 3000) is None


# -- the service's logic, without sockets ----------------------------------------------------


class FakeNode:
    def __init__(self, listen: list[str]) -> None:
        self.peer_id = KeyPair.generate().peer_id
        self.listen_addrs = [Multiaddr(a) for a in listen]
        self.peer_store = PeerStore()
        self.local_changed: Emitter[None] = Emitter("local_changed")


class RecordingEndpoint(_Endpoint):
    def __init__(self, service: MdnsService, loopback: bool = False) -> None:
        iface = MdnsInterface("eth9", 9, "10.0.0.9", (), True, loopback, True)
        super().__init__(service, iface, False)
        self.sent: list[bytes] = []
        self.poke = asyncio.Event()
        service.discovery.subscribe(lambda _: self.poke.set())

    def send(self, packet: bytes) -> None:
        self.sent.append(packet)
        self.poke.set()

    async def until(self, predicate: Callable[[], bool], cap: float = 5.0) -> None:
        """Wait until ``predicate()`` holds, re-checked after each send or event."""
        async with asyncio.timeout(cap):
            while not predicate():
                self.poke.clear()
                await self.poke.wait()


class FakeClock:
    """Moves the running loop's clock forward, so its timers fire without waiting."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.offset = 0.0
        real = loop.time
        loop.time = lambda: real() + self.offset  # type: ignore[method-assign]
        self.loop, self.real = loop, real

    def restore(self) -> None:
        self.loop.time = self.real  # type: ignore[method-assign]


@pytest.fixture
async def clock() -> AsyncIterator[FakeClock]:
    fake = FakeClock(asyncio.get_running_loop())
    yield fake
    fake.restore()


def make_service(**config: int) -> tuple[MdnsService, RecordingEndpoint, FakeNode]:
    node = FakeNode(["/ip4/10.0.0.9/tcp/4001", "/ip4/127.0.0.1/tcp/4001"])
    mdns_config = MdnsConfig(**config)  # type: ignore[arg-type]
    service = MdnsService(cast(Host, node), config=mdns_config, random_bytes=lambda n: b"\x01" * n)
    service._loop = asyncio.get_running_loop()
    service._started = True
    endpoint = RecordingEndpoint(service)
    service._endpoints.append(endpoint)
    return service, endpoint, node


def announce(peer: PeerId, ttl: int = 120, name: str = NAME, n: int = 1) -> bytes:
    return build_responses(name, [addr(i, peer) for i in range(1, n + 1)], ttl)[0]


async def test_service_answers_queries_with_lan_addresses_once_per_interval() -> None:
    service, endpoint, node = make_service()
    endpoint.datagram_received(build_query(), ("10.0.0.2", 5353))
    (packet,) = endpoint.sent
    parsed = parse_packet(packet)
    assert isinstance(parsed, MdnsResponse)
    (record,) = parsed.peers
    assert record.peer_id == node.peer_id and record.ttl == 360
    assert record.addrs == (Multiaddr("/ip4/10.0.0.9/tcp/4001"),)  # loopback withheld
    # Queries within min_response_interval_seconds share one deferred answer.
    endpoint.datagram_received(build_query(), ("10.0.0.3", 5353))
    endpoint.datagram_received(build_query(), ("10.0.0.4", 5353))
    assert len(endpoint.sent) == 1 and endpoint.deferred is not None
    # A querier that already knows us (TTL above half) gets no answer.
    known = dns.message.make_query("_p2p._udp.local", "PTR")
    known.answer.append(
        dns.rrset.from_text(
            "_p2p._udp.local.", 300, "IN", "PTR", f"{service.peer_name}._p2p._udp.local."
        )
    )
    service._query_received(endpoint, cast(MdnsQuery, parse_packet(known.to_wire())))
    await service.close()
    assert len(endpoint.sent) == 2  # the goodbye
    goodbye = parse_packet(endpoint.sent[1])
    assert isinstance(goodbye, MdnsResponse) and goodbye.peers[0].ttl == 0


async def test_service_discovers_refreshes_and_expires_by_ttl(clock: FakeClock) -> None:
    service, endpoint, node = make_service()
    events: list[object] = []
    service.discovery.subscribe(events.append)
    endpoint.datagram_received(announce(node.peer_id), ("10.0.0.9", 5353))  # ourselves
    assert events == [] and service.discovered_peers == {}
    endpoint.datagram_received(announce(OTHER, ttl=100), ("10.0.0.2", 5353))
    assert events == [PeerDiscovered(OTHER, (addr(1).without_peer_id(),))]
    assert node.peer_store.addrs(OTHER) == [addr(1).without_peer_id()]
    endpoint.datagram_received(announce(OTHER, ttl=100), ("10.0.0.2", 5353))
    assert len(events) == 1  # same addresses: no new event
    endpoint.datagram_received(announce(OTHER, ttl=100, n=2), ("10.0.0.2", 5353))
    assert events[-1] == PeerDiscovered(
        OTHER, (addr(1).without_peer_id(), addr(2).without_peer_id())
    )
    # At 80 % of the TTL the service queries again; at 100 % the peer expires.
    clock.offset += 81
    await endpoint.until(
        lambda: any(parse_packet(p) == parse_packet(build_query()) for p in endpoint.sent)
    )
    clock.offset += 20
    await endpoint.until(lambda: PeerExpired(OTHER) in events)
    assert service.discovered_peers == {} and node.peer_store.addrs(OTHER) == []
    await service.close()


async def test_service_goodbye_bounds_and_event_queue() -> None:
    service, endpoint, _ = make_service(max_peers=2, max_queued_events=2)
    peers = [KeyPair.generate().peer_id for _ in range(3)]
    for i, peer in enumerate(peers):
        endpoint.datagram_received(announce(peer, name=f"{'n' * 32}{i}"), ("10.0.0.2", 5353))
    assert set(service.discovered_peers) == set(peers[:2]) and service.dropped_peers == 1
    bye = response([("_p2p._udp.local", "PTR", 0, [f"{'n' * 32}0._p2p._udp.local."])])
    endpoint.datagram_received(bye, ("10.0.0.2", 5353))
    assert set(service.discovered_peers) == {peers[1]}
    assert service.dropped_events == 1  # 3 events, queue of 2: the oldest went
    endpoint.datagram_received(b"garbage", ("10.0.0.2", 5353))
    assert service.ignored_packets == 1
    await service.close()
    got = [event async for event in service.events()]
    assert got == [PeerDiscovered(peers[1], (addr(1).without_peer_id(),)), PeerExpired(peers[0])]
