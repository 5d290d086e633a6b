"""Keys, signatures and peer ids against the libp2p peer-ids spec and its test vectors."""

from __future__ import annotations

import contextlib
import os
import pickle
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from aiop2p._wire import multibase
from aiop2p.errors import InvalidKeyError, InvalidPeerIdError
from aiop2p.identity import (
    MAX_KEY_FILE_BYTES,
    KeyPair,
    KeyType,
    PeerId,
    PublicKey,
)

# Test vectors from libp2p/specs peer-ids/peer-ids.md ("Test vectors").
ED25519_PRIVATE_HEX = (
    "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d1ed1e8fae2c4a144b8be"
    "8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)
ED25519_PUBLIC_HEX = "080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
SECP256K1_PRIVATE_HEX = "0802122053DADF1D5A164D6B4ACDB15E24AA4C5B1D3461BDBD42ABEDB0A4404D56CED8FB"
SECP256K1_PUBLIC_HEX = "08021221037777e994e452c21604f91de093ce415f5432f701dd8cd1a7a6fea0e630bfca99"
ECDSA_PRIVATE_HEX = (
    "08031279307702010104203E5B1FE9712E6C314942A750BD67485DE3C1EFE85B1BFB520AE8F9AE3DFA4A4CA00A"
    "06082A8648CE3D030107A14403420004DE3D300FA36AE0E8F5D530899D83ABAB44ABF3161F162A4BC901D8E6EC"
    "DA020E8B6D5F8DA30525E71D6851510C098E5C47C646A597FB4DCEC034E9F77C409E62"
)
ECDSA_PUBLIC_HEX = (
    "0803125b3059301306072a8648ce3d020106082a8648ce3d03010703420004de3d300fa36ae0e8f5d530899d83"
    "abab44abf3161f162a4bc901d8e6ecda020e8b6d5f8da30525e71d6851510c098e5c47c646a597fb4dcec034e9"
    "f77c409e62"
)
RSA_PRIVATE_HEX = (
    "080012ae123082092a0201000282020100e1beab071d08200bde24eef00d049449b07770ff9910257b2d7d5d"
    "da242ce8f0e2f12e1af4b32d9efd2c090f66b0f29986dbb645dae9880089704a94e5066d594162ae6ee8892e"
    "6ec70701db0a6c445c04778eb3de1293aa1a23c3825b85c6620a2bc3f82f9b0c309bc0ab3aeb1873282bebd3"
    "da03c33e76c21e9beb172fd44c9e43be32e2c99827033cf8d0f0c606f4579326c930eb4e854395ad94125654"
    "2c793902185153c474bed109d6ff5141ebf9cd256cf58893a37f83729f97e7cb435ec679d2e33901d27bb35a"
    "a0d7e20561da08885ef0abbf8e2fb48d6a5487047a9ecb1ad41fa7ed84f6e3e8ecd5d98b3982d2a901b44549"
    "91766da295ab78822add5612a2df83bcee814cf50973e80d7ef38111b1bd87da2ae92438a2c8cbcc70b31ee3"
    "19939a3b9c761dbc13b5c086d6b64bf7ae7dacc14622375d92a8ff9af7eb962162bbddebf90acb32adb5e4e4"
    "029f1c96019949ecfbfeffd7ac1e3fbcc6b6168c34be3d5a2e5999fcbb39bba7adbca78eab09b9bc39f7fa4b"
    "93411f4cc175e70c0a083e96bfaefb04a9580b4753c1738a6a760ae1afd851a1a4bdad231cf56e9284d83248"
    "3df215a46c1c21bdf0c6cfe951c18f1ee4078c79c13d63edb6e14feaeffabc90ad317e4875fe648101b08640"
    "97e998f0ca3025ef9638cd2b0caecd3770ab54a1d9c6ca959b0f5dcbc90caeefc4135baca6fd475224269bbe"
    "1b02030100010282020100a472ffa858efd8588ce59ee264b957452f3673acdf5631d7bfd5ba0ef59779c231"
    "b0bc838a8b14cae367b6d9ef572c03c7883b0a3c652f5c24c316b1ccfd979f13d0cd7da20c7d34d9ec32dfdc"
    "81ee7292167e706d705efde5b8f3edfcba41409e642f8897357df5d320d21c43b33600a7ae4e505db957c1af"
    "bc189d73f0b5d972d9aaaeeb232ca20eebd5de6fe7f29d01470354413cc9a0af1154b7af7c1029adcd67c74b"
    "4798afeb69e09f2cb387305e73a1b5f450202d54f0ef096fe1bde340219a1194d1ac9026e90b366cce0c59b2"
    "39d10e4888f52ca1780824d39ae01a6b9f4dd6059191a7f12b2a3d8db3c2868cd4e5a5862b8b625a4197d52c"
    "6ac77710116ebd3ced81c4d91ad5fdfbed68312ebce7eea45c1833ca3acf7da2052820eacf5c6b07d086dabe"
    "b893391c71417fd8a4b1829ae2cf60d1749d0e25da19530d889461c21da3492a8dc6ccac7de83ac1c2185262"
    "c7473c8cc42f547cc9864b02a8073b6aa54a037d8c0de3914784e6205e83d97918b944f11b877b12084c0dd1"
    "d36592f8a4f8b8da5bb404c3d2c079b22b6ceabfbcb637c0dbe0201f0909d533f8bf308ada47aee641a012a4"
    "94d31b54c974e58b87f140258258bb82f31692659db7aa07e17a5b2a0832c24e122d3a8babcc9ee74cbb07d3"
    "058bb85b15f6f6b2674aba9fd34367be9782d444335fbed31e3c4086c652597c27104938b47fa10282010100"
    "e9fdf843c1550070ca711cb8ff28411466198f0e212511c3186623890c0071bf6561219682fe7dbdfd81176e"
    "ba7c4faba21614a20721e0fcd63768e6d925688ecc90992059ac89256e0524de90bf3d8a052ce6a9f6adafa7"
    "12f3107a016e20c80255c9e37d8206d1bc327e06e66eb24288da866b55904fd8b59e6b2ab31bc5eab47e5970"
    "93c63fab7872102d57b4c589c66077f534a61f5f65127459a33c91f6db61fc431b1ae90be92b4149a3255291"
    "baf94304e3efb77b1107b5a3bda911359c40a53c347ff9100baf8f36dc5cd991066b5bdc28b39ed644f404af"
    "e9213f4d31c9d4e40f3a5f5e3c39bebeb244e84137544e1a1839c1c8aaebf0c78a7fad590282010100f6fa1f"
    "1e6b803742d5490b7441152f500970f46feb0b73a6e4baba2aaf3c0e245ed852fc31d86a8e46eb48e90fac40"
    "9989dfee45238f97e8f1f8e83a136488c1b04b8a7fb695f37b8616307ff8a8d63e8cfa0b4fb9b9167ffaebab"
    "f111aa5a4344afbabd002ae8961c38c02da76a9149abdde93eb389eb32595c29ba30d8283a7885218a5a9d33"
    "f7f01dbdf85f3aad016c071395491338ec318d39220e1c7bd69d3d6b520a13a30d745c102b827ad9984b0dd6"
    "aed73916ffa82a06c1c111e7047dcd2668f988a0570a71474992eecf416e068f029ec323d5d635fd24694fc9"
    "bf96973c255d26c772a95bf8b7f876547a5beabf86f06cd21b67994f944e7a5493028201010095b02fd30069"
    "e547426a8bea58e8a2816f33688dac6c6f6974415af8402244a22133baedf34ce499d7036f3f19b38eb00897"
    "c18949b0c5a25953c71aeeccfc8f6594173157cc854bd98f16dffe8f28ca13b77eb43a2730585c49fc3f608c"
    "d811bb54b03b84bddaa8ef910988567f783012266199667a546a18fd88271fbf63a45ae4fd4884706da8befb"
    "9117c0a4d73de5172f8640b1091ed8a4aea3ed4641463f5ff6a5e3401ad7d0c92811f87956d1fd5f9a1d15c7"
    "f3839a08698d9f35f9d966e5000f7cb2655d7b6c4adcd8a9d950ea5f61bb7c9a33c17508f9baa313eecfee4a"
    "e493249ebe05a5d7770bbd3551b2eeb752e3649e0636de08e3d672e66cb90282010100ad93e4c31072b063fc"
    "5ab5fe22afacece775c795d0efdf7c704cfc027bde0d626a7646fc905bb5a80117e3ca49059af14e0160089f"
    "9190065be9bfecf12c3b2145b211c8e89e42dd91c38e9aa23ca73697063564f6f6aa6590088a738722df0560"
    "04d18d7bccac62b3bafef6172fc2a4b071ea37f31eff7a076bcab7dd144e51a9da8754219352aef2c7347897"
    "1539fa41de4759285ea626fa3c72e7085be47d554d915bbb5149cb6ef835351f231043049cd941506a034bf2"
    "f8767f3e1e42ead92f91cb3d75549b57ef7d56ac39c2d80d67f6a2b4ca192974bfc5060e2dd1712179710021"
    "93dba12e7e4133ab201f07500a90495a38610279b13a48d54f0c99028201003e3a1ac0c2b67d54ed5c4bbe04"
    "a7db99103659d33a4f9d35809e1f60c282e5988dddc964527f3b05e6cc890eab3dcb571d66debf3a5527704c"
    "87264b3954d7265f4e8d2c637dd89b491b9cf23f264801f804b90454d65af0c4c830d1aef76f597ef61b26ca"
    "857ecce9cb78d4f6c2218c00d2975d46c2b013fbf59b750c3b92d8d3ed9e6d1fd0ef1ec091a5c286a3fe2dea"
    "d292f40f380065731e2079ebb9f2a7ef2c415ecbb488da98f3a12609ca1b6ec8c734032c8bd513292ff842c3"
    "75d4acd1b02dfb206b24cd815f8e2f9d4af8e7dea0370b19c1b23cc531d78b40e06e1119ee2e08f6f31c6e2e"
    "8444c568d13c5d451a291ae0c9f1d4f27d23b3a00d60ad"
)
RSA_PUBLIC_HEX = (
    "080012a60430820222300d06092a864886f70d01010105000382020f003082020a0282020100e1beab071d08"
    "200bde24eef00d049449b07770ff9910257b2d7d5dda242ce8f0e2f12e1af4b32d9efd2c090f66b0f29986db"
    "b645dae9880089704a94e5066d594162ae6ee8892e6ec70701db0a6c445c04778eb3de1293aa1a23c3825b85"
    "c6620a2bc3f82f9b0c309bc0ab3aeb1873282bebd3da03c33e76c21e9beb172fd44c9e43be32e2c99827033c"
    "f8d0f0c606f4579326c930eb4e854395ad941256542c793902185153c474bed109d6ff5141ebf9cd256cf588"
    "93a37f83729f97e7cb435ec679d2e33901d27bb35aa0d7e20561da08885ef0abbf8e2fb48d6a5487047a9ecb"
    "1ad41fa7ed84f6e3e8ecd5d98b3982d2a901b4454991766da295ab78822add5612a2df83bcee814cf50973e8"
    "0d7ef38111b1bd87da2ae92438a2c8cbcc70b31ee319939a3b9c761dbc13b5c086d6b64bf7ae7dacc1462237"
    "5d92a8ff9af7eb962162bbddebf90acb32adb5e4e4029f1c96019949ecfbfeffd7ac1e3fbcc6b6168c34be3d"
    "5a2e5999fcbb39bba7adbca78eab09b9bc39f7fa4b93411f4cc175e70c0a083e96bfaefb04a9580b4753c173"
    "8a6a760ae1afd851a1a4bdad231cf56e9284d832483df215a46c1c21bdf0c6cfe951c18f1ee4078c79c13d63"
    "edb6e14feaeffabc90ad317e4875fe648101b0864097e998f0ca3025ef9638cd2b0caecd3770ab54a1d9c6ca"
    "959b0f5dcbc90caeefc4135baca6fd475224269bbe1b0203010001"
)

VECTORS = [
    pytest.param(ED25519_PRIVATE_HEX, ED25519_PUBLIC_HEX, KeyType.ED25519, id="ed25519"),
    pytest.param(SECP256K1_PRIVATE_HEX, SECP256K1_PUBLIC_HEX, KeyType.SECP256K1, id="secp256k1"),
    pytest.param(ECDSA_PRIVATE_HEX, ECDSA_PUBLIC_HEX, KeyType.ECDSA, id="ecdsa"),
    pytest.param(RSA_PRIVATE_HEX, RSA_PUBLIC_HEX, KeyType.RSA, id="rsa"),
]

# Examples from the spec's "String representation" section.
SPEC_SHA256_B58 = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
SPEC_SHA256_CID = "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe"
SPEC_ED25519_B58 = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"


# --- key vectors ------------------------------------------------------------------------------


@pytest.mark.parametrize(("private_hex", "public_hex", "key_type"), VECTORS)
def test_spec_vectors_round_trip(private_hex: str, public_hex: str, key_type: KeyType) -> None:
    private = bytes.fromhex(private_hex)
    public = bytes.fromhex(public_hex)
    pair = KeyPair.from_protobuf(private)
    assert pair.key_type is key_type
    assert pair.public_key.to_protobuf() == public  # "produce the public key from the private"
    assert pair.to_protobuf() == private  # and write the private key back byte for byte
    key = PublicKey.from_protobuf(public)
    assert key == pair.public_key
    assert key.key_type is key_type
    assert key.to_protobuf() == public
    signature = pair.sign(b"libp2p")
    assert key.verify(b"libp2p", signature)
    assert not key.verify(b"libp2P", signature)
    assert pair.peer_id.matches_public_key(key)


def test_peer_id_kinds_of_vectors() -> None:
    ed = PublicKey.from_protobuf(bytes.fromhex(ED25519_PUBLIC_HEX))
    k1 = PublicKey.from_protobuf(bytes.fromhex(SECP256K1_PUBLIC_HEX))
    p256 = PublicKey.from_protobuf(bytes.fromhex(ECDSA_PUBLIC_HEX))
    rsa_key = PublicKey.from_protobuf(bytes.fromhex(RSA_PUBLIC_HEX))
    # <= 42 bytes: identity multihash, the key is inlined.
    assert PeerId.from_public_key(ed).to_bytes() == b"\x00\x24" + ed.to_protobuf()
    assert str(PeerId.from_public_key(ed)).startswith("12D3KooW")
    assert PeerId.from_public_key(k1).to_bytes()[:2] == b"\x00\x25"
    assert str(PeerId.from_public_key(k1)).startswith("16Uiu2")
    assert PeerId.from_public_key(ed).extract_public_key() == ed
    # > 42 bytes: sha2-256 multihash.
    for key in (p256, rsa_key):
        pid = PeerId.from_public_key(key)
        assert pid.to_bytes()[:2] == b"\x12\x20"
        assert str(pid).startswith("Qm")
        assert pid.extract_public_key() is None
        assert pid.matches_public_key(key)
        assert not pid.matches_public_key(ed)


def test_ed25519_private_key_encodings() -> None:
    data = bytes.fromhex(ED25519_PRIVATE_HEX)[4:]  # 64 bytes: seed || public
    seed, pub = data[:32], data[32:]
    expected = KeyPair.from_ed25519_seed(seed)
    assert expected.public_key.data == pub
    for form in (seed, seed + pub, seed + pub + pub):
        proto = bytes((0x08, 0x01, 0x12, len(form))) + form
        assert KeyPair.from_protobuf(proto).peer_id == expected.peer_id
    bad_copies = seed + pub + bytes(32)
    with pytest.raises(InvalidKeyError, match="copies differ"):
        KeyPair.from_protobuf(bytes((0x08, 0x01, 0x12, 96)) + bad_copies)
    wrong_pub = seed + bytes(32)
    with pytest.raises(InvalidKeyError, match="does not match"):
        KeyPair.from_protobuf(bytes((0x08, 0x01, 0x12, 64)) + wrong_pub)
    with pytest.raises(InvalidKeyError, match="33 bytes"):
        KeyPair.from_protobuf(bytes((0x08, 0x01, 0x12, 33)) + bytes(33))


def test_from_ed25519_seed_is_deterministic() -> None:
    a = KeyPair.from_ed25519_seed(bytes(range(32)))
    b = KeyPair.from_ed25519_seed(bytes(range(32)))
    assert a.peer_id == b.peer_id
    assert a.sign(b"m") == b.sign(b"m")  # Ed25519 is deterministic
    with pytest.raises(InvalidKeyError):
        KeyPair.from_ed25519_seed(bytes(31))


def test_protobuf_field_order_and_unknown_fields_are_tolerated() -> None:
    canonical = bytes.fromhex(ED25519_PUBLIC_HEX)
    data_field = canonical[2:]
    swapped = data_field + b"\x08\x01"  # Data before Type
    key = PublicKey.from_protobuf(swapped)
    assert key.to_protobuf() == canonical  # re-encoded deterministically
    extra = canonical + b"\x1a\x01x"  # unknown field 3
    assert PublicKey.from_protobuf(extra) == key


# --- signatures for keys made by cryptography directly -------------------------------------------


@pytest.fixture(scope="module")
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pairs(rsa_private: rsa.RSAPrivateKey) -> list[KeyPair]:
    return [
        KeyPair(ed25519.Ed25519PrivateKey.generate()),
        KeyPair(ec.generate_private_key(ec.SECP256K1())),
        KeyPair(ec.generate_private_key(ec.SECP256R1())),
        KeyPair(rsa_private),
    ]


def test_key_types_of_wrapped_cryptography_keys(rsa_private: rsa.RSAPrivateKey) -> None:
    types = [p.key_type for p in _pairs(rsa_private)]
    assert types == [KeyType.ED25519, KeyType.SECP256K1, KeyType.ECDSA, KeyType.RSA]
    k1_as_ecdsa = KeyPair(ec.generate_private_key(ec.SECP256K1()), KeyType.ECDSA)
    assert k1_as_ecdsa.key_type is KeyType.ECDSA
    assert len(k1_as_ecdsa.public_key.data) > 33  # PKIX, not a compressed point
    with pytest.raises(InvalidKeyError):
        KeyPair(ec.generate_private_key(ec.SECP256R1()), KeyType.SECP256K1)


def test_sign_verify_every_key_type(rsa_private: rsa.RSAPrivateKey) -> None:
    for pair in _pairs(rsa_private):
        message = b"noise-libp2p-static-key:" + bytes(32)
        signature = pair.sign(message)
        # Decode from the wire form, as a remote would.
        key = PublicKey.from_protobuf(pair.public_key.to_protobuf())
        assert key.verify(message, signature), pair.key_type
        assert not key.verify(message + b"!", signature)
        tampered = bytearray(signature)
        tampered[-1] ^= 1
        assert not key.verify(message, bytes(tampered))
        assert not key.verify(message, b"")
        assert not key.verify(message, b"\x30\x00garbage")
        # A private key round-trips through its protobuf.
        again = KeyPair.from_protobuf(pair.to_protobuf())
        assert again.peer_id == pair.peer_id
        assert key.verify(message, again.sign(message))


def test_verify_signatures_made_by_cryptography(rsa_private: rsa.RSAPrivateKey) -> None:
    """Independent of KeyPair.sign: each type's signing rule as the spec states it."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    msg = b"hello"
    ed = ed25519.Ed25519PrivateKey.generate()
    assert PublicKey.from_cryptography(ed.public_key()).verify(msg, ed.sign(msg))
    for curve in (ec.SECP256K1(), ec.SECP256R1(), ec.SECP384R1()):
        k = ec.generate_private_key(curve)
        sig = k.sign(msg, ec.ECDSA(hashes.SHA256()))
        assert PublicKey.from_cryptography(k.public_key()).verify(msg, sig)
    sig = rsa_private.sign(msg, padding.PKCS1v15(), hashes.SHA256())
    assert PublicKey.from_cryptography(rsa_private.public_key()).verify(msg, sig)
    pss = rsa_private.sign(msg, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    assert not PublicKey.from_cryptography(rsa_private.public_key()).verify(msg, pss)


def test_secp256k1_signatures_are_low_s() -> None:
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    order = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    pair = KeyPair(ec.generate_private_key(ec.SECP256K1()))
    for i in range(32):
        _, s = decode_dss_signature(pair.sign(bytes([i])))
        assert s <= order // 2


def test_wrong_key_type_signature_is_false(rsa_private: rsa.RSAPrivateKey) -> None:
    ed, k1, p256, rs = _pairs(rsa_private)
    sig = ed.sign(b"x")
    for other in (k1, p256, rs):
        assert not other.public_key.verify(b"x", sig)


# --- bad keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff", id="truncated-key"),
        pytest.param(b"\x08\x01", id="no-data"),
        pytest.param(b"\x12\x00", id="no-type"),
        pytest.param(b"\x08\x07\x12\x20" + bytes(32), id="unknown-type"),
        pytest.param(b"\x08\x01\x12\x21" + bytes(32), id="overrun"),
        pytest.param(b"\x08\x01\x12\x1f" + bytes(31), id="ed25519-short"),
        pytest.param(b"\x08\x02\x12\x21\x05" + bytes(32), id="secp256k1-bad-point"),
        pytest.param(b"\x08\x03\x12\x03abc", id="ecdsa-bad-der"),
        pytest.param(b"\x08\x00\x12\x03abc", id="rsa-bad-der"),
        pytest.param(b"\x0a\x01\x01\x12\x00", id="type-wrong-wire-type"),
    ],
)
def test_public_key_garbage(data: bytes) -> None:
    with pytest.raises(InvalidKeyError):
        PublicKey.from_protobuf(data)


def test_public_key_type_mismatch_and_small_rsa(rsa_private: rsa.RSAPrivateKey) -> None:
    p256_data = PublicKey.from_protobuf(bytes.fromhex(ECDSA_PUBLIC_HEX)).data
    with pytest.raises(InvalidKeyError, match="non-RSA"):
        PublicKey.from_protobuf(b"\x08\x00\x12" + bytes([len(p256_data)]) + p256_data)
    rsa_data = PublicKey.from_cryptography(rsa_private.public_key()).data
    with pytest.raises(InvalidKeyError, match="non-EC"):
        PublicKey.from_protobuf(PublicKey(KeyType.ECDSA, rsa_data).to_protobuf())
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(InvalidKeyError, match="1024 bits"):
        PublicKey.from_cryptography(small.public_key())
    with pytest.raises(InvalidKeyError):
        PublicKey(9, b"")
    # A key built directly is parsed lazily: garbage makes verify return False.
    assert not PublicKey(KeyType.ED25519, b"short").verify(b"m", bytes(64))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x08\x02\x12\x1f" + bytes(31), id="secp256k1-short"),
        pytest.param(b"\x08\x03\x12\x03abc", id="ecdsa-garbage"),
        pytest.param(b"\x08\x00\x12\x03abc", id="rsa-garbage"),
        pytest.param(b"\x08\x05\x12\x00", id="unknown-type"),
        pytest.param(b"\x08\x01", id="no-data"),
    ],
)
def test_private_key_garbage(data: bytes) -> None:
    with pytest.raises(InvalidKeyError):
        KeyPair.from_protobuf(data)


def test_private_key_type_mismatch() -> None:
    ecdsa_data = bytes.fromhex(ECDSA_PRIVATE_HEX)[3:]  # 0x08 0x03 0x12 | 0x79 ...
    proto = b"\x08\x00\x12" + ecdsa_data  # the EC key labelled RSA
    with pytest.raises(InvalidKeyError, match="RSA private key data holds"):
        KeyPair.from_protobuf(proto)


def test_public_key_value_semantics() -> None:
    a = PublicKey.from_protobuf(bytes.fromhex(ED25519_PUBLIC_HEX))
    b = PublicKey(KeyType.ED25519, a.data)
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != PublicKey(KeyType.ED25519, bytes(32))
    with pytest.raises(AttributeError):
        a._data = b""
    assert pickle.loads(pickle.dumps(a)) == a
    assert "ED25519" in repr(a)


# --- key files ----------------------------------------------------------------------------------


def test_save_load(tmp_path: Path) -> None:
    pair = KeyPair.generate()
    path = tmp_path / "deep" / "dir" / "key"
    pair.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == pair.to_protobuf()
    assert len(path.read_bytes()) == 4 + 64
    assert KeyPair.load(path).peer_id == pair.peer_id
    assert KeyPair.load(str(path)).peer_id == pair.peer_id
    other = KeyPair.generate()
    other.save(path)  # overwrites
    assert KeyPair.load(path).peer_id == other.peer_id
    assert [p.name for p in path.parent.iterdir()] == ["key"]  # no temp files left


def test_load_or_generate(tmp_path: Path) -> None:
    path = tmp_path / "id" / "key"
    first = KeyPair.load_or_generate(path)
    assert path.exists()
    assert KeyPair.load_or_generate(path).peer_id == first.peer_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        KeyPair.load(tmp_path / "missing")
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a key")
    with pytest.raises(InvalidKeyError):
        KeyPair.load(garbage)
    with pytest.raises(InvalidKeyError):
        KeyPair.load_or_generate(garbage)  # never overwrites an existing file
    assert garbage.read_bytes() == b"not a key"
    huge = tmp_path / "huge"
    huge.write_bytes(bytes(MAX_KEY_FILE_BYTES + 1))
    with pytest.raises(InvalidKeyError, match="exceeds"):
        KeyPair.load(huge)


def test_go_js_key_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(bytes.fromhex(ED25519_PRIVATE_HEX))
    os.chmod(path, 0o600)
    pair = KeyPair.load(path)
    assert pair.public_key.to_protobuf() == bytes.fromhex(ED25519_PUBLIC_HEX)


# --- peer ids -----------------------------------------------------------------------------------


def test_spec_peer_id_examples() -> None:
    hashed = PeerId.from_string(SPEC_SHA256_B58)
    assert PeerId.from_string(SPEC_SHA256_CID) == hashed
    assert hashed.to_cid_string() == SPEC_SHA256_CID
    assert str(hashed) == SPEC_SHA256_B58
    inline = PeerId.from_string(SPEC_ED25519_B58)
    assert str(inline) == SPEC_ED25519_B58
    assert repr(inline) == f"PeerId('{SPEC_ED25519_B58}')"
    key = inline.extract_public_key()
    assert key is not None and key.key_type is KeyType.ED25519
    assert PeerId.from_public_key(key) == inline
    assert inline.matches_public_key(key)


def test_cid_forms_cross_checked() -> None:
    pair = KeyPair.from_protobuf(bytes.fromhex(ED25519_PRIVATE_HEX))
    pid = pair.peer_id
    cid = pid.to_cid_string()
    assert cid.startswith("bafzaa")  # CIDv1, libp2p-key, identity multihash
    raw = multibase.decode(cid)
    assert raw == b"\x01\x72" + pid.to_bytes()
    assert raw[2:4] == b"\x00\x24" and raw[4:] == pair.public_key.to_protobuf()
    assert PeerId.from_string(cid) == pid
    assert PeerId.from_string(cid.upper()) == pid  # "B": base32 upper case
    for prefix in "zBcCfFmMuU":
        assert PeerId.from_string(multibase.encode(prefix, raw)) == pid


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("Qm", "neither identity"),
        ("1", "too short"),
        ("12D3KooW0000", "base58btc character"),  # '0' is not in the alphabet
        ("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5", "neither identity"),  # one char short
        ("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5NN", "neither identity"),
        ("xyz", "multibase prefix"),
        ("bafz!!!", "invalid multibase"),
        # A bare multihash in multibase: no CID version byte.
        ("bciqaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "not a CIDv1"),
        ("bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxE", "wrong case"),
        # A dag-pb CIDv1 of the same multihash: right shape, wrong multicodec.
        ("bafybeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe", "not libp2p-key"),
        ("Q" + "m" * 300, "longer than"),
    ],
)
def test_peer_id_text_errors(text: str, match: str) -> None:
    with pytest.raises(InvalidPeerIdError, match=match):
        PeerId.from_string(text)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "too short"),
        (b"\x12", "too short"),
        (b"\x12\x20" + bytes(31), "32-byte digest"),
        (b"\x12\x14" + bytes(20), "32-byte digest"),
        (b"\x11\x14" + bytes(20), "neither identity nor sha2-256"),
        (b"\x00\x00", "does not match"),
        (b"\x00\x05abc", "does not match"),
        (b"\x00\x2b" + bytes(43), "longer than 42"),
        (b"\x00\x24" + bytes(36) + b"x", "does not match"),
    ],
)
def test_peer_id_bytes_errors(data: bytes, match: str) -> None:
    with pytest.raises(InvalidPeerIdError, match=match):
        PeerId.from_bytes(data)


def test_peer_id_value_semantics() -> None:
    a = KeyPair.generate().peer_id
    b = PeerId.from_bytes(a.to_bytes())
    c = PeerId.from_string(str(a))
    assert a == b == c and hash(a) == hash(b) == hash(c)
    assert len({a, b, c}) == 1
    hashed = PeerId.from_string(SPEC_SHA256_B58)
    assert sorted([a, hashed]) == [a, hashed]  # 0x00... sorts before 0x12...
    assert a < hashed and a <= hashed and hashed > a and hashed >= a and a != hashed
    assert a != str(a)
    with pytest.raises(AttributeError):
        a._bytes = b""
    assert pickle.loads(pickle.dumps(a)) == a
    with pytest.raises(TypeError):
        _ = a < "x"  # type: ignore[operator]


def test_extract_public_key_of_junk_identity() -> None:
    pid = PeerId.from_bytes(b"\x00\x03abc")
    with pytest.raises(InvalidKeyError):
        pid.extract_public_key()


@given(st.binary(min_size=32, max_size=32))
def test_peer_id_round_trips_ed25519(seed: bytes) -> None:
    pid = KeyPair.from_ed25519_seed(seed).peer_id
    text = str(pid)
    assert text.startswith("12D3KooW")
    assert PeerId.from_string(text) == pid
    assert PeerId.from_string(pid.to_cid_string()) == pid
    assert PeerId.from_bytes(pid.to_bytes()) == pid


@given(st.binary(min_size=32, max_size=32))
def test_peer_id_round_trips_sha256(digest: bytes) -> None:
    pid = PeerId.from_bytes(b"\x12\x20" + digest)
    text = str(pid)
    assert text.startswith("Qm")
    assert PeerId.from_string(text) == pid
    assert PeerId.from_string(pid.to_cid_string()) == pid


@given(st.binary(max_size=50))
def test_peer_id_from_random_bytes(data: bytes) -> None:
    try:
        pid = PeerId.from_bytes(data)
    except InvalidPeerIdError:
        return
    assert pid.to_bytes() == data
    assert PeerId.from_string(str(pid)) == pid


@given(st.text(max_size=80))
def test_peer_id_from_random_text_never_crashes(text: str) -> None:
    with contextlib.suppress(InvalidPeerIdError):
        PeerId.from_string(text)
