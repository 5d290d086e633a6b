"""How request and response values become bytes on the wire.

The default is JSON (UTF-8, compact), as the seed's serde_json; ``RawCodec`` passes
bytes through untouched; any object with ``encode``/``decode`` is a codec.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from ..errors import InvalidArgumentError

__all__ = ["Codec", "CodecError", "JsonCodec", "RawCodec"]


class CodecError(InvalidArgumentError):
    """A value could not be encoded, or bytes could not be decoded."""


@runtime_checkable
class Codec(Protocol):
    """Turns values into bytes and back; raise :class:`CodecError` on bad input."""

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class JsonCodec:
    """JSON, compact, UTF-8 — wire-compatible with the seed's serde_json values."""

    def encode(self, value: Any) -> bytes:
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise CodecError(f"cannot encode as JSON: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise CodecError(f"invalid JSON: {exc}") from exc


class RawCodec:
    """Bytes in, bytes out."""

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise CodecError(f"RawCodec sends bytes, not {type(value).__name__}")
        return bytes(value)

    def decode(self, data: bytes) -> bytes:
        return data
