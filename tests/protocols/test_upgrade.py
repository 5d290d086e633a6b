"""The connection upgrade (multistream, Noise, multistream, Yamux) driven without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiop2p._wire.protobuf import encode_bytes_field, encode_varint_field
from aiop2p.errors import (
    ConnectionLostError,
    DecryptionError,
    HandshakeError,
    HandshakeTimeoutError,
    InvalidArgumentError,
    InvalidStateError,
    NegotiationError,
    P2PError,
    PeerIdMismatchError,
    ProtocolNotSupportedError,
)
from aiop2p.identity import KeyPair, PeerId
from aiop2p.protocols.multistream import (
    MultistreamDialer,
    MultistreamListener,
    ProtocolSelected,
    encode_message,
)
from aiop2p.protocols.noise import (
    NOISE_PROTOCOL_ID,
    HandshakeCompleted,
    NoiseCredentials,
    NoiseHandshake,
    NoiseTransport,
)
from aiop2p.protocols.role import Role
from aiop2p.protocols.upgrade import (
    UpgradeCompleted,
    UpgradeEvent,
    UpgradeFailed,
    UpgradeMachine,
    UpgradeStage,
)
from aiop2p.protocols.yamux import (
    YAMUX_PROTOCOL_ID,
    StreamDataReceived,
    StreamOpened,
    YamuxSession,
)

from ._pair import run, send, x25519

DIALER_ID = KeyPair.from_ed25519_seed(bytes(range(32)))
LISTENER_ID = KeyPair.from_ed25519_seed(bytes(range(32, 64)))
OTHER_ID = KeyPair.from_ed25519_seed(bytes(range(64, 96)))
TIMEOUT = 10.0
_HEADER = encode_message("/multistream/1.0.0")
_TAG = 16


def machine(
    *,
    role: Role,
    identity: KeyPair,
    expected_peer: PeerId | None = None,
    now: float = 0.0,
    early: bool = False,
) -> UpgradeMachine:
    """``early``: our payload lists Yamux (early muxer negotiation), as a node's does."""
    base = 1 if role is Role.INITIATOR else 3
    muxers = (YAMUX_PROTOCOL_ID,) if early else ()
    return UpgradeMachine(
        role=role,
        credentials=NoiseCredentials.create(identity, x25519(base), stream_muxers=muxers),
        ephemeral_key=x25519(base + 1),
        now=now,
        handshake_timeout=TIMEOUT,
        expected_peer=expected_peer,
    )


def pair(
    *,
    expected_peer: PeerId | None = LISTENER_ID.peer_id,
    dialer_early: bool = False,
    listener_early: bool = False,
) -> tuple[UpgradeMachine, UpgradeMachine]:
    """A dialer (initiator) and a listener (responder); the ``*_early`` ones list Yamux in
    their Noise payload, as a node does by default."""
    return (
        machine(
            role=Role.INITIATOR,
            identity=DIALER_ID,
            expected_peer=expected_peer,
            early=dialer_early,
        ),
        machine(role=Role.RESPONDER, identity=LISTENER_ID, early=listener_early),
    )


def completed(events: list[UpgradeEvent]) -> UpgradeCompleted:
    [event] = events
    assert isinstance(event, UpgradeCompleted)
    return event


def failure(m: UpgradeMachine) -> P2PError:
    [event] = m.events_received()
    assert isinstance(event, UpgradeFailed)
    assert m.stage is UpgradeStage.DONE and m.done
    assert m.data_to_send() == b""
    assert m.get_timer() is None
    return event.error


def exchange_stream(client: YamuxSession, server: YamuxSession) -> None:
    sid = client.open_stream()
    client.send_data(sid, b"hello")
    server.receive_data(client.data_to_send())
    events = server.events_received()
    assert StreamOpened(sid) in events
    assert StreamDataReceived(sid, b"hello") in events


# -- success ----------------------------------------------------------------------------------


def test_both_sides_complete_with_each_others_identity_and_a_working_channel() -> None:
    dialer, listener = pair()
    events_d, events_l = run(dialer, listener)
    done_d, done_l = completed(events_d), completed(events_l)
    assert done_d.remote_peer == LISTENER_ID.peer_id
    assert done_l.remote_peer == DIALER_ID.peer_id
    assert done_d.remote_public_key == LISTENER_ID.public_key
    assert done_l.remote_public_key == DIALER_ID.public_key
    assert done_d.session.role is Role.INITIATOR and done_l.session.role is Role.RESPONDER
    assert dialer.remote_peer == LISTENER_ID.peer_id
    assert listener.remote_peer == DIALER_ID.peer_id
    assert done_l.transport.decrypt(done_d.transport.encrypt(b"ping")) == [b"ping"]
    assert done_d.transport.decrypt(done_l.transport.encrypt(b"pong")) == [b"pong"]
    exchange_stream(done_d.session, done_l.session)
    assert dialer.get_timer() is None and listener.get_timer() is None


def test_dialer_saves_round_trips_four_flights_in_all() -> None:
    dialer, listener = pair()
    # 1: header, /noise proposal and Noise message 1 in one write, before any answer.
    first = send(dialer, listener)
    noise1 = NoiseHandshake(
        role=Role.INITIATOR,
        credentials=NoiseCredentials.create(DIALER_ID, x25519(1)),
        ephemeral_key=x25519(2),
    ).data_to_send()
    assert first == _HEADER + encode_message(NOISE_PROTOCOL_ID) + noise1
    assert listener.stage is UpgradeStage.NOISE
    # 2: header, echo and Noise message 2.
    second = send(listener, dialer)
    assert second.startswith(_HEADER + encode_message(NOISE_PROTOCOL_ID))
    assert dialer.stage is UpgradeStage.MUXER_NEGOTIATION
    # 3: Noise message 3 and, right behind it, the encrypted /yamux/1.0.0 proposal.
    third = send(dialer, listener)
    proposal = _HEADER + encode_message(YAMUX_PROTOCOL_ID)
    assert len(third) > 2 + len(proposal) + _TAG
    completed(listener.events_received())
    # 4: the encrypted echo.
    send(listener, dialer)
    completed(dialer.events_received())
    assert dialer.data_to_send() == b"" and listener.data_to_send() == b""


def test_listener_holds_its_header_until_it_answers() -> None:
    _, listener = pair()
    assert listener.data_to_send() == b""


def test_role_override_dial_run_as_responder_checks_the_peer() -> None:
    # DCUtR after a TCP simultaneous open: the side that dialled may run as responder.
    responder = machine(role=Role.RESPONDER, identity=DIALER_ID, expected_peer=LISTENER_ID.peer_id)
    initiator = machine(role=Role.INITIATOR, identity=LISTENER_ID)
    events_r, events_i = run(responder, initiator)
    assert completed(events_r).remote_peer == LISTENER_ID.peer_id
    assert completed(events_r).session.role is Role.RESPONDER
    assert completed(events_i).session.role is Role.INITIATOR


def test_role_override_responder_refuses_the_wrong_peer() -> None:
    responder = machine(role=Role.RESPONDER, identity=DIALER_ID, expected_peer=OTHER_ID.peer_id)
    initiator = machine(role=Role.INITIATOR, identity=LISTENER_ID)
    send(initiator, responder)
    send(responder, initiator)
    send(initiator, responder)  # message 3 proves LISTENER_ID
    error = failure(responder)
    assert isinstance(error, PeerIdMismatchError)
    assert error.expected == OTHER_ID.peer_id and error.actual == LISTENER_ID.peer_id


def test_initiator_refuses_the_wrong_peer_before_sending_message_3() -> None:
    dialer, listener = pair(expected_peer=OTHER_ID.peer_id)
    send(dialer, listener)
    send(listener, dialer)
    assert isinstance(failure(dialer), PeerIdMismatchError)


# -- refusals -----------------------------------------------------------------------------------


def test_initiator_fails_when_noise_is_refused() -> None:
    dialer, _ = pair()
    refuser = MultistreamListener(("/tls/1.0.0",))
    refuser.receive_data(dialer.data_to_send())
    dialer.receive_data(refuser.data_to_send())
    assert isinstance(failure(dialer), ProtocolNotSupportedError)


def test_responder_answers_na_to_another_security_protocol_and_keeps_waiting() -> None:
    _, listener = pair()
    tls = MultistreamDialer(["/tls/1.0.0", NOISE_PROTOCOL_ID])
    listener.receive_data(tls.data_to_send())
    tls.receive_data(listener.data_to_send())  # na: the dialer proposes /noise next
    assert tls.data_to_send() == encode_message(NOISE_PROTOCOL_ID)
    assert listener.events_received() == []
    assert listener.stage is UpgradeStage.SECURITY_NEGOTIATION


def _answer_message_1(
    dialer: UpgradeMachine, credentials: NoiseCredentials | None = None
) -> NoiseHandshake:
    """Answer ``dialer``'s first flight by hand (message 2); return our Noise machine."""
    security = MultistreamListener((NOISE_PROTOCOL_ID,))
    security.receive_data(dialer.data_to_send())
    [selected] = security.events_received()
    assert isinstance(selected, ProtocolSelected)
    handshake = NoiseHandshake(
        role=Role.RESPONDER,
        credentials=credentials or NoiseCredentials.create(LISTENER_ID, x25519(3)),
        ephemeral_key=x25519(4),
    )
    handshake.receive_data(selected.leftover)
    dialer.receive_data(security.data_to_send() + handshake.data_to_send())
    return handshake


def _noise_by_hand_as_responder(dialer: UpgradeMachine) -> tuple[NoiseTransport, bytes]:
    """Answer ``dialer``'s first flights by hand; return the cipher and its muxer plaintext."""
    handshake = _answer_message_1(dialer)
    handshake.receive_data(dialer.data_to_send())
    [done] = handshake.events_received()
    assert isinstance(done, HandshakeCompleted)
    return done.transport, b"".join(done.transport.decrypt(done.leftover))


def _noise_by_hand_as_initiator(
    listener: UpgradeMachine, credentials: NoiseCredentials | None = None
) -> tuple[NoiseTransport, bytes]:
    """Run ``listener``'s Noise handshake by hand; return the cipher and message 3."""
    security = MultistreamDialer([NOISE_PROTOCOL_ID], optimistic=True)
    handshake = NoiseHandshake(
        role=Role.INITIATOR,
        credentials=credentials or NoiseCredentials.create(DIALER_ID, x25519(1)),
        ephemeral_key=x25519(2),
    )
    listener.receive_data(security.data_to_send() + handshake.data_to_send())
    security.receive_data(listener.data_to_send())
    [selected] = security.events_received()
    assert isinstance(selected, ProtocolSelected)
    handshake.receive_data(selected.leftover)
    [done] = handshake.events_received()
    assert isinstance(done, HandshakeCompleted)
    return done.transport, handshake.data_to_send()


def test_initiator_fails_when_yamux_is_refused() -> None:
    dialer, _ = pair()
    cipher, proposal = _noise_by_hand_as_responder(dialer)
    muxer = MultistreamListener(("/mplex/6.7.0",))
    muxer.receive_data(proposal)
    dialer.receive_data(cipher.encrypt(muxer.data_to_send()))
    error = failure(dialer)
    assert isinstance(error, ProtocolNotSupportedError)
    assert dialer.remote_peer == LISTENER_ID.peer_id  # Noise had completed


def test_responder_answers_na_to_another_muxer_and_keeps_waiting() -> None:
    _, listener = pair()
    cipher, message3 = _noise_by_hand_as_initiator(listener)
    mplex = MultistreamDialer(["/mplex/6.7.0", YAMUX_PROTOCOL_ID])
    listener.receive_data(message3 + cipher.encrypt(mplex.data_to_send()))
    mplex.receive_data(b"".join(cipher.decrypt(listener.data_to_send())))
    assert mplex.data_to_send() == encode_message(YAMUX_PROTOCOL_ID)
    assert listener.events_received() == []
    assert listener.stage is UpgradeStage.MUXER_NEGOTIATION


# -- leftover bytes -----------------------------------------------------------------------------


def test_yamux_frames_in_the_proposal_frame_reach_the_session() -> None:
    _, listener = pair()
    cipher, message3 = _noise_by_hand_as_initiator(listener)
    client = YamuxSession(role=Role.INITIATOR)
    sid = client.open_stream()
    client.send_data(sid, b"early")
    proposal = MultistreamDialer([YAMUX_PROTOCOL_ID], optimistic=True).data_to_send()
    listener.receive_data(message3 + cipher.encrypt(proposal + client.data_to_send()))
    session = completed(listener.events_received()).session
    events = session.events_received()
    assert StreamOpened(sid) in events and StreamDataReceived(sid, b"early") in events


def test_yamux_frames_behind_the_echo_reach_the_session() -> None:
    dialer, listener = pair()
    send(dialer, listener)
    send(listener, dialer)
    send(dialer, listener)
    done_l = completed(listener.events_received())
    sid = done_l.session.open_stream()
    done_l.session.send_data(sid, b"first")
    echo = listener.data_to_send()
    # The echo and a later frame of yamux data arrive in one read.
    dialer.receive_data(echo + done_l.transport.encrypt(done_l.session.data_to_send()))
    events = completed(dialer.events_received()).session.events_received()
    assert StreamOpened(sid) in events and StreamDataReceived(sid, b"first") in events


def test_partial_frame_after_the_echo_stays_with_the_transport() -> None:
    dialer, listener = pair()
    send(dialer, listener)
    send(listener, dialer)
    send(dialer, listener)
    done_l = completed(listener.events_received())
    later = done_l.transport.encrypt(b"x" * 10)
    dialer.receive_data(listener.data_to_send() + later[:5])
    done_d = completed(dialer.events_received())
    assert done_d.transport.buffered_size == 5
    assert done_d.transport.decrypt(later[5:]) == [b"x" * 10]


def test_input_after_completion_is_a_caller_error() -> None:
    dialer, listener = pair()
    run(dialer, listener)
    with pytest.raises(InvalidStateError):
        dialer.receive_data(b"late")


# -- garbage and EOF at each stage -------------------------------------------------------------


def _at_stage(side: str, stage: UpgradeStage) -> UpgradeMachine:
    """A machine of ``side`` waiting for input in ``stage`` (partial flights as needed)."""
    dialer, listener = pair()
    if side == "listener":
        if stage is UpgradeStage.NOISE:
            send(dialer, listener)
        elif stage is UpgradeStage.MUXER_NEGOTIATION:
            send(dialer, listener)
            send(listener, dialer)
            third = dialer.data_to_send()
            proposal = _HEADER + encode_message(YAMUX_PROTOCOL_ID)
            listener.receive_data(third[: -(2 + len(proposal) + _TAG)])  # message 3 only
        assert listener.stage is stage
        listener.data_to_send()
        return listener
    if stage is UpgradeStage.NOISE:
        send(dialer, listener)
        second = listener.data_to_send()
        dialer.receive_data(second[: len(_HEADER + encode_message(NOISE_PROTOCOL_ID))])
    elif stage is UpgradeStage.MUXER_NEGOTIATION:
        send(dialer, listener)
        send(listener, dialer)
    assert dialer.stage is stage
    dialer.data_to_send()
    return dialer


STAGES = [
    (side, stage)
    for side in ("dialer", "listener")
    for stage in (
        UpgradeStage.SECURITY_NEGOTIATION,
        UpgradeStage.NOISE,
        UpgradeStage.MUXER_NEGOTIATION,
    )
]
GARBAGE = {
    UpgradeStage.SECURITY_NEGOTIATION: b"\x13/not-multistream/1\n",
    UpgradeStage.NOISE: b"\x00\x60" + bytes(range(0x60)),
    UpgradeStage.MUXER_NEGOTIATION: b"\x00\x20" + bytes(0x20),
}


@pytest.mark.parametrize(("side", "stage"), STAGES)
def test_garbage_fails_the_upgrade_at_each_stage(side: str, stage: UpgradeStage) -> None:
    m = _at_stage(side, stage)
    m.receive_data(GARBAGE[stage])
    error = failure(m)
    assert isinstance(error, HandshakeError | NegotiationError)
    if stage is UpgradeStage.MUXER_NEGOTIATION:
        assert isinstance(error, DecryptionError)
    m.receive_data(b"more")  # ignored once failed
    assert m.events_received() == []


@pytest.mark.parametrize(("side", "stage"), STAGES)
def test_eof_fails_the_upgrade_at_each_stage(side: str, stage: UpgradeStage) -> None:
    m = _at_stage(side, stage)
    m.receive_eof()
    error = failure(m)
    assert isinstance(error, ConnectionLostError)
    assert str(error) == "connection closed during the handshake"
    m.receive_eof()
    assert m.events_received() == []


def test_non_protocol_errors_are_reported_as_handshake_errors() -> None:
    _, listener = pair()
    listener.receive_data(b"\xff" * 12)  # a varint longer than any length
    error = failure(listener)
    assert type(error) is HandshakeError
    assert isinstance(error.__cause__, P2PError)


def test_eof_after_completion_is_ignored() -> None:
    dialer, listener = pair()
    run(dialer, listener)
    dialer.receive_eof()
    assert dialer.events_received() == []


# -- the handshake deadline ---------------------------------------------------------------------


def test_deadline_is_reported_and_fires_only_once_reached() -> None:
    m = machine(role=Role.RESPONDER, identity=LISTENER_ID, now=100.0)
    assert m.get_timer() == 100.0 + TIMEOUT
    m.handle_timer(100.0 + TIMEOUT - 0.001)
    assert m.events_received() == [] and not m.done
    m.handle_timer(100.0 + TIMEOUT)
    error = failure(m)
    assert isinstance(error, HandshakeTimeoutError)
    assert str(error) == f"handshake not finished within {TIMEOUT} s"


def test_deadline_covers_the_whole_upgrade_not_one_stage() -> None:
    dialer, listener = pair()
    send(dialer, listener)
    send(listener, dialer)
    assert dialer.get_timer() == TIMEOUT  # progress does not move the deadline
    dialer.handle_timer(TIMEOUT)
    assert isinstance(failure(dialer), HandshakeTimeoutError)


def test_no_timer_after_completion() -> None:
    dialer, listener = pair()
    run(dialer, listener)
    dialer.handle_timer(TIMEOUT * 2)
    assert dialer.get_timer() is None and dialer.events_received() == []


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=512), st.sampled_from(Role))
def test_arbitrary_bytes_never_raise(data: bytes, role: Role) -> None:
    m = machine(role=role, identity=LISTENER_ID)
    m.receive_data(data)
    for event in m.events_received():
        assert isinstance(event, UpgradeFailed)


# -- early muxer negotiation (Yamux agreed in the Noise payloads) ---------------------------


def test_early_negotiation_saves_the_muxer_round_three_flights_in_all() -> None:
    dialer, listener = pair(dialer_early=True, listener_early=True)
    send(dialer, listener)  # 1: header, /noise, message 1
    send(listener, dialer)  # 2: header, echo, message 2 listing /yamux/1.0.0
    # The dialer is done before anything else comes back: message 3 is its last flight.
    done_d = completed(dialer.events_received())
    assert done_d.muxer_negotiated_early and dialer.muxer_negotiated_early
    third = dialer.data_to_send()
    assert dialer.data_to_send() == b""
    listener.receive_data(third)  # 3: message 3 listing /yamux/1.0.0, and no proposal
    done_l = completed(listener.events_received())
    assert done_l.muxer_negotiated_early and listener.muxer_negotiated_early
    assert listener.data_to_send() == b""  # no echo: flight 4 is gone
    assert done_l.remote_peer == DIALER_ID.peer_id and done_d.remote_peer == LISTENER_ID.peer_id
    exchange_stream(done_d.session, done_l.session)
    assert done_d.session.role is Role.INITIATOR and done_l.session.role is Role.RESPONDER


def test_early_negotiation_yamux_frames_ride_behind_message_3() -> None:
    dialer, listener = pair(dialer_early=True, listener_early=True)
    send(dialer, listener)
    send(listener, dialer)
    done_d = completed(dialer.events_received())
    sid = done_d.session.open_stream()
    done_d.session.send_data(sid, b"early")
    listener.receive_data(
        dialer.data_to_send() + done_d.transport.encrypt(done_d.session.data_to_send())
    )
    events = completed(listener.events_received()).session.events_received()
    assert StreamOpened(sid) in events and StreamDataReceived(sid, b"early") in events


@pytest.mark.parametrize(("dialer_early", "listener_early"), [(True, False), (False, True)])
def test_a_side_without_early_negotiation_gets_the_multistream_round(
    dialer_early: bool, listener_early: bool
) -> None:
    dialer, listener = pair(dialer_early=dialer_early, listener_early=listener_early)
    send(dialer, listener)
    send(listener, dialer)
    assert dialer.stage is UpgradeStage.MUXER_NEGOTIATION  # waits for the muxer echo
    events_d, events_l = run(dialer, listener)
    done_d, done_l = completed(events_d), completed(events_l)
    assert not done_d.muxer_negotiated_early and not done_l.muxer_negotiated_early
    exchange_stream(done_d.session, done_l.session)


def test_credentials_may_offer_only_yamux() -> None:
    with pytest.raises(InvalidArgumentError):
        UpgradeMachine(
            role=Role.INITIATOR,
            credentials=NoiseCredentials.create(
                DIALER_ID, x25519(1), stream_muxers=("/mplex/6.7.0",)
            ),
            ephemeral_key=x25519(2),
            now=0.0,
            handshake_timeout=TIMEOUT,
        )


_MPLEX_ONLY = ("/mplex/6.7.0",)


def test_initiator_fails_when_the_responder_lists_no_common_muxer() -> None:
    """The spec: both listed muxers but none in common, the handshake fails."""
    dialer, _ = pair(dialer_early=True)
    peer = NoiseCredentials.create(LISTENER_ID, x25519(3), stream_muxers=_MPLEX_ONLY)
    _answer_message_1(dialer, peer)
    error = failure(dialer)  # before it sends message 3
    assert isinstance(error, ProtocolNotSupportedError)
    assert error.protocols == (YAMUX_PROTOCOL_ID,)


def test_responder_fails_when_the_initiator_lists_no_common_muxer() -> None:
    _, listener = pair(listener_early=True)
    peer = NoiseCredentials.create(DIALER_ID, x25519(1), stream_muxers=("/mplex/6.7.0", "/x"))
    _, message3 = _noise_by_hand_as_initiator(listener, peer)
    listener.receive_data(message3)
    assert isinstance(failure(listener), ProtocolNotSupportedError)


def test_the_initiators_order_decides_and_later_entries_are_ignored() -> None:
    _, listener = pair(listener_early=True)
    muxers = ("/mplex/6.7.0", YAMUX_PROTOCOL_ID, YAMUX_PROTOCOL_ID, "/other")
    peer = NoiseCredentials.create(DIALER_ID, x25519(1), stream_muxers=muxers)
    _, message3 = _noise_by_hand_as_initiator(listener, peer)
    listener.receive_data(message3)
    assert completed(listener.events_received()).muxer_negotiated_early


def _hostile(identity: KeyPair, static: int, extensions: bytes) -> NoiseCredentials:
    """Credentials whose payload carries ``extensions`` verbatim (a correct signature)."""
    honest = NoiseCredentials.create(identity, x25519(static))
    payload = honest.payload + encode_bytes_field(4, extensions)
    return NoiseCredentials(honest.static_key, honest.static_public, payload, (), identity)


_GARBAGE_EXTENSIONS = [
    encode_bytes_field(2, b"\xff/yamux"),  # not UTF-8
    encode_varint_field(2, 7),  # a number where a string belongs
    b"\x12\x7f/yamux/1.0.0",  # overruns its message
    b"\x12",  # truncated
]


@pytest.mark.parametrize("extensions", _GARBAGE_EXTENSIONS)
def test_garbage_extensions_from_a_responder_fail_the_dialer_cleanly(extensions: bytes) -> None:
    dialer, _ = pair(dialer_early=True)
    _answer_message_1(dialer, _hostile(LISTENER_ID, 3, extensions))
    error = failure(dialer)
    assert isinstance(error, HandshakeError)
    assert "noise extensions" in str(error)


@pytest.mark.parametrize("extensions", _GARBAGE_EXTENSIONS)
def test_garbage_extensions_from_an_initiator_fail_the_listener_cleanly(
    extensions: bytes,
) -> None:
    _, listener = pair(listener_early=True)
    _, message3 = _noise_by_hand_as_initiator(listener, _hostile(DIALER_ID, 1, extensions))
    listener.receive_data(message3)
    error = failure(listener)
    assert isinstance(error, HandshakeError)
    assert "noise extensions" in str(error)


def test_a_huge_muxer_list_with_yamux_late_falls_back_to_the_bounded_prefix() -> None:
    """Only the first MAX_STREAM_MUXERS entries count: Yamux past them is not seen, so the
    peer is treated as listing no common muxer (it asked for a 5000-entry walk)."""
    _, listener = pair(listener_early=True)
    junk = b"".join(encode_bytes_field(2, f"/junk/{i}") for i in range(5000))
    peer = _hostile(DIALER_ID, 1, junk + encode_bytes_field(2, YAMUX_PROTOCOL_ID))
    _, message3 = _noise_by_hand_as_initiator(listener, peer)
    listener.receive_data(message3)
    assert isinstance(failure(listener), ProtocolNotSupportedError)


def test_garbage_ciphertext_behind_message_3_fails_the_early_listener() -> None:
    dialer, listener = pair(dialer_early=True, listener_early=True)
    send(dialer, listener)
    send(listener, dialer)
    completed(dialer.events_received())
    listener.receive_data(dialer.data_to_send() + b"\x00\x20" + bytes(32))
    assert isinstance(failure(listener), DecryptionError)
