"""A WebTransport listener's certificates: :class:`CertificateRotation` driven by a clock.

The sans-IO rotation (``protocols.webtransport``) says which certificates must exist at
a time; this driver reads the clock (``time.time`` unless a test injects one), makes
the missing certificates with fresh P-256 keys, and keeps the Noise credentials whose
payload announces the current hashes (re-encoded only when they change).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ..protocols.noise import NoiseCredentials
from ..protocols.webtransport import CertificateRotation, make_webtransport_certificate

__all__ = ["ListenerCertificates"]


class ListenerCertificates:
    """The certificates one WebTransport listener serves and announces."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._rotation = CertificateRotation(start=clock())
        self._credentials: tuple[NoiseCredentials, tuple[bytes, ...], NoiseCredentials] | None
        self._credentials = None

    def _now(self) -> float:
        now = self._clock()
        rotation = self._rotation
        for index in rotation.missing(now):
            not_before, not_after = rotation.window(index)
            key = ec.generate_private_key(ec.SECP256R1())
            serial = int.from_bytes(os.urandom(8), "big") >> 1
            cert = make_webtransport_certificate(
                key, not_before=not_before, not_after=not_after, serial_number=serial
            )
            rotation.add(index, cert, key)
        return now

    def serving(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """The certificate a connection accepted now gets."""
        return self._rotation.serving(self._now())

    def announced(self) -> tuple[bytes, ...]:
        """The certhashes for the listen address: current and next certificate."""
        return self._rotation.announced(self._now())

    def noise_credentials(self, base: NoiseCredentials) -> NoiseCredentials:
        """``base`` (the node's) with the ``webtransport_certhashes`` extension."""
        hashes = self._rotation.noise_certhashes(self._now())
        cached = self._credentials
        if cached is None or cached[0] is not base or cached[1] != hashes:
            cached = self._credentials = (base, hashes, base.with_webtransport_certhashes(hashes))
        return cached[2]
