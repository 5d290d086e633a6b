"""multistream-select dialer and listener, driven byte for byte without sockets."""

from __future__ import annotations

from itertools import pairwise

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
    Proposal,
    ProtocolSelected,
    ProtocolsListed,
    encode_message,
    match_proposal,
    single_proposal,
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


# --- the fast path -----------------------------------------------------------------------


def comparable(events: list[MultistreamEvent]) -> list[object]:
    """Events with errors as (type, text): exceptions do not compare equal."""
    return [
        (type(e.error), str(e.error)) if isinstance(e, NegotiationFailed) else e for e in events
    ]


def test_single_proposal_is_built_once_and_is_the_dialers_first_write() -> None:
    proposal = single_proposal("/a/1", 1024)
    assert single_proposal("/a/1", 1024) is proposal
    assert proposal.wire == MultistreamDialer(["/a/1"], optimistic=True).data_to_send()
    assert proposal.wire == HEADER + encode_message("/a/1")
    for bad in ["", "na", "ls", "/a\n/b", "/" + "x" * 1024]:
        with pytest.raises(InvalidArgumentError):
            single_proposal(bad, 1024)
    with pytest.raises(InvalidArgumentError):
        single_proposal("/a/1", 0)


def test_proposal_matches_the_listeners_echo() -> None:
    proposal = single_proposal("/a/1", 1024)
    listener = MultistreamListener(["/a/1"])
    listener.receive_data(proposal.wire)
    echo = listener.data_to_send()
    assert echo == proposal.wire  # the listener answers with the dialer's bytes
    assert proposal.match_echo(echo) == b""
    assert proposal.match_echo(echo + b"reply") == b"reply"


@pytest.mark.parametrize(
    "answer",
    [
        HEADER,  # the header alone: the echo comes in a later frame
        HEADER[:5],
        HEADER + encode_message("/a/1")[:3],
        HEADER + encode_message("na"),
        HEADER + encode_message("/b/1"),
        encode_message("/a/1") + HEADER,
        b"\x00garbage",
        b"",
    ],
)
def test_proposal_falls_back_to_the_full_dialer(answer: bytes) -> None:
    proposal = single_proposal("/a/1", 1024)
    assert proposal.match_echo(answer) is None
    dialer = proposal.dialer()
    assert dialer.optimistic
    assert dialer.data_to_send() == b""  # its first write is the proposal, already sent
    reference = MultistreamDialer(["/a/1"], optimistic=True)
    reference.data_to_send()
    dialer.receive_data(answer)
    reference.receive_data(answer)
    assert comparable(dialer.events_received()) == comparable(reference.events_received())
    assert dialer.done == reference.done


def test_proposal_follows_a_header_sent_alone() -> None:
    proposal = single_proposal("/a/1", 1024)
    after = proposal.match_header(HEADER)
    assert after is not None and after is proposal.after_header
    assert after.match_header(HEADER) is None  # a second header: the machine refuses it
    assert after.match_echo(encode_message("/a/1") + b"reply") == b"reply"
    assert after.match_echo(HEADER + encode_message("/a/1")) is None
    assert proposal.match_header(HEADER + encode_message("/a/1")[:2]) is None
    assert proposal.match_header(HEADER[:-1]) is None
    dialer = after.dialer()  # the full machine that has seen the header
    assert dialer.data_to_send() == b""
    dialer.receive_data(encode_message("na"))
    error = failure(dialer.events_received())
    assert isinstance(error, ProtocolNotSupportedError)


def test_proposal_below_the_header_size_never_matches() -> None:
    proposal = single_proposal("/a", 8)  # the full dialer refuses the 19-byte header echo
    assert proposal.match_echo(proposal.wire) is None
    assert proposal.match_header(HEADER) is None
    dialer = proposal.dialer()
    dialer.receive_data(proposal.wire)
    assert isinstance(failure(dialer.events_received()), MessageTooLargeError)


def test_match_proposal_accepts_the_common_case() -> None:
    first = HEADER + encode_message("/a/1")
    assert match_proposal(first, ["/a/1", "/b/1"], 1024) == ("/a/1", len(first))
    assert match_proposal(first + b"request", {"/a/1"}, 1024) == ("/a/1", len(first))
    assert match_proposal(first, {"/a/1": None}.keys(), 1024) == ("/a/1", len(first))
    assert match_proposal(first, "/a/1", 1024) == ("/a/1", len(first))  # a lone id
    assert match_proposal(first, "/a/1/x", 1024) is None  # not a substring test
    # The answer the full listener gives is the matched prefix.
    listener = MultistreamListener(["/a/1"])
    listener.receive_data(first + b"request")
    assert listener.data_to_send() == first
    assert listener.events_received() == [ProtocolSelected("/a/1", b"request")]


@pytest.mark.parametrize(
    ("first", "max_message_size"),
    [
        (HEADER, 1024),  # split header/proposal
        (HEADER[:7], 1024),  # split header
        (HEADER + encode_message("/a/1")[:4], 1024),  # split proposal
        (HEADER + encode_message("ls") + encode_message("/a/1"), 1024),
        (HEADER + encode_message("na") + encode_message("/a/1"), 1024),
        (HEADER + encode_message("/z/9") + encode_message("/a/1"), 1024),  # na, then accept
        (HEADER + encode_message("/z/9"), 1024),  # unsupported
        (HEADER + encode_message("/a/1"), 3),  # the proposal is above the limit
        (HEADER + encode_message("/a/1"), 18),  # the header is above the limit
        (HEADER + encode_uvarint(1025), 1024),  # oversize length prefix
        (HEADER + encode_uvarint(6) + b"/a/1\nx\n", 1024),  # two lines in one message
        (HEADER + b"\x06/a/\xff1\n", 1024),  # not UTF-8
        (HEADER + b"\x05/a/1x", 1024),  # no newline
        (HEADER + b"\x00", 1024),  # empty message
        (encode_message("/multistream/2.0.0") + encode_message("/a/1"), 1024),
        (b"\xff" * 30, 1024),  # garbage
        (b"", 1024),
    ],
)
def test_match_proposal_falls_back(first: bytes, max_message_size: int) -> None:
    assert match_proposal(first, ["/a/1"], max_message_size) is None
    proposal = HEADER + encode_message("/a/1")
    assert match_proposal(proposal, ["/a/1"], 1024) is not None  # that parse is kept
    assert match_proposal(first, ["/a/1"], max_message_size) is None


def test_match_proposal_parses_a_repeated_proposal_once_and_asks_the_offer_each_time() -> None:
    first = HEADER + encode_message("/a/1")
    offered = {"/a/1", "/b/1"}
    assert match_proposal(first + b"x", offered, 1024) == ("/a/1", len(first))
    again = match_proposal(first + b"y", offered, 1024)
    assert again == ("/a/1", len(first))
    assert again[0] is match_proposal(first, offered, 1024)[0]  # type: ignore[index]
    other = HEADER + encode_message("/b/1")
    assert match_proposal(other, offered, 1024) == ("/b/1", len(other))
    assert match_proposal(first, offered, 1024) == ("/a/1", len(first))
    offered.discard("/a/1")  # no longer offered: refused although its bytes were parsed
    assert match_proposal(first, offered, 1024) is None
    offered.add("/a/1")
    assert match_proposal(first, offered, 3) is None  # a lower limit: parsed again
    assert match_proposal(first, offered, 1024) == ("/a/1", len(first))
    longer = HEADER + encode_message("/a/12")  # the same start, another length prefix
    assert match_proposal(longer, offered, 1024) is None
    assert match_proposal(longer, {"/a/12"}, 1024) == ("/a/12", len(longer))
    assert match_proposal(first[:-1], offered, 1024) is None  # cut before its newline


def test_long_protocol_ids_take_the_full_machine() -> None:
    long_id = "/" + "x" * 200  # a two-byte length prefix: not on the fast path
    first = HEADER + encode_message(long_id)
    assert match_proposal(first, [long_id], 1024) is None
    listener = MultistreamListener([long_id])
    listener.receive_data(first)
    assert listener.events_received() == [ProtocolSelected(long_id, b"")]
    proposal = single_proposal(long_id, 1024)
    assert proposal.match_echo(listener.data_to_send()) == b""  # echoes compare whole


# The drivers' use of the fast path (``_aio/stream.py``): the first input goes through it;
# if it does not match, the full machine takes that input and everything after.  Bytes
# arriving after the selection belong to the protocol: folded into the leftover here.


def run_listener(
    chunks: list[bytes], eof: bool, supported: list[str], max_size: int, fast: bool
) -> tuple[bytes, list[object]]:
    out = b""
    events: list[MultistreamEvent] = []
    machine: MultistreamListener | None = None
    selected: ProtocolSelected | None = None
    for i, chunk in enumerate(chunks):
        if selected is not None:
            selected = ProtocolSelected(selected.protocol, selected.leftover + chunk)
            continue
        if machine is not None and machine.done:
            break
        match = match_proposal(chunk, supported, max_size) if fast and i == 0 else None
        if match is not None:
            protocol, end = match
            out += chunk[:end]
            selected = ProtocolSelected(protocol, chunk[end:])
            continue
        if machine is None:
            machine = MultistreamListener(supported, max_message_size=max_size, max_attempts=4)
        machine.receive_data(chunk)
        out += machine.data_to_send()
        for event in machine.events_received():
            if isinstance(event, ProtocolSelected):
                selected = event
            else:
                events.append(event)
    if eof and selected is None and (machine is None or not machine.done):
        if machine is None:
            machine = MultistreamListener(supported, max_message_size=max_size, max_attempts=4)
        machine.receive_eof()
        out += machine.data_to_send()
        events += machine.events_received()
    return out, comparable(events + ([selected] if selected is not None else []))


def run_dialer(
    chunks: list[bytes], eof: bool, protocol: str, max_size: int, fast: bool
) -> tuple[bytes, list[object]]:
    state: Proposal | None = Proposal(protocol, max_size)
    out = b""
    events: list[MultistreamEvent] = []
    machine: MultistreamDialer | None = None
    if not fast:
        machine = MultistreamDialer([protocol], optimistic=True, max_message_size=max_size)
        assert state is not None and machine.data_to_send() == state.wire
        state = None
    selected: ProtocolSelected | None = None
    for chunk in chunks:
        if selected is not None:
            selected = ProtocolSelected(selected.protocol, selected.leftover + chunk)
            continue
        if machine is not None and machine.done:
            break
        if state is not None:
            leftover = state.match_echo(chunk)
            if leftover is not None:
                selected = ProtocolSelected(protocol, leftover)
                continue
            after_header = state.match_header(chunk)
            if after_header is not None:
                state = after_header
                continue
            machine = state.dialer()
            state = None
        assert machine is not None
        machine.receive_data(chunk)
        out += machine.data_to_send()
        for event in machine.events_received():
            if isinstance(event, ProtocolSelected):
                selected = event
            else:
                events.append(event)
    if eof and selected is None and (machine is None or not machine.done):
        if machine is None:
            assert state is not None
            machine = state.dialer()
        machine.receive_eof()
        out += machine.data_to_send()
        events += machine.events_received()
    return out, comparable(events + ([selected] if selected is not None else []))


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


_pieces = st.sampled_from(
    [
        HEADER,
        encode_message("/a"),
        encode_message("/b"),
        encode_message("/zz"),
        encode_message("na"),
        encode_message("ls"),
        encode_uvarint(6) + b"/a\n/b\n",
        encode_message("/multistream/2.0.0"),
        b"\x03\xff\xfe\n",
        encode_uvarint(300),
    ]
)
_stream_input = st.lists(st.one_of(_pieces, st.binary(max_size=12)), max_size=6).map(b"".join)
_first = st.sampled_from(
    [
        HEADER + encode_message("/a"),
        HEADER + encode_message("/b"),
        HEADER + encode_message("/zz"),
        HEADER + encode_message("ls"),
        HEADER + encode_uvarint(6) + b"/a\n/b\n",
        HEADER,
        b"",
    ]
)
# "/a\n/b" cannot be offered (a message with two lines is two messages): never selected.
_OFFERED = ["/a", "/b", "/a\n/b"]


@settings(max_examples=500, deadline=None)
@given(
    first=_first,
    alone=st.booleans(),
    rest=_stream_input,
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=4),
    eof=st.booleans(),
    max_size=st.sampled_from([2, 18, 19, 64]),
)
def test_fast_listener_is_the_full_listener(
    first: bytes, alone: bool, rest: bytes, cuts: list[int], eof: bool, max_size: int
) -> None:
    # ``alone``: ``first`` is a frame of its own, the rest split anywhere
    chunks = [first, *split(rest, cuts)] if alone else split(first + rest, cuts)
    args = (chunks, eof, _OFFERED, max_size)
    assert run_listener(*args, fast=True) == run_listener(*args, fast=False)


_answer_first = st.sampled_from(
    [
        b"",
        HEADER + encode_message("/a"),
        HEADER,  # the header in a frame of its own (js-libp2p, py-libp2p)
        HEADER + encode_message("/a")[:2],
        HEADER + encode_message("na"),
    ]
)


@settings(max_examples=500, deadline=None)
@given(
    first=_answer_first,
    alone=st.booleans(),
    rest=_stream_input,
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=4),
    eof=st.booleans(),
    max_size=st.sampled_from([3, 18, 19, 64]),  # "/a" needs 3
)
def test_fast_dialer_is_the_full_dialer(
    first: bytes, alone: bool, rest: bytes, cuts: list[int], eof: bool, max_size: int
) -> None:
    # ``alone``: ``first`` is a frame of its own, the rest split anywhere
    chunks = [first, *split(rest, cuts)] if alone else split(first + rest, cuts)
    args = (chunks, eof, "/a", max_size)
    assert run_dialer(*args, fast=True) == run_dialer(*args, fast=False)
