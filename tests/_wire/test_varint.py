"""Unsigned varints: minimal encoding, at most 9 bytes (63 bits), incomplete input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiop2p._wire.varint import MAX_VARINT_BYTES, decode_uvarint, encode_uvarint
from aiop2p.errors import RemoteProtocolError


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02")],
)
def test_known_encodings(value: int, encoded: bytes) -> None:
    assert encode_uvarint(value) == encoded
    assert decode_uvarint(encoded) == (value, len(encoded))


@given(st.integers(min_value=0, max_value=(1 << 63) - 1))
def test_round_trip_at_an_offset(value: int) -> None:
    data = b"\xff" + encode_uvarint(value) + b"tail"
    assert decode_uvarint(data, 1) == (value, len(data) - 4)


def test_largest_value_takes_nine_bytes() -> None:
    assert len(encode_uvarint((1 << 63) - 1)) == MAX_VARINT_BYTES


@pytest.mark.parametrize("value", [-1, 1 << 63])
def test_values_outside_63_bits_are_refused(value: int) -> None:
    with pytest.raises(ValueError):
        encode_uvarint(value)


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff\xff"])
def test_incomplete_input_asks_for_more(data: bytes) -> None:
    assert decode_uvarint(data) is None


def test_ten_bytes_are_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="longer than 9 bytes"):
        decode_uvarint(b"\x80" * 9 + b"\x01")


def test_non_minimal_encoding_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="minimally"):
        decode_uvarint(b"\x81\x00")
