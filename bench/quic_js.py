"""aiop2p -> js-libp2p bulk over TCP and QUIC, with what bounds QUIC: one js peer
(``tests/interop/js/peer.mjs``) and an aiop2p node in this process, one connection per
transport; after a warm-up, a perf upload and a perf download, each:

- MiB/s, and CPU ms per MiB of this process (``time.process_time``) and of js
  (``/proc/<pid>/stat``);
- QUIC: datagrams we sent and received per MiB and their commonest size, packets
  aioquic declared lost, and the machine's UDP ``RcvbufErrors`` (``/proc/net/snmp``:
  datagrams a full receive buffer dropped, any process's).

    .venv/bin/python bench/quic_js.py [--mib N] [--warmup-mib N] [--repeat N]
                                      [--datagram-bytes N] [--only tcp|quic]

``--datagram-bytes`` sets ``QuicConfig.loopback_datagram_bytes``: up to 16384 it holds
from the handshake on; above, the peer's ``max_udp_payload_size`` (quinn: 1472) keeps the
handshake's 16384 (``LibP2PQuic.use_datagram_size``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import run
from aioquic.quic.recovery import QuicPacketRecovery

from aiop2p._aio.quic_connection import QuicConfig, QuicConnection, SockAddr
from aiop2p._aio.quic_transport import QuicEndpoint, QuicTransport
from aiop2p.node import Node
from aiop2p.transports.tcp import TcpTransport

MIB = run.MIB
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LISTEN = ("/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1")


class Counts:
    """Datagram sizes each way and packets declared lost, through spies on the endpoint,
    the connection and aioquic's loss recovery."""

    def __init__(self) -> None:
        self.sent: collections.Counter[int] = collections.Counter()
        self.received: collections.Counter[int] = collections.Counter()
        self.lost = 0

    def install(self) -> None:
        send, sendto = QuicEndpoint.send_datagrams, QuicEndpoint.sendto
        receive = QuicConnection.receive
        receive_run = QuicConnection.receive_run
        lost = QuicPacketRecovery._on_packets_lost

        # The endpoint's two ways out (each falls back to _send, not counted again).
        def spy_send(endpoint: QuicEndpoint, datagrams: Sequence[bytes], addr: SockAddr) -> None:
            self.sent.update(len(d) for d in datagrams)
            send(endpoint, datagrams, addr)

        def spy_sendto(endpoint: QuicEndpoint, data: bytes, addr: SockAddr) -> None:
            self.sent[len(data)] += 1
            sendto(endpoint, data, addr)

        def spy_receive(conn: QuicConnection, data: bytes, addr: SockAddr) -> bool:
            self.received[len(data)] += 1
            return receive(conn, data, addr)

        def spy_receive_run(
            conn: QuicConnection, segments: Sequence[bytes], start: int, addr: SockAddr
        ) -> int:
            end = receive_run(conn, segments, start, addr)
            self.received.update(len(d) for d in segments[start:end])
            return end

        def spy_lost(recovery: QuicPacketRecovery, **kwargs: Any) -> None:
            self.lost += len(kwargs.get("packets", ()))
            lost(recovery, **kwargs)

        setattr(QuicEndpoint, "send_datagrams", spy_send)  # noqa: B010 - a spy for the run
        setattr(QuicEndpoint, "sendto", spy_sendto)  # noqa: B010
        setattr(QuicConnection, "receive", spy_receive)  # noqa: B010
        setattr(QuicConnection, "receive_run", spy_receive_run)  # noqa: B010
        setattr(QuicPacketRecovery, "_on_packets_lost", spy_lost)  # noqa: B010

    def reset(self) -> None:
        self.sent.clear()
        self.received.clear()
        self.lost = 0


def rcvbuf_errors() -> int:
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    names, values = [line for line in lines if line[0] == "Udp:"][:2]
    return int(dict(zip(names[1:], values[1:], strict=True))["RcvbufErrors"])


def js_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def shown(counter: collections.Counter[int], mib: float) -> str:
    if not counter:
        return "-"
    size, _ = counter.most_common(1)[0]
    return f"{sum(counter.values()) / mib:.0f} ({size} B)"


async def figure(
    node: Node, addr: str, js_pid: int, counts: Counts, up: int, down: int, quic: bool
) -> str:
    """One perf exchange and its row."""
    counts.reset()
    errors, ours, theirs = rcvbuf_errors(), time.process_time(), js_cpu(js_pid)
    started = time.perf_counter()
    await node.perf(addr, upload=up, download=down)
    seconds = time.perf_counter() - started
    ours, theirs = time.process_time() - ours, js_cpu(js_pid) - theirs
    mib = (up + down) / MIB
    columns = "- | - | -"
    if quic:
        columns = (
            f"{shown(counts.sent, mib)}, {shown(counts.received, mib)} | "
            f"{counts.lost} | {rcvbuf_errors() - errors}"
        )
    cpu = f"{ours / mib * 1000:.2f} / {theirs / mib * 1000:.2f}"
    return f"{mib / seconds:.0f} | {cpu} | {columns}"


async def measure(args: argparse.Namespace, counts: Counts) -> None:
    setup = run.Setup()
    with tempfile.TemporaryDirectory() as log_dir:
        js = run.PeerProcess("js", "server", Path(log_dir), run.peer_launch("js", setup, LISTEN))
        await js.start()
        try:
            assert js.proc is not None
            print(
                "transport figure MiB/s | CPU ms/MiB ours / js | datagrams per MiB sent, "
                "received (commonest size) | lost | RcvbufErrors"
            )
            for transport in args.only:
                quic = transport == "quic"
                addr = next(a for a in js.addrs if ("/quic-v1" in a) == quic)
                config = QuicConfig(loopback_datagram_bytes=args.datagram_bytes)
                ours: list[Any] = [QuicTransport(config)] if quic else [TcpTransport()]
                async with Node(transports=ours) as node:
                    warm = args.warmup_mib * MIB
                    await node.perf(addr, upload=warm, download=warm)
                    size = args.mib * MIB
                    for _ in range(args.repeat):
                        for name, up, down in (("upload", size, 0), ("download", 0, size)):
                            row = await figure(node, addr, js.proc.pid, counts, up, down, quic)
                            print(f"{transport} {name} {row}", flush=True)
        finally:
            with contextlib.suppress(Exception):
                await js.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--warmup-mib", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--datagram-bytes", type=int, default=QuicConfig().loopback_datagram_bytes)
    parser.add_argument("--only", choices=("tcp", "quic"), action="append")
    args = parser.parse_args(argv)
    args.only = args.only or ["tcp", "quic"]
    counts = Counts()
    counts.install()
    asyncio.run(measure(args, counts))


if __name__ == "__main__":
    main()
