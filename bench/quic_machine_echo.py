"""The QUIC machines' own cost per small request, in memory and on a fixed clock: a
deterministic figure for the sequential echo's QUIC work (no sockets, no event loop,
no timers firing with the machine's load).

Two :class:`~aiop2p._aio.quic_adapter.LibP2PQuic` machines shake hands in memory
(``quic_recv_cost``'s machines); then each echo is what the QUIC connection asks of
them in ``bench/quic_calls.py``'s sequential echo: the client's FIN of the previous
stream and a new stream's request (a multistream header and 64 B) in one packet with
the ACK due, the server's events, its answer and FIN in one packet with its ACK, the
client's events, the credit read and the streams forgotten.  Under cachegrind the
difference of two runs is the instructions per echo, the same from run to run (the
full echo of ``quic_calls.py`` moves by several thousand with the timing)::

    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \\
        .venv/bin/python bench/quic_machine_echo.py --requests 1200   # minus 200

Runs against any checkout (``PYTHONPATH=<checkout>/src``); one without
``LibP2PQuic.write_fin`` writes the FIN as ``write(sid, b"", end_stream=True)``.
"""

from __future__ import annotations

import argparse
import sys

from aioquic.quic.events import StreamDataReceived
from quic_recv_cost import ADDR, handshake  # bench/ is on the path

from aiop2p._aio.quic_adapter import LibP2PQuic

REQUEST = b"\x13/multistream/1.0.0\n\x0b/p2p/1.0.0\n" + bytes(65)  # header, length, 64 B
SEND_LIMIT = 1 << 20


def fin(machine: LibP2PQuic, sid: int) -> None:
    if hasattr(machine, "write_fin"):
        machine.write_fin(sid)
    else:
        machine.write(sid, b"", end_stream=True)


def events(machine: LibP2PQuic) -> list[StreamDataReceived]:
    out = []
    while machine._events:
        event = machine._events.popleft()
        if type(event) is StreamDataReceived:
            out.append(event)
    return out


def echo(requests: int) -> None:
    client, server = handshake()
    client._events.clear()
    now = 1.0
    previous = -1
    for _ in range(requests):
        now += 0.0002
        sid = client.get_next_available_stream_id()
        if previous >= 0:
            fin(client, previous)
        client.write(sid, REQUEST, False, SEND_LIMIT)
        for data, _ in client.datagrams_to_send(now, True):  # with the ACK due
            server.receive_datagram(data, ADDR, now)
        client.get_timer()
        now += 0.0002
        for event in events(server):
            if event.data:
                server.consumed(event.stream_id, len(event.data))
                server.write(event.stream_id, event.data, False, SEND_LIMIT)
                fin(server, event.stream_id)
            if event.end_stream:
                server.forget(event.stream_id)
        for data, _ in server.datagrams_to_send(now, True):
            client.receive_datagram(data, ADDR, now)
        server.get_timer()
        for event in events(client):
            if event.data:
                client.consumed(event.stream_id, len(event.data))
            client.forget(event.stream_id)
        previous = sid
    if len(client._streams) > 2 or len(server._streams) > 2:
        raise RuntimeError("streams were not discarded")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000)
    echo(parser.parse_args(argv).requests)


if __name__ == "__main__":
    main(sys.argv[1:])
