"""AutoNAT v2 messages, the server's address choice, its rate limiter and the client's
tally, with hostile inputs: every malformed or oversized message is an AutonatError."""

from __future__ import annotations

import pytest

from aiop2p._wire.protobuf import (
    encode_bytes_field,
    encode_fixed64_field,
    encode_varint_field,
)
from aiop2p.errors import AutonatError, RemoteProtocolError
from aiop2p.multiaddr import Multiaddr
from aiop2p.protocols.autonat_v2 import (
    AutonatLimits,
    DialBack,
    DialBackResponse,
    DialDataRequest,
    DialDataResponse,
    DialRequest,
    DialResponse,
    DialStatus,
    RateLimiter,
    ReachabilityTally,
    ResponseStatus,
    decode_message,
    encode_message,
    select_address,
)

A = Multiaddr("/ip4/1.2.3.4/tcp/4001")
B = Multiaddr("/ip4/5.6.7.8/tcp/4001")


@pytest.mark.parametrize(
    "msg",
    [
        DialRequest.of([A, B], 2**64 - 1),
        DialRequest.of([A], 0),
        DialResponse(ResponseStatus.OK, 1, DialStatus.OK),
        DialResponse(ResponseStatus.E_INTERNAL_ERROR),
        DialResponse(ResponseStatus.E_REQUEST_REJECTED),
        DialDataRequest(0, 30_000),
        DialDataResponse(b"\x00" * 4096),
        DialDataResponse(b""),
    ],
)
def test_round_trip(msg: object) -> None:
    assert decode_message(encode_message(msg)) == msg  # type: ignore[arg-type]


def test_dial_back_round_trip() -> None:
    assert DialBack.decode(DialBack(12345678901234567890).encode()).nonce == 12345678901234567890
    assert DialBackResponse.decode(DialBackResponse().encode()) == DialBackResponse()


def test_wire_format_matches_the_spec() -> None:
    # Message{dialRequest(1){addrs(1) bytes, nonce(2) fixed64}}
    body = encode_bytes_field(1, A.to_bytes()) + b"\x11" + (7).to_bytes(8, "little")
    assert encode_message(DialRequest.of([A], 7)) == encode_bytes_field(1, body)
    # DialBack{nonce(1) fixed64}
    assert DialBack(7).encode() == b"\x09" + (7).to_bytes(8, "little")


def test_unparseable_addresses_keep_their_index() -> None:
    req = decode_message(encode_message(DialRequest((b"\xff\xff", A.to_bytes()), 1)))
    assert isinstance(req, DialRequest)
    assert req.parsed() == [None, A]


def _request(*fields: bytes) -> bytes:
    return encode_bytes_field(1, b"".join(fields))


NONCE = encode_fixed64_field(2, 1)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "none of its oneof"),
        (encode_varint_field(1, 5), "none of its oneof"),
        (encode_bytes_field(2, b"") + encode_bytes_field(3, b""), "more than one"),
        (_request(NONCE), "without addresses"),
        (_request(encode_bytes_field(1, A.to_bytes())), "without a nonce"),
        (_request(*[encode_bytes_field(1, A.to_bytes())] * 17, NONCE), "more than 16"),
        (_request(encode_bytes_field(1, b"x" * 300), NONCE), "above 256"),
        (encode_bytes_field(2, encode_varint_field(1, 7)), "unknown status"),
        (encode_bytes_field(2, encode_varint_field(3, 150)), "unknown status"),
        (encode_bytes_field(2, encode_varint_field(2, 1 << 40)), "above 32 bits"),
        (encode_bytes_field(3, encode_varint_field(1, 0)), "for 0 bytes"),
        (encode_bytes_field(4, encode_bytes_field(1, b"x" * 4097)), "4097 bytes"),
        (b"\x0a\x05ab", "overruns"),  # length beyond the message
        (b"\x0a", "truncated"),
        (b"\x0b", "wire type"),
        (encode_bytes_field(4, b"\x09\x00"), "overruns"),  # truncated fixed64
        (b"\x00" * 9000, "above 8192"),
    ],
)
def test_hostile_messages(data: bytes, match: str) -> None:
    with pytest.raises(AutonatError, match=match) as info:
        decode_message(data)
    assert isinstance(info.value, RemoteProtocolError)


def test_hostile_dial_back() -> None:
    with pytest.raises(AutonatError, match="without a nonce"):
        DialBack.decode(encode_varint_field(1, 7))  # a varint where the fixed64 belongs
    with pytest.raises(AutonatError, match="above 64"):
        DialBack.decode(b"\x09" + bytes(100))
    with pytest.raises(AutonatError, match="unknown DialBackResponse status"):
        DialBackResponse.decode(encode_varint_field(1, 3))


def test_smaller_limits_apply() -> None:
    limits = AutonatLimits(max_addrs=1)
    with pytest.raises(AutonatError, match="more than 1"):
        decode_message(encode_message(DialRequest.of([A, B], 1)), limits)


def test_select_first_dialable_and_dial_data_rule() -> None:
    req = DialRequest((b"\xff", Multiaddr("/ip4/10.0.0.1/tcp/1").to_bytes(), A.to_bytes()), 1)
    public = lambda a: not a.ip_address.is_private  # noqa: E731
    chosen = select_address(req, "1.2.3.4", public)
    assert chosen is not None and (chosen.index, chosen.addr) == (2, A)
    assert not chosen.needs_dial_data  # same IP as the requester
    other = select_address(req, "9.9.9.9", public)
    assert other is not None and other.needs_dial_data
    assert select_address(req, "1.2.3.4", lambda a: False) is None


def test_rate_limiter_per_peer_and_total() -> None:
    rl = RateLimiter(per_peer=2, total=3, window_seconds=10)
    assert rl.allow("a", 0) and rl.allow("a", 1)
    assert not rl.allow("a", 2)  # per peer
    assert rl.allow("b", 2)
    assert not rl.allow("c", 3)  # in all
    assert rl.allow("a", 10.5)  # the first two fell out of the window
    assert rl.allow("c", 11.5)


def test_tally_needs_confidence_and_counts_a_server_once() -> None:
    tally = ReachabilityTally(confidence=2)
    assert tally.record(A, "s1", True) is None
    assert tally.record(A, "s1", True) is None  # the same server again does not count twice
    assert tally.record(A, "s2", True) is True
    assert tally.record(A, "s3", False) is True
    assert tally.record(A, "s4", False) is None  # a tie
    assert tally.record(A, "s5", False) is False
    assert tally.verdict(B) is None


def test_tally_is_bounded() -> None:
    tally = ReachabilityTally(confidence=1, max_addrs=2)
    for i in range(10):
        tally.record(A, f"s{i}", i % 2 == 0)
    assert len(tally.servers(A)) == 3  # 2 * confidence + 1
    tally.record(B, "s", True)
    tally.record(Multiaddr("/ip4/9.9.9.9/tcp/1"), "s", True)
    assert tally.verdict(A) is None  # the oldest address was forgotten
