"""TypedCodec (issue 11, item 5): requests and responses checked against declared types.

Unit tests of the codec first, then real Networks on loopback TCP: a typed round trip
routed by the request's type, a request of the wrong shape rejected with the field named,
and hostile payloads (huge, deeply nested, wrong types, unknown tag, not JSON) sent raw
by a peer that does not use the codec — each rejected as an invalid request while the
server keeps serving everyone.
"""

from __future__ import annotations

import importlib
import logging
from typing import Annotated, Any

import msgspec
import pytest

from aiop2p import InvalidMessageError, TypedCodec
from aiop2p.errors import (
    CodecError,
    InvalidArgumentError,
    RequestConnectionClosedError,
    RequestRefusedError,
)
from aiop2p.events import InboundFailure, InboundRequestFailed
from aiop2p.network.codecs import JsonCodec, RawCodec, codec_functions
from aiop2p.network.firewall import FirewallRules

from .conftest import CONNECTION_NOISE, link, networks, next_event, outcome, serving

pytestmark = pytest.mark.timeout(30)

Key = Annotated[str, msgspec.Meta(max_length=64)]


class Get(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    key: Key


class Put(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    key: Key
    value: Any


class Keys(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    prefix: str = ""
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10


Request = Get | Put | Keys


class Reply(msgspec.Struct, forbid_unknown_fields=True):
    ok: bool
    value: Any = None
    keys: list[str] = msgspec.field(default_factory=list)


def codec() -> TypedCodec[Request, Reply]:
    return TypedCodec(Request, Reply)


class Store:
    """The routing by type a handler does: one ``match`` on the request."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def answer(self, request: Request) -> Reply:
        match request:
            case Get(key=key):
                return Reply(ok=key in self.values, value=self.values.get(key))
            case Put(key=key, value=value):
                self.values[key] = value
                return Reply(ok=True)
            case Keys(prefix=prefix, limit=limit):
                found = sorted(k for k in self.values if k.startswith(prefix))
                return Reply(ok=True, keys=found[:limit])


# -- the codec ---------------------------------------------------------------------------


def test_a_tagged_union_round_trips_and_decodes_to_the_named_type() -> None:
    c = codec()
    assert c.encode_request(Get("a")) == b'{"type":"Get","key":"a"}'
    assert c.decode_request(b'{"type":"Put","key":"a","value":[1,{"b":null}]}') == Put(
        "a", [1, {"b": None}]
    )
    assert c.decode_request(b'{"type":"Keys"}') == Keys()
    assert c.decode_response(c.encode_response(Reply(True, keys=["a"]))) == Reply(True, keys=["a"])


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        (b'{"type":"Get","key":5}', "$.key", "Expected `str`, got `int`"),
        (b'{"type":"Get","key":"' + b"k" * 65 + b'"}', "$.key", "length <= 64"),
        (b'{"type":"Keys","limit":0}', "$.limit", ">= 1"),
        (b'{"type":"Delete","key":"a"}', "$.type", "Invalid value 'Delete'"),
        (b'{"key":"a"}', None, "missing required field `type`"),
        (b'{"type":"Get","key":"a","extra":1}', None, "unknown field `extra`"),
        (b'["Get","a"]', None, "Expected `object`, got `array`"),
        (b"not json", None, "malformed"),
        (b'{"type":"Get","key":"a"} trailing', None, "trailing characters"),
        (b"", None, "truncated"),
    ],
)
def test_a_request_of_the_wrong_shape_names_the_field(
    data: bytes, path: str | None, words: str
) -> None:
    with pytest.raises(InvalidMessageError) as raised:
        codec().decode_request(data)
    error = raised.value
    assert isinstance(error, CodecError)  # a P2PError, as any codec failure
    assert (error.kind, error.path) == ("request", path)
    assert str(error).startswith("invalid request: ") and words in str(error)
    if path is not None:
        assert str(error).endswith(f"at `{path}`")


def test_a_response_of_the_wrong_shape_is_an_invalid_response() -> None:
    with pytest.raises(InvalidMessageError) as raised:
        codec().decode_response(b'{"ok":"yes"}')
    assert (raised.value.kind, raised.value.path) == ("response", "$.ok")
    assert str(raised.value).startswith("invalid response: ")


def test_nesting_is_bounded_before_msgspec_recurses() -> None:
    deep = b'{"type":"Put","key":"k","value":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(InvalidMessageError, match="nested deeper than 128 levels"):
        codec().decode_request(deep)
    shallow: TypedCodec[Request, Reply] = TypedCodec(Request, Reply, max_depth=3)
    assert shallow.decode_request(b'{"type":"Put","key":"k","value":[[1]]}') == Put("k", [[1]])
    with pytest.raises(InvalidMessageError, match="nested deeper than 3"):
        shallow.decode_request(b'{"type":"Put","key":"k","value":[[[1]]]}')
    with pytest.raises(InvalidArgumentError):
        TypedCodec(Request, Reply, max_depth=0)


def test_outbound_values_are_checked_before_they_leave() -> None:
    c = codec()
    with pytest.raises(InvalidMessageError) as raised:
        c.encode_request(Get(5))  # type: ignore[arg-type]  # Structs do not check at init
    assert raised.value.path == "$.key"
    with pytest.raises(InvalidMessageError):
        c.encode_request({"type": "Get"})  # type: ignore[arg-type]
    with pytest.raises(InvalidMessageError):
        c.encode_response(Reply(ok=1))  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="cannot encode the request"):
        c.encode_request(Put("k", object()))


def test_types_msgspec_cannot_decode_are_refused_at_once() -> None:
    with pytest.raises(InvalidArgumentError, match="TypedCodec"):
        TypedCodec(object(), Reply)


def test_without_msgspec_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def no_msgspec(name: str, package: str | None = None) -> Any:
        if name == "msgspec":
            raise ImportError(name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_msgspec)
    with pytest.raises(InvalidArgumentError, match=r"aiop2p\[typed\]"):
        TypedCodec(Request, Reply)


def test_symmetric_codecs_keep_their_own_methods() -> None:
    json_codec = JsonCodec()
    functions = codec_functions(json_codec)
    assert functions.encode_request == json_codec.encode == functions.encode_response
    assert functions.decode_request == json_codec.decode == functions.decode_response
    typed = codec()
    assert codec_functions(typed).decode_request == typed.decode_request


# -- on the wire -------------------------------------------------------------------------

TYPED: dict[str, Any] = {"firewall": FirewallRules.allow_all(), "codec": codec()}
RAW: dict[str, Any] = {"firewall": FirewallRules.allow_all(), "codec": RawCodec()}


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_typed_requests_are_routed_by_type_and_answered_typed() -> None:
    store = Store()
    async with networks(TYPED, TYPED) as (client, server):
        await link(client, server)
        async with serving(server, store.answer) as seen:
            peer = server.peer_id
            assert await client.send_request(peer, Put("a", {"n": [1, 2]})) == Reply(ok=True)
            await client.send_request(peer, Put("ab", 2))
            got = await client.send_request(peer, Get("a"))
            assert isinstance(got, Reply) and got == Reply(ok=True, value={"n": [1, 2]})
            assert await client.send_request(peer, Get("zz")) == Reply(ok=False)
            listed = await client.send_request(peer, Keys(prefix="a", limit=1))
            assert listed == Reply(ok=True, keys=["a"])
        assert [type(r.request) for r in seen] == [Put, Put, Get, Get, Keys]


async def test_a_wrong_shape_is_refused_with_the_field_named_on_both_sides(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiop2p")
    async with networks(TYPED, RAW, TYPED) as (client, attacker, server):
        await link(client, server)
        await link(attacker, server)
        async with serving(server, Store().answer) as seen:
            # The requester's own codec names the field before anything is sent ...
            error = await outcome(client.send_request(server.peer_id, Get(5)))  # type: ignore[arg-type]
            assert isinstance(error, InvalidMessageError) and error.path == "$.key", error
            # ... and the responder rejects a peer that sends it anyway.
            error = await outcome(attacker.send_request(server.peer_id, b'{"type":"Get","key":5}'))
            assert isinstance(error, RequestRefusedError), error
            event = await next_event(server, InboundRequestFailed, skip=CONNECTION_NOISE)
            assert event.failure is InboundFailure.INVALID_REQUEST
            assert seen == []  # never delivered to the application
    logged = [r.getMessage() for r in caplog.records if "invalid request from" in r.getMessage()]
    assert len(logged) == 1 and "Expected `str`, got `int` - at `$.key`" in logged[0]
    assert tracebacks(caplog) == []


HOSTILE = {
    "huge": b'{"type":"Get","key":"' + b"k" * 900_000 + b'"}',
    "huge-unknown-field": b'{"type":"Get","key":"k","pad":[' + b"1," * 400_000 + b"1]}",
    "deep": b'{"type":"Put","key":"k","value":' + b"[" * 900_000,
    "deep-object": b'{"type":"Put","key":"k","value":' + b'{"a":' * 150_000 + b"1" + b"}" * 150_000,
    "wrong-types": b'{"type":"Keys","prefix":["a"],"limit":"ten"}',
    "unknown-tag": b'{"type":"__class__","key":"a"}',
    "no-tag": b'{"key":"a"}',
    "tag-not-a-string": b'{"type":7,"key":"a"}',
    "not-json": b"\xff\xfe\x00garbage",
    "empty": b"",
    "null": b"null",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_requests_are_invalid_requests_and_serving_goes_on(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiop2p")
    store = Store()
    async with networks(RAW, TYPED, TYPED) as (attacker, server, other):
        await link(attacker, server)
        await link(other, server)
        async with serving(server, store.answer):
            error = await outcome(attacker.send_request(server.peer_id, HOSTILE[name]))
            assert isinstance(error, RequestConnectionClosedError), error
            event = await next_event(server, InboundRequestFailed, skip=CONNECTION_NOISE)
            assert event.failure is InboundFailure.INVALID_REQUEST
            # Everyone, the attacker included, is still served.
            assert await other.send_request(server.peer_id, Put("k", 1)) == Reply(ok=True)
            answer = await attacker.send_request(server.peer_id, b'{"type":"Get","key":"k"}')
            assert answer == b'{"ok":true,"value":1,"keys":[]}'
    (logged,) = [r for r in caplog.records if "invalid request from" in r.getMessage()]
    assert len(logged.getMessage()) < 500  # the reason, never the request itself
    assert tracebacks(caplog) == []


async def test_a_request_above_max_request_bytes_is_never_decoded() -> None:
    big = {**RAW, "max_request_bytes": 4 << 20}
    async with networks(big, TYPED) as (attacker, server):
        await link(attacker, server)
        async with serving(server, Store().answer) as seen:
            body = b'{"type":"Get","key":"' + b"k" * (2 << 20) + b'"}'
            error = await outcome(attacker.send_request(server.peer_id, body))
            assert isinstance(error, RequestConnectionClosedError), error
            event = await next_event(server, InboundRequestFailed, skip=CONNECTION_NOISE)
            assert event.failure is InboundFailure.INVALID_REQUEST
            assert seen == []


@pytest.mark.parametrize(
    "response",
    [b'{"ok":"yes"}', b'{"ok":true,"surprise":1}', b"[" * 500_000, b"\x00"],
    ids=["wrong-type", "unknown-field", "deep", "not-json"],
)
async def test_a_response_of_the_wrong_shape_fails_the_request(response: bytes) -> None:
    async with networks(TYPED, RAW) as (client, server):
        await link(client, server)
        async with serving(server, lambda _: response):
            error = await outcome(client.send_request(server.peer_id, Get("a")))
            assert isinstance(error, RequestConnectionClosedError), error
            assert isinstance(error.__cause__, InvalidMessageError), error.__cause__
            assert error.__cause__.kind == "response"
            assert "invalid response" in str(error)
