"""The connection upgrade as one sans-IO machine: raw bytes in, a secured Yamux session out.

A fresh transport connection runs four machines in turn, each handing its leftover
bytes to the next::

    multistream(/noise) -> Noise XX -> multistream(/yamux/1.0.0) -> Yamux

:class:`UpgradeMachine` composes them behind the usual contract (``receive_data``,
``receive_eof``, ``data_to_send``, ``events_received``) and owns the handshake deadline
as ``get_timer()``/``handle_timer(now)``: time is an argument and the Noise keys are
passed in, so nothing here reads a clock or draws randomness.  It ends with
:class:`UpgradeCompleted` (the cipher pair and a Yamux session that has already been
fed every plaintext byte that arrived behind the muxer echo) or :class:`UpgradeFailed`.

Two round trips are saved on the initiator's side, as libp2p's optimistic
multistream allows when only one protocol is offered: the ``/noise`` proposal and
Noise message 1 leave together, and the ``/yamux/1.0.0`` proposal travels right
behind Noise message 3.

Early muxer negotiation (``connections/inlined-muxer-negotiation.md``): when our
:class:`NoiseCredentials` list stream muxers and the peer's handshake payload lists
some too, the muxer is the first of the initiator's list that both support, and the
multistream round for it is skipped: the initiator is done as soon as it has queued
message 3, the responder as soon as it has read it.  No common muxer fails the
upgrade, as the spec requires; a peer that lists none gets the multistream round.

``expected_peer`` is checked by the Noise machine whatever the role, so a dial run as
the responder (DCUtR's TCP simultaneous open fixes the role per peer) is checked too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..errors import (
    ConnectionLostError,
    HandshakeError,
    HandshakeTimeoutError,
    InvalidArgumentError,
    InvalidStateError,
    NegotiationError,
    P2PError,
    ProtocolNotSupportedError,
)
from ..identity import PeerId, PublicKey
from ._base import SansIOMachine
from .multistream import (
    MultistreamDialer,
    MultistreamListener,
    NegotiationFailed,
    ProtocolSelected,
)
from .noise import (
    NOISE_PROTOCOL_ID,
    HandshakeCompleted,
    HandshakeFailed,
    NoiseCredentials,
    NoiseHandshake,
    NoiseTransport,
    VerifiedIdentities,
)
from .role import Role
from .yamux import YAMUX_PROTOCOL_ID, YamuxConfig, YamuxSession

__all__ = [
    "UpgradeCompleted",
    "UpgradeEvent",
    "UpgradeFailed",
    "UpgradeMachine",
    "UpgradeStage",
]


class UpgradeStage(enum.IntEnum):
    """Where the upgrade is; ``DONE`` once it completed or failed."""

    SECURITY_NEGOTIATION = 0
    NOISE = 1
    MUXER_NEGOTIATION = 2
    DONE = 3


@dataclass(frozen=True, slots=True)
class UpgradeCompleted:
    """The remote proved ``remote_peer`` and agreed on Yamux.

    ``session`` has already received the plaintext that followed the muxer echo (its
    events are pending); later ciphertext goes through ``transport.decrypt`` into it.
    ``muxer_negotiated_early``: Yamux was agreed in the Noise handshake payloads, with no
    multistream round.
    """

    remote_peer: PeerId
    remote_public_key: PublicKey
    transport: NoiseTransport
    session: YamuxSession
    muxer_negotiated_early: bool = False


@dataclass(frozen=True, slots=True)
class UpgradeFailed:
    """Terminal: the connection must be dropped."""

    error: P2PError


UpgradeEvent = UpgradeCompleted | UpgradeFailed


class UpgradeMachine(SansIOMachine[UpgradeEvent]):
    """One side of the upgrade; :attr:`Role.INITIATOR` runs the dialer, Noise initiator
    and Yamux client roles.

    The initiator queues its first flight at construction.  The responder builds its
    Noise machine only once ``/noise`` was agreed.  ``credentials`` are the node's static
    key and signed payload (made once per node), ``verified`` the remote identities it has
    verified (see :class:`VerifiedIdentities`); the ``stream_muxers`` of the credentials
    may list only ``/yamux/1.0.0`` (early negotiation) or nothing (always the multistream
    round).
    ``now`` and ``handshake_timeout`` (seconds) set the deadline :meth:`get_timer` reports.
    """

    __slots__ = (
        "_cipher",
        "_credentials",
        "_deadline",
        "_ephemeral_key",
        "_expected_peer",
        "_handshake",
        "_handshake_timeout",
        "_max_message_size",
        "_negotiator",
        "_role",
        "_stage",
        "_verified",
        "_yamux_config",
        "muxer_negotiated_early",
        "remote_peer",
        "remote_public_key",
    )

    _HANDED_OVER = "upgrade complete: later bytes belong to the Noise transport"

    def __init__(
        self,
        *,
        role: Role,
        credentials: NoiseCredentials,
        ephemeral_key: X25519PrivateKey,
        now: float,
        handshake_timeout: float,
        expected_peer: PeerId | None = None,
        max_negotiation_message_bytes: int = 1024,
        yamux_config: YamuxConfig | None = None,
        verified: VerifiedIdentities | None = None,
    ) -> None:
        if credentials.stream_muxers not in ((), (YAMUX_PROTOCOL_ID,)):
            raise InvalidArgumentError(
                f"early negotiation can offer only {YAMUX_PROTOCOL_ID}, "
                f"not {credentials.stream_muxers}"
            )
        super().__init__()
        self._role = role
        self._credentials = credentials
        self._verified = verified
        self._ephemeral_key = ephemeral_key
        self._expected_peer = expected_peer
        self._max_message_size = max_negotiation_message_bytes
        self._yamux_config = yamux_config or YamuxConfig()
        self._handshake_timeout = handshake_timeout
        self._deadline = now + handshake_timeout
        self._stage = UpgradeStage.SECURITY_NEGOTIATION
        self._handshake: NoiseHandshake | None = None
        self._cipher: NoiseTransport | None = None
        self.remote_peer: PeerId | None = None
        """The authenticated remote, once the Noise handshake completed."""
        self.remote_public_key: PublicKey | None = None
        self.muxer_negotiated_early = False
        """Yamux was agreed through the Noise extensions (no multistream round)."""
        self._negotiator: MultistreamDialer | MultistreamListener
        if role is Role.INITIATOR:
            dialer = MultistreamDialer(
                [NOISE_PROTOCOL_ID], optimistic=True, max_message_size=self._max_message_size
            )
            self._negotiator = dialer
            handshake = self._handshake = self._new_handshake()
            self._out += dialer.data_to_send()
            self._out += handshake.data_to_send()
        else:
            # Its header stays queued inside it until the answer to the first proposal
            # is queued too, so both leave in one packet.
            self._negotiator = MultistreamListener(
                (NOISE_PROTOCOL_ID,), max_message_size=self._max_message_size
            )

    @property
    def stage(self) -> UpgradeStage:
        return self._stage

    # -- time ------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must be called next (None once done)."""
        return None if self._done else self._deadline

    def handle_timer(self, now: float) -> None:
        """Fail with :class:`HandshakeTimeoutError` if the deadline has passed."""
        if not self._done and now >= self._deadline:
            self._fail(
                HandshakeTimeoutError(f"handshake not finished within {self._handshake_timeout} s")
            )

    # -- input -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; never raises for peer misbehaviour."""
        if self._done:
            if self._handed_over:
                raise InvalidStateError(self._HANDED_OVER)
            return
        while data and not self._done:
            stage = self._stage
            if stage is UpgradeStage.SECURITY_NEGOTIATION:
                data = self._security_negotiation(data)
            elif stage is UpgradeStage.NOISE:
                data = self._noise(data)
            else:
                self._muxer_negotiation(data)
                return

    def receive_eof(self) -> None:
        """The peer closed its side before the upgrade completed."""
        if not self._done:
            self._fail(ConnectionLostError("connection closed during the handshake"), wrap=False)

    # -- stages ----------------------------------------------------------------------------

    def _new_handshake(self) -> NoiseHandshake:
        return NoiseHandshake(
            role=self._role,
            credentials=self._credentials,
            ephemeral_key=self._ephemeral_key,
            expected_peer=self._expected_peer,
            verified=self._verified,
        )

    def _negotiate(
        self, negotiator: MultistreamDialer | MultistreamListener, data: bytes
    ) -> tuple[ProtocolSelected | None, bytes]:
        """Feed one multistream machine; ``(selection, its reply)`` (reply ``b""`` on failure)."""
        negotiator.receive_data(data)
        reply = negotiator.data_to_send()
        for ev in negotiator.events_received():
            if type(ev) is ProtocolSelected:
                return ev, reply
            if type(ev) is NegotiationFailed:
                self._fail(ev.error)
                return None, b""
        return None, reply

    def _security_negotiation(self, data: bytes) -> bytes:
        selected, reply = self._negotiate(self._negotiator, data)
        self._out += reply
        if selected is None:
            return b""
        self._stage = UpgradeStage.NOISE
        if self._handshake is None:
            self._handshake = self._new_handshake()
        return selected.leftover

    def _noise(self, data: bytes) -> bytes:
        handshake = self._handshake
        assert handshake is not None
        handshake.receive_data(data)
        self._out += handshake.data_to_send()
        for ev in handshake.events_received():
            if type(ev) is HandshakeCompleted:
                self._handshake = None
                self._cipher = ev.transport
                self.remote_peer = ev.remote_peer
                self.remote_public_key = ev.remote_public_key
                self._stage = UpgradeStage.MUXER_NEGOTIATION
                if self._credentials.stream_muxers and ev.remote_stream_muxers:
                    self._complete_early(ev.remote_stream_muxers, ev.transport, ev.leftover)
                    return b""
                if self._role is Role.INITIATOR:
                    dialer = MultistreamDialer(
                        [YAMUX_PROTOCOL_ID],
                        optimistic=True,
                        max_message_size=self._max_message_size,
                    )
                    self._negotiator = dialer
                    self._out += ev.transport.encrypt(dialer.data_to_send())
                else:
                    self._negotiator = MultistreamListener(
                        (YAMUX_PROTOCOL_ID,), max_message_size=self._max_message_size
                    )
                return ev.leftover
            if type(ev) is HandshakeFailed:
                self._fail(ev.error)
                return b""
        return b""

    def _complete_early(
        self, remote_muxers: tuple[str, ...], cipher: NoiseTransport, leftover: bytes
    ) -> None:
        """Both payloads listed muxers: pick the initiator's first common one, or fail."""
        ours = self._credentials.stream_muxers
        if self._role is Role.INITIATOR:
            common = [m for m in ours if m in remote_muxers]
        else:
            common = [m for m in remote_muxers if m in ours]
        if not common:  # the spec: no overlap fails the handshake
            self._fail(ProtocolNotSupportedError(ours))
            return
        # common[0] is Yamux: the only muxer credentials may list (checked at construction).
        try:
            plaintexts = cipher.decrypt(leftover)
        except P2PError as exc:
            self._fail(exc, wrap=False)
            return
        session = YamuxSession(role=self._role, config=self._yamux_config)
        for plaintext in plaintexts:
            session.receive_data(plaintext)
        self.muxer_negotiated_early = True
        self._stage = UpgradeStage.DONE
        assert self.remote_peer is not None and self.remote_public_key is not None
        self._finish(
            UpgradeCompleted(self.remote_peer, self.remote_public_key, cipher, session, True),
            handed_over=True,
        )

    def _muxer_negotiation(self, data: bytes) -> None:
        cipher = self._cipher
        assert cipher is not None
        try:
            plaintexts = cipher.decrypt(data)
        except P2PError as exc:
            self._fail(exc, wrap=False)
            return
        session: YamuxSession | None = None
        for plaintext in plaintexts:
            if session is not None:
                session.receive_data(plaintext)
                continue
            selected, reply = self._negotiate(self._negotiator, plaintext)
            if reply:
                self._out += cipher.encrypt(reply)
            if self._done:
                return
            if selected is not None:
                session = YamuxSession(role=self._role, config=self._yamux_config)
                if selected.leftover:
                    session.receive_data(selected.leftover)
        if session is not None:
            self._stage = UpgradeStage.DONE
            assert self.remote_peer is not None and self.remote_public_key is not None
            self._finish(
                UpgradeCompleted(self.remote_peer, self.remote_public_key, cipher, session),
                handed_over=True,
            )

    def _fail(self, error: P2PError, *, wrap: bool = True) -> None:
        """End with :class:`UpgradeFailed`; queued output is dropped (the driver aborts).

        Errors other than handshake and negotiation errors are reported as a
        :class:`HandshakeError` caused by them, except a lost connection and a broken
        transport frame (``wrap=False``), which are reported as themselves.
        """
        if wrap and not isinstance(error, HandshakeError | NegotiationError):
            wrapped = HandshakeError(f"handshake failed: {error}")
            wrapped.__cause__ = error
            error = wrapped
        self._out.clear()
        self._stage = UpgradeStage.DONE
        self._finish(UpgradeFailed(error))
