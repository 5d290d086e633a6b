"""A hand-driven raw peer misbehaves after (or during) a real handshake; the node must
drop only that connection, with the documented error, and keep serving everyone else."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from aiop2p.identity import KeyPair, PeerId
from aiop2p.node import Node
from aiop2p.protocols.multistream import MultistreamDialer, ProtocolSelected
from aiop2p.protocols.noise import (
    SIGNATURE_PREFIX,
    HandshakeCompleted,
    NoiseCredentials,
    NoiseHandshake,
    NoiseTransport,
)
from aiop2p.protocols.role import Role
from aiop2p.protocols.yamux import GoAwayCode

from ..helpers import wait_for

pytestmark = pytest.mark.timeout(30)


class LyingIdentity:
    """A real public key whose signature covers something other than our Noise key."""

    def __init__(self, real: KeyPair) -> None:
        self.public_key = real.public_key
        self._real = real

    def sign(self, message: bytes) -> bytes:
        return self._real.sign(SIGNATURE_PREFIX + bytes(32))


class RawPeer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def handshake(self, identity: object, expected: PeerId) -> NoiseTransport | None:
        """Run multistream + Noise as the initiator; None if the node hung up."""
        ms = MultistreamDialer(["/noise"], optimistic=True)
        hs = NoiseHandshake(
            role=Role.INITIATOR,
            credentials=NoiseCredentials.create(
                identity,  # type: ignore[arg-type]
                X25519PrivateKey.generate(),
            ),
            ephemeral_key=X25519PrivateKey.generate(),
            expected_peer=expected,
        )
        self.writer.write(ms.data_to_send() + hs.data_to_send())
        selected = False
        while True:
            data = await self.reader.read(65536)
            if not data:
                return None
            if not selected:
                ms.receive_data(data)
                events = ms.events_received()
                if not events:
                    continue
                assert isinstance(events[0], ProtocolSelected)
                selected, data = True, events[0].leftover
            hs.receive_data(data)
            self.writer.write(hs.data_to_send())
            for ev in hs.events_received():
                assert isinstance(ev, HandshakeCompleted), ev
                return ev.transport

    async def read_until_eof(self) -> bytes:
        chunks = []
        while chunk := await self.reader.read(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest_asyncio.fixture
async def target() -> AsyncIterator[Node]:
    async with Node() as node:
        await node.listen("/ip4/127.0.0.1/tcp/0")
        yield node


async def open_raw(node: Node) -> RawPeer:
    port = int(node.listen_addrs[0].value_for("tcp") or 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return RawPeer(reader, writer)


async def still_serving(node: Node) -> None:
    async with Node() as other:
        assert len(await other.ping(node.listen_addrs[0].with_peer_id(node.peer_id))) == 1


async def test_invalid_identity_signature_is_rejected(target: Node) -> None:
    raw = await open_raw(target)
    transport = await raw.handshake(LyingIdentity(KeyPair.generate()), target.peer_id)
    # Our side completed (the node's own signature is fine); the node must hang up on us.
    assert transport is not None
    async with asyncio.timeout(5):
        await raw.read_until_eof()
    raw.writer.close()
    assert target.connections == []
    await still_serving(target)


async def test_malformed_yamux_frame_gets_goaway_and_close(target: Node) -> None:
    raw = await open_raw(target)
    transport = await raw.handshake(KeyPair.generate(), target.peer_id)
    assert transport is not None
    muxer = MultistreamDialer(["/yamux/1.0.0"], optimistic=True)
    bad_header = struct.pack(">BBHII", 9, 0, 0, 1, 0)  # version 9 does not exist
    raw.writer.write(transport.encrypt(muxer.data_to_send()) + transport.encrypt(bad_header))
    await wait_for(lambda: len(target.connections) == 0)
    async with asyncio.timeout(5):
        received = await raw.read_until_eof()
    plaintext = b"".join(transport.decrypt(received))
    # After the multistream echo comes a GoAway (type 3) carrying the protocol-error code.
    goaway = struct.pack(">BBHII", 0, 3, 0, 0, GoAwayCode.PROTOCOL_ERROR)
    assert plaintext.endswith(goaway)
    raw.writer.close()
    await still_serving(target)


async def test_tampered_ciphertext_drops_the_connection(target: Node) -> None:
    raw = await open_raw(target)
    transport = await raw.handshake(KeyPair.generate(), target.peer_id)
    assert transport is not None
    frame = bytearray(transport.encrypt(b"\x13/multistream/1.0.0\n"))
    frame[-1] ^= 1
    raw.writer.write(bytes(frame))
    async with asyncio.timeout(5):
        await raw.read_until_eof()
    raw.writer.close()
    await still_serving(target)


async def test_eof_mid_frame_after_handshake(target: Node) -> None:
    raw = await open_raw(target)
    transport = await raw.handshake(KeyPair.generate(), target.peer_id)
    assert transport is not None
    muxer = MultistreamDialer(["/yamux/1.0.0"], optimistic=True)
    raw.writer.write(transport.encrypt(muxer.data_to_send()))
    await wait_for(lambda: len(target.connections) == 1)
    raw.writer.write(transport.encrypt(b"\x00\x00\x00")[:10])  # half a frame, then EOF
    raw.writer.write_eof()
    await wait_for(lambda: len(target.connections) == 0)
    raw.writer.close()
    await still_serving(target)
