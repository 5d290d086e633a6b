"""Multibase: every supported prefix round-trips; wrong prefixes, cases and padding fail."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiop2p._wire import multibase
from aiop2p.errors import InvalidArgumentError


@given(st.binary(max_size=100), st.sampled_from(sorted(multibase.PREFIXES)))
def test_multibase_round_trip(data: bytes, prefix: str) -> None:
    text = multibase.encode(prefix, data)
    assert text[0] == prefix
    assert multibase.decode(text) == data


@pytest.mark.parametrize("text", ["", "q123", "bAA", "b=", "fzz", "m+/=", "u+", "b0", "Mabc", "zé"])
def test_multibase_errors(text: str) -> None:
    with pytest.raises(InvalidArgumentError):
        multibase.decode(text)
    with pytest.raises(InvalidArgumentError):
        multibase.encode("q", b"")
