"""The chunked framing against a js-libp2p peer, both directions: js writes and reads the
chunks with its own byte stream (tests/interop/js/peer.mjs, ``/aiop2p/chunked/1.0.0``),
so the wire format of docs/network.md ("Chunked framing") is checked by another stack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from aiop2p.errors import RemoteError, ResultCode
from aiop2p.network import Framing, InboundRequest, Network
from aiop2p.network.firewall import FirewallRules

from .peers import PeerProcess, js_command, start_peer

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]
CAP = 10.0
CHUNKED = "/aiop2p/chunked/1.0.0"


@pytest_asyncio.fixture
async def js() -> AsyncIterator[PeerProcess]:
    async with start_peer(js_command()) as peer:
        yield peer


@pytest_asyncio.fixture
async def net() -> AsyncIterator[Network[Any, Any]]:
    network: Network[Any, Any] = Network(
        mdns=None, dcutr=None, relay_client=False, firewall=FirewallRules.allow_all()
    )
    async with network:
        yield network


async def test_aiop2p_streams_from_js(net: Network[Any, Any], js: PeerProcess) -> None:
    proto = net.add_protocol(CHUNKED, framing=Framing.CHUNKED)
    items = [item async for item in proto.request_stream(js.addr, {"count": 20})]
    assert items == list(range(20))
    assert [item async for item in proto.request_stream(js.addr, {"count": 0})] == []
    assert await proto.send_request(js.addr, {"count": 3}) == 0
    got: list[int] = []
    with pytest.raises(RemoteError) as error:
        async for item in proto.request_stream(js.addr, {"count": 2, "error": [3, "gone"]}):
            got.append(item)
    assert got == [0, 1]
    assert error.value.code is ResultCode.RESOURCE_UNAVAILABLE and error.value.message == "gone"


async def test_js_reads_a_stream_from_aiop2p(net: Network[Any, Any], js: PeerProcess) -> None:
    proto = net.add_protocol(CHUNKED, framing=Framing.CHUNKED)
    addr = await net.start_listening("/ip4/127.0.0.1/tcp/0")
    target = str(addr.with_peer_id(net.peer_id))

    async def handler(request: InboundRequest[Any, Any]) -> AsyncIterator[Any]:
        for i in range(request.request["count"]):
            yield {"n": i}
        if request.request.get("fail"):
            raise RemoteError(ResultCode.INVALID_REQUEST, "no such range")

    serving = asyncio.create_task(proto.serve(handler))
    try:
        answer = await js.command("chunked", addr=target, request={"count": 5}, cap=CAP)
        assert answer["chunks"] == [{"code": 0, "text": f'{{"n":{i}}}'} for i in range(5)]
        answer = await js.command(
            "chunked", addr=target, request={"count": 1, "fail": True}, cap=CAP
        )
        assert answer["chunks"] == [
            {"code": 0, "text": '{"n":0}'},
            {"code": 1, "text": "no such range"},
        ]
    finally:
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
