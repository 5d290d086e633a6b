"""uvarint length-prefixed frames: round trip, incremental input, both limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiop2p._wire.framing import encode_uvarint_frame, take_uvarint_frame
from aiop2p.errors import LocalProtocolError, MessageTooLargeError, RemoteProtocolError


@given(st.lists(st.binary(max_size=300), max_size=5), st.integers(1, 50))
def test_round_trip_in_chunks(payloads: list[bytes], chunk: int) -> None:
    wire = b"".join(encode_uvarint_frame(p, 300, "m") for p in payloads)
    buffer = bytearray()
    got: list[bytes] = []
    for i in range(0, len(wire), chunk):
        buffer += wire[i : i + chunk]
        while (frame := take_uvarint_frame(buffer, 300, "m")) is not None:
            got.append(frame)
    assert got == payloads
    assert not buffer


def test_incomplete_leaves_buffer() -> None:
    buffer = bytearray(b"\x05abc")
    assert take_uvarint_frame(buffer, 10, "m") is None
    assert buffer == b"\x05abc"


def test_limits() -> None:
    with pytest.raises(LocalProtocolError, match=r"^thing of 3 bytes exceeds the limit of 2 bytes"):
        encode_uvarint_frame(b"abc", 2, "thing")
    with pytest.raises(MessageTooLargeError, match=r"^thing of 300 bytes exceeds"):
        take_uvarint_frame(bytearray(b"\xac\x02"), 299, "thing")  # refused before the payload


def test_malformed_prefix() -> None:
    with pytest.raises(RemoteProtocolError):
        take_uvarint_frame(bytearray(b"\x80\x00"), 10, "m")  # not minimal
