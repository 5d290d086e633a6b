"""A Python peer for a web page: it listens where a browser can dial, serves the page, prints
the link to open, and answers every message (see README.md next to this file).

    python examples/browser/serve.py [--http-port 8000] [--bundle examples/browser/dist/page.js]

The page (``index.html`` + the esbuild bundle of ``page.js``) is served on
``http://127.0.0.1:<port>``; the peer listens on loopback WebTransport (its address carries
the hashes of its self-signed certificates: no domain, no certificate authority) and
WebSocket, and prints one link per address.  Every peer may send requests
(``FirewallRules.allow_all()``): a browser node has a new identity on each load.
"""

from __future__ import annotations

import argparse
import asyncio
from contextlib import suppress
from pathlib import Path
from typing import Any

from aiop2p import FirewallRules, Network

HERE = Path(__file__).resolve().parent
LISTEN = ["/ip4/127.0.0.1/udp/0/quic-v1/webtransport", "/ip4/127.0.0.1/tcp/0/ws"]
MAX_REQUEST_HEAD_BYTES = 16 * 1024
HTTP_TIMEOUT = 10.0


def page_handler(bundle: bytes) -> Any:
    """An HTTP handler serving ``/`` (index.html) and ``/page.js`` (the bundle), GET only."""
    files = {
        "/": ("text/html; charset=utf-8", (HERE / "index.html").read_bytes()),
        "/page.js": ("text/javascript", bundle),
    }

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HTTP_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            kind, body = files.get(target.split("?", 1)[0], ("text/plain", b""))
            status = "200 OK" if method == "GET" and body else "404 Not Found"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (ValueError, OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # a malformed or abandoned request: drop it
        finally:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()

    return handle


async def main(http_port: int, bundle: bytes) -> None:
    page = await asyncio.start_server(
        page_handler(bundle), "127.0.0.1", http_port, limit=MAX_REQUEST_HEAD_BYTES
    )
    port = page.sockets[0].getsockname()[1]
    net: Network[Any, Any] = Network(firewall=FirewallRules.allow_all(), mdns=None)
    async with page, net:
        for listen in LISTEN:
            addr = await net.start_listening(listen)
            full = addr.with_peer_id(net.peer_id)
            print(f"peer address: {full}")
            print(f"open http://127.0.0.1:{port}/#{full}", flush=True)
        async for request in net.requests():
            message = request.request
            text = message.get("text") if isinstance(message, dict) else None
            if not isinstance(text, str):
                await request.respond({"error": 'send {"text": "..."}'})
                continue
            print(f"[{request.peer}] {text}", flush=True)
            await request.respond({"reply": f"Python heard {len(text)} characters: {text!r}"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--bundle", type=Path, default=HERE / "dist" / "page.js")
    args = parser.parse_args()
    with suppress(KeyboardInterrupt):
        asyncio.run(main(args.http_port, args.bundle.read_bytes()))
