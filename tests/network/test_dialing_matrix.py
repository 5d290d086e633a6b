"""The seed's dialing matrix on circuit relay v2.

A source S dials a target T while a relay R (a relay *server* here: compat: circuit relay v2
turns relaying off by default) may carry the connection.  What T does (P: listens on TCP, L: listens
through R) and what S knows (KD: a direct address of T, KR: T's relayed address, KA: R's
address) and S's relay mode decide whether ``connect_peer`` succeeds — and, because S dials
its candidates one after the other in address-book order (docs/compat.md), in which order S and T
see their connections established.

The randomised run draws like the seed (``rb()`` = a fair coin, mode = a random byte
mod 10); it prints its seed and ``AIOP2P_TEST_SEED=<seed>`` replays it.  The deterministic
table runs every one of the 96 combinations once, so every branch of the success
condition is covered on every run.

Relay v2 facts this relies on (no relaxation of the seed's event order was needed):

* the relay only relays to a peer holding a reservation, which is exactly L; without it
  the relayed dial fails with ``CircuitRefusedError`` status NO_RESERVATION after S has
  connected to R (so S still reports ``ConnectionEstablished(R)``, as in the seed);
* T's connection to R exists from the reservation (``start_relayed_listening`` returns
  only after STATUS OK), so ``expect_conn(T.events, R)`` comes first on T, as in v1;
* T's relayed address via R is the same multiaddr whether S was told it (KR), derives it
  from the dialing relay (KA, fallback) or from ``use_specific_relay`` — S dials it once.
"""

from __future__ import annotations

import enum
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from aiop2p.errors import CircuitRefusedError, DialError, NoAddressesError
from aiop2p.events import ConnectionClosed, ConnectionEstablished, ListenerClosed, NewListenAddr
from aiop2p.identity import PeerId
from aiop2p.multiaddr import Multiaddr
from aiop2p.network import Network
from aiop2p.network.address_book import assemble_relayed_addr
from aiop2p.network.firewall import FirewallRules
from aiop2p.protocols.relay_v2 import Status
from aiop2p.services.relay.server import RelayServerConfig

from .conftest import LOOPBACK, drain_events, new_network, next_event, outcome

ITERATIONS = 100
"""Random iterations, as in the seed (each creates fresh S and T networks)."""

CONNECTION_TIMEOUT = 0.001
"""The seed's 1 ms idle-connection timeout for S and T (R keeps the default: its side of a
connection must not idle out before S's hop request arrives)."""

SKIP = (NewListenAddr, ConnectionClosed, ListenerClosed)
"""What ``expect_conn`` skips (seed: NewListenAddr, ConnectionClosed, ListenerClosed)."""


class Mode(enum.Enum):
    DEFAULT = "Default"
    USE_SPECIFIC_RELAY = "UseSpecificRelay"
    NO_RELAY = "NoRelay"

    @classmethod
    def from_byte(cls, byte: int) -> Mode:
        """The seed's draw: byte % 10 — 0-3 Default, 4-6 UseSpecificRelay, 7-9 NoRelay."""
        digit = byte % 10
        if digit <= 3:
            return cls.DEFAULT
        return cls.USE_SPECIFIC_RELAY if digit <= 6 else cls.NO_RELAY


@dataclass(frozen=True, slots=True)
class Draw:
    p: bool  # T listens on TCP
    l: bool  # noqa: E741 - the seed's name: T listens through R
    kd: bool  # S knows a direct address of T (unreachable unless P)
    kr: bool  # S knows T's relayed address via R
    ka: bool  # S knows R's address
    mode: Mode

    @classmethod
    def random(cls, rng: random.Random) -> Draw:
        def rb() -> bool:
            return rng.random() < 0.5

        # The seed's order: target first (P, L), then source (KD, KR, KA), then the mode.
        p, l, kd, kr, ka = rb(), rb(), rb(), rb(), rb()  # noqa: E741
        return cls(p, l, kd, kr, ka, Mode.from_byte(rng.randrange(256)))

    @property
    def direct(self) -> bool:
        return self.kd and self.p

    def succeeds(self) -> bool:
        """The seed's resulting success condition."""
        if self.mode is Mode.DEFAULT:
            return self.direct or ((self.kr or self.ka) and self.l)
        if self.mode is Mode.NO_RELAY:
            return self.direct or (self.kr and self.l)
        return (self.ka and self.l) or self.direct or (self.kr and self.l)

    def __str__(self) -> str:
        flags = " ".join(
            f"{name}={int(getattr(self, name.lower()))}" for name in ("P", "L", "KD", "KR", "KA")
        )
        return f"{self.mode.value} {flags}"


def all_draws() -> Iterator[Draw]:
    for mode in Mode:
        for bits in range(32):
            p, l, kd, kr, ka = (bool(bits >> i & 1) for i in range(5))  # noqa: E741
            yield Draw(p, l, kd, kr, ka, mode)


def test_the_draws_cover_every_branch() -> None:
    """The table holds all 96 combinations: in each mode successes by a direct and by a
    relayed connection, and failures; the random mode draw follows the seed's split."""
    draws = list(all_draws())
    assert len(set(draws)) == 96
    for mode in Mode:
        mine = [d for d in draws if d.mode is mode]
        assert any(d.succeeds() and d.direct for d in mine)
        assert any(d.succeeds() and not d.direct for d in mine)
        assert any(not d.succeeds() for d in mine)
    assert [Mode.from_byte(b).value for b in (0, 3, 4, 6, 7, 9, 250, 255)] == [
        "Default",
        "Default",
        "UseSpecificRelay",
        "UseSpecificRelay",
        "NoRelay",
        "NoRelay",
        "Default",
        "UseSpecificRelay",
    ]


def _closed_port() -> int:
    """A loopback TCP port nobody listens on (the seed's ``/ip4/127.0.0.1/tcp/12345``,
    made sure to be unreachable on this machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _peer_config() -> dict[str, Any]:
    """The seed's peer factory: allow-all firewall, mDNS off, 1 ms idle timeout."""
    return {
        "firewall": FirewallRules.allow_all(),
        "mdns": None,
        "connection_timeout": CONNECTION_TIMEOUT,
    }


@dataclass(slots=True)
class Relay:
    net: Network[Any, Any]
    addr: Multiaddr
    unreachable: Multiaddr

    @property
    def peer_id(self) -> PeerId:
        return self.net.peer_id


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    generous = RelayServerConfig(
        max_reservations=1024,
        max_reservations_per_ip=1024,
        max_circuits=1024,
        max_circuits_per_peer=64,
        circuit_duration_seconds=0,
        circuit_data_bytes=0,
    )
    async with new_network(firewall=FirewallRules.allow_all(), relay_server=generous) as net:
        addr = await net.start_listening(LOOPBACK)
        listeners = net.listeners()
        assert len(listeners) == 1
        assert listeners[0].uses_relay is None and addr in listeners[0].addrs
        # R's events receiver is dropped in the seed: nobody reads them here.
        net.events().close_receiver()
        yield Relay(net, addr, Multiaddr(f"/ip4/127.0.0.1/tcp/{_closed_port()}"))


async def expect_conn(net: Network[Any, Any], peer: PeerId, who: str) -> ConnectionEstablished:
    """The seed's ``expect_conn``: the next event, skipping listener noise and closed
    connections, is ``ConnectionEstablished`` with ``peer``."""
    event: ConnectionEstablished = await next_event(net, ConnectionEstablished, skip=SKIP)
    assert event.peer == peer, f"{who}: connection established with {event.peer}, wanted {peer}"
    return event


def remaining_connections(net: Network[Any, Any]) -> list[PeerId]:
    return [e.peer for e in drain_events(net) if isinstance(e, ConnectionEstablished)]


async def run_iteration(relay: Relay, draw: Draw) -> None:
    r = relay.peer_id
    relay_addr = relay.addr
    async with new_network(**_peer_config()) as s, new_network(**_peer_config()) as t:
        t_relayed = assemble_relayed_addr(t.peer_id, r, relay_addr)

        # -- configure, in the seed's order ------------------------------------------
        t_addr: Multiaddr | None = None
        if draw.p:
            t_addr = await t.start_listening(LOOPBACK)
            listeners = t.listeners()
            assert len(listeners) == 1
            assert listeners[0].uses_relay is None and t_addr in listeners[0].addrs
        if draw.l:
            t_rel = await t.start_relayed_listening(r, relay_addr)
            assert t_rel == t_relayed
            listeners = t.listeners()
            assert len(listeners) == (2 if draw.p else 1)
            via_r = [lst for lst in listeners if lst.uses_relay == r]
            assert len(via_r) == 1 and t_rel in via_r[0].addrs
        if draw.kd:
            s.add_address(t.peer_id, t_addr if t_addr is not None else relay.unreachable)
        if draw.kr:
            s.add_address(t.peer_id, t_relayed)
        if draw.ka:
            s.add_address(r, relay_addr)
        known_relay_addr = s.add_dialing_relay(r, None)
        assert (known_relay_addr is not None) == draw.ka
        if draw.mode is Mode.NO_RELAY:
            s.set_relay_fallback(t.peer_id, False)
        elif draw.mode is Mode.USE_SPECIFIC_RELAY:
            specific = s.use_specific_relay(t.peer_id, r, True)
            assert specific == (t_relayed if draw.ka else None)

        # -- dial and verify -------------------------------------------------------------
        res = await outcome(s.connect_peer(t.peer_id))

        if draw.l:
            await expect_conn(t, r, "T (relayed listening)")

        async def try_direct() -> bool:
            if not draw.direct:
                return False
            await expect_conn(s, t.peer_id, "S (direct)")
            await expect_conn(t, s.peer_id, "T (direct)")
            return True

        async def expect_relayed(already_connected: bool) -> bool:
            if not already_connected:
                await expect_conn(s, r, "S (relay before relayed dial)")
            if not draw.l:
                return False
            await expect_conn(s, t.peer_id, "S (relayed)")
            await expect_conn(t, s.peer_id, "T (relayed)")
            return True

        # Which path connected (None: none did); evaluated exactly as the seed does,
        # short-circuits included (they decide which events are read).
        path: str | None = None
        if draw.mode is Mode.NO_RELAY:
            if await try_direct():
                path = "direct"
            elif draw.kr and await expect_relayed(False):
                path = "relayed"
        elif draw.mode is Mode.DEFAULT:
            if await try_direct():
                path = "direct"
            elif (draw.kr or draw.ka) and await expect_relayed(False):
                path = "relayed"
        else:
            k = draw.ka
            if k and await expect_relayed(False):
                path = "relayed"
            elif await try_direct():
                path = "direct"
            elif draw.kr and await expect_relayed(k):
                path = "relayed"

        assert (path is not None) == draw.succeeds()
        if path is None:
            assert isinstance(res, DialError), f"connect_peer should have failed, got {res!r}"
            _check_failure(res, draw, t_relayed)
        else:
            assert isinstance(res, Multiaddr), f"connect_peer failed: {res!r}"
            # The address connect_peer reports is the path that worked.
            assert res.is_circuit == (path == "relayed"), res
            if path == "relayed":
                assert res == t_relayed
            else:
                assert t_addr is not None and res.without_peer_id() == t_addr

        # Stronger than the seed: nobody else was contacted.  S reports its connections
        # before connect_peer returns, so whatever is queued now is everything S did —
        # e.g. with Default and a working direct address the relay is never contacted.
        assert remaining_connections(s) == [], "S contacted more peers than expected"
        assert remaining_connections(t) == [], "T saw more connections than expected"


def _check_failure(res: DialError, draw: Draw, t_relayed: Multiaddr) -> None:
    tried_relayed = draw.kr or (draw.ka and draw.mode is not Mode.NO_RELAY)
    if not draw.kd and not tried_relayed:
        assert isinstance(res, NoAddressesError), res
        return
    assert not isinstance(res, NoAddressesError), res
    # Every candidate was tried once (the relayed address only once, however learned).
    tried = [Multiaddr(a) for a in res.causes]
    assert len(tried) == int(draw.kd) + int(tried_relayed), res
    if tried_relayed:
        cause = res.causes.get(str(t_relayed))
        assert cause is not None, res
        # v2: R relays only to a peer holding a reservation; T has none without L.
        assert isinstance(cause, CircuitRefusedError), cause
        assert cause.status == Status.NO_RESERVATION


@pytest.mark.timeout(60)
@pytest.mark.parametrize("draw", list(all_draws()), ids=str)
async def test_dialing_every_combination(relay: Relay, draw: Draw) -> None:
    await run_iteration(relay, draw)


@pytest.mark.timeout(90)
async def test_dialing_random_matrix(relay: Relay) -> None:
    seed_text = os.environ.get("AIOP2P_TEST_SEED")
    seed = int(seed_text) if seed_text else random.SystemRandom().randrange(2**32)
    print(f"D dialing seed: {seed} (AIOP2P_TEST_SEED={seed} replays it)")
    rng = random.Random(seed)
    started = time.monotonic()
    for iteration in range(ITERATIONS):
        draw = Draw.random(rng)
        try:
            await run_iteration(relay, draw)
        except BaseException as exc:
            exc.add_note(
                f"D dialing: seed {seed} (AIOP2P_TEST_SEED={seed}), iteration {iteration}, "
                f"draw {draw}"
            )
            raise
    # The seed's budget for the whole test.
    assert time.monotonic() - started < 60, f"{ITERATIONS} iterations took too long"
