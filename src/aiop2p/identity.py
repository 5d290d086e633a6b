"""Keys and peer ids: the libp2p key protobufs, signatures per key type, peer id multihashes.

Follows ``peer-ids/peer-ids.md`` of the libp2p specs.  A :class:`PublicKey` holds the
protobuf ``Data`` bytes and parses them into a ``cryptography`` key object only when a
signature is first verified.  A :class:`PeerId` is the multihash of the canonical
``PublicKey`` protobuf: inline ("identity" multihash) for encodings of at most 42 bytes
(Ed25519, secp256k1), SHA-256 otherwise.  Pure apart from :meth:`KeyPair.generate`
(randomness) and the file helpers :meth:`KeyPair.save`/:meth:`KeyPair.load`.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Final, final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ._wire import multibase
from ._wire.base58 import b58decode, b58encode
from ._wire.protobuf import decode_fields
from ._wire.varint import decode_uvarint
from .errors import InvalidArgumentError, InvalidKeyError, InvalidPeerIdError, ProtocolError

__all__ = [
    "MAX_INLINE_KEY_BYTES",
    "MAX_KEY_FILE_BYTES",
    "MAX_PEER_ID_TEXT_CHARS",
    "KeyPair",
    "KeyType",
    "PeerId",
    "PublicKey",
]

MAX_INLINE_KEY_BYTES: Final = 42
"""Public key protobufs up to this size are inlined in the peer id (identity multihash)."""
MAX_KEY_FILE_BYTES: Final = 64 * 1024
"""A private key file larger than this is rejected unread (an RSA-8192 key is ~5 KiB)."""
MAX_PEER_ID_TEXT_CHARS: Final = 256
"""Longer peer id text is rejected before decoding (base58 decoding is quadratic)."""
MIN_RSA_KEY_BITS: Final = 2048
MAX_RSA_KEY_BITS: Final = 8192

_IDENTITY: Final = 0x00
_SHA2_256: Final = 0x12
_CIDV1: Final = 0x01
_LIBP2P_KEY: Final = 0x72
_CID_PREFIX: Final = bytes((_CIDV1, _LIBP2P_KEY))
_SECP256K1_ORDER: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())
_SHA256: Final = hashes.SHA256()
_PKCS1V15: Final = padding.PKCS1v15()


class KeyType(enum.IntEnum):
    """The libp2p ``KeyType`` protobuf enum."""

    RSA = 0
    ED25519 = 1
    SECP256K1 = 2
    ECDSA = 3


def _encode_key_message(key_type: int, data: bytes) -> bytes:
    """Deterministic PublicKey/PrivateKey protobuf: Type (field 1) then Data (field 2)."""
    n = len(data)
    if n < 0x80:
        return bytes((0x08, key_type, 0x12, n)) + data
    length = bytearray()
    while n >= 0x80:
        length.append((n & 0x7F) | 0x80)
        n >>= 7
    length.append(n)
    return bytes((0x08, key_type, 0x12)) + bytes(length) + data


def _decode_key_message(message: bytes, what: str) -> tuple[KeyType, bytes, bool]:
    """Parse a key protobuf into ``(type, data, canonical)``; raise :class:`InvalidKeyError`."""
    message = bytes(message)
    # Fast path: the deterministic encoding every implementation writes.
    if len(message) >= 4 and message[0] == 0x08 and message[1] < 4 and message[2] == 0x12:
        try:
            got = decode_uvarint(message, 3)
        except ProtocolError:
            got = None
        if got is not None and got[0] + got[1] == len(message):
            return KeyType(message[1]), message[got[1] :], True
    key_type: int | None = None
    data: bytes | None = None
    try:
        for number, value in decode_fields(message):
            if number == 1 and isinstance(value, int):
                key_type = value
            elif number == 2 and isinstance(value, bytes):
                data = value
            elif number in (1, 2):
                raise InvalidKeyError(f"{what} protobuf: field {number} has the wrong wire type")
    except ProtocolError as exc:
        raise InvalidKeyError(f"{what} protobuf is malformed: {exc}") from None
    if key_type is None or data is None:
        raise InvalidKeyError(f"{what} protobuf lacks its {'Type' if key_type is None else 'Data'}")
    try:
        kt = KeyType(key_type)
    except ValueError:
        raise InvalidKeyError(f"{what} has unknown key type {key_type}") from None
    return kt, data, False


def _low_s(signature: bytes) -> bytes:
    """Normalise a secp256k1 DER signature to low S (BIP 62), as Bitcoin-style verifiers want."""
    r, s = decode_dss_signature(signature)
    if s > _SECP256K1_ORDER // 2:
        return encode_dss_signature(r, _SECP256K1_ORDER - s)
    return signature


def _check_rsa_size(bits: int) -> None:
    if not MIN_RSA_KEY_BITS <= bits <= MAX_RSA_KEY_BITS:
        raise InvalidKeyError(
            f"RSA key of {bits} bits is outside {MIN_RSA_KEY_BITS}..{MAX_RSA_KEY_BITS} bits"
        )


_VerifyingKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


@final
class PublicKey:
    """A libp2p public key: its type and the type-specific ``Data`` encoding.

    Immutable and hashable (by type and data).  The ``cryptography`` key object is
    parsed once, on first use, and cached.
    """

    __slots__ = ("_data", "_key", "_proto", "_type")

    _type: KeyType
    _data: bytes
    _key: _VerifyingKey | None
    _proto: bytes | None

    def __init__(self, key_type: KeyType | int, data: bytes) -> None:
        try:
            kt = KeyType(key_type)
        except ValueError:
            raise InvalidKeyError(f"unknown key type {key_type}") from None
        osa = object.__setattr__
        osa(self, "_type", kt)
        osa(self, "_data", bytes(data))
        osa(self, "_key", None)
        osa(self, "_proto", None)

    @property
    def key_type(self) -> KeyType:
        return self._type

    @property
    def data(self) -> bytes:
        """The ``Data`` field: the key in its type-specific encoding."""
        return self._data

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("PublicKey is immutable")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PublicKey):
            return self._type == other._type and self._data == other._data
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._type, self._data))

    def __repr__(self) -> str:
        return f"PublicKey({self._type.name}, {self._data.hex()})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (PublicKey, (int(self._type), self._data))

    @classmethod
    def from_protobuf(cls, data: bytes) -> PublicKey:
        """Parse a ``PublicKey`` protobuf and validate the key it carries."""
        kt, key_data, canonical = _decode_key_message(data, "public key")
        key = cls(kt, key_data)
        if canonical:
            object.__setattr__(key, "_proto", bytes(data))
        key._crypto_key()  # validate now, so garbage fails here and not at verify time
        return key

    @classmethod
    def from_cryptography(cls, key: _VerifyingKey, key_type: KeyType | None = None) -> PublicKey:
        """Wrap a ``cryptography`` public key.

        An EC key on secp256k1 becomes a ``SECP256K1`` key (33-byte compressed point)
        unless ``key_type=KeyType.ECDSA`` is given; other curves become ``ECDSA``.
        """
        if isinstance(key, ed25519.Ed25519PublicKey):
            kt, data = KeyType.ED25519, key.public_bytes_raw()
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if key_type is None:
                is_k1 = isinstance(key.curve, ec.SECP256K1)
                key_type = KeyType.SECP256K1 if is_k1 else KeyType.ECDSA
            kt = key_type
            if kt == KeyType.SECP256K1:
                if not isinstance(key.curve, ec.SECP256K1):
                    raise InvalidKeyError(f"a SECP256K1 key cannot be on curve {key.curve.name}")
                data = key.public_bytes(
                    serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
                )
            else:
                data = key.public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
        elif isinstance(key, rsa.RSAPublicKey):
            _check_rsa_size(key.key_size)
            kt = KeyType.RSA
            data = key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        else:
            raise InvalidKeyError(f"unsupported key object {type(key).__name__}")
        out = cls(kt, data)
        object.__setattr__(out, "_key", key)
        return out

    def to_protobuf(self) -> bytes:
        """The deterministic ``PublicKey`` protobuf (what peer ids and handshakes carry)."""
        proto = self._proto
        if proto is None:
            proto = _encode_key_message(self._type, self._data)
            object.__setattr__(self, "_proto", proto)
        return proto

    def _crypto_key(self) -> _VerifyingKey:
        key = self._key
        if key is not None:
            return key
        kt, data = self._type, self._data
        parsed: _VerifyingKey
        try:
            if kt == KeyType.ED25519:
                if len(data) != 32:
                    raise InvalidKeyError(f"Ed25519 public key of {len(data)} bytes, not 32")
                parsed = ed25519.Ed25519PublicKey.from_public_bytes(data)
            elif kt == KeyType.SECP256K1:
                parsed = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), data)
            else:
                loaded = serialization.load_der_public_key(data)
                if kt == KeyType.RSA:
                    if not isinstance(loaded, rsa.RSAPublicKey):
                        raise InvalidKeyError("RSA key data holds a non-RSA key")
                    _check_rsa_size(loaded.key_size)
                elif not isinstance(loaded, ec.EllipticCurvePublicKey):
                    raise InvalidKeyError("ECDSA key data holds a non-EC key")
                parsed = loaded
        except InvalidKeyError:
            raise
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise InvalidKeyError(f"invalid {kt.name} public key: {exc}") from None
        object.__setattr__(self, "_key", parsed)
        return parsed

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` signs ``message`` under this key; False (never an error) if not."""
        try:
            key = self._key or self._crypto_key()
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, message)
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, message, _ECDSA_SHA256)
            else:
                key.verify(signature, message, _PKCS1V15, _SHA256)
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True


_SigningKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@final
class KeyPair:
    """A private key with its public key and peer id (Ed25519 by default)."""

    __slots__ = ("_key_type", "_peer_id", "_private", "_public")

    def __init__(self, private_key: _SigningKey, key_type: KeyType | None = None) -> None:
        """Wrap a ``cryptography`` private key (see :meth:`PublicKey.from_cryptography`)."""
        public = PublicKey.from_cryptography(private_key.public_key(), key_type)
        self._private: _SigningKey = private_key
        self._public = public
        self._key_type = public.key_type
        self._peer_id: PeerId | None = None

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh random Ed25519 key pair."""
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_ed25519_seed(cls, seed: bytes) -> KeyPair:
        """The Ed25519 key pair of a 32-byte seed (deterministic, for tests and derivation)."""
        if len(seed) != 32:
            raise InvalidKeyError(f"Ed25519 seed of {len(seed)} bytes, not 32")
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    @property
    def key_type(self) -> KeyType:
        return self._key_type

    @property
    def public_key(self) -> PublicKey:
        return self._public

    @property
    def peer_id(self) -> PeerId:
        pid = self._peer_id
        if pid is None:
            pid = self._peer_id = PeerId.from_public_key(self._public)
        return pid

    @property
    def private_key(self) -> _SigningKey:
        """The underlying ``cryptography`` private key object."""
        return self._private

    def __repr__(self) -> str:
        return f"KeyPair({self._key_type.name}, peer_id={self.peer_id})"

    def sign(self, message: bytes) -> bytes:
        """Sign as the key type's libp2p rules say (Ed25519; SHA-256 + ECDSA DER; PKCS#1 v1.5)."""
        key = self._private
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(message)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            sig = key.sign(message, _ECDSA_SHA256)
            return _low_s(sig) if self._key_type == KeyType.SECP256K1 else sig
        return key.sign(message, _PKCS1V15, _SHA256)

    def to_protobuf(self) -> bytes:
        """The ``PrivateKey`` protobuf, as go/js libp2p store it on disk."""
        key = self._private
        if isinstance(key, ed25519.Ed25519PrivateKey):
            data = key.private_bytes_raw() + self._public.data
        elif self._key_type == KeyType.SECP256K1:
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            data = key.private_numbers().private_value.to_bytes(32, "big")
        else:  # ECDSA: SEC1 ECPrivateKey DER; RSA: PKCS#1 RSAPrivateKey DER
            data = key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        return _encode_key_message(self._key_type, data)

    @classmethod
    def from_protobuf(cls, data: bytes) -> KeyPair:
        """Parse a ``PrivateKey`` protobuf (Ed25519 data of 32, 64 or 96 bytes; others too)."""
        kt, key_data, _ = _decode_key_message(data, "private key")
        try:
            if kt == KeyType.ED25519:
                return cls._from_ed25519_data(key_data)
            if kt == KeyType.SECP256K1:
                if len(key_data) != 32:
                    raise InvalidKeyError(f"secp256k1 private key of {len(key_data)} bytes")
                scalar = int.from_bytes(key_data, "big")
                return cls(ec.derive_private_key(scalar, ec.SECP256K1()), KeyType.SECP256K1)
            loaded = serialization.load_der_private_key(key_data, password=None)
        except InvalidKeyError:
            raise
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise InvalidKeyError(f"invalid {kt.name} private key: {exc}") from None
        if kt == KeyType.RSA and isinstance(loaded, rsa.RSAPrivateKey):
            return cls(loaded, KeyType.RSA)
        if kt == KeyType.ECDSA and isinstance(loaded, ec.EllipticCurvePrivateKey):
            return cls(loaded, KeyType.ECDSA)
        raise InvalidKeyError(f"{kt.name} private key data holds a {type(loaded).__name__}")

    @classmethod
    def _from_ed25519_data(cls, data: bytes) -> KeyPair:
        n = len(data)
        if n not in (32, 64, 96):
            raise InvalidKeyError(f"Ed25519 private key of {n} bytes, not 32, 64 or 96")
        if n == 96 and data[32:64] != data[64:96]:
            raise InvalidKeyError("Ed25519 private key (96-byte form): public key copies differ")
        pair = cls.from_ed25519_seed(data[:32])
        if n > 32 and data[32:64] != pair._public.data:
            raise InvalidKeyError("Ed25519 private key: stored public key does not match the seed")
        return pair

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_protobuf` to ``path`` atomically, readable only by the owner."""
        _write_private_file(Path(path), self.to_protobuf(), overwrite=True)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyPair:
        """Read a key file written by :meth:`save` (or by go/js libp2p)."""
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
        if len(data) > MAX_KEY_FILE_BYTES:
            where = os.fspath(path)
            raise InvalidKeyError(f"key file {where!r} exceeds {MAX_KEY_FILE_BYTES} bytes")
        return cls.from_protobuf(data)

    @classmethod
    def load_or_generate(cls, path: str | os.PathLike[str]) -> KeyPair:
        """Load the key at ``path``, or create it there; concurrent callers agree on one key."""
        p = Path(path)
        with contextlib.suppress(FileNotFoundError):
            return cls.load(p)
        pair = cls.generate()
        if _write_private_file(p, pair.to_protobuf(), overwrite=False):
            return pair
        return cls.load(p)  # another process created it first


def _write_private_file(path: Path, data: bytes, *, overwrite: bool) -> bool:
    """Write via a 0o600 temp file then rename (or link, to never clobber).

    Returns False when ``overwrite`` is off and the file already existed.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        if overwrite:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _invalid(text: object, why: str) -> InvalidPeerIdError:
    shown = repr(text) if len(repr(text)) <= 80 else repr(text)[:77] + "..."
    return InvalidPeerIdError(f"invalid peer id {shown}: {why}")


def _check_multihash(data: bytes, shown: object = None) -> None:
    """Raise :class:`InvalidPeerIdError` unless ``data`` is an identity or sha2-256 multihash.

    ``shown`` is what the error message quotes (the caller's text), default ``data``.
    """
    if shown is None:
        shown = data
    n = len(data)
    if n < 2:
        raise _invalid(shown, "too short for a multihash")
    code, length = data[0], data[1]
    if code == _SHA2_256:
        if length != 32 or n != 34:
            raise _invalid(shown, "a sha2-256 multihash must hold a 32-byte digest")
        return
    if code != _IDENTITY:
        # Codes >= 0x80 would need a multi-byte varint; none of them is a valid peer id hash.
        raise _invalid(shown, f"multihash code 0x{code:02x} is neither identity nor sha2-256")
    if length >= 0x80 or length > MAX_INLINE_KEY_BYTES:
        raise _invalid(shown, f"identity multihash longer than {MAX_INLINE_KEY_BYTES} bytes")
    if length == 0 or n != 2 + length:
        raise _invalid(shown, "identity multihash length does not match its digest")


@final
class PeerId:
    """A peer's identity: the multihash of its public key.

    Immutable, hashable and ordered by its bytes.  ``str()`` gives the canonical
    base58btc text (``12D3KooW...`` for Ed25519 keys, ``Qm...`` for hashed ones).
    """

    __slots__ = ("_bytes", "_str")

    _bytes: bytes
    _str: str | None

    def __init__(self, data: bytes) -> None:
        """Same as :meth:`from_bytes`."""
        data = bytes(data)
        _check_multihash(data)
        object.__setattr__(self, "_bytes", data)
        object.__setattr__(self, "_str", None)

    @classmethod
    def _unchecked(cls, data: bytes) -> PeerId:
        self = object.__new__(cls)
        object.__setattr__(self, "_bytes", data)
        object.__setattr__(self, "_str", None)
        return self

    @classmethod
    def from_bytes(cls, data: bytes) -> PeerId:
        """Parse a binary peer id (an identity or sha2-256 multihash)."""
        return cls(data)

    @classmethod
    def from_public_key(cls, key: PublicKey) -> PeerId:
        proto = key.to_protobuf()
        if len(proto) <= MAX_INLINE_KEY_BYTES:
            return cls._unchecked(bytes((_IDENTITY, len(proto))) + proto)
        return cls._unchecked(b"\x12\x20" + hashlib.sha256(proto).digest())

    @classmethod
    def from_string(cls, text: str) -> PeerId:
        """Parse base58btc (``Qm...``, ``1...``) or a multibase CIDv1 (``bafz...``) peer id."""
        if not isinstance(text, str):
            raise InvalidPeerIdError(f"peer id text must be str, not {type(text).__name__}")
        if not text:
            raise InvalidPeerIdError("empty peer id")
        if len(text) > MAX_PEER_ID_TEXT_CHARS:
            raise _invalid(text, f"longer than {MAX_PEER_ID_TEXT_CHARS} characters")
        if text[0] == "1" or text.startswith("Qm"):
            try:
                raw = b58decode(text)
            except InvalidArgumentError as exc:
                raise _invalid(text, str(exc)) from None
            _check_multihash(raw, text)
            out = cls._unchecked(raw)
            object.__setattr__(out, "_str", text)  # base58 text has a single spelling
            return out
        if text[0] not in multibase.PREFIXES:
            raise _invalid(text, "neither base58btc (1.../Qm...) nor a known multibase prefix")
        try:
            raw = multibase.decode(text)
        except InvalidArgumentError as exc:
            raise _invalid(text, str(exc)) from None
        if len(raw) < 2 or raw[0] != _CIDV1:
            raise _invalid(text, "not a CIDv1")
        if raw[1] != _LIBP2P_KEY:
            try:
                got = decode_uvarint(raw, 1)
            except ProtocolError:
                got = None
            codec = f"0x{got[0]:x}" if got else "a malformed codec"
            raise _invalid(text, f"CID multicodec is {codec}, not libp2p-key (0x72)")
        _check_multihash(raw[2:], text)
        return cls._unchecked(raw[2:])

    def to_bytes(self) -> bytes:
        """The multihash (the binary form used on the wire)."""
        return self._bytes

    def to_base58(self) -> str:
        return str(self)

    def to_cid_string(self) -> str:
        """CIDv1 (libp2p-key) in base32: the newer text form (``bafz...``)."""
        return multibase.encode("b", _CID_PREFIX + self._bytes)

    def extract_public_key(self) -> PublicKey | None:
        """The public key inlined in an identity multihash, or None for a hashed id.

        Raises :class:`InvalidKeyError` if the inlined bytes are not a valid key.
        """
        data = self._bytes
        if data[0] != _IDENTITY:
            return None
        return PublicKey.from_protobuf(data[2:])

    def matches_public_key(self, key: PublicKey) -> bool:
        """Whether this id was derived from ``key``."""
        return PeerId.from_public_key(key)._bytes == self._bytes

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("PeerId is immutable")

    def __str__(self) -> str:
        s = self._str
        if s is None:
            s = b58encode(self._bytes)
            object.__setattr__(self, "_str", s)
        return s

    def __repr__(self) -> str:
        return f"PeerId({str(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (PeerId, (self._bytes,))

    def __eq__(self, other: object) -> bool:
        if type(other) is PeerId:
            return self._bytes == other._bytes
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        if type(other) is PeerId:
            return self._bytes != other._bytes
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __lt__(self, other: PeerId) -> bool:
        if type(other) is PeerId:
            return self._bytes < other._bytes
        return NotImplemented

    def __le__(self, other: PeerId) -> bool:
        if type(other) is PeerId:
            return self._bytes <= other._bytes
        return NotImplemented

    def __gt__(self, other: PeerId) -> bool:
        if type(other) is PeerId:
            return self._bytes > other._bytes
        return NotImplemented

    def __ge__(self, other: PeerId) -> bool:
        if type(other) is PeerId:
            return self._bytes >= other._bytes
        return NotImplemented
