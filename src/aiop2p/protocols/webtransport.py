"""libp2p WebTransport, sans-IO: addresses, certificates, their rotation, the session.

Follows libp2p ``webtransport/README.md``.  A browser reaches a listener that has no
domain and no CA-signed certificate through the hashes of its self-signed certificates,
announced in the multiaddr (``/ip4/…/udp/N/quic-v1/webtransport/certhash/<multibase
multihash>``).  Browsers accept such a certificate only if it is ECDSA (not RSA), valid
at most 14 days and carries an X.509v3 extension (a subjectAltName here).

Rotation (:class:`CertificateRotation`): certificate *i* covers period *i* of
:data:`CERT_PERIOD_SECONDS` counted from the listener's start, widened by
:data:`CERT_MARGIN_SECONDS` on both sides (for clock skew and the hand-over), so it is
valid ``period + 2 * margin`` < 14 days.  The listener serves the certificate of the
current period and announces it with the next one; when a period ends the next becomes
current and a new next is made.  A dialler holding an address from the previous period
still connects (the certificate served now is the one announced as next).  In the Noise
handshake the listener also lists the previous certificate (the spec's "recently used").

The session: the client sends an extended CONNECT for :data:`PATH` with
``type=noise``; the first bidirectional stream it opens carries Noise XX with the client
as initiator; the responder's payload lists its certhashes
(``webtransport_certhashes``), and the client checks that the hash of the certificate
it was served is among them.  Later WebTransport streams are libp2p streams.

Pure: keys, serial numbers and times are arguments.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .._wire import multibase
from ..errors import CerthashMismatchError, InvalidArgumentError, InvalidMultiaddrError
from ..identity import PeerId
from ..multiaddr import Multiaddr

__all__ = [
    "ALPN",
    "CERT_MARGIN_SECONDS",
    "CERT_PERIOD_SECONDS",
    "MAX_CERTHASHES",
    "PATH",
    "CertificateRotation",
    "WebTransportTarget",
    "certhash",
    "check_certhashes",
    "make_webtransport_certificate",
    "parse_webtransport_addr",
    "session_path_ok",
    "webtransport_addr",
]

ALPN: Final = "h3"
PATH: Final = "/.well-known/libp2p-webtransport?type=noise"
"""The session request's ``:path``: the endpoint the spec fixes, with the handshake type."""
CERT_PERIOD_SECONDS: Final = 12 * 24 * 3600.0
"""How long each certificate is the one served."""
CERT_MARGIN_SECONDS: Final = 3600.0
"""Validity added before and after a certificate's period (clock skew, hand-over)."""
MAX_CERT_VALID_SECONDS: Final = 14 * 24 * 3600.0
"""What browsers accept (W3C WebTransport ``serverCertificateHashes``)."""
MAX_CERTHASHES: Final = 8
"""Certhashes read from a multiaddr at most."""
_SHA2_256: Final = 0x12
_SHA2_256_PREFIX: Final = bytes((_SHA2_256, 32))


def certhash(certificate: x509.Certificate) -> bytes:
    """The certificate's multihash: SHA-256 over its DER encoding."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    return _SHA2_256_PREFIX + hashlib.sha256(der).digest()


@dataclass(frozen=True, slots=True)
class WebTransportTarget:
    """A parsed ``/ip4|ip6/<ip>/udp/<port>/quic-v1/webtransport[/certhash/…][/p2p/…]``."""

    ip: str
    port: int
    ip_version: int
    certhashes: tuple[bytes, ...]
    """SHA-256 multihashes, at most :data:`MAX_CERTHASHES`."""
    peer: PeerId | None


def parse_webtransport_addr(addr: Multiaddr) -> WebTransportTarget | None:
    """The target ``addr`` names, None if it is no WebTransport address.

    Raises :class:`InvalidMultiaddrError` for a WebTransport address whose certhashes
    we cannot check (not SHA-256, or too many).
    """
    names = addr.protocol_names()
    if names[:1] not in (("ip4",), ("ip6",)) or names[1:4] != ("udp", "quic-v1", "webtransport"):
        return None
    rest = names[4:]
    if rest[-1:] == ("p2p",):
        rest = rest[:-1]
    if any(name != "certhash" for name in rest):
        return None
    hashes: list[bytes] = []
    for name, value in addr.components():
        if name != "certhash":
            continue
        assert value is not None
        if len(hashes) >= MAX_CERTHASHES:
            raise InvalidMultiaddrError(f"more than {MAX_CERTHASHES} certhashes in {addr}")
        raw = multibase.decode(value)
        if len(raw) != 34 or not raw.startswith(_SHA2_256_PREFIX):
            raise InvalidMultiaddrError(f"certhash {value} is not a SHA-256 multihash")
        hashes.append(raw)
    ip, port = addr.value_for(names[0]), addr.value_for("udp")
    assert ip is not None and port is not None
    return WebTransportTarget(
        ip, int(port), 4 if names[0] == "ip4" else 6, tuple(hashes), addr.peer_id
    )


def webtransport_addr(ip: str, port: int, certhashes: Sequence[bytes] = ()) -> Multiaddr:
    """``/ip4|ip6/<ip>/udp/<port>/quic-v1/webtransport/certhash/…`` (base64url hashes)."""
    proto = "ip4" if ipaddress.ip_address(ip).version == 4 else "ip6"
    text = f"/{proto}/{ip}/udp/{port}/quic-v1/webtransport"
    text += "".join(f"/certhash/{multibase.encode('u', h)}" for h in certhashes)
    return Multiaddr(text)


def check_certhashes(
    served: bytes, dialled: Sequence[bytes], announced: Sequence[bytes] | None = None
) -> None:
    """The dialler's checks: the certificate served is one of those it dialled (its
    address pins them, no CA is involved), and, once Noise is done, the one served is
    among those the listener ``announced`` there (binding the TLS session to the
    libp2p identity).

    Raises :class:`CerthashMismatchError`.
    """
    if served not in dialled:
        raise CerthashMismatchError(
            "the WebTransport listener's certificate matches none of the address's certhashes"
        )
    if announced is not None and served not in announced:
        raise CerthashMismatchError(
            "the listener's Noise handshake does not announce the certificate it served"
        )


def session_path_ok(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """None if ``headers`` are the libp2p WebTransport session request, else why not."""
    fields: dict[bytes, bytes] = {}
    for name, value in headers:
        if name.startswith(b":"):
            if name in fields:
                return f"repeated {name.decode(errors='replace')}"
            fields[name] = value
    if fields.get(b":method") != b"CONNECT" or fields.get(b":protocol") != b"webtransport":
        return "not a WebTransport CONNECT"
    if fields.get(b":path") != PATH.encode():
        return "not the libp2p WebTransport endpoint"
    return None


def make_webtransport_certificate(
    key: ec.EllipticCurvePrivateKey,
    *,
    not_before: float,
    not_after: float,
    serial_number: int,
) -> x509.Certificate:
    """A self-signed certificate a browser accepts for ``serverCertificateHashes``:
    ECDSA P-256, SHA-256 signature, a subjectAltName, valid at most 14 days."""
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidArgumentError("a WebTransport certificate key must be ECDSA P-256")
    if not 0 < not_after - not_before <= MAX_CERT_VALID_SECONDS:
        raise InvalidArgumentError("a WebTransport certificate is valid at most 14 days")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "libp2p")])
    utc = datetime.UTC
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial_number)
        .not_valid_before(datetime.datetime.fromtimestamp(not_before, utc))
        .not_valid_after(datetime.datetime.fromtimestamp(not_after, utc))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("libp2p")]), critical=False)
        .sign(key, hashes.SHA256())
    )


@dataclass(frozen=True, slots=True)
class _Served:
    index: int
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    hash: bytes


class CertificateRotation:
    """Which certificates a listener holds, serves and announces at a given time.

    The driver asks :meth:`missing` at each use with its clock's time, makes each
    missing certificate for :meth:`window` with a fresh key (:meth:`add`), then reads
    :meth:`serving`, :meth:`announced` and :meth:`noise_certhashes`.  Certificates of
    periods before the previous one are dropped.  A clock that goes back is clamped to
    the first period.
    """

    def __init__(
        self,
        *,
        start: float,
        period_seconds: float = CERT_PERIOD_SECONDS,
        margin_seconds: float = CERT_MARGIN_SECONDS,
    ) -> None:
        if period_seconds <= 0 or margin_seconds < 0:
            raise InvalidArgumentError("certificate period must be positive, margin >= 0")
        if period_seconds + 2 * margin_seconds > MAX_CERT_VALID_SECONDS:
            raise InvalidArgumentError("certificate period + 2 margins exceeds 14 days")
        self._start = start
        self._period = period_seconds
        self._margin = margin_seconds
        self._held: dict[int, _Served] = {}

    def index_at(self, now: float) -> int:
        """The period ``now`` falls in."""
        return max(0, int((now - self._start) // self._period))

    def window(self, index: int) -> tuple[float, float]:
        """``(not_before, not_after)`` of certificate ``index``."""
        begin = self._start + index * self._period
        return begin - self._margin, begin + self._period + self._margin

    def missing(self, now: float) -> list[int]:
        """Periods whose certificate must be made now: the current and the next."""
        current = self.index_at(now)
        for old in [i for i in self._held if i < current - 1]:
            del self._held[old]
        return [i for i in (current, current + 1) if i not in self._held]

    def add(
        self, index: int, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
    ) -> None:
        self._held[index] = _Served(index, certificate, key, certhash(certificate))

    def _get(self, index: int) -> _Served:
        served = self._held.get(index)
        if served is None:
            raise InvalidArgumentError(f"no certificate for period {index}: call missing()")
        return served

    def serving(self, now: float) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """The certificate (and its key) a connection accepted at ``now`` gets."""
        served = self._get(self.index_at(now))
        return served.certificate, served.key

    def announced(self, now: float) -> tuple[bytes, bytes]:
        """The hashes of the current and the next certificate (for the multiaddr)."""
        current = self.index_at(now)
        return self._get(current).hash, self._get(current + 1).hash

    def noise_certhashes(self, now: float) -> tuple[bytes, ...]:
        """What the Noise extension lists: the announced hashes and the previous one."""
        current = self.index_at(now)
        previous = self._held.get(current - 1)
        announced = self.announced(now)
        return announced if previous is None else (*announced, previous.hash)
