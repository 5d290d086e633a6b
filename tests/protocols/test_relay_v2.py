"""Circuit relay v2: codecs (hand-built vectors from the spec's .proto), vouchers and the
four sans-IO machines, driven without sockets."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiop2p._wire.protobuf import encode_bytes_field, encode_varint_field
from aiop2p._wire.varint import decode_uvarint, encode_uvarint
from aiop2p.errors import (
    InvalidArgumentError,
    InvalidSignatureError,
    InvalidStateError,
    LimitExceededError,
    LocalProtocolError,
    MessageTooLargeError,
    RemoteProtocolError,
)
from aiop2p.identity import KeyPair, PeerId
from aiop2p.multiaddr import Multiaddr
from aiop2p.protocols import envelope
from aiop2p.protocols.relay_v2 import (
    HOP_PROTOCOL_ID,
    MAX_MESSAGE_BYTES,
    RELAY_VOUCHER_DOMAIN,
    RELAY_VOUCHER_PAYLOAD_TYPE,
    STOP_PROTOCOL_ID,
    CircuitEstablished,
    CircuitRefused,
    ConnectRequested,
    HopClient,
    HopMessage,
    HopServer,
    HopType,
    IncomingCircuit,
    Limit,
    Peer,
    RelayEvent,
    RelayFailed,
    Reservation,
    ReservationAccepted,
    ReservationRefused,
    ReservationVoucher,
    ReserveRequested,
    Status,
    StopAccepted,
    StopClient,
    StopMessage,
    StopRefused,
    StopServer,
    StopType,
    Voucher,
    encode_frame,
    make_voucher,
    verify_voucher,
)

from ._pair import feed, transfer

RELAY_KEY = KeyPair.from_ed25519_seed(b"R" * 32)
A_KEY = KeyPair.from_ed25519_seed(b"A" * 32)
B_KEY = KeyPair.from_ed25519_seed(b"B" * 32)
R, A, B = RELAY_KEY.peer_id, A_KEY.peer_id, B_KEY.peer_id
RELAY_ADDR = Multiaddr(f"/ip4/1.2.3.4/tcp/4001/p2p/{R}")

NON_OK = [s for s in Status if s != Status.OK]

peer_ids = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda d: PeerId(b"\x12\x20" + d)),
    st.sampled_from([R, A, B]),
)
addr_bytes = st.lists(st.binary(max_size=40), max_size=4).map(tuple)
u32 = st.integers(0, 2**32 - 1)
u63 = st.integers(0, 2**63 - 1)
statuses = st.one_of(st.sampled_from(list(Status)), st.integers(0, 2**31))
limits = st.builds(Limit, st.none() | u32, st.none() | u63)
peers = st.builds(Peer, peer_ids, addr_bytes)
reservations = st.builds(Reservation, st.none() | u63, addr_bytes, st.none() | st.binary())
hop_messages = st.builds(
    HopMessage,
    st.sampled_from(list(HopType)),
    st.none() | peers,
    st.none() | reservations,
    st.none() | limits,
    st.none() | statuses,
)
stop_messages = st.builds(
    StopMessage,
    st.sampled_from(list(StopType)),
    st.none() | peers,
    st.none() | limits,
    st.none() | statuses,
)


def frame(payload: bytes) -> bytes:
    return encode_uvarint(len(payload)) + payload


def pid_field(number: int, pid: PeerId) -> bytes:
    raw = pid.to_bytes()
    return bytes((number << 3 | 2, len(raw))) + raw


# --------------------------------------------------------------------------- codecs


def test_protocol_ids_and_status_codes_match_the_spec() -> None:
    assert HOP_PROTOCOL_ID == "/libp2p/circuit/relay/0.2.0/hop"
    assert STOP_PROTOCOL_ID == "/libp2p/circuit/relay/0.2.0/stop"
    assert {s.name: s.value for s in Status} == {
        "UNUSED": 0,
        "OK": 100,
        "RESERVATION_REFUSED": 200,
        "RESOURCE_LIMIT_EXCEEDED": 201,
        "PERMISSION_DENIED": 202,
        "CONNECTION_FAILED": 203,
        "NO_RESERVATION": 204,
        "MALFORMED_MESSAGE": 400,
        "UNEXPECTED_MESSAGE": 401,
    }
    assert (HopType.RESERVE, HopType.CONNECT, HopType.STATUS) == (0, 1, 2)
    assert (StopType.CONNECT, StopType.STATUS) == (0, 1)
    assert MAX_MESSAGE_BYTES == 4096
    assert RELAY_VOUCHER_DOMAIN == "libp2p-relay-rsvp"
    assert RELAY_VOUCHER_PAYLOAD_TYPE == b"\x03\x02"


def test_hop_vectors() -> None:
    # HopMessage{type=1 varint, peer=2, reservation=3, limit=4, status=5 varint}
    assert encode_frame(HopMessage(HopType.RESERVE)) == b"\x02\x08\x00"
    peer = pid_field(1, A)  # Peer{id=1, addrs=2}
    assert HopMessage(HopType.CONNECT, Peer(A)).encode() == (
        b"\x08\x01\x12" + bytes((len(peer),)) + peer
    )
    addr = RELAY_ADDR.to_bytes()
    # Reservation{expire=1 varint, addrs=2, voucher=3}; Limit{duration=1, data=2}
    rsvp = b"\x08\xe8\x07" + b"\x12" + bytes((len(addr),)) + addr + b"\x1a\x03vvv"
    limit = b"\x08\x78\x10\x80\x80\x08"  # 120 s, 131072 bytes
    expected = (
        b"\x08\x02"
        + b"\x1a"
        + bytes((len(rsvp),))
        + rsvp
        + b"\x22"
        + bytes((len(limit),))
        + limit
        + b"\x28\x64"  # status OK = 100
    )
    msg = HopMessage(
        HopType.STATUS,
        reservation=Reservation(1000, (addr,), b"vvv"),
        limit=Limit(120, 131072),
        status=Status.OK,
    )
    assert msg.encode() == expected
    assert HopMessage.decode(expected) == msg
    assert (
        HopMessage(HopType.STATUS, status=Status.NO_RESERVATION).encode() == b"\x08\x02\x28\xcc\x01"
    )


def test_stop_vectors() -> None:
    # StopMessage{type=1, peer=2, limit=3, status=4}
    peer = pid_field(1, B)
    wire = b"\x08\x00\x12" + bytes((len(peer),)) + peer + b"\x1a\x02\x08\x3c"
    msg = StopMessage(StopType.CONNECT, Peer(B), Limit(60))
    assert msg.encode() == wire
    assert StopMessage.decode(wire) == msg
    assert StopMessage(StopType.STATUS, status=Status.OK).encode() == b"\x08\x01\x20\x64"
    assert StopMessage.decode(b"\x20\x64\x08\x01") == StopMessage(StopType.STATUS, status=100)


def test_decode_skips_unknown_fields_and_keeps_unknown_status() -> None:
    wire = b"\x08\x02" + encode_bytes_field(15, b"future") + encode_varint_field(5, 299)
    msg = HopMessage.decode(wire)
    assert msg == HopMessage(HopType.STATUS, status=299)
    assert HopMessage.decode(b"\x08\x02\x28\x64").status is Status.OK


@pytest.mark.parametrize(
    "wire",
    [
        b"",  # no type
        b"\x28\x64",  # no type
        b"\x08\x07",  # unknown type
        b"\x0a\x00",  # type as bytes
        b"\x08\x01\x10\x01",  # peer as varint
        b"\x08\x01\x12\x00",  # peer without id
        b"\x08\x01\x12\x04\x0a\x02\x00\x01",  # peer id not a multihash
        b"\x08\x01\x12\x02\x10\x01",  # Peer.addrs as varint
        b"\x08\x02\x22\x02\x0a\x00",  # Limit.duration as bytes
        b"\x08\x02\x1a\x02\x0a\x00",  # Reservation.expire as bytes
        b"\x08\x02\x2a\x00",  # status as bytes
        b"\x08",  # truncated
    ],
)
def test_malformed_hop_messages(wire: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        HopMessage.decode(wire)


@pytest.mark.parametrize("wire", [b"", b"\x08\x05", b"\x08\x00\x12\x00", b"\x0a\x00"])
def test_malformed_stop_messages(wire: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        StopMessage.decode(wire)


@given(hop_messages)
def test_hop_round_trip(msg: HopMessage) -> None:
    assert HopMessage.decode(msg.encode()) == msg


@given(stop_messages)
def test_stop_round_trip(msg: StopMessage) -> None:
    assert StopMessage.decode(msg.encode()) == msg


@settings(max_examples=500)
@given(st.binary(max_size=100))
def test_garbage_decodes_or_raises_remote_protocol_error(data: bytes) -> None:
    for decode in (HopMessage.decode, StopMessage.decode, ReservationVoucher.decode):
        with contextlib.suppress(RemoteProtocolError):
            decode(data)


def test_encode_frame_rejects_oversized_messages() -> None:
    big = HopMessage(HopType.CONNECT, Peer(A, (b"x" * 5000,)))
    with pytest.raises(LocalProtocolError):
        encode_frame(big)
    with pytest.raises(InvalidArgumentError):
        Limit(duration=2**32).encode()


def test_limit_duration_seconds_tolerates_js_milliseconds() -> None:
    assert Limit(120).duration_seconds == 120.0
    assert Limit(86400).duration_seconds == 86400.0
    assert Limit(120_000).duration_seconds == 120.0  # js-libp2p: ms in a seconds field
    assert Limit(0).duration_seconds is None
    assert Limit().duration_seconds is None
    assert Limit(data=0).data_bytes is None
    assert Limit(data=131072).data_bytes == 131072


# --------------------------------------------------------------------------- vouchers


def test_voucher_vector_and_round_trip() -> None:
    v = ReservationVoucher(R, A, 1_700_000_000)
    assert Voucher is ReservationVoucher
    assert v.encode() == pid_field(1, R) + pid_field(2, A) + b"\x18\x80\xe2\xcf\xaa\x06"
    assert ReservationVoucher.decode(v.encode()) == v
    wire = make_voucher(RELAY_KEY, A, 1_700_000_000)
    env = envelope.open(wire, "libp2p-relay-rsvp", b"\x03\x02")
    assert env.payload == v.encode()
    assert verify_voucher(wire, R, A) == v
    assert verify_voucher(wire, R, A, now=1_699_999_999.5) == v


def test_voucher_signed_by_another_key() -> None:
    forged = envelope.seal(
        A_KEY,
        RELAY_VOUCHER_DOMAIN,
        RELAY_VOUCHER_PAYLOAD_TYPE,
        ReservationVoucher(R, A, 10).encode(),
    ).encode()
    with pytest.raises(InvalidSignatureError):
        verify_voucher(forged, R, A)


def test_voucher_from_another_relay() -> None:
    wire = make_voucher(RELAY_KEY, A, 10)
    with pytest.raises(InvalidSignatureError):
        verify_voucher(wire, B, A)


def test_voucher_for_another_peer() -> None:
    with pytest.raises(RemoteProtocolError, match="for peer"):
        verify_voucher(make_voucher(RELAY_KEY, A, 10), R, B)


def test_voucher_naming_another_relay() -> None:
    wire = envelope.seal(
        RELAY_KEY,
        RELAY_VOUCHER_DOMAIN,
        RELAY_VOUCHER_PAYLOAD_TYPE,
        ReservationVoucher(B, A, 10).encode(),
    ).encode()
    with pytest.raises(RemoteProtocolError, match="names relay"):
        verify_voucher(wire, R, A)


def test_voucher_tampered_payload() -> None:
    env = envelope.SignedEnvelope.decode(make_voucher(RELAY_KEY, A, 10))
    tampered = envelope.SignedEnvelope(
        env.public_key, env.payload_type, ReservationVoucher(R, A, 10**9).encode(), env.signature
    )
    with pytest.raises(InvalidSignatureError):
        verify_voucher(tampered.encode(), R, A)


def test_voucher_wrong_domain_and_type() -> None:
    payload = ReservationVoucher(R, A, 10).encode()
    wrong_domain = envelope.seal(RELAY_KEY, "libp2p-routing-state", b"\x03\x02", payload)
    with pytest.raises(InvalidSignatureError):
        verify_voucher(wrong_domain.encode(), R, A)
    wrong_type = envelope.seal(RELAY_KEY, RELAY_VOUCHER_DOMAIN, b"\x03\x01", payload)
    with pytest.raises(RemoteProtocolError):
        verify_voucher(wrong_type.encode(), R, A)


def test_voucher_expired_and_malformed() -> None:
    with pytest.raises(RemoteProtocolError, match="expired"):
        verify_voucher(make_voucher(RELAY_KEY, A, 10), R, A, now=11.0)
    incomplete = envelope.seal(
        RELAY_KEY, RELAY_VOUCHER_DOMAIN, RELAY_VOUCHER_PAYLOAD_TYPE, pid_field(1, R)
    )
    with pytest.raises(RemoteProtocolError, match="lacks"):
        verify_voucher(incomplete.encode(), R, A)
    with pytest.raises(RemoteProtocolError):
        verify_voucher(b"\xff", R, A)


# --------------------------------------------------------------------------- machines

Machine = HopClient | HopServer | StopClient | StopServer


def reply(message: HopMessage | StopMessage, tail: bytes = b"") -> bytes:
    return encode_frame(message) + tail


def reserving_client() -> HopClient:
    client = HopClient()
    client.reserve()
    assert client.data_to_send() == b"\x02\x08\x00"
    return client


def connecting_client() -> HopClient:
    client = HopClient()
    client.connect(A)
    assert HopMessage.decode(client.data_to_send()[1:]) == HopMessage(HopType.CONNECT, Peer(A))
    return client


@pytest.mark.parametrize("split", [False, True])
def test_hop_client_reservation_accepted(split: bool) -> None:
    client = reserving_client()
    voucher = make_voucher(RELAY_KEY, A, 5000)
    answer = HopMessage(
        HopType.STATUS,
        reservation=Reservation(5000, (RELAY_ADDR.to_bytes(), b"\xff\xff"), voucher),
        limit=Limit(120, 1 << 17),
        status=Status.OK,
    )
    events = feed(client, reply(answer), split=split)
    assert events == [ReservationAccepted(5000, (RELAY_ADDR,), Limit(120, 1 << 17), voucher)]
    assert client.done
    assert isinstance(events[0], ReservationAccepted)
    assert events[0].seconds_left(4000.0) == 1000.0
    client.receive_data(b"late")  # ignored, not an error
    assert client.events_received() == []


def test_hop_client_reservation_without_limit_or_voucher() -> None:
    client = reserving_client()
    answer = HopMessage(HopType.STATUS, reservation=Reservation(7), status=Status.OK)
    assert feed(client, reply(answer)) == [ReservationAccepted(7, (), None, None)]


@pytest.mark.parametrize("status", [*NON_OK, 299])
def test_hop_client_reservation_refused(status: int) -> None:
    client = reserving_client()
    events = feed(client, reply(HopMessage(HopType.STATUS, status=status)))
    assert events == [ReservationRefused(status)]
    assert client.done


@pytest.mark.parametrize("split", [False, True])
def test_hop_client_circuit_established(split: bool) -> None:
    client = connecting_client()
    answer = HopMessage(HopType.STATUS, limit=Limit(120_000, 1 << 17), status=Status.OK)
    events = feed(client, reply(answer, b"/multistream"), split=split)
    if split:  # the leftover arrives after the event, byte by byte: not for the machine
        assert events == [CircuitEstablished(Limit(120_000, 1 << 17), b"")]
    else:
        assert events == [CircuitEstablished(Limit(120_000, 1 << 17), b"/multistream")]
    with pytest.raises(InvalidStateError):
        client.receive_data(b"more")


def test_hop_client_circuit_established_leftover_byte_split() -> None:
    client = connecting_client()
    wire = reply(HopMessage(HopType.STATUS, status=Status.OK), b"xyz")
    assert feed(client, wire[:-3]) == [CircuitEstablished(None, b"")]
    client2 = connecting_client()
    assert feed(client2, wire) == [CircuitEstablished(None, b"xyz")]


@pytest.mark.parametrize("status", [*NON_OK, 299])
def test_hop_client_circuit_refused(status: int) -> None:
    client = connecting_client()
    assert feed(client, reply(HopMessage(HopType.STATUS, status=status))) == [
        CircuitRefused(status)
    ]
    client.receive_data(b"x")  # ignored after a refusal


@pytest.mark.parametrize(
    ("make", "wire", "error"),
    [
        (reserving_client, reply(HopMessage(HopType.STATUS, status=Status.OK)), "expiry"),
        (
            reserving_client,
            reply(HopMessage(HopType.STATUS, reservation=Reservation(), status=Status.OK)),
            "expiry",
        ),
        (reserving_client, reply(HopMessage(HopType.STATUS)), "without a status"),
        (connecting_client, reply(HopMessage(HopType.STATUS)), "without a status"),
        (connecting_client, reply(HopMessage(HopType.RESERVE)), "not STATUS"),
        (reserving_client, reply(HopMessage(HopType.CONNECT, Peer(A))), "not STATUS"),
        (reserving_client, frame(b"\x08\x09"), "unknown type"),
        (reserving_client, b"\x03\xff\xff\xff", "protobuf"),
    ],
)
def test_hop_client_bad_answers(make: Callable[[], HopClient], wire: bytes, error: str) -> None:
    client = make()
    events = feed(client, wire)
    assert len(events) == 1 and isinstance(events[0], RelayFailed)
    assert isinstance(events[0].error, RemoteProtocolError)
    assert error in str(events[0].error)
    assert client.done


def test_hop_client_oversized_answer() -> None:
    client = reserving_client()
    events = feed(client, encode_uvarint(4097))
    assert len(events) == 1 and isinstance(events[0], RelayFailed)
    assert isinstance(events[0].error, MessageTooLargeError)
    small = HopClient(max_message_bytes=10)
    small.reserve()
    events = feed(small, reply(HopMessage(HopType.STATUS, limit=Limit(1, 2), status=200)))
    assert isinstance(events[0], RelayFailed)


def test_hop_client_eof_and_unsolicited_data() -> None:
    client = reserving_client()
    client.receive_data(b"\x04\x08")  # half a message
    client.receive_eof()
    events = client.events_received()
    assert len(events) == 1 and isinstance(events[0], RelayFailed)
    idle = HopClient()
    events = feed(idle, b"\x02\x08\x02")
    assert len(events) == 1 and isinstance(events[0], RelayFailed)
    assert "before our request" in str(events[0].error)
    done = reserving_client()
    feed(done, reply(HopMessage(HopType.STATUS, status=200)))
    done.receive_eof()
    assert done.events_received() == []


def test_hop_client_local_misuse() -> None:
    client = reserving_client()
    with pytest.raises(InvalidStateError):
        client.reserve()
    with pytest.raises(InvalidStateError):
        client.connect(A)
    feed(client, reply(HopMessage(HopType.STATUS, status=200)))
    with pytest.raises(InvalidStateError):
        client.reserve()
    with pytest.raises(InvalidArgumentError):
        HopClient(max_message_bytes=0)


# HopServer


def unframe(data: bytes) -> bytes:
    got = decode_uvarint(data, 0)
    assert got is not None and got[0] + got[1] == len(data)
    return data[got[1] :]


def answer_of(server: HopServer) -> HopMessage:
    return HopMessage.decode(unframe(server.data_to_send()))


@pytest.mark.parametrize("split", [False, True])
def test_hop_server_accepts_reservation(split: bool) -> None:
    server = HopServer(A)
    assert feed(server, b"\x02\x08\x00", split=split) == [ReserveRequested(A)]
    assert server.pending and not server.done
    voucher = make_voucher(RELAY_KEY, A, 99)
    server.accept_reservation(99, [RELAY_ADDR], Limit(120, 1 << 17), voucher)
    assert answer_of(server) == HopMessage(
        HopType.STATUS,
        reservation=Reservation(99, (RELAY_ADDR.to_bytes(),), voucher),
        limit=Limit(120, 1 << 17),
        status=Status.OK,
    )
    assert server.done and not server.pending
    server.receive_data(b"ignored")
    with pytest.raises(InvalidStateError):
        server.refuse(Status.RESERVATION_REFUSED)


@pytest.mark.parametrize("status", NON_OK)
def test_hop_server_refuses_reservation(status: Status) -> None:
    server = HopServer(A)
    feed(server, b"\x02\x08\x00")
    server.refuse(status)
    assert answer_of(server) == HopMessage(HopType.STATUS, status=status)
    assert server.done


@pytest.mark.parametrize("split", [False, True])
def test_hop_server_connect_accepted_with_early_data(split: bool) -> None:
    server = HopServer(B)
    request = reply(HopMessage(HopType.CONNECT, Peer(A, (b"\x01",))), b"early")
    events = feed(server, request, split=split)
    assert events == [ConnectRequested(B, A, (b"\x01",))]
    server.receive_data(b"+more")
    assert server.accept_connect(Limit(120, 4096)) == b"early+more"
    assert answer_of(server) == HopMessage(HopType.STATUS, limit=Limit(120, 4096), status=100)
    with pytest.raises(InvalidStateError):
        server.receive_data(b"circuit bytes")


@pytest.mark.parametrize("status", NON_OK)
def test_hop_server_refuses_connect(status: Status) -> None:
    server = HopServer(B)
    feed(server, reply(HopMessage(HopType.CONNECT, Peer(A))))
    server.refuse(status)
    assert answer_of(server) == HopMessage(HopType.STATUS, status=status)


@pytest.mark.parametrize(
    ("wire", "status"),
    [
        (reply(HopMessage(HopType.STATUS, status=Status.OK)), Status.UNEXPECTED_MESSAGE),
        (reply(HopMessage(HopType.CONNECT)), Status.MALFORMED_MESSAGE),
        (frame(b"\x08\x03"), Status.MALFORMED_MESSAGE),
        (frame(b""), Status.MALFORMED_MESSAGE),
        (frame(b"\x08\x01\x12\x04\x0a\x02\x00\x01"), Status.MALFORMED_MESSAGE),
        (frame(b"\xff"), Status.MALFORMED_MESSAGE),
        (encode_uvarint(MAX_MESSAGE_BYTES + 1), Status.MALFORMED_MESSAGE),
        (b"\xff" * 10, Status.MALFORMED_MESSAGE),  # overlong length prefix
    ],
)
def test_hop_server_bad_requests(wire: bytes, status: Status) -> None:
    server = HopServer(B)
    events = feed(server, wire)
    assert len(events) == 1 and isinstance(events[0], RelayFailed)
    assert answer_of(server) == HopMessage(HopType.STATUS, status=status)
    assert server.done
    with pytest.raises(InvalidStateError):
        server.refuse(Status.PERMISSION_DENIED)


def test_hop_server_eof() -> None:
    server = HopServer(B)
    server.receive_eof()
    events = server.events_received()
    assert len(events) == 1 and isinstance(events[0], RelayFailed)
    assert server.data_to_send() == b""
    pending = HopServer(B)
    feed(pending, b"\x02\x08\x00")
    pending.receive_eof()  # the answer can still be written
    assert pending.events_received() == []
    pending.refuse(Status.RESERVATION_REFUSED)
    assert answer_of(pending).status == Status.RESERVATION_REFUSED


def test_hop_server_early_data_is_bounded() -> None:
    server = HopServer(B, max_early_data_bytes=8)
    feed(server, reply(HopMessage(HopType.CONNECT, Peer(A)), b"12345678"))
    events = feed(server, b"9")
    assert len(events) == 1 and isinstance(events[0], RelayFailed)
    assert isinstance(events[0].error, LimitExceededError)
    assert server.data_to_send() == b""  # no answer: the driver resets both streams


def test_hop_server_ignores_bytes_after_reserve() -> None:
    server = HopServer(A, max_early_data_bytes=1)
    feed(server, b"\x02\x08\x00" + b"junk" * 10)
    server.accept_reservation(5, [])
    assert answer_of(server).status == Status.OK


def test_hop_server_local_misuse() -> None:
    server = HopServer(A)
    with pytest.raises(InvalidStateError):
        server.refuse(Status.PERMISSION_DENIED)
    with pytest.raises(InvalidStateError):
        server.accept_connect()
    feed(server, b"\x02\x08\x00")
    with pytest.raises(InvalidStateError):
        server.accept_connect()
    with pytest.raises(InvalidArgumentError):
        server.refuse(Status.OK)
    connect = HopServer(B)
    feed(connect, reply(HopMessage(HopType.CONNECT, Peer(A))))
    with pytest.raises(InvalidStateError):
        connect.accept_reservation(1, [])
    with pytest.raises(InvalidArgumentError):
        HopServer(A, max_early_data_bytes=0)


# StopClient / StopServer


def stop_client(limit: Limit | None = None) -> StopClient:
    client = StopClient()
    client.connect(B, limit)
    data = client.data_to_send()
    assert StopMessage.decode(data[1:]) == StopMessage(StopType.CONNECT, Peer(B), limit)
    return client


@pytest.mark.parametrize("split", [False, True])
def test_stop_client_accepted(split: bool) -> None:
    client = stop_client(Limit(120, 1 << 17))
    wire = reply(StopMessage(StopType.STATUS, status=Status.OK), b"noise")
    events = feed(client, wire, split=split)
    assert events == [StopAccepted(b"" if split else b"noise")]
    with pytest.raises(InvalidStateError):
        client.receive_data(b"x")


@pytest.mark.parametrize("status", [*NON_OK, 1234])
def test_stop_client_refused(status: int) -> None:
    client = stop_client()
    assert feed(client, reply(StopMessage(StopType.STATUS, status=status))) == [StopRefused(status)]


@pytest.mark.parametrize(
    "wire",
    [
        reply(StopMessage(StopType.STATUS)),
        reply(StopMessage(StopType.CONNECT, Peer(A))),
        frame(b"\x08\x02"),
        frame(b"\x12\x00"),
        encode_uvarint(5000),
    ],
)
def test_stop_client_bad_answers(wire: bytes) -> None:
    client = stop_client()
    events = feed(client, wire)
    assert len(events) == 1 and isinstance(events[0], RelayFailed)
    assert client.data_to_send() == b""


def test_stop_client_eof_and_misuse() -> None:
    client = stop_client()
    client.receive_eof()
    assert isinstance(client.events_received()[0], RelayFailed)
    with pytest.raises(InvalidStateError):
        client.connect(B)


def stop_answer(server: StopServer) -> StopMessage:
    return StopMessage.decode(unframe(server.data_to_send()))


@pytest.mark.parametrize("split", [False, True])
def test_stop_server_accepts(split: bool) -> None:
    server = StopServer()
    wire = reply(StopMessage(StopType.CONNECT, Peer(B), Limit(120_000, 1 << 17)))
    events = feed(server, wire, split=split)
    assert events == [IncomingCircuit(B, Limit(120_000, 1 << 17))]
    assert isinstance(events[0], IncomingCircuit)
    assert events[0].limit is not None and events[0].limit.duration_seconds == 120.0
    assert server.accept() == b""
    assert stop_answer(server) == StopMessage(StopType.STATUS, status=Status.OK)
    with pytest.raises(InvalidStateError):
        server.receive_data(b"x")


def test_stop_server_without_limit_and_with_early_data() -> None:
    server = StopServer()
    assert feed(server, reply(StopMessage(StopType.CONNECT, Peer(B)), b"ab")) == [
        IncomingCircuit(B, None)
    ]
    assert server.accept() == b"ab"


@pytest.mark.parametrize("status", NON_OK)
def test_stop_server_refuses(status: Status) -> None:
    server = StopServer()
    feed(server, reply(StopMessage(StopType.CONNECT, Peer(B))))
    server.refuse(status)
    assert stop_answer(server) == StopMessage(StopType.STATUS, status=status)
    with pytest.raises(InvalidStateError):
        server.accept()


@pytest.mark.parametrize(
    ("wire", "status"),
    [
        (reply(StopMessage(StopType.STATUS, status=Status.OK)), Status.UNEXPECTED_MESSAGE),
        (reply(StopMessage(StopType.CONNECT)), Status.MALFORMED_MESSAGE),
        (frame(b"\x08\x04"), Status.MALFORMED_MESSAGE),
        (frame(b"\x08"), Status.MALFORMED_MESSAGE),
        (encode_uvarint(MAX_MESSAGE_BYTES + 1), Status.MALFORMED_MESSAGE),
    ],
)
def test_stop_server_bad_requests(wire: bytes, status: Status) -> None:
    server = StopServer()
    events = feed(server, wire)
    assert len(events) == 1 and isinstance(events[0], RelayFailed)
    assert stop_answer(server) == StopMessage(StopType.STATUS, status=status)


def test_stop_server_eof() -> None:
    server = StopServer()
    server.receive_eof()
    assert isinstance(server.events_received()[0], RelayFailed)
    assert server.data_to_send() == b""


# --------------------------------------------------------------------------- full flow


@pytest.mark.parametrize("split", [False, True])
def test_reservation_then_circuit_end_to_end(split: bool) -> None:
    now = 1_000.0
    # A reserves a slot on R.
    a_hop = HopClient()
    a_hop.reserve()
    r_hop = HopServer(A)
    assert transfer(a_hop, r_hop, split=split) == [ReserveRequested(A)]
    expire = int(now) + 3600
    r_hop.accept_reservation(
        expire, [RELAY_ADDR], Limit(120, 1 << 17), make_voucher(RELAY_KEY, A, expire)
    )
    [accepted] = transfer(r_hop, a_hop, split=split)
    assert isinstance(accepted, ReservationAccepted)
    assert accepted.voucher is not None
    assert verify_voucher(accepted.voucher, R, A, now=now).expiration == expire
    circuit_addr = accepted.addrs[0] / "/p2p-circuit" / f"/p2p/{A}"
    assert str(circuit_addr) == f"/ip4/1.2.3.4/tcp/4001/p2p/{R}/p2p-circuit/p2p/{A}"

    # B connects to A through R.
    b_hop = HopClient()
    b_hop.connect(A)
    r_hop2 = HopServer(B)
    assert transfer(b_hop, r_hop2, split=split) == [ConnectRequested(B, A, ())]
    r_stop = StopClient()
    r_stop.connect(B, Limit(120, 1 << 17))
    a_stop = StopServer()
    assert transfer(r_stop, a_stop, split=split) == [IncomingCircuit(B, Limit(120, 1 << 17))]
    assert a_stop.accept() == b""
    assert transfer(a_stop, r_stop, split=split) == [StopAccepted(b"")]
    assert r_hop2.accept_connect(Limit(120, 1 << 17)) == b""
    assert transfer(r_hop2, b_hop, split=split) == [CircuitEstablished(Limit(120, 1 << 17), b"")]
    assert all(m.done for m in (a_hop, r_hop, b_hop, r_hop2, r_stop, a_stop))


# --------------------------------------------------------------------------- garbage


def fresh_machines() -> list[Machine]:
    hop_reserve = HopClient()
    hop_reserve.reserve()
    hop_connect = HopClient()
    hop_connect.connect(A)
    stop = StopClient()
    stop.connect(B)
    return [hop_reserve, hop_connect, HopServer(A), stop, StopServer()]


@settings(max_examples=300)
@given(st.binary(max_size=64), st.integers(1, 8))
def test_arbitrary_bytes_never_raise(data: bytes, chunk: int) -> None:
    for machine in fresh_machines():
        machine.data_to_send()
        events: list[RelayEvent] = []
        for i in range(0, len(data), chunk):
            if machine.done:
                break
            machine.receive_data(data[i : i + chunk])
        if not machine.done:
            machine.receive_eof()
        events = machine.events_received()
        assert len(events) <= 1
        if not machine.done:  # a server with a pending request after an EOF
            assert isinstance(machine, HopServer | StopServer) and machine.pending
        machine.data_to_send()


@settings(max_examples=200)
@given(hop_messages)
def test_any_hop_answer_yields_one_documented_event(msg: HopMessage) -> None:
    for make in (reserving_client, connecting_client):
        client = make()
        events = feed(client, reply(msg))
        assert len(events) == 1 and client.done
        assert isinstance(
            events[0],
            ReservationAccepted
            | ReservationRefused
            | CircuitEstablished
            | CircuitRefused
            | RelayFailed,
        )
