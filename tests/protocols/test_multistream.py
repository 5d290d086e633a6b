"""multistream-select dialer and listener, driven byte for byte without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiop2p._wire.varint import encode_uvarint
from aiop2p.errors import (
    InvalidArgumentError,
    InvalidStateError,
    LocalProtocolError,
    MessageTooLargeError,
    NegotiationError,
    ProtocolNotSupportedError,
    RemoteProtocolError,
)
from aiop2p.protocols.multistream import (
    MULTISTREAM_PROTOCOL_ID,
    MultistreamDialer,
    MultistreamEvent,
    MultistreamListener,
    NegotiationFailed,
    ProtocolSelected,
    ProtocolsListed,
    encode_message,
)

from ._pair import settle

Machine = MultistreamDialer | MultistreamListener

HEADER = b"\x13/multistream/1.0.0\n"


def failure(events: list[MultistreamEvent]) -> Exception:
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, NegotiationFailed)
    return event.error


# --- wire format -------------------------------------------------------------------------


def test_message_encoding_matches_spec() -> None:
    assert encode_message("na") == bytes.fromhex("036e610a")
    assert encode_message("ls") == bytes.fromhex("036c730a")
    assert encode_message(MULTISTREAM_PROTOCOL_ID) == HEADER


def test_dialer_sends_header_and_first_proposal_in_one_write() -> None:
    dialer = MultistreamDialer(["/noise", "/tls/1.0.0"])
    assert dialer.data_to_send() == HEADER + b"\x07/noise\n"
    assert dialer.data_to_send() == b""
    assert not dialer.optimistic


def test_listener_queues_header_at_construction() -> None:
    assert MultistreamListener(["/noise"]).data_to_send() == HEADER


# --- successful negotiation --------------------------------------------------------------


def test_first_protocol_selected() -> None:
    dialer = MultistreamDialer(["/yamux/1.0.0"])
    listener = MultistreamListener(["/yamux/1.0.0"])
    settle(dialer, listener)
    assert dialer.events_received() == [ProtocolSelected("/yamux/1.0.0", b"")]
    assert listener.events_received() == [ProtocolSelected("/yamux/1.0.0", b"")]
    assert dialer.done and listener.done
    assert dialer.events_received() == []


def test_na_moves_to_next_protocol() -> None:
    dialer = MultistreamDialer(["/a/2", "/a/1"])
    listener = MultistreamListener(["/a/1"])
    wire: list[bytes] = []
    first = dialer.data_to_send()
    wire.append(first)
    listener.receive_data(first)
    answer = listener.data_to_send()
    assert answer == HEADER + encode_message("na")
    dialer.receive_data(answer)
    second = dialer.data_to_send()
    assert second == encode_message("/a/1")
    listener.receive_data(second)
    assert listener.data_to_send() == encode_message("/a/1")
    assert listener.events_received() == [ProtocolSelected("/a/1", b"")]
    dialer.receive_data(encode_message("/a/1"))
    assert dialer.events_received() == [ProtocolSelected("/a/1", b"")]


def test_predicate_listener() -> None:
    dialer = MultistreamDialer(["/x/1", "/echo/9"])
    listener = MultistreamListener(lambda p: p.startswith("/echo/"))
    settle(dialer, listener)
    assert dialer.events_received() == [ProtocolSelected("/echo/9", b"")]


def test_listener_given_a_single_string() -> None:
    dialer = MultistreamDialer(["/noise"])
    listener = MultistreamListener("/noise")
    settle(dialer, listener)
    assert listener.events_received() == [ProtocolSelected("/noise", b"")]


def test_leftover_goes_to_selected_protocol_on_both_sides() -> None:
    dialer = MultistreamDialer(["/noise"], optimistic=True)
    listener = MultistreamListener(["/noise"])
    assert dialer.optimistic
    listener.receive_data(dialer.data_to_send() + b"payload-1")
    assert listener.events_received() == [ProtocolSelected("/noise", b"payload-1")]
    dialer.receive_data(listener.data_to_send() + b"reply")
    assert dialer.events_received() == [ProtocolSelected("/noise", b"reply")]


def test_optimistic_refused() -> None:
    dialer = MultistreamDialer(["/noise"], optimistic=True)
    listener = MultistreamListener(["/tls/1.0.0"])
    listener.receive_data(dialer.data_to_send() + b"\x05early")
    dialer.receive_data(listener.data_to_send())
    error = failure(dialer.events_received())
    assert isinstance(error, ProtocolNotSupportedError)
    assert error.protocols == ("/noise",)


def feed_split(machine: Machine, data: bytes, cut: int) -> list[MultistreamEvent]:
    """Deliver ``data`` in two pieces; fold bytes arriving after selection into leftover."""
    machine.receive_data(data[:cut])
    rest = data[cut:]
    if not machine.done:
        machine.receive_data(rest)
        rest = b""
    events = machine.events_received()
    return [
        ProtocolSelected(e.protocol, e.leftover + rest) if isinstance(e, ProtocolSelected) else e
        for e in events
    ]


def test_split_at_every_byte_boundary() -> None:
    dialer_bytes = (
        HEADER + encode_message("/a/2") + encode_message("ls") + encode_message("/a/1") + b"tail"
    )
    for cut in range(len(dialer_bytes) + 1):
        listener = MultistreamListener(["/a/1"])
        assert feed_split(listener, dialer_bytes, cut) == [ProtocolSelected("/a/1", b"tail")], cut
        assert listener.data_to_send() == (
            HEADER + encode_message("na") + b"\x07\x05/a/1\n\n" + encode_message("/a/1")
        )

    listener_bytes = (
        HEADER + b"\x07\x05/a/1\n\n" + encode_message("na") + encode_message("/a/1") + b"more"
    )
    for cut in range(len(listener_bytes) + 1):
        dialer = MultistreamDialer(["/a/2", "/a/1"])
        dialer.list_protocols()
        assert feed_split(dialer, listener_bytes, cut) == [
            ProtocolsListed(("/a/1",)),
            ProtocolSelected("/a/1", b"more"),
        ], cut


def test_byte_by_byte_exchange() -> None:
    dialer = MultistreamDialer(["/b", "/a"])
    listener = MultistreamListener(["/a"])
    for _ in range(200):
        for src, dst in ((dialer, listener), (listener, dialer)):
            for byte in src.data_to_send():
                if not dst.done:
                    dst.receive_data(bytes((byte,)))
    assert dialer.events_received() == [ProtocolSelected("/a", b"")]
    assert listener.events_received() == [ProtocolSelected("/a", b"")]


def test_multiline_message_is_tolerated() -> None:
    dialer = MultistreamDialer(["/noise"])
    dialer.receive_data(encode_uvarint(26) + b"/multistream/1.0.0\n/noise\n" + b"x")
    assert dialer.events_received() == [ProtocolSelected("/noise", b"x")]
    listener = MultistreamListener(["/noise"])
    listener.receive_data(encode_uvarint(26) + b"/multistream/1.0.0\n/noise\n")
    assert listener.events_received() == [ProtocolSelected("/noise", b"")]


def test_listener_tolerates_dialer_that_waits_for_header() -> None:
    listener = MultistreamListener(["/p"])
    listener.receive_data(HEADER)
    assert listener.events_received() == []
    listener.receive_data(encode_message("/p"))
    assert listener.events_received() == [ProtocolSelected("/p", b"")]


# --- ls ----------------------------------------------------------------------------------


def test_ls_before_selection() -> None:
    dialer = MultistreamDialer(["/yamux/1.0.0"])
    dialer.list_protocols()
    listener = MultistreamListener(["/mplex/6.7.0", "/yamux/1.0.0"])
    settle(dialer, listener)
    assert dialer.events_received() == [
        ProtocolsListed(("/mplex/6.7.0", "/yamux/1.0.0")),
        ProtocolSelected("/yamux/1.0.0", b""),
    ]


def test_ls_response_wire_format() -> None:
    listener = MultistreamListener(["/a", "/bb"])
    listener.receive_data(HEADER + encode_message("ls"))
    payload = b"\x03/a\n" + b"\x04/bb\n" + b"\n"
    assert listener.data_to_send() == HEADER + encode_uvarint(len(payload)) + payload


def test_list_only_dialer() -> None:
    dialer = MultistreamDialer([])
    dialer.list_protocols()
    assert dialer.data_to_send() == HEADER + encode_message("ls")
    listener = MultistreamListener(lambda p: True)
    listener.receive_data(HEADER + encode_message("ls"))
    dialer.receive_data(listener.data_to_send())
    assert dialer.events_received() == [ProtocolsListed(())]
    assert dialer.done


@pytest.mark.parametrize(
    "payload",
    [
        b"\x03/a\n\x04/bb\n\n",  # the spec's form
        b"\x03/a\n\x04/bb\n",  # no final newline
        b"\x02/a\n\x03/bb\n\n",  # lengths excluding the newline
    ],
)
def test_ls_response_forms_tolerated(payload: bytes) -> None:
    dialer = MultistreamDialer([])
    dialer.list_protocols()
    dialer.receive_data(HEADER + encode_uvarint(len(payload)) + payload)
    assert dialer.events_received() == [ProtocolsListed(("/a", "/bb"))]


@pytest.mark.parametrize(
    "payload", [b"\x05/a\n", b"\x03/ab", b"\x80", b"\x03\xff\xfe\n", b"\x03/a\n\x00"]
)
def test_malformed_ls_response(payload: bytes) -> None:
    dialer = MultistreamDialer([])
    dialer.list_protocols()
    dialer.receive_data(HEADER + encode_uvarint(len(payload)) + payload)
    assert isinstance(failure(dialer.events_received()), RemoteProtocolError)


def test_ls_answer_sharing_header_message_is_refused() -> None:
    dialer = MultistreamDialer(["/a"])
    dialer.list_protocols()
    dialer.receive_data(encode_uvarint(22) + b"/multistream/1.0.0\n/a\n")
    assert isinstance(failure(dialer.events_received()), RemoteProtocolError)


def test_ls_misuse() -> None:
    dialer = MultistreamDialer(["/a"])
    dialer.data_to_send()
    with pytest.raises(InvalidStateError):
        dialer.list_protocols()
    other = MultistreamDialer([])
    other.list_protocols()
    with pytest.raises(InvalidStateError):
        other.list_protocols()
    selected = MultistreamDialer(["/a"])
    selected.receive_data(HEADER + encode_message("/a"))
    with pytest.raises(InvalidStateError):
        selected.list_protocols()


# --- failures ----------------------------------------------------------------------------


def test_all_refused() -> None:
    dialer = MultistreamDialer(["/a", "/b"])
    listener = MultistreamListener(["/c"])
    settle(dialer, listener)
    error = failure(dialer.events_received())
    assert isinstance(error, ProtocolNotSupportedError)
    assert error.protocols == ("/a", "/b")
    assert not listener.done  # the dialer closes the channel; the listener then sees EOF
    listener.receive_eof()
    assert isinstance(failure(listener.events_received()), NegotiationError)


@pytest.mark.parametrize("machine", ["dialer", "listener"])
def test_bad_header(machine: str) -> None:
    m: Machine = MultistreamDialer(["/a"]) if machine == "dialer" else MultistreamListener(["/a"])
    m.receive_data(encode_message("/multistream-select/0.3.0"))
    error = failure(m.events_received())
    assert type(error) is NegotiationError
    m.receive_data(b"ignored after failure")
    m.receive_eof()
    assert m.events_received() == []


@pytest.mark.parametrize("machine", ["dialer", "listener"])
@pytest.mark.parametrize(
    ("data", "error_type"),
    [
        (b"\x02ab", RemoteProtocolError),  # no newline
        (b"\x00", RemoteProtocolError),  # empty message
        (b"\x03\xff\xfe\n", RemoteProtocolError),  # not UTF-8
        (b"\x81\x00", RemoteProtocolError),  # non-minimal varint
        (b"\xff" * 10, RemoteProtocolError),  # varint too long
        (encode_uvarint(1025), MessageTooLargeError),
    ],
)
def test_malformed_messages(machine: str, data: bytes, error_type: type[Exception]) -> None:
    m: Machine = MultistreamDialer(["/a"]) if machine == "dialer" else MultistreamListener(["/a"])
    m.receive_data(data)
    assert isinstance(failure(m.events_received()), error_type)
    assert m.done


def test_dialer_unexpected_answer() -> None:
    dialer = MultistreamDialer(["/a"])
    dialer.receive_data(HEADER + encode_message("/b"))
    assert isinstance(failure(dialer.events_received()), RemoteProtocolError)
    list_only = MultistreamDialer([])
    list_only.receive_data(HEADER + encode_message("na"))
    assert isinstance(failure(list_only.events_received()), RemoteProtocolError)


def test_data_after_echo_in_same_message() -> None:
    dialer = MultistreamDialer(["/a"])
    dialer.receive_data(HEADER + encode_uvarint(6) + b"/a\nxy\n")
    assert isinstance(failure(dialer.events_received()), RemoteProtocolError)
    listener = MultistreamListener(["/a"])
    listener.receive_data(HEADER + encode_uvarint(6) + b"/a\nxy\n")
    assert isinstance(failure(listener.events_received()), RemoteProtocolError)


def test_listener_attempt_limit() -> None:
    listener = MultistreamListener(["/z"], max_attempts=3)
    listener.receive_data(
        HEADER + encode_message("/a") + encode_message("ls") + encode_message("/c")
    )
    assert listener.events_received() == []
    listener.receive_data(encode_message("/d"))
    error = failure(listener.events_received())
    assert type(error) is NegotiationError
    assert "3" in str(error)


def test_listener_refuses_na_and_ls_as_protocols() -> None:
    listener = MultistreamListener(lambda p: True)
    listener.receive_data(HEADER + encode_message("na") + encode_message("ls"))
    assert listener.data_to_send() == HEADER + encode_message("na") + b"\x01\n"
    assert listener.events_received() == []


def test_eof() -> None:
    dialer = MultistreamDialer(["/a"])
    dialer.receive_eof()
    error = failure(dialer.events_received())
    assert type(error) is NegotiationError and "closed" in str(error)
    done = MultistreamDialer(["/a"])
    done.receive_data(HEADER + encode_message("/a"))
    done.events_received()
    done.receive_eof()
    assert done.events_received() == []


def test_receive_after_success_is_local_misuse() -> None:
    dialer = MultistreamDialer(["/a"])
    dialer.receive_data(HEADER + encode_message("/a"))
    with pytest.raises(InvalidStateError):
        dialer.receive_data(b"x")


def test_empty_data_is_ignored() -> None:
    listener = MultistreamListener(["/a"])
    listener.receive_data(b"")
    assert listener.events_received() == [] and not listener.done


def test_local_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        MultistreamDialer(["/a", "/b"], optimistic=True)
    with pytest.raises(LocalProtocolError):
        MultistreamDialer([], optimistic=True)
    for bad in ["", "na", "ls", "/a\n/b", "/" + "x" * 1024]:
        with pytest.raises(InvalidArgumentError):
            MultistreamDialer([bad])
    with pytest.raises(InvalidArgumentError):
        MultistreamDialer(["/a"], max_message_size=0)
    with pytest.raises(InvalidArgumentError):
        MultistreamDialer(["/a"], max_ls_response_size=0)
    with pytest.raises(InvalidArgumentError):
        MultistreamListener(["/a"], max_attempts=0)


# --- fuzz --------------------------------------------------------------------------------

_valid_chunks = st.sampled_from(
    [HEADER, encode_message("/a"), encode_message("na"), encode_message("ls"), b"\x03/a\n\n"]
)
_chunks = st.lists(st.one_of(st.binary(max_size=40), _valid_chunks), max_size=8)


@settings(max_examples=300, deadline=None)
@given(chunks=_chunks, eof=st.booleans(), optimistic=st.booleans())
def test_fuzz_dialer(chunks: list[bytes], eof: bool, optimistic: bool) -> None:
    dialer = MultistreamDialer(["/a"], optimistic=optimistic, max_message_size=64)
    if not optimistic:
        dialer.list_protocols()
    events: list[MultistreamEvent] = []
    for chunk in chunks:
        if dialer.done:
            break
        dialer.receive_data(chunk)
        dialer.data_to_send()
        events += dialer.events_received()
    if eof:
        dialer.receive_eof()
    events += dialer.events_received()
    terminal = [e for e in events if not isinstance(e, ProtocolsListed)]
    assert len(terminal) <= 1
    assert dialer.done == bool(terminal)


@settings(max_examples=300, deadline=None)
@given(chunks=_chunks, eof=st.booleans(), listed=st.booleans())
def test_fuzz_listener(chunks: list[bytes], eof: bool, listed: bool) -> None:
    listener = MultistreamListener(
        ["/a"] if listed else (lambda p: p == "/a"), max_message_size=64, max_attempts=4
    )
    events: list[MultistreamEvent] = []
    for chunk in chunks:
        if listener.done:
            break
        listener.receive_data(chunk)
        listener.data_to_send()
        events += listener.events_received()
    if eof:
        listener.receive_eof()
    events += listener.events_received()
    assert len(events) <= 1
    assert listener.done == bool(events)
    for event in events:
        assert isinstance(event, ProtocolSelected | NegotiationFailed)
