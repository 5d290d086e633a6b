"""Identify service: answer ``/ipfs/id/1.0.0``, ask every new peer, push our changes.

What a peer tells us goes to the peer store (its listen addresses, protocols, agent)
and each connection keeps its result, awaitable with :meth:`IdentifyService.identify`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .._aio.connection import Connection
from .._aio.stream import Stream
from ..errors import InvalidArgumentError, P2PError, RemoteProtocolError
from ..identity import PeerId, PublicKey
from ..multiaddr import Multiaddr
from ..protocols.identify import (
    IDENTIFY_PROTOCOL_ID,
    IDENTIFY_PROTOCOL_VERSION,
    IDENTIFY_PUSH_PROTOCOL_ID,
    IdentifyMessage,
)
from .host import Host, connection_of
from .peerstore import PeerInfo

__all__ = ["IdentifyService"]

log = logging.getLogger(__name__)
_RESULT_KEY = "identify"


class IdentifyService:
    def __init__(self, node: Host) -> None:
        self.node = node
        self._push_scheduled = False
        node.set_stream_handler(IDENTIFY_PROTOCOL_ID, self._answer)
        node.set_stream_handler(IDENTIFY_PUSH_PROTOCOL_ID, self._receive_push)
        node.connection_opened.subscribe(self._on_connection_opened)
        node.local_changed.subscribe(self._on_local_change)

    # -- our side ------------------------------------------------------------------------

    def advertised_addrs(self) -> list[Multiaddr]:
        return self.node.listen_addrs

    def _message_for(self, conn: Connection) -> IdentifyMessage:
        node = self.node
        observed = conn.remote_addr.without_peer_id() if conn.remote_addr is not None else None
        return IdentifyMessage(
            protocol_version=IDENTIFY_PROTOCOL_VERSION,
            agent_version=node.config.agent_version,
            public_key=node.key.public_key.to_protobuf(),
            listen_addrs=tuple(a.to_bytes() for a in self.advertised_addrs()),
            observed_addr=observed.to_bytes() if observed is not None else None,
            protocols=tuple(node.supported_protocols(conn)),
        )

    async def _answer(self, stream: Stream) -> None:
        await stream.write_message(self._message_for(connection_of(self.node, stream)).encode())

    def _on_local_change(self, _: None) -> None:
        if not self._push_scheduled and self.node.connections:
            self._push_scheduled = True
            asyncio.get_running_loop().call_soon(self._push_all)

    def _push_all(self) -> None:
        self._push_scheduled = False
        for conn in self.node.connections:
            self.node.spawn(self._push(conn), name="identify push")

    async def _push(self, conn: Connection) -> None:
        info = conn.user_data.get(_RESULT_KEY)
        if isinstance(info, asyncio.Future) and info.done() and not info.exception():
            result = info.result()
            if isinstance(result, PeerInfo) and IDENTIFY_PUSH_PROTOCOL_ID not in result.protocols:
                return
        stream = await conn.new_stream(IDENTIFY_PUSH_PROTOCOL_ID)
        async with stream:
            await stream.write_message(self._message_for(conn).encode())

    # -- their side ----------------------------------------------------------------------

    def _on_connection_opened(self, conn: Connection) -> None:
        fut: asyncio.Future[PeerInfo] = asyncio.get_running_loop().create_future()
        conn.user_data[_RESULT_KEY] = fut
        self.node.spawn(self._ask(conn, fut), name="identify")

    async def identify(self, conn: Connection) -> PeerInfo:
        """Wait for (or run) identify on ``conn``; return what the peer told us."""
        fut = conn.user_data.get(_RESULT_KEY)
        if not isinstance(fut, asyncio.Future):
            fut = asyncio.get_running_loop().create_future()
            conn.user_data[_RESULT_KEY] = fut
            self.node.spawn(self._ask(conn, fut), name="identify")
        result = await asyncio.shield(fut)
        assert isinstance(result, PeerInfo)
        return result

    async def _ask(self, conn: Connection, fut: asyncio.Future[PeerInfo]) -> None:
        try:
            async with asyncio.timeout(self.node.config.identify_timeout):
                stream = await conn.new_stream(IDENTIFY_PROTOCOL_ID)
                async with stream:
                    await stream.close()
                    data = await stream.read_message(self.node.config.max_identify_message_bytes)
            info = self._apply(conn.remote_peer, IdentifyMessage.decode(data))
        except (P2PError, TimeoutError) as exc:
            # The error stays stored (in ``fut``, and on the connection and its streams when
            # they failed); the frames of its traceback reference them, so keeping it would
            # make a reference cycle of every connection closed during identify.
            exc.__traceback__ = None
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()
            log.debug("identify with %s failed: %s", conn, exc)
            return
        if not fut.done():
            fut.set_result(info)

    async def _receive_push(self, stream: Stream) -> None:
        data = await stream.read_message(self.node.config.max_identify_message_bytes)
        self._apply(stream.remote_peer, IdentifyMessage.decode(data), push=True)

    def _apply(self, peer: PeerId, msg: IdentifyMessage, *, push: bool = False) -> PeerInfo:
        if msg.public_key is not None:
            key = PublicKey.from_protobuf(msg.public_key)
            if PeerId.from_public_key(key) != peer:
                raise RemoteProtocolError("identify: public key does not match the peer id")
        info = self.node.peer_store.info(peer)
        if msg.public_key is not None:
            info.public_key = PublicKey.from_protobuf(msg.public_key)
        if msg.agent_version is not None:
            info.agent_version = msg.agent_version
        if msg.protocol_version is not None:
            info.protocol_version = msg.protocol_version
        if msg.protocols or not push:
            info.protocols = list(msg.protocols)
        addrs = []
        for raw in msg.listen_addrs:
            try:
                addrs.append(Multiaddr.from_bytes(raw))
            except InvalidArgumentError:
                continue
        if addrs or not push:
            self.node.peer_store.set_addrs(peer, addrs)
        if msg.observed_addr is not None:
            with contextlib.suppress(InvalidArgumentError):
                info.observed_addr = Multiaddr.from_bytes(msg.observed_addr)
        return info
