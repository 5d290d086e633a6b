"""Perf (``/perf/1.0.0``, libp2p ``perf/perf.md``).

The client sends an 8-byte big-endian count of bytes it wants back, then its upload,
then closes its write side; the server counts the upload to EOF, then sends the
requested bytes and closes.
"""

from __future__ import annotations

import struct

__all__ = ["PERF_PROTOCOL_ID", "decode_perf_header", "encode_perf_header"]

PERF_PROTOCOL_ID = "/perf/1.0.0"
_U64 = struct.Struct(">Q")


def encode_perf_header(download_bytes: int) -> bytes:
    return _U64.pack(download_bytes)


def decode_perf_header(data: bytes) -> int:
    (value,) = _U64.unpack(data)
    return int(value)
