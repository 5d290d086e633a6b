"""py-libp2p 0.8.1 peer process driven over JSON lines, for aiop2p interop tests.

Runs in its own virtualenv (``.venv-pylibp2p``, see README.md) because it needs trio and
py-libp2p, which aiop2p itself never imports.  The host offers only Noise (no plaintext, no
SECIO) and Yamux (Mplex kept as a fallback muxer), serves ping, identify and a framed echo on
``/p2p/1.0.0``, prints one ``ready`` line, then answers commands read from stdin.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import secrets
import sys
import time
from typing import Any

import multiaddr
import trio
from libp2p import create_yamux_muxer_option, new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.identity.identify.identify import ID as IDENTIFY_ID
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID as PeerID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

log = logging.getLogger("interop.pypeer")

PING_ID = TProtocol("/ipfs/ping/1.0.0")
ECHO_ID = TProtocol("/p2p/1.0.0")
PING_PAYLOAD_BYTES = 32
MAX_MESSAGE_BYTES = 1 << 20  # echo request/response limit (1 MiB)
MAX_IDENTIFY_BYTES = 1 << 16  # identify messages are small; bound the read anyway
MAX_COMMAND_LINE_BYTES = 8 << 20  # one JSON command line (base64 of <= 1 MiB fits easily)
COMMAND_TIMEOUT_S = 30.0
SHUTDOWN_GRACE_S = 2.0


# --------------------------------------------------------------------------- stream helpers


async def read_exactly(stream: INetStream, n: int) -> bytes:
    """Read exactly ``n`` bytes: py-libp2p's ``read(n)`` may return fewer."""
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = await stream.read(n - len(buf))
        except StreamEOF:
            chunk = b""
        if not chunk:
            raise EOFError(f"stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


async def read_uvarint(stream: INetStream) -> int:
    """Read one unsigned varint (at most 9 bytes, per the multiformats spec)."""
    value = 0
    for shift in range(0, 63, 7):
        byte = (await read_exactly(stream, 1))[0]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
    raise ValueError("varint too long")


def encode_uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


async def read_framed(stream: INetStream, max_bytes: int) -> bytes:
    """Read one uvarint-length-prefixed message, refusing lengths above ``max_bytes``."""
    length = await read_uvarint(stream)
    if length > max_bytes:
        raise ValueError(f"message of {length} bytes exceeds limit {max_bytes}")
    return await read_exactly(stream, length) if length else b""


async def write_framed(stream: INetStream, data: bytes) -> None:
    await stream.write(encode_uvarint(len(data)) + data)


async def read_to_eof(stream: INetStream, max_bytes: int) -> bytes:
    buf = bytearray()
    while True:
        try:
            chunk = await stream.read(max_bytes + 1 - len(buf))
        except StreamEOF:
            break
        if not chunk:
            break
        buf += chunk
        if len(buf) > max_bytes:
            raise ValueError(f"more than {max_bytes} bytes before EOF")
    return bytes(buf)


# --------------------------------------------------------------------------- handlers


async def echo_handler(stream: INetStream) -> None:
    """Serve ``/p2p/1.0.0``: one framed request, the same bytes back framed, then close."""
    try:
        data = await read_framed(stream, MAX_MESSAGE_BYTES)
        await write_framed(stream, data)
        await stream.close()
    except Exception as exc:  # a misbehaving remote must not kill the peer
        log.warning("echo handler failed: %r", exc)
        with contextlib.suppress(Exception):
            await stream.reset()


# --------------------------------------------------------------------------- commands


async def connect(host: IHost, addr: str) -> PeerID:
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    await host.connect(info)
    return info.peer_id


async def cmd_ping(host: IHost, req: dict[str, Any]) -> dict[str, Any]:
    peer_id = await connect(host, req["addr"])
    stream = await host.new_stream(peer_id, [PING_ID])
    try:
        payload = secrets.token_bytes(PING_PAYLOAD_BYTES)
        start = time.perf_counter()
        await stream.write(payload)
        pong = await read_exactly(stream, PING_PAYLOAD_BYTES)
        rtt_ms = (time.perf_counter() - start) * 1000.0
        if pong != payload:
            raise ValueError("ping payload mismatch")
    finally:
        await stream.close()
    return {"rtt_ms": rtt_ms}


async def cmd_echo(host: IHost, req: dict[str, Any]) -> dict[str, Any]:
    data = base64.b64decode(req["data_b64"], validate=True)
    peer_id = await connect(host, req["addr"])
    stream = await host.new_stream(peer_id, [ECHO_ID])
    try:
        await write_framed(stream, data)
        reply = await read_framed(stream, MAX_MESSAGE_BYTES)
    finally:
        await stream.close()
    return {"data_b64": base64.b64encode(reply).decode("ascii")}


def _ma_str(raw: bytes) -> str:
    try:
        return str(multiaddr.Multiaddr(raw))
    except Exception:
        return "0x" + raw.hex()


async def cmd_identify(host: IHost, req: dict[str, Any]) -> dict[str, Any]:
    peer_id = await connect(host, req["addr"])
    stream = await host.new_stream(peer_id, [IDENTIFY_ID])
    try:
        raw = await read_to_eof(stream, MAX_IDENTIFY_BYTES)
    finally:
        await stream.close()
    # Spec: one uvarint-length-prefixed Identify protobuf, then the responder closes.
    length, pos = 0, 0
    for shift in range(0, 63, 7):
        if pos >= len(raw):
            raise ValueError("truncated identify length prefix")
        byte = raw[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
    if pos + length > len(raw):
        raise ValueError(f"identify message truncated ({len(raw) - pos} of {length} bytes)")
    msg = Identify()
    msg.ParseFromString(raw[pos : pos + length])
    remote_id = None
    if msg.public_key:
        remote_id = str(PeerID.from_pubkey(deserialize_public_key(msg.public_key)))
    return {
        "peerId": remote_id,
        "protocols": list(msg.protocols),
        "listenAddrs": [_ma_str(a) for a in msg.listen_addrs],
        "agentVersion": msg.agent_version,
        "protocolVersion": msg.protocol_version,
        "observedAddr": _ma_str(msg.observed_addr) if msg.observed_addr else None,
    }


COMMANDS = {"ping": cmd_ping, "echo": cmd_echo, "identify": cmd_identify}


def emit(obj: dict[str, Any]) -> None:
    """Write one JSON line to stdout; trio is single-threaded so lines never interleave."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def run_command(host: IHost, req: dict[str, Any]) -> None:
    req_id = req.get("id")
    handler = COMMANDS.get(req.get("cmd", ""))
    if handler is None:
        emit({"id": req_id, "ok": False, "error": f"unknown command {req.get('cmd')!r}"})
        return
    try:
        with trio.fail_after(COMMAND_TIMEOUT_S):
            result = await handler(host, req)
    except Exception as exc:  # includes trio.TooSlowError and ExceptionGroups of errors
        log.info("command %r failed", req, exc_info=True)
        emit({"id": req_id, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    emit({"id": req_id, "ok": True, **result})


async def command_loop(host: IHost) -> None:
    """Read JSON lines from stdin until ``quit`` or EOF; run each command concurrently."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buf = bytearray()
    async with trio.open_nursery() as nursery:
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > MAX_COMMAND_LINE_BYTES:
                    raise ValueError("command line too long")
                chunk = await stdin.receive_some(65536)
                if not chunk:
                    break
                buf += chunk
                continue
            line = bytes(buf[:nl]).strip()
            del buf[: nl + 1]
            if not line:
                continue
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("command must be a JSON object")
            except ValueError as exc:
                emit({"id": None, "ok": False, "error": f"bad command line: {exc}"})
                continue
            if req.get("cmd") == "quit":
                if "id" in req:
                    emit({"id": req["id"], "ok": True})
                break
            nursery.start_soon(run_command, host, req)
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- main


def build_host(seed_hex: str | None, listen_addrs: list[multiaddr.Multiaddr]) -> IHost:
    seed = bytes.fromhex(seed_hex) if seed_hex else None
    if seed is not None and len(seed) != 32:
        raise SystemExit("--seed must be 32 bytes of hex")
    key_pair = create_new_key_pair(seed)
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        # Noise only: py-libp2p's default would also offer TLS, SECIO and plaintext.
        sec_opt={NOISE_PROTOCOL_ID: noise},
        # Yamux first, Mplex as a fallback (py-libp2p's own yamux option).
        muxer_opt=create_yamux_muxer_option(),
        # With the default (3) every dial waits the 250 ms happy-eyeballs delay.
        connection_config=ConnectionConfig(max_connections_per_peer=1),
        # Transports (TCP, WS) are chosen from the listen addresses.
        listen_addrs=listen_addrs,
    )


async def amain(listen: list[str], seed_hex: str | None) -> None:
    listen_addrs = [multiaddr.Multiaddr(a) for a in listen]
    host = build_host(seed_hex, listen_addrs)
    host.set_stream_handler(ECHO_ID, echo_handler)
    async with host.run(listen_addrs=listen_addrs):
        emit(
            {
                "event": "ready",
                "peerId": str(host.get_id()),
                "addrs": [str(a) for a in host.get_addrs()],
            }
        )
        await command_loop(host)
        # py-libp2p's teardown can linger on open connections: bound it.
        with trio.move_on_after(SHUTDOWN_GRACE_S):
            await host.get_network().close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", action="append", default=[], metavar="MULTIADDR")
    parser.add_argument("--seed", default=None, metavar="HEX32")
    parser.add_argument("--log-level", default=os.environ.get("PYPEER_LOG", "WARNING"))
    args = parser.parse_args()
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s pypeer %(levelname)s %(name)s: %(message)s",
    )
    trio.run(amain, args.listen or ["/ip4/127.0.0.1/tcp/0"], args.seed)
    sys.stdout.flush()
    # Skip interpreter teardown: lingering py-libp2p system tasks must not delay exit.
    os._exit(0)


if __name__ == "__main__":
    main()
