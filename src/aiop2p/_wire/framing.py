"""Unsigned-varint length-prefixed frames: ``uvarint(len(payload)) + payload``.

The framing of multistream-select messages and of the protobuf messages of circuit
relay v2 and DCUtR.  Both directions are bounded: we refuse to send a payload above the
limit (a local bug, :class:`LocalProtocolError`) and refuse a peer's length prefix above
it as soon as the prefix is complete, before buffering the payload
(:class:`MessageTooLargeError`).  ``what`` names the message in the error text.
"""

from __future__ import annotations

from ..errors import LocalProtocolError, MessageTooLargeError
from .varint import decode_uvarint, encode_uvarint

__all__ = ["encode_uvarint_frame", "take_uvarint_frame"]


def encode_uvarint_frame(payload: bytes, max_bytes: int, what: str) -> bytes:
    """``uvarint(len) + payload``; raises :class:`LocalProtocolError` above ``max_bytes``."""
    size = len(payload)
    if size > max_bytes:
        raise LocalProtocolError(f"{what} of {size} bytes exceeds the limit of {max_bytes} bytes")
    return encode_uvarint(size) + payload


def take_uvarint_frame(buffer: bytearray, max_bytes: int, what: str) -> bytes | None:
    """Remove and return the payload of the first frame in ``buffer``, None if incomplete.

    Raises :class:`MessageTooLargeError` for a length above ``max_bytes`` (the buffer is
    then left as it was) and :class:`RemoteProtocolError` for a malformed length prefix.
    """
    got = decode_uvarint(buffer, 0)
    if got is None:
        return None
    length, start = got
    if length > max_bytes:
        raise MessageTooLargeError(length, max_bytes, what)
    end = start + length
    if len(buffer) < end:
        return None
    frame = bytes(buffer[start:end])
    del buffer[:end]
    return frame
