"""The perf header: the 8-byte big-endian count of bytes the client wants back."""

from __future__ import annotations

import struct

import pytest

from aiop2p.protocols.perf import decode_perf_header, encode_perf_header


@pytest.mark.parametrize("count", [0, 1, 5 << 20, (1 << 64) - 1])
def test_header_round_trip(count: int) -> None:
    header = encode_perf_header(count)
    assert len(header) == 8 and header == count.to_bytes(8, "big")
    assert decode_perf_header(header) == count


def test_header_is_exactly_eight_bytes() -> None:
    with pytest.raises(struct.error):
        decode_perf_header(b"\0" * 7)
