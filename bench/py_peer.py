"""The py-libp2p 0.8.1 benchmark peer: ``tests/interop/py/peer.py``'s host plus the bench commands.

``bench/run.py`` runs it as the ``py`` implementation in ``.venv-pylibp2p`` (trio and
py-libp2p live there, never in aiop2p's venv).  The host is the interop peer's (TCP, Noise,
Yamux, echo on ``/p2p/1.0.0``) with a ``/perf/1.0.0`` handler added; the commands and their
timing points are those of ``bench/aiop2p_peer.py``:

- ``bench_dial``: ``host.connect`` timed, then ``host.disconnect`` (the interop host keeps
  one connection per peer, so each dial is a fresh TCP + Noise + Yamux connection).
- ``bench_echo``: a new stream per request, uvarint-framed message, read the echo, close.
- ``perf``: perf's wire format (8-byte download size, upload, close, download), written by
  this file on both sides.

``bench_conns`` (memory per idle connection) is absent: the interop host holds one connection
per peer.

    .venv-pylibp2p/bin/python bench/py_peer.py [--listen MULTIADDR]...
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "interop" / "py"))
import peer as interop  # the interop peer: host, echo handler, framing

PERF_ID = TProtocol("/perf/1.0.0")
PERF_WRITE_CHUNK_BYTES = 256 * 1024
PERF_READ_CHUNK_BYTES = 1024 * 1024
MAX_PERF_BYTES = 1 << 40
MAX_BENCH_COUNT = 1_000_000
MAX_CONCURRENCY = 4096
MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_ECHO_WARMUP_REQUESTS = 2000
DEFAULT_DIAL_WARMUP_DIALS = 20
DEFAULT_PERF_WARMUP_BYTES = 128 * 1024 * 1024
COMMAND_TIMEOUT_S = 600.0
_PAGE_SIZE_BYTES = os.sysconf("SC_PAGE_SIZE")
_ZEROS = bytes(PERF_WRITE_CHUNK_BYTES)

log = logging.getLogger("bench.pypeer")


class CommandError(Exception):
    pass


def quantile(ordered: list[float], q: float) -> float | None:
    """Linear-interpolation quantile, as in ``bench/aiop2p_peer.py``."""
    if not ordered:
        return None
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def to_int(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CommandError(f"{name} must be an integer in [{lo}, {hi}], got {json.dumps(value)}")
    return value


async def perf_handler(stream: Any) -> None:
    """perf server: the 8-byte download size, drain the upload to EOF, send, close."""
    try:
        download = struct.unpack(">Q", await interop.read_exactly(stream, 8))[0]
        if download > MAX_PERF_BYTES:
            raise ValueError(f"perf download of {download} bytes")
        while True:
            try:
                chunk = await stream.read(PERF_READ_CHUNK_BYTES)
            except interop.StreamEOF:
                break
            if not chunk:
                break
        remaining = download
        while remaining > 0:
            size = min(remaining, PERF_WRITE_CHUNK_BYTES)
            await stream.write(_ZEROS[:size])
            remaining -= size
        await stream.close()
    except Exception as exc:
        log.warning("perf handler failed: %r", exc)
        await stream.reset()


class Bench:
    def __init__(self, host: Any) -> None:
        self.host = host

    async def echo_once(self, peer_id: Any, payload: bytes) -> bytes:
        stream = await self.host.new_stream(peer_id, [interop.ECHO_ID])
        try:
            await interop.write_framed(stream, payload)
            reply = await interop.read_framed(stream, MAX_MESSAGE_BYTES)
            await stream.close()
        except BaseException:
            await stream.reset()
            raise
        return reply

    async def bench_dial(self, cmd: dict[str, Any]) -> dict[str, Any]:
        count = to_int(cmd.get("count", 50), "count", 1, MAX_BENCH_COUNT)
        warmup = to_int(cmd.get("warmup", DEFAULT_DIAL_WARMUP_DIALS), "warmup", 0, MAX_BENCH_COUNT)
        info = info_from_p2p_addr(multiaddr.Multiaddr(cmd["addr"]))
        host = self.host
        await host.disconnect(info.peer_id)
        for _ in range(warmup):
            await host.connect(info)
            await host.disconnect(info.peer_id)
        samples = []
        gc.collect()
        for _ in range(count):
            t0 = time.perf_counter()
            await host.connect(info)
            samples.append((time.perf_counter() - t0) * 1000)
            await host.disconnect(info.peer_id)
        ordered = sorted(samples)
        return {
            "median_ms": quantile(ordered, 0.5),
            "p90_ms": quantile(ordered, 0.9),
            "samples_ms": samples,
            "warmup": warmup,
        }

    async def bench_echo(self, cmd: dict[str, Any]) -> dict[str, Any]:
        count = to_int(cmd.get("count", 1000), "count", 1, MAX_BENCH_COUNT)
        concurrency = to_int(cmd.get("concurrency", 1), "concurrency", 1, MAX_CONCURRENCY)
        size = to_int(cmd.get("size", 64), "size", 0, MAX_MESSAGE_BYTES)
        warmup = to_int(
            cmd.get("warmup", DEFAULT_ECHO_WARMUP_REQUESTS), "warmup", 0, MAX_BENCH_COUNT
        )
        payload = bytes(i & 0xFF for i in range(size))
        peer_id = await interop.connect(self.host, cmd["addr"])
        latencies = [0.0] * count

        async def run(total: int, record: bool) -> None:
            next_index = 0

            async def worker() -> None:
                nonlocal next_index
                while next_index < total:
                    index = next_index
                    next_index += 1
                    t0 = time.perf_counter()
                    reply = await self.echo_once(peer_id, payload)
                    if record:
                        latencies[index] = (time.perf_counter() - t0) * 1000
                    if len(reply) != size:
                        raise CommandError(f"echo of {len(reply)} bytes, sent {size}")

            async with trio.open_nursery() as nursery:
                for _ in range(min(concurrency, total)):
                    nursery.start_soon(worker)

        await run(warmup, False)
        gc.collect()
        start = time.perf_counter()
        await run(count, True)
        total_s = time.perf_counter() - start
        latencies.sort()
        return {
            "p50_ms": quantile(latencies, 0.5),
            "p99_ms": quantile(latencies, 0.99),
            "req_per_s": count / total_s,
            "total_s": total_s,
            "warmup": warmup,
            "relayed": False,
        }

    async def perf_client(self, peer_id: Any, upload: int, download: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        stream = await self.host.new_stream(peer_id, [PERF_ID])
        try:
            await stream.write(struct.pack(">Q", download))
            remaining = upload
            while remaining > 0:
                size = min(remaining, PERF_WRITE_CHUNK_BYTES)
                await stream.write(_ZEROS[:size])
                remaining -= size
            await stream.close()
            t1 = time.perf_counter()
            received = 0
            while True:
                try:
                    chunk = await stream.read(PERF_READ_CHUNK_BYTES)
                except interop.StreamEOF:
                    break
                if not chunk:
                    break
                received += len(chunk)
            t2 = time.perf_counter()
        except BaseException:
            await stream.reset()
            raise
        if received != download:
            raise CommandError(f"perf: expected {download} bytes, received {received}")
        total = t2 - t0
        return {
            "upload_seconds": total if download == 0 else t1 - t0,
            "download_seconds": total if upload == 0 else t2 - t1,
            "total_seconds": total,
            "upload_bytes": upload,
            "download_bytes": received,
        }

    async def perf(self, cmd: dict[str, Any]) -> dict[str, Any]:
        upload = to_int(cmd.get("upload", 0), "upload", 0, MAX_PERF_BYTES)
        download = to_int(cmd.get("download", 0), "download", 0, MAX_PERF_BYTES)
        warmup = to_int(
            cmd.get("warmup_bytes", DEFAULT_PERF_WARMUP_BYTES), "warmup_bytes", 0, MAX_PERF_BYTES
        )
        peer_id = await interop.connect(self.host, cmd["addr"])
        if warmup:
            await self.perf_client(peer_id, min(upload, warmup), min(download, warmup))
        return {**(await self.perf_client(peer_id, upload, download)), "warmup_bytes": warmup}

    async def rss(self, cmd: dict[str, Any]) -> dict[str, Any]:
        with open("/proc/self/statm", "rb") as f:  # noqa: ASYNC230 (procfs: never blocks)
            return {"rss": int(f.read().split()[1]) * _PAGE_SIZE_BYTES}


async def run_command(bench: Bench, req: dict[str, Any]) -> None:
    handler = {
        "bench_dial": bench.bench_dial,
        "bench_echo": bench.bench_echo,
        "perf": bench.perf,
        "rss": bench.rss,
    }.get(req.get("cmd", ""))
    if handler is None:
        interop.emit({"id": req.get("id"), "ok": False, "error": f"unknown command {req!r}"})
        return
    try:
        with trio.fail_after(COMMAND_TIMEOUT_S):
            result = await handler(req)
    except Exception as exc:
        log.info("command %r failed", req, exc_info=True)
        interop.emit({"id": req.get("id"), "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    interop.emit({"id": req.get("id"), "ok": True, **result})


async def amain(listen: list[str]) -> None:
    listen_addrs = [multiaddr.Multiaddr(a) for a in listen]
    host = interop.build_host(None, listen_addrs)
    host.set_stream_handler(interop.ECHO_ID, interop.echo_handler)
    host.set_stream_handler(PERF_ID, perf_handler)
    bench = Bench(host)
    interop.COMMANDS.clear()  # the interop command loop dispatches through run_command
    interop.run_command = lambda _host, req: run_command(bench, req)
    async with host.run(listen_addrs=listen_addrs):
        interop.emit(
            {
                "event": "ready",
                "peerId": str(host.get_id()),
                "addrs": [str(a) for a in host.get_addrs()],
            }
        )
        await interop.command_loop(host)
        with trio.move_on_after(interop.SHUTDOWN_GRACE_S):
            await host.get_network().close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--listen", action="append", default=[], metavar="MULTIADDR")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("PYPEER_LOG", "WARNING"))
    trio.run(amain, args.listen or ["/ip4/127.0.0.1/tcp/0"])
    sys.stdout.flush()
    os._exit(0)  # as the interop peer: lingering py-libp2p tasks must not delay exit


if __name__ == "__main__":
    main()
