"""The store as a handler for the command line, JSON values in and out (no typed codec):

cd examples/kv_store && aiop2p serve --handler kv_json:handle --protocol /kv/1.0.0 ...
"""

from __future__ import annotations

from typing import Any

from aiop2p import InboundRequest

store: dict[str, str] = {}


async def handle(request: InboundRequest[Any, Any]) -> dict[str, Any]:
    match request.request:
        case {"type": "Get", "key": str(key)}:
            return {"ok": key in store, "value": store.get(key)}
        case {"type": "Put", "key": str(key), "value": str(value)} if len(store) < 10_000:
            store[key] = value
            return {"ok": True}
    raise ValueError(f"not a request: {request.request!r}")  # logged; serving goes on
