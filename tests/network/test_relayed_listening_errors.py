"""compat: listening failures are reported.  An unreachable relay, and the other ways relayed
listening fails on circuit relay v2: every failure is an error from
``start_relayed_listening`` — never a call that does not return — and leaves no listener,
no reservation and a network that still works.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from aiop2p.config import NodeConfig
from aiop2p.errors import DialError, NoAddressesError, P2PError, ReservationRefusedError
from aiop2p.events import ListenerClosed, NewListenAddr
from aiop2p.identity import KeyPair
from aiop2p.multiaddr import Multiaddr
from aiop2p.network import Network
from aiop2p.network.firewall import FirewallRules
from aiop2p.protocols.relay_v2 import HOP_PROTOCOL_ID, Status
from aiop2p.services.relay.server import RelayServerConfig

from .conftest import CAP, drain_events, listen, networks

pytestmark = pytest.mark.timeout(30)

ALLOW: dict[str, Any] = {"firewall": FirewallRules.allow_all()}
RELAY: dict[str, Any] = {**ALLOW, "relay_server": RelayServerConfig()}


def closed_port_addr() -> Multiaddr:
    """A loopback address nobody listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")


async def relayed_listen_error(net: Network[Any, Any], relay: Any, addr: Any) -> P2PError:
    """``start_relayed_listening`` must fail (with a P2PError) well within ``CAP``."""
    try:
        async with asyncio.timeout(CAP):
            result = await net.start_relayed_listening(relay, addr)
    except TimeoutError:
        pytest.fail("start_relayed_listening hung (compat: listening failures are reported)")
    except P2PError as exc:
        return exc
    pytest.fail(f"start_relayed_listening succeeded: {result}")


def assert_left_clean(net: Network[Any, Any], relay: Any) -> None:
    """No listener, no reservation, no NewListenAddr for the relayed address."""
    assert [lst for lst in net.listeners() if lst.uses_relay is not None] == []
    assert net.relay_client is not None and net.relay_client.reservations == {}
    for event in drain_events(net):
        assert not isinstance(event, NewListenAddr | ListenerClosed), event


async def assert_still_works(net: Network[Any, Any], relay: Network[Any, Any]) -> None:
    """After the failure the same network can listen through a working relay."""
    relay_addr = await listen(relay)
    circuit = await net.start_relayed_listening(relay.peer_id, relay_addr)
    assert circuit.peer_id == net.peer_id
    assert [lst.uses_relay for lst in net.listeners()] == [relay.peer_id]


async def test_unreachable_relay_fails_with_dial_error() -> None:
    async with networks(ALLOW, RELAY) as (t, r):
        unreachable = closed_port_addr()
        error = await relayed_listen_error(t, r.peer_id, unreachable)
        assert isinstance(error, DialError), repr(error)
        assert_left_clean(t, r.peer_id)
        # The address given is remembered in the address book (as in the seed).
        assert unreachable in t.get_addrs(r.peer_id)
        # A peer that is no relay at all, at an unreachable address: the same.
        stranger = KeyPair.generate().peer_id
        error = await relayed_listen_error(t, stranger, closed_port_addr())
        assert isinstance(error, DialError), repr(error)
        assert_left_clean(t, stranger)
        await assert_still_works(t, r)


async def test_relay_without_a_known_address_fails_with_no_addresses() -> None:
    """No relay address given and none known → ``NoAddressesError`` (the seed's
    ``DialRelay(NoAddresses)``)."""
    async with networks(ALLOW) as (t,):
        error = await relayed_listen_error(t, KeyPair.generate().peer_id, None)
        assert isinstance(error, NoAddressesError), repr(error)
        assert_left_clean(t, None)


@asynccontextmanager
async def silent_server() -> AsyncIterator[Multiaddr]:
    """A TCP server that accepts and then says nothing (a relay that never answers)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()


async def test_silent_relay_fails_within_the_handshake_timeout() -> None:
    """A relay that accepts TCP but never completes the handshake: bounded, a DialError."""
    t_config = {**ALLOW, "node": NodeConfig(handshake_timeout=0.2)}
    async with silent_server() as addr, networks(t_config, RELAY) as (t, r):
        error = await relayed_listen_error(t, r.peer_id, addr)
        assert isinstance(error, DialError), repr(error)
        assert_left_clean(t, r.peer_id)
        await assert_still_works(t, r)


async def test_relay_refusing_reservations_fails_with_reservation_refused() -> None:
    refusing = {**ALLOW, "relay_server": RelayServerConfig(max_reservations=0)}
    async with networks(ALLOW, refusing, RELAY) as (t, r, good):
        relay_addr = await listen(r)
        error = await relayed_listen_error(t, r.peer_id, relay_addr)
        assert isinstance(error, ReservationRefusedError), repr(error)
        assert error.status == Status.RESERVATION_REFUSED
        assert error.status == 200
        assert "RESERVATION_REFUSED (200)" in str(error), str(error)
        assert r.relay_server is not None and r.relay_server.reservations == {}
        assert_left_clean(t, r.peer_id)
        await assert_still_works(t, good)


async def test_peer_without_relay_server_fails_naming_the_hop_protocol() -> None:
    """A peer that is not a relay (relay server off, the default) does not offer the hop
    protocol: the reservation fails with a DialError naming the protocol."""
    async with networks(ALLOW, ALLOW, RELAY) as (t, plain, good):
        assert plain.relay_server is None
        plain_addr = await listen(plain)
        error = await relayed_listen_error(t, plain.peer_id, plain_addr)
        assert isinstance(error, DialError), repr(error)
        assert HOP_PROTOCOL_ID in str(error), str(error)
        assert_left_clean(t, plain.peer_id)
        # The plain peer stays reachable and unharmed: the failure was the protocol only.
        assert plain.listeners() and plain.relay_client is not None
        await assert_still_works(t, good)
