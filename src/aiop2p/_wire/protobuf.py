"""A tiny protobuf (proto2/proto3 wire format) codec for the handful of libp2p messages.

Why hand-written: the messages are few and small, this avoids a generated-code
dependency, and it is faster than the ``protobuf`` runtime for them.  Only the wire
types libp2p messages use are supported: varint (0), length-delimited (2), and
skipping of 64-bit (1) and 32-bit (5) fields.  Unknown fields are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import RemoteProtocolError
from .varint import decode_uvarint, encode_uvarint

__all__ = [
    "Field",
    "decode_fields",
    "decode_fixed64_fields",
    "encode_bytes_field",
    "encode_fixed64_field",
    "encode_varint_field",
    "fields_dict",
]

VARINT = 0
FIXED64 = 1
LENGTH = 2
FIXED32 = 5

Field = tuple[int, int | bytes]
"""(field number, value): an int for varint fields, bytes for length-delimited ones."""


def encode_varint_field(number: int, value: int) -> bytes:
    return encode_uvarint(number << 3 | VARINT) + encode_uvarint(value)


def encode_bytes_field(number: int, value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return encode_uvarint(number << 3 | LENGTH) + encode_uvarint(len(raw)) + raw


def encode_fixed64_field(number: int, value: int) -> bytes:
    return encode_uvarint(number << 3 | FIXED64) + value.to_bytes(8, "little")


def decode_fields(data: bytes) -> Iterator[Field]:
    """Yield each field of a message; raise :class:`RemoteProtocolError` if malformed.

    64-bit fields are skipped (see :func:`decode_fixed64_fields`)."""
    return _decode(data, False)


def decode_fixed64_fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(number, wire type, value)`` of each field, 64-bit ones included (as an
    unsigned int): for messages with ``fixed64`` fields, where the wire type tells a
    fixed64 from a varint of the same number."""
    return _decode(data, True)


def _decode(data: bytes, fixed64: bool) -> Iterator[Any]:
    pos = 0
    end = len(data)
    while pos < end:
        got = decode_uvarint(data, pos)
        if got is None:
            raise RemoteProtocolError("protobuf: truncated field key")
        key, pos = got
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise RemoteProtocolError("protobuf: field number 0")
        if wire_type == VARINT:
            got = decode_uvarint(data, pos)
            if got is None:
                raise RemoteProtocolError("protobuf: truncated varint")
            value, pos = got
            yield (number, VARINT, value) if fixed64 else (number, value)
        elif wire_type == LENGTH:
            got = decode_uvarint(data, pos)
            if got is None:
                raise RemoteProtocolError("protobuf: truncated length")
            length, pos = got
            if pos + length > end:
                raise RemoteProtocolError("protobuf: length-delimited field overruns message")
            chunk = data[pos : pos + length]
            yield (number, LENGTH, chunk) if fixed64 else (number, chunk)
            pos += length
        elif wire_type == FIXED64:
            if fixed64 and pos + 8 <= end:
                yield number, FIXED64, int.from_bytes(data[pos : pos + 8], "little")
            pos += 8
        elif wire_type == FIXED32:
            pos += 4
        else:
            raise RemoteProtocolError(f"protobuf: unsupported wire type {wire_type}")
        if pos > end:
            raise RemoteProtocolError("protobuf: fixed-size field overruns message")


def fields_dict(data: bytes) -> dict[int, list[int | bytes]]:
    """All fields grouped by number (repeated fields keep their order)."""
    out: dict[int, list[int | bytes]] = {}
    for number, value in decode_fields(data):
        out.setdefault(number, []).append(value)
    return out
