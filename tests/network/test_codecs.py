"""The JSON codec against hostile input: every failure is a ``CodecError`` (issue 8 item 6)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aiop2p.errors import InvalidArgumentError, P2PError
from aiop2p.network.address_book import AddressBookError, AddressInfo
from aiop2p.network.codecs import (
    DEFAULT_MAX_JSON_DEPTH,
    CodecError,
    JsonCodec,
    json_depth_exceeds,
    json_loads,
)
from aiop2p.network.firewall import FirewallRules, InvalidFirewallConfigError


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_codec_error_is_a_p2p_error() -> None:
    assert issubclass(CodecError, P2PError)


def test_depth_limit_is_serde_json_default_and_exact() -> None:
    codec = JsonCodec()
    assert codec.max_depth == DEFAULT_MAX_JSON_DEPTH == 128
    assert codec.decode(nested(128)) is not None
    with pytest.raises(CodecError, match="nested deeper than 128"):
        codec.decode(nested(129))
    objects = b'{"a":' * 129 + b"1" + b"}" * 129
    with pytest.raises(CodecError, match="nested deeper"):
        codec.decode(objects)
    assert JsonCodec(max_depth=3).decode(b'[{"a":[1]}]') == [{"a": [1]}]
    with pytest.raises(CodecError):
        JsonCodec(max_depth=2).decode(b'[{"a":[1]}]')
    with pytest.raises(InvalidArgumentError):
        JsonCodec(max_depth=0)


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 900_000,  # the reported input: RecursionError before the fix
        b"[" * 900_000 + b"]" * 900_000,
        b'{"a":' * 300_000,
        b"[" * 500 + b"1" + b"]" * 499,  # deep and malformed
    ],
)
def test_deep_input_is_a_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError, match="nested deeper than 128"):
        JsonCodec().decode(data)


def test_brackets_inside_strings_do_not_count() -> None:
    value = ["[" * 1000, {"k{": "]" * 5 + '"\\[' * 300}, "\\", '\\"[[[']
    data = json.dumps(value).encode()
    assert json_depth_exceeds(data, 2) is False
    assert JsonCodec(max_depth=2).decode(data) == value


def test_escaped_quote_does_not_end_a_string() -> None:
    # If the scanner ended the string at \" it would count the brackets after it.
    value = ['\\"' + "[" * 200]
    assert JsonCodec().decode(json.dumps(value).encode()) == value


@pytest.mark.parametrize(
    "data",
    [
        b'["' + b'\\"' * 400_000,  # an unterminated string full of escaped quotes
        b'["\\' * 400_000,
        b'"' * 800_000,
        b'["' + b"[" * 400_000,  # brackets in an unterminated string: invalid, not deep
    ],
)
def test_pathological_strings_are_rejected_in_linear_time(data: bytes) -> None:
    # A scanner that re-scans from every quote would take minutes here (pytest-timeout).
    with pytest.raises(CodecError):
        JsonCodec().decode(data)


def test_every_other_failure_is_a_codec_error_too() -> None:
    codec = JsonCodec()
    for data in (b"", b"\xff\xfe\xfa", b"[1,", b"nul", b'"\\ud800"x', b"\x00" * 3):
        with pytest.raises(CodecError):
            codec.decode(data)


def test_utf16_input_is_measured_in_its_own_encoding() -> None:
    value = ["\u2222\u5b5b" * 50, [[1]]]
    assert JsonCodec(max_depth=3).decode(json.dumps(value).encode("utf-16")) == value
    with pytest.raises(CodecError, match="nested deeper"):
        JsonCodec().decode(nested(200).decode().encode("utf-16"))


def test_json_loads_takes_text() -> None:
    assert json_loads('{"a": [1]}') == {"a": [1]}
    with pytest.raises(CodecError, match="nested deeper"):
        json_loads("[" * 10_000)


def test_encoding_a_value_too_deep_is_a_codec_error() -> None:
    value: Any = 1
    for _ in range(100_000):
        value = [value]
    with pytest.raises(CodecError, match="nested too deeply"):
        JsonCodec().encode(value)


@pytest.mark.parametrize(
    "value",
    [
        "x" * 64,
        'snow ☃ \x00 "quoted" \\',
        {"op": "get", "key": "k", "n": 12, "f": 1.5, "nan": float("nan"), "none": None},
        [1, True, -0.0, 10**30, ["nested", {"a": {}}], []],
        42,
    ],
)
def test_json_encoding_is_compact_json_dumps(value: Any) -> None:
    """The codec's once-built encoder writes what json.dumps writes with its options."""
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    assert JsonCodec().encode(value) == expected


def test_encoding_a_value_that_contains_itself_is_a_codec_error() -> None:
    value: list[Any] = []
    value.append(value)
    with pytest.raises(CodecError, match="contains itself"):
        JsonCodec().encode(value)
    with pytest.raises(CodecError, match="not JSON serializable"):
        JsonCodec().encode({"a": object()})


def test_firewall_and_address_book_json_refuse_deep_input() -> None:
    for text in ("[" * 100_000, '{"rules":' * 200 + "1" + "}" * 200):
        with pytest.raises(InvalidFirewallConfigError, match="nested deeper"):
            FirewallRules.from_json(text)
        with pytest.raises(AddressBookError, match="nested"):
            AddressInfo.from_json(text)


@pytest.mark.parametrize(
    "data",
    [
        b"1",
        b"12",
        b'"x"',
        b'{"a": [1, 2]}',
        '"\u00e9t\u00e9"'.encode(),
        '\ufeff"bom"'.encode(),  # a UTF-8 BOM: json refuses it
        '["utf-16"]'.encode("utf-16-le"),
        '["utf-16"]'.encode("utf-16"),
        '["utf-32"]'.encode("utf-32"),
        b"\x00\x00",
        b"\xef\xbb",
        b"\xff",
        b"",
        b" 1 ",
        b"[1,",
    ],
)
def test_decoding_agrees_with_json_loads(data: bytes) -> None:
    """The UTF-8 shortcut and the direct decoder accept and refuse what json.loads does."""
    try:
        expected = json.loads(data)
    except ValueError:
        with pytest.raises(CodecError):
            JsonCodec().decode(data)
    else:
        assert JsonCodec().decode(data) == expected
