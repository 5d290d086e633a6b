"""What the key-value store's peers say to each other: typed requests on ``/kv/1.0.0``.

Each request is a msgspec Struct with ``tag=True``: on the wire ``{"type": "Put",
"key": ..., "value": ...}``, decoded back into the class it names, so the server routes
with one ``match``.  A request of any other shape (an unknown type, a missing field, a
key too long) is rejected by the codec before the server's code sees it.

A :class:`Range` is answered by a stream of :class:`Entry` items, on a protocol of its
own, ``/kv/range/1.0.0``, with the chunked framing (one chunk per entry).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from aiop2p import Framing, KeyPair, Network, RequestProtocol, TypedCodec

PROTOCOL = "/kv/1.0.0"
RANGE_PROTOCOL = "/kv/range/1.0.0"

Key = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Value = Annotated[str, msgspec.Meta(max_length=4096)]


class Get(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    key: Key


class Put(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    key: Key
    value: Value


class Delete(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    key: Key


Request = Get | Put | Delete


class Reply(msgspec.Struct, forbid_unknown_fields=True):
    ok: bool
    value: Value | None = None
    error: str | None = None


class Range(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    """The first ``limit`` keys k with ``start <= k < end``, in order, with their values."""

    start: Annotated[str, msgspec.Meta(max_length=128)]
    end: Annotated[str, msgspec.Meta(max_length=128)]
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100  # under max_response_chunks


class Entry(msgspec.Struct, forbid_unknown_fields=True):
    key: Key
    value: Value


def kv_network(keys: KeyPair | None = None, **options: Any) -> Network[Request, Reply]:
    """A network speaking the store's protocol; no LAN discovery (the peers find each
    other through the relay), no hole punching (the server stays behind its relay)."""
    return Network(
        keys,
        codec=TypedCodec(Request, Reply),
        protocols=(PROTOCOL,),
        mdns=None,
        dcutr=None,
        **options,
    )


def range_protocol(net: Network[Request, Reply]) -> RequestProtocol[Range, Entry]:
    """The store's second protocol: a :class:`Range` streamed back as entries."""
    return net.add_protocol(RANGE_PROTOCOL, codec=TypedCodec(Range, Entry), framing=Framing.CHUNKED)
