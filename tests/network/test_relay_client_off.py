"""The seed's relay configuration test on circuit relay v2.

The seed's "relay off" becomes ``relay_client=False`` (compat: circuit relay v2 splits
relay support into a client, on by default, and a server, off by default); R is a relay
server.  Every relay call of P then fails with ``RelayNotSupportedError`` and listening
on a relayed address with ``MultiaddrNotSupportedError`` naming that address.
"""

from __future__ import annotations

from typing import Any

import pytest

from aiop2p.errors import MultiaddrNotSupportedError, RelayNotSupportedError
from aiop2p.identity import KeyPair
from aiop2p.network.address_book import assemble_relayed_addr
from aiop2p.network.firewall import FirewallRules
from aiop2p.services.relay.server import RelayServerConfig

from .conftest import LOOPBACK, listen, networks

pytestmark = pytest.mark.timeout(30)

ALLOW: dict[str, Any] = {"firewall": FirewallRules.allow_all()}


async def test_relay_client_off_refuses_every_relay_call() -> None:
    p_config = {**ALLOW, "relay_client": False}
    r_config = {**ALLOW, "relay_server": RelayServerConfig()}
    async with networks(p_config, r_config) as (p, r):
        assert p.relay_client is None and p.relay_server is None
        assert r.relay_server is not None
        relay_addr = await listen(r)
        p.add_address(r.peer_id, relay_addr)
        relayed = assemble_relayed_addr(p.peer_id, r.peer_id, relay_addr)

        # 1. Plain listening works without the relay client.
        own = await p.start_listening(LOOPBACK)
        assert [listener.addrs for listener in p.listeners()] == [[own]]

        # 2. Relayed listening is refused before anything is dialled.
        with pytest.raises(RelayNotSupportedError, match="Relay Protocol not enabled"):
            await p.start_relayed_listening(r.peer_id, None)
        with pytest.raises(RelayNotSupportedError):
            await p.start_relayed_listening(r.peer_id, relay_addr)

        # 3. No transport listens on a relayed address.
        with pytest.raises(MultiaddrNotSupportedError) as caught:
            await p.start_listening(relayed)
        assert caught.value.addr == relayed
        assert "Multiaddress not supported" in str(caught.value)
        # The relayed listen-address form (without the target) is refused just the same.
        listen_form = relayed.decapsulate("p2p-circuit") / "/p2p-circuit"
        with pytest.raises(MultiaddrNotSupportedError) as caught:
            await p.start_listening(listen_form)
        assert caught.value.addr == listen_form

        # 4. Every relay configuration call is refused.
        random_peer = KeyPair.generate().peer_id
        with pytest.raises(RelayNotSupportedError):
            p.add_dialing_relay(r.peer_id, None)
        with pytest.raises(RelayNotSupportedError):
            p.set_relay_fallback(random_peer, True)
        with pytest.raises(RelayNotSupportedError):
            p.use_specific_relay(random_peer, r.peer_id, True)
        # ... except removing a dialing relay, which the seed never checks either.
        assert p.remove_dialing_relay(r.peer_id) is False

        # Nothing of the refused calls reached the address book or the connections.
        assert p.export_address_info().relays == []
        assert p.get_addrs(random_peer) == []
        assert p.get_addrs(r.peer_id) == [relay_addr]
        assert not p.is_connected(r.peer_id)
        assert len(p.listeners()) == 1 and p.listeners()[0].uses_relay is None
