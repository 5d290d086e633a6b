"""``aiop2p send``: one request (on ``/p2p/1.0.0`` unless ``--protocol``), its response
printed.  The request is the argument, or read from a file (``@FILE``) or stdin (``-``),
at most the request size limit.

Failures end with exit status 1 and one line saying why, in the seed's terms: rejected
(the remote closed the stream unanswered, or offers no request protocol to us — what its
firewall does), timed out, or unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from ..errors import (
    InvalidArgumentError,
    P2PError,
    RequestDialError,
    RequestError,
    RequestTimeoutError,
    ResponseOmittedError,
    UnsupportedProtocolsError,
)
from ..identity import KeyPair, PeerId
from ..multiaddr import Multiaddr
from ..network.codecs import CodecError, JsonCodec, RawCodec, json_loads
from ..network.config import DEFAULT_MAX_REQUEST_BYTES
from ._common import (
    Output,
    add_dht_arguments,
    add_protocol_argument,
    describe,
    dht_config,
    dialing_network,
    load_key,
    parse_target,
)

__all__ = ["cmd_send"]


def _reason(exc: RequestError, timeout: float, protocol: str) -> str:
    if isinstance(exc, ResponseOmittedError):
        return "rejected: the remote closed the stream without answering"
    if isinstance(exc, UnsupportedProtocolsError):
        return (
            f"rejected: the remote does not offer {protocol} to us"
            " (its firewall rejects us, or it serves no requests)"
        )
    if isinstance(exc, RequestTimeoutError):
        return f"timed out: no response within {timeout:g} s"
    if isinstance(exc, RequestDialError):
        cause = exc.__cause__
        return f"unreachable: {describe(cause) if cause is not None else describe(exc)}"
    return describe(exc)


async def cmd_send(args: argparse.Namespace, out: Output) -> int:
    target = parse_target(args.address, args.bootstrap)
    body = read_request(args.request, out.io.stdin)
    if args.raw:
        value: Any = body
    else:
        try:
            value = json_loads(body)
        except CodecError as exc:
            message = f"the request is not JSON ({exc}); use --raw to send text"
            out.error("send", message, type(exc).__name__)
            return 2
    key = load_key(args.key) if args.key else KeyPair.generate()
    timeout: float = args.timeout
    kad = dht_config(args.bootstrap, None, default_mode="client")
    codec = RawCodec() if args.raw else JsonCodec()
    net = dialing_network(key, codec=codec, timeout=timeout, kad=kad, protocol=args.protocol)
    async with net:
        peer = target if isinstance(target, PeerId) else target.peer_id
        try:
            # Any peer answering there: learn its id by dialling.  A circuit address is
            # dialled as given too: without a target its last /p2p is the relay's.  A
            # bare peer id is found through the DHT by the dialer.
            if isinstance(target, Multiaddr):
                if peer is None or target.is_circuit:
                    peer = (await net._node.dial(target)).remote_peer
                else:
                    net.add_address(peer, target.without_peer_id())
            assert peer is not None
            response = await net.send_request(peer, value)
        except RequestError as exc:
            out.error("send", _reason(exc, timeout, args.protocol), type(exc).__name__)
            return 1
        except P2PError as exc:  # dialling without a peer id
            out.error("send", f"unreachable: {describe(exc)}", type(exc).__name__)
            return 1
    _print_response(out, response, raw=args.raw, peer=str(peer))
    return 0


def read_request(arg: str, stdin: int) -> bytes:
    """The request's bytes: ``arg`` itself, the file ``@FILE`` names, or stdin for
    ``-``; more than ``DEFAULT_MAX_REQUEST_BYTES`` is refused before anything is sent."""
    if arg == "-":
        return _read_bounded(stdin, "stdin")
    if arg.startswith("@"):
        fd = os.open(arg[1:], os.O_RDONLY)
        try:
            return _read_bounded(fd, arg[1:])
        finally:
            os.close(fd)
    return arg.encode()


def _read_bounded(fd: int, name: str) -> bytes:
    limit = DEFAULT_MAX_REQUEST_BYTES
    chunks: list[bytes] = []
    size = 0
    while chunk := os.read(fd, min(1 << 16, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise InvalidArgumentError(
                f"the request in {name} is larger than the {limit}-byte request limit"
            )
    return b"".join(chunks)


def _print_response(out: Output, response: Any, *, raw: bool, peer: str) -> None:
    if not raw:
        out.emit(json.dumps(response, ensure_ascii=False), response=response, peer_id=peer)
        return
    data: bytes = response
    if out.as_json:
        try:
            out.emit("", response=data.decode(), peer_id=peer)
        except UnicodeDecodeError:
            out.emit("", response_hex=data.hex(), peer_id=peer)
        return
    stdout = out.io.stdout
    stdout.buffer.write(data)
    stdout.buffer.write(b"\n")
    stdout.flush()


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "send",
        parents=[common],
        help="send one request and print the response",
        description="Send one request and print the response. Exit status 1 with a "
        "one-line reason when rejected, timed out or unreachable.",
    )
    p.add_argument(
        "address",
        metavar="TARGET",
        help="where the peer is (a multiaddr, /p2p/<id> optional), or a bare peer id with "
        "--bootstrap (found through the DHT)",
    )
    add_dht_arguments(p)
    p.add_argument(
        "request",
        metavar="REQUEST",
        help="the request: a JSON value (any text with --raw), @FILE to read it from a "
        "file, - to read it from stdin",
    )
    add_protocol_argument(p)
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="seconds for the whole exchange",
    )
    p.add_argument(
        "--raw", action="store_true", help="send the text as bytes, print the response bytes"
    )
    p.add_argument("--key", metavar="FILE", help="key file to send as (default: a fresh identity)")
    p.set_defaults(run=cmd_send)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value
