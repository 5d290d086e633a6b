"""``/dns*`` through the system resolver and ``/dnsaddr`` through a DNS server of our own.

The TXT lookups go to an in-process UDP server on loopback (dnspython builds the
answers), never to the machine's configured nameserver.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import dns.asyncresolver
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
import pytest_asyncio

from aiop2p.errors import DialError, InvalidArgumentError
from aiop2p.identity import KeyPair
from aiop2p.multiaddr import Multiaddr
from aiop2p.node import Node
from aiop2p.transports._base import Transport
from aiop2p.transports.dns import is_resolvable, resolve
from aiop2p.transports.tcp import TcpTransport
from aiop2p.transports.websocket import WebSocketTransport

PEER_A = str(KeyPair.generate().peer_id)
PEER_B = str(KeyPair.generate().peer_id)


class TxtServer(asyncio.DatagramProtocol):
    """Answers TXT queries from ``records`` (name -> strings); NXDOMAIN for other names."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.queries: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True)
        self.queries.append(name)
        values = self.records.get(name)
        if values is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT and values:
            quoted = ['"' + v.replace('"', '\\"') + '"' for v in values]
            response.answer.append(
                dns.rrset.from_text_list(question.name, 60, dns.rdataclass.IN, "TXT", quoted)
            )
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@pytest_asyncio.fixture
async def server() -> AsyncIterator[tuple[TxtServer, dns.asyncresolver.Resolver]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        TxtServer, local_addr=("127.0.0.1", 0)
    )
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = transport.get_extra_info("sockname")[1]
    resolver.lifetime = 5.0
    try:
        yield protocol, resolver
    finally:
        transport.close()


def dnsaddr(*addrs: str) -> list[str]:
    return [f"dnsaddr={a}" for a in addrs]


async def test_plain_address_is_returned_as_is() -> None:
    addr = Multiaddr("/ip4/1.2.3.4/tcp/1")
    assert not is_resolvable(addr)
    assert await resolve(addr) == [addr]


async def test_dns4_localhost_uses_the_system_resolver_and_etc_hosts() -> None:
    addr = Multiaddr(f"/dns4/localhost/tcp/4001/p2p/{PEER_A}")
    assert is_resolvable(addr)
    assert await resolve(addr) == [Multiaddr(f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER_A}")]
    both = await resolve(Multiaddr("/dns/localhost/tcp/4001"))
    assert Multiaddr("/ip4/127.0.0.1/tcp/4001") in both
    assert all(a.protocol_names()[0] in ("ip4", "ip6") for a in both)


async def test_tls_websocket_keeps_its_name_as_sni() -> None:
    assert await resolve(Multiaddr(f"/dns4/localhost/tcp/443/wss/p2p/{PEER_A}")) == [
        Multiaddr(f"/ip4/127.0.0.1/tcp/443/tls/sni/localhost/ws/p2p/{PEER_A}")
    ]
    assert await resolve(Multiaddr("/dns4/localhost/tcp/443/tls/ws")) == [
        Multiaddr("/ip4/127.0.0.1/tcp/443/tls/sni/localhost/ws")
    ]
    assert await resolve(Multiaddr("/dns4/localhost/tcp/80/ws")) == [
        Multiaddr("/ip4/127.0.0.1/tcp/80/ws")
    ]


async def test_unresolvable_name_is_a_dial_error_naming_it() -> None:
    with pytest.raises(DialError, match=r"nonexistent\.invalid"):
        await resolve(Multiaddr("/dns4/nonexistent.invalid/tcp/1"))


async def test_bad_limits() -> None:
    with pytest.raises(InvalidArgumentError):
        await resolve(Multiaddr("/ip4/1.2.3.4/tcp/1"), max_depth=0)


async def test_dnsaddr_one_level_filtered_by_peer(
    server: tuple[TxtServer, dns.asyncresolver.Resolver],
) -> None:
    srv, resolver = server
    a1 = f"/ip4/10.0.0.1/tcp/4001/p2p/{PEER_A}"
    a2 = f"/ip6/::1/tcp/4001/ws/p2p/{PEER_A}"
    b1 = f"/ip4/10.0.0.2/tcp/4001/p2p/{PEER_B}"
    srv.records["_dnsaddr.example.test"] = [*dnsaddr(a1, b1, a2), "dnsaddr1=ignored", "x=y"]
    found = await resolve(Multiaddr(f"/dnsaddr/example.test/p2p/{PEER_A}"), resolver=resolver)
    # A TXT record set has no order.
    assert sorted(map(str, found)) == sorted([a1, a2])
    everything = await resolve(Multiaddr("/dnsaddr/example.test"), resolver=resolver)
    assert sorted(map(str, everything)) == sorted([a1, b1, a2])
    assert srv.queries == ["_dnsaddr.example.test"] * 2


async def test_dnsaddr_recursive_and_dns_leaves(
    server: tuple[TxtServer, dns.asyncresolver.Resolver],
) -> None:
    srv, resolver = server
    srv.records["_dnsaddr.root.test"] = dnsaddr(
        f"/dnsaddr/a.test/p2p/{PEER_A}", f"/dnsaddr/b.test/p2p/{PEER_B}", "/dnsaddr/mixed.test"
    )
    srv.records["_dnsaddr.a.test"] = dnsaddr(f"/dns4/localhost/tcp/1/p2p/{PEER_A}")
    srv.records["_dnsaddr.b.test"] = dnsaddr(f"/ip4/10.0.0.2/tcp/2/p2p/{PEER_B}")
    srv.records["_dnsaddr.mixed.test"] = dnsaddr(
        f"/ip4/10.0.0.3/tcp/3/p2p/{PEER_A}", "/ip4/10.0.0.4/tcp/4"
    )
    found = await resolve(Multiaddr(f"/dnsaddr/root.test/p2p/{PEER_A}"), resolver=resolver)
    assert sorted(map(str, found)) == sorted(
        [f"/ip4/127.0.0.1/tcp/1/p2p/{PEER_A}", f"/ip4/10.0.0.3/tcp/3/p2p/{PEER_A}"]
    )
    assert "_dnsaddr.b.test" not in srv.queries  # another peer's branch is pruned unread


async def test_dnsaddr_loop_exceeds_depth(
    server: tuple[TxtServer, dns.asyncresolver.Resolver],
) -> None:
    srv, resolver = server
    srv.records["_dnsaddr.loop.test"] = dnsaddr("/dnsaddr/loop.test")
    with pytest.raises(DialError, match="deeper than 3"):
        await resolve(Multiaddr("/dnsaddr/loop.test"), max_depth=3, resolver=resolver)
    assert len(srv.queries) == 3


async def test_dnsaddr_missing_name_and_empty_records(
    server: tuple[TxtServer, dns.asyncresolver.Resolver],
) -> None:
    srv, resolver = server
    with pytest.raises(DialError, match=r"_dnsaddr\.missing\.test does not exist"):
        await resolve(Multiaddr("/dnsaddr/missing.test"), resolver=resolver)
    srv.records["_dnsaddr.empty.test"] = ["not-a-dnsaddr", "dnsaddr=/not/a/multiaddr"]
    with pytest.raises(DialError, match="no dnsaddr= TXT record"):
        await resolve(Multiaddr("/dnsaddr/empty.test"), resolver=resolver)
    srv.records["_dnsaddr.other.test"] = dnsaddr(f"/ip4/10.0.0.2/tcp/2/p2p/{PEER_B}")
    with pytest.raises(DialError, match="resolved to no address"):
        await resolve(Multiaddr(f"/dnsaddr/other.test/p2p/{PEER_A}"), resolver=resolver)


async def test_dnsaddr_results_are_bounded(
    server: tuple[TxtServer, dns.asyncresolver.Resolver],
) -> None:
    srv, resolver = server
    srv.records["_dnsaddr.many.test"] = dnsaddr(*(f"/ip4/10.0.1.{i}/tcp/1" for i in range(50)))
    found = await resolve(Multiaddr("/dnsaddr/many.test"), max_results=5, resolver=resolver)
    assert len(found) == 5 and len(set(found)) == 5
    assert all(str(a).startswith("/ip4/10.0.1.") for a in found)


async def dial_resolved(
    node: Node, addr: Multiaddr, resolver: dns.asyncresolver.Resolver | None = None
) -> object:
    """Resolve ``addr``, then dial each result in turn until one connects."""
    causes: dict[str, BaseException] = {}
    for candidate in await resolve(addr, resolver=resolver):
        try:
            return await node.dial(candidate)
        except DialError as exc:
            causes[str(candidate)] = exc
    raise DialError(f"could not dial {addr}", causes)


async def test_node_dials_a_dnsaddr_end_to_end(
    server: tuple[TxtServer, dns.asyncresolver.Resolver],
) -> None:
    srv, resolver = server
    ts: list[Transport] = [TcpTransport(), WebSocketTransport()]
    async with Node(transports=ts) as a, Node(transports=[WebSocketTransport()]) as b:
        (addr,) = await b.listen("/ip4/127.0.0.1/tcp/0/ws")
        port = addr.value_for("tcp")
        srv.records["_dnsaddr.example.test"] = dnsaddr(
            f"/ip4/10.0.0.2/tcp/2/p2p/{PEER_B}",  # someone else: filtered out
            f"/dnsaddr/ws.example.test/p2p/{b.peer_id}",
        )
        srv.records["_dnsaddr.ws.example.test"] = dnsaddr(
            f"/dns4/localhost/tcp/{port}/ws/p2p/{b.peer_id}"
        )
        conn = await dial_resolved(a, Multiaddr(f"/dnsaddr/example.test/p2p/{b.peer_id}"), resolver)
        assert a.is_connected(b.peer_id) and conn in a.connections
        assert len(await a.ping(b.peer_id)) == 1
