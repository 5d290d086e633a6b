"""Typed request-response: JSON checked against declared request and response types.

:class:`TypedCodec` decodes a request into the request type and a response into the
response type with msgspec (``pip install 'aiop2p[typed]'``), so a handler receives a
typed object, never a dict of unchecked shape.  Types are msgspec ``Struct`` classes (or
any type msgspec decodes: dataclasses, ``TypedDict``, ``list[int]``, ``Annotated`` with
``msgspec.Meta`` bounds).  A union of ``Struct`` classes declared with ``tag=True``
travels as ``{"type": "<class name>", ...}`` and decodes to the class it names: routing by
type is then a ``match`` on the request (docs/network.md, "Typed requests").

A value of the wrong shape raises :class:`~aiop2p.errors.InvalidMessageError` naming the
field (``at `$.key```): on the responder, an inbound request is rejected as an invalid
request (the requester sees the stream reset, ``RequestRefusedError``); on the requester,
a response is refused as an invalid response.  Outbound values are checked the same way
before they leave, so a bug in our own code fails here with the field named rather than
as a rejection by the peer.

Peer input is hostile: nesting deeper than ``max_depth`` is refused by the same linear
scan :class:`~aiop2p.network.codecs.JsonCodec` uses before msgspec sees the bytes (its
decoder recurses per level), and the size is bounded by the exchange's
``max_request_bytes``/``max_response_bytes`` before any decoding.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from ..errors import CodecError, InvalidArgumentError, InvalidMessageError
from .codecs import DEFAULT_MAX_JSON_DEPTH, json_depth_exceeds

if TYPE_CHECKING:
    import msgspec

__all__ = ["TypedCodec"]

Rq = TypeVar("Rq")
Rs = TypeVar("Rs")
T = TypeVar("T")

_AT = " - at `"


def _msgspec() -> Any:
    try:
        return importlib.import_module("msgspec")
    except ImportError:
        raise InvalidArgumentError(
            "TypedCodec needs msgspec: pip install 'aiop2p[typed]'"
        ) from None


class TypedCodec(Generic[Rq, Rs]):
    """JSON whose requests are ``request_type`` and responses ``response_type``.

    ``max_depth`` (a count, default 128 as :class:`~aiop2p.network.codecs.JsonCodec`)
    bounds how deeply an inbound value may nest.  Give it to a Network as its codec:
    ``Network(codec=TypedCodec(Request, Response))``.
    """

    def __init__(
        self,
        request_type: type[Rq] | Any,
        response_type: type[Rs] | Any,
        *,
        max_depth: int = DEFAULT_MAX_JSON_DEPTH,
    ) -> None:
        if max_depth < 1:
            raise InvalidArgumentError(f"max_depth must be at least 1, not {max_depth}")
        ms = _msgspec()
        self.request_type = request_type
        self.response_type = response_type
        self.max_depth = max_depth
        self._errors: tuple[type[Exception], ...] = (ms.ValidationError, ms.DecodeError)
        self._encoder: msgspec.json.Encoder = ms.json.Encoder()
        try:
            self._requests: msgspec.json.Decoder[Rq] = ms.json.Decoder(request_type)
            self._responses: msgspec.json.Decoder[Rs] = ms.json.Decoder(response_type)
        except TypeError as exc:  # a type msgspec cannot decode into
            raise InvalidArgumentError(f"TypedCodec: {exc}") from exc

    def encode_request(self, value: Rq) -> bytes:
        return self._encode(value, self._requests, "request")

    def decode_request(self, data: bytes) -> Rq:
        return self._decode(data, self._requests, "request")

    def encode_response(self, value: Rs) -> bytes:
        return self._encode(value, self._responses, "response")

    def decode_response(self, data: bytes) -> Rs:
        return self._decode(data, self._responses, "response")

    def _decode(
        self, data: bytes, decoder: msgspec.json.Decoder[T], kind: Literal["request", "response"]
    ) -> T:
        if json_depth_exceeds(data, self.max_depth):
            raise InvalidMessageError(
                f"invalid {kind}: nested deeper than {self.max_depth} levels", kind=kind
            )
        try:
            return decoder.decode(data)
        except self._errors as exc:
            text = str(exc)
            path = text.rsplit(_AT, 1)[1].rstrip("`") if _AT in text else None
            raise InvalidMessageError(f"invalid {kind}: {text}", kind=kind, path=path) from None
        except RecursionError:  # only if max_depth is above what the stack allows
            raise InvalidMessageError(f"invalid {kind}: nested too deeply", kind=kind) from None

    def _encode(
        self, value: Any, decoder: msgspec.json.Decoder[Any], kind: Literal["request", "response"]
    ) -> bytes:
        try:
            data = self._encoder.encode(value)
        except (TypeError, ValueError) as exc:  # msgspec.EncodeError is a ValueError
            raise CodecError(f"cannot encode the {kind}: {exc}") from exc
        except RecursionError:
            raise CodecError(f"cannot encode the {kind}: nested too deeply") from None
        # What the peer's codec will check, checked here first (a bug on our side is
        # named by its field, not reported back as a rejection).
        self._decode(data, decoder, kind)
        return data
