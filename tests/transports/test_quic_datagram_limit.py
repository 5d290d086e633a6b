"""A peer's ``max_udp_payload_size`` transport parameter bounds what a WebTransport
connection sends: Chromium announces 1472 and drops larger datagrams unread, so a
listener sending loopback-sized (16 KiB) datagrams never completed a browser's handshake.

Sans-IO: an aioquic client that announces a limit handshakes with the adapter in memory.
"""

from __future__ import annotations

import ssl

from aioquic._buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection as AioquicConnection
from aioquic.quic.events import HandshakeCompleted
from aioquic.quic.packet import pull_quic_transport_parameters, push_quic_transport_parameters

from aiop2p._aio.quic_adapter import LibP2PQuic
from aiop2p._aio.quic_connection import _certificate_for
from aiop2p.identity import KeyPair

CLIENT = ("127.0.0.1", 40000)
SERVER = ("127.0.0.1", 4433)
LOOPBACK_DATAGRAM_BYTES = 16384
PEER_LIMIT = 1300
MAX_ROUNDS = 20


class LimitedClient(AioquicConnection):
    """An aioquic client that announces ``max_udp_payload_size`` (aioquic sends none)."""

    limit: int | None = None

    def _serialize_transport_parameters(self) -> bytes:
        data = super()._serialize_transport_parameters()
        params = pull_quic_transport_parameters(Buffer(data=data))
        params.max_udp_payload_size = self.limit
        buf = Buffer(capacity=len(data) + 16)
        push_quic_transport_parameters(buf, params)
        return buf.data


def handshake(limit: int | None, honour: bool) -> tuple[int, bool]:
    """Run a handshake; return the largest datagram the server sent and whether the
    client completed it."""
    cert, key = _certificate_for(KeyPair.generate())
    client = LimitedClient(
        configuration=QuicConfiguration(
            is_client=True, alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE
        )
    )
    client.limit = limit
    server = LibP2PQuic(
        configuration=QuicConfiguration(
            is_client=False,
            alpn_protocols=["h3"],
            certificate=cert,
            private_key=key,
            max_datagram_size=LOOPBACK_DATAGRAM_BYTES,
        ),
        original_destination_connection_id=client.original_destination_connection_id,
        stream_window_bytes=1 << 20,
        connection_window_bytes=4 << 20,
        max_streams=8,
        max_uni_streams=4,
        request_client_certificate=False,
        honour_peer_max_udp_payload=honour,
    )
    now = 1.0
    client.connect(SERVER, now=now)
    largest = 0
    completed = False
    for _ in range(MAX_ROUNDS):
        for data, _addr in client.datagrams_to_send(now=now):
            server.receive_datagram(data, CLIENT, now=now)
        sent = [data for data, _addr in server.datagrams_to_send(now=now)]
        largest = max([largest, *map(len, sent)])
        # like Chromium: a datagram above the announced limit is dropped unread
        for data in sent:
            if limit is None or len(data) <= limit:
                client.receive_datagram(data, SERVER, now=now)
        while (event := client.next_event()) is not None:
            completed = completed or isinstance(event, HandshakeCompleted)
        now += 0.01
    return largest, completed


def test_peer_limit_bounds_every_datagram() -> None:
    largest, completed = handshake(PEER_LIMIT, honour=True)
    assert completed
    assert largest <= PEER_LIMIT


def test_without_the_limit_the_first_flight_is_larger() -> None:
    # what went wrong before: the first flight does not fit, the handshake never ends
    largest, completed = handshake(PEER_LIMIT, honour=False)
    assert largest > PEER_LIMIT
    assert not completed


def test_a_peer_without_a_limit_gets_large_datagrams() -> None:
    largest, completed = handshake(None, honour=True)
    assert completed
    assert largest > PEER_LIMIT


def test_the_adapter_reaches_the_datagram_size() -> None:
    cert, key = _certificate_for(KeyPair.generate())
    server = LibP2PQuic(
        configuration=QuicConfiguration(
            is_client=False, alpn_protocols=["h3"], certificate=cert, private_key=key
        ),
        original_destination_connection_id=b"\x01" * 8,
        stream_window_bytes=1 << 20,
        connection_window_bytes=4 << 20,
        max_streams=8,
    )
    assert server.max_datagram_bytes == server._max_datagram_size == 1200
