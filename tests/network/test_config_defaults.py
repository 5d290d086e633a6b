"""The seed's mDNS configuration test and the builder defaults.

The mDNS test needs real multicast, so it runs inside a throw-away network namespace (one host on a
virtual LAN, see ``tests/netns/topology.py``): nothing multicasts on this machine's own
interfaces.  The relay configuration test is ``test_relay_client_off.py``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator

import pytest

from aiop2p.config import ConnectionLimits
from aiop2p.errors import InvalidArgumentError
from aiop2p.network import DEFAULT_PROTOCOL, Framing, Network, NetworkConfig
from aiop2p.network.firewall import FirewallRules

from ..netns.topology import Host, Topology, netns_unavailable_reason

pytestmark = pytest.mark.timeout(60)


def test_config_defaults_follow_the_seed() -> None:
    config = NetworkConfig()
    assert (config.request_timeout, config.firewall_timeout) == (10.0, 10.0)
    # The seed's 10 s idle timeout raced js-libp2p's 10 s pings (issue 8): 60 s instead.
    assert config.connection_timeout == 60.0
    assert config.protocols == (DEFAULT_PROTOCOL,) == ("/p2p/1.0.0",)
    assert config.framing is Framing.LENGTH_PREFIXED
    assert config.mdns is not None, "mDNS is on by default, as in the seed"
    assert config.connection_limits == ConnectionLimits(), "compat: no connection limits by default"
    # Keyword overrides of NetworkConfig fields; unknown ones are refused.
    net: Network[None, None] = Network(
        firewall=FirewallRules.allow_all(), mdns=None, firewall_timeout=1.0
    )
    assert net.config.mdns is None
    assert net.config.firewall_timeout == 1.0 and net.config.connection_timeout == 60.0
    with pytest.raises(InvalidArgumentError, match="unknown Network option"):
        Network(mdns=None, no_such_option=1)


C1_SCRIPT = """
import asyncio, json
from aiop2p.errors import P2PError
from aiop2p.events import PeerDiscovered
from aiop2p.network import Network
from aiop2p.network.firewall import FirewallRules

async def main():
    def peer(**kw):
        net = Network(firewall=FirewallRules.allow_all(), **kw)
        return net
    result = {}
    async with peer(mdns=None) as a, peer(mdns=None) as b, peer() as c, peer() as d:
        for net in (a, b, c, d):
            net.close_firewall_requests()
            net.requests().close_receiver()
        for net in (c, d):
            await net.start_listening("/ip4/0.0.0.0/tcp/0")
        # Positive control: the two mDNS peers find each other on this LAN ...
        async def discovers(net, peer):
            async for event in net.events():
                if isinstance(event, PeerDiscovered) and event.peer == peer:
                    return

        async with asyncio.timeout(10):
            await asyncio.gather(discovers(c, d.peer_id), discovers(d, c.peer_id))
        result["c_sees_d"] = [str(x) for x in c.get_addrs(d.peer_id)]
        result["c_to_d"] = str(await c.connect_peer(d.peer_id))
        # ... while a peer without mDNS never learns their LAN addresses.
        for name, dialer in (("a", a), ("b", b)):
            for target_name, target in (("c", c), ("d", d)):
                try:
                    await dialer.connect_peer(target.peer_id)
                    outcome = "connected"
                except P2PError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                result[f"{name}_to_{target_name}"] = outcome
    print(json.dumps(result))

asyncio.run(main())
"""

_REASON = netns_unavailable_reason()


@pytest.fixture(scope="module")
def lan_host() -> Iterator[Host]:
    if _REASON is not None:
        pytest.fail(f"the mDNS test needs network namespaces: {_REASON}")
    topo = Topology()
    try:
        topo.add_lan("c", "10.62.1")
        yield topo.add_host("h1", "c", 1)
    finally:
        topo.destroy()


async def test_mdns_peers_find_each_other_and_peers_without_mdns_learn_nothing(
    lan_host: Host,
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *lan_host.command(sys.executable, "-c", C1_SCRIPT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(40):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-3000:]
    result = json.loads(out)
    assert result["c_sees_d"] and all("/ip4/10.62.1.1/tcp/" in a for a in result["c_sees_d"])
    assert result["c_to_d"].startswith("/ip4/10.62.1.1/tcp/")
    for dialer in "ab":
        for target in "cd":
            assert result[f"{dialer}_to_{target}"] == (
                "NoAddressesError: No addresses known for peer."
            ), result
