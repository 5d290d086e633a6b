"""Signed peer records (RFC 0003 in an RFC 0002 envelope): codec, sealing and every way a
received one can be wrong."""

from __future__ import annotations

import pytest

from aiop2p._wire.protobuf import encode_bytes_field, encode_varint_field
from aiop2p.errors import InvalidArgumentError, InvalidSignatureError, RemoteProtocolError
from aiop2p.identity import KeyPair
from aiop2p.multiaddr import Multiaddr
from aiop2p.protocols import envelope
from aiop2p.protocols.peer_record import (
    MAX_PEER_RECORD_ADDRS,
    PEER_RECORD_DOMAIN,
    PEER_RECORD_PAYLOAD_TYPE,
    PeerRecord,
    open_peer_record,
    seal_peer_record,
)

KEY = KeyPair.from_ed25519_seed(bytes(range(32)))
EMPTY = PeerRecord(KEY.peer_id, 1, ()).encode()
ADDRS = (Multiaddr("/ip4/192.0.2.1/tcp/4001"), Multiaddr("/ip6/2001:db8::1/tcp/4001/ws"))


def test_wire_format() -> None:
    record = PeerRecord(KEY.peer_id, 300, ADDRS[:1])
    expected = (
        encode_bytes_field(1, KEY.peer_id.to_bytes())
        + encode_varint_field(2, 300)
        + encode_bytes_field(3, encode_bytes_field(1, ADDRS[0].to_bytes()))
    )
    assert record.encode() == expected
    assert PeerRecord.decode(expected) == record
    assert PEER_RECORD_DOMAIN == "libp2p-peer-record"
    assert bytes([0x03, 0x01]) == PEER_RECORD_PAYLOAD_TYPE  # multicodec 0x0301


def test_seal_and_open_round_trip() -> None:
    record = PeerRecord(KEY.peer_id, 2**63 - 1, ADDRS)
    sealed = seal_peer_record(KEY, record)
    assert open_peer_record(sealed) == record
    outer = envelope.SignedEnvelope.decode(sealed)
    assert outer.payload_type == PEER_RECORD_PAYLOAD_TYPE and outer.peer_id == KEY.peer_id


def test_unknown_address_is_skipped_and_counted() -> None:
    raw = PeerRecord(KEY.peer_id, 1, ADDRS[:1]).encode() + encode_bytes_field(
        3, encode_bytes_field(1, b"\xff\xff\x03\x00")
    )
    sealed = envelope.seal(KEY, PEER_RECORD_DOMAIN, PEER_RECORD_PAYLOAD_TYPE, raw).encode()
    record = open_peer_record(sealed)
    assert record.addrs == ADDRS[:1] and record.unknown_addrs == 1


def _sealed(payload: bytes, *, domain: str = PEER_RECORD_DOMAIN, key: KeyPair = KEY) -> bytes:
    return envelope.seal(key, domain, PEER_RECORD_PAYLOAD_TYPE, payload).encode()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        # signed for another purpose (a relay voucher's domain)
        (_sealed(PeerRecord(KEY.peer_id, 1, ADDRS).encode(), domain="libp2p-relay-rsvp"),
         InvalidSignatureError),
        # a record of another peer, signed by KEY
        (_sealed(PeerRecord(KeyPair.generate().peer_id, 1, ADDRS).encode()), RemoteProtocolError),
        # not a peer record's payload type
        (envelope.seal(KEY, PEER_RECORD_DOMAIN, b"\x03\x02", EMPTY).encode(), RemoteProtocolError),
        # no peer id, garbage peer id, wrong wire types, too many addresses, not protobuf
        (_sealed(encode_varint_field(2, 1)), RemoteProtocolError),
        (_sealed(encode_bytes_field(1, b"\x00\x01")), RemoteProtocolError),
        (_sealed(encode_varint_field(1, 7)), RemoteProtocolError),
        (_sealed(PeerRecord(KEY.peer_id, 1, ()).encode() + encode_varint_field(3, 1)),
         RemoteProtocolError),
        (_sealed(PeerRecord(KEY.peer_id, 1, ADDRS[:1] * (MAX_PEER_RECORD_ADDRS + 1)).encode()),
         RemoteProtocolError),
        (_sealed(b"\xff\xff\xff"), RemoteProtocolError),
        (b"\x0a\x02garbage", RemoteProtocolError),
        (b"\x00" * (17 * 1024), RemoteProtocolError),
    ],
)  # fmt: skip
def test_bad_records_are_refused(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        open_peer_record(data)


def test_tampered_signature_is_refused() -> None:
    sealed = bytearray(seal_peer_record(KEY, PeerRecord(KEY.peer_id, 5, ADDRS)))
    sealed[-1] ^= 1
    with pytest.raises(InvalidSignatureError):
        open_peer_record(bytes(sealed))


def test_sealing_checks_key_and_seq() -> None:
    with pytest.raises(InvalidArgumentError):
        seal_peer_record(KEY, PeerRecord(KeyPair.generate().peer_id, 1, ADDRS))
    with pytest.raises(InvalidArgumentError):
        seal_peer_record(KEY, PeerRecord(KEY.peer_id, 2**63, ADDRS))
