"""noise-libp2p: the Noise ``XX`` handshake and the transport cipher, sans-IO.

Follows libp2p ``noise/README.md`` and the Noise Protocol Framework revision 34 with the
single suite libp2p allows, ``Noise_XX_25519_ChaChaPoly_SHA256``, and an empty prologue::

    -> e
    <- e, ee, s, es          + payload (responder's identity)
    -> s, se                 + payload (initiator's identity)

Every Noise message travels as ``uint16_be(len) + message``.  The payload is the
``NoiseHandshakePayload`` protobuf: ``identity_key`` (1, a libp2p ``PublicKey``),
``identity_sig`` (2, a signature over ``"noise-libp2p-static-key:" + static X25519
public key``) and optional ``extensions`` (4, ``NoiseExtensions``: ``stream_muxers`` (2)
for early muxer negotiation, and ``webtransport_certhashes`` (1): the multihashes of a
WebTransport listener's certificates, which its dialler checks).
The signature binds the libp2p identity to the Noise static key, so the remote peer id
we report is authenticated.

The static key and the payload signed for it are a node's :class:`NoiseCredentials`,
computed once and reused by every handshake (the spec allows a static key shared by all
sessions); the ephemeral key is fresh per handshake.

:class:`NoiseHandshake` is a bytes-in/events-out machine; it ends with
:class:`HandshakeCompleted`, which carries the :class:`NoiseTransport` cipher pair and
any bytes that arrived after the last handshake message, or with
:class:`HandshakeFailed`.  Keys are arguments (no randomness is drawn here).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .._wire.protobuf import decode_fields, encode_bytes_field
from ..errors import (
    DecryptionError,
    HandshakeError,
    InvalidArgumentError,
    InvalidKeyError,
    InvalidSignatureError,
    LimitExceededError,
    MessageTooLargeError,
    P2PError,
    PeerIdMismatchError,
    RemoteProtocolError,
)
from ..identity import KeyPair, PeerId, PublicKey
from ._base import SansIOMachine
from .role import Role

__all__ = [
    "MAX_NOISE_FRAME_SIZE",
    "MAX_PLAINTEXT_SIZE",
    "MAX_STREAM_MUXERS",
    "NOISE_PROTOCOL_ID",
    "PROTOCOL_NAME",
    "SIGNATURE_PREFIX",
    "HandshakeCompleted",
    "HandshakeFailed",
    "HandshakePayload",
    "NoiseCredentials",
    "NoiseEvent",
    "NoiseHandshake",
    "NoiseTransport",
    "VerifiedIdentities",
    "decode_handshake_payload",
    "encode_handshake_payload",
]

NOISE_PROTOCOL_ID: Final = "/noise"
MAX_NOISE_FRAME_SIZE: Final = 65535
"""Largest Noise message, bytes (the 2-byte length prefix cannot say more)."""
MAX_PLAINTEXT_SIZE: Final = MAX_NOISE_FRAME_SIZE - 16
"""Largest plaintext per transport frame, bytes (the AEAD tag takes 16)."""

MAX_STREAM_MUXERS: Final = 16
"""Entries of a peer's ``NoiseExtensions`` read at most; the rest are ignored unread."""
PROTOCOL_NAME: Final = b"Noise_XX_25519_ChaChaPoly_SHA256"
SIGNATURE_PREFIX: Final = b"noise-libp2p-static-key:"

_DH_LEN: Final = 32
_TAG_LEN: Final = 16
_MAX_NONCE: Final = 2**64 - 1
"""Noise reserves nonce 2**64 - 1; a cipher that reaches it is exhausted."""
_SHA256: Final = hashes.SHA256()
_pack_length = struct.Struct(">H").pack
_unpack_length = struct.Struct(">H").unpack_from
_pack_length_into = struct.Struct(">H").pack_into
_pack_nonce = struct.Struct("<4xQ").pack  # 4 zero bytes + 64-bit little-endian counter
_Remote = tuple[PublicKey, PeerId, tuple[str, ...], tuple[bytes, ...]]
"""What a verified handshake payload yields: identity key, peer id, stream muxers,
WebTransport certhashes."""


# --- Noise primitives (revision 34, sections 4 and 5) -------------------------------------


def _hash(data: bytes) -> bytes:
    digest = hashes.Hash(_SHA256)
    digest.update(data)
    return digest.finalize()


def _hmac(key: bytes, data: bytes) -> bytes:
    mac = hmac.HMAC(key, _SHA256)
    mac.update(data)
    return mac.finalize()


def _hkdf2(chaining_key: bytes, input_key_material: bytes) -> tuple[bytes, bytes]:
    """Noise ``HKDF(ck, ikm, 2)``: HMAC-SHA256 extract then two expand blocks."""
    temp_key = _hmac(chaining_key, input_key_material)
    output1 = _hmac(temp_key, b"\x01")
    output2 = _hmac(temp_key, output1 + b"\x02")
    return output1, output2


def _public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """The remote proved ``remote_peer``; ``leftover`` is ciphertext for ``transport``.

    ``remote_stream_muxers``: the muxers its payload listed (early muxer negotiation),
    empty when it listed none; ``remote_certhashes``: its ``webtransport_certhashes``.
    """

    remote_peer: PeerId
    remote_public_key: PublicKey
    transport: NoiseTransport
    leftover: bytes
    remote_stream_muxers: tuple[str, ...] = ()
    remote_certhashes: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """Terminal: the secure channel could not be established; drop the connection."""

    error: P2PError


NoiseEvent = HandshakeCompleted | HandshakeFailed


@dataclass(frozen=True, slots=True)
class HandshakePayload:
    """A decoded ``NoiseHandshakePayload`` (extension lists empty if absent)."""

    identity_key: bytes
    identity_sig: bytes
    stream_muxers: tuple[str, ...] = ()
    webtransport_certhashes: tuple[bytes, ...] = ()


def encode_handshake_payload(
    identity_key: bytes,
    identity_sig: bytes,
    stream_muxers: tuple[str, ...] = (),
    webtransport_certhashes: tuple[bytes, ...] = (),
) -> bytes:
    """``NoiseHandshakePayload``; ``extensions`` only when one of its lists is not empty."""
    payload = encode_bytes_field(1, identity_key) + encode_bytes_field(2, identity_sig)
    if stream_muxers or webtransport_certhashes:
        extensions = b"".join(encode_bytes_field(1, h) for h in webtransport_certhashes)
        extensions += b"".join(encode_bytes_field(2, muxer) for muxer in stream_muxers)
        payload += encode_bytes_field(4, extensions)
    return payload


def decode_handshake_payload(payload: bytes) -> HandshakePayload:
    """Decode a peer's payload; raises :class:`RemoteProtocolError` if malformed.

    Protobuf rules: unknown fields are skipped, a repeated ``identity_key`` or
    ``identity_sig`` keeps the last value, and repeated ``extensions`` merge (their
    lists concatenate).  Only the first :data:`MAX_STREAM_MUXERS` extension entries are
    read, so a peer cannot make us walk a 64 KiB list.
    """
    identity_key: bytes | None = None
    identity_sig: bytes | None = None
    muxers: list[str] = []
    certhashes: list[bytes] = []
    entries = 0
    for number, value in decode_fields(payload):
        if number not in (1, 2, 4):
            continue  # unknown fields are skipped, as protobuf requires
        if not isinstance(value, bytes):
            raise RemoteProtocolError(f"handshake payload field {number} has the wrong type")
        if number == 1:
            identity_key = value
        elif number == 2:
            identity_sig = value
        elif entries < MAX_STREAM_MUXERS:
            entries = _decode_extensions(value, muxers, certhashes, entries)
    if identity_key is None or identity_sig is None:
        raise RemoteProtocolError("handshake payload lacks identity_key or identity_sig")
    return HandshakePayload(identity_key, identity_sig, tuple(muxers), tuple(certhashes))


def _decode_extensions(
    data: bytes, muxers: list[str], certhashes: list[bytes], entries: int
) -> int:
    """Append the lists of one ``NoiseExtensions`` to ``muxers`` and ``certhashes``;
    returns the entries read so far."""
    try:
        for number, value in decode_fields(data):
            if number not in (1, 2):
                continue
            if not isinstance(value, bytes):
                raise RemoteProtocolError("a field has the wrong type")
            if number == 2:
                try:
                    muxers.append(value.decode())
                except UnicodeDecodeError:
                    raise RemoteProtocolError("a stream muxer is not UTF-8") from None
            else:
                certhashes.append(value)
            entries += 1
            if entries >= MAX_STREAM_MUXERS:
                break
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"malformed noise extensions: {exc}") from None
    return entries


class VerifiedIdentities:
    """Remote identities whose signature over their Noise static key already verified.

    A peer that reuses its static key (as we do, and js-libp2p does) sends the same
    identity key, static key and signature on every connection; verifying them again
    gives the same answer, so a node keeps the last ``max_entries`` it verified and skips
    the signature check (the costliest step of a handshake) and the key decoding for
    them.  Keyed by all three byte strings, so any other payload is verified in full; a
    peer filling it with its own keys only costs others a verification.
    """

    __slots__ = ("_entries", "max_entries")

    def __init__(self, max_entries: int = 1024) -> None:
        if max_entries < 1:
            raise InvalidArgumentError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: dict[tuple[bytes, bytes, bytes], tuple[PublicKey, PeerId]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[bytes, bytes, bytes]) -> tuple[PublicKey, PeerId] | None:
        """The verified identity for ``(identity_key, static_key, signature)``, if known."""
        entries = self._entries
        found = entries.pop(key, None)
        if found is not None:
            entries[key] = found  # most recently used last
        return found

    def add(self, key: tuple[bytes, bytes, bytes], identity: tuple[PublicKey, PeerId]) -> None:
        entries = self._entries
        entries[key] = identity
        if len(entries) > self.max_entries:
            del entries[next(iter(entries))]  # the least recently used


@dataclass(frozen=True, slots=True)
class NoiseCredentials:
    """A node's Noise static key and the handshake payload signed for it, made once.

    The signature covers only ``"noise-libp2p-static-key:" + static public key``; the
    payload adds the identity key and, when ``stream_muxers`` is given, the extensions
    (the muxers we offer for early negotiation, in our preference order).  Both roles
    send the same payload: the responder in message 2, the initiator in message 3.
    """

    static_key: X25519PrivateKey
    static_public: bytes
    payload: bytes
    stream_muxers: tuple[str, ...]
    identity: KeyPair
    """The identity that signed ``payload`` (a QUIC connection's TLS certificate uses it)."""

    @classmethod
    def create(
        cls,
        identity: KeyPair,
        static_key: X25519PrivateKey,
        *,
        stream_muxers: tuple[str, ...] = (),
    ) -> NoiseCredentials:
        static_public = _public_bytes(static_key)
        signature = identity.sign(SIGNATURE_PREFIX + static_public)
        payload = encode_handshake_payload(
            identity.public_key.to_protobuf(), signature, stream_muxers
        )
        return cls(static_key, static_public, payload, stream_muxers, identity)

    def with_webtransport_certhashes(self, certhashes: tuple[bytes, ...]) -> NoiseCredentials:
        """The same identity and static key whose payload announces a WebTransport
        listener's certificate hashes (and no muxers: WebTransport has its own streams).
        The signature covers only the static key, so it is reused."""
        own = decode_handshake_payload(self.payload)
        payload = encode_handshake_payload(
            own.identity_key, own.identity_sig, webtransport_certhashes=certhashes
        )
        return NoiseCredentials(self.static_key, self.static_public, payload, (), self.identity)


class NoiseHandshake(SansIOMachine[NoiseEvent]):
    """One side of the ``XX`` handshake with the libp2p identity payload.

    ``credentials`` (static key and signed payload) may be per session or shared by all
    sessions of a node; ``ephemeral_key`` must be fresh for every handshake.  The
    initiator queues message 1 at construction.  ``expected_peer`` (normally given by
    the dialler) is checked against the identity the remote proves; ``verified`` (the
    node's) skips verifying a payload verified before.  Message 1 carries
    no libp2p payload, so a responder refuses one longer than ``max_first_message_size``
    as soon as its length
    prefix arrives instead of waiting for up to 64 KiB of what is likely garbage.
    """

    __slots__ = (
        "_cipher",
        "_ck",
        "_e",
        "_expected_peer",
        "_h",
        "_initiator",
        "_n",
        "_payload",
        "_re",
        "_s",
        "_s_public",
        "_step",
        "_verified",
        "max_first_message_size",
    )

    _HANDED_OVER = "handshake complete: later bytes belong to the transport"

    def __init__(
        self,
        *,
        role: Role,
        credentials: NoiseCredentials,
        ephemeral_key: X25519PrivateKey,
        expected_peer: PeerId | None = None,
        max_first_message_size: int = 1024,
        verified: VerifiedIdentities | None = None,
    ) -> None:
        if max_first_message_size < _DH_LEN:
            raise InvalidArgumentError("max_first_message_size must be at least 32 bytes")
        super().__init__()
        self.max_first_message_size = max_first_message_size
        """Largest message 1 a responder accepts, bytes (libp2p peers send exactly 32)."""
        self._initiator = role is Role.INITIATOR
        self._s = credentials.static_key
        self._s_public = credentials.static_public
        self._e = ephemeral_key
        self._expected_peer = expected_peer
        self._verified = verified
        self._payload = credentials.payload
        # InitializeSymmetric: the 32-byte protocol name is used as h directly.
        self._h = PROTOCOL_NAME
        self._ck = PROTOCOL_NAME
        self._cipher: ChaCha20Poly1305 | None = None
        self._n = 0
        self._mix_hash(b"")  # empty prologue
        self._re = b""
        self._step = 0  # handshake messages processed (sent or received) so far
        if self._initiator:
            self._write_message1()

    # --- SymmetricState ------------------------------------------------------------------

    def _mix_hash(self, data: bytes) -> None:
        self._h = _hash(self._h + data)

    def _mix_key(self, input_key_material: bytes) -> None:
        self._ck, key = _hkdf2(self._ck, input_key_material)
        self._cipher = ChaCha20Poly1305(key)
        self._n = 0

    def _encrypt_and_hash(self, plaintext: bytes) -> bytes:
        if self._cipher is None:
            ciphertext = plaintext
        else:
            ciphertext = self._cipher.encrypt(_pack_nonce(self._n), plaintext, self._h)
            self._n += 1
        self._mix_hash(ciphertext)
        return ciphertext

    def _decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        if self._cipher is None:
            plaintext = ciphertext
        else:
            try:
                plaintext = self._cipher.decrypt(_pack_nonce(self._n), ciphertext, self._h)
            except InvalidTag as exc:
                raise DecryptionError("noise handshake message failed authentication") from exc
            self._n += 1
        self._mix_hash(ciphertext)
        return plaintext

    def _dh(self, private: X25519PrivateKey, public: bytes) -> bytes:
        try:
            return private.exchange(X25519PublicKey.from_public_bytes(public))
        except ValueError as exc:  # a low-order point gives an all-zero secret
            raise RemoteProtocolError("noise: invalid X25519 public key") from exc

    def _split(self) -> NoiseTransport:
        key1, key2 = _hkdf2(self._ck, b"")
        if self._initiator:
            return NoiseTransport(key1, key2, handshake_hash=self._h)
        return NoiseTransport(key2, key1, handshake_hash=self._h)

    # --- public surface ------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; never raises for peer misbehaviour."""
        self._feed(data)

    def receive_eof(self) -> None:
        """The peer closed its side; fails the handshake unless it is already over."""
        if not self._done:
            self._fail(HandshakeError("connection closed during the noise handshake"))

    # --- messages ------------------------------------------------------------------------

    def _fail(self, error: P2PError) -> None:
        self._out.clear()
        self._finish(HandshakeFailed(error))

    def _send(self, message: bytes) -> None:
        self._out += _pack_length(len(message))
        self._out += message
        self._step += 1

    def _process(self) -> None:
        buffer = self._buffer
        while not self._done and len(buffer) >= 2:
            (length,) = _unpack_length(buffer)
            if self._step == 0 and length > self.max_first_message_size:
                raise MessageTooLargeError(length, self.max_first_message_size, "noise message 1")
            end = 2 + length
            if len(buffer) < end:
                return
            message = bytes(buffer[2:end])
            del buffer[:end]
            self._step += 1
            if self._step == 1:  # responder reads message 1
                self._read_message1(message)
                self._write_message2()
            elif self._step == 2:  # initiator reads message 2
                remote = self._read_message2(message)
                self._write_message3()
                self._complete(remote)
            else:  # responder reads message 3
                self._complete(self._read_message3(message))

    def _write_message1(self) -> None:
        e_public = _public_bytes(self._e)
        self._mix_hash(e_public)
        self._send(e_public + self._encrypt_and_hash(b""))

    def _read_message1(self, message: bytes) -> None:
        if len(message) < _DH_LEN:
            raise RemoteProtocolError("noise message 1 is too short")
        self._re = message[:_DH_LEN]
        self._mix_hash(self._re)
        self._decrypt_and_hash(message[_DH_LEN:])  # empty from libp2p peers; ignored

    def _write_message2(self) -> None:
        e_public = _public_bytes(self._e)
        self._mix_hash(e_public)
        self._mix_key(self._dh(self._e, self._re))  # ee
        encrypted_s = self._encrypt_and_hash(self._s_public)
        self._mix_key(self._dh(self._s, self._re))  # es
        self._send(e_public + encrypted_s + self._encrypt_and_hash(self._payload))

    def _read_message2(self, message: bytes) -> _Remote:
        if len(message) < 2 * _DH_LEN + 2 * _TAG_LEN:
            raise RemoteProtocolError("noise message 2 is too short")
        self._re = message[:_DH_LEN]
        self._mix_hash(self._re)
        self._mix_key(self._dh(self._e, self._re))  # ee
        remote_static = self._decrypt_and_hash(message[_DH_LEN : 2 * _DH_LEN + _TAG_LEN])
        self._mix_key(self._dh(self._e, remote_static))  # es
        payload = self._decrypt_and_hash(message[2 * _DH_LEN + _TAG_LEN :])
        return self._verify(remote_static, payload)

    def _write_message3(self) -> None:
        encrypted_s = self._encrypt_and_hash(self._s_public)
        self._mix_key(self._dh(self._s, self._re))  # se
        self._send(encrypted_s + self._encrypt_and_hash(self._payload))

    def _read_message3(self, message: bytes) -> _Remote:
        if len(message) < _DH_LEN + 2 * _TAG_LEN:
            raise RemoteProtocolError("noise message 3 is too short")
        remote_static = self._decrypt_and_hash(message[: _DH_LEN + _TAG_LEN])
        self._mix_key(self._dh(self._e, remote_static))  # se
        payload = self._decrypt_and_hash(message[_DH_LEN + _TAG_LEN :])
        return self._verify(remote_static, payload)

    def _verify(self, remote_static: bytes, payload: bytes) -> _Remote:
        decoded = decode_handshake_payload(payload)
        verified = self._verified
        key = (decoded.identity_key, remote_static, decoded.identity_sig)
        known = verified.get(key) if verified is not None else None
        if known is not None:
            public_key, peer = known
        else:
            try:
                public_key = PublicKey.from_protobuf(decoded.identity_key)
            except InvalidKeyError as exc:
                raise HandshakeError(f"unusable remote identity key: {exc}") from exc
            if not public_key.verify(SIGNATURE_PREFIX + remote_static, decoded.identity_sig):
                raise InvalidSignatureError("remote signature over its noise static key is invalid")
            peer = PeerId.from_public_key(public_key)
            if verified is not None:
                verified.add(key, (public_key, peer))
        if self._expected_peer is not None and peer != self._expected_peer:
            raise PeerIdMismatchError(self._expected_peer, peer)
        return public_key, peer, decoded.stream_muxers, decoded.webtransport_certhashes

    def _complete(self, remote: _Remote) -> None:
        public_key, peer, muxers, certhashes = remote
        transport = self._split()
        leftover = bytes(self._buffer)
        self._finish(
            HandshakeCompleted(peer, public_key, transport, leftover, muxers, certhashes),
            handed_over=True,
        )


class NoiseTransport:
    """The post-handshake cipher pair with noise-libp2p's 2-byte length framing.

    Each direction has one ``ChaCha20Poly1305`` object and a 64-bit nonce counter that
    refuses to reach the reserved value ``2**64 - 1``.  :meth:`decrypt` buffers at most
    one incomplete frame (< 64 KiB); complete frames are decrypted straight from the
    caller's buffer through memoryview slices.
    """

    __slots__ = (
        "_broken",
        "_buffer",
        "_decrypt",
        "_encrypt",
        "_encrypt_into",
        "_handshake_hash",
        "_recv_nonce",
        "_send_nonce",
    )

    def __init__(self, send_key: bytes, receive_key: bytes, *, handshake_hash: bytes) -> None:
        send_cipher = ChaCha20Poly1305(send_key)
        self._encrypt = send_cipher.encrypt
        self._encrypt_into = send_cipher.encrypt_into
        self._decrypt = ChaCha20Poly1305(receive_key).decrypt
        self._send_nonce = 0
        self._recv_nonce = 0
        self._buffer = bytearray()
        self._broken = False
        self._handshake_hash = handshake_hash

    @property
    def handshake_hash(self) -> bytes:
        """Noise ``h`` at the end of the handshake: a transcript hash (channel binding)."""
        return self._handshake_hash

    @property
    def buffered_size(self) -> int:
        """Bytes of an incomplete received frame currently held."""
        return len(self._buffer)

    def _reserve_nonces(self, count: int) -> int:
        """The first of ``count`` consecutive send nonces; refuses to reach ``2**64 - 1``."""
        nonce = self._send_nonce
        if nonce + count > _MAX_NONCE:
            raise LimitExceededError("noise send nonce exhausted: the connection must be closed")
        self._send_nonce = nonce + count
        return nonce

    def encrypt_frames(self, plaintext: bytes | bytearray | memoryview) -> list[bytes]:
        """Encrypt into frames of at most :data:`MAX_PLAINTEXT_SIZE` plaintext bytes each."""
        view = memoryview(plaintext).cast("B")
        total = len(view)
        nonce = self._reserve_nonces(-(-total // MAX_PLAINTEXT_SIZE))
        encrypt = self._encrypt
        frames = []
        for start in range(0, total, MAX_PLAINTEXT_SIZE):
            chunk = view[start : start + MAX_PLAINTEXT_SIZE]
            frames.append(
                _pack_length(len(chunk) + _TAG_LEN) + encrypt(_pack_nonce(nonce), chunk, None)
            )
            nonce += 1
        return frames

    def encrypt(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        """Encrypt and frame ``plaintext``; the frames concatenated (``b""`` for no data)."""
        if type(plaintext) is memoryview:
            plaintext = plaintext.cast("B")
        total = len(plaintext)
        if total <= MAX_PLAINTEXT_SIZE:
            if not total:
                return b""
            nonce = self._send_nonce  # _reserve_nonces(1), inline
            if nonce + 1 > _MAX_NONCE:
                raise LimitExceededError(
                    "noise send nonce exhausted: the connection must be closed"
                )
            self._send_nonce = nonce + 1
            return _pack_length(total + _TAG_LEN) + self._encrypt(
                _pack_nonce(nonce), plaintext, None
            )
        out = bytearray(self.sealed_size(total))
        self.encrypt_into([plaintext], out)
        return bytes(out)

    @staticmethod
    def sealed_size(plaintext_size: int) -> int:
        """Bytes that ``plaintext_size`` plaintext bytes take once framed and sealed."""
        frames = -(-plaintext_size // MAX_PLAINTEXT_SIZE)
        return plaintext_size + frames * (2 + _TAG_LEN)

    def encrypt_into(
        self,
        pieces: Sequence[bytes | bytearray | memoryview],
        out: bytearray | memoryview,
    ) -> int:
        """Encrypt the concatenation of ``pieces`` into ``out``; return the bytes written.

        The frames are those :meth:`encrypt` makes of the joined pieces, but nothing is
        joined: a frame whose plaintext lies within one piece is sealed straight from it,
        and only a frame that spans pieces (a Yamux header and the start of its payload) is
        gathered first, into a buffer of one frame.  ``out`` must hold
        :meth:`sealed_size` of the total; a caller that writes large data through a reused
        ``out`` thus copies nothing but that one frame before the cipher reads it.
        """
        views = [memoryview(piece).cast("B") for piece in pieces]
        total = sum(map(len, views))
        if not total:
            return 0
        size = self.sealed_size(total)
        if len(out) < size:
            raise InvalidArgumentError(f"encrypt_into needs {size} bytes of output")
        nonce = self._reserve_nonces(-(-total // MAX_PLAINTEXT_SIZE))
        encrypt_into = self._encrypt_into
        gather: memoryview | None = None
        index = 0  # the piece the next plaintext byte comes from, and where in it
        offset = 0
        pos = 0
        with memoryview(out) as target:
            while total:
                length = total if total < MAX_PLAINTEXT_SIZE else MAX_PLAINTEXT_SIZE
                total -= length
                view = views[index]
                while len(view) == offset:  # step over exhausted and empty pieces
                    index += 1
                    offset = 0
                    view = views[index]
                if len(view) - offset >= length:
                    chunk = view[offset : offset + length]
                    offset += length
                else:
                    if gather is None:
                        gather = memoryview(bytearray(MAX_PLAINTEXT_SIZE))
                    filled = 0
                    while filled < length:
                        view = views[index]
                        take = min(len(view) - offset, length - filled)
                        gather[filled : filled + take] = view[offset : offset + take]
                        filled += take
                        offset += take
                        if offset == len(view):
                            index += 1
                            offset = 0
                    chunk = gather[:length]
                sealed = length + _TAG_LEN
                _pack_length_into(target, pos, sealed)
                encrypt_into(_pack_nonce(nonce), chunk, None, target[pos + 2 : pos + 2 + sealed])
                nonce += 1
                pos += 2 + sealed
        return pos

    def decrypt(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Plaintexts of every frame completed by ``data``; a partial frame is kept.

        Raises :class:`DecryptionError` when a frame fails authentication; that is
        terminal, and every later call raises it again.
        """
        if self._broken:
            raise DecryptionError("noise transport already failed")
        if (
            type(data) is bytes
            and not self._buffer
            and len(data) > 2
            and len(data) == 2 + (data[0] << 8 | data[1])
        ):
            return [self._open(data[2:])]  # one whole frame (a small request or answer)
        # Released on every exit, so the caller may reuse or resize its buffer at once.
        with memoryview(data) as raw, raw.cast("B") as view:
            return self._decrypt_view(view)

    def _decrypt_view(self, view: memoryview) -> list[bytes]:
        end = len(view)
        pos = 0
        out: list[bytes] = []
        buffer = self._buffer
        if buffer:  # finish the frame we hold before reading from ``data`` directly
            if len(buffer) == 1:
                if not end:
                    return out
                buffer.append(view[0])
                pos = 1
            need = 2 + (buffer[0] << 8 | buffer[1]) - len(buffer)
            if end - pos < need:
                buffer += view[pos:]
                return out
            buffer += view[pos : pos + need]
            pos += need
            frame = memoryview(buffer)[2:]
            try:
                out.append(self._open(frame))
            finally:
                frame.release()  # the buffer cannot be resized while a view exists
            buffer.clear()
        decrypt = self._decrypt
        nonce = self._recv_nonce
        try:
            while end - pos >= 2:
                stop = pos + 2 + (view[pos] << 8 | view[pos + 1])
                if stop > end:
                    break
                if nonce >= _MAX_NONCE:
                    raise DecryptionError("noise receive nonce exhausted")
                out.append(decrypt(_pack_nonce(nonce), view[pos + 2 : stop], None))
                nonce += 1
                pos = stop
        except InvalidTag as exc:
            self._broken = True
            raise DecryptionError("noise frame failed authentication") from exc
        except DecryptionError:
            self._broken = True
            raise
        finally:
            self._recv_nonce = nonce
        if pos < end:
            buffer += view[pos:]
        return out

    def _open(self, ciphertext: bytes | memoryview) -> bytes:
        nonce = self._recv_nonce
        if nonce >= _MAX_NONCE:
            self._broken = True
            raise DecryptionError("noise receive nonce exhausted")
        try:
            plaintext = self._decrypt(_pack_nonce(nonce), ciphertext, None)
        except InvalidTag as exc:
            self._broken = True
            raise DecryptionError("noise frame failed authentication") from exc
        self._recv_nonce = nonce + 1
        return plaintext
