"""What the key-value store's peers say to each other: typed requests on ``/kv/1.0.0``.

Each request is a msgspec Struct with ``tag=True``: on the wire ``{"type": "Put",
"key": ..., "value": ...}``, decoded back into the class it names, so the server routes
with one ``match``.  A request of any other shape (an unknown type, a missing field, a
key too long) is rejected by the codec before the server's code sees it.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from aiop2p import KeyPair, Network, TypedCodec

PROTOCOL = "/kv/1.0.0"

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
