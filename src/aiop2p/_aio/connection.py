"""``Connection``: the asyncio driver of one transport connection.

It is an :class:`asyncio.Protocol`, so bytes are pushed into the machines from the
transport's callback: no reader task per connection and no per-stream tasks except
the application's handlers.  Until the connection is established it only moves bytes
through :class:`~aiop2p.protocols.upgrade.UpgradeMachine` (multistream, Noise,
multistream, Yamux); then it decrypts into the Yamux session it was handed and
dispatches the session's events to streams.  It arms one timer: for the machine's
handshake deadline, then for the deadlines :class:`~.deadlines.ConnectionDeadlines`
keeps (stream negotiation, lingering streams, idleness).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import sys
import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, cast

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..errors import (
    ConnectionClosedError,
    ConnectionLostError,
    InvalidStateError,
    NegotiationTimeoutError,
    P2PError,
    StreamResetError,
)
from ..protocols.multistream import outbound_negotiation
from ..protocols.noise import (
    MAX_PLAINTEXT_SIZE,
    NoiseCredentials,
    NoiseTransport,
    VerifiedIdentities,
)
from ..protocols.role import Role
from ..protocols.upgrade import UpgradeCompleted, UpgradeFailed, UpgradeMachine
from ..protocols.yamux import (
    HEADER_SIZE,
    GoAwayReceived,
    PongReceived,
    SessionTerminated,
    StreamDataReceived,
    StreamEnded,
    StreamId,
    StreamOpened,
    StreamReset,
    StreamWindowUpdated,
    YamuxSession,
)
from .deadlines import ConnectionDeadlines
from .stream import ConnectionId, Stream

if TYPE_CHECKING:
    from ..config import NodeConfig
    from ..identity import PeerId, PublicKey
    from ..multiaddr import Multiaddr
    from ..protocols.relay_v2 import Limit

__all__ = ["Connection", "Direction", "RelayedVia"]

log = logging.getLogger(__name__)

_connection_ids = itertools.count(1)

MAX_STREAMS_BEFORE_ANSWER: Final = 8
"""Streams a dialer that agreed its muxer in the Noise handshake puts on the wire before
the listener's first bytes arrive; further output waits for them.  The listener may not
have finished setting the connection up: js-libp2p aborts one on which more than 10
streams arrive before then (its muxer's ``maxEarlyStreams``)."""


_MAX_KEPT_OUTPUT_BYTES = 2 * 1024 * 1024
"""Largest sealed-output buffer a thread keeps for reuse (see :func:`_write_sealed`)."""


WAKEUPS_PER_FLUSH = 16
"""Tasks one input may wake before what they answer is flushed (``note_wakeup``)."""


class _Output(threading.local):
    buffer: bytearray | None = None


_output = _Output()


READ_BUFFER_BYTES: Final = 256 * 1024
"""Bytes one socket read may take: what asyncio's selector transport reads at most for a
plain ``asyncio.Protocol``."""


_COPIED_READ_BYTES: Final = 2 + 65535
"""Reads up to one whole Noise frame are handed on as ``bytes`` (see ``buffer_updated``)."""


class _Input(threading.local):
    buffer: memoryview | None = None


_input = _Input()


def _read_buffer() -> memoryview:
    """The buffer every connection of this thread reads its socket into (asyncio's socket
    transports; uvloop reads into its own and hands over ``bytes``).

    For a plain ``asyncio.Protocol`` the selector transport makes a new ``bytes`` of 256 KiB
    per read and shrinks it to what came.  Where the C library serves that from ``mmap``
    (every read on Python 3.12.1 here: an ``mmap``, an ``mremap`` and a ``munmap``, and a
    fresh page), a small request costs 7 system calls instead of 4.  One buffer per thread
    is enough: a read is consumed before ``buffer_updated`` returns (Noise copies a partial
    frame out; plaintexts are new objects), and the loop never reads a socket inside it.
    """
    view = _input.buffer
    if view is None:
        view = _input.buffer = memoryview(bytearray(READ_BUFFER_BYTES))
    return view


def _write_sealed(
    transport: asyncio.WriteTransport,
    cipher: NoiseTransport,
    pieces: list[bytes | memoryview],
    size: int,
) -> None:
    """Encrypt a large flush into a buffer that the thread reuses, and write it.

    Joining the pieces and copying the sealed frames out, once per flush, cost more than
    the encryption: every fresh buffer of this size is new memory to the process (page
    faults).  The buffer goes back for reuse only when nothing else refers to it once
    ``write`` returned: asyncio's selector transport on Python 3.11, the memory and
    stream transports copy what they keep, while others (uvloop, later selector
    transports) keep a view of what the socket did not take, and then keep the buffer.
    """
    needed = cipher.sealed_size(size)
    out = _output.buffer
    _output.buffer = None  # a flush that runs inside ``write`` (a relayed carrier) takes another
    if out is None or len(out) < needed:
        out = bytearray(needed)
    written = cipher.encrypt_into(pieces, out)
    # Compared, not fixed: how many references the interpreter counts for a local varies
    # between Python versions; a view the transport kept counts one more.
    references = sys.getrefcount(out)
    transport.write(memoryview(out)[:written])
    if sys.getrefcount(out) == references and len(out) <= _MAX_KEPT_OUTPUT_BYTES:
        _output.buffer = out


class Direction(enum.Enum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


@dataclass(frozen=True, slots=True)
class RelayedVia:
    """How a relayed connection is carried: the relay's peer and the limit it set on the
    circuit (None: unlimited), read to explain the connection's end and to prefer direct
    connections."""

    relay: PeerId
    limit: Limit | None


class _Stage(enum.Enum):
    UPGRADING = "upgrading"
    ESTABLISHED = "established"
    CLOSED = "closed"


# Module constants, read on every request: an enum class's attributes go through
# EnumType.__getattr__'s slot (several times the cost of a global).
_UPGRADING: Final = _Stage.UPGRADING
_ESTABLISHED: Final = _Stage.ESTABLISHED
_CLOSED: Final = _Stage.CLOSED
_INITIATOR: Final = Role.INITIATOR
_RESPONDER: Final = Role.RESPONDER


class ConnectionHooks:
    """What a connection needs from its owner (the node); all called synchronously."""

    def connection_ready(self, conn: Connection) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def connection_closed(  # pragma: no cover - interface
        self, conn: Connection, *, was_established: bool
    ) -> None:
        raise NotImplementedError

    def inbound_stream(self, stream: Stream) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def supported_protocols(  # pragma: no cover - interface
        self, conn: Connection
    ) -> Collection[str]:
        """Protocols offered to this connection's peer on its inbound streams.

        Asked for once per connection: a live view (membership decided when a proposal
        comes), not a snapshot."""
        raise NotImplementedError


class Connection(asyncio.BufferedProtocol, asyncio.Protocol):
    """A secured, multiplexed connection to one peer.

    Open streams with :meth:`new_stream`; inbound streams go to the node's handlers.
    ``credentials`` are the node's Noise static key and signed payload (made once per
    node), ``verified`` the remote identities it has verified; only the ephemeral key is
    drawn per connection.
    The protocol callbacks are internal: asyncio's socket transports read into
    :meth:`get_buffer` (a ``BufferedProtocol``); uvloop's (which read into a buffer of their
    own) and aiop2p's own transports hand ``bytes`` to :meth:`data_received` (an
    ``asyncio.Protocol`` too, which uvloop checks first).  So are the methods of the
    :class:`~.stream.StreamOwner` interface its streams call (``send_stream_data`` to
    ``drained``).
    """

    def __init__(
        self,
        hooks: ConnectionHooks,
        *,
        credentials: NoiseCredentials,
        verified: VerifiedIdentities,
        direction: Direction,
        config: NodeConfig,
        expected_peer: PeerId | None = None,
        remote_addr: Multiaddr | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        role: Role | None = None,
    ) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.id = ConnectionId(next(_connection_ids))
        self.direction = direction
        """Who opened the transport connection (counts against the in/out limits)."""
        self.role = role or (_INITIATOR if direction is Direction.OUTBOUND else _RESPONDER)
        """Our side in the upgrade (INITIATOR: multistream dialer, Noise initiator, Yamux
        client).  Follows ``direction`` unless given; hole punching (DCUtR) fixes it per
        peer instead, because after a TCP simultaneous open both sides dialled."""
        self.remote_addr = remote_addr
        self.local_addr: Multiaddr | None = None
        self._hooks = hooks
        self._credentials = credentials
        self._verified = verified
        self._config = config
        self._expected_peer = expected_peer
        self._remote_peer: PeerId | None = None
        self.remote_public_key: PublicKey | None = None
        self._transport: asyncio.Transport | None = None
        self._input = _read_buffer()  # this thread's: the connection's loop runs here
        self._stage = _UPGRADING
        self._upgrader: UpgradeMachine | None = None
        self._cipher: NoiseTransport | None = None
        self._yamux: YamuxSession | None = None
        self._muxer_negotiated_early = False
        # The upgrade's last bytes (Noise message 3, or the listener's muxer echo), held
        # for the first flush so that they and the first Yamux frames leave in one write.
        self._handshake_tail = b""
        self._refused: P2PError | None = None
        # Early muxer negotiation, dialer side, until the listener's first bytes: streams
        # opened, and how many of them were written (see MAX_STREAMS_BEFORE_ANSWER).
        self._early_streams: int | None = None
        self._early_streams_sent = 0
        self._streams: dict[StreamId, Stream] = {}
        self._inbound_streams = 0
        # What the node offers the peer on inbound streams (a live view, asked for once).
        self._offered: Collection[str] | None = None
        # Inbound streams opened by the input being dispatched: only those still
        # negotiating at its end get a negotiation deadline (_watch_opened).
        self._opened: list[StreamId] = []
        # Done when established; its result is not the connection itself, which would
        # tie every connection into a reference cycle (freed only by a full collection).
        self._ready: asyncio.Future[None] = self.loop.create_future()
        self._closed: asyncio.Future[None] = self.loop.create_future()
        self._timer: asyncio.TimerHandle | None = None  # the one timer, due at _timer_at
        self._timer_at = 0.0
        self._deadlines: ConnectionDeadlines[StreamId, StreamId] = ConnectionDeadlines(
            negotiation_timeout=config.negotiation_timeout,
            idle_timeout=config.idle_connection_timeout,
        )
        self._idle_timeout = config.idle_connection_timeout  # None: no idle note needed
        # The pending flush (a call_soon); None when none is.  While input is dispatched
        # (_flush_held) requests for one are only noted: see _flush_after_wakeups.
        self._flush_handle: asyncio.Handle | None = None
        self._flush_held = False
        self._unflushed = 0
        self._woken = 0  # tasks this input woke since its last flush (note_wakeup)
        self.write_paused = False
        """The transport asked us to stop writing (its buffer is above the high mark);
        a plain attribute, read on every stream write."""
        self.write_piece_size = config.write_flush_bytes
        """The largest piece a stream writes at once (``NodeConfig.write_flush_bytes``)."""
        self.max_negotiation_message_bytes = config.max_negotiation_message_bytes
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._reading_paused = False
        self._replies_while_paused = 0  # bytes answered to input while the socket was paused
        self._error: P2PError | None = None
        self._ping_waiters: dict[int, asyncio.Future[None]] = {}
        self.keep_alive = False
        """Set by services that need the connection kept open while idle (e.g. relays)."""
        self.relay: RelayedVia | None = None
        """Set (once, before the handshake) when the connection runs over a relay circuit."""
        self.user_data: dict[str, object] = {}
        """Per-connection storage for services (e.g. identify results)."""

    # -- public --------------------------------------------------------------------------

    @property
    def remote_peer(self) -> PeerId:
        if self._remote_peer is None:
            raise InvalidStateError("the handshake has not completed yet")
        return self._remote_peer

    @property
    def is_relayed(self) -> bool:
        return self.relay is not None

    @property
    def muxer_negotiated_early(self) -> bool:
        """Yamux was agreed in the Noise handshake payloads (no multistream round)."""
        return self._muxer_negotiated_early

    @property
    def is_established(self) -> bool:
        return self._stage is _ESTABLISHED

    @property
    def is_closed(self) -> bool:
        return self._stage is _CLOSED

    @property
    def error(self) -> P2PError | None:
        """Why the connection closed (None while open)."""
        return self._error

    @property
    def streams(self) -> list[Stream]:
        return list(self._streams.values())

    def __repr__(self) -> str:
        peer = self._remote_peer or self._expected_peer
        stage = self._upgrader.stage if self._upgrader is not None else self._stage
        return f"<Connection {self.id} {self.direction.value} {peer} {stage.name}>"

    async def wait_ready(self) -> Connection:
        """Wait until the handshake and muxer negotiation are done."""
        await asyncio.shield(self._ready)
        return self

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def new_stream(self, protocols: str | list[str] | tuple[str, ...]) -> Stream:
        """Open a stream and negotiate one of ``protocols`` (in preference order).

        With a single protocol the proposal is sent optimistically: the stream is
        returned at once and the first write travels with the proposal.  A refusal
        then surfaces as :class:`ProtocolNotSupportedError` on the first read.
        """
        if isinstance(protocols, str):
            return self.open_stream((protocols,))
        stream = self.open_stream(protocols)
        if len(protocols) > 1:
            await stream.wait_negotiated()
        return stream

    def open_stream(self, protocols: list[str] | tuple[str, ...]) -> Stream:
        """Synchronous part of :meth:`new_stream`: open and send the proposal."""
        yamux = self._yamux
        if yamux is None or self._stage is not _ESTABLISHED:
            yamux = self._require_established()  # raises
        negotiator, out = outbound_negotiation(protocols, self.max_negotiation_message_bytes)
        sid = yamux.open_stream()
        if self._early_streams is not None:
            self._early_streams += 1
        stream = Stream(self, sid, _INITIATOR, negotiator)
        self._streams[sid] = stream
        self._watch_negotiation(sid)
        self.send_stream_data(sid, out)
        return stream

    async def ping(self) -> float:
        """Yamux-level ping; returns the round-trip time in seconds."""
        yamux = self._require_established()
        opaque = next(_connection_ids) & 0xFFFFFFFF
        fut: asyncio.Future[None] = self.loop.create_future()
        self._ping_waiters[opaque] = fut
        started = self.loop.time()
        yamux.ping(opaque)
        self._schedule_flush()
        try:
            await fut
        finally:
            self._ping_waiters.pop(opaque, None)
        return self.loop.time() - started

    async def close(self) -> None:
        """Close gracefully: GoAway, flush, close the socket; every stream is failed."""
        if self._stage is not _CLOSED:
            if self._yamux is not None and not self._yamux.is_terminated:
                self._yamux.go_away(0)
                self._early_streams = None  # nothing is held back any more
                self._flush()
            self._terminate(ConnectionClosedError("connection closed locally"))
        await asyncio.shield(self._closed)

    def abort(self, error: P2PError | None = None) -> None:
        """Drop the connection at once."""
        self._terminate(error or ConnectionClosedError("connection aborted locally"), abort=True)

    def refuse(self, error: P2PError) -> None:
        """Abort with ``error`` as soon as the transport is attached, before any byte is
        read or written.  For a connection refused in its protocol factory: an event loop
        may deliver the peer's first bytes before a ``call_soon`` runs (uvloop does), and
        with early muxer negotiation a listener that answered Noise message 1 has already
        let the dialer consider itself connected."""
        self._refused = error

    # -- asyncio.BufferedProtocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast("asyncio.Transport", transport)  # uvloop: not a subclass
        if self._refused is not None:
            self.abort(self._refused)
            return
        config = self._config
        upgrader = self._upgrader = UpgradeMachine(
            role=self.role,
            credentials=self._credentials,
            verified=self._verified,
            ephemeral_key=X25519PrivateKey.generate(),
            now=self.loop.time(),
            handshake_timeout=config.handshake_timeout,
            expected_peer=self._expected_peer,
            max_negotiation_message_bytes=config.max_negotiation_message_bytes,
            yamux_config=config.yamux,
        )
        self._arm_timer(upgrader.get_timer())
        out = upgrader.data_to_send()
        if out:
            transport.write(out)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._input

    def buffer_updated(self, nbytes: int) -> None:
        if nbytes <= _COPIED_READ_BYTES:
            # A small read is copied out: Noise opens a whole frame in ``bytes`` for less
            # than the copy costs, and ``cryptography`` takes ``bytes`` faster than a view.
            self.data_received(self._input[:nbytes].tobytes())
            return
        # Released after use: a view of the shared buffer that anything kept would fail
        # loudly, not read the next socket's bytes.
        with self._input[:nbytes] as data:
            self.data_received(data)

    def data_received(self, data: bytes | memoryview) -> None:
        if self._stage is _ESTABLISHED:
            cipher = self._cipher
            yamux = self._yamux
            assert cipher is not None and yamux is not None
            self._early_streams = None  # the listener answered: it is set up
            try:
                plaintexts = cipher.decrypt(data)
            except P2PError as exc:
                self._terminate(exc, abort=True)
                return
            self._flush_held = True
            try:
                for plaintext in plaintexts:
                    yamux.receive_data(plaintext)
                try:  # _dispatch, inline
                    self._dispatch_events(yamux, self._streams)
                finally:
                    if self._opened:
                        self._watch_opened()
            finally:
                self._flush_after_wakeups()
        elif self._stage is _UPGRADING:
            self._upgrade(bytes(data))  # the machines keep what they do not consume yet

    def eof_received(self) -> bool | None:
        if self._yamux is not None and self._stage is _ESTABLISHED:
            self._yamux.receive_eof()
            self._dispatch(self._yamux)
        elif self._upgrader is not None and self._stage is _UPGRADING:
            self._upgrader.receive_eof()
            self._after_upgrade_input(self._upgrader, abort=False)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            error: P2PError = ConnectionClosedError("connection closed by the remote")
        else:
            error = ConnectionLostError(f"connection lost: {exc}")
            # Without its traceback: the transport's frames in it (our _flush among them)
            # would make the connection, through its stored error, a reference cycle.
            error.__cause__ = exc.with_traceback(None)
        self._terminate(error, transport_gone=True)

    def pause_writing(self) -> None:
        self.write_paused = True

    def _replied_while_paused(self, size: int) -> None:
        """Stop reading from a peer that sends input but does not read our answers.

        What the flush after ``data_received`` writes is the answer to the peer's own input
        (pongs, window updates, resets, negotiation replies, and the responses of handlers
        that answer as soon as the input wakes them); application writes that come later
        wait for the socket instead (``Stream.write``).  Once more than
        ``NodeConfig.max_reply_backlog_bytes`` of answers were queued while the socket is
        paused, reading stops until it drains: a ping flood cannot grow our memory.
        """
        self._replies_while_paused += size
        if (
            self._replies_while_paused > self._config.max_reply_backlog_bytes
            and not self._reading_paused
            and self._transport is not None
        ):
            self._reading_paused = True
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._replies_while_paused = 0
        if self._reading_paused:
            self._reading_paused = False
            if self._transport is not None and self._stage is not _CLOSED:
                self._transport.resume_reading()
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- upgrade ---------------------------------------------------------------------------

    def _upgrade(self, data: bytes) -> None:
        upgrader = self._upgrader
        assert upgrader is not None
        upgrader.receive_data(data)
        self._after_upgrade_input(upgrader, abort=True)

    def _after_upgrade_input(self, upgrader: UpgradeMachine, *, abort: bool) -> None:
        """Write what the machine queued and act on its end, if it came."""
        if self._remote_peer is None:  # known once Noise is done, even if Yamux fails
            self._remote_peer = upgrader.remote_peer
            self.remote_public_key = upgrader.remote_public_key
        out = upgrader.data_to_send()
        for ev in upgrader.events_received():
            if type(ev) is UpgradeCompleted:
                self._established(ev, out)
                return
            if type(ev) is UpgradeFailed:
                self._terminate(ev.error, abort=abort)
                return
        if out:
            self._write(out)

    def _write(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        transport.write(data)

    def _established(self, ev: UpgradeCompleted, out: bytes) -> None:
        """``out``, the machine's last bytes (Noise message 3 of an early negotiation, or
        the listener's muxer echo), is written only if ``connection_ready`` keeps the
        connection: a vetoed peer never sees it agreed.  It leads the first flush, which
        runs once the tasks started here (identify) have queued their first frames: one
        write, one segment, instead of two."""
        self._upgrader = None
        self._cancel_timer()
        self._cipher = ev.transport
        self._muxer_negotiated_early = ev.muxer_negotiated_early
        if ev.muxer_negotiated_early and self.role is _INITIATOR:
            self._early_streams = 0
        yamux = self._yamux = ev.session
        self._stage = _ESTABLISHED
        self._hooks.connection_ready(self)  # may veto (abort) the connection
        if self._stage is _ESTABLISHED:
            self._handshake_tail = out
            if not self._ready.done():
                self._ready.set_result(None)
            self._became_idle()
            self._flush_held = True
            try:
                self._dispatch(yamux)  # bytes that came with the muxer negotiation
            finally:
                self._flush_after_wakeups()

    # -- the one timer --------------------------------------------------------------------

    def _arm_timer(self, when: float | None) -> None:
        """Make the connection's timer fire no later than ``when``.

        Never cancelled when a deadline goes away: firing early costs one call that finds
        nothing due, while cancelling would cost a timer per request.
        """
        if when is None:
            return
        timer = self._timer
        if timer is not None:
            if self._timer_at <= when:
                return
            timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        # The loop may run a timer a clock tick early; never report a time before it.
        now = max(self._timer_at, self.loop.time())
        upgrader = self._upgrader
        if upgrader is not None and self._stage is _UPGRADING:
            upgrader.handle_timer(now)
            self._after_upgrade_input(upgrader, abort=True)
            if self._stage is _UPGRADING:
                self._arm_timer(upgrader.get_timer())
            return
        if self._stage is not _ESTABLISHED:
            return
        deadlines = self._deadlines
        expired = deadlines.handle_timer(now, busy=bool(self._streams), keep_alive=self.keep_alive)
        for sid in expired.negotiations:
            stream = self._streams.get(sid)
            if stream is not None and stream.protocol is None:
                stream._negotiation_failed(
                    NegotiationTimeoutError(
                        f"no protocol agreed within {deadlines.negotiation_timeout} s"
                    )
                )
        streams = self._streams
        for sid in expired.lingering:
            stream = streams.get(sid)  # gone once it closed meanwhile
            if stream is not None:
                stream.reset()
        if expired.idle:
            if self._yamux is not None:
                self._yamux.go_away(0)
                self._flush()
            self._terminate(ConnectionClosedError("connection closed after being idle"))
        elif self._stage is _ESTABLISHED:
            self._arm_timer(deadlines.get_timer())

    # -- established: events -------------------------------------------------------------

    def _dispatch(self, yamux: YamuxSession) -> None:
        streams = self._streams
        try:
            self._dispatch_events(yamux, streams)
        finally:
            if self._opened:
                self._watch_opened()

    def _dispatch_events(self, yamux: YamuxSession, streams: dict[StreamId, Stream]) -> None:
        for ev in yamux.events_received():
            # Exact types, commonest first: the event classes are final.
            if type(ev) is StreamDataReceived:
                stream = streams.get(ev.stream_id)
                if stream is not None:
                    stream._feed_data(ev.data)
                else:
                    yamux.acknowledge_received_data(ev.stream_id, len(ev.data))
            elif type(ev) is StreamEnded:
                stream = streams.get(ev.stream_id)
                if stream is not None:
                    stream._feed_eof()
                    if stream._write_closed:
                        self.forget_stream(ev.stream_id)
            elif type(ev) is StreamOpened:
                self._accept_stream(yamux, ev.stream_id)
            elif type(ev) is StreamWindowUpdated:
                stream = streams.get(ev.stream_id)
                if stream is not None:  # only a window that was empty: a writer waits
                    stream._wake_writer()
            elif type(ev) is StreamReset:
                stream = streams.get(ev.stream_id)
                if stream is not None:
                    stream._fail(ev.error or StreamResetError("stream reset by the remote"))
            elif type(ev) is PongReceived:
                waiter = self._ping_waiters.pop(ev.opaque, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            elif type(ev) is GoAwayReceived:
                log.debug("%r: remote sent GoAway %d", self, ev.code)
            elif type(ev) is SessionTerminated:
                self._flush()  # e.g. the GoAway carrying the error code
                err = ev.error or ConnectionClosedError("connection closed by the remote")
                self._terminate(err)
                return

    def _accept_stream(self, yamux: YamuxSession, sid: StreamId) -> None:
        if self._inbound_streams >= self._config.max_inbound_streams_per_connection:
            yamux.reset_stream(sid)
            return
        self._inbound_streams += 1
        # No machine yet: the stream matches the peer's first input against the offer.
        offered = self._offered
        if offered is None:
            offered = self._offered = self._hooks.supported_protocols(self)
        stream = Stream(self, sid, _RESPONDER, offered)
        self._streams[sid] = stream
        self._opened.append(sid)

    def _watch_opened(self) -> None:
        """Negotiation deadlines for the streams the last input opened, except those whose
        protocol that same input settled (the common case: no entry, no clock read)."""
        opened = self._opened
        self._opened = []
        if self._stage is not _ESTABLISHED:
            return
        streams = self._streams
        now: float | None = None
        for sid in opened:
            stream = streams.get(sid)
            if stream is not None and stream.protocol is None:
                if now is None:
                    now = self.loop.time()
                self._arm_timer(self._deadlines.start_negotiation(sid, now))

    def stream_negotiated(self, stream: Stream) -> None:
        sid = stream.stream_id
        if stream.role is _RESPONDER:
            opened = self._opened
            if opened and opened[-1] == sid:
                # Settled in its opening input: nothing for _watch_opened, and no deadline
                # to end (_watch_opened starts them once that input is dispatched).
                opened.pop()
            else:
                self._deadlines.end_negotiation(sid)
            self._hooks.inbound_stream(stream)
            self.note_wakeup()
        else:
            self._deadlines.end_negotiation(sid)

    def _watch_negotiation(self, sid: StreamId) -> None:
        """Reset the stream if multistream has not picked its protocol in time."""
        deadline = self._deadlines.start_negotiation(sid, self.loop.time())
        if self._timer is None or deadline < self._timer_at:  # usually due earlier
            self._arm_timer(deadline)

    # -- established: commands from streams ----------------------------------------------

    def _require_established(self) -> YamuxSession:
        if self._stage is not _ESTABLISHED or self._yamux is None:
            if self._error is not None:
                raise self._error
            raise InvalidStateError("connection is not established")
        return self._yamux

    def send_stream_data(self, sid: StreamId, data: bytes | memoryview) -> int:
        yamux = self._yamux
        if yamux is None or self._stage is not _ESTABLISHED:
            yamux = self._require_established()  # raises
        sent = yamux.send_data(sid, data)
        if sent:
            unflushed = self._unflushed + sent
            self._unflushed = unflushed
            if unflushed >= self.write_piece_size:
                self._flush()
            else:
                self._schedule_flush()
        return sent

    def acknowledge(self, sid: StreamId, size: int) -> None:
        yamux = self._yamux
        if (
            yamux is not None
            and self._stage is _ESTABLISHED
            and yamux.acknowledge_received_data(sid, size)
        ):
            self._schedule_flush()

    def close_stream(self, sid: StreamId) -> None:
        yamux = self._yamux
        if yamux is not None and self._stage is _ESTABLISHED:
            yamux.close_stream(sid)
            self._schedule_flush()

    def reset_stream(self, sid: StreamId) -> None:
        yamux = self._yamux
        if yamux is not None and self._stage is _ESTABLISHED:
            yamux.reset_stream(sid)
            self._schedule_flush()
        self.forget_stream(sid)

    def forget_stream(self, sid: StreamId) -> None:
        stream = self._streams.pop(sid, None)
        if stream is None or stream.protocol is None:  # stream_negotiated ended it otherwise
            self._deadlines.end_negotiation(sid)
        if stream is not None and stream.role is _RESPONDER:
            self._inbound_streams -= 1
        if not self._streams and self._idle_timeout is not None:
            self._became_idle()

    def linger(self, stream: Stream, timeout: float) -> None:
        """Reset ``stream`` if it is still open ``timeout`` seconds from now.

        All lingering streams of a connection share its one timer, so a busy server does
        not pile up a timer per request.  The queue holds the stream's id, not the stream:
        a stream the requester closes at once (every answered request) is freed then, not
        ``timeout`` seconds later (a server answering 20,000 requests a second would hold
        200,000 of them, ~1.5 KiB each, and the garbage collector would walk them all).
        """
        if self._stage is _ESTABLISHED:  # otherwise the stream has already failed
            deadline = self._deadlines.linger(stream.stream_id, self.loop.time() + timeout)
            if self._timer is None or deadline < self._timer_at:  # usually due earlier
                self._arm_timer(deadline)

    def _became_idle(self) -> None:
        """Note that the connection became idle now.

        Opening a stream does not touch the deadline (that would cost work per request);
        when it comes, a busy connection is left alone until its last stream goes.
        """
        if self._stage is _ESTABLISHED and self._idle_timeout is not None:
            when = self._deadlines.became_idle(self.loop.time())
            if self._timer is None or when is None or when < self._timer_at:
                self._arm_timer(when)  # usually the timer is due earlier: no call

    # -- output --------------------------------------------------------------------------

    def note_wakeup(self) -> None:
        """The input being dispatched woke a task (a handler started, a reader woken):
        every ``WAKEUPS_PER_FLUSH`` of them, a flush behind their steps.

        Many requests (or responses) read at once would otherwise be answered in one
        flush after every task they woke has run, and the peer, idle until then, would
        take that whole batch at once too: the two processes take turns.  Flushing the
        first answers while the rest are computed lets the peer work on them meanwhile
        (32 echo requests in flight between two processes on two idle cores: ~1.7x the
        requests/s for 2-3 % more instructions per request; bench/RESULTS.md, "Round
        four: batches in groups").  Up to ``WAKEUPS_PER_FLUSH`` requests still leave in
        one frame (``_flush_after_wakeups``).
        """
        if self._flush_held:
            woken = self._woken + 1
            if woken >= WAKEUPS_PER_FLUSH:
                woken = 0
                self.loop.call_soon(self._flush_answers)
            self._woken = woken

    def _schedule_flush(self) -> None:
        """Flush at the next loop turn (writes of one turn leave in one frame)."""
        if self._flush_handle is None and not self._flush_held:
            self._flush_handle = self.loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_handle = None
        self._flush()

    def _flush_after_wakeups(self) -> None:
        """End of dispatching input: flush once the tasks the input woke have run.

        Dispatch answers at once (Yamux ACKs, pongs, window updates, the multistream
        echo) and wakes tasks: new handlers, readers.  Their steps were scheduled with
        ``call_soon`` during dispatch, so a flush scheduled now runs after them: what a
        handler writes before it next waits (a response, its FIN) leaves in the same
        Noise frame, and the same TCP segment, as the answers.  A flush that was already
        pending is moved behind them.  Bulk is not delayed: large writes flush at once
        (``send_stream_data``), and a reader's window update joins this flush.

        What this flush writes answers the peer's input: it counts against
        ``max_reply_backlog_bytes`` while the socket is paused (:meth:`_replied_while_paused`).
        """
        self._flush_held = False
        self._woken = 0
        pending = self._flush_handle
        if pending is not None:
            pending.cancel()
        if self._stage is _ESTABLISHED:
            self._flush_handle = self.loop.call_soon(self._flush_answers)
        else:
            self._flush_handle = None

    def _flush_answers(self) -> None:
        self._flush_handle = None
        sent = self._flush()
        if self.write_paused and sent:
            self._replied_while_paused(sent)

    def _flush(self) -> int:
        """Write what the session queued; return the plaintext byte count."""
        unflushed = self._unflushed
        self._unflushed = 0
        yamux = self._yamux
        transport = self._transport
        if yamux is None or transport is None or self._stage is not _ESTABLISHED:
            return 0
        early = self._early_streams
        if early is not None:
            if early > MAX_STREAMS_BEFORE_ANSWER and self._early_streams_sent:
                return 0  # held until the listener answers (data_received flushes)
            self._early_streams_sent = early
        pieces = yamux.buffers_to_send()
        tail = self._handshake_tail  # it must precede every encrypted frame
        if tail:
            self._handshake_tail = b""
        if not pieces:
            if tail:
                transport.write(tail)
            return 0
        cipher = self._cipher
        assert cipher is not None
        # Each piece is a frame header or a payload send_stream_data counted: a bound that
        # spares a pass over the pieces when it shows that one frame takes them all (a
        # payload held back and not counted only sends a large flush the way of
        # NoiseTransport.encrypt, which frames any size).
        size = 0
        if unflushed + HEADER_SIZE * len(pieces) > MAX_PLAINTEXT_SIZE:
            size = sum(map(len, pieces))
        if size <= MAX_PLAINTEXT_SIZE:  # one frame: small, one allocation
            plaintext = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            size = len(plaintext)
            sealed = cipher.encrypt(plaintext)
            transport.write(tail + sealed if tail else sealed)
        else:
            if tail:
                transport.write(tail)
            _write_sealed(transport, cipher, pieces, size)
        return size

    def drained(self) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = self.loop.create_future()
        if not self.write_paused:
            waiter.set_result(None)
        elif self._stage is _CLOSED:
            assert self._error is not None
            waiter.set_exception(self._error)
        else:
            self._drain_waiters.append(waiter)
        return waiter

    # -- teardown ------------------------------------------------------------------------

    def _terminate(
        self, error: P2PError, *, abort: bool = False, transport_gone: bool = False
    ) -> None:
        if self._stage is _CLOSED:
            if transport_gone:
                self._cancel_timer()  # the fallback below: it would hold us for 5 s
                if not self._closed.done():
                    self._closed.set_result(None)
            return
        was_established = self._stage is _ESTABLISHED
        self._stage = _CLOSED
        self._error = error
        self._upgrader = None
        self._cancel_timer()
        self._deadlines.clear()
        if not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()
        for stream in list(self._streams.values()):
            stream._fail(error)
        self._streams.clear()
        for waiter in self._ping_waiters.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._ping_waiters.clear()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self._drain_waiters.clear()
        transport = self._transport
        if transport is not None and not transport_gone:
            if abort:
                transport.abort()
            else:
                transport.close()
        if transport_gone or transport is None:
            if not self._closed.done():
                self._closed.set_result(None)
        else:
            # connection_lost will follow; do not leave close() waiting if it never does.
            self._timer = self.loop.call_later(5.0, self._mark_closed)
        self._hooks.connection_closed(self, was_established=was_established)

    def _mark_closed(self) -> None:
        self._timer = None
        if not self._closed.done():
            self._closed.set_result(None)
