"""A key-value client: runs the operations given on the command line, one reply a line.

    python examples/kv_store/client.py SERVER_MULTIADDR [--key FILE] \\
        put fruit apple  get fruit  range a z  delete fruit

``range START END`` prints one line per entry, as the server streams them.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import msgspec
from kv_types import Delete, Get, Put, Range, Request, kv_network, range_protocol

from aiop2p import FirewallRules, KeyPair, RequestError


def parse(words: list[str]) -> list[Request | Range]:
    """``get KEY``, ``put KEY VALUE``, ``delete KEY``, ``range START END``, as many as given."""
    requests: list[Request | Range] = []
    while words:
        match words:
            case ["get", key, *words]:
                requests.append(Get(key))
            case ["put", key, value, *words]:
                requests.append(Put(key, value))
            case ["delete", key, *words]:
                requests.append(Delete(key))
            case ["range", start, end, *words]:
                requests.append(Range(start, end))
            case _:
                raise SystemExit(f"expected get, put, delete or range: {words}")
    return requests


async def main(server: str, requests: list[Request | Range], key: Path | None) -> list[str]:
    """Send each request in turn; return (and print) one line per reply, entry or refusal."""
    keys = KeyPair.load_or_generate(key) if key else KeyPair.generate()
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    async with kv_network(keys, firewall=FirewallRules.allow_none()) as net:
        ranges = range_protocol(net)
        for request in requests:
            try:
                if isinstance(request, Range):
                    async for entry in ranges.request_stream(server, request, timeout=10.0):
                        say(msgspec.json.encode(entry).decode())
                else:
                    reply = await net.send_request(server, request, timeout=10.0)
                    say(msgspec.json.encode(reply).decode())
            except RequestError as exc:
                say(f"refused: {exc}")
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="talk to the key-value store")
    parser.add_argument("server", help="the server's address (its circuit address)")
    parser.add_argument(
        "words", nargs="+", help="get KEY | put KEY VALUE | delete KEY | range START END ..."
    )
    parser.add_argument("--key", type=Path, help="our identity (created if missing)")
    args = parser.parse_args()
    asyncio.run(main(args.server, parse(args.words), args.key))
