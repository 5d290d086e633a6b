"""A typed key-value store: requests are msgspec Structs, routed by type with ``match``.

    pip install 'aiop2p[typed]'
    python examples/typed_kv.py

Two peers in one process, mDNS off. The client puts, gets and lists keys; a third peer
that does not use the codec sends a request of the wrong shape, which the store rejects
as an invalid request without its handler ever seeing it.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec

from aiop2p import (
    FirewallRules,
    InboundFailure,
    InboundRequestFailed,
    Network,
    RawCodec,
    RequestRefusedError,
    TypedCodec,
)

Key = Annotated[str, msgspec.Meta(max_length=64)]


class Get(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    key: Key


class Put(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    key: Key
    value: Any


class Keys(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    prefix: str = ""


Request = Get | Put | Keys


class Reply(msgspec.Struct):
    ok: bool
    value: Any = None
    keys: list[str] = msgspec.field(default_factory=list)


def answer(store: dict[str, Any], request: Request) -> Reply:
    """The whole application: one ``match`` on the type of the request."""
    match request:
        case Get(key=key):
            return Reply(key in store, store.get(key))
        case Put(key=key, value=value):
            store[key] = value
            return Reply(True)
        case Keys(prefix=prefix):
            return Reply(True, keys=sorted(k for k in store if k.startswith(prefix)))


def typed_network() -> Network[Request, Reply]:
    return Network(firewall=FirewallRules.allow_all(), codec=TypedCodec(Request, Reply), mdns=None)


async def serve(net: Network[Request, Reply]) -> None:
    store: dict[str, Any] = {}
    async for request in net.requests():
        await request.respond(answer(store, request.request))


async def main() -> list[Reply]:
    """Run the session; return the client's replies."""
    async with typed_network() as server, typed_network() as client:
        addr = await server.start_listening("/ip4/127.0.0.1/tcp/0")
        client.add_address(server.peer_id, addr)
        serving = asyncio.create_task(serve(server))
        session: list[Request] = [Put("fruit:apple", 3), Put("fruit:fig", 5)]
        session += [Get("fruit:fig"), Keys("fruit:")]
        replies: list[Reply] = []
        for request in session:
            reply = await client.send_request(server.peer_id, request)
            print(f"{request!r} -> {reply!r}", flush=True)
            replies.append(reply)

        bytes_only: Network[bytes, bytes] = Network(
            firewall=FirewallRules.allow_none(), codec=RawCodec(), mdns=None
        )
        async with bytes_only as raw:
            raw.add_address(server.peer_id, addr)
            try:
                await raw.send_request(server.peer_id, b'{"type":"Get","key":42}')
            except RequestRefusedError:
                print("wrong shape -> refused", flush=True)
            async with asyncio.timeout(5):
                async for event in server.events():
                    if isinstance(event, InboundRequestFailed):
                        assert event.failure is InboundFailure.INVALID_REQUEST
                        print(f"server: {event.failure.value}", flush=True)
                        break
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        return replies


if __name__ == "__main__":
    asyncio.run(main())
