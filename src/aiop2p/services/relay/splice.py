"""The server side of one circuit: the hop and stop streams spliced together
(backpressure both ways, per-direction byte counts, data limit, duration timer)."""

from __future__ import annotations

import asyncio

from ..._aio.stream import Stream
from ..._aio.stream_transport import StreamTransport
from ...identity import PeerId

__all__ = ["Circuit"]


class _Half(asyncio.Protocol):
    """One side of a spliced circuit: what it receives goes to the other side."""

    __slots__ = ("circuit", "index", "received")

    def __init__(self, circuit: Circuit, index: int) -> None:
        self.circuit = circuit
        self.index = index
        self.received = 0

    def data_received(self, data: bytes) -> None:
        self.circuit.forward(self, data)

    def eof_received(self) -> bool:
        self.circuit.half_eof(self)
        return True

    def pause_writing(self) -> None:
        self.circuit.transports[1 - self.index].pause_reading()

    def resume_writing(self) -> None:
        self.circuit.transports[1 - self.index].resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.circuit.side_lost(self, exc)


class Circuit:
    """Two streams spliced: source (hop) <-> target (stop)."""

    def __init__(self, source: PeerId, target: PeerId, data_limit: int | None) -> None:
        self.source = source
        self.target = target
        self.data_limit = data_limit
        self.halves = (_Half(self, 0), _Half(self, 1))
        self.transports: list[StreamTransport] = []
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.timer: asyncio.TimerHandle | None = None
        self.eofs = 0

    def start(
        self,
        hop: Stream,
        stop: Stream,
        from_source: bytes,
        from_target: bytes,
        duration: float | None,
        high_water_bytes: int,
    ) -> None:
        self.transports = [
            StreamTransport(hop, self.halves[0], high_water_bytes=high_water_bytes),
            StreamTransport(stop, self.halves[1], high_water_bytes=high_water_bytes),
        ]
        if from_source:
            self.forward(self.halves[0], from_source)
        if from_target:
            self.forward(self.halves[1], from_target)
        if duration:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(duration, self.end, "duration limit reached")

    def forward(self, half: _Half, data: bytes) -> None:
        if self.done.done():
            return
        limit = self.data_limit
        if limit is not None and half.received + len(data) > limit:
            allowed = limit - half.received
            half.received = limit
            if allowed > 0:
                self.transports[1 - half.index].write(data[:allowed])
            self.end("data limit reached")
            return
        half.received += len(data)
        self.transports[1 - half.index].write(data)

    def half_eof(self, half: _Half) -> None:
        self.transports[1 - half.index].write_eof()
        self.eofs += 1

    def side_lost(self, half: _Half, exc: Exception | None) -> None:
        if exc is None and self.eofs >= 2:
            other = self.transports[1 - half.index]
            if other.is_closing():
                self.end("closed")
            return
        self.end("reset" if exc is not None else "closed")

    def end(self, reason: str) -> None:
        if self.done.done():
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for transport in self.transports:
            transport.abort()
        self.done.set_result(reason)
