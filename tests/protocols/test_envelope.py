"""Signed envelopes (RFC 0002): hand-built vectors, seal/open, tampering, garbage."""

from __future__ import annotations

import contextlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from aiop2p._wire.protobuf import encode_bytes_field, encode_varint_field
from aiop2p.errors import (
    InvalidArgumentError,
    InvalidSignatureError,
    MessageTooLargeError,
    RemoteProtocolError,
)
from aiop2p.identity import KeyPair
from aiop2p.protocols import envelope
from aiop2p.protocols.envelope import SignedEnvelope, seal, signing_buffer

KEY = KeyPair.from_ed25519_seed(bytes(range(32)))
OTHER = KeyPair.from_ed25519_seed(bytes(32))
DOMAIN = "libp2p-relay-rsvp"
PTYPE = b"\x03\x02"


def test_signing_buffer_is_length_prefixed_concatenation() -> None:
    assert signing_buffer(DOMAIN, PTYPE, b"hello") == (
        b"\x11libp2p-relay-rsvp" + b"\x02\x03\x02" + b"\x05hello"
    )
    long_payload = b"x" * 200
    assert signing_buffer("d", b"", long_payload) == b"\x01d\x00\xc8\x01" + long_payload


def test_known_envelope_encoding() -> None:
    env = seal(KEY, DOMAIN, PTYPE, b"payload")
    pub = KEY.public_key.data
    assert len(pub) == 32
    # Ed25519 signatures are deterministic: check the signature independently.
    buf = b"\x11libp2p-relay-rsvp\x02\x03\x02\x07payload"
    assert isinstance(KEY.private_key, ed25519.Ed25519PrivateKey)
    expected_sig = KEY.private_key.sign(buf)
    KEY.private_key.public_key().verify(env.signature, buf)
    assert env.signature == expected_sig
    wire = env.encode()
    assert wire == (
        b"\x0a\x24\x08\x01\x12\x20"
        + pub  # public_key = PublicKey{Type=Ed25519, Data}
        + b"\x12\x02\x03\x02"  # payload_type
        + b"\x1a\x07payload"  # payload
        + b"\x2a\x40"
        + expected_sig  # signature (field 5)
    )
    opened = envelope.open(wire, DOMAIN, PTYPE)
    assert opened == env
    assert opened.peer_id == KEY.peer_id


def test_decode_accepts_any_field_order_and_unknown_fields() -> None:
    env = seal(KEY, "d", b"t", b"p")
    wire = (
        encode_bytes_field(5, env.signature)
        + encode_varint_field(9, 7)
        + encode_bytes_field(3, b"p")
        + encode_bytes_field(1, KEY.public_key.to_protobuf())
        + encode_bytes_field(2, b"t")
    )
    assert envelope.open(wire, "d", b"t") == env


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=40), st.binary(max_size=8), st.binary(max_size=300))
def test_seal_open_round_trip(domain: str, ptype: bytes, payload: bytes) -> None:
    wire = seal(KEY, domain, ptype, payload).encode()
    env = envelope.open(wire, domain, ptype)
    assert (env.payload_type, env.payload, env.public_key) == (ptype, payload, KEY.public_key)
    assert SignedEnvelope.decode(wire) == env


@pytest.mark.parametrize(
    "keypair",
    [
        KeyPair(ec.generate_private_key(ec.SECP256K1())),
        KeyPair(ec.generate_private_key(ec.SECP256R1())),
    ],
    ids=["secp256k1", "ecdsa"],
)
def test_other_key_types(keypair: KeyPair) -> None:
    wire = seal(keypair, DOMAIN, PTYPE, b"x").encode()
    assert envelope.open(wire, DOMAIN, PTYPE).peer_id == keypair.peer_id
    with pytest.raises(InvalidSignatureError):
        envelope.open(wire, "other", PTYPE)


def test_wrong_domain_fails() -> None:
    wire = seal(KEY, DOMAIN, PTYPE, b"x").encode()
    with pytest.raises(InvalidSignatureError):
        envelope.open(wire, "libp2p-routing-state", PTYPE)


def test_wrong_payload_type_fails() -> None:
    wire = seal(KEY, DOMAIN, PTYPE, b"x").encode()
    with pytest.raises(RemoteProtocolError, match="payload type"):
        envelope.open(wire, DOMAIN, b"\x03\x01")


def test_tampered_payload_fails() -> None:
    env = seal(KEY, DOMAIN, PTYPE, b"payload")
    forged = SignedEnvelope(env.public_key, env.payload_type, b"paylaod", env.signature)
    with pytest.raises(InvalidSignatureError):
        envelope.open(forged.encode(), DOMAIN, PTYPE)


def test_tampered_signature_fails() -> None:
    env = seal(KEY, DOMAIN, PTYPE, b"payload")
    sig = bytes([env.signature[0] ^ 1]) + env.signature[1:]
    forged = SignedEnvelope(env.public_key, env.payload_type, env.payload, sig)
    with pytest.raises(InvalidSignatureError):
        envelope.open(forged.encode(), DOMAIN, PTYPE)
    unsigned = SignedEnvelope(env.public_key, env.payload_type, env.payload, b"")
    with pytest.raises(InvalidSignatureError):
        envelope.open(unsigned.encode(), DOMAIN, PTYPE)


def test_substituted_key_fails() -> None:
    env = seal(KEY, DOMAIN, PTYPE, b"payload")
    forged = SignedEnvelope(OTHER.public_key, env.payload_type, env.payload, env.signature)
    with pytest.raises(InvalidSignatureError):
        envelope.open(forged.encode(), DOMAIN, PTYPE)


def test_malformed_envelopes() -> None:
    with pytest.raises(RemoteProtocolError, match="no public key"):
        envelope.open(encode_bytes_field(3, b"x"), DOMAIN, b"")
    with pytest.raises(RemoteProtocolError, match="wrong wire type"):
        envelope.open(encode_varint_field(1, 5), DOMAIN, b"")
    with pytest.raises(RemoteProtocolError, match="public key"):
        envelope.open(encode_bytes_field(1, b"\x08\x01\x12\x03abc"), DOMAIN, b"")
    with pytest.raises(RemoteProtocolError):
        envelope.open(b"\x0a\x05ab", DOMAIN, b"")
    with pytest.raises(MessageTooLargeError):
        envelope.open(b"\x00" * 11, DOMAIN, b"", max_size_bytes=10)


def test_seal_rejects_empty_domain() -> None:
    with pytest.raises(InvalidArgumentError):
        seal(KEY, "", PTYPE, b"x")


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_garbage_raises_only_documented_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError, InvalidSignatureError):
        envelope.open(data, DOMAIN, PTYPE)


@settings(max_examples=300)
@given(st.integers(0, 5), st.binary(max_size=120), st.binary(max_size=80))
def test_garbage_keys_raise_only_documented_errors(kt: int, key: bytes, rest: bytes) -> None:
    proto = encode_varint_field(1, kt) + encode_bytes_field(2, key)
    with contextlib.suppress(RemoteProtocolError, InvalidSignatureError):
        envelope.open(encode_bytes_field(1, proto) + rest, DOMAIN, PTYPE)
