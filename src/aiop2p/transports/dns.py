"""Resolve ``/dns``, ``/dns4``, ``/dns6`` and ``/dnsaddr`` multiaddrs to dialable ones.

- ``/dns*/<name>/...`` goes through the system resolver (``getaddrinfo``), so
  ``/etc/hosts`` works (``/dns4/localhost/tcp/4001``); one address per IP, the rest of
  the address kept.  A TLS WebSocket (``/wss``, ``/tls/ws``) keeps its name as
  ``/tls/sni/<name>/ws``, so the certificate is still checked against the name.
- ``/dnsaddr/<name>`` reads the TXT records of ``_dnsaddr.<name>`` (values
  ``dnsaddr=<multiaddr>``), recursively up to ``max_depth``; with a trailing
  ``/p2p/<id>`` only results ending in that id are kept.

Every lookup is bounded (depth, result count); failures raise :class:`DialError`
naming the name, unless some other branch produced addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import dns.asyncresolver
import dns.exception
import dns.rdtypes.ANY.TXT
import dns.resolver

from ..errors import DialError, InvalidArgumentError, InvalidMultiaddrError
from ..multiaddr import Multiaddr

__all__ = ["DNSADDR_PREFIX", "is_resolvable", "resolve"]

DNSADDR_PREFIX = "_dnsaddr."
_TXT_KEY = "dnsaddr="
_NAME_FAMILIES = {"dns": 0, "dns4": socket.AF_INET, "dns6": socket.AF_INET6}


def is_resolvable(addr: Multiaddr) -> bool:
    """Whether ``addr`` starts with a name that :func:`resolve` would look up."""
    names = addr.protocol_names()
    return bool(names) and (names[0] in _NAME_FAMILIES or names[0] == "dnsaddr")


async def resolve(
    addr: Multiaddr,
    *,
    max_depth: int = 8,
    max_results: int = 32,
    resolver: dns.asyncresolver.Resolver | None = None,
) -> list[Multiaddr]:
    """Dialable addresses for ``addr`` (``[addr]`` itself if it names no DNS name).

    ``resolver`` serves the TXT lookups of ``/dnsaddr``; by default the one configured
    in ``/etc/resolv.conf``.  ``/dns*`` names always use the system resolver.
    """
    if max_depth < 1 or max_results < 1:
        raise InvalidArgumentError("max_depth and max_results must be positive")
    found: list[Multiaddr] = []
    causes: dict[str, BaseException] = {}
    state = _Resolution(max_depth, max_results, resolver, found, causes)
    await state.walk(addr, None if addr.peer_id is None else str(addr.peer_id), 0)
    if not found:
        raise DialError(f"{addr} resolved to no address", causes)
    return found


class _Resolution:
    def __init__(
        self,
        max_depth: int,
        max_results: int,
        resolver: dns.asyncresolver.Resolver | None,
        found: list[Multiaddr],
        causes: dict[str, BaseException],
    ) -> None:
        self.max_depth = max_depth
        self.max_results = max_results
        self.resolver = resolver
        self.found = found
        self.causes = causes

    def add(self, addr: Multiaddr, peer: str | None) -> None:
        if len(self.found) >= self.max_results or addr in self.found:
            return
        if peer is not None and (addr.peer_id is None or str(addr.peer_id) != peer):
            return
        self.found.append(addr)

    async def walk(self, addr: Multiaddr, peer: str | None, depth: int) -> None:
        parts = addr.components()
        if not parts:
            return
        proto, name = parts[0]
        if proto == "dnsaddr" and name is not None:
            if depth >= self.max_depth:
                self.causes[str(addr)] = DialError(
                    f"/dnsaddr/{name}: nested deeper than {self.max_depth} levels"
                )
                return
            try:
                records = await self._txt(name)
            except DialError as exc:
                self.causes[str(addr)] = exc
                return
            for record in records:
                if len(self.found) >= self.max_results:
                    return
                record_peer = record.peer_id
                if peer is not None and record_peer is not None and str(record_peer) != peer:
                    continue  # another peer's address: prune the branch early
                await self.walk(record, peer, depth + 1)
        elif proto in _NAME_FAMILIES and name is not None:
            try:
                ips = await _lookup(name, _NAME_FAMILIES[proto])
            except DialError as exc:
                self.causes[str(addr)] = exc
                return
            rest = _keep_tls_name(parts[1:], name)
            for ip in ips:
                self.add(Multiaddr(f"/ip{ip.version}/{ip}{rest}"), peer)
        else:
            self.add(addr, peer)

    async def _txt(self, name: str) -> list[Multiaddr]:
        qname = DNSADDR_PREFIX + name
        try:
            resolver = self.resolver or dns.asyncresolver.Resolver()
            answer = await resolver.resolve(qname, "TXT", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            raise DialError(f"/dnsaddr/{name}: {qname} does not exist") from exc
        except dns.exception.DNSException as exc:
            raise DialError(f"/dnsaddr/{name}: TXT lookup of {qname} failed: {exc}") from exc
        records: list[Multiaddr] = []
        for rdata in answer.rrset or ():
            assert isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
            text = b"".join(rdata.strings).decode("utf-8", "replace")
            if not text.startswith(_TXT_KEY):
                continue  # other keys (py-libp2p's mDNS writes dnsaddr1=...) are not ours
            try:
                records.append(Multiaddr(text[len(_TXT_KEY) :]))
            except InvalidMultiaddrError:
                continue
        if not records:
            raise DialError(f"/dnsaddr/{name}: no dnsaddr= TXT record at {qname}")
        return records


async def _lookup(name: str, family: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(name, None, family=family, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DialError(f"cannot resolve {name!r}: {exc}") from exc
    ips: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, None] = {}
    for info in infos:
        host = str(info[4][0]).split("%", 1)[0]
        ips[ipaddress.ip_address(host)] = None
    if not ips:
        raise DialError(f"cannot resolve {name!r}: no address")
    return list(ips)


def _keep_tls_name(parts: tuple[tuple[str, str | None], ...], name: str) -> str:
    """The text of ``parts`` with ``/wss`` and ``/tls/ws`` rewritten to carry ``/sni/<name>``,
    so that TLS still verifies the name once the host is an IP."""
    out: list[tuple[str, str | None]] = []
    for i, (proto, value) in enumerate(parts):
        if proto == "wss":
            out += [("tls", None), ("sni", name), ("ws", None)]
        elif proto == "tls" and i + 1 < len(parts) and parts[i + 1][0] == "ws":
            out += [("tls", None), ("sni", name)]
        else:
            out.append((proto, value))
    return "".join(f"/{p}" if v is None else f"/{p}/{v}" for p, v in out)
