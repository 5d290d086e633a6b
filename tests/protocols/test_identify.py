"""The identify message codec: round trip, field numbers of the spec, bad input."""

from __future__ import annotations

import pytest

from aiop2p._wire.protobuf import encode_bytes_field, encode_varint_field
from aiop2p.errors import RemoteProtocolError
from aiop2p.protocols.identify import IdentifyMessage


def test_round_trip_keeps_every_field() -> None:
    msg = IdentifyMessage(
        protocol_version="ipfs/0.1.0",
        agent_version="aiop2p/test",
        public_key=b"\x08\x01key",
        listen_addrs=(b"\x04\x7f\x00\x00\x01", b"\x04\x0a\x00\x00\x01"),
        observed_addr=b"\x04\x01\x02\x03\x04",
        protocols=("/ipfs/ping/1.0.0", "/ipfs/id/1.0.0"),
        signed_peer_record=b"envelope",
    )
    assert IdentifyMessage.decode(msg.encode()) == msg
    assert IdentifyMessage.decode(b"") == IdentifyMessage()


def test_spec_field_numbers_and_unknown_fields() -> None:
    data = (
        encode_bytes_field(6, "js-libp2p/3")  # agentVersion
        + encode_bytes_field(3, "/echo/1.0.0")  # protocols
        + encode_varint_field(9, 1)  # unknown: skipped
        + encode_bytes_field(7, b"future")  # unknown: skipped
    )
    assert IdentifyMessage.decode(data) == IdentifyMessage(
        agent_version="js-libp2p/3", protocols=("/echo/1.0.0",)
    )


@pytest.mark.parametrize(
    "data", [encode_bytes_field(6, b"\xff\xfe"), encode_bytes_field(3, b"\xc3"), b"\x2a\x05ab"]
)
def test_bad_utf8_or_truncated_message_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        IdentifyMessage.decode(data)
