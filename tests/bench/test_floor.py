"""The benchmark's floor (``bench/floor_peer.py``) puts valid libp2p bytes on the wire.

Its Noise frames, Yamux frames and multistream messages are decoded here by aiop2p's own
machines, so "the same wire work" is checked, not assumed; bytes that are not what the floor
expects are refused with ``FloorError``.  A ``--quick`` run of the floor through
``bench/run.py`` checks that its two processes answer every command.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from aiop2p.protocols.multistream import (
    MultistreamDialer,
    MultistreamListener,
    ProtocolSelected,
)
from aiop2p.protocols.noise import NoiseTransport
from aiop2p.protocols.role import Role
from aiop2p.protocols.yamux import (
    StreamDataReceived,
    StreamEnded,
    StreamOpened,
    YamuxSession,
)

from ..helpers import run_capped, wait_for

ROOT = Path(__file__).resolve().parents[2]
MESSAGE = bytes(range(64))
ECHO = "/p2p/1.0.0"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


floor = _load("floor_peer")


def _sealer(send_key: bytes, receive_key: bytes) -> Any:
    frames = floor.NoiseFrames()
    frames.set_keys(send_key, receive_key)
    return frames


def test_requests_decode_as_one_noise_frame_each_with_yamux_and_multistream() -> None:
    c2s, s2c = floor.direction_keys(b"\x01" * floor.SALT_BYTES)
    client = _sealer(c2s, s2c)
    wire = b"".join(client.seal(floor.request_plaintext(sid, MESSAGE)) for sid in (1, 3))
    server_noise = NoiseTransport(s2c, c2s, handshake_hash=b"")
    plaintexts = server_noise.decrypt(wire)
    assert len(plaintexts) == 2  # one Noise frame per request, real nonces 0 and 1
    session = YamuxSession(role=Role.RESPONDER)
    for plaintext in plaintexts:
        session.receive_data(plaintext)
    events = session.events_received()
    assert [type(e) for e in events] == [StreamOpened, StreamDataReceived, StreamEnded] * 2
    assert [getattr(e, "stream_id", None) for e in events] == [1, 1, 1, 3, 3, 3]
    assert isinstance(events[1], StreamDataReceived)
    body = events[1].data
    # The dialer's own bytes for an optimistic proposal are what the floor sends.
    assert body.startswith(MultistreamDialer([ECHO], optimistic=True).data_to_send())
    listener = MultistreamListener([ECHO])
    listener.receive_data(body)
    (selected,) = listener.events_received()
    assert isinstance(selected, ProtocolSelected) and selected.protocol == ECHO
    assert selected.leftover == bytes([len(MESSAGE)]) + MESSAGE
    assert session.data_to_send()  # aiop2p would ACK: the SYNs were accepted


def test_a_response_decodes_as_ack_multistream_echo_data_and_fin() -> None:
    c2s, s2c = floor.direction_keys(b"\x02" * floor.SALT_BYTES)
    server = _sealer(s2c, c2s)
    session = YamuxSession(role=Role.INITIATOR)
    sid = session.open_stream()
    session.data_to_send()
    client_noise = NoiseTransport(c2s, s2c, handshake_hash=b"")
    (plaintext,) = client_noise.decrypt(server.seal(floor.response_plaintext(sid, MESSAGE)))
    session.receive_data(plaintext)
    events = session.events_received()
    assert [type(e) for e in events] == [StreamDataReceived, StreamEnded]
    assert session.send_window(sid) > 0  # the ACK was taken: the stream is established
    dialer = MultistreamDialer([ECHO], optimistic=True)
    dialer.data_to_send()
    assert isinstance(events[0], StreamDataReceived)
    dialer.receive_data(events[0].data)
    (selected,) = dialer.events_received()
    assert isinstance(selected, ProtocolSelected)
    assert selected.leftover == bytes([len(MESSAGE)]) + MESSAGE


@pytest.mark.parametrize(
    "body",
    [
        b"\x13/multistream/1.0.0\n\x0b/p2p/2.0.0\n\x00",  # another protocol
        floor.MS_PREFIX + b"\x05abc",  # a message shorter than its length
        floor.MS_PREFIX + b"\xff" * 10,  # an over-long uvarint
    ],
)
def test_the_floor_refuses_a_stream_it_does_not_expect(body: bytes) -> None:
    with pytest.raises(floor.FloorError):
        floor.echoed_message(body)


def test_the_floor_refuses_frames_that_are_not_yamux_data() -> None:
    ping = floor.YAMUX_HEADER.pack(0, 2, floor.FLAG_SYN, 0, 7)
    with pytest.raises(floor.FloorError, match="unexpected yamux frame"):
        floor.parse_frames(ping)
    with pytest.raises(floor.FloorError, match="truncated"):
        floor.parse_frames(floor.request_plaintext(1, MESSAGE)[:-20])


@pytest.mark.timeout(60)
async def test_a_quick_floor_run_through_run_py_answers_every_figure() -> None:
    python = sys.executable
    status, out, err = await run_capped(
        [
            python,
            str(ROOT / "bench" / "run.py"),
            "--quick",
            "--only",
            "floor",
            "--json",
            "--only-figures",
            "tcp",
            "--timeout",
            "20",
        ],
        50.0,
    )
    assert status == 0, err
    figures = {row["key"]: row["median"]["floor"] for row in json.loads(out)["figures"]}
    for key in ("echo1_req_per_s", "echoN_req_per_s", "bulk_mib_s"):
        assert figures[key] is not None and figures[key] > 0, (key, err)


async def _echo_through(server_factory: Any, concurrency: int) -> list[float]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(server_factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await asyncio.wait_for(
            floor.run_echo(f"/ip4/127.0.0.1/tcp/{port}", 40, concurrency, MESSAGE), 20
        )
    finally:
        server.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("concurrency", [1, 4])
async def test_the_floor_with_tasks_answers_every_request(
    monkeypatch: pytest.MonkeyPatch, concurrency: int
) -> None:
    monkeypatch.setattr(floor, "echo_client", floor.TaskEchoClient)
    handled: list[int] = []

    class Server(floor.TaskFloorServer):  # type: ignore[misc, name-defined]
        async def _handle(self, stream_id: int, message: bytes) -> None:
            assert asyncio.current_task() is self._handlers[stream_id]
            handled.append(stream_id)
            await super()._handle(stream_id, message)

    latencies = await _echo_through(Server, concurrency)
    # Every echo was checked against the message by the client; each was answered in a task.
    assert len(latencies) == 40 and all(x > 0 for x in latencies)
    assert sorted(handled) == list(range(1, 80, 2))


@pytest.mark.timeout(30)
async def test_the_floor_with_tasks_fails_when_its_peer_hangs_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(floor, "echo_client", floor.TaskEchoClient)

    class HangUp(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.close()

    before = asyncio.all_tasks()
    with pytest.raises(floor.FloorError, match="echo connection failed"):
        await _echo_through(HangUp, 4)
    # The waiting workers are cancelled, not left pending.
    me = asyncio.current_task()
    await wait_for(lambda: asyncio.all_tasks() <= before | {me})
