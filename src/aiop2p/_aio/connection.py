"""``Connection``: drives the upgrade pipeline and then Noise + Yamux for one transport.

It is an :class:`asyncio.Protocol`, so bytes are pushed into the machines from the
transport's callback: no reader task per connection and no per-stream tasks except
the application's handlers.  The pipeline is a chain of sans-IO stages, each handing
its leftover bytes to the next::

    multistream(/noise) -> Noise XX -> multistream(/yamux/1.0.0) -> Yamux

The dialer sends the ``/noise`` proposal and the first Noise message together
(it offers only one protocol, so nothing is lost by not waiting for the echo), and
likewise the ``/yamux/1.0.0`` proposal right behind the last handshake message.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
from collections import deque
from collections.abc import Collection
from typing import TYPE_CHECKING, NewType

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..errors import (
    ConnectionClosedError,
    ConnectionLostError,
    HandshakeError,
    HandshakeTimeoutError,
    InvalidStateError,
    NegotiationError,
    NegotiationTimeoutError,
    P2PError,
    PeerIdMismatchError,
    StreamResetError,
)
from ..protocols.multistream import (
    MultistreamDialer,
    MultistreamListener,
    NegotiationFailed,
    ProtocolSelected,
)
from ..protocols.noise import (
    NOISE_PROTOCOL_ID,
    HandshakeCompleted,
    HandshakeFailed,
    NoiseHandshake,
    NoiseTransport,
)
from ..protocols.yamux import (
    YAMUX_PROTOCOL_ID,
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
from .stream import Stream

if TYPE_CHECKING:
    from ..config import NodeConfig
    from ..identity import KeyPair, PeerId, PublicKey
    from ..multiaddr import Multiaddr

__all__ = ["Connection", "ConnectionId", "Direction"]

log = logging.getLogger(__name__)

ConnectionId = NewType("ConnectionId", int)
_connection_ids = itertools.count(1)


class Direction(enum.Enum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class _Stage(enum.IntEnum):
    SECURITY_NEGOTIATION = 0
    NOISE = 1
    MUXER_NEGOTIATION = 2
    ESTABLISHED = 3
    CLOSED = 4


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
        """Protocols offered to this connection's peer on a new inbound stream."""
        raise NotImplementedError


class Connection(asyncio.Protocol):
    """A secured, multiplexed connection to one peer.

    Open streams with :meth:`new_stream`; inbound streams go to the node's handlers.
    The ``asyncio.Protocol`` callbacks are internal.
    """

    def __init__(
        self,
        hooks: ConnectionHooks,
        *,
        identity: KeyPair,
        direction: Direction,
        config: NodeConfig,
        expected_peer: PeerId | None = None,
        remote_addr: Multiaddr | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        role: Direction | None = None,
    ) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.id = ConnectionId(next(_connection_ids))
        self.direction = direction
        """Who opened the transport connection (counts against the in/out limits)."""
        self.role = role or direction
        """Who runs the upgrade as the initiator (OUTBOUND: multistream dialer, Noise
        initiator, Yamux client).  Normally ``direction``; hole punching (DCUtR) fixes
        it per peer instead, because after a TCP simultaneous open both sides dialled."""
        self.remote_addr = remote_addr
        self.local_addr: Multiaddr | None = None
        self._hooks = hooks
        self._identity = identity
        self._config = config
        self._expected_peer = expected_peer
        self._remote_peer: PeerId | None = None
        self.remote_public_key: PublicKey | None = None
        self._transport: asyncio.Transport | None = None
        self._stage = _Stage.SECURITY_NEGOTIATION
        self._negotiator: MultistreamDialer | MultistreamListener | None = None
        self._handshake: NoiseHandshake | None = None
        self._cipher: NoiseTransport | None = None
        self._yamux: YamuxSession | None = None
        self._streams: dict[StreamId, Stream] = {}
        self._inbound_streams = 0
        self._ready: asyncio.Future[Connection] = self.loop.create_future()
        self._closed: asyncio.Future[None] = self.loop.create_future()
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._flush_scheduled = False
        self._unflushed = 0
        self._write_paused = False
        self._write_piece_size = config.write_flush_size
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._reading_paused = False
        self._replies_while_paused = 0  # bytes answered to input while the socket was paused
        self._negotiating: dict[StreamId, float] = {}  # stream -> negotiation deadline
        self._negotiation_timer: asyncio.TimerHandle | None = None
        self._error: P2PError | None = None
        self._ping_waiters: dict[int, asyncio.Future[None]] = {}
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._lingering: deque[tuple[float, Stream]] = deque()
        self._linger_timer: asyncio.TimerHandle | None = None
        self.keep_alive = False
        """Set by services that need the connection kept open while idle (e.g. relays)."""
        self.user_data: dict[str, object] = {}
        """Per-connection storage for services (e.g. identify results)."""

    # -- public --------------------------------------------------------------------------

    @property
    def remote_peer(self) -> PeerId:
        if self._remote_peer is None:
            raise InvalidStateError("the handshake has not completed yet")
        return self._remote_peer

    @property
    def is_established(self) -> bool:
        return self._stage is _Stage.ESTABLISHED

    @property
    def is_closed(self) -> bool:
        return self._stage is _Stage.CLOSED

    @property
    def error(self) -> P2PError | None:
        """Why the connection closed (None while open)."""
        return self._error

    @property
    def streams(self) -> list[Stream]:
        return list(self._streams.values())

    def __repr__(self) -> str:
        peer = self._remote_peer or self._expected_peer
        return f"<Connection {self.id} {self.direction.value} {peer} {self._stage.name}>"

    async def wait_ready(self) -> Connection:
        """Wait until the handshake and muxer negotiation are done."""
        return await asyncio.shield(self._ready)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def new_stream(self, protocols: str | list[str] | tuple[str, ...]) -> Stream:
        """Open a stream and negotiate one of ``protocols`` (in preference order).

        With a single protocol the proposal is sent optimistically: the stream is
        returned at once and the first write travels with the proposal.  A refusal
        then surfaces as :class:`ProtocolNotSupportedError` on the first read.
        """
        if isinstance(protocols, str):
            protocols = [protocols]
        stream = self.open_stream(protocols)
        if len(protocols) > 1:
            await stream.wait_negotiated()
        return stream

    def open_stream(self, protocols: list[str] | tuple[str, ...]) -> Stream:
        """Synchronous part of :meth:`new_stream`: open and send the proposal."""
        yamux = self._require_established()
        sid = yamux.open_stream()
        negotiator = MultistreamDialer(
            protocols,
            optimistic=len(protocols) == 1,
            max_message_size=self._config.max_negotiation_message_size,
        )
        stream = Stream(self, sid, is_initiator=True, negotiator=negotiator)
        self._streams[sid] = stream
        self._watch_negotiation(sid)
        out = negotiator.data_to_send()
        yamux.send_data(sid, out)
        self._schedule_flush()
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
        if self._stage is not _Stage.CLOSED:
            if self._yamux is not None and not self._yamux.is_terminated:
                self._yamux.go_away(0)
                self._flush()
            self._terminate(ConnectionClosedError("connection closed locally"))
        await asyncio.shield(self._closed)

    def abort(self, error: P2PError | None = None) -> None:
        """Drop the connection at once."""
        self._terminate(error or ConnectionClosedError("connection aborted locally"), abort=True)

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._handshake_timer = self.loop.call_later(
            self._config.handshake_timeout, self._on_handshake_timeout
        )
        if self.role is Direction.OUTBOUND:
            negotiator = MultistreamDialer(
                [NOISE_PROTOCOL_ID],
                optimistic=True,
                max_message_size=self._config.max_negotiation_message_size,
            )
            self._negotiator = negotiator
            self._handshake = self._new_handshake(initiator=True)
            transport.write(negotiator.data_to_send() + self._handshake.data_to_send())
        else:
            self._negotiator = MultistreamListener(
                (NOISE_PROTOCOL_ID,),
                max_message_size=self._config.max_negotiation_message_size,
            )

    def data_received(self, data: bytes) -> None:
        if self._stage is _Stage.ESTABLISHED:
            cipher = self._cipher
            yamux = self._yamux
            assert cipher is not None and yamux is not None
            try:
                plaintexts = cipher.decrypt(data)
            except P2PError as exc:
                self._terminate(exc, abort=True)
                return
            for plaintext in plaintexts:
                yamux.receive_data(plaintext)
            self._dispatch(yamux)
            sent = self._flush()
            if self._write_paused and sent:
                self._replied_while_paused(sent)
        elif self._stage is not _Stage.CLOSED:
            self._upgrade(data)

    def eof_received(self) -> bool | None:
        if self._yamux is not None and self._stage is _Stage.ESTABLISHED:
            self._yamux.receive_eof()
            self._dispatch(self._yamux)
        else:
            self._terminate(ConnectionLostError("connection closed during the handshake"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            error: P2PError = ConnectionClosedError("connection closed by the remote")
        else:
            error = ConnectionLostError(f"connection lost: {exc}")
            error.__cause__ = exc
        self._terminate(error, transport_gone=True)

    def pause_writing(self) -> None:
        self._write_paused = True

    def _replied_while_paused(self, size: int) -> None:
        """Stop reading from a peer that sends input but does not read our answers.

        What ``data_received`` writes is the answer to the peer's own input (pongs, window
        updates, resets, negotiation replies, synchronous responses); application writes
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
        self._write_paused = False
        self._replies_while_paused = 0
        if self._reading_paused:
            self._reading_paused = False
            if self._transport is not None and self._stage is not _Stage.CLOSED:
                self._transport.resume_reading()
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- upgrade pipeline ----------------------------------------------------------------

    def _new_handshake(self, *, initiator: bool) -> NoiseHandshake:
        return NoiseHandshake(
            initiator=initiator,
            identity=self._identity,
            static_key=X25519PrivateKey.generate(),
            ephemeral_key=X25519PrivateKey.generate(),
            expected_peer=self._expected_peer if initiator else None,
        )

    def _upgrade(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        out: list[bytes] = []
        self._upgrade_step(data, out)
        if out and self._stage is not _Stage.CLOSED:
            transport.write(b"".join(out))
        if self._stage is _Stage.ESTABLISHED and self._yamux is not None:
            self._dispatch(self._yamux)
            self._flush()

    def _upgrade_step(self, data: bytes, out: list[bytes]) -> None:
        while data and self._stage < _Stage.ESTABLISHED:
            stage = self._stage
            if stage is _Stage.SECURITY_NEGOTIATION:
                data = self._step_security_negotiation(data, out)
            elif stage is _Stage.NOISE:
                data = self._step_noise(data, out)
            else:
                assert self._cipher is not None
                try:
                    plaintexts = self._cipher.decrypt(data)
                except P2PError as exc:
                    self._terminate(exc, abort=True)
                    return
                data = b""
                for plaintext in plaintexts:
                    if self._stage is _Stage.MUXER_NEGOTIATION:
                        self._step_muxer_negotiation(plaintext, out)
                    elif self._stage is _Stage.ESTABLISHED and self._yamux is not None:
                        self._yamux.receive_data(plaintext)

    def _step_security_negotiation(self, data: bytes, out: list[bytes]) -> bytes:
        negotiator = self._negotiator
        assert negotiator is not None
        negotiator.receive_data(data)
        reply = negotiator.data_to_send()
        if reply:
            out.append(reply)
        for ev in negotiator.events_received():
            if type(ev) is ProtocolSelected:
                self._negotiator = None
                self._stage = _Stage.NOISE
                if self._handshake is None:
                    self._handshake = self._new_handshake(initiator=False)
                return ev.leftover
            if type(ev) is NegotiationFailed:
                self._fail_handshake(ev.error)
                return b""
        return b""

    def _step_noise(self, data: bytes, out: list[bytes]) -> bytes:
        handshake = self._handshake
        assert handshake is not None
        handshake.receive_data(data)
        reply = handshake.data_to_send()
        if reply:
            out.append(reply)
        for ev in handshake.events_received():
            if type(ev) is HandshakeCompleted:
                expected = self._expected_peer
                if expected is not None and ev.remote_peer != expected:
                    # Only the initiator's handshake checks it: a dial run as the
                    # responder (role override) checks here.
                    self._fail_handshake(PeerIdMismatchError(expected, ev.remote_peer))
                    return b""
                self._handshake = None
                self._cipher = ev.transport
                self._remote_peer = ev.remote_peer
                self.remote_public_key = ev.remote_public_key
                self._stage = _Stage.MUXER_NEGOTIATION
                if self.role is Direction.OUTBOUND:
                    negotiator: MultistreamDialer | MultistreamListener = MultistreamDialer(
                        [YAMUX_PROTOCOL_ID],
                        optimistic=True,
                        max_message_size=self._config.max_negotiation_message_size,
                    )
                    out.append(ev.transport.encrypt(negotiator.data_to_send()))
                else:
                    negotiator = MultistreamListener(
                        (YAMUX_PROTOCOL_ID,),
                        max_message_size=self._config.max_negotiation_message_size,
                    )
                self._negotiator = negotiator
                return ev.leftover
            if type(ev) is HandshakeFailed:
                self._fail_handshake(ev.error)
                return b""
        return b""

    def _step_muxer_negotiation(self, plaintext: bytes, out: list[bytes]) -> None:
        negotiator = self._negotiator
        cipher = self._cipher
        assert negotiator is not None and cipher is not None
        negotiator.receive_data(plaintext)
        reply = negotiator.data_to_send()
        if reply:
            out.append(cipher.encrypt(reply))
        for ev in negotiator.events_received():
            if type(ev) is ProtocolSelected:
                self._negotiator = None
                self._yamux = YamuxSession(
                    is_client=self.role is Direction.OUTBOUND, config=self._config.yamux
                )
                self._stage = _Stage.ESTABLISHED
                if self._handshake_timer is not None:
                    self._handshake_timer.cancel()
                    self._handshake_timer = None
                if ev.leftover:
                    self._yamux.receive_data(ev.leftover)
                self._hooks.connection_ready(self)  # may veto (abort) the connection
                if self._stage is _Stage.ESTABLISHED:
                    if not self._ready.done():
                        self._ready.set_result(self)
                    self._arm_idle_timer()
                return
            if type(ev) is NegotiationFailed:
                self._fail_handshake(ev.error)
                return

    def _fail_handshake(self, error: P2PError) -> None:
        if not isinstance(error, HandshakeError | NegotiationError):
            wrapped = HandshakeError(f"handshake failed: {error}")
            wrapped.__cause__ = error
            error = wrapped
        self._terminate(error, abort=True)

    def _on_handshake_timeout(self) -> None:
        self._handshake_timer = None
        if self._stage < _Stage.ESTABLISHED:
            self._terminate(
                HandshakeTimeoutError(
                    f"handshake not finished within {self._config.handshake_timeout} s"
                ),
                abort=True,
            )

    # -- established: events -------------------------------------------------------------

    def _dispatch(self, yamux: YamuxSession) -> None:
        streams = self._streams
        for ev in yamux.events_received():
            if isinstance(ev, StreamDataReceived):
                stream = streams.get(ev.stream_id)
                if stream is not None:
                    stream._feed_data(ev.data)
                else:
                    yamux.acknowledge_received_data(ev.stream_id, len(ev.data))
            elif isinstance(ev, StreamWindowUpdated):
                stream = streams.get(ev.stream_id)
                if stream is not None:
                    stream._wake_writer()
            elif isinstance(ev, StreamOpened):
                self._accept_stream(yamux, ev.stream_id)
            elif isinstance(ev, StreamEnded):
                stream = streams.get(ev.stream_id)
                if stream is not None:
                    stream._feed_eof()
                    if stream._write_closed:
                        self._forget_stream(ev.stream_id)
            elif isinstance(ev, StreamReset):
                stream = streams.get(ev.stream_id)
                if stream is not None:
                    stream._fail(ev.error or StreamResetError("stream reset by the remote"))
            elif isinstance(ev, PongReceived):
                waiter = self._ping_waiters.pop(ev.opaque, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            elif isinstance(ev, GoAwayReceived):
                log.debug("%r: remote sent GoAway %d", self, ev.code)
            elif isinstance(ev, SessionTerminated):
                self._flush()  # e.g. the GoAway carrying the error code
                err = ev.error or ConnectionClosedError("connection closed by the remote")
                self._terminate(err)
                return

    def _accept_stream(self, yamux: YamuxSession, sid: StreamId) -> None:
        if self._inbound_streams >= self._config.max_inbound_streams_per_connection:
            yamux.reset_stream(sid)
            return
        self._inbound_streams += 1
        negotiator = MultistreamListener(
            self._hooks.supported_protocols(self),
            max_message_size=self._config.max_negotiation_message_size,
        )
        stream = Stream(self, sid, is_initiator=False, negotiator=negotiator)
        self._streams[sid] = stream
        self._watch_negotiation(sid)

    def _on_stream_negotiated(self, stream: Stream) -> None:
        self._negotiating.pop(stream.stream_id, None)
        if not stream.is_initiator:
            self._hooks.inbound_stream(stream)

    def _watch_negotiation(self, sid: StreamId) -> None:
        """Reset the stream if multistream has not picked its protocol in time.

        One timer per connection: deadlines share one timeout, so the insertion order of
        ``_negotiating`` is deadline order, and a stream that finishes leaves it in O(1).
        """
        deadline = self.loop.time() + self._config.negotiation_timeout
        self._negotiating[sid] = deadline
        if self._negotiation_timer is None:
            self._negotiation_timer = self.loop.call_at(deadline, self._expire_negotiations)

    def _expire_negotiations(self) -> None:
        self._negotiation_timer = None
        now = self.loop.time()
        negotiating = self._negotiating
        while negotiating:
            sid, deadline = next(iter(negotiating.items()))
            if deadline > now:
                if self._stage is _Stage.ESTABLISHED:
                    self._negotiation_timer = self.loop.call_at(deadline, self._expire_negotiations)
                return
            del negotiating[sid]
            stream = self._streams.get(sid)
            if stream is not None and stream.protocol is None:
                stream._negotiation_failed(
                    NegotiationTimeoutError(
                        f"no protocol agreed within {self._config.negotiation_timeout} s"
                    )
                )

    # -- established: commands from streams ----------------------------------------------

    def _require_established(self) -> YamuxSession:
        if self._stage is not _Stage.ESTABLISHED or self._yamux is None:
            if self._error is not None:
                raise self._error
            raise InvalidStateError("connection is not established")
        return self._yamux

    def _send_stream_data(self, sid: StreamId, data: bytes | memoryview) -> int:
        yamux = self._require_established()
        sent = yamux.send_data(sid, data)
        if sent:
            self._unflushed += sent
            if self._unflushed >= self._config.write_flush_size:
                self._flush()
            else:
                self._schedule_flush()
        return sent

    def _acknowledge(self, sid: StreamId, size: int) -> None:
        yamux = self._yamux
        if yamux is not None and self._stage is _Stage.ESTABLISHED:
            yamux.acknowledge_received_data(sid, size)
            self._schedule_flush()

    def _close_stream(self, sid: StreamId) -> None:
        yamux = self._yamux
        if yamux is not None and self._stage is _Stage.ESTABLISHED:
            yamux.close_stream(sid)
            self._schedule_flush()

    def _reset_stream(self, sid: StreamId) -> None:
        yamux = self._yamux
        if yamux is not None and self._stage is _Stage.ESTABLISHED:
            yamux.reset_stream(sid)
            self._schedule_flush()
        self._forget_stream(sid)

    def _forget_stream(self, sid: StreamId) -> None:
        self._negotiating.pop(sid, None)
        stream = self._streams.pop(sid, None)
        if stream is not None and not stream.is_initiator:
            self._inbound_streams -= 1
        if not self._streams:
            self._arm_idle_timer()

    def linger(self, stream: Stream, timeout: float) -> None:
        """Reset ``stream`` if it is still open ``timeout`` seconds from now.

        All lingering streams of a connection share one timer (a deque ordered by
        deadline), so a busy server does not pile up a timer per request.
        """
        deadline = self.loop.time() + timeout
        self._lingering.append((deadline, stream))
        if self._linger_timer is None:
            self._linger_timer = self.loop.call_at(deadline, self._expire_lingering)

    def _expire_lingering(self) -> None:
        self._linger_timer = None
        now = self.loop.time()
        lingering = self._lingering
        while lingering and lingering[0][0] <= now:
            _, stream = lingering.popleft()
            stream.reset()  # a no-op when it closed meanwhile
        if lingering and self._stage is _Stage.ESTABLISHED:
            self._linger_timer = self.loop.call_at(lingering[0][0], self._expire_lingering)

    def _arm_idle_timer(self) -> None:
        """Note that the connection became idle now.

        One timer at most: it is not cancelled when a stream opens (that would cost a
        timer per request); when it fires it checks whether the connection has really
        been idle for the whole timeout and re-arms itself otherwise.
        """
        timeout = self._config.idle_connection_timeout
        if timeout is None or self._stage is not _Stage.ESTABLISHED:
            return
        self._idle_since = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_at(self._idle_since + timeout, self._on_idle_timeout)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _on_idle_timeout(self) -> None:
        self._idle_timer = None
        if self._stage is not _Stage.ESTABLISHED or self._streams:
            return  # busy: the timer is armed again when the last stream goes
        timeout = self._config.idle_connection_timeout
        assert timeout is not None
        deadline = self._idle_since + timeout
        if self.keep_alive or deadline > self.loop.time():
            base = self.loop.time() if self.keep_alive else self._idle_since
            self._idle_timer = self.loop.call_at(base + timeout, self._on_idle_timeout)
            return
        if self._yamux is not None:
            self._yamux.go_away(0)
            self._flush()
        self._terminate(ConnectionClosedError("connection closed after being idle"))

    # -- output --------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> int:
        """Write what the session queued; return the plaintext byte count."""
        self._flush_scheduled = False
        self._unflushed = 0
        yamux = self._yamux
        transport = self._transport
        if yamux is None or transport is None or self._stage is not _Stage.ESTABLISHED:
            return 0
        data = yamux.data_to_send()
        if data:
            assert self._cipher is not None
            transport.write(self._cipher.encrypt(data))
        return len(data)

    async def _drain(self) -> None:
        if not self._write_paused:
            return
        if self._stage is _Stage.CLOSED:
            assert self._error is not None
            raise self._error
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    # -- teardown ------------------------------------------------------------------------

    def _terminate(
        self, error: P2PError, *, abort: bool = False, transport_gone: bool = False
    ) -> None:
        if self._stage is _Stage.CLOSED:
            if transport_gone and not self._closed.done():
                self._closed.set_result(None)
            return
        was_established = self._stage is _Stage.ESTABLISHED
        self._stage = _Stage.CLOSED
        self._error = error
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._cancel_idle_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if self._negotiation_timer is not None:
            self._negotiation_timer.cancel()
            self._negotiation_timer = None
        self._negotiating.clear()
        self._lingering.clear()
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
            self.loop.call_later(5.0, self._mark_closed)
        self._hooks.connection_closed(self, was_established=was_established)

    def _mark_closed(self) -> None:
        if not self._closed.done():
            self._closed.set_result(None)
