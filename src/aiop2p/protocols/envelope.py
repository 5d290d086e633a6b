"""Signed envelopes (libp2p ``RFC/0002-signed-envelopes.md``): a payload signed by a peer.

An envelope carries the signer's public key, a payload type (a multicodec, as raw bytes),
the payload and a signature.  The signature covers neither the key nor the envelope
protobuf but the buffer::

    uvarint(len(domain)) + domain + uvarint(len(payload_type)) + payload_type
        + uvarint(len(payload)) + payload

where ``domain`` is a UTF-8 string chosen by the subsystem (``libp2p-relay-rsvp`` for
relay reservation vouchers).  The domain is never on the wire: a signature made for one
purpose cannot be replayed for another.

Wire format: protobuf ``Envelope{public_key=1 (PublicKey message), payload_type=2,
payload=3, signature=5}``; proto3, so empty byte fields are omitted when encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .._wire.protobuf import decode_fields, encode_bytes_field
from .._wire.varint import encode_uvarint
from ..errors import (
    InvalidArgumentError,
    InvalidKeyError,
    InvalidSignatureError,
    MessageTooLargeError,
    RemoteProtocolError,
)
from ..identity import KeyPair, PeerId, PublicKey

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "SignedEnvelope",
    "open",
    "seal",
    "signing_buffer",
]

MAX_ENVELOPE_BYTES: Final = 64 * 1024
"""Default bound on an encoded envelope, bytes; larger input is rejected unparsed."""


def signing_buffer(domain: str, payload_type: bytes, payload: bytes) -> bytes:
    """The bytes an envelope signature covers (see the module docstring)."""
    raw_domain = domain.encode()
    return b"".join(
        (
            encode_uvarint(len(raw_domain)),
            raw_domain,
            encode_uvarint(len(payload_type)),
            payload_type,
            encode_uvarint(len(payload)),
            payload,
        )
    )


@dataclass(frozen=True, slots=True)
class SignedEnvelope:
    """A decoded envelope; :func:`open` returns only envelopes whose signature verified."""

    public_key: PublicKey
    payload_type: bytes
    payload: bytes
    signature: bytes

    @property
    def peer_id(self) -> PeerId:
        """The signer's peer id (derived from ``public_key``)."""
        return PeerId.from_public_key(self.public_key)

    def verify(self, domain: str) -> bool:
        """Whether the signature is valid for ``domain``; never raises."""
        return self.public_key.verify(
            signing_buffer(domain, self.payload_type, self.payload), self.signature
        )

    def encode(self) -> bytes:
        parts = [encode_bytes_field(1, self.public_key.to_protobuf())]
        if self.payload_type:
            parts.append(encode_bytes_field(2, self.payload_type))
        if self.payload:
            parts.append(encode_bytes_field(3, self.payload))
        if self.signature:
            parts.append(encode_bytes_field(5, self.signature))
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes, *, max_size_bytes: int = MAX_ENVELOPE_BYTES) -> SignedEnvelope:
        """Parse without verifying; raises :class:`RemoteProtocolError` if malformed.

        The public key is parsed and validated (a key that does not parse is malformed
        input, reported as :class:`RemoteProtocolError`).
        """
        if len(data) > max_size_bytes:
            raise MessageTooLargeError(len(data), max_size_bytes, "signed envelope")
        key_bytes: bytes | None = None
        payload_type = payload = signature = b""
        for number, value in decode_fields(bytes(data)):
            if isinstance(value, int):
                if number in (1, 2, 3, 5):
                    raise RemoteProtocolError(f"envelope: field {number} has the wrong wire type")
            elif number == 1:
                key_bytes = value
            elif number == 2:
                payload_type = value
            elif number == 3:
                payload = value
            elif number == 5:
                signature = value
        if key_bytes is None:
            raise RemoteProtocolError("envelope: no public key")
        try:
            key = PublicKey.from_protobuf(key_bytes)
        except InvalidKeyError as exc:
            raise RemoteProtocolError(f"envelope: {exc}") from exc
        return cls(key, payload_type, payload, signature)


def seal(keypair: KeyPair, domain: str, payload_type: bytes, payload: bytes) -> SignedEnvelope:
    """Sign ``payload`` under ``domain``; ``.encode()`` the result for the wire."""
    if not isinstance(domain, str) or not domain:
        raise InvalidArgumentError("an envelope domain must be a non-empty string")
    payload_type = bytes(payload_type)
    payload = bytes(payload)
    signature = keypair.sign(signing_buffer(domain, payload_type, payload))
    return SignedEnvelope(keypair.public_key, payload_type, payload, signature)


def open(  # shadows the builtin on purpose: call it as ``envelope.open``
    data: bytes,
    domain: str,
    expected_payload_type: bytes,
    *,
    max_size_bytes: int = MAX_ENVELOPE_BYTES,
) -> SignedEnvelope:
    """Decode and verify an envelope received from a peer.

    Raises :class:`RemoteProtocolError` if it is malformed or its payload type is not
    ``expected_payload_type``, :class:`InvalidSignatureError` if the signature does not
    verify for ``domain`` (a wrong domain is indistinguishable from a forgery).
    """
    envelope = SignedEnvelope.decode(data, max_size_bytes=max_size_bytes)
    if envelope.payload_type != expected_payload_type:
        raise RemoteProtocolError(
            f"envelope payload type {envelope.payload_type.hex()} is not the expected "
            f"{bytes(expected_payload_type).hex()}"
        )
    if not envelope.verify(domain):
        raise InvalidSignatureError(f"envelope signature does not verify for domain {domain!r}")
    return envelope
