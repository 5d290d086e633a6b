"""Two QUIC machines shaking hands in memory, datagram by datagram (no socket, no clock)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any, TypeVar

from aioquic import tls
from aioquic._buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header
from aioquic.tls import CipherSuite

from aiop2p._aio.quic_adapter import LibP2PQuic
from aiop2p._aio.quic_connection import ALPN, _certificate_for
from aiop2p.identity import KeyPair

ADDR = ("127.0.0.1", 1)
"""The address both machines see for each other."""

ServerT = TypeVar("ServerT", bound=QuicConnection)


def libp2p_machine(
    *,
    is_client: bool,
    odcid: bytes | None = None,
    stream_window: int = 8 << 20,
    connection_window: int = 8 << 20,
    max_streams: int = 8,
    suites: list[CipherSuite] | None = None,
) -> LibP2PQuic:
    """A libp2p QUIC machine with a fresh identity, announcing the windows it credits."""
    cert, key = _certificate_for(KeyPair.generate())
    return LibP2PQuic(
        configuration=QuicConfiguration(
            is_client=is_client,
            alpn_protocols=[ALPN],
            certificate=cert,
            private_key=key,
            verify_mode=ssl.CERT_NONE,
            max_stream_data=stream_window,
            max_data=connection_window,
            cipher_suites=suites,
        ),
        original_destination_connection_id=odcid,
        stream_window_bytes=stream_window,
        connection_window_bytes=connection_window,
        max_streams=max_streams,
    )


def handshake(client: LibP2PQuic, make_server: Callable[[bytes], ServerT]) -> ServerT:
    """Connect ``client`` to the server ``make_server`` builds for the original destination
    connection id of the client's first Initial; return the server once the client's
    handshake is complete."""
    client.connect(ADDR, now=0.0)
    server: ServerT | None = None
    for step in range(20):  # bounded: the handshake takes a few datagrams each way
        now = step * 0.001
        for data, _ in client.datagrams_to_send(now=now):
            if server is None:
                header = pull_quic_header(Buffer(data=data), host_cid_length=8)
                server = make_server(header.destination_cid)
            server.receive_datagram(data, ADDR, now=now)
        assert server is not None
        for data, _ in server.datagrams_to_send(now=now):
            client.receive_datagram(data, ADDR, now=now)
    assert server is not None and client._handshake_complete
    return server


def connected_pair(**machine: Any) -> tuple[LibP2PQuic, LibP2PQuic]:
    """A client and a server (both :func:`libp2p_machine` with these settings) after the
    handshake, the server's handshake events taken."""
    client = libp2p_machine(is_client=True, **machine)
    server = handshake(
        client, lambda odcid: libp2p_machine(is_client=False, odcid=odcid, **machine)
    )
    while server.next_event() is not None:
        pass
    return client, server


def varints(*values: int) -> bytes:
    """QUIC variable-length integers, one after the other (a frame written by hand)."""
    buf = Buffer(capacity=8 * len(values))
    for value in values:
        buf.push_uint_var(value)
    return buf.data


def one_rtt(
    sender: QuicConnection, frames: bytes, *, first: int = 0x43, number_bytes: int = 4
) -> bytes:
    """A 1-RTT packet of ``sender`` carrying ``frames``, its packet number in
    ``number_bytes`` bytes (``first``'s low three bits are set to match: the key phase
    and the packet number's length)."""
    number = sender._packet_number
    sender._packet_number += 1
    crypto = sender._cryptos[tls.Epoch.ONE_RTT]
    first = first & ~7 | crypto.key_phase << 2 | (number_bytes - 1)
    truncated = number & ((1 << (8 * number_bytes)) - 1)
    header = bytes([first]) + sender._peer_cid.cid + truncated.to_bytes(number_bytes, "big")
    return bytes(crypto.encrypt_packet(header, frames, number))
