"""The small protobuf codec: fields in order, unknown wire types skipped, malformed refused."""

from __future__ import annotations

import struct

import pytest

from aiop2p._wire.protobuf import (
    decode_fields,
    encode_bytes_field,
    encode_varint_field,
    fields_dict,
)
from aiop2p._wire.varint import encode_uvarint
from aiop2p.errors import RemoteProtocolError


def test_fields_decode_in_order_with_repeats_grouped() -> None:
    msg = encode_varint_field(1, 150) + encode_bytes_field(2, "hi") + encode_bytes_field(2, b"\0")
    assert encode_varint_field(1, 150) == b"\x08\x96\x01"  # the protobuf docs' example
    assert list(decode_fields(msg)) == [(1, 150), (2, b"hi"), (2, b"\0")]
    assert fields_dict(msg) == {1: [150], 2: [b"hi", b"\0"]}


def test_fixed_width_fields_are_skipped() -> None:
    fixed64 = encode_uvarint(3 << 3 | 1) + struct.pack("<q", -1)
    fixed32 = encode_uvarint(4 << 3 | 5) + struct.pack("<f", 1.5)
    msg = fixed64 + encode_varint_field(1, 7) + fixed32
    assert list(decode_fields(msg)) == [(1, 7)]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80", "truncated field key"),
        (b"\x08", "truncated varint"),
        (b"\x12", "truncated length"),
        (b"\x12\x05abc", "overruns"),
        (b"\x19\x00", "fixed-size field overruns"),
        (b"\x00\x01", "field number 0"),
        (b"\x0b", "unsupported wire type 3"),
    ],
)
def test_malformed_messages_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(RemoteProtocolError, match=reason):
        list(decode_fields(data))
