"""How request and response values become bytes on the wire.

The default is JSON (UTF-8, compact), as the seed's serde_json; ``RawCodec`` passes
bytes through untouched; any object with ``encode``/``decode`` is a codec.  A codec whose
requests and responses differ (:class:`~aiop2p.network.TypedCodec`, with a type for each)
has ``encode_request``/``decode_request``/``encode_response``/``decode_response`` instead:
a :class:`RequestResponseCodec`.

JSON from a peer is hostile input: Python's decoder recurses once per nesting level, so
``[[[[…`` would raise ``RecursionError`` (not a ``ValueError``) from deep inside it.
:class:`JsonCodec` therefore measures the nesting with a linear scan first and refuses
anything deeper than ``max_depth`` (serde_json's own default, 128) as a
:class:`CodecError`; a value handed to the application is then shallow enough for any
recursive code (``json.dumps``, ``repr``, rules) to walk.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from itertools import accumulate
from typing import Any, Final, NamedTuple, Protocol, runtime_checkable

from ..errors import CodecError, InvalidArgumentError

__all__ = [
    "DEFAULT_MAX_JSON_DEPTH",
    "Codec",
    "CodecError",
    "CodecFunctions",
    "JsonCodec",
    "RawCodec",
    "RequestResponseCodec",
    "codec_functions",
    "json_loads",
]

DEFAULT_MAX_JSON_DEPTH: Final = 128
"""Deepest nesting of arrays/objects :class:`JsonCodec` accepts (serde_json's default)."""

# A JSON string from its opening quote to its closing quote, or to the end of the input
# when it is unterminated: matching always succeeds at a quote, so removing strings is
# one linear pass (a pattern that can fail there would rescan the rest at every quote).
_STRING: Final = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_OPENS: Final = bytes.maketrans(b"[]{}", b"\x01\x00\x01\x00")
_CLOSES: Final = bytes.maketrans(b"[]{}", b"\x00\x01\x00\x01")
# One encoder for every value: ``json.dumps`` with options would build a new one per call.
_COMPACT_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_encode_str: Final[Callable[[str], str]] = json.encoder.encode_basestring
# The C encoder that ``JSONEncoder.encode`` builds (with a nested function) on every call
# for a container, built once; its options are the compact encoder's, without
# circular-reference markers (a value that contains itself ends in RecursionError,
# reported as nested too deeply).  A container costs a quarter of ``encode``'s time.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_encode_items: Final[Callable[[Any, int], tuple[str, ...]] | None] = (
    None
    if _c_make_encoder is None
    else _c_make_encoder(
        None, _COMPACT_ENCODER.default, _encode_str, None, ":", ",", False, False, True
    )
)
_DECODER: Final = json.JSONDecoder()
# What ``JSONDecoder.decode`` calls through ``raw_decode``: a value must start at index 0
# and end the text; anything else (whitespace around it, bad JSON) goes through
# ``decode`` for json's own answer and message.
_SCAN_ONCE: Final[Callable[[str, int], tuple[Any, int]]] = _DECODER.scan_once  # type: ignore[attr-defined]


def json_depth_exceeds(data: bytes, max_depth: int) -> bool:
    """Whether the JSON text ``data`` nests arrays/objects deeper than ``max_depth``.

    Linear in ``len(data)`` and C-speed (regex, translate, accumulate); brackets inside
    strings do not count.  Invalid JSON may get either answer: the parser rejects it.
    """
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return False  # cannot nest deeper than it has openers
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    depths = map(
        operator.sub,
        accumulate(brackets.translate(_OPENS)),
        accumulate(brackets.translate(_CLOSES)),
    )
    return max(depths, default=0) > max_depth


def json_loads(data: str | bytes, *, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for untrusted text: every failure is a :class:`CodecError`.

    Bad UTF-8, bad JSON and nesting deeper than ``max_depth`` are all refused.
    """
    if isinstance(data, str):
        raw = data.encode("utf-8", "surrogatepass")
        text = data
    else:
        # Decoded here as ``json.loads`` would (same detection, same errors), once.
        raw = data
        if len(data) >= 2 and 0 < data[0] < 0xEF and data[1]:
            encoding = "utf-8"  # no BOM, no NUL: json.detect_encoding's answer, sooner
        else:
            encoding = json.detect_encoding(data)
        try:
            text = data.decode(encoding, "surrogatepass")
        except UnicodeDecodeError as exc:
            raise CodecError(f"invalid JSON: {exc}") from exc
        if not encoding.startswith("utf-8"):  # UTF-16/32: scan its UTF-8 form
            raw = text.encode("utf-8", "surrogatepass")
    # The cheap bounds first, inline: most texts cannot nest deeper than they have openers,
    # and a text no longer than max_depth has no more openers than that (no scan at all).
    if (
        len(raw) > max_depth
        and raw.count(b"[") + raw.count(b"{") > max_depth
        and json_depth_exceeds(raw, max_depth)
    ):
        raise CodecError(f"invalid JSON: nested deeper than {max_depth} levels")
    try:
        try:
            value, end = _SCAN_ONCE(text, 0)  # a BOM is no value: StopIteration
        except StopIteration:
            end = -1
        if end == len(text):
            return value
        if text.startswith("\ufeff"):
            return json.loads(text)  # refused, with json's message for a BOM
        return _DECODER.decode(text)  # what json.loads calls, one call sooner
    except (UnicodeDecodeError, ValueError) as exc:
        raise CodecError(f"invalid JSON: {exc}") from exc
    except RecursionError:  # only if max_depth is set above what the stack allows
        raise CodecError("invalid JSON: nested too deeply for this process") from None


@runtime_checkable
class Codec(Protocol):
    """Turns values into bytes and back; raise :class:`CodecError` on bad input."""

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


@runtime_checkable
class RequestResponseCodec(Protocol):
    """A codec with one type for requests and another for responses; raise
    :class:`CodecError` on bad input."""

    def encode_request(self, value: Any) -> bytes: ...

    def decode_request(self, data: bytes) -> Any: ...

    def encode_response(self, value: Any) -> bytes: ...

    def decode_response(self, data: bytes) -> Any: ...


class CodecFunctions(NamedTuple):
    """The four conversions of a request exchange."""

    encode_request: Callable[[Any], bytes]
    decode_request: Callable[[bytes], Any]
    encode_response: Callable[[Any], bytes]
    decode_response: Callable[[bytes], Any]


def codec_functions(codec: Codec | RequestResponseCodec) -> CodecFunctions:
    """The conversions ``codec`` does, its bound methods themselves (no wrapper per call):
    ``encode``/``decode`` both ways for a :class:`Codec`."""
    if isinstance(codec, RequestResponseCodec):
        return CodecFunctions(
            codec.encode_request, codec.decode_request, codec.encode_response, codec.decode_response
        )
    return CodecFunctions(codec.encode, codec.decode, codec.encode, codec.decode)


class JsonCodec:
    """JSON, compact, UTF-8 — wire-compatible with the seed's serde_json values.

    ``max_depth`` (a count, default :data:`DEFAULT_MAX_JSON_DEPTH`) bounds how deeply a
    decoded value may nest; deeper input is a :class:`CodecError`, like serde_json's
    ``RecursionLimitExceeded``.
    """

    def __init__(self, *, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> None:
        if max_depth < 1:
            raise InvalidArgumentError(f"max_depth must be at least 1, not {max_depth}")
        self.max_depth = max_depth

    def encode(self, value: Any) -> bytes:
        try:
            if type(value) is str:
                return _encode_str(value).encode()
            if _encode_items is not None:
                return "".join(_encode_items(value, 0)).encode()
            return _COMPACT_ENCODER.encode(value).encode()
        except (TypeError, ValueError) as exc:
            raise CodecError(f"cannot encode as JSON: {exc}") from exc
        except RecursionError:
            raise CodecError(
                "cannot encode as JSON: the value is nested too deeply (or contains itself)"
            ) from None

    def decode(self, data: bytes) -> Any:
        return json_loads(data, max_depth=self.max_depth)


class RawCodec:
    """Bytes in, bytes out."""

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise CodecError(f"RawCodec sends bytes, not {type(value).__name__}")
        return bytes(value)

    def decode(self, data: bytes) -> bytes:
        return data
