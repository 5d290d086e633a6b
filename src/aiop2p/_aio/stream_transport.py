"""``StreamTransport``: an :class:`asyncio.Transport` over a :class:`Stream`.

A relayed connection is a whole libp2p connection (Noise + Yamux, end to end) carried
inside one Yamux stream of the connection to the relay.  This transport lets the same
:class:`Connection` driver that runs over TCP run over such a stream, and lets a relay
splice two streams with the standard asyncio proxy pattern.

No task is involved: the stream hands its input to the transport (the stream's *sink*
mode), which calls ``protocol.data_received`` at once and only then credits the Yamux
window, so a paused reader (``pause_reading``) throttles the sender.  Writes go straight
into the stream's Yamux send window; whatever does not fit waits in a buffer bounded by
``high_water_bytes`` (``pause_writing`` is signalled beyond it) and is sent as window
updates arrive.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from ..errors import P2PError
from .connection import Connection
from .stream import Stream

__all__ = ["DEFAULT_HIGH_WATER_BYTES", "StreamTransport"]

log = logging.getLogger(__name__)

DEFAULT_HIGH_WATER_BYTES = 1024 * 1024
"""Bytes waiting for send window above which the protocol is asked to pause writing."""


class StreamTransport(asyncio.Transport):
    """Carries a protocol's bytes over a negotiated ``stream``.

    ``initial`` are bytes that already arrived for the protocol (e.g. those following a
    relay's STATUS OK).  ``on_lost`` may replace the error passed to the protocol when the
    stream ends abnormally (a relay explains its limit that way).  ``extra`` feeds
    :meth:`get_extra_info` (``peername``/``sockname`` are multiaddrs).
    """

    def __init__(
        self,
        stream: Stream,
        protocol: asyncio.Protocol,
        *,
        initial: bytes = b"",
        extra: dict[str, Any] | None = None,
        high_water_bytes: int = DEFAULT_HIGH_WATER_BYTES,
        low_water_bytes: int | None = None,
        on_lost: Callable[[P2PError | None], P2PError | None] | None = None,
    ) -> None:
        super().__init__(extra)
        self._stream = stream
        self._protocol = protocol
        self._extra: dict[str, Any] = dict(extra or {})
        self._extra.setdefault("stream", stream)
        self._high = high_water_bytes
        self._low = high_water_bytes // 4 if low_water_bytes is None else low_water_bytes
        self._on_lost = on_lost
        self._pending: deque[bytes] = deque()  # input held while reading is paused
        self._out: deque[memoryview] = deque()  # output waiting for send window
        self._out_bytes = 0
        self._reading_paused = False
        self._writing_paused = False
        self._closing = False  # close() called: FIN once the output drained
        self._eof_in = False
        self._eof_delivered = False
        self._eof_out = False
        self._lost = False
        self._conn_drain: asyncio.Future[None] | None = None
        self.bytes_received = 0
        """Bytes delivered to the protocol so far."""
        self.bytes_sent = 0
        """Bytes accepted into the stream so far."""
        self._loop = stream.connection.loop
        if initial:
            self._pending.append(initial)
        self._loop.call_soon(self._start)

    # -- start -----------------------------------------------------------------------------

    def _start(self) -> None:
        if self._lost:
            return
        self._protocol.connection_made(self)
        self._stream.set_sink(self)
        if not self._reading_paused:
            self._deliver_pending()

    # -- asyncio.BaseTransport ------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        """Half-close once buffered output is sent; the protocol is told when both ends are."""
        if self._closing or self._lost:
            return
        self._closing = True
        if not self._out:
            self._send_fin()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = cast(asyncio.Protocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # -- reading --------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return not self._reading_paused and not self._lost

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        if not self._reading_paused:
            return
        self._reading_paused = False
        self._deliver_pending()

    def _deliver_pending(self) -> None:
        pending = self._pending
        stream = self._stream
        protocol = self._protocol
        while pending and not self._reading_paused and not self._lost:
            data = pending.popleft()
            self.bytes_received += len(data)
            protocol.data_received(data)
            stream.consume(len(data))
        if self._eof_in and not pending and not self._reading_paused and not self._lost:
            self._deliver_eof()

    # -- StreamSink (called by the stream) ------------------------------------------------

    def sink_data(self, data: bytes) -> None:
        if self._lost:
            return
        if self._reading_paused or self._pending:
            self._pending.append(data)
            return
        self.bytes_received += len(data)
        protocol = self._protocol
        protocol.data_received(data)
        self._stream.consume(len(data))

    def sink_eof(self) -> None:
        if self._lost or self._eof_in:
            return
        self._eof_in = True
        if not self._reading_paused and not self._pending:
            self._deliver_eof()

    def _deliver_eof(self) -> None:
        if self._eof_delivered:
            return
        self._eof_delivered = True
        if self._on_lost is not None:
            error = self._on_lost(None)
            if error is not None:
                self._stream.reset()
                self._lose(error)
                return
        protocol = self._protocol
        if not protocol.eof_received():
            self.close()
        if self._eof_out:
            self._lose(None)

    def sink_failed(self, error: P2PError) -> None:
        if self._lost:
            return
        if self._on_lost is not None:
            error = self._on_lost(error) or error
        self._lose(error)

    def sink_writable(self) -> None:
        if self._out and not self._lost:
            self._flush_out()

    # -- writing --------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._lost or self._closing:
            return  # as asyncio's transports: writes after close/abort are dropped
        if not data:
            return
        if not isinstance(data, bytes):
            data = bytes(data)  # the caller may reuse its buffer
        if self._out:
            view = memoryview(data)
            self._out.append(view)
            self._out_bytes += len(view)
        else:
            try:
                sent = self._stream.connection.send_stream_data(self._stream.stream_id, data)
            except P2PError as exc:
                self._lose(exc)
                return
            self.bytes_sent += sent
            if sent == len(data):
                self._watch_connection()
                return
            rest = memoryview(data)[sent:]
            self._out.append(rest)
            self._out_bytes += len(rest)
        if not self._writing_paused and self._out_bytes > self._high:
            self._writing_paused = True
            self._protocol.pause_writing()

    def _watch_connection(self) -> None:
        """Propagate the carrying connection's socket backpressure to our protocol."""
        conn = self._stream.connection
        if not conn.write_paused or self._conn_drain is not None:
            return
        fut = conn.drained()
        self._conn_drain = fut
        fut.add_done_callback(self._conn_drained)
        if not self._writing_paused:
            self._writing_paused = True
            self._protocol.pause_writing()

    def _conn_drained(self, fut: asyncio.Future[None]) -> None:
        self._conn_drain = None
        if not fut.cancelled():
            fut.exception()  # retrieved: the stream failure reaches us separately
        self._maybe_resume()

    def _maybe_resume(self) -> None:
        if (
            self._writing_paused
            and self._out_bytes <= self._low
            and self._conn_drain is None
            and not self._lost
        ):
            self._writing_paused = False
            self._protocol.resume_writing()

    def _flush_out(self) -> None:
        out = self._out
        conn = self._stream.connection
        sid = self._stream.stream_id
        while out:
            view = out[0]
            try:
                sent = conn.send_stream_data(sid, view)
            except P2PError as exc:
                self._lose(exc)
                return
            self.bytes_sent += sent
            self._out_bytes -= sent
            if sent < len(view):
                out[0] = view[sent:]
                break
            out.popleft()
        if not out and self._closing:
            self._send_fin()
        self._watch_connection()
        self._maybe_resume()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.close()

    def _send_fin(self) -> None:
        if self._eof_out or self._lost:
            return
        self._eof_out = True
        self._stream.close_write()
        if self._eof_in:
            self._lose(None)

    def get_write_buffer_size(self) -> int:
        return self._out_bytes

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = DEFAULT_HIGH_WATER_BYTES if high is None else high
        self._low = self._high // 4 if low is None else low
        self._maybe_resume()

    def abort(self) -> None:
        """Reset the stream; the protocol sees ``connection_lost`` soon after."""
        if self._lost:
            return
        self._lose(None, soon=True)
        self._stream.reset()

    # -- teardown -------------------------------------------------------------------------

    def _lose(self, error: P2PError | None, *, soon: bool = False) -> None:
        if self._lost:
            return
        self._lost = True
        self._out.clear()
        self._out_bytes = 0
        self._pending.clear()
        if self._conn_drain is not None and not self._conn_drain.done():
            self._conn_drain.remove_done_callback(self._conn_drained)
            self._conn_drain = None
        if soon:
            self._loop.call_soon(self._notify_lost, error)
        else:
            self._notify_lost(error)

    def _notify_lost(self, error: P2PError | None) -> None:
        protocol = self._protocol
        if error is not None and isinstance(protocol, Connection):
            # Keep our error class (e.g. a relay limit) instead of a generic "lost" wrapper.
            protocol._terminate(error, transport_gone=True)
        protocol.connection_lost(error)

    def __repr__(self) -> str:
        return f"<StreamTransport over {self._stream!r}>"
