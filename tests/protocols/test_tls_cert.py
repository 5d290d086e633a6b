"""The libp2p TLS certificate: the spec's test vectors, round trips, hostile certificates."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from aiop2p.errors import HandshakeError, InvalidSignatureError
from aiop2p.identity import KeyPair, PeerId
from aiop2p.protocols.tls_cert import (
    LIBP2P_EXTENSION_OID,
    MAX_CERTIFICATE_BYTES,
    SIGNATURE_PREFIX,
    _encode_signed_key,
    _spki,
    certificate_der,
    make_certificate,
    verify_certificate,
)

NOW = 1_800_000_000.0  # 2027: inside the vectors' validity (1975-4096)

# tls/tls.md "Test vectors"
ED25519_CERT = bytes.fromhex(
    "308201ae30820156a0030201020204499602d2300a06082a8648ce3d040302302031123010060355"
    "040a13096c69627032702e696f310a300806035504051301313020170d3735303130313133303030"
    "305a180f34303936303130313133303030305a302031123010060355040a13096c69627032702e69"
    "6f310a300806035504051301313059301306072a8648ce3d020106082a8648ce3d03010703420004"
    "0c901d423c831ca85e27c73c263ba132721bb9d7a84c4f0380b2a6756fd601331c8870234dec8785"
    "04c174144fa4b14b66a651691606d8173e55bd37e381569ea37c307a3078060a2b0601040183a25a"
    "0101046a3068042408011220a77f1d92fedb59dddaea5a1c4abd1ac2fbde7d7b879ed36450180992"
    "3d7c11b90440d90d2769db992d5e6195dbb08e706b6651e024fda6cfb8846694a435519941cac215"
    "a8207792e42849cccc6cd8136c6e4bde92a58c5e08cfd4206eb5fe0bf909300a06082a8648ce3d04"
    "03020346003043021f50f6b6c52711a881778718238f650c9fb48943ae6ee6d28427dc6071ae55e7"
    "02203625f116a7a454db9c56986c82a25682f7248ea1cb764d322ea983ed36a31b77"
)
ECDSA_CERT = bytes.fromhex(
    "308201f63082019da0030201020204499602d2300a06082a8648ce3d040302302031123010060355"
    "040a13096c69627032702e696f310a300806035504051301313020170d3735303130313133303030"
    "305a180f34303936303130313133303030305a302031123010060355040a13096c69627032702e69"
    "6f310a300806035504051301313059301306072a8648ce3d020106082a8648ce3d03010703420004"
    "0c901d423c831ca85e27c73c263ba132721bb9d7a84c4f0380b2a6756fd601331c8870234dec8785"
    "04c174144fa4b14b66a651691606d8173e55bd37e381569ea381c23081bf3081bc060a2b06010401"
    "83a25a01010481ad3081aa045f0803125b3059301306072a8648ce3d020106082a8648ce3d030107"
    "03420004bf30511f909414ebdd3242178fd290f093a551cf75c973155de0bb5a96fedf6cb5d52da7"
    "563e794b512f66e60c7f55ba8a3acf3dd72a801980d205e8a1ad29f2044730450220064ea8124774"
    "caf8f50e57f436aa62350ce652418c019df5d98a3ac666c9386a022100aa59d704a931b5f72fb922"
    "2cb6cc51f954d04a4e2e5450f8805fe8918f71eaae300a06082a8648ce3d04030203470030440220"
    "799395b0b6c1e940a7e4484705f610ab51ed376f19ff9d7c16757cfbf61b8d4302206205c03fbb0f"
    "95205c779be86581d3e31c01871ad5d1f3435bcf375cb0e5088a"
)
SECP256K1_CERT = bytes.fromhex(
    "308201ba3082015fa0030201020204499602d2300a06082a8648ce3d040302302031123010060355"
    "040a13096c69627032702e696f310a300806035504051301313020170d3735303130313133303030"
    "305a180f34303936303130313133303030305a302031123010060355040a13096c69627032702e69"
    "6f310a300806035504051301313059301306072a8648ce3d020106082a8648ce3d03010703420004"
    "0c901d423c831ca85e27c73c263ba132721bb9d7a84c4f0380b2a6756fd601331c8870234dec8785"
    "04c174144fa4b14b66a651691606d8173e55bd37e381569ea38184308181307f060a2b0601040183"
    "a25a01010471306f0425080212210206dc6968726765b820f050263ececf7f71e4955892776c0970"
    "542efd689d2382044630440220145e15a991961f0d08cd15425bb95ec93f6ffa03c5a385eedc34ec"
    "f464c7a8ab022026b3109b8a3f40ef833169777eb2aa337cfb6282f188de0666d1bcec2a4690dd30"
    "0a06082a8648ce3d0403020349003046022100e1a217eeef9ec9204b3f774a08b70849646b6a1e6b"
    "8b27f93dc00ed58545d9fe022100b00dafa549d0f03547878338c7b15e7502888f6d45db387e5ae6"
    "b5d46899cef0"
)
INVALID_CERT = bytes.fromhex(
    "308201f73082019da0030201020204499602d2300a06082a8648ce3d040302302031123010060355"
    "040a13096c69627032702e696f310a300806035504051301313020170d3735303130313133303030"
    "305a180f34303936303130313133303030305a302031123010060355040a13096c69627032702e69"
    "6f310a300806035504051301313059301306072a8648ce3d020106082a8648ce3d03010703420004"
    "0c901d423c831ca85e27c73c263ba132721bb9d7a84c4f0380b2a6756fd601331c8870234dec8785"
    "04c174144fa4b14b66a651691606d8173e55bd37e381569ea381c23081bf3081bc060a2b06010401"
    "83a25a01010481ad3081aa045f0803125b3059301306072a8648ce3d020106082a8648ce3d030107"
    "03420004bf30511f909414ebdd3242178fd290f093a551cf75c973155de0bb5a96fedf6cb5d52da7"
    "563e794b512f66e60c7f55ba8a3acf3dd72a801980d205e8a1ad29f204473045022100bb6e03577b"
    "7cc7a3cd1558df0da2b117dfdcc0399bc2504ebe7de6f65cade72802206de96e2a5be9b6202adba2"
    "4ee0362e490641ac45c240db71fe955f2c5cf8df6e300a06082a8648ce3d04030203480030450221"
    "00e847f267f43717358f850355bdcabbefb2cfbf8a3c043b203a14788a092fe8db022027c1d04a2d"
    "41fd6b57a7e8b3989e470325de4406e52e084e34a3fd56eef0d0df"
)


@pytest.mark.parametrize(
    ("cert", "peer"),
    [
        (ED25519_CERT, "12D3KooWM6CgA9iBFZmcYAHA6A2qvbAxqfkmrYiRQuz3XEsk4Ksv"),
        (ECDSA_CERT, "QmfXbAwNjJLXfesgztEHe8HwgVDCMMpZ9Eax1HYq6hn9uE"),
        (SECP256K1_CERT, "16Uiu2HAkutTMoTzDw1tCvSRtu6YoixJwS46S1ZFxW8hSx9fWHiPs"),
    ],
)
def test_spec_vectors(cert: bytes, peer: str) -> None:
    key = verify_certificate(cert, now=NOW)
    assert str(PeerId.from_public_key(key)) == peer


def test_spec_invalid_vector() -> None:
    with pytest.raises(InvalidSignatureError):
        verify_certificate(INVALID_CERT, now=NOW)


def _cert_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_round_trip() -> None:
    identity = KeyPair.generate()
    cert = make_certificate(identity, _cert_key(), now=NOW, valid_seconds=3600, serial_number=7)
    assert verify_certificate(certificate_der(cert), now=NOW) == identity.public_key
    assert verify_certificate(cert, now=NOW + 3000) == identity.public_key
    # an hour of clock skew is tolerated, not more
    verify_certificate(cert, now=NOW - 3500)
    with pytest.raises(HandshakeError, match="valid from"):
        verify_certificate(cert, now=NOW - 3700)
    with pytest.raises(HandshakeError, match="valid from"):
        verify_certificate(cert, now=NOW + 3700)


def _builder(key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.SERIAL_NUMBER, "1")])
    start = datetime.datetime.fromtimestamp(NOW - 60, datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
    )


def _signed_key(identity: KeyPair, key: ec.EllipticCurvePrivateKey) -> bytes:
    signature = identity.sign(SIGNATURE_PREFIX + _spki(key.public_key()))
    return _encode_signed_key(identity.public_key.to_protobuf(), signature)


def test_missing_extension_is_refused() -> None:
    key = _cert_key()
    cert = _builder(key).sign(key, hashes.SHA256())
    with pytest.raises(HandshakeError, match="lacks the libp2p public key extension"):
        verify_certificate(certificate_der(cert), now=NOW)


def test_unknown_critical_extension_is_refused() -> None:
    key = _cert_key()
    cert = (
        _builder(key)
        .add_extension(
            x509.UnrecognizedExtension(LIBP2P_EXTENSION_OID, _signed_key(KeyPair.generate(), key)),
            critical=False,
        )
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00"), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(HandshakeError, match="unknown critical extension"):
        verify_certificate(certificate_der(cert), now=NOW)


def test_key_signed_for_another_certificate_key_is_refused() -> None:
    """A host key signature copied from another certificate proves nothing."""
    key, other = _cert_key(), _cert_key()
    ext = _signed_key(KeyPair.generate(), other)
    cert = (
        _builder(key)
        .add_extension(x509.UnrecognizedExtension(LIBP2P_EXTENSION_OID, ext), critical=True)
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(InvalidSignatureError):
        verify_certificate(certificate_der(cert), now=NOW)


def test_bad_self_signature_is_refused() -> None:
    key, other = _cert_key(), _cert_key()
    cert = (
        _builder(key)
        .add_extension(
            x509.UnrecognizedExtension(LIBP2P_EXTENSION_OID, _signed_key(KeyPair.generate(), key)),
            critical=True,
        )
        .sign(other, hashes.SHA256())
    )
    with pytest.raises(HandshakeError, match="self-signed"):
        verify_certificate(certificate_der(cert), now=NOW)


@pytest.mark.parametrize(
    "ext",
    [
        b"",
        b"\x30",
        b"\x30\x05\x04\x01a\x04",
        b"\x30\x84\x00\x00\x00\x00",
        b"\x30\x81\x02\x04\x00",
        b"\x30\x04\x04\x00\x04\x00\x00",
        b"\x30\x06\x04\x00\x04\x00\x05\x00",
        b"\x30\x04\x04\x00\x04\x00extra",
        _encode_signed_key(b"\x08\x07\x12\x00", b"sig"),
        _encode_signed_key(b"garbage", b"sig"),
    ],
)
def test_malformed_signed_key_is_refused(ext: bytes) -> None:
    key = _cert_key()
    cert = (
        _builder(key)
        .add_extension(x509.UnrecognizedExtension(LIBP2P_EXTENSION_OID, ext), critical=True)
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(HandshakeError):
        verify_certificate(certificate_der(cert), now=NOW)


@pytest.mark.parametrize("data", [b"", b"\x30\x03abc", ED25519_CERT[:-5], b"\x30" * 100])
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(HandshakeError):
        verify_certificate(data, now=NOW)


def test_oversized_certificate_is_refused_unparsed() -> None:
    with pytest.raises(HandshakeError, match="limit"):
        verify_certificate(b"\x30" * (MAX_CERTIFICATE_BYTES + 1), now=NOW)
