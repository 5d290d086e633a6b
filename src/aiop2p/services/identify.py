"""Identify service: answer ``/ipfs/id/1.0.0``, ask every new peer, push our changes.

What a peer tells us goes to the peer store (its listen addresses, protocols, agent)
and each connection keeps its result, awaitable with :meth:`IdentifyService.identify`.

Every message carries our signed peer record (:mod:`aiop2p.protocols.peer_record`,
field ``signedPeerRecord``), re-signed with a higher ``seq`` whenever our addresses
change.  A peer's record is verified (signature, domain, payload type, signer = the
peer of the connection, no older than the last one); when it holds, its addresses
replace the unsigned ones and are marked certified in the peer store.  A record that
does not hold is ignored (debug log, :attr:`IdentifyService.ignored_peer_records`) and
the unsigned addresses are used as if none had been sent: identify itself never fails
because of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

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
from ..protocols.peer_record import (
    MAX_PEER_RECORD_ADDRS,
    PeerRecord,
    open_peer_record,
    seal_peer_record,
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
        self._record: tuple[tuple[Multiaddr, ...], bytes] | None = None
        self.peer_record_seq = 0
        """The ``seq`` of our current signed peer record (0 before the first one)."""
        self.ignored_peer_records = 0
        """Peer records received that did not verify or were older than one we had."""
        node.set_stream_handler(IDENTIFY_PROTOCOL_ID, self._answer)
        node.set_stream_handler(IDENTIFY_PUSH_PROTOCOL_ID, self._receive_push)
        node.connection_opened.subscribe(self._on_connection_opened)
        node.local_changed.subscribe(self._on_local_change)

    # -- our side ------------------------------------------------------------------------

    def advertised_addrs(self) -> list[Multiaddr]:
        return self.node.listen_addrs

    def signed_peer_record(self) -> bytes:
        """Our signed peer record (an encoded envelope) for the advertised addresses;
        signed anew, with a higher ``seq``, when they changed since the last one."""
        addrs = tuple(self.advertised_addrs()[:MAX_PEER_RECORD_ADDRS])
        if self._record is None or self._record[0] != addrs:
            # Unix time in nanoseconds: grows across restarts without stored state.
            seq = max(time.time_ns(), self.peer_record_seq + 1)
            record = PeerRecord(self.node.peer_id, seq, addrs)
            self._record = (addrs, seal_peer_record(self.node.key, record))
            self.peer_record_seq = seq
        return self._record[1]

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
            signed_peer_record=self.signed_peer_record(),
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
        record = None
        if msg.signed_peer_record is not None:
            record = self._verified_record(peer, msg.signed_peer_record, info.peer_record_seq)
        addrs = []
        for raw in msg.listen_addrs:
            try:
                addrs.append(Multiaddr.from_bytes(raw))
            except InvalidArgumentError:
                continue
        if record is not None:
            assert msg.signed_peer_record is not None
            self.node.peer_store.set_certified(
                peer, record.addrs, record.seq, msg.signed_peer_record
            )
        elif addrs or not push:
            self.node.peer_store.set_addrs(peer, addrs)
        if msg.observed_addr is not None:
            with contextlib.suppress(InvalidArgumentError):
                info.observed_addr = Multiaddr.from_bytes(msg.observed_addr)
        return info

    def _verified_record(
        self, peer: PeerId, data: bytes, known_seq: int | None
    ) -> PeerRecord | None:
        """``peer``'s record in ``data`` if it verifies and is not older than the one we
        hold; else None (logged and counted)."""
        try:
            record = open_peer_record(data)
            if record.peer != peer:
                raise RemoteProtocolError(f"the record is signed by {record.peer}")
            if known_seq is not None and record.seq < known_seq:
                raise RemoteProtocolError(f"seq {record.seq} is older than {known_seq}")
        except P2PError as exc:
            self.ignored_peer_records += 1
            log.debug("identify: ignoring the signed peer record from %s: %s", peer, exc)
            return None
        return record
