"""Unsigned LEB128 varints as used by multiformats and protobuf (at most 9 bytes, 63 bits)."""

from __future__ import annotations

from ..errors import RemoteProtocolError

__all__ = ["MAX_VARINT_BYTES", "decode_uvarint", "encode_uvarint"]

MAX_VARINT_BYTES = 9  # multiformats unsigned-varint: 63 bits at most

_ONE_BYTE: tuple[bytes, ...] = tuple(bytes((value,)) for value in range(0x80))
"""The one-byte varints, made once: most lengths on the wire are below 128."""


def encode_uvarint(value: int) -> bytes:
    """Encode a non-negative integer below 2**63."""
    if value < 0x80:
        if value < 0:
            raise ValueError("uvarint cannot encode a negative number")
        return _ONE_BYTE[value]
    if value >= 1 << 63:
        raise ValueError("uvarint cannot encode values of 2**63 or more")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_uvarint(data: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int] | None:
    """Decode a varint at ``pos``; return ``(value, next_pos)`` or ``None`` if incomplete.

    Raises :class:`RemoteProtocolError` for a varint longer than 9 bytes or one that is
    not minimally encoded (a trailing zero byte), as the multiformats spec requires.
    """
    end = len(data)
    if pos < end:
        b = data[pos]
        if b < 0x80:
            return b, pos + 1
    value = 0
    shift = 0
    i = pos
    while i < end:
        b = data[i]
        value |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            if b == 0 and i - pos > 1:
                raise RemoteProtocolError("varint is not minimally encoded")
            return value, i
        shift += 7
        if i - pos >= MAX_VARINT_BYTES:
            raise RemoteProtocolError("varint longer than 9 bytes")
    return None
