"""Two private LANs behind masquerading NAT routers, and a public segment with a relay.

::

    LAN a 10.77.1.0/24            public 10.77.0.0/24             LAN b 10.77.2.0/24
      host a .2 ── router na .254 | .1 ──  relay .10  ── .2 | .254 router nb ── host b .2

Each router masquerades what leaves its public interface (nftables ``nat`` table) and,
like a home router, drops what arrives there unsolicited (``ct state`` filter on input
and forward): only replies to connections opened from inside get in.  Hosts route by
default through their router; the relay has only its own subnet, so nothing on the public
segment can reach a private LAN.  The "public" segment uses a private range: it exists
only inside the namespaces.  Built on :class:`Topology` (unique names, everything removed
by :meth:`Topology.destroy`).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from .topology import IP, Host, Topology, netns_unavailable_reason

NFT = shutil.which("nft")
PUBLIC = "10.77.0"
LAN_A = "10.77.1"
LAN_B = "10.77.2"

_NAT_RULES = """
table ip nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{public}" masquerade
    }}
}}
table inet filter {{
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "{public}" ct state established,related accept
        iifname "{public}" drop
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "{public}" ct state established,related accept
        iifname "{public}" drop
    }}
}}
"""


def nat_unavailable_reason() -> str | None:
    reason = netns_unavailable_reason()
    if reason is not None:
        return reason
    if NFT is None:
        return "the `nft` command (nftables) is missing"
    return None


def run_in(host: Host, *argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(host.command(*argv), input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {host.namespace}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class NatLab:
    topology: Topology
    relay: Host
    a: Host
    b: Host
    router_a: Host
    router_b: Host

    @property
    def relay_ip(self) -> str:
        return f"{PUBLIC}.10"

    @property
    def router_a_public(self) -> str:
        return f"{PUBLIC}.1"

    @property
    def router_b_public(self) -> str:
        return f"{PUBLIC}.2"

    def conntrack(self, router: Host) -> str:
        """The router's NAT table as the kernel sees it (for failure reports)."""
        done = subprocess.run(
            router.command("cat", "/proc/net/nf_conntrack"), capture_output=True, text=True
        )
        return done.stdout if done.returncode == 0 else done.stderr

    def symmetric(self, router: Host, on: bool) -> None:
        """Make ``router`` a symmetric NAT (``masquerade random``: each connection leaves
        from a random port, so the port peers observed is not the one a hole-punch dial
        uses and no punch can work), or a port-preserving one again."""
        assert NFT is not None
        run_in(router, NFT, "flush", "chain", "ip", "nat", "postrouting")
        rule = ["oifname", "eth1", "masquerade", *(["random"] if on else [])]
        run_in(router, NFT, "add", "rule", "ip", "nat", "postrouting", *rule)

    def destroy(self) -> None:
        self.topology.destroy()


def _nat_router(topo: Topology, name: str, lan: str, public_octet: int) -> Host:
    router = topo.add_router(name, {lan: 254, "pub": public_octet})
    # eth0 is the LAN side, eth1 the public side (add_router numbers them in order).
    assert NFT is not None
    run_in(router, NFT, "-f", "-", stdin=_NAT_RULES.format(public="eth1"))
    return router


def build_nat_lab() -> NatLab:
    """Make the lab; on any failure what was made is removed before re-raising."""
    assert IP is not None
    topo = Topology()
    try:
        topo.add_lan("pub", PUBLIC)
        topo.add_lan("a", LAN_A)
        topo.add_lan("b", LAN_B)
        relay = topo.add_host("relay", "pub", 10)
        router_a = _nat_router(topo, "na", "a", 1)
        router_b = _nat_router(topo, "nb", "b", 2)
        a = topo.add_host("a", "a", 2, gateway=254)
        b = topo.add_host("b", "b", 2, gateway=254)
        return NatLab(topo, relay, a, b, router_a, router_b)
    except BaseException:
        topo.destroy()
        raise
