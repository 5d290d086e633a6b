"""Identify (``/ipfs/id/1.0.0``) and identify-push message codec (libp2p identify spec).

The message is a protobuf, sent as one unsigned-varint length-prefixed frame by the
side that was asked (or that pushes) before it closes its write side.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._wire.protobuf import decode_fields, encode_bytes_field
from ..errors import RemoteProtocolError

__all__ = [
    "IDENTIFY_PROTOCOL_ID",
    "IDENTIFY_PROTOCOL_VERSION",
    "IDENTIFY_PUSH_PROTOCOL_ID",
    "IdentifyMessage",
]

IDENTIFY_PROTOCOL_ID = "/ipfs/id/1.0.0"
IDENTIFY_PUSH_PROTOCOL_ID = "/ipfs/id/push/1.0.0"
IDENTIFY_PROTOCOL_VERSION = "ipfs/0.1.0"


@dataclass(frozen=True, slots=True)
class IdentifyMessage:
    """Fields as bytes/str; multiaddrs stay binary here (parsed by the service)."""

    protocol_version: str | None = None
    agent_version: str | None = None
    public_key: bytes | None = None
    listen_addrs: tuple[bytes, ...] = ()
    observed_addr: bytes | None = None
    protocols: tuple[str, ...] = ()
    signed_peer_record: bytes | None = None

    def encode(self) -> bytes:
        parts: list[bytes] = []
        if self.protocol_version is not None:
            parts.append(encode_bytes_field(5, self.protocol_version))
        if self.agent_version is not None:
            parts.append(encode_bytes_field(6, self.agent_version))
        if self.public_key is not None:
            parts.append(encode_bytes_field(1, self.public_key))
        parts.extend(encode_bytes_field(2, a) for a in self.listen_addrs)
        if self.observed_addr is not None:
            parts.append(encode_bytes_field(4, self.observed_addr))
        parts.extend(encode_bytes_field(3, p) for p in self.protocols)
        if self.signed_peer_record is not None:
            parts.append(encode_bytes_field(8, self.signed_peer_record))
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> IdentifyMessage:
        """Parse; raises :class:`RemoteProtocolError` if malformed."""
        protocol_version = agent_version = None
        public_key = observed = record = None
        listen: list[bytes] = []
        protocols: list[str] = []
        try:
            for number, value in decode_fields(data):
                if isinstance(value, int):
                    continue
                if number == 5:
                    protocol_version = value.decode()
                elif number == 6:
                    agent_version = value.decode()
                elif number == 1:
                    public_key = value
                elif number == 2:
                    listen.append(value)
                elif number == 4:
                    observed = value
                elif number == 3:
                    protocols.append(value.decode())
                elif number == 8:
                    record = value
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError(f"identify: invalid UTF-8: {exc}") from exc
        return cls(
            protocol_version=protocol_version,
            agent_version=agent_version,
            public_key=public_key,
            listen_addrs=tuple(listen),
            observed_addr=observed,
            protocols=tuple(protocols),
            signed_peer_record=record,
        )
