"""Signed peer records (libp2p ``RFC/0003-routing-records.md``) in signed envelopes
(``RFC/0002-signed-envelopes.md``, :mod:`.envelope`).

A peer record says which addresses a peer listens on, with a sequence number that
grows with every new record; sealed in an envelope under the domain
``libp2p-peer-record`` with the payload type of the ``libp2p-peer-record`` multicodec
(0x0301, as its two big-endian bytes, as the other implementations put it on the wire),
it *certifies* those addresses: a third party cannot forge them.

Wire format: protobuf ``PeerRecord{peer_id=1 (bytes), seq=2 (uint64),
addresses=3 (repeated AddressInfo{multiaddr=1 (bytes)})}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .._wire.protobuf import decode_fields, encode_bytes_field, encode_varint_field
from ..errors import InvalidArgumentError, InvalidPeerIdError, RemoteProtocolError
from ..identity import KeyPair, PeerId
from ..multiaddr import Multiaddr
from . import envelope

__all__ = [
    "MAX_PEER_RECORD_ADDRS",
    "MAX_PEER_RECORD_BYTES",
    "PEER_RECORD_DOMAIN",
    "PEER_RECORD_PAYLOAD_TYPE",
    "PeerRecord",
    "open_peer_record",
    "seal_peer_record",
]

PEER_RECORD_DOMAIN: Final = "libp2p-peer-record"
PEER_RECORD_PAYLOAD_TYPE: Final = b"\x03\x01"
MAX_PEER_RECORD_BYTES: Final = 16 * 1024
"""Largest envelope with a peer record accepted, bytes."""
MAX_PEER_RECORD_ADDRS: Final = 64
"""Most addresses one record may hold; more is rejected, not truncated."""
_MAX_SEQ: Final = 2**63 - 1
"""The project's varints stop below 2**63 (nanosecond Unix time stays below until 2262)."""


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """``peer``'s listen addresses as of ``seq``.

    ``addrs`` holds the addresses we could parse; ``unknown_addrs`` counts the others (a
    multiaddr protocol we do not know is no reason to distrust the record)."""

    peer: PeerId
    seq: int
    addrs: tuple[Multiaddr, ...]
    unknown_addrs: int = 0

    def encode(self) -> bytes:
        parts = [encode_bytes_field(1, self.peer.to_bytes())]
        if self.seq:
            parts.append(encode_varint_field(2, self.seq))
        parts.extend(encode_bytes_field(3, encode_bytes_field(1, a.to_bytes())) for a in self.addrs)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes, *, max_addrs: int = MAX_PEER_RECORD_ADDRS) -> PeerRecord:
        """Parse; raises :class:`RemoteProtocolError` if malformed or over ``max_addrs``."""
        peer_bytes: bytes | None = None
        seq = 0
        raw_addrs: list[bytes] = []
        for number, value in decode_fields(data):
            if number == 1 and isinstance(value, bytes):
                peer_bytes = value
            elif number == 2 and isinstance(value, int):
                seq = value
            elif number == 3 and isinstance(value, bytes):
                if len(raw_addrs) >= max_addrs:
                    raise RemoteProtocolError(f"peer record: more than {max_addrs} addresses")
                raw_addrs.append(_address_info(value))
            elif number in (1, 2, 3):
                raise RemoteProtocolError(f"peer record: field {number} has the wrong wire type")
        if peer_bytes is None:
            raise RemoteProtocolError("peer record: no peer id")
        try:
            peer = PeerId.from_bytes(peer_bytes)
        except InvalidPeerIdError as exc:
            raise RemoteProtocolError(f"peer record: {exc}") from exc
        if seq > _MAX_SEQ:
            raise RemoteProtocolError("peer record: seq does not fit 63 bits")
        addrs: list[Multiaddr] = []
        for raw in raw_addrs:
            try:
                addrs.append(Multiaddr.from_bytes(raw))
            except InvalidArgumentError:
                continue
        return cls(peer, seq, tuple(addrs), len(raw_addrs) - len(addrs))


def _address_info(data: bytes) -> bytes:
    multiaddr = b""
    for number, value in decode_fields(data):
        if number == 1:
            if not isinstance(value, bytes):
                raise RemoteProtocolError("peer record: address has the wrong wire type")
            multiaddr = value
    return multiaddr


def seal_peer_record(keypair: KeyPair, record: PeerRecord) -> bytes:
    """The encoded envelope of ``record``, signed by ``keypair`` (its peer's key)."""
    if record.peer != keypair.peer_id:
        raise InvalidArgumentError("a peer record is signed by its own peer's key")
    if not 0 <= record.seq <= _MAX_SEQ:
        raise InvalidArgumentError("a peer record's seq is in [0, 2**63)")
    sealed = envelope.seal(keypair, PEER_RECORD_DOMAIN, PEER_RECORD_PAYLOAD_TYPE, record.encode())
    return sealed.encode()


def open_peer_record(
    data: bytes,
    *,
    max_size_bytes: int = MAX_PEER_RECORD_BYTES,
    max_addrs: int = MAX_PEER_RECORD_ADDRS,
) -> PeerRecord:
    """Verify an envelope and return its record.

    Raises :class:`RemoteProtocolError` if the envelope or record is malformed, its payload
    type is not a peer record's, or the record names a peer other than the signer;
    :class:`~aiop2p.errors.InvalidSignatureError` if the signature does not verify for
    the peer-record domain.  Whether the signer is the peer it came from is the caller's
    to check (``record.peer``).
    """
    sealed = envelope.open(
        data, PEER_RECORD_DOMAIN, PEER_RECORD_PAYLOAD_TYPE, max_size_bytes=max_size_bytes
    )
    record = PeerRecord.decode(sealed.payload, max_addrs=max_addrs)
    if record.peer != sealed.peer_id:
        raise RemoteProtocolError(
            f"peer record names {record.peer} but is signed by {sealed.peer_id}"
        )
    return record
