"""Base58 (Bitcoin alphabet): known values, leading zero bytes, characters outside it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiop2p._wire.base58 import b58decode, b58encode
from aiop2p.errors import InvalidArgumentError


def test_base58_known_values() -> None:
    assert b58encode(b"") == ""
    assert b58encode(b"\0\0") == "11"
    assert b58encode(b"hello world") == "StV1DL6CwTryKyV"
    assert b58decode("StV1DL6CwTryKyV") == b"hello world"
    assert b58decode("11StV1DL6CwTryKyV") == b"\0\0hello world"
    with pytest.raises(InvalidArgumentError):
        b58decode("0OIl")


@given(st.binary(max_size=200))
def test_base58_round_trip(data: bytes) -> None:
    assert b58decode(b58encode(data)) == data
