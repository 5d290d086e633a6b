"""``Stream``: one Yamux stream seen as an async byte pipe.

Reads come from a per-stream buffer bounded by the Yamux receive window: the window is
credited only when the application reads, so a slow reader throttles the sender instead
of growing memory.  Writes wait for send window and for the socket to drain.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Collection
from typing import TYPE_CHECKING, NewType, Protocol, Self

from .._wire.varint import decode_uvarint, encode_uvarint
from ..errors import (
    MessageTooLargeError,
    P2PError,
    RemoteProtocolError,
    StreamClosedError,
    StreamResetError,
)
from ..protocols.multistream import (
    MultistreamDialer,
    MultistreamListener,
    NegotiationFailed,
    Proposal,
    ProtocolSelected,
    match_proposal,
)
from ..protocols.role import Role
from ..protocols.yamux import StreamId

if TYPE_CHECKING:
    from ..identity import PeerId
    from ..multiaddr import Multiaddr

__all__ = ["ConnectionId", "Negotiation", "Stream", "StreamOwner", "StreamSink"]

ConnectionId = NewType("ConnectionId", int)
"""A connection's id, unique in the process (``StreamOwner.id``)."""

Negotiation = MultistreamDialer | MultistreamListener | Proposal | Collection[str]
"""What picks a new stream's protocol.  The fast path: a :class:`Proposal` (an outbound
stream offering one protocol, sent) or the protocols offered to the peer (an inbound
stream); the stream builds the full machine only when the peer's input leaves the common
case (see ``protocols/multistream.py``)."""


_MACHINES = (MultistreamDialer, MultistreamListener)
"""The full negotiation machines (a tuple for isinstance: ``X | Y`` builds a union per call)."""

_ONE_BYTE_LENGTHS = tuple(bytes((size,)) for size in range(0x80))
"""The uvarint length prefixes of messages shorter than 128 bytes."""


class StreamOwner(Protocol):
    """The connection that carries a stream, as the stream and its users see it.

    :class:`~aiop2p._aio.connection.Connection` implements it.  Declared here, next to
    the stream, so that this module does not import the module that creates streams.
    The first group is what :class:`Stream` and ``StreamTransport`` call to move a
    stream's bytes through the connection's Yamux session; the second is what stream
    handlers read from ``stream.connection``.
    """

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def write_paused(self) -> bool:
        """The socket asked us to stop writing; writers wait for :meth:`drained`."""
        ...

    @property
    def write_piece_size(self) -> int:
        """Most bytes a writer hands the session at once (``NodeConfig.write_flush_bytes``)."""
        ...

    @property
    def max_negotiation_message_bytes(self) -> int:
        """Largest multistream message taken from the peer (``NodeConfig``'s field)."""
        ...

    def send_stream_data(self, sid: StreamId, data: bytes | memoryview) -> int:
        """Queue what the send window takes of ``data``; return how many bytes."""
        ...

    def acknowledge(self, sid: StreamId, size: int) -> None:
        """Credit ``size`` consumed bytes to the stream's receive window."""
        ...

    def close_stream(self, sid: StreamId) -> None:
        """Send FIN."""
        ...

    def reset_stream(self, sid: StreamId) -> None:
        """Send RST and forget the stream."""
        ...

    def forget_stream(self, sid: StreamId) -> None:
        """The stream is over in both directions (or failed): stop tracking it."""
        ...

    def stream_negotiated(self, stream: Stream) -> None:
        """Multistream picked the stream's protocol."""
        ...

    def note_wakeup(self) -> None:
        """The stream's input woke a task that waited for it (the connection may flush
        what the tasks woken so far answer)."""
        ...

    def drained(self) -> asyncio.Future[None]:
        """Done when the socket takes writes again; fails if the connection closes."""
        ...

    @property
    def id(self) -> ConnectionId: ...

    @property
    def remote_peer(self) -> PeerId: ...

    @property
    def remote_addr(self) -> Multiaddr | None: ...

    @property
    def local_addr(self) -> Multiaddr | None: ...

    @property
    def is_established(self) -> bool: ...

    @property
    def is_relayed(self) -> bool: ...

    keep_alive: bool
    """Kept open while idle (set by services such as the relay server)."""

    def linger(self, stream: Stream, timeout: float) -> None:
        """Reset ``stream`` if it is still open ``timeout`` seconds from now."""
        ...

    def abort(self, error: P2PError | None = None) -> None: ...


class StreamSink(Protocol):
    """Takes a stream's input instead of its read buffer (see :meth:`Stream.set_sink`).

    The sink credits the Yamux window itself (``Stream.consume``) once it has used the
    bytes, so a sink that stops consuming throttles the sender exactly as a slow reader.
    """

    def sink_data(self, data: bytes) -> None: ...

    def sink_eof(self) -> None: ...

    def sink_failed(self, error: P2PError) -> None: ...

    def sink_writable(self) -> None: ...


class Stream:
    """A bidirectional, flow-controlled byte stream to one peer on one protocol."""

    __slots__ = (
        "_buffer",
        "_buffered",
        "_conn",
        "_eof",
        "_error",
        "_negotiated",
        "_negotiator",
        "_read_waiter",
        "_sink",
        "_unacked",
        "_write_closed",
        "_write_waiter",
        "connection",
        "protocol",
        "role",
        "stream_id",
    )

    def __init__(
        self,
        conn: StreamOwner,
        stream_id: StreamId,
        role: Role,
        negotiator: Negotiation | None,
    ) -> None:
        # role and negotiator positional or by name: the connections pass them by
        # position (a call with keywords costs more, and there is one per stream).
        self._conn = conn
        self.connection = conn
        """The connection carrying this stream (an attribute: read on every request)."""
        self.stream_id = stream_id
        self.role = role
        """INITIATOR if we opened the stream."""
        self.protocol: str | None = None
        self._negotiator = negotiator
        """Until the protocol is picked (see :data:`Negotiation`); None after."""
        self._negotiated: asyncio.Future[str] | None = None
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._error: P2PError | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._write_closed = False
        self._sink: StreamSink | None = None
        # Negotiation bytes not credited yet: those of an input that also carried the
        # protocol's first bytes go out with the credit of that data's first read.
        self._unacked = 0

    # -- public properties -------------------------------------------------------------

    @property
    def remote_peer(self) -> PeerId:
        return self._conn.remote_peer

    @property
    def is_closed(self) -> bool:
        """True once nothing more can be read or written."""
        return self._error is not None or (self._eof and self._write_closed)

    def __repr__(self) -> str:
        return f"<Stream {self.stream_id} {self.protocol!r} to {self._conn.remote_peer}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc is not None:
            self.reset()
        else:
            await self.close()

    # -- negotiation --------------------------------------------------------------------

    def _negotiation_future(self) -> asyncio.Future[str]:
        if self._negotiated is None:
            self._negotiated = self._conn.loop.create_future()
            if self.protocol is not None:
                self._negotiated.set_result(self.protocol)
            elif self._error is not None:
                self._negotiated.set_exception(self._error)
                self._negotiated.exception()
        return self._negotiated

    async def wait_negotiated(self) -> str:
        """Wait until multistream-select picked the protocol; return it."""
        if self.protocol is not None:
            return self.protocol
        if self._error is not None:
            raise self._error
        return await self._negotiation_future()

    def _negotiate(self, data: bytes) -> None:
        """Feed the peer's negotiation bytes to the fast path while they match it, else to
        the full machine (built now, in the state the fast path reached)."""
        neg = self._negotiator
        if isinstance(neg, Proposal):
            leftover = neg.match_echo(data)
            if leftover is not None:
                self._selected(neg.protocol, leftover, len(data))
                return
            after_header = neg.match_header(data)
            if after_header is not None:
                self._negotiator = after_header
                self._conn.acknowledge(self.stream_id, len(data))  # all went to multistream
                return
        elif not isinstance(neg, _MACHINES) and neg is not None:
            match = match_proposal(data, neg, self._conn.max_negotiation_message_bytes)
            if match is not None:
                protocol, end = match
                self._send_negotiation(data[:end])  # our header and the echo
                self._selected(protocol, data[end:], len(data))
                return
        machine = self._machine()
        machine.receive_data(data)
        self._after_negotiation_input(machine, len(data))

    def _machine(self) -> MultistreamDialer | MultistreamListener:
        """The full machine, built from the fast path's state if there is none yet."""
        neg = self._negotiator
        if isinstance(neg, MultistreamDialer | MultistreamListener):
            return neg
        assert neg is not None
        if isinstance(neg, Proposal):
            machine: MultistreamDialer | MultistreamListener = neg.dialer()
        else:
            machine = MultistreamListener(
                neg, max_message_size=self._conn.max_negotiation_message_bytes
            )
        self._negotiator = machine
        return machine

    def _send_negotiation(self, out: bytes) -> None:
        try:  # noqa: SIM105 - cheaper than contextlib.suppress on every stream
            self._conn.send_stream_data(self.stream_id, out)
        except P2PError:
            pass  # reset in the same input batch: its StreamReset event follows

    def _after_negotiation_input(
        self, neg: MultistreamDialer | MultistreamListener, received: int = 0
    ) -> None:
        """Act on the machine's output after it was given ``received`` bytes."""
        out = neg.data_to_send()
        if out:
            self._send_negotiation(out)
        for ev in neg.events_received():
            if type(ev) is ProtocolSelected:
                self._selected(ev.protocol, ev.leftover, received)
                return
            if type(ev) is NegotiationFailed:
                self._negotiation_failed(ev.error)
                return
        if received:
            self._conn.acknowledge(self.stream_id, received)  # all went to multistream

    def _selected(self, protocol: str, leftover: bytes, received: int) -> None:
        """Multistream picked ``protocol`` on input of ``received`` bytes.

        Bytes that already belong to the protocol (``leftover``: a lazy dialer's first
        data in the same frame as its proposal) go to the read buffer and are credited
        when read, exactly once.  The bytes multistream consumed are credited at once or,
        when a leftover came with them, with the leftover's first read (``_unacked``: one
        credit per request instead of two).
        """
        self._negotiator = None
        self.protocol = protocol
        consumed = received - len(leftover)
        if consumed > 0:
            if leftover:  # a request behind its proposal: credited with its first read
                self._unacked = consumed
            else:
                self._conn.acknowledge(self.stream_id, consumed)
        if self._negotiated is not None and not self._negotiated.done():
            self._negotiated.set_result(protocol)
        self._conn.stream_negotiated(self)
        if leftover and self._error is None and not self._feed_buffered(leftover):
            self._feed_data(leftover)  # a sink set when the protocol was picked takes it

    def _negotiation_failed(self, error: P2PError) -> None:
        """Negotiation is over without a protocol (refused, malformed, or out of time)."""
        self._negotiator = None
        self._fail(error)
        self._conn.reset_stream(self.stream_id)

    # -- called by the connection -------------------------------------------------------

    def _feed_data(self, data: bytes) -> None:
        if self._negotiator is not None:  # a new stream's first input: no buffering call
            self._negotiate(data)
        elif self._sink is not None:
            self._sink.sink_data(data)
        else:
            self._feed_buffered(data)

    def _feed_buffered(self, data: bytes) -> bool:
        """Data that only waits for the reader (no negotiation, no sink): nothing runs
        on it at once, so QUIC may hand it over mid-packet.  False: not such a stream."""
        if self._negotiator is not None or self._sink is not None:
            return False
        self._buffer.append(data)
        self._buffered += len(data)
        if self._read_waiter is not None:  # the usual case (none) without a call
            self._wake_for_data()
        return True

    def _feed_chunks(self, chunks: list[bytes], size: int) -> None:
        """More data, ``size`` bytes in ``chunks``, after data :meth:`_feed_buffered` took
        in the same input (QUIC hands a run of packets' data over at once)."""
        self._buffer.extend(chunks)
        self._buffered += size
        if self._read_waiter is not None:
            self._wake_for_data()

    def _wake_for_data(self) -> None:
        """A reader waits for the data just buffered: it runs once this input is
        dispatched (the connection flushes after it)."""
        waiter = self._read_waiter
        self._read_waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
            self._conn.note_wakeup()

    def _feed_eof(self) -> None:
        if self._negotiator is not None:
            machine = self._machine()
            machine.receive_eof()
            self._after_negotiation_input(machine)
        self._eof = True
        if self._sink is not None:
            self._sink.sink_eof()
        if self._read_waiter is not None:  # _wake_reader's call only when one waits
            self._wake_reader()

    def _fail(self, error: P2PError) -> None:
        """Terminal: the stream was reset or its connection died."""
        if self._error is not None:
            return
        self._error = error
        if self._negotiated is not None and not self._negotiated.done():
            self._negotiated.set_exception(error)
            self._negotiated.exception()  # retrieved: nobody may be waiting
        self._wake_reader()
        self._wake_writer()
        self._conn.forget_stream(self.stream_id)
        if self._sink is not None:
            self._sink.sink_failed(error)

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None:
            self._read_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake_writer(self) -> None:
        if self._sink is not None and self._error is None:
            self._sink.sink_writable()
        waiter = self._write_waiter
        if waiter is not None:
            self._write_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- sink mode: a transport over this stream (``StreamTransport``) --------------------

    def set_sink(self, sink: StreamSink) -> None:
        """Hand all further input to ``sink`` (no read buffer, no reader task).

        Used to run a connection over this stream (relayed connections): bytes already
        buffered are passed on first, then EOF or failure if they already happened.
        """
        self._sink = sink
        if self._buffered:
            data = b"".join(self._buffer)
            self._buffer.clear()
            self._buffered = 0
            sink.sink_data(data)
        if self._error is not None:
            sink.sink_failed(self._error)
        elif self._eof:
            sink.sink_eof()

    def consume(self, size: int) -> None:
        """A sink used ``size`` bytes: credit them to the receive window."""
        unacked = self._unacked
        if unacked:
            self._unacked = 0
        self._conn.acknowledge(self.stream_id, size + unacked)

    def close_write(self) -> bool:
        """Synchronous half-close of a negotiated stream (FIN).

        Returns :attr:`is_closed` after it: True when the peer had closed its side too
        (or the stream failed), so a caller that lingers on open streams needs no second
        look (a handler's end, once per request).
        """
        if self._write_closed or self._error is not None:
            return self._error is not None or self._eof
        self._write_closed = True
        self._conn.close_stream(self.stream_id)
        if self._eof:
            self._conn.forget_stream(self.stream_id)
            return True
        return False

    # -- reading ------------------------------------------------------------------------

    async def _wait_readable(self) -> None:
        # While negotiating too: the selection's leftover, a failure (``_fail``) and EOF
        # wake the reader as later data does, so there is no negotiation to wait for.
        waiter = self._conn.loop.create_future()
        self._read_waiter = waiter
        try:
            await waiter
        finally:
            if self._read_waiter is waiter:
                self._read_waiter = None

    def _take(self, n: int) -> bytes:
        """Take up to ``n`` buffered bytes (all when n < 0) and credit the window."""
        buf = self._buffer
        if n < 0 or n >= self._buffered:
            if len(buf) == 1:
                data = buf.popleft()
            else:
                data = b"".join(buf)
                buf.clear()
        else:
            first = buf[0]
            if len(first) > n:
                data = first[:n]
                buf[0] = first[n:]
            elif len(first) == n:
                data = buf.popleft()
            else:
                parts = []
                need = n
                while need:
                    chunk = buf.popleft()
                    if len(chunk) > need:
                        parts.append(chunk[:need])
                        buf.appendleft(chunk[need:])
                        break
                    parts.append(chunk)
                    need -= len(chunk)
                data = b"".join(parts)
        self._buffered -= len(data)
        unacked = self._unacked
        if unacked:
            self._unacked = 0
        self._conn.acknowledge(self.stream_id, len(data) + unacked)
        return data

    async def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes (whatever is available, at least one); ``b""`` at EOF.

        With ``n < 0``, read until EOF.
        """
        if n < 0:
            parts: list[bytes] = []
            while True:
                chunk = await self.read(1 << 20)
                if not chunk:
                    return b"".join(parts)
                parts.append(chunk)
        while not self._buffered:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            await self._wait_readable()
        return self._take(n)

    async def readexactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes or raise :class:`StreamClosedError` at an early EOF.

        Bytes are taken (and credited to the window) as they arrive, so ``n`` may exceed
        the receive window: the sender is never left waiting for credit we hold back.
        """
        if self._buffered >= n:
            return self._take(n) if n else b""
        parts: list[bytes] = []
        need = n
        while True:
            if self._buffered >= need:
                parts.append(self._take(need))
                return b"".join(parts)
            if self._buffered:
                chunk = self._take(-1)
                parts.append(chunk)
                need -= len(chunk)
            if self._error is not None:
                raise self._error
            if self._eof:
                raise StreamClosedError(f"stream ended after {n - need} of {n} expected bytes")
            await self._wait_readable()

    async def read_until_eof(self, max_size: int) -> bytes:
        """Read everything until the remote closes; more than ``max_size`` bytes resets."""
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = await self.read(1 << 20)
            if not chunk:
                return b"".join(parts)
            size += len(chunk)
            if size > max_size:
                self.reset()
                raise MessageTooLargeError(size, max_size)
            parts.append(chunk)

    async def read_message(self, max_size: int) -> bytes:
        """Read one unsigned-varint length-prefixed message of at most ``max_size`` bytes."""
        buf = self._buffer
        while not buf:  # wait for the first bytes (as _wait_readable, without its frame)
            if self._error is not None:
                raise self._error
            if self._eof:
                raise StreamClosedError("stream ended before a message")
            waiter = self._conn.loop.create_future()
            self._read_waiter = waiter
            try:
                await waiter
            finally:
                if self._read_waiter is waiter:
                    self._read_waiter = None
        # The common case: the whole message arrived in one piece.
        first = buf[0]
        length = first[0] if first else 0x80
        if length < 0x80:  # a one-byte length, without decode_uvarint's call
            start = 1
        else:
            try:
                got = decode_uvarint(first)
            except RemoteProtocolError:
                self.reset()
                raise
            length, start = got if got is not None else (-1, 0)
        if length >= 0:
            if length > max_size:
                self.reset()
                raise MessageTooLargeError(length, max_size)
            end = start + length
            if len(first) >= end:
                if len(first) == end:
                    buf.popleft()
                else:
                    buf[0] = first[end:]
                self._buffered -= end
                unacked = self._unacked
                if unacked:
                    self._unacked = 0
                self._conn.acknowledge(self.stream_id, end + unacked)
                return first[start:end]
        header = bytearray()
        while True:
            while not self._buffered:
                if self._error is not None:
                    raise self._error
                if self._eof:
                    if header:
                        raise StreamClosedError("stream ended inside a length prefix")
                    raise StreamClosedError("stream ended before a message")
                await self._wait_readable()
            header += self._take(1)
            try:
                got = decode_uvarint(header)
            except RemoteProtocolError:
                self.reset()
                raise
            if got is not None:
                length = got[0]
                break
        if length > max_size:
            self.reset()
            raise MessageTooLargeError(length, max_size)
        return await self.readexactly(length)

    # -- writing ------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._write_closed:
            raise StreamClosedError("stream is closed for writing")

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``; waits for flow-control window and socket buffer space.

        Large writes go out in pieces of ``NodeConfig.write_flush_bytes``, each only while the
        socket is not paused, so however many streams write at once, a peer that does not
        read holds at most about one piece per writer in our socket buffer.
        """
        self._check_writable()
        conn = self._conn
        negotiator = self._negotiator
        if negotiator is not None and not (
            type(negotiator) is Proposal
            or (type(negotiator) is MultistreamDialer and negotiator.optimistic)
        ):
            await self.wait_negotiated()
            self._check_writable()
        piece_size = conn.write_piece_size
        if type(data) is bytes and len(data) <= piece_size and not conn.write_paused:
            # The common case: one small piece the window takes whole, no view.
            sent = conn.send_stream_data(self.stream_id, data)
            if sent == len(data):
                if conn.write_paused:
                    await conn.drained()
                    self._check_writable()
                return
            data = data[sent:]
        view = memoryview(data)
        while True:
            if conn.write_paused:
                await conn.drained()
                self._check_writable()
            size = len(view)
            piece = view if size <= piece_size else view[:piece_size]
            sent = conn.send_stream_data(self.stream_id, piece)
            if sent == size:
                break
            view = view[sent:]
            if sent == len(piece):
                continue  # the piece went out whole: the next one waits for the socket
            waiter = conn.loop.create_future()
            self._write_waiter = waiter
            try:
                await waiter
            finally:
                if self._write_waiter is waiter:
                    self._write_waiter = None
            self._check_writable()
        if conn.write_paused:
            await conn.drained()
            self._check_writable()

    async def write_message(self, data: bytes) -> None:
        """Write one unsigned-varint length-prefixed message."""
        size = len(data)
        framed = (_ONE_BYTE_LENGTHS[size] if size < 0x80 else encode_uvarint(size)) + data
        conn = self._conn
        negotiator = self._negotiator
        if (
            self._error is None
            and not self._write_closed
            and (negotiator is None or type(negotiator) is Proposal)
            and len(framed) <= conn.write_piece_size
            and not conn.write_paused
        ):
            # The common case of :meth:`write` (one small piece the window takes whole),
            # without its coroutine.
            sent = conn.send_stream_data(self.stream_id, framed)
            if sent == len(framed):
                if conn.write_paused:
                    await conn.drained()
                    self._check_writable()
                return
            framed = framed[sent:]
        await self.write(framed)

    async def close(self) -> None:
        """Half-close: no more writes; the remote reads EOF.  Reading stays possible."""
        if self._write_closed or self._error is not None:
            return
        if self._negotiator is not None and self.protocol is None:
            # Send FIN only once the protocol is confirmed: some listeners (js-libp2p)
            # lose data that arrives together with the proposal and an immediate EOF.
            try:
                await self.wait_negotiated()
            except P2PError:
                return
            if self._write_closed or self._error is not None:
                return
        self.close_write()

    def reset(self) -> None:
        """Abort the stream in both directions; the remote sees a reset."""
        if self._error is not None or (self._eof and self._write_closed):
            return
        self._conn.reset_stream(self.stream_id)
        self._fail(StreamResetError("stream reset locally"))
