"""mDNS peer discovery packets (libp2p ``discovery/mdns.md``), sans-IO.

A query asks ``_p2p._udp.local PTR``.  A response answers
``_p2p._udp.local PTR <peer-name>._p2p._udp.local`` and carries, as additional records,
one ``TXT "dnsaddr=<multiaddr>/p2p/<peer id>"`` record per listen address.
``<peer-name>`` is a random lower-case alphanumeric label of 32 to 63 characters; the
randomness is an argument (:func:`peer_name_from_random`).

Packets are encoded and decoded with dnspython's ``dns.message`` (pure Python, no I/O).
:func:`parse_packet` never raises: a packet that is garbage, truncated or simply not
about libp2p peers gives ``None``.  What it tolerates from other implementations:

- TXT records in the answer section (js-libp2p) as well as in the additional section;
- py-libp2p's numbered keys ``dnsaddr1=``, ``dnsaddr2=`` …, any key case;
- the mDNS cache-flush / unicast-response bit in record and question classes;
- SRV, A, AAAA and other records (zeroconf, DNS-SD) — ignored, TXT is authoritative;
- TXT records for ``<name>._p2p._udp.local`` without a PTR in the same packet
  (a response split over several packets, or an answer to a TXT query);
- addresses naming another peer id than the first valid one (dropped), addresses without
  ``/p2p`` (dropped: the spec requires it and the peer id comes from there).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

from ..errors import InvalidArgumentError, P2PError
from ..identity import PeerId
from ..multiaddr import Multiaddr

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "MAX_PACKET_SIZE",
    "MAX_TXT_STRING_SIZE",
    "MDNS_IPV4_GROUP",
    "MDNS_IPV6_GROUP",
    "MDNS_PORT",
    "META_QUERY_NAME",
    "SERVICE_NAME",
    "MdnsPacket",
    "MdnsPeerRecord",
    "MdnsQuery",
    "MdnsResponse",
    "build_meta_response",
    "build_query",
    "build_responses",
    "parse_packet",
    "peer_name_from_random",
]

SERVICE_NAME = "_p2p._udp.local"
META_QUERY_NAME = "_services._dns-sd._udp.local"
MDNS_PORT = 5353
MDNS_IPV4_GROUP = "224.0.0.251"
MDNS_IPV6_GROUP = "ff02::fb"
MAX_PACKET_SIZE = 9000
"""Largest mDNS message, bytes (RFC 6762 §17); larger datagrams are ignored."""
DEFAULT_MAX_PACKET_SIZE = 1400
"""Bytes per response we build: fits an Ethernet MTU without IP fragmentation."""
MAX_TXT_STRING_SIZE = 255
"""A TXT character-string holds at most 255 bytes (RFC 1035); longer addresses are skipped."""

_PEER_NAME_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_MIN_PEER_NAME_LENGTH = 32
_MAX_PEER_NAME_LENGTH = 63
_DNSADDR = "dnsaddr"
_RESPONSE_FLAGS = dns.flags.QR | dns.flags.AA
_PTR = dns.rdatatype.PTR
_TXT = dns.rdatatype.TXT
_ANY = dns.rdatatype.ANY
_SRV = dns.rdatatype.SRV
_IN = dns.rdataclass.IN
_RR_FIXED_SIZE = 10
"""Type, class, TTL and rdata length of a resource record, bytes."""


def peer_name_from_random(random_bytes: bytes) -> str:
    """A peer name: one lower-case alphanumeric character per byte (32 to 63 bytes)."""
    if not _MIN_PEER_NAME_LENGTH <= len(random_bytes) <= _MAX_PEER_NAME_LENGTH:
        raise InvalidArgumentError(
            f"a peer name needs {_MIN_PEER_NAME_LENGTH}..{_MAX_PEER_NAME_LENGTH} random bytes, "
            f"got {len(random_bytes)}"
        )
    return "".join(_PEER_NAME_ALPHABET[b % len(_PEER_NAME_ALPHABET)] for b in random_bytes)


def _service(service_name: str) -> dns.name.Name:
    try:
        return dns.name.from_text(service_name)
    except dns.exception.DNSException as exc:
        raise InvalidArgumentError(f"bad mDNS service name {service_name!r}: {exc}") from exc


def _instance(peer_name: str, service: dns.name.Name) -> dns.name.Name:
    try:
        label = peer_name.encode("ascii")
        return dns.name.Name((label, *service.labels))
    except (UnicodeError, dns.exception.DNSException) as exc:
        raise InvalidArgumentError(f"bad mDNS peer name {peer_name!r}: {exc}") from exc


def build_query(service_name: str = SERVICE_NAME) -> bytes:
    """The "find all peers" query: ``<service-name> PTR``, id 0 as RFC 6762 asks."""
    msg = dns.message.Message(id=0)
    msg.flags = 0
    msg.find_rrset(msg.question, _service(service_name), _IN, _PTR, create=True)
    return msg.to_wire()


def build_responses(
    peer_name: str,
    addrs: Iterable[Multiaddr],
    ttl: int,
    *,
    service_name: str = SERVICE_NAME,
    max_packet_bytes: int = DEFAULT_MAX_PACKET_SIZE,
) -> list[bytes]:
    """Our answer to a query: the PTR plus one TXT record per address (each ending in
    ``/p2p/<id>``), split over as many packets as ``max_packet_bytes`` bytes require, each
    packet self-contained (PTR included).  ``ttl`` seconds; 0 announces our departure.
    Addresses whose ``dnsaddr=`` string exceeds 255 bytes are skipped; no address, no packet.
    """
    if not 0 <= ttl <= 0x7FFFFFFF:
        raise InvalidArgumentError(f"TTL out of range: {ttl}")
    service = _service(service_name)
    instance = _instance(peer_name, service)
    strings: list[bytes] = []
    for addr in addrs:
        text = f"{_DNSADDR}={addr}".encode()
        if len(text) <= MAX_TXT_STRING_SIZE and text not in strings:
            strings.append(text)
    if not strings:
        return []
    ptr = _ptr(instance)
    base = len(_new_response(service, ptr, ttl).to_wire())
    # Upper bound per TXT record: the first owner name in a packet is at most the
    # peer-name label plus a compression pointer to the service name, later ones are a
    # pointer (2 bytes); then the fixed fields and the string's length byte.
    first_name = 1 + len(instance.labels[0]) + 2
    packets: list[bytes] = []
    chunk: list[bytes] = []
    size = base
    for text in strings:
        cost = (2 if chunk else first_name) + _RR_FIXED_SIZE + 1 + len(text)
        if chunk and size + cost > max_packet_bytes:
            packets.append(_render(service, instance, ptr, ttl, chunk))
            chunk, size = [], base
            cost = first_name + _RR_FIXED_SIZE + 1 + len(text)
        chunk.append(text)
        size += cost
    packets.append(_render(service, instance, ptr, ttl, chunk))
    return packets


def _ptr(target: dns.name.Name) -> dns.rdata.Rdata:
    return dns.rdata.from_text(_IN, _PTR, target.to_text())


def _new_response(service: dns.name.Name, ptr: dns.rdata.Rdata, ttl: int) -> dns.message.Message:
    msg = dns.message.Message(id=0)
    msg.flags = _RESPONSE_FLAGS
    msg.find_rrset(msg.answer, service, _IN, _PTR, create=True).add(ptr, ttl)
    return msg


def _render(
    service: dns.name.Name,
    instance: dns.name.Name,
    ptr: dns.rdata.Rdata,
    ttl: int,
    strings: list[bytes],
) -> bytes:
    msg = _new_response(service, ptr, ttl)
    rrset = msg.find_rrset(msg.additional, instance, _IN, _TXT, create=True)
    for text in strings:
        rrset.add(dns.rdtypes.ANY.TXT.TXT(_IN, _TXT, [text]), ttl)
    # No shuffling: the order of our addresses is our preference order.
    return msg.to_wire(want_shuffle=False)


def build_meta_response(ttl: int, *, service_name: str = SERVICE_NAME) -> bytes:
    """Answer to the DNS-SD meta query: ``_services._dns-sd._udp.local PTR <service-name>``."""
    msg = dns.message.Message(id=0)
    msg.flags = _RESPONSE_FLAGS
    rdata = _ptr(_service(service_name))
    msg.find_rrset(msg.answer, dns.name.from_text(META_QUERY_NAME), _IN, _PTR, create=True).add(
        rdata, ttl
    )
    return msg.to_wire()


# -- parsing ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MdnsQuery:
    """A query we may have to answer."""

    wants_peers: bool
    """It asks ``<service-name> PTR`` (or ANY): answer with :func:`build_responses`."""
    wants_meta: bool
    """It asks the DNS-SD meta query: answer with :func:`build_meta_response`."""
    instance_names: frozenset[str]
    """Peer names (lower case) whose TXT/SRV/ANY records it asks for directly."""
    known_answers: tuple[tuple[str, int], ...]
    """(peer name, remaining TTL seconds) of PTR answers the querier already holds; a
    responder may stay silent for its own name while the TTL is above half (RFC 6762 §7.1)."""


@dataclass(frozen=True, slots=True)
class MdnsPeerRecord:
    """One peer announced in a response."""

    peer_name: str
    """The instance label, lower case (random, unrelated to the peer id)."""
    peer_id: PeerId
    addrs: tuple[Multiaddr, ...]
    """Its addresses without the ``/p2p`` suffix, in the announced order, deduplicated."""
    ttl: int
    """Seconds the record stays valid (smallest TTL of the records used); 0 = goodbye."""


@dataclass(frozen=True, slots=True)
class MdnsResponse:
    """A response about libp2p peers (possibly our own)."""

    peers: tuple[MdnsPeerRecord, ...]
    goodbyes: tuple[str, ...]
    """Peer names whose PTR came with TTL 0 but without usable TXT records."""


MdnsPacket = MdnsQuery | MdnsResponse


def parse_packet(
    data: bytes,
    *,
    service_name: str = SERVICE_NAME,
    max_addrs_per_peer: int = 32,
    max_peers_per_packet: int = 32,
) -> MdnsPacket | None:
    """Decode one mDNS datagram; ``None`` if it is malformed or not about libp2p peers.

    Never raises on peer input.  Packets that do not contain the service's first label
    (``_p2p``) nor the meta-query label are rejected before any DNS decoding, which keeps
    a LAN full of unrelated mDNS chatter cheap.
    """
    if not 12 <= len(data) <= MAX_PACKET_SIZE:
        return None
    service = _service(service_name)
    lowered = data.lower()
    is_response = bool(data[2] & 0x80)
    if service.labels[0].lower() not in lowered and (is_response or b"_services" not in lowered):
        return None
    try:
        msg = dns.message.from_wire(data, ignore_trailing=True)
    except Exception:  # dnspython raises many types (DNSException, ValueError, …) on garbage
        return None
    if msg.opcode() != dns.opcode.QUERY:
        return None
    try:
        if msg.flags & dns.flags.QR:
            return _parse_response(msg, service, max_addrs_per_peer, max_peers_per_packet)
        return _parse_query(msg, service)
    except (P2PError, ValueError, UnicodeError, dns.exception.DNSException):
        return None


def _parse_query(msg: dns.message.Message, service: dns.name.Name) -> MdnsQuery | None:
    meta = dns.name.from_text(META_QUERY_NAME)
    wants_peers = wants_meta = False
    instances: set[str] = set()
    for q in msg.question:
        rdtype = q.rdtype
        if q.name == service and rdtype in (_PTR, _ANY):
            wants_peers = True
        elif q.name == meta and rdtype in (_PTR, _ANY):
            wants_meta = True
        elif rdtype in (_TXT, _SRV, _ANY) and _is_instance(q.name, service):
            instances.add(_label(q.name))
    if not (wants_peers or wants_meta or instances):
        return None
    known: list[tuple[str, int]] = []
    for rrset in msg.answer:
        if rrset.rdtype == _PTR and rrset.name == service:
            for rdata in rrset:
                target = rdata.target
                if _is_instance(target, service):
                    known.append((_label(target), rrset.ttl))
    return MdnsQuery(wants_peers, wants_meta, frozenset(instances), tuple(known))


def _is_instance(name: dns.name.Name, service: dns.name.Name) -> bool:
    return len(name.labels) == len(service.labels) + 1 and name.parent() == service


def _label(name: dns.name.Name) -> str:
    return name.labels[0].decode("ascii", "replace").lower()


def _parse_response(
    msg: dns.message.Message,
    service: dns.name.Name,
    max_addrs: int,
    max_peers: int,
) -> MdnsResponse | None:
    ptr_ttl: dict[str, int] = {}
    txts: dict[str, list[tuple[int, list[bytes]]]] = {}
    for rrset in (*msg.answer, *msg.additional):
        rdtype = rrset.rdtype
        if rdtype == _PTR and rrset.name == service:
            for rdata in rrset:
                target = rdata.target
                if _is_instance(target, service):
                    name = _label(target)
                    ptr_ttl[name] = min(rrset.ttl, ptr_ttl.get(name, rrset.ttl))
        elif rdtype == _TXT and _is_instance(rrset.name, service):
            strings = [s for rdata in rrset for s in rdata.strings]
            txts.setdefault(_label(rrset.name), []).append((rrset.ttl, strings))
    peers: list[MdnsPeerRecord] = []
    goodbyes: list[str] = []
    for name in dict.fromkeys([*ptr_ttl, *txts]):
        if len(peers) >= max_peers:
            break
        record = _peer_record(name, ptr_ttl.get(name), txts.get(name, ()), max_addrs)
        if record is not None:
            peers.append(record)
        elif ptr_ttl.get(name) == 0:
            goodbyes.append(name)
    if not peers and not goodbyes:
        return None
    return MdnsResponse(tuple(peers), tuple(goodbyes))


def _peer_record(
    name: str,
    ptr_ttl: int | None,
    txts: Iterable[tuple[int, list[bytes]]],
    max_addrs: int,
) -> MdnsPeerRecord | None:
    peer: PeerId | None = None
    addrs: dict[Multiaddr, None] = {}
    ttl = ptr_ttl
    for record_ttl, strings in txts:
        used = False
        for raw in strings:
            addr = _dnsaddr(raw)
            if addr is None:
                continue
            try:
                pid = addr.peer_id
            except (P2PError, ValueError):
                continue
            if pid is None or (peer is not None and pid != peer):
                continue
            peer = pid
            used = True
            if len(addrs) < max_addrs:
                addrs[addr.without_peer_id()] = None
        if used:
            ttl = record_ttl if ttl is None else min(ttl, record_ttl)
    if peer is None or ttl is None:
        return None
    return MdnsPeerRecord(name, peer, tuple(addrs), ttl)


def _dnsaddr(raw: bytes) -> Multiaddr | None:
    """The multiaddr of a ``dnsaddr=…`` (or py-libp2p ``dnsaddrN=…``) TXT string."""
    key, sep, value = raw.partition(b"=")
    if not sep or not value:
        return None
    key = key.lower()
    if not key.startswith(b"dnsaddr") or not (len(key) == 7 or key[7:].isdigit()):
        return None
    try:
        addr = Multiaddr(value.decode("utf-8"))
    except (P2PError, ValueError):
        return None
    # The peer id must close the address (``…/p2p-circuit`` after it would be a relay's).
    return addr if addr.ends_with_peer_id else None
