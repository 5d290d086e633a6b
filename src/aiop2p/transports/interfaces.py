"""Local interface addresses, to expand a wildcard listen address (0.0.0.0, ::).

A peer told ``/ip4/0.0.0.0/tcp/4001`` cannot dial it; identify must advertise the
concrete addresses.  Linux is read through ``ioctl`` and ``/proc``; elsewhere we fall
back to loopback plus what the host name resolves to.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from functools import lru_cache

from ..multiaddr import Multiaddr

__all__ = ["expand_wildcard", "local_ip_addresses"]

_SIOCGIFADDR = 0x8915


def _ipv4_addresses() -> list[str]:
    found: list[str] = []
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        names = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name in names:
            try:
                packed = fcntl.ioctl(
                    sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15])
                )
            except OSError:
                continue
            found.append(socket.inet_ntoa(packed[20:24]))
    if not found:
        found.append("127.0.0.1")
        try:
            for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
                found.append(str(info[4][0]))
        except OSError:
            pass
    return found


def _ipv6_addresses() -> list[str]:
    found: list[str] = []
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                fields = line.split()
                if not fields:
                    continue
                addr = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
                if not addr.is_link_local:
                    found.append(str(addr))
    except OSError:
        found.append("::1")
    return found


@lru_cache(maxsize=1)
def local_ip_addresses() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(IPv4, IPv6) addresses of this host's interfaces, loopback included."""
    v4 = tuple(dict.fromkeys(_ipv4_addresses()))
    v6 = tuple(dict.fromkeys(_ipv6_addresses()))
    return v4, v6


def expand_wildcard(addr: Multiaddr) -> list[Multiaddr]:
    """Replace an unspecified IP in ``addr`` by each interface address (else ``[addr]``)."""
    unspecified = addr.ip_address
    if unspecified is None or not unspecified.is_unspecified:
        return [addr]
    v4, v6 = local_ip_addresses()
    proto = f"ip{unspecified.version}"
    rest = str(addr)[len(f"/{proto}/{unspecified}") :]
    return [Multiaddr(f"/{proto}/{ip}{rest}") for ip in (v4 if proto == "ip4" else v6)]
