"""noise-libp2p XX handshake and transport cipher, driven without sockets."""

from __future__ import annotations

import array
import hashlib
import itertools
from typing import cast

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from aiop2p._wire.protobuf import encode_bytes_field, encode_varint_field
from aiop2p.errors import (
    DecryptionError,
    HandshakeError,
    InvalidArgumentError,
    InvalidSignatureError,
    InvalidStateError,
    LimitExceededError,
    MessageTooLargeError,
    PeerIdMismatchError,
    RemoteProtocolError,
)
from aiop2p.identity import KeyPair, PublicKey
from aiop2p.protocols.noise import (
    MAX_NOISE_FRAME_SIZE,
    MAX_PLAINTEXT_SIZE,
    MAX_STREAM_MUXERS,
    NOISE_PROTOCOL_ID,
    SIGNATURE_PREFIX,
    HandshakeCompleted,
    HandshakeFailed,
    HandshakePayload,
    NoiseCredentials,
    NoiseEvent,
    NoiseHandshake,
    NoiseTransport,
    VerifiedIdentities,
    decode_handshake_payload,
    encode_handshake_payload,
)
from aiop2p.protocols.role import Role

from ._pair import run, settle, x25519

INITIATOR_ID = KeyPair.from_ed25519_seed(bytes(range(32)))
RESPONDER_ID = KeyPair.from_ed25519_seed(bytes(range(32, 64)))


def fixed_pair(
    *,
    initiator_identity: KeyPair = INITIATOR_ID,
    responder_identity: KeyPair = RESPONDER_ID,
    expected: bool = True,
) -> tuple[NoiseHandshake, NoiseHandshake]:
    """A deterministic initiator/responder pair (fixed static and ephemeral keys)."""
    initiator = NoiseHandshake(
        role=Role.INITIATOR,
        credentials=NoiseCredentials.create(initiator_identity, x25519(1)),
        ephemeral_key=x25519(2),
        expected_peer=RESPONDER_ID.peer_id if expected else None,
    )
    responder = NoiseHandshake(
        role=Role.RESPONDER,
        credentials=NoiseCredentials.create(responder_identity, x25519(3)),
        ephemeral_key=x25519(4),
    )
    return initiator, responder


def random_pair() -> tuple[NoiseHandshake, NoiseHandshake]:
    a, b = KeyPair.generate(), KeyPair.generate()
    initiator = NoiseHandshake(
        role=Role.INITIATOR,
        credentials=NoiseCredentials.create(a, X25519PrivateKey.generate()),
        ephemeral_key=X25519PrivateKey.generate(),
        expected_peer=b.peer_id,
    )
    responder = NoiseHandshake(
        role=Role.RESPONDER,
        credentials=NoiseCredentials.create(b, X25519PrivateKey.generate()),
        ephemeral_key=X25519PrivateKey.generate(),
    )
    return initiator, responder


def completed(events: list[NoiseEvent]) -> HandshakeCompleted:
    assert len(events) == 1, events
    event = events[0]
    assert isinstance(event, HandshakeCompleted), event
    return event


def failed(events: list[NoiseEvent]) -> Exception:
    assert len(events) == 1, events
    event = events[0]
    assert isinstance(event, HandshakeFailed), event
    return event.error


def handshake() -> tuple[HandshakeCompleted, HandshakeCompleted]:
    initiator, responder = random_pair()
    settle(initiator, responder)
    return completed(initiator.events_received()), completed(responder.events_received())


class LyingIdentity:
    """Presents a real public key but signs something other than the Noise static key."""

    def __init__(self, real: KeyPair, key_protobuf: bytes | None = None) -> None:
        self.public_key = real.public_key if key_protobuf is None else _RawKey(key_protobuf)
        self._real = real

    def sign(self, message: bytes) -> bytes:
        assert message.startswith(SIGNATURE_PREFIX)
        return self._real.sign(SIGNATURE_PREFIX + bytes(32))


class _RawKey:
    def __init__(self, protobuf: bytes) -> None:
        self._protobuf = protobuf

    def to_protobuf(self) -> bytes:
        return self._protobuf


# --- handshake -------------------------------------------------------------------------


def test_constants() -> None:
    assert NOISE_PROTOCOL_ID == "/noise"
    assert MAX_NOISE_FRAME_SIZE == 65535
    assert MAX_PLAINTEXT_SIZE == 65519


def test_handshake_completes() -> None:
    initiator, responder = fixed_pair()
    first = initiator.data_to_send()
    assert len(first) == 2 + 32  # framed ephemeral key, empty payload
    responder.receive_data(first)
    initiator.receive_data(responder.data_to_send())
    out = completed(initiator.events_received())
    assert initiator.done and not responder.done
    responder.receive_data(initiator.data_to_send())
    inn = completed(responder.events_received())
    assert responder.done
    assert initiator.data_to_send() == b"" and responder.data_to_send() == b""
    assert out.remote_peer == RESPONDER_ID.peer_id and inn.remote_peer == INITIATOR_ID.peer_id
    assert out.remote_public_key == RESPONDER_ID.public_key
    assert inn.remote_public_key == INITIATOR_ID.public_key
    assert out.leftover == b"" and inn.leftover == b""
    assert out.transport.handshake_hash == inn.transport.handshake_hash
    assert inn.transport.decrypt(out.transport.encrypt(b"ping")) == [b"ping"]
    assert out.transport.decrypt(inn.transport.encrypt(b"pong")) == [b"pong"]


def test_leftover_after_message_3_belongs_to_transport() -> None:
    initiator, responder = random_pair()
    responder.receive_data(initiator.data_to_send())
    initiator.receive_data(responder.data_to_send())
    out = completed(initiator.events_received())
    early = out.transport.encrypt(b"early data") + out.transport.encrypt(b"more")
    responder.receive_data(initiator.data_to_send() + early[:7])
    inn = completed(responder.events_received())
    assert inn.leftover == early[:7]
    assert inn.transport.decrypt(inn.leftover) == []
    assert inn.transport.buffered_size == 7
    assert inn.transport.decrypt(early[7:]) == [b"early data", b"more"]


def test_leftover_after_message_2_belongs_to_transport() -> None:
    # Fixed keys make two runs identical, so the responder's first transport frame from
    # the first run can be glued to message 2 of the second run.
    initiator, responder = fixed_pair()
    settle(initiator, responder)
    frame = completed(responder.events_received()).transport.encrypt(b"from responder")

    initiator, responder = fixed_pair()
    responder.receive_data(initiator.data_to_send())
    initiator.receive_data(responder.data_to_send() + frame)
    out = completed(initiator.events_received())
    assert out.leftover == frame
    assert out.transport.decrypt(out.leftover) == [b"from responder"]


def test_peer_id_mismatch() -> None:
    initiator = NoiseHandshake(
        role=Role.INITIATOR,
        credentials=NoiseCredentials.create(INITIATOR_ID, x25519(1)),
        ephemeral_key=x25519(2),
        expected_peer=KeyPair.generate().peer_id,
    )
    responder = NoiseHandshake(
        role=Role.RESPONDER,
        credentials=NoiseCredentials.create(RESPONDER_ID, x25519(3)),
        ephemeral_key=x25519(4),
    )
    settle(initiator, responder)
    error = failed(initiator.events_received())
    assert isinstance(error, PeerIdMismatchError)
    assert error.actual == RESPONDER_ID.peer_id
    assert initiator.data_to_send() == b""  # message 3 is not sent
    assert not responder.done


def test_responder_without_expectation_accepts_anyone() -> None:
    initiator, responder = fixed_pair(expected=False)
    settle(initiator, responder)
    assert completed(initiator.events_received()).remote_peer == RESPONDER_ID.peer_id
    assert completed(responder.events_received()).remote_peer == INITIATOR_ID.peer_id


@pytest.mark.parametrize("liar", ["initiator", "responder"])
def test_bad_signature(liar: str) -> None:
    lying = cast(KeyPair, LyingIdentity(INITIATOR_ID if liar == "initiator" else RESPONDER_ID))
    if liar == "initiator":
        initiator, responder = fixed_pair(initiator_identity=lying)
    else:
        initiator, responder = fixed_pair(responder_identity=lying)
    settle(initiator, responder)
    victim = responder if liar == "initiator" else initiator
    assert isinstance(failed(victim.events_received()), InvalidSignatureError)


@pytest.mark.parametrize(
    "key_protobuf",
    [b"\x08\x01\x12\x03abc", b"\x08\x09\x12\x20" + bytes(32), b"\xff"],
)
def test_unusable_identity_key(key_protobuf: bytes) -> None:
    lying = cast(KeyPair, LyingIdentity(RESPONDER_ID, key_protobuf))
    initiator, responder = fixed_pair(responder_identity=lying)
    settle(initiator, responder)
    error = failed(initiator.events_received())
    assert isinstance(error, HandshakeError | RemoteProtocolError)


def _messages() -> tuple[bytes, bytes, bytes]:
    initiator, responder = fixed_pair()
    m1 = initiator.data_to_send()
    responder.receive_data(m1)
    m2 = responder.data_to_send()
    initiator.receive_data(m2)
    m3 = initiator.data_to_send()
    return m1, m2, m3


def test_tampered_handshake_messages() -> None:
    m1, m2, m3 = _messages()
    for index, message in enumerate((m1, m2, m3)):
        for position in range(2, len(message)):
            tampered = bytearray(message)
            tampered[position] ^= 0x01
            initiator, responder = fixed_pair()
            wire = [m1, m2, m3]
            wire[index] = bytes(tampered)
            responder.receive_data(wire[0])
            if index == 0:  # message 1 is unauthenticated: the initiator notices in message 2
                initiator.receive_data(responder.data_to_send())
                victim = initiator
            elif index == 1:
                initiator.receive_data(wire[1])
                victim = initiator
            else:
                initiator.receive_data(wire[1])
                completed(initiator.events_received())
                responder.receive_data(wire[2])
                victim = responder
            error = failed(victim.events_received())
            assert isinstance(error, DecryptionError | RemoteProtocolError), (index, position)
            assert victim.done and victim.data_to_send() == b""


def test_known_answer_transcript() -> None:
    """Fixed keys give a fixed transcript.

    These values were produced by this implementation and checked once, byte for byte
    (messages, handshake hash and first transport frames), against the independent
    ``noiseprotocol`` package with the same keys, empty prologue and payloads.
    """
    m1, m2, m3 = _messages()
    assert m1 == b"\x00\x20" + x25519(2).public_key().public_bytes_raw()
    initiator, responder = fixed_pair()
    settle(initiator, responder)
    out = completed(initiator.events_received())
    inn = completed(responder.events_received())
    assert out.transport.handshake_hash == inn.transport.handshake_hash
    assert out.transport.handshake_hash.hex() == KAT_HANDSHAKE_HASH
    assert hashlib.sha256(m1 + m2 + m3).hexdigest() == KAT_TRANSCRIPT_SHA256
    assert out.transport.encrypt(b"hello from initiator").hex() == KAT_INITIATOR_FRAME
    assert inn.transport.encrypt(b"hello from responder").hex() == KAT_RESPONDER_FRAME


KAT_HANDSHAKE_HASH = "551c1d1168d45e6e27d77d38182d78188cfefb57ba3866ca525b6d170bf92b5d"
KAT_TRANSCRIPT_SHA256 = "6c1262d41012fb5f7cc52f2a436edb60131ae1d9b6d6c9e890b48e8cace5c6ee"
KAT_INITIATOR_FRAME = "0024f5c8fdccae5bcaf81c40473c5164bed0ebda9bbf2d665c21803af194887c4548b8774136"
KAT_RESPONDER_FRAME = "0024f09e15df51db1624967fd57add79391f903afe4aadfb91210117ef6926129466672ccaef"


def test_low_order_ephemeral_key() -> None:
    _, responder = fixed_pair()
    responder.receive_data(b"\x00\x20" + bytes(32))
    assert isinstance(failed(responder.events_received()), RemoteProtocolError)


@pytest.mark.parametrize(
    ("role", "body"),
    [("responder", bytes(31)), ("initiator", bytes(95)), ("responder3", bytes(63))],
)
def test_short_messages(role: str, body: bytes) -> None:
    initiator, responder = fixed_pair()
    frame = len(body).to_bytes(2, "big") + body
    if role == "initiator":
        initiator.receive_data(frame)
        victim = initiator
    else:
        if role == "responder3":
            responder.receive_data(initiator.data_to_send())
        responder.receive_data(frame)
        victim = responder
    error = failed(victim.events_received())
    assert isinstance(error, RemoteProtocolError) and "too short" in str(error)


def test_eof_and_input_after_the_end() -> None:
    initiator, responder = fixed_pair()
    initiator.receive_eof()
    assert type(failed(initiator.events_received())) is HandshakeError
    initiator.receive_data(b"ignored")
    initiator.receive_eof()
    assert initiator.events_received() == []

    initiator, responder = fixed_pair()
    settle(initiator, responder)
    responder.receive_eof()
    assert len(responder.events_received()) == 1
    with pytest.raises(InvalidStateError):
        responder.receive_data(b"x")


def test_empty_data_is_ignored() -> None:
    _, responder = fixed_pair()
    responder.receive_data(b"")
    assert not responder.done and responder.events_received() == []


def test_split_at_every_byte_boundary() -> None:
    m1, m2, m3 = _messages()
    for cut in range(len(m2) + 1):
        initiator, responder = fixed_pair()
        initiator.data_to_send()
        initiator.receive_data(m2[:cut])
        if cut < len(m2):
            assert initiator.events_received() == []
            initiator.receive_data(m2[cut:])
        assert completed(initiator.events_received()).leftover == b""
        assert initiator.data_to_send() == m3
    tail = b"\x00\x05abcde"
    stream = m1 + m3 + tail
    for cut in range(len(stream) + 1):
        initiator, responder = fixed_pair()
        responder.receive_data(stream[:cut])
        rest = stream[cut:]
        if not responder.done:
            responder.receive_data(rest)
            rest = b""
        assert responder.data_to_send() == m2
        assert completed(responder.events_received()).leftover + rest == tail, cut


# --- payload codec ---------------------------------------------------------------------


def test_payload_codec() -> None:
    payload = encode_handshake_payload(b"key", b"sig")
    assert decode_handshake_payload(payload) == HandshakePayload(b"key", b"sig", ())
    extensions = encode_bytes_field(1, b"certhash") + encode_bytes_field(2, "/yamux/1.0.0")
    with_extensions = payload + encode_bytes_field(4, extensions) + encode_varint_field(9, 1)
    assert decode_handshake_payload(with_extensions) == HandshakePayload(
        b"key", b"sig", ("/yamux/1.0.0",), (b"certhash",)
    )
    muxers = ("/yamux/1.0.0", "/mplex/6.7.0")
    encoded = encode_handshake_payload(b"key", b"sig", muxers)
    assert decode_handshake_payload(encoded) == HandshakePayload(b"key", b"sig", muxers)
    hashes = (b"\x12\x20" + bytes(32), b"\x12\x20" + bytes(range(32)))
    encoded = encode_handshake_payload(b"key", b"sig", webtransport_certhashes=hashes)
    assert decode_handshake_payload(encoded) == HandshakePayload(b"key", b"sig", (), hashes)


def test_a_webtransport_responder_announces_its_certhashes_to_the_initiator() -> None:
    hashes = (b"\x12\x20" + bytes(32), b"\x12\x20" + bytes(range(32)))
    initiator = NoiseHandshake(
        role=Role.INITIATOR,
        credentials=NoiseCredentials.create(INITIATOR_ID, x25519(1)),
        ephemeral_key=x25519(2),
    )
    responder = NoiseHandshake(
        role=Role.RESPONDER,
        credentials=NoiseCredentials.create(
            RESPONDER_ID, x25519(3), stream_muxers=("/yamux/1.0.0",)
        ).with_webtransport_certhashes(hashes),
        ephemeral_key=x25519(4),
    )
    settle(initiator, responder)
    done = completed(initiator.events_received())
    assert done.remote_certhashes == hashes
    assert done.remote_stream_muxers == ()  # WebTransport needs no muxer
    assert completed(responder.events_received()).remote_certhashes == ()


def _with_extensions(*extensions: bytes) -> bytes:
    payload = encode_handshake_payload(b"key", b"sig")
    return payload + b"".join(encode_bytes_field(4, ext) for ext in extensions)


def test_repeated_extensions_merge_and_unknown_extension_fields_are_skipped() -> None:
    first = encode_bytes_field(2, "/a") + encode_varint_field(7, 3) + encode_bytes_field(9, b"x")
    second = encode_bytes_field(2, "/b")
    assert decode_handshake_payload(_with_extensions(first, second)).stream_muxers == ("/a", "/b")


def test_a_long_muxer_list_is_read_only_up_to_the_bound() -> None:
    # A peer's list is bounded by the 64 KiB frame, not by us: past the bound nothing is
    # read, not even a malformed tail.
    many = b"".join(encode_bytes_field(2, f"/m/{i}") for i in range(5000)) + b"\x0a"
    decoded = decode_handshake_payload(_with_extensions(many))
    assert decoded.stream_muxers == tuple(f"/m/{i}" for i in range(MAX_STREAM_MUXERS))
    certhashes = encode_bytes_field(1, bytes(32)) * MAX_STREAM_MUXERS
    late = encode_bytes_field(2, "/yamux/1.0.0")
    assert decode_handshake_payload(_with_extensions(certhashes, late)).stream_muxers == ()


@pytest.mark.parametrize(
    ("extensions", "message"),
    [
        (encode_bytes_field(2, b"\xff\xfe"), "not UTF-8"),
        (encode_varint_field(2, 1), "wrong type"),
        (encode_varint_field(1, 1), "wrong type"),
        (b"\x12\x10/yamux", "overruns"),
        (b"\x12", "truncated"),
        (b"\x00\x01", "field number 0"),
    ],
)
def test_garbage_extensions_are_a_clear_error(extensions: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        decode_handshake_payload(_with_extensions(extensions))


def test_credentials_sign_the_static_key_once_and_carry_the_muxers() -> None:
    static = x25519(9)
    plain = NoiseCredentials.create(RESPONDER_ID, static)
    early = NoiseCredentials.create(RESPONDER_ID, static, stream_muxers=("/yamux/1.0.0",))
    public = static.public_key().public_bytes_raw()
    for credentials in (plain, early):
        decoded = decode_handshake_payload(credentials.payload)
        assert decoded.identity_key == RESPONDER_ID.public_key.to_protobuf()
        assert RESPONDER_ID.public_key.verify(SIGNATURE_PREFIX + public, decoded.identity_sig)
        assert credentials.static_public == public
    assert decode_handshake_payload(plain.payload).stream_muxers == ()
    assert decode_handshake_payload(early.payload).stream_muxers == ("/yamux/1.0.0",)


@pytest.mark.parametrize("initiator_muxers", [(), ("/yamux/1.0.0",)])
@pytest.mark.parametrize("responder_muxers", [(), ("/mplex/6.7.0", "/yamux/1.0.0")])
def test_each_side_learns_the_muxers_the_other_listed(
    initiator_muxers: tuple[str, ...], responder_muxers: tuple[str, ...]
) -> None:
    initiator = NoiseHandshake(
        role=Role.INITIATOR,
        credentials=NoiseCredentials.create(
            INITIATOR_ID, x25519(1), stream_muxers=initiator_muxers
        ),
        ephemeral_key=x25519(2),
    )
    responder = NoiseHandshake(
        role=Role.RESPONDER,
        credentials=NoiseCredentials.create(
            RESPONDER_ID, x25519(3), stream_muxers=responder_muxers
        ),
        ephemeral_key=x25519(4),
    )
    events_i, events_r = run(initiator, responder)
    [done_i], [done_r] = events_i, events_r
    assert isinstance(done_i, HandshakeCompleted) and isinstance(done_r, HandshakeCompleted)
    assert done_i.remote_stream_muxers == responder_muxers
    assert done_r.remote_stream_muxers == initiator_muxers


def test_the_initiator_sends_no_payload_in_message_1() -> None:
    """The spec: extensions only where the handshake guarantees secrecy (messages 2, 3)."""
    initiator = NoiseHandshake(
        role=Role.INITIATOR,
        credentials=NoiseCredentials.create(
            INITIATOR_ID, x25519(1), stream_muxers=("/yamux/1.0.0",)
        ),
        ephemeral_key=x25519(2),
    )
    assert initiator.data_to_send() == b"\x00\x20" + x25519(2).public_key().public_bytes_raw()


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        encode_bytes_field(1, b"key"),
        encode_bytes_field(2, b"sig"),
        encode_varint_field(1, 5) + encode_bytes_field(2, b"sig"),
        encode_bytes_field(1, b"k")
        + encode_bytes_field(2, b"s")
        + encode_bytes_field(4, b"\x08\x01"),
        encode_bytes_field(1, b"k") + encode_bytes_field(2, b"s") + encode_bytes_field(4, b"\x0a"),
        b"\x0a\x05ab",
    ],
)
def test_malformed_payload(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_handshake_payload(payload)


# --- transport -------------------------------------------------------------------------


def transport_pair() -> tuple[NoiseTransport, NoiseTransport]:
    a = NoiseTransport(b"\x01" * 32, b"\x02" * 32, handshake_hash=b"h")
    b = NoiseTransport(b"\x02" * 32, b"\x01" * 32, handshake_hash=b"h")
    return a, b


@pytest.mark.parametrize("size", [0, 1, 65519, 65520, 200000])
def test_transport_round_trip(size: int) -> None:
    out, inn = handshake()
    data = bytes(i % 251 for i in range(size))
    wire = out.transport.encrypt(data)
    frames = -(-size // MAX_PLAINTEXT_SIZE)
    assert len(wire) == size + 18 * frames
    assert b"".join(inn.transport.decrypt(wire)) == data
    assert len(inn.transport.decrypt(wire[:0])) == 0
    # encrypt_frames produces the same bytes, one frame each, from a bytearray too
    a, b = transport_pair()
    c, _ = transport_pair()
    split = a.encrypt_frames(bytearray(data))
    assert len(split) == frames
    assert all(len(frame) <= 2 + MAX_NOISE_FRAME_SIZE for frame in split)
    assert b"".join(split) == c.encrypt(memoryview(data))
    assert b"".join(b.decrypt(b"".join(split))) == data


def _pieces_at(data: bytes, cuts: list[int]) -> list[bytes | memoryview]:
    """``data`` cut at ``cuts``; odd pieces as read-only views, as Yamux hands them out."""
    bounds = [0, *sorted(cuts), len(data)]
    pieces: list[bytes | memoryview] = []
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        pieces.append(memoryview(data)[lo:hi] if i % 2 else data[lo:hi])
    return pieces


ENCRYPT_INTO_CUTS = [
    [],
    [12],  # a Yamux header, then its payload
    [0, 0, 12, 12],  # empty pieces anywhere
    [MAX_PLAINTEXT_SIZE - 1],
    [MAX_PLAINTEXT_SIZE],
    [MAX_PLAINTEXT_SIZE + 1],
    [1, 2, 3, MAX_PLAINTEXT_SIZE + 5, 2 * MAX_PLAINTEXT_SIZE],  # frames span several pieces
    [12, 12 + 262144, 24 + 262144],  # two header + payload pairs
    list(range(0, 200000, 4999)),  # many pieces per frame
]


@pytest.mark.parametrize("cuts", ENCRYPT_INTO_CUTS)
@pytest.mark.parametrize("size", [1, MAX_PLAINTEXT_SIZE, MAX_PLAINTEXT_SIZE + 1, 262180 + 24])
def test_encrypt_into_frames_pieces_as_encrypt_frames_them_joined(
    cuts: list[int], size: int
) -> None:
    data = hashlib.shake_256(b"bulk").digest(size)
    pieces = _pieces_at(data, [cut for cut in cuts if cut <= size])
    a, b = transport_pair()
    reference, _ = transport_pair()
    sealed = NoiseTransport.sealed_size(size)
    out = bytearray(sealed + 7)  # a larger buffer is fine; the tail is left alone
    assert a.encrypt_into(pieces, out) == sealed
    assert out[:sealed] == reference.encrypt(data)
    assert out[sealed:] == bytes(7)
    assert b"".join(b.decrypt(out[:sealed])) == data
    # the nonces moved on as for encrypt: the next frames still authenticate
    assert b.decrypt(a.encrypt(b"next")) == [b"next"]


def test_encrypt_into_refuses_a_short_buffer_and_writes_nothing_for_no_data() -> None:
    a, b = transport_pair()
    data = bytes(MAX_PLAINTEXT_SIZE + 1)
    with pytest.raises(InvalidArgumentError):
        a.encrypt_into([data], bytearray(NoiseTransport.sealed_size(len(data)) - 1))
    assert a.encrypt_into([b"", memoryview(b"")], bytearray()) == 0
    assert b.decrypt(a.encrypt(b"first")) == [b"first"]  # no nonce was spent above


def test_encrypt_into_a_memoryview_of_a_larger_buffer() -> None:
    a, b = transport_pair()
    data = bytes(range(256)) * 1000
    out = bytearray(NoiseTransport.sealed_size(len(data)) + 10)
    written = a.encrypt_into([data[:100], data[100:]], memoryview(out)[10:])
    assert b"".join(b.decrypt(out[10 : 10 + written])) == data


def test_encrypt_non_byte_memoryview() -> None:
    a, b = transport_pair()
    words = array.array("H", [1, 2, 3])
    assert b.decrypt(a.encrypt(memoryview(words))) == [words.tobytes()]
    assert b.decrypt(b"".join(a.encrypt_frames(memoryview(words)))) == [words.tobytes()]


def test_empty_plaintext_frame() -> None:
    a, b = transport_pair()
    assert a.encrypt(b"") == b"" and a.encrypt_frames(b"") == []
    c, _ = transport_pair()
    assert b.decrypt(c.encrypt(b"x")) == [b"x"]


def test_decrypt_byte_by_byte_and_in_odd_chunks() -> None:
    a, b = transport_pair()
    messages = [b"a", b"bb" * 500, bytes(70000), b"", b"end"]
    wire = b"".join(a.encrypt(m) for m in messages if m)
    expected = [m for m in messages if m]
    plaintexts: list[bytes] = []
    for i in range(0, 2000):
        plaintexts += b.decrypt(wire[i : i + 1])
    for size in (3, 1000, 65537, 100000):
        _, fresh = transport_pair()
        got: list[bytes] = []
        for start in range(0, len(wire), size):
            got += fresh.decrypt(wire[start : start + size])
        assert b"".join(got) == b"".join(expected)
        assert fresh.buffered_size == 0
    plaintexts += b.decrypt(wire[2000:])
    assert b"".join(plaintexts) == b"".join(expected)
    assert b.buffered_size == 0
    assert b.decrypt(b"") == []


def test_decrypt_holding_one_byte() -> None:
    a, b = transport_pair()
    frame = a.encrypt(b"hello")
    assert b.decrypt(frame[:1]) == []
    assert b.buffered_size == 1
    assert b.decrypt(b"") == []
    assert b.decrypt(frame[1:] + a.encrypt(b"world")) == [b"hello", b"world"]


@pytest.mark.parametrize("split", [False, True])
def test_tampered_transport_frame(split: bool) -> None:
    a, b = transport_pair()
    wire = bytearray(a.encrypt(b"first") + a.encrypt(b"second"))
    wire[-3] ^= 0x80
    if split:
        assert b.decrypt(wire[:25]) == [b"first"]
        with pytest.raises(DecryptionError):
            b.decrypt(wire[25:])
    else:
        with pytest.raises(DecryptionError):
            b.decrypt(bytes(wire))
    with pytest.raises(DecryptionError):
        b.decrypt(a.encrypt(b"third"))


def test_short_frame_is_an_authentication_failure() -> None:
    _, b = transport_pair()
    with pytest.raises(DecryptionError):
        b.decrypt(b"\x00\x03abc")


def test_nonce_exhaustion() -> None:
    a, b = transport_pair()
    a._send_nonce = 2**64 - 2
    a.encrypt(b"last")
    with pytest.raises(LimitExceededError):
        a.encrypt(b"one too many")
    with pytest.raises(LimitExceededError):
        a.encrypt_frames(b"x")
    b._recv_nonce = 2**64 - 1
    with pytest.raises(DecryptionError):
        b.decrypt(b"\x00\x10" + bytes(16))
    _, c = transport_pair()
    c._recv_nonce = 2**64 - 1
    c.decrypt(b"\x00")
    with pytest.raises(DecryptionError):
        c.decrypt(b"\x10" + bytes(16))


# --- fuzz ------------------------------------------------------------------------------

_m1, _m2, _m3 = _messages()
_pieces = st.one_of(
    st.binary(max_size=120),
    st.sampled_from([_m1, _m2, _m3, b"\x00\x20" + bytes(32), b"\xff\xff"]),
)


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(_pieces, max_size=6), initiator=st.booleans(), eof=st.booleans())
def test_fuzz_handshake(chunks: list[bytes], initiator: bool, eof: bool) -> None:
    machine = fixed_pair()[0 if initiator else 1]
    machine.data_to_send()
    events: list[NoiseEvent] = []
    for chunk in chunks:
        if machine.done:
            break
        machine.receive_data(chunk)
        machine.data_to_send()
        events += machine.events_received()
    if eof:
        machine.receive_eof()
    events += machine.events_received()
    assert len(events) <= 1
    assert machine.done == bool(events)


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=6))
def test_fuzz_transport(chunks: list[bytes]) -> None:
    _, b = transport_pair()
    for chunk in chunks:
        try:
            b.decrypt(chunk)
        except DecryptionError:
            with pytest.raises(DecryptionError):
                b.decrypt(b"")
            return


def test_oversized_first_message_fails_at_once() -> None:
    _, responder = fixed_pair()
    responder.receive_data(b"\xff\xff" + b"\xff" * 10)
    error = failed(responder.events_received())
    assert isinstance(error, MessageTooLargeError) and error.limit == 1024
    with pytest.raises(InvalidArgumentError):
        NoiseHandshake(
            role=Role.RESPONDER,
            credentials=NoiseCredentials.create(RESPONDER_ID, x25519(3)),
            ephemeral_key=x25519(4),
            max_first_message_size=31,
        )
    # a larger first message (with an ignored payload) is accepted up to the limit
    initiator, responder = fixed_pair()
    initiator.data_to_send()
    responder.receive_data(b"\x00\x24" + x25519(2).public_key().public_bytes_raw() + b"junk")
    assert not responder.done and responder.data_to_send()


# --- verified identities (a reused static key is verified once) --------------------------


def _handshake_with(
    initiator: NoiseCredentials,
    verified: VerifiedIdentities,
    *,
    expected: KeyPair | None = None,
) -> NoiseEvent:
    """Run ``initiator`` against a responder keeping ``verified``; the responder's event."""
    dialer = NoiseHandshake(role=Role.INITIATOR, credentials=initiator, ephemeral_key=x25519(2))
    listener = NoiseHandshake(
        role=Role.RESPONDER,
        credentials=NoiseCredentials.create(RESPONDER_ID, x25519(3)),
        ephemeral_key=x25519(4),
        expected_peer=expected.peer_id if expected is not None else None,
        verified=verified,
    )
    settle(dialer, listener)
    [event] = listener.events_received()
    return event


def test_a_payload_verified_once_is_not_verified_again(monkeypatch: pytest.MonkeyPatch) -> None:
    verified = VerifiedIdentities()
    credentials = NoiseCredentials.create(INITIATOR_ID, x25519(1))
    first = _handshake_with(credentials, verified)
    assert isinstance(first, HandshakeCompleted) and len(verified) == 1
    calls = []
    real_verify = PublicKey.verify

    def counting(self: PublicKey, data: bytes, signature: bytes) -> bool:
        calls.append(data)
        return real_verify(self, data, signature)

    monkeypatch.setattr(PublicKey, "verify", counting)
    again = _handshake_with(credentials, verified)
    assert isinstance(again, HandshakeCompleted) and again.remote_peer == INITIATOR_ID.peer_id
    assert again.remote_public_key == INITIATOR_ID.public_key
    # The dialer still verifies the listener (it keeps no cache here); nobody verified
    # the dialer's static key again.
    checked = [data.removeprefix(SIGNATURE_PREFIX) for data in calls]
    assert credentials.static_public not in checked and len(verified) == 1
    # Another static key under the same identity is verified in full.
    other_credentials = NoiseCredentials.create(INITIATOR_ID, x25519(7))
    other = _handshake_with(other_credentials, verified)
    checked = [data.removeprefix(SIGNATURE_PREFIX) for data in calls]
    assert isinstance(other, HandshakeCompleted) and other_credentials.static_public in checked
    assert len(verified) == 2


def test_a_cached_identity_is_still_checked_against_the_expected_peer() -> None:
    verified = VerifiedIdentities()
    credentials = NoiseCredentials.create(INITIATOR_ID, x25519(1))
    assert isinstance(_handshake_with(credentials, verified), HandshakeCompleted)
    event = _handshake_with(credentials, verified, expected=RESPONDER_ID)
    assert isinstance(event, HandshakeFailed)
    assert isinstance(event.error, PeerIdMismatchError)


def test_a_forged_signature_next_to_a_verified_one_is_refused() -> None:
    """Same identity key and static key as a verified payload, another signature: the
    cache key differs, so it is verified, and refused."""
    verified = VerifiedIdentities()
    honest = NoiseCredentials.create(INITIATOR_ID, x25519(1))
    assert isinstance(_handshake_with(honest, verified), HandshakeCompleted)
    forged = NoiseCredentials.create(cast(KeyPair, LyingIdentity(INITIATOR_ID)), x25519(1))
    event = _handshake_with(forged, verified)
    assert isinstance(event, HandshakeFailed)
    assert isinstance(event.error, InvalidSignatureError)
    assert len(verified) == 1


def test_verified_identities_are_bounded_least_recently_used_first() -> None:
    verified = VerifiedIdentities(max_entries=2)
    a, b, c = (NoiseCredentials.create(INITIATOR_ID, x25519(n)) for n in (11, 12, 13))
    for credentials in (a, b, a, c):  # a used again: b is the least recently used
        assert isinstance(_handshake_with(credentials, verified), HandshakeCompleted)
    assert len(verified) == 2
    identity_key = INITIATOR_ID.public_key.to_protobuf()

    def known(credentials: NoiseCredentials) -> bool:
        sig = decode_handshake_payload(credentials.payload).identity_sig
        return verified.get((identity_key, credentials.static_public, sig)) is not None

    assert known(a) and known(c) and not known(b)
    with pytest.raises(InvalidArgumentError):
        VerifiedIdentities(max_entries=0)


def test_one_whole_frame_alone_and_after_other_inputs() -> None:
    """A single whole frame given as bytes (the common small read) is opened directly:
    the same plaintexts, nonces and terminal failure as the general path."""
    a, b = transport_pair()
    assert b.decrypt(a.encrypt(b"one")) == [b"one"]
    assert b.decrypt(bytearray(a.encrypt(b"two"))) == [b"two"]  # the general path
    three = a.encrypt(b"three")
    assert b.decrypt(three[:4]) == [] and b.decrypt(three[4:]) == [b"three"]
    assert b.decrypt(a.encrypt(b"four")) == [b"four"]
    tampered = bytearray(a.encrypt(b"five"))
    tampered[-1] ^= 1
    with pytest.raises(DecryptionError):
        b.decrypt(bytes(tampered))
    with pytest.raises(DecryptionError):
        b.decrypt(a.encrypt(b"six"))  # terminal
