"""The receive path's cost per 1200 B packet, in memory: what a download from js-libp2p
(quinn: 1200 B datagrams, GSO bursts of ~10 read with UDP GRO) costs us per packet,
without sockets, the js peer or the machine's load in the figure.

Two QUIC machines shake hands in memory; the sender (1200 B datagrams, its congestion
window opened wide) builds ``--mib`` MiB of one stream's data up front; then
the receiving :class:`~aiop2p._aio.quic_transport.QuicEndpoint` takes them as GRO reads
of ``--burst`` datagrams each (``_receive_segments``: the routing, the connection's
receive and the QUIC machine, down to a stream reader that only buffers), and the CPU
time of those calls alone is reported per packet and per MiB (``time.process_time_ns``;
best of ``--repeat``).  Runs against any checkout whose endpoint has
``_receive_segments`` (``PYTHONPATH=<checkout>/src``).

``--receive 0`` builds the packets and takes none: under cachegrind, the difference of
the instruction counts of a run with and one without the receive is its cost, robust
under load::

    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \\
        .venv/bin/python bench/quic_recv_cost.py --mib 4 [--receive 0]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import time
from typing import Any

from aioquic._buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import pull_quic_header

from aiop2p._aio.connection import _Stage
from aiop2p._aio.quic_adapter import LibP2PQuic
from aiop2p._aio.quic_connection import ALPN, QuicConfig, QuicConnection, _certificate_for
from aiop2p._aio.quic_transport import QuicEndpoint
from aiop2p.identity import KeyPair

MIB = 1 << 20
ADDR = ("127.0.0.1", 4001)
WINDOW = 1 << 30


def machine(*, is_client: bool, odcid: bytes | None = None) -> LibP2PQuic:
    cert, key = _certificate_for(KeyPair.generate())
    return LibP2PQuic(
        configuration=QuicConfiguration(
            is_client=is_client,
            alpn_protocols=[ALPN],
            certificate=cert,
            private_key=key,
            verify_mode=ssl.CERT_NONE,
            max_stream_data=WINDOW,
            max_data=WINDOW,
            max_datagram_size=1200,
        ),
        original_destination_connection_id=odcid,
        stream_window_bytes=WINDOW,
        connection_window_bytes=WINDOW,
        max_streams=8,
    )


def handshake() -> tuple[LibP2PQuic, LibP2PQuic]:
    client = machine(is_client=True)
    client.connect(ADDR, now=0.0)
    server: LibP2PQuic | None = None
    for step in range(20):
        now = step * 0.001
        for data, _ in client.datagrams_to_send(now=now):
            if server is None:
                header = pull_quic_header(Buffer(data=data), host_cid_length=8)
                server = machine(is_client=False, odcid=header.destination_cid)
            server.receive_datagram(data, ADDR, now=now)
        assert server is not None
        for data, _ in server.datagrams_to_send(now=now):
            client.receive_datagram(data, ADDR, now=now)
    assert server is not None and client._handshake_complete
    while server.next_event() is not None:
        pass
    return client, server


def packets(client: LibP2PQuic, size: int) -> list[bytes]:
    """The sender's 1200 B packets carrying ``size`` bytes of stream 0, in order."""
    client._loss._cc.congestion_window = 1 << 40
    sid = client.get_next_available_stream_id()
    client.write(sid, bytes(size))
    out: list[bytes] = []
    now = 1.0
    while not client._streams[sid].sender.buffer_is_empty:
        out += [data for data, _ in client.datagrams_to_send(now=now)]
        now += 0.001
    return out


class Reader:
    """A stream whose reader only buffers (the perf reader between its reads)."""

    def __init__(self) -> None:
        self.received = 0

    def _feed_buffered(self, data: bytes) -> bool:
        self.received += len(data)
        return True

    def _feed_chunks(self, chunks: list[bytes], size: int) -> None:
        self.received += size


def receiving_connection(
    server: LibP2PQuic, endpoint: QuicEndpoint, reader: Reader
) -> QuicConnection:
    """A :class:`QuicConnection` with only what its receive path reads (no node)."""
    conn = object.__new__(QuicConnection)
    conn.loop = asyncio.new_event_loop()
    conn._quic = server
    conn._stage = _Stage.ESTABLISHED
    conn._opened = []
    conn._hold_transmit = False
    conn._streams = {0: reader}  # type: ignore[dict-item]
    server.stream_readers = conn._streams
    endpoint.add_cid(server.host_cid, conn)
    return conn


def run(mib: float, burst: int, receive: bool) -> tuple[int, int, int]:
    """CPU ns of the receive, packets, bytes read."""
    client, server = handshake()
    datagrams = packets(client, int(mib * MIB))
    endpoint = QuicEndpoint(QuicConfig(), on_empty=lambda _: None)
    reader = Reader()
    conn = receiving_connection(server, endpoint, reader)
    reads = []
    for start in range(0, len(datagrams), burst):
        group = datagrams[start : start + burst]
        reads.append((b"".join(group), len(group[0])))
    touched: list[Any] = []
    spent = 0
    if receive:
        receive_segments = endpoint._receive_segments
        clock = time.process_time_ns
        for data, segment in reads:
            started = clock()
            receive_segments(data, segment, ADDR, touched)
            spent += clock() - started
            touched.clear()
    assert not receive or reader.received == int(mib * MIB), reader.received
    conn.loop.close()
    return spent, len(datagrams), reader.received


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=float, default=16)
    parser.add_argument("--burst", type=int, default=10, help="datagrams per GRO read (10)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--receive", type=int, default=1, help="0: build the packets only")
    args = parser.parse_args(argv)
    best = None
    for _ in range(args.repeat if args.receive else 1):
        spent, count, _ = run(args.mib, args.burst, bool(args.receive))
        best = spent if best is None else min(best, spent)
    assert best is not None
    if args.receive:
        print(
            f"{count} packets of 1200 B in reads of {args.burst}: "
            f"{best / count / 1000:.2f} us per packet, {best / args.mib / 1e6:.2f} ms per MiB "
            f"(best of {args.repeat})"
        )


if __name__ == "__main__":
    main()
