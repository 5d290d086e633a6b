"""The adapter's short way for 1-RTT packets (``LibP2PQuic._receive_one_rtt``): what it
takes, what it leaves to aioquic, and hostile input (replays, corruption, another
address, unknown connection ids), on two in-memory QUIC machines."""

from __future__ import annotations

from aioquic.quic.connection import QuicConnectionState
from aioquic.quic.events import StreamDataReceived

from aiop2p._aio.quic_adapter import LibP2PQuic

from .quic_memory import ADDR, handshake, libp2p_machine


def _machine(*, is_client: bool, odcid: bytes | None = None) -> LibP2PQuic:
    return libp2p_machine(is_client=is_client, odcid=odcid)


def _connected_pair() -> tuple[LibP2PQuic, LibP2PQuic]:
    client = _machine(is_client=True)
    server = handshake(client, lambda odcid: _machine(is_client=False, odcid=odcid))
    assert server._handshake_complete
    return client, server


def _stream_data(machine: LibP2PQuic) -> bytes:
    out = bytearray()
    while (event := machine.next_event()) is not None:
        if isinstance(event, StreamDataReceived):
            out += event.data
    return bytes(out)


def _one_rtt_datagrams(sender: LibP2PQuic, payload: bytes, now: float) -> list[bytes]:
    sid = sender.get_next_available_stream_id()
    sender.write(sid, payload)
    datagrams = [data for data, _ in sender.datagrams_to_send(now=now)]
    assert datagrams and all(not data[0] & 0x80 for data in datagrams)  # short headers
    return datagrams


def test_one_rtt_packets_take_the_short_way() -> None:
    """Data packets (reordered) on the server, the server's ACKs on the client."""
    client, server = _connected_pair()
    _stream_data(server)
    payload = bytes(range(256)) * 40  # several 1200 B packets
    datagrams = _one_rtt_datagrams(client, payload, now=1.0)
    assert len(datagrams) > 1
    for data in reversed(datagrams):  # reordered: aioquic's streams put it back
        assert server._receive_one_rtt(data, ADDR, now=1.0)
    received = _stream_data(server)
    for step in range(50):  # bounded: the ACKs, and what the window held back
        now = 1.1 + step * 0.01
        for machine in (client, server):
            timer = machine.get_timer()
            if timer is not None and timer <= now:
                machine.handle_timer(now=now)
        for data, _ in server.datagrams_to_send(now=now):
            assert client._receive_one_rtt(data, ADDR, now=now)
        for data, _ in client.datagrams_to_send(now=now):
            assert server._receive_one_rtt(data, ADDR, now=now)
        received += _stream_data(server)
    assert received == payload
    assert all(s.sender.buffer_is_empty for s in client._streams.values())
    assert not client._loss.bytes_in_flight  # all acknowledged
    (reply,) = _one_rtt_datagrams(server, b"back", now=2.0)
    assert client._receive_one_rtt(reply, ADDR, now=2.0)
    assert _stream_data(client) == b"back"
    assert client._state is server._state is QuicConnectionState.CONNECTED


def test_a_replayed_packet_is_dropped() -> None:
    client, server = _connected_pair()
    _stream_data(server)
    (data,) = _one_rtt_datagrams(client, b"once", now=1.0)
    server.receive_datagram(data, ADDR, now=1.0)
    assert _stream_data(server) == b"once"
    assert server._receive_one_rtt(data, ADDR, now=1.0)  # known: dropped here
    assert _stream_data(server) == b""
    assert server._state is QuicConnectionState.CONNECTED


def test_a_corrupted_packet_goes_to_aioquic_which_drops_it() -> None:
    client, server = _connected_pair()
    _stream_data(server)
    (data,) = _one_rtt_datagrams(client, b"intact", now=1.0)
    forged = data[:-1] + bytes([data[-1] ^ 1])  # fails authentication
    assert not server._receive_one_rtt(forged, ADDR, now=1.0)
    server.receive_datagram(forged, ADDR, now=1.0)
    assert _stream_data(server) == b""
    assert server._state is QuicConnectionState.CONNECTED
    server.receive_datagram(data, ADDR, now=1.0)
    assert _stream_data(server) == b"intact"


def test_other_paths_and_ids_are_left_to_aioquic() -> None:
    client, server = _connected_pair()
    _stream_data(server)
    (data,) = _one_rtt_datagrams(client, b"moved", now=1.0)
    assert not server._receive_one_rtt(data, ("127.0.0.1", 2), now=1.0)  # a new address
    unknown = data[:1] + bytes(8) + data[9:]
    assert not server._receive_one_rtt(unknown, ADDR, now=1.0)
    assert not client._receive_one_rtt(unknown, ADDR, now=1.0)
    assert not server._receive_one_rtt(b"", ADDR, now=1.0)
    assert not server._receive_one_rtt(bytes([0x00]) + data[1:], ADDR, now=1.0)  # no fixed bit
    # aioquic takes the new address as a migration: the data arrives, the path is probed.
    server.receive_datagram(data, ("127.0.0.1", 2), now=1.0)
    assert _stream_data(server) == b"moved"
    assert server._network_paths[0].addr == ("127.0.0.1", 2)


def test_a_closed_machine_takes_nothing() -> None:
    client, server = _connected_pair()
    (data,) = _one_rtt_datagrams(client, b"late", now=1.0)
    server.close(error_code=0)
    server.datagrams_to_send(now=1.0)  # the CONNECTION_CLOSE leaves: closing
    assert not server._receive_one_rtt(data, ADDR, now=1.0)
