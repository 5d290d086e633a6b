"""DCUtR: HolePunch codec (vectors from the spec's .proto) and both machines with
injected time, split delivery and garbage."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiop2p._wire.varint import decode_uvarint, encode_uvarint
from aiop2p.errors import (
    InvalidArgumentError,
    InvalidStateError,
    LocalProtocolError,
    MessageTooLargeError,
    RemoteProtocolError,
)
from aiop2p.multiaddr import Multiaddr
from aiop2p.protocols.dcutr import (
    DCUTR_PROTOCOL_ID,
    MAX_MESSAGE_BYTES,
    DcutrEvent,
    DcutrFailed,
    DcutrInitiator,
    DcutrResponder,
    DialNow,
    DialScheduled,
    HolePunch,
    HolePunchType,
    encode_frame,
)
from aiop2p.protocols.role import Role

A_ADDRS = (Multiaddr("/ip4/203.0.113.1/tcp/4001"), Multiaddr("/ip6/2001:db8::1/tcp/4001"))
B_ADDRS = (Multiaddr("/ip4/198.51.100.7/tcp/5555"),)


def frame(payload: bytes) -> bytes:
    return encode_uvarint(len(payload)) + payload


def unframe(data: bytes) -> bytes:
    got = decode_uvarint(data, 0)
    assert got is not None and got[0] + got[1] == len(data)
    return data[got[1] :]


def test_constants_and_vectors() -> None:
    assert DCUTR_PROTOCOL_ID == "/libp2p/dcutr"
    assert MAX_MESSAGE_BYTES == 4096
    assert (HolePunchType.CONNECT, HolePunchType.SYNC) == (100, 300)
    # HolePunch{type=1 varint, ObsAddrs=2 repeated bytes}
    addr = B_ADDRS[0].to_bytes()
    wire = b"\x08\x64" + b"\x12" + bytes((len(addr),)) + addr
    msg = HolePunch(HolePunchType.CONNECT, (addr,))
    assert msg.encode() == wire
    assert HolePunch.decode(wire) == msg
    assert encode_frame(HolePunch(HolePunchType.SYNC)) == b"\x03\x08\xac\x02"
    assert HolePunch.decode(b"\x12\x01\x00\x08\xac\x02\x18\x05") == HolePunch(
        HolePunchType.SYNC, (b"\x00",)
    )


@pytest.mark.parametrize(
    "wire", [b"", b"\x12\x00", b"\x08\x65", b"\x0a\x00", b"\x08\x64\x10\x01", b"\x08"]
)
def test_malformed_messages(wire: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        HolePunch.decode(wire)


@given(
    st.sampled_from(list(HolePunchType)),
    st.lists(st.binary(max_size=50), max_size=5).map(tuple),
)
def test_round_trip(kind: HolePunchType, addrs: tuple[bytes, ...]) -> None:
    msg = HolePunch(kind, addrs)
    assert HolePunch.decode(msg.encode()) == msg


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_garbage_decodes_or_raises_remote_protocol_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        HolePunch.decode(data)


def test_oversized_frames() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(HolePunch(HolePunchType.CONNECT, (b"x" * 5000,)))
    with pytest.raises(LocalProtocolError):
        DcutrInitiator([b"x" * 5000])
    with pytest.raises(InvalidArgumentError):
        DcutrResponder(B_ADDRS, max_message_bytes=0)


def deliver(dst: DcutrInitiator | DcutrResponder, data: bytes, now: float, split: bool) -> None:
    chunks = [data[i : i + 1] for i in range(len(data))] if split else [data]
    for chunk in chunks:
        if isinstance(dst, DcutrInitiator):
            dst.receive_data(chunk, now)
        else:
            dst.receive_data(chunk)


@pytest.mark.parametrize("split", [False, True])
def test_full_exchange_with_injected_time(split: bool) -> None:
    b = DcutrInitiator(B_ADDRS)  # the inbound side of the relayed connection opens
    a = DcutrResponder(A_ADDRS)
    assert b.deadline is None and b.rtt is None
    b.start(now=10.0)
    connect = b.data_to_send()
    assert connect == encode_frame(HolePunch(HolePunchType.CONNECT, (B_ADDRS[0].to_bytes(),)))
    deliver(a, connect, 10.1, split)
    assert a.events_received() == []
    answer = a.data_to_send()
    assert HolePunch.decode(unframe(answer)).type == HolePunchType.CONNECT
    deliver(b, answer, 10.2, split)  # RTT = 0.2 s
    assert b.rtt == pytest.approx(0.2)
    assert b.deadline == pytest.approx(10.3)
    [scheduled] = b.events_received()
    assert isinstance(scheduled, DialScheduled)
    assert scheduled.addrs == A_ADDRS
    assert scheduled.at == pytest.approx(10.3) and scheduled.rtt == pytest.approx(0.2)
    sync = b.data_to_send()
    assert sync == b"\x03\x08\xac\x02"
    deliver(a, sync, 10.3, split)
    assert a.events_received() == [DialNow(B_ADDRS, upgrade_role=Role.INITIATOR)]
    assert a.done
    b.handle_timer(10.29)
    assert b.events_received() == [] and not b.done
    b.receive_eof()  # A may close once it has the SYNC
    assert b.events_received() == []
    b.handle_timer(10.3)
    assert b.events_received() == [DialNow(A_ADDRS, upgrade_role=Role.RESPONDER)]
    assert b.done and b.deadline is None
    b.handle_timer(11.0)
    assert b.events_received() == []


def test_zero_rtt_and_clock_going_backwards() -> None:
    b = DcutrInitiator(B_ADDRS)
    b.start(5.0)
    b.data_to_send()
    b.receive_data(frame(HolePunch(HolePunchType.CONNECT, (A_ADDRS[0].to_bytes(),)).encode()), 4.0)
    assert b.rtt == 0.0 and b.deadline == 4.0
    b.events_received()
    b.handle_timer(4.0)
    assert b.events_received() == [DialNow(A_ADDRS[:1], upgrade_role=Role.RESPONDER)]


def test_unparseable_addresses_are_skipped() -> None:
    a = DcutrResponder(A_ADDRS)
    a.receive_data(
        frame(HolePunch(HolePunchType.CONNECT, (b"\xff\xff", B_ADDRS[0].to_bytes())).encode())
    )
    a.receive_data(frame(HolePunch(HolePunchType.SYNC).encode()))
    assert a.events_received() == [DialNow(B_ADDRS, upgrade_role=Role.INITIATOR)]


def test_responder_handles_connect_and_sync_in_one_chunk() -> None:
    a = DcutrResponder(A_ADDRS)
    a.receive_data(
        frame(HolePunch(HolePunchType.CONNECT, (B_ADDRS[0].to_bytes(),)).encode())
        + b"\x03\x08\xac\x02"
        + b"trailing"
    )
    assert a.events_received() == [DialNow(B_ADDRS, upgrade_role=Role.INITIATOR)]
    assert (
        unframe(a.data_to_send())
        == HolePunch(HolePunchType.CONNECT, tuple(x.to_bytes() for x in A_ADDRS)).encode()
    )
    a.receive_data(b"ignored")
    a.receive_eof()
    assert a.events_received() == []


def failed(events: list[DcutrEvent]) -> DcutrFailed:
    assert len(events) == 1 and isinstance(events[0], DcutrFailed)
    return events[0]


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (b"\x03\x08\xac\x02", "expected a HolePunch CONNECT"),  # SYNC first
        (frame(HolePunch(HolePunchType.CONNECT).encode()), "no usable address"),
        (frame(HolePunch(HolePunchType.CONNECT, (b"\xff",)).encode()), "no usable address"),
        (frame(b"\x08\x01"), "unknown type"),
        (frame(b"\x12\x00"), "required"),
        (frame(b"\xff\xff"), "protobuf"),
        (encode_uvarint(MAX_MESSAGE_BYTES + 1), "exceeds"),
        (b"\xff" * 10, "varint"),
    ],
)
def test_responder_failures(wire: bytes, error: str) -> None:
    a = DcutrResponder(A_ADDRS)
    a.receive_data(wire)
    assert error in str(failed(a.events_received()).error)
    assert a.data_to_send() == b"" and a.done


def test_responder_expects_sync_after_connect() -> None:
    a = DcutrResponder(A_ADDRS)
    a.receive_data(frame(HolePunch(HolePunchType.CONNECT, (B_ADDRS[0].to_bytes(),)).encode()))
    a.data_to_send()
    a.receive_data(frame(HolePunch(HolePunchType.CONNECT, (B_ADDRS[0].to_bytes(),)).encode()))
    assert "expected a HolePunch SYNC" in str(failed(a.events_received()).error)


@pytest.mark.parametrize("after_connect", [False, True])
def test_responder_eof(after_connect: bool) -> None:
    a = DcutrResponder(A_ADDRS)
    if after_connect:
        a.receive_data(frame(HolePunch(HolePunchType.CONNECT, (B_ADDRS[0].to_bytes(),)).encode()))
    a.receive_eof()
    failed(a.events_received())


@pytest.mark.parametrize(
    ("wire", "error_type"),
    [
        (b"\x03\x08\xac\x02", RemoteProtocolError),
        (frame(HolePunch(HolePunchType.CONNECT).encode()), RemoteProtocolError),
        (frame(b""), RemoteProtocolError),
        (encode_uvarint(MAX_MESSAGE_BYTES + 1), MessageTooLargeError),
    ],
)
def test_initiator_failures(wire: bytes, error_type: type[Exception]) -> None:
    b = DcutrInitiator(B_ADDRS)
    b.start(0.0)
    b.data_to_send()
    b.receive_data(wire, 1.0)
    assert isinstance(failed(b.events_received()).error, error_type)
    assert b.data_to_send() == b""  # no SYNC after a failure
    assert b.deadline is None


def test_initiator_eof_and_misuse() -> None:
    b = DcutrInitiator(B_ADDRS)
    b.receive_data(b"\x03\x08\xac\x02", 0.0)
    assert "before our CONNECT" in str(failed(b.events_received()).error)
    b2 = DcutrInitiator(B_ADDRS)
    b2.start(0.0)
    with pytest.raises(InvalidStateError):
        b2.start(1.0)
    b2.receive_data(b"\x05\x08", 0.5)  # incomplete
    b2.receive_eof()
    failed(b2.events_received())
    b2.handle_timer(100.0)
    assert b2.events_received() == []


@settings(max_examples=300)
@given(st.binary(max_size=64), st.integers(1, 8))
def test_arbitrary_bytes_never_raise(data: bytes, chunk: int) -> None:
    b = DcutrInitiator(B_ADDRS)
    b.start(0.0)
    a = DcutrResponder(A_ADDRS)
    for i in range(0, len(data), chunk):
        b.receive_data(data[i : i + chunk], 1.0)
        a.receive_data(data[i : i + chunk])
    b.handle_timer(2.0)
    b.receive_eof()
    a.receive_eof()
    for events in (b.events_received(), a.events_received()):
        assert all(isinstance(e, DialScheduled | DialNow | DcutrFailed) for e in events)
        assert sum(isinstance(e, DialNow | DcutrFailed) for e in events) == 1
    assert a.done and b.done
