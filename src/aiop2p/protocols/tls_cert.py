"""The libp2p TLS certificate: a self-signed X.509 certificate that carries the host key.

Follows libp2p ``tls/tls.md``.  The certificate is signed by a throwaway key (ECDSA
P-256 here), unrelated to the host key; the host key travels in the libp2p Public Key
Extension (OID ``1.3.6.1.4.1.53594.1.1``) as the DER ``SignedKey`` sequence::

    SignedKey ::= SEQUENCE { publicKey OCTET STRING, signature OCTET STRING }

``publicKey`` is the libp2p ``PublicKey`` protobuf and ``signature`` the host key's
signature over ``"libp2p-tls-handshake:" + SubjectPublicKeyInfo`` of the certificate
key.  :func:`verify_certificate` checks everything the spec asks of a received
certificate and returns the host key it proves, from which the peer id follows.

Pure: the certificate key, serial number and time are arguments.
"""

from __future__ import annotations

import datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from ..errors import HandshakeError, InvalidKeyError, InvalidSignatureError
from ..identity import KeyPair, PublicKey

__all__ = [
    "LIBP2P_EXTENSION_OID",
    "MAX_CERTIFICATE_BYTES",
    "SIGNATURE_PREFIX",
    "certificate_der",
    "make_certificate",
    "verify_certificate",
]

LIBP2P_EXTENSION_OID: Final = x509.ObjectIdentifier("1.3.6.1.4.1.53594.1.1")
SIGNATURE_PREFIX: Final = b"libp2p-tls-handshake:"
MAX_CERTIFICATE_BYTES: Final = 16 * 1024
"""A larger certificate is refused unparsed (one with an RSA-8192 host key is ~3 KiB)."""
_CLOCK_SKEW: Final = datetime.timedelta(hours=1)
_SUBJECT: Final = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "1")])


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def _der(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _der_length(len(content)) + content


def _encode_signed_key(public_key: bytes, signature: bytes) -> bytes:
    return _der(0x30, _der(0x04, public_key) + _der(0x04, signature))


def _read_der(data: bytes, offset: int, tag: int) -> tuple[bytes, int]:
    """One DER element of ``tag`` at ``offset``: its content and the offset after it."""
    if offset + 2 > len(data) or data[offset] != tag:
        raise HandshakeError("libp2p certificate extension: malformed SignedKey")
    first = data[offset + 1]
    offset += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 3 or offset + count > len(data):
            raise HandshakeError("libp2p certificate extension: bad DER length")
        length = int.from_bytes(data[offset : offset + count], "big")
        if length < 0x80 or data[offset] == 0:
            raise HandshakeError("libp2p certificate extension: non-minimal DER length")
        offset += count
    end = offset + length
    if end > len(data):
        raise HandshakeError("libp2p certificate extension: truncated SignedKey")
    return data[offset:end], end


def _decode_signed_key(data: bytes) -> tuple[bytes, bytes]:
    body, end = _read_der(data, 0, 0x30)
    if end != len(data):
        raise HandshakeError("libp2p certificate extension: bytes after SignedKey")
    public_key, offset = _read_der(body, 0, 0x04)
    signature, offset = _read_der(body, offset, 0x04)
    if offset != len(body):
        raise HandshakeError("libp2p certificate extension: extra fields in SignedKey")
    return public_key, signature


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def make_certificate(
    identity: KeyPair,
    certificate_key: ec.EllipticCurvePrivateKey,
    *,
    now: float,
    valid_seconds: float,
    serial_number: int,
) -> x509.Certificate:
    """A certificate for ``identity``, signed by ``certificate_key``.

    ``now`` is Unix time; the certificate is valid from an hour before it (peers' clocks
    differ) to ``valid_seconds`` after it.
    """
    signature = identity.sign(SIGNATURE_PREFIX + _spki(certificate_key.public_key()))
    extension = _encode_signed_key(identity.public_key.to_protobuf(), signature)
    start = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_SUBJECT)
        .issuer_name(_SUBJECT)
        .public_key(certificate_key.public_key())
        .serial_number(serial_number)
        .not_valid_before(start - _CLOCK_SKEW)
        .not_valid_after(start + datetime.timedelta(seconds=valid_seconds))
        .add_extension(x509.UnrecognizedExtension(LIBP2P_EXTENSION_OID, extension), critical=True)
        .sign(certificate_key, hashes.SHA256())
    )


def certificate_der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def verify_certificate(certificate: bytes | x509.Certificate, *, now: float) -> PublicKey:
    """The host key a received certificate proves; :class:`HandshakeError` if it proves none.

    Checks, per the spec: valid at ``now`` (Unix time), a valid self-signature, no
    critical extension other than ours, the libp2p extension
    present and its signature valid (:class:`InvalidSignatureError` if not).
    """
    if isinstance(certificate, x509.Certificate):
        cert = certificate
    else:
        if len(certificate) > MAX_CERTIFICATE_BYTES:
            raise HandshakeError(
                f"certificate of {len(certificate)} bytes (limit {MAX_CERTIFICATE_BYTES})"
            )
        try:
            cert = x509.load_der_x509_certificate(bytes(certificate))
        except ValueError as exc:
            raise HandshakeError(f"malformed certificate: {exc}") from None
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    try:
        if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
            raise HandshakeError(
                f"certificate valid from {cert.not_valid_before_utc} to "
                f"{cert.not_valid_after_utc}, not now ({moment})"
            )
        cert.verify_directly_issued_by(cert)
        extensions = cert.extensions
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
        raise HandshakeError(f"certificate is not validly self-signed: {exc}") from None
    except x509.DuplicateExtension as exc:
        raise HandshakeError(f"certificate repeats an extension: {exc}") from None
    signed_key: bytes | None = None
    for ext in extensions:
        if ext.oid == LIBP2P_EXTENSION_OID:
            value = ext.value
            assert isinstance(value, x509.UnrecognizedExtension)
            signed_key = value.value
        elif ext.critical:
            raise HandshakeError(f"certificate has an unknown critical extension {ext.oid}")
    if signed_key is None:
        raise HandshakeError("certificate lacks the libp2p public key extension")
    key_bytes, signature = _decode_signed_key(signed_key)
    try:
        host_key = PublicKey.from_protobuf(key_bytes)
    except InvalidKeyError as exc:
        raise HandshakeError(f"libp2p certificate extension: {exc}") from None
    try:
        spki = _spki(cert.public_key())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise HandshakeError(f"certificate key unusable: {exc}") from None
    if not host_key.verify(SIGNATURE_PREFIX + spki, signature):
        raise InvalidSignatureError("the host key's signature over the certificate key is invalid")
    return host_key
