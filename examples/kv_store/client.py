"""A key-value client: runs the operations given on the command line, one reply a line.

    python examples/kv_store/client.py SERVER_MULTIADDR [--key FILE] \\
        put fruit apple  get fruit  delete fruit
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import msgspec
from kv_types import Delete, Get, Put, Request, kv_network

from aiop2p import FirewallRules, KeyPair, RequestError


def parse(words: list[str]) -> list[Request]:
    """``get KEY``, ``put KEY VALUE``, ``delete KEY``, as many as given."""
    requests: list[Request] = []
    while words:
        match words:
            case ["get", key, *words]:
                requests.append(Get(key))
            case ["put", key, value, *words]:
                requests.append(Put(key, value))
            case ["delete", key, *words]:
                requests.append(Delete(key))
            case _:
                raise SystemExit(f"expected get KEY, put KEY VALUE or delete KEY: {words}")
    return requests


async def main(server: str, requests: list[Request], key: Path | None) -> list[str]:
    """Send each request in turn; return (and print) one line per reply or refusal."""
    keys = KeyPair.load_or_generate(key) if key else KeyPair.generate()
    lines: list[str] = []
    async with kv_network(keys, firewall=FirewallRules.allow_none()) as net:
        for request in requests:
            try:
                reply = await net.send_request(server, request, timeout=10.0)
                line = msgspec.json.encode(reply).decode()
            except RequestError as exc:
                line = f"refused: {exc}"
            print(line, flush=True)
            lines.append(line)
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="talk to the key-value store")
    parser.add_argument("server", help="the server's address (its circuit address)")
    parser.add_argument("words", nargs="+", help="get KEY | put KEY VALUE | delete KEY ...")
    parser.add_argument("--key", type=Path, help="our identity (created if missing)")
    args = parser.parse_args()
    asyncio.run(main(args.server, parse(args.words), args.key))
