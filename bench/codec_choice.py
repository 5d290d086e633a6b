"""Why TypedCodec is built on msgspec: decode + validate time of one small request.

Times, for the same bytes, a tagged union of two request types decoded and checked by
msgspec (``TypedCodec.decode_request``) and by pydantic v2 (a ``TypeAdapter`` over a
discriminated union of models, ``validate_json``), with the untyped ``JsonCodec.decode``
as the baseline; and the encode + check of the response.  pydantic is not a dependency:
install it next to the dev extra to compare (``pip install pydantic``); without it only
msgspec and the baseline are timed.  Side by side in one run; the ratios are the result.

    python bench/codec_choice.py [--number N] [--repeat R]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import timeit
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec

from aiop2p.network import JsonCodec, TypedCodec

REQUEST = b'{"type":"Put","key":"user:42","value":{"name":"Ada","tags":["a","b"],"n":3}}'


class Get(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    key: Annotated[str, msgspec.Meta(max_length=64)]


class Put(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    key: Annotated[str, msgspec.Meta(max_length=64)]
    value: Any


class Reply(msgspec.Struct):
    ok: bool
    value: Any = None


def _pydantic_decoder() -> Callable[[bytes], Any] | None:
    try:
        pydantic: Any = importlib.import_module("pydantic")
    except ImportError:
        return None
    forbid = pydantic.ConfigDict(extra="forbid")
    key = (str, pydantic.Field(max_length=64))
    get = pydantic.create_model("Get", __config__=forbid, type=(Literal["Get"], ...), key=key)
    put = pydantic.create_model(
        "Put", __config__=forbid, type=(Literal["Put"], ...), key=key, value=(Any, ...)
    )
    annotated: Any = Annotated  # built at run time: mypy cannot see these models' types
    adapter = pydantic.TypeAdapter(annotated[get | put, pydantic.Field(discriminator="type")])
    decode: Callable[[bytes], Any] = adapter.validate_json
    return decode


def _best_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    """The median of ``repeat`` runs of ``number`` calls, microseconds per call."""
    runs = timeit.repeat(fn, number=number, repeat=repeat)
    return statistics.median(runs) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000, help="calls per run")
    parser.add_argument("--repeat", type=int, default=7, help="runs (the median is kept)")
    args = parser.parse_args()
    typed: TypedCodec[Get | Put, Reply] = TypedCodec(Get | Put, Reply)
    untyped = JsonCodec()
    assert typed.decode_request(REQUEST) == Put("user:42", untyped.decode(REQUEST)["value"])
    figures: dict[str, float] = {
        "JsonCodec.decode (untyped baseline)": _best_us(
            lambda: untyped.decode(REQUEST), args.number, args.repeat
        ),
        "TypedCodec.decode_request (msgspec)": _best_us(
            lambda: typed.decode_request(REQUEST), args.number, args.repeat
        ),
        "TypedCodec.encode_response (msgspec, checked)": _best_us(
            lambda: typed.encode_response(Reply(True, {"n": 3})), args.number, args.repeat
        ),
    }
    pydantic_decode = _pydantic_decoder()
    if pydantic_decode is not None:
        assert pydantic_decode(REQUEST).key == "user:42"
        figures["TypeAdapter.validate_json (pydantic)"] = _best_us(
            lambda: pydantic_decode(REQUEST), args.number, args.repeat
        )
    base = figures["TypedCodec.decode_request (msgspec)"]
    print(f"{len(REQUEST)}-byte request, median of {args.repeat} x {args.number} calls")
    for name, us in figures.items():
        print(f"  {name:48s} {us:7.2f} us  ({us / base:.2f}x msgspec decode)")


if __name__ == "__main__":
    main()
