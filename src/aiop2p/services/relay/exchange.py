"""One hop or stop exchange: write what the machine queued, read until it has an event."""

from __future__ import annotations

from typing import Final

from ..._aio.stream import Stream
from ...errors import RelayError
from ...protocols.relay_v2 import (
    HopClient,
    HopServer,
    RelayEvent,
    StopClient,
    StopServer,
)

__all__ = ["exchange"]

_READ_CHUNK_BYTES: Final = 64 * 1024


async def exchange(
    stream: Stream, machine: HopClient | HopServer | StopClient | StopServer
) -> RelayEvent:
    """Write what the machine queued, then read until it emits an event."""
    while True:
        out = machine.data_to_send()
        if out:
            await stream.write(out)
        events = machine.events_received()
        if events:
            return events[0]
        data = await stream.read(_READ_CHUNK_BYTES)
        if data:
            machine.receive_data(data)
        else:
            machine.receive_eof()
            events = machine.events_received()
            if events:
                return events[0]
            raise RelayError("relay stream ended before the exchange completed")
