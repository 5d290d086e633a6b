"""The lean 1-RTT packet builder (``quic_send.build_one_rtt``): the frames it writes, that
what it sends is registered with aioquic's loss recovery (lost data is sent again, ACK
ranges are right, the congestion window holds) and what it leaves to aioquic, on two
in-memory QUIC machines; a peer that stops acknowledging does not make it grow."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from aioquic._buffer import Buffer
from aioquic.quic.connection import QuicConnection as AioquicConnection
from aioquic.quic.connection import QuicConnectionState
from aioquic.quic.events import StreamDataReceived
from aioquic.quic.packet import (
    QuicTransportParameters,
    pull_ack_frame,
    push_ack_frame,
    push_quic_transport_parameters,
)
from aioquic.quic.packet_builder import QuicDeliveryState, QuicSentPacket
from aioquic.quic.rangeset import RangeSet
from aioquic.tls import CipherSuite, Epoch

from aiop2p._aio import quic_adapter, quic_send
from aiop2p._aio.quic_ack import ack_delivered
from aiop2p._aio.quic_adapter import LibP2PQuic

from .quic_memory import ADDR, connected_pair, handshake, libp2p_machine

Frame = tuple[Any, ...]  # (type, fields...)


def _pair(
    *, stream_window: int = 8 << 20, connection_window: int = 8 << 20, max_streams: int = 8
) -> tuple[LibP2PQuic, LibP2PQuic]:
    """A connected pair; the server announces these windows and stream limit."""
    client = libp2p_machine(is_client=True)
    server = handshake(
        client,
        lambda odcid: libp2p_machine(
            is_client=False,
            odcid=odcid,
            stream_window=stream_window,
            connection_window=connection_window,
            max_streams=max_streams,
        ),
    )
    # Settle what the handshake leaves (HANDSHAKE_DONE, connection ids, their ACKs).
    for step in range(10):
        now = 0.1 + step * 0.01
        for sender, receiver in ((server, client), (client, server)):
            for data, _ in sender.datagrams_to_send(now=now):
                receiver.receive_datagram(data, ADDR, now=now)
    for machine in (client, server):
        _events(machine)
        assert machine._handshake_confirmed
    return client, server


@pytest.fixture
def lean_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """Whether each ``datagrams_to_send`` call was the lean builder's (True) or aioquic's."""
    calls: list[bool] = []

    def counted(
        quic: LibP2PQuic, now: float, with_ack: bool = False
    ) -> list[tuple[bytes, object]] | None:
        datagrams = quic_send.build_one_rtt(quic, now, with_ack)
        calls.append(datagrams is not None)
        return datagrams

    monkeypatch.setattr(quic_adapter, "build_one_rtt", counted)
    yield calls


def _events(machine: LibP2PQuic) -> dict[int, tuple[bytes, bool]]:
    """Stream data (and whether it ended) per stream, read and credited."""
    got: dict[int, tuple[bytes, bool]] = {}
    while (event := machine.next_event()) is not None:
        if isinstance(event, StreamDataReceived):
            data, ended = got.get(event.stream_id, (b"", False))
            got[event.stream_id] = (data + event.data, ended or event.end_stream)
            machine.consumed(event.stream_id, len(event.data))
    return got


def _frames(receiver: LibP2PQuic, datagram: bytes) -> tuple[int, list[Frame]]:
    """The packet number and frames of a 1-RTT packet, decrypted with ``receiver``'s keys
    (its state is left as it was): ``(type, ...)`` for each frame."""
    cid = receiver.host_cid
    assert datagram[0] & 0xC0 == 0x40 and datagram[1 : 1 + len(cid)] == cid
    _, payload, number = receiver._cryptos[Epoch.ONE_RTT].decrypt_packet(
        datagram, 1 + len(cid), receiver._spaces[Epoch.ONE_RTT].expected_packet_number
    )
    buf = Buffer(data=payload)
    frames: list[Frame] = []
    while not buf.eof():
        kind = buf.pull_uint_var()
        if kind in (0x00, 0x01):  # PADDING, PING
            frames.append((kind,))
        elif kind == 0x02:
            ranges, _ = pull_ack_frame(buf)
            frames.append((kind, *(n for r in ranges for n in (r.start, r.stop))))
        elif kind in (0x10, 0x12, 0x13):
            frames.append((kind, buf.pull_uint_var()))
        elif kind == 0x11:
            frames.append((kind, buf.pull_uint_var(), buf.pull_uint_var()))
        elif 0x08 <= kind <= 0x0F:
            sid = buf.pull_uint_var()
            offset = buf.pull_uint_var() if kind & 4 else 0
            size = buf.pull_uint_var() if kind & 2 else len(payload) - buf.tell()
            frames.append((0x08, sid, offset, buf.pull_bytes(size), bool(kind & 1)))
        else:
            raise AssertionError(f"unexpected frame type {kind:#x}")
    return number, frames


def _deliver(sender: LibP2PQuic, receiver: LibP2PQuic, now: float) -> None:
    for data, _ in sender.datagrams_to_send(now=now):
        receiver.receive_datagram(data, ADDR, now=now)


def _stream_frames(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f[0] == 0x08]


def test_lean_builder_reaches_the_aioquic_internals_it_needs() -> None:
    """Fails loudly if an aioquic upgrade moves what ``quic_send`` touches (its docstring
    lists them)."""
    client, server = _pair()
    for machine in (client, server):
        for name in (
            "_state",
            "_close_pending",
            "_handshake_confirmed",
            "_quic_logger",
            "_network_paths",
            "_handshake_done_pending",
            "_retire_connection_ids",
            "_streams_blocked_pending",
            "_ping_pending",
            "_probe_pending",
            "_datagrams_pending",
            "_crypto_streams",
            "_host_cids",
            "_remote_preferred_address",
            "_streams_queue",
            "_streams",
            "_cryptos",
            "_spaces",
            "_local_ack_delay_exponent",
            "_peer_cid",
            "_spin_bit",
            "_packet_number",
            "_max_datagram_size",
            "_pacing_at",
            "_remote_max_data",
            "_remote_max_data_used",
            "_local_max_data",
            "_local_max_streams_bidi",
            "_local_max_streams_uni",
            "_close_at",
            "_ack_eliciting_sent_since_receipt",
        ):
            assert hasattr(machine, name), name
        for name in (
            "_idle_timeout",
            "_on_ack_delivery",
            "_on_connection_limit_delivery",
            "_on_max_stream_data_delivery",
            "_replenish_connection_ids",  # what makes an issued id unsent: LibP2PQuic
            "_on_new_connection_id_delivery",  # clears issued_cids_sent there
        ):
            assert callable(getattr(AioquicConnection, name)), name
        path = machine._network_paths[0]
        assert path.is_validated and not path.remote_challenges
        assert all(hasattr(issued, "was_sent") for issued in machine._host_cids)
        space = machine._spaces[Epoch.ONE_RTT]
        for name in ("ack_at", "ack_queue", "largest_received_packet", "largest_received_time"):
            assert hasattr(space, name), name
        loss = machine._loss
        assert callable(loss._cc.on_packet_sent) and callable(loss._pacer.next_send_time)
        assert isinstance(loss.congestion_window, int) and isinstance(loss.bytes_in_flight, int)
        assert isinstance(space.sent_packets, dict) and space.ack_eliciting_in_flight >= 0
        assert isinstance(loss._time_of_last_sent_ack_eliciting_packet, float)
        for name in ("packet_time", "bucket_time", "bucket_max", "evaluation_time"):
            assert hasattr(loss._pacer, name), name
        for name in (
            "_rtt_initialized",
            "_rtt_initial",
            "_rtt_smoothed",
            "_rtt_variance",
            "max_ack_delay",
        ):
            assert hasattr(loss, name), name
        assert hasattr(machine, "_remote_max_idle_timeout")
        assert isinstance(machine._configuration.idle_timeout, float)
        crypto = machine._cryptos[Epoch.ONE_RTT]
        assert callable(crypto.encrypt_packet) and crypto.key_phase in (0, 1)
        for limit in (
            machine._local_max_data,
            machine._local_max_streams_bidi,
            machine._local_max_streams_uni,
        ):
            for name in ("value", "sent", "used", "frame_type"):
                assert hasattr(limit, name), name
    sid = client.get_next_available_stream_id()
    client.write(sid, b"x")
    stream = client._streams[sid]
    for name in ("max_stream_data_remote", "max_stream_data_local", "max_stream_data_local_sent"):
        assert isinstance(getattr(stream, name), int), name
    assert stream in client._streams_queue and not stream.is_blocked
    sender, receiver = stream.sender, stream.receiver
    assert not sender.reset_pending and not receiver.stop_pending
    assert not sender.is_finished and not receiver.is_finished and not stream.is_finished
    assert len(sender._pending) == 1 and sender._pending_eof is False
    assert sender.next_offset == 0 and sender.highest_offset == 0
    frame = sender.get_frame(100, 100)
    assert frame is not None and (frame.offset, frame.data, frame.fin) == (0, b"x", False)
    assert callable(sender.on_data_delivery)
    for name in ("_acked", "_acked_fin", "_buffer_start", "_buffer_fin", "_reset_error_code"):
        assert hasattr(sender, name), name
    assert sender._acked._RangeSet__ranges == []  # type: ignore[attr-defined]


def test_established_packets_come_from_the_lean_builder(lean_calls: list[bool]) -> None:
    """Data, its ACK and the answer are the lean builder's; a PING (or a reset) is
    aioquic's, and the lean builder takes over again after it."""
    client, server = _pair()
    lean_calls.clear()
    sid = client.get_next_available_stream_id()
    client.write(sid, b"request", end_stream=True)
    (datagram,) = client.datagrams_to_send(now=1.0)
    _, frames = _frames(server, datagram[0])
    assert _stream_frames(frames) == [(0x08, sid, 0, b"request", True)]
    server.receive_datagram(datagram[0], ADDR, now=1.0)
    assert _events(server) == {sid: (b"request", True)}
    server.write(sid, b"answer", end_stream=True)
    server.ack_with_next_packet(1.0)
    (datagram,) = server.datagrams_to_send(now=1.0)
    _, frames = _frames(client, datagram[0])
    assert frames[0][0] == 0x02  # the ACK rides along
    assert _stream_frames(frames) == [(0x08, sid, 0, b"answer", True)]
    client.receive_datagram(datagram[0], ADDR, now=1.0)
    assert _events(client) == {sid: (b"answer", True)}
    assert lean_calls == [True, True]
    client.send_ping(7)
    (datagram,) = client.datagrams_to_send(now=1.1)
    assert lean_calls[-1] is False
    assert (0x01,) in _frames(server, datagram[0])[1]
    server.receive_datagram(datagram[0], ADDR, now=1.1)
    other = client.get_next_available_stream_id()
    client.write(other, b"doomed")
    client.reset_stream(other, 0)
    client.datagrams_to_send(now=1.2)
    assert lean_calls[-1] is False
    client.write(client.get_next_available_stream_id(), b"again")
    assert client.datagrams_to_send(now=1.3)
    assert lean_calls[-1] is True


def test_a_lost_packet_is_sent_again(lean_calls: list[bool]) -> None:
    """A lean-built packet that never arrives is declared lost once three later ones are
    acknowledged (RFC 9002 6.1.1), and its data goes out again in a lean-built packet;
    the server reads every byte in order."""
    client, server = _pair()
    lean_calls.clear()
    sid = client.get_next_available_stream_id()
    sent = []
    for i in range(5):
        client.write(sid, b"part %d;" % i)
        (datagram,) = client.datagrams_to_send(now=1.0 + i * 0.001)
        sent.append(datagram[0])
    dropped, *delivered = sent
    for data in delivered:
        server.receive_datagram(data, ADDR, now=1.01)
    assert _events(server) == {}  # the first bytes are missing: nothing to read yet
    for data, _ in server.datagrams_to_send(now=1.05):  # its ACK, after the ACK delay
        client.receive_datagram(data, ADDR, now=1.05)
    again = client.datagrams_to_send(now=1.05)
    assert len(again) == 1 and again[0][0] != dropped
    _, frames = _frames(server, again[0][0])
    assert _stream_frames(frames) == [(0x08, sid, 0, b"part 0;", False)]
    server.receive_datagram(again[0][0], ADDR, now=1.06)
    assert _events(server) == {sid: (b"".join(b"part %d;" % i for i in range(5)), False)}
    assert all(lean_calls)


def test_ack_ranges_are_what_arrived(lean_calls: list[bool]) -> None:
    """The server's lean-built ACK lists exactly the packets it got (two were lost), and
    once the client acknowledges that ACK the server stops repeating those ranges."""
    client, server = _pair()
    sid = client.get_next_available_stream_id()
    numbers = []
    now = 1.0
    for i in range(10):
        now += 0.01  # past the pacer
        client.write(sid, b"%d" % i)
        (datagram,) = client.datagrams_to_send(now=now)
        number, _ = _frames(server, datagram[0])
        numbers.append(number)
        if i not in (3, 6):
            server.receive_datagram(datagram[0], ADDR, now=now)
    lean_calls.clear()
    server.write(sid, b"ack this")
    server.ack_with_next_packet(now)
    (datagram,) = server.datagrams_to_send(now=now)
    assert lean_calls == [True]
    _, frames = _frames(client, datagram[0])
    ack = frames[0]
    assert ack[0] == 0x02
    acked = {
        n for start, stop in zip(ack[1::2], ack[2::2], strict=True) for n in range(start, stop)
    }
    delivered = {number for i, number in enumerate(numbers) if i not in (3, 6)}
    assert {n for n in acked if n >= numbers[0]} == delivered
    queue = server._spaces[Epoch.ONE_RTT].ack_queue  # what it has not seen acknowledged
    assert acked == {n for r in queue for n in r}
    # The client acknowledges the server's packet: the server forgets what that ACK held.
    client.receive_datagram(datagram[0], ADDR, now=now + 0.01)
    client.write(sid, b"more")
    client.ack_with_next_packet(now + 0.01)
    (reply,) = client.datagrams_to_send(now=now + 0.01)
    server.receive_datagram(reply[0], ADDR, now=now + 0.02)
    server.write(sid, b"next")
    server.ack_with_next_packet(now + 0.02)
    (datagram,) = server.datagrams_to_send(now=now + 0.02)
    _, frames = _frames(client, datagram[0])
    assert frames[0][0] == 0x02
    assert frames[0][1] > numbers[-1]  # only the packet after the acknowledged ACK


def test_a_fin_alone_and_a_write_larger_than_a_packet(lean_calls: list[bool]) -> None:
    """A close after the data was sent is a FIN-only STREAM frame at the stream's end; a
    write larger than a datagram leaves in several packets of at most the datagram size."""
    client, server = _pair()
    lean_calls.clear()
    sid = client.get_next_available_stream_id()
    payload = bytes(range(256)) * 40  # 10 KiB: several 1200 B datagrams
    client.write(sid, payload)
    offsets = []
    now = 1.0
    for _ in range(20):  # bounded: the pacer lets a few packets go per call
        now += 0.01
        datagrams = [data for data, _ in client.datagrams_to_send(now=now)]
        assert all(len(data) <= client._max_datagram_size for data in datagrams)
        for data in datagrams:
            (frame,) = _stream_frames(_frames(server, data)[1])
            offsets.append(frame[2])
            server.receive_datagram(data, ADDR, now=now)
        for data, _ in server.datagrams_to_send(now=now):
            client.receive_datagram(data, ADDR, now=now)
        if not client.sends_pending(sid):
            break
    assert len(offsets) > 5 and offsets == sorted(offsets) and offsets[0] == 0
    assert _events(server) == {sid: (payload, False)}
    client.write(sid, b"", end_stream=True)
    (datagram,) = client.datagrams_to_send(now=now + 0.01)
    assert _stream_frames(_frames(server, datagram[0])[1]) == [(0x08, sid, len(payload), b"", True)]
    server.receive_datagram(datagram[0], ADDR, now=now + 0.01)
    assert _events(server) == {sid: (b"", True)}
    assert all(lean_calls)


def test_a_key_update_within_one_build(lean_calls: list[bool]) -> None:
    """A key update requested before a build of several packets: aioquic's
    ``encrypt_packet`` protects the first with the next keys, and the packets after it
    in the same build are protected with them too (the keys the builder keeps are
    renewed), so the peer decrypts every one."""
    client, server = _pair()
    crypto = client._cryptos[Epoch.ONE_RTT]
    phase = crypto.key_phase
    client.request_key_update()
    lean_calls.clear()
    sid = client.get_next_available_stream_id()
    payload = bytes(range(256)) * 12  # 3 KiB: three 1200 B datagrams
    client.write(sid, payload)
    datagrams = [data for data, _ in client.datagrams_to_send(now=1.0)]
    assert len(datagrams) >= 2 and crypto.key_phase != phase
    for data in datagrams:
        server.receive_datagram(data, ADDR, now=1.0)
    assert _events(server) == {sid: (payload, False)}
    assert lean_calls == [True]


def test_a_new_connection_id_of_the_peer_is_used_at_once(lean_calls: list[bool]) -> None:
    """After a switch to the peer's next connection id (aioquic's own packet retires the
    old one), the lean builder's packets carry the new id (not the one it kept)."""
    client, server = _pair()
    sid = client.get_next_available_stream_id()
    client.write(sid, b"before")
    _deliver(client, server, now=1.0)
    old = client._peer_cid.cid
    client.change_connection_id()
    _deliver(client, server, now=1.1)  # RETIRE_CONNECTION_ID: aioquic's
    new = client._peer_cid.cid
    assert new != old
    lean_calls.clear()
    client.write(sid, b"after")
    (datagram,) = client.datagrams_to_send(now=1.2)
    assert datagram[0][1 : 1 + len(new)] == new
    server.receive_datagram(datagram[0], ADDR, now=1.2)
    assert _events(server) == {sid: (b"beforeafter", False)}
    assert lean_calls == [True]


def test_connection_ids_we_issue_are_announced_when_new_and_when_lost(
    lean_calls: list[bool],
) -> None:
    """The peer retires a connection id of ours it never used (legal, and nothing else
    for aioquic to send on our side: we issue a new one), then the NEW_CONNECTION_ID
    frame of one is lost: each time aioquic builds our next packet, which announces it,
    and the lean builder (which looks at the ids only after such a change) takes over
    again after it."""
    client, server = _pair()
    sid = client.get_next_available_stream_id()
    client.write(sid, b"request")
    _deliver(client, server, now=1.0)

    def answer(data: bytes, now: float) -> list[bool]:
        lean_calls.clear()
        server.write(sid, data)
        _deliver(server, client, now=now)
        return lean_calls[:1]

    assert answer(b"answer", 1.05) == [True] and server.issued_cids_sent
    client._retire_peer_cid(client._peer_cid_available.pop(0))  # one it did not use
    client.write(sid, b" more")
    _deliver(client, server, now=1.1)  # RETIRE_CONNECTION_ID: the server issues another
    assert not server._retire_connection_ids
    assert not all(issued.was_sent for issued in server._host_cids)
    assert answer(b", more", 1.15) == [False]  # aioquic's: the NEW_CONNECTION_ID
    assert all(issued.was_sent for issued in server._host_cids)
    assert answer(b", lean", 1.2) == [True] and server.issued_cids_sent
    lost = server._host_cids[-1]
    server._on_new_connection_id_delivery(QuicDeliveryState.LOST, lost)  # as on a loss
    assert answer(b", again", 1.25) == [False] and lost.was_sent  # announced again
    assert answer(b".", 1.3) == [True]
    assert _events(client) == {sid: (b"answer, more, lean, again.", False)}
    assert _events(server) == {sid: (b"request more", False)}


def test_the_congestion_window_holds_the_sender(lean_calls: list[bool]) -> None:
    """A large write fills the congestion window and no more while ACKs are held back;
    once they arrive the rest goes, and it all arrives."""
    client, server = _pair()
    lean_calls.clear()
    loss = client._loss
    sid = client.get_next_available_stream_id()
    payload = bytes(range(256)) * 1024  # 256 KiB, far above the initial window
    client.write(sid, payload, end_stream=True)
    held: list[bytes] = []
    now = 1.0
    for _ in range(50):  # the server's ACKs held back (past the pacer: 2 ms steps)
        now += 0.002
        for data, _ in client.datagrams_to_send(now=now):
            server.receive_datagram(data, ADDR, now=now)
        held += [data for data, _ in server.datagrams_to_send(now=now)]
        assert loss.bytes_in_flight <= loss.congestion_window
    assert client.sends_pending(sid)  # the window held the rest back
    assert loss.bytes_in_flight > loss.congestion_window - client._max_datagram_size  # full
    for data in held:
        client.receive_datagram(data, ADDR, now=now)
    received, ended = _events(server).get(sid, (b"", False))
    for _ in range(200):  # bounded: each round trip lets a window's worth go
        now += 0.01
        for data, _ in client.datagrams_to_send(now=now):
            server.receive_datagram(data, ADDR, now=now)
        assert loss.bytes_in_flight <= loss.congestion_window
        data, ended = _events(server).get(sid, (b"", False))
        received += data
        if ended:
            break
        for data, _ in server.datagrams_to_send(now=now + 0.005):
            client.receive_datagram(data, ADDR, now=now + 0.005)
    assert received == payload
    assert all(lean_calls)


def test_a_peer_that_stops_acknowledging(lean_calls: list[bool]) -> None:
    """With every ACK lost the sender stays within its window: after the first window
    only probes leave, ever more rarely, and the connection ends at its idle timeout."""
    client, server = _pair()
    lean_calls.clear()
    sid = client.get_next_available_stream_id()
    client.write(sid, bytes(1 << 20))
    space = client._spaces[Epoch.ONE_RTT]
    loss = client._loss
    sent_bytes = 0
    now = 1.0
    for _ in range(400):  # bounded: until the idle timeout
        timer = client.get_timer()
        if timer is not None and timer <= now:
            client.handle_timer(now=now)
        for data, _ in client.datagrams_to_send(now=now):
            sent_bytes += len(data)
            server.receive_datagram(data, ADDR, now=now)  # the server's answers are lost
        _events(server)
        server.datagrams_to_send(now=now)
        assert len(space.sent_packets) <= 64
        assert loss.bytes_in_flight <= loss.congestion_window + 2 * client._max_datagram_size
        if client._state is not QuicConnectionState.CONNECTED:
            break
        timer = client.get_timer()
        assert timer is not None
        now = max(now + 0.001, timer)
    assert client._state is not QuicConnectionState.CONNECTED  # idle timeout
    assert sent_bytes < 64 * 1024  # the first window and some probes of 1 MiB written
    assert True in lean_calls and False in lean_calls  # probes are aioquic's


def test_credit_updates_leave_in_lean_built_packets(lean_calls: list[bool]) -> None:
    """A server with small windows grants more as it reads (MAX_STREAM_DATA, MAX_DATA)
    in lean-built packets, so a transfer many windows long completes."""
    client, server = _pair(stream_window=16 * 1024, connection_window=64 * 1024)
    lean_calls.clear()
    sid = client.get_next_available_stream_id()
    payload = bytes(range(256)) * 2048  # 512 KiB: 32 stream windows
    client.write(sid, payload, end_stream=True)
    received = b""
    credit: set[int] = set()
    for step in range(2000):  # bounded
        now = 1.0 + step * 0.01
        for data, _ in client.datagrams_to_send(now=now):
            server.receive_datagram(data, ADDR, now=now)
        got = _events(server).get(sid)
        if got is not None:
            received += got[0]
            if got[1]:
                break
        server.ack_with_next_packet(now)
        for data, _ in server.datagrams_to_send(now=now):
            credit.update(f[0] for f in _frames(client, data)[1] if f[0] in (0x10, 0x11))
            client.receive_datagram(data, ADDR, now=now)
    assert received == payload
    assert credit == {0x10, 0x11}
    assert all(lean_calls)


def test_lean_and_aioquic_builders_write_the_same_frames() -> None:
    """Sequential requests (each a new stream with an ACK, answers with FIN, streams
    dropped once done, MAX_STREAMS when slots free up) give the same frames from both
    builders, except that the lean one puts a MAX_STREAMS into the packet being built
    where aioquic, which frees the slots while writing STREAM frames, sends it in a
    packet of its own."""

    def exchange(lean: bool) -> list[list[Frame]]:
        client, server = _pair(max_streams=4)
        client.lean_send = server.lean_send = lean
        seen: list[list[Frame]] = []
        now = 1.0
        for i in range(12):
            sid = client.get_next_available_stream_id()
            client.write(sid, b"request %d" % i, end_stream=True)
            for sender, receiver in ((client, server), (server, client)):
                now += 0.01
                sender.ack_with_next_packet(now)
                for data, _ in sender.datagrams_to_send(now=now):
                    frames = _frames(receiver, data)[1]
                    seen.append([f if f[0] != 0x02 else (0x02,) for f in frames])
                    receiver.receive_datagram(data, ADDR, now=now)
                for got_sid, (data, ended) in _events(receiver).items():
                    if receiver is server and ended:
                        server.write(got_sid, data.upper(), end_stream=True)
        return seen

    def without_max_streams(packets: list[list[Frame]]) -> list[list[Frame]]:
        kept = ([f for f in frames if f[0] != 0x12] for frames in packets)
        return [frames for frames in kept if frames]

    def max_streams(packets: list[list[Frame]]) -> list[Frame]:
        return [f for frames in packets for f in frames if f[0] == 0x12]

    lean, plain = exchange(True), exchange(False)
    assert without_max_streams(lean) == without_max_streams(plain)
    assert max_streams(lean) == max_streams(plain) != []
    assert len(lean) < len(plain)


def _recovery_state(machine: LibP2PQuic, now: float) -> tuple[Any, ...]:
    """The loss recovery's record of what was sent, and the pacer's bucket as of ``now``
    (aioquic's pass brings it up to date even when it sends nothing; the lean builder
    does not, which ends the same: the bucket fills by the time passed, up to a cap)."""
    loss = machine._loss
    pacer = loss._pacer
    pacer.update_bucket(now=now)
    space = machine._spaces[Epoch.ONE_RTT]
    packets = [
        (n, p.in_flight, p.is_ack_eliciting, p.sent_time, p.sent_bytes, len(p.delivery_handlers))
        for n, p in space.sent_packets.items()
    ]
    return (
        packets,
        space.ack_eliciting_in_flight,
        loss._cc.bytes_in_flight,
        loss._cc.congestion_window,
        loss._time_of_last_sent_ack_eliciting_packet,
        (pacer.packet_time, pacer.bucket_max, pacer.bucket_time, pacer.evaluation_time),
        machine._close_at,
        machine._ack_eliciting_sent_since_receipt,
    )


def test_lean_and_aioquic_builders_register_packets_alike() -> None:
    """What the lean builder sends is recorded as aioquic's builder records it (the loss
    recovery's on_packet_sent, the pacer's update_after_send, the idle deadline), after
    each flush of sequential requests, some answers left unacknowledged for a while."""

    def exchange(lean: bool) -> list[tuple[Any, ...]]:
        client, server = _pair(max_streams=64)
        client.lean_send = server.lean_send = lean
        for machine in (client, server):  # as the handshake's sizes left it: alike
            loss = machine._loss
            loss._cc.congestion_window = 20_000
            loss._pacer.bucket_time = loss._pacer.evaluation_time = 0.0
            loss._pacer.update_rate(congestion_window=20_000, smoothed_rtt=loss._rtt_smoothed)
        states = []
        now = 1.0
        for i in range(12):
            sid = client.get_next_available_stream_id()
            client.write(sid, b"request %d" % i * (i + 1), end_stream=i % 3 == 0)
            for sender, receiver in ((client, server), (server, client)):
                now += 0.00004 * (i % 4)  # within the bucket, some within a packet time
                if i % 5:
                    sender.ack_with_next_packet(now)
                datagrams = sender.datagrams_to_send(now=now)
                states.append(_recovery_state(sender, now))
                if i % 4 != 3:  # otherwise lost
                    for data, _ in datagrams:
                        receiver.receive_datagram(data, ADDR, now=now)
                for got_sid, (data, _) in _events(receiver).items():
                    if receiver is server:
                        server.write(got_sid, data.upper())
        return states

    lean, plain = exchange(True), exchange(False)
    assert lean == plain
    assert any(state[5][0] is not None for state in lean)  # the pacer ran


def test_a_sent_packet_is_recorded_as_aioquics_dataclass_makes_it() -> None:
    """The lean builder's ``QuicSentPacket`` is made field by field: the fields of the
    dataclass, in its order (the instances' shared-key layout), a list of its own for
    the logger's frames; an aioquic upgrade that adds or reorders one fails here."""
    client, _ = _pair()
    sid = client.get_next_available_stream_id()
    sent = []
    for _ in range(2):
        client.write(sid, b"x")
        number = client._packet_number
        assert len(client.datagrams_to_send(now=1.0)) == 1
        sent.append(client._spaces[Epoch.ONE_RTT].sent_packets[number])
    first = sent[0]
    assert type(first) is QuicSentPacket
    assert list(vars(first)) == [f.name for f in dataclasses.fields(QuicSentPacket)]
    assert vars(first) == vars(QuicSentPacket(**vars(first)))
    assert first.quic_logger_frames == [] and first.quic_logger_frames is not (
        sent[1].quic_logger_frames
    )


def test_lost_data_and_a_lost_fin_alone_are_both_sent_again(lean_calls: list[bool]) -> None:
    """The first data and a FIN sent on its own (later data arrived in between) are lost:
    both go out again, the FIN at the stream's end, not with the first data."""
    client, server = _pair()
    lean_calls.clear()
    sid, other = client.get_next_available_stream_id(), -1
    now = 1.0
    sent = []
    for write in (b"a" * 100, b"b" * 100, None, b"c", b"d", b"e"):
        now += 0.01
        if write is None:
            client.write(sid, b"", end_stream=True)
        elif write in (b"c", b"d", b"e"):
            if other < 0:
                other = client.get_next_available_stream_id()
            client.write(other, write)
        else:
            client.write(sid, write)
        (datagram,) = client.datagrams_to_send(now=now)
        sent.append(datagram[0])
    for i, data in enumerate(sent):
        if i not in (0, 2):  # the first data and the FIN are lost
            server.receive_datagram(data, ADDR, now=now)
    now += 0.05
    for data, _ in server.datagrams_to_send(now=now):
        client.receive_datagram(data, ADDR, now=now)
    again = [data for data, _ in client.datagrams_to_send(now=now)]
    frames = [f for data in again for f in _stream_frames(_frames(server, data)[1])]
    assert frames == [(0x08, sid, 0, b"a" * 100, False), (0x08, sid, 200, b"", True)]
    for data in again:
        server.receive_datagram(data, ADDR, now=now)
    assert _events(server)[sid] == (b"a" * 100 + b"b" * 100, True)
    assert all(lean_calls)


def test_a_reset_beside_a_finished_stream_is_left_to_aioquic(lean_calls: list[bool]) -> None:
    """A stream done both ways waits to be dropped when another stream is reset: the
    lean builder, which drops finished streams in its one pass, leaves the reset to
    aioquic with a queue that holds no stream it dropped, so the finished stream is
    dropped (and its slot granted) exactly once (aioquic's own drop would raise on it)."""
    client, server = _pair()
    done = client.get_next_available_stream_id()
    client.write(done, b"ask", end_stream=True)
    doomed = client.get_next_available_stream_id()
    client.write(doomed, b"wait")
    _deliver(client, server, now=1.0)
    _events(server)
    server.write(done, b"answer", end_stream=True)
    _deliver(server, client, now=1.01)
    server.write(doomed, b"partial")  # served last: aioquic's queue puts it behind ``done``
    _deliver(server, client, now=1.02)
    client.ack_with_next_packet(1.03)
    _deliver(client, server, now=1.03)
    assert server._streams[done].is_finished  # answered and acknowledged
    assert server._streams_queue == [server._streams[done], server._streams[doomed]]
    limit = server._local_max_streams_bidi
    slots = limit.value
    lean_calls.clear()
    server.reset_stream(doomed, 0)
    datagrams = server.datagrams_to_send(now=1.04)
    assert lean_calls == [False] and datagrams
    assert done not in server._streams and limit.value == slots + 1
    assert server._streams_queue == [server._streams[doomed]]


def test_streams_written_through_aioquic_itself(lean_calls: list[bool]) -> None:
    """Data written with aioquic's own ``send_stream_data`` (HTTP/3 does, for
    WebTransport) sits in aioquic's bytearray buffer: the lean builder sends it too."""
    client, server = _pair()
    lean_calls.clear()
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"through aioquic", end_stream=True)
    _deliver(client, server, now=1.0)
    assert _events(server) == {sid: (b"through aioquic", True)}
    assert lean_calls == [True]


@pytest.mark.parametrize(
    "suite", [CipherSuite.AES_128_GCM_SHA256, CipherSuite.CHACHA20_POLY1305_SHA256]
)
def test_packet_protection_is_aioquics(suite: CipherSuite) -> None:
    """The lean builder's packet protection gives aioquic's bytes (``encrypt_packet``),
    for AES and ChaCha20 header protection, and after a key update (the keys it keeps
    renewed)."""

    client, _ = connected_pair(
        stream_window=1 << 20, connection_window=1 << 20, max_streams=4, suites=[suite]
    )
    crypto = client._cryptos[Epoch.ONE_RTT]
    assert crypto.send.cipher_suite == suite
    cid = client._peer_cid.cid
    for update in (False, True):
        if update:
            client.request_key_update()
        for number, spin, payload in ((5, False, b"\x01\x00"), (0x1234A, True, bytes(range(200)))):
            header = bytes((0x41 | (spin << 5) | (crypto.key_phase << 2),)) + cid
            header += (number & 0xFFFF).to_bytes(2, "big")
            client._spin_bit = spin
            ours = quic_send._protect(client, crypto, number, payload)  # keys renewed
            assert ours == crypto.encrypt_packet(header, payload, number)


def _checked_timer(machine: LibP2PQuic, aioquic_calls: list[None]) -> float | None:
    """``machine.get_timer()``, checked against aioquic's own (the same deadline and the
    same ``_loss_at``, which ``handle_timer`` reads); while connected, it must not have
    asked aioquic's (``aioquic_calls`` counts those calls)."""
    before = len(aioquic_calls)
    lean = machine.get_timer()
    lean_loss_at = machine._loss_at
    if machine._state is QuicConnectionState.CONNECTED:
        assert len(aioquic_calls) == before  # answered itself
    assert AioquicConnection.get_timer(machine) == lean
    assert machine._loss_at == lean_loss_at
    return lean


@pytest.fixture
def aioquic_timer_calls(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """A list that grows by one per call of aioquic's own ``get_timer``."""
    calls: list[None] = []
    get_timer = AioquicConnection.get_timer

    def counted(self: AioquicConnection) -> float | None:
        calls.append(None)
        return get_timer(self)

    monkeypatch.setattr(AioquicConnection, "get_timer", counted)
    return calls


def test_the_timer_is_aioquics(aioquic_timer_calls: list[None]) -> None:
    """Once the handshake is confirmed, ``LibP2PQuic.get_timer`` answers itself with
    aioquic's deadline in every state met here: an ACK delay pending, the probe timeout
    with data in flight, a loss time (a packet overtaken, not yet lost), pacing, the
    probe timeout backing off against a peer that stops acknowledging, the idle
    timeout (then aioquic answers: the connection is over)."""
    client, server = _pair()
    sid = client.get_next_available_stream_id()
    seen = set()

    def check() -> None:
        for machine in (client, server):
            timer = _checked_timer(machine, aioquic_timer_calls)
            space = machine._spaces[Epoch.ONE_RTT]
            for name, present in (
                ("ack delay", space.ack_at is not None and space.ack_at == timer),
                ("loss time", space.loss_time is not None and space.loss_time == timer),
                ("probe", space.loss_time is None and machine._loss_at == timer),
                ("pacing", machine._pacing_at is not None),
                ("backoff", machine._loss._pto_count > 1),
            ):
                if present:
                    seen.add(name)

    # An exchange: data, its ACK after the delay (an RTT of 50 ms).
    client.write(sid, b"ask")
    _deliver(client, server, 1.0)
    check()
    _deliver(server, client, 1.05)
    check()
    # Two packets overtaken by a third: the first two wait for their loss time.
    sent = []
    for i in range(3):
        client.write(sid, b"part %d;" % i)
        (datagram,) = client.datagrams_to_send(now=1.06 + i * 0.001)
        sent.append(datagram[0])
    server.receive_datagram(sent[2], ADDR, now=1.063)
    server.ack_with_next_packet(1.063)
    _deliver(server, client, 1.063)  # an ACK of the third only
    check()
    assert "loss time" in seen
    # Bulk to a peer that stops acknowledging: pacing, then probes ever more rarely.
    client.write(sid, bytes(1 << 20))
    now = 1.064
    for _ in range(400):  # bounded: until the idle timeout
        timer = _checked_timer(client, aioquic_timer_calls)
        if timer is not None and timer <= now:
            client.handle_timer(now=now)
        for data, _ in client.datagrams_to_send(now=now):
            server.receive_datagram(data, ADDR, now=now)  # the server's answers are lost
        _events(server)
        server.datagrams_to_send(now=now)
        check()
        if client._state is not QuicConnectionState.CONNECTED:
            break
        timer = client.get_timer()
        assert timer is not None
        now = max(now + 0.001, timer)
    assert client._state is not QuicConnectionState.CONNECTED  # idle timeout
    assert seen == {"ack delay", "loss time", "probe", "pacing", "backoff"}


def test_small_writes_leave_the_sender_as_aioquics_write_does() -> None:
    """``LibP2PQuic.write`` does a small write to aioquic's bytearray buffer itself: the
    sender ends as aioquic's ``send_stream_data`` leaves it, through writes that join,
    a range left pending after a partial send, an empty write, a FIN, and writes after
    the FIN or a reset, which raise aioquic's error."""
    client, _ = _pair()
    reference, _ = _pair()
    sid = client.get_next_available_stream_id()

    def sender_state(machine: LibP2PQuic) -> tuple[Any, ...]:
        sender = machine._streams[sid].sender
        return (
            bytes(sender._buffer),
            sender._buffer_start,
            sender._buffer_stop,
            sender._buffer_fin,
            sender._pending_eof,
            sender.buffer_is_empty,
            list(sender._pending),
        )

    steps: list[tuple[bytes, bool]] = [(b"abc", False), (b"", False), (b"defg", False)]
    for data, fin in steps:
        client.write(sid, data, end_stream=fin)
        reference.send_stream_data(sid, data, end_stream=fin)
        assert sender_state(client) == sender_state(reference)
    for machine in (client, reference):  # three bytes sent: a range stays pending
        machine._streams[sid].sender.get_frame(3, 3)
    for data, fin in [(b"h" * 100, False), (b"", True)]:
        client.write(sid, data, end_stream=fin)
        reference.send_stream_data(sid, data, end_stream=fin)
        assert sender_state(client) == sender_state(reference)
    assert sender_state(client)[6] == [range(3, 107)]
    with pytest.raises(RuntimeError, match="after FIN"):
        client.write(sid, b"late")
    other = client.get_next_available_stream_id()
    client.write(other, b"x")
    client.reset_stream(other, 0)
    with pytest.raises(RuntimeError, match="reset"):
        client.write(other, b"y")


@pytest.mark.parametrize(
    "before", [b"", b"abc", b"x" * 20_000], ids=["alone", "after data", "bulk"]
)
def test_a_fin_leaves_the_sender_as_aioquics_write_does(before: bytes) -> None:
    """``LibP2PQuic.write_fin`` (a stream's close) leaves the sender as aioquic's
    ``send_stream_data(sid, b"", end_stream=True)`` does: on a new stream, after data
    (the bytearray or, in bulk, the chunked buffer), partly sent; a second FIN and a
    FIN after a reset raise aioquic's error."""
    client, _ = _pair()
    reference, _ = _pair()
    sid = client.get_next_available_stream_id()
    if before:
        client.write(sid, before)
        reference.send_stream_data(sid, before)
        for machine in (client, reference):
            machine._streams[sid].sender.get_frame(3, 3)
    client.write_fin(sid)
    reference.send_stream_data(sid, b"", end_stream=True)
    ours, theirs = client._streams[sid].sender, reference._streams[sid].sender
    for name in ("_buffer_start", "_buffer_stop", "_buffer_fin", "_pending_eof", "buffer_is_empty"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert list(ours._pending) == list(theirs._pending)
    assert bytes(ours._buffer[:]) == bytes(theirs._buffer)
    with pytest.raises(RuntimeError, match="after FIN"):
        client.write_fin(sid)
    other = client.get_next_available_stream_id()
    client.write(other, b"x")
    client.reset_stream(other, 0)
    with pytest.raises(RuntimeError, match="reset"):
        client.write_fin(other)
    assert client._streams[other].sender._buffer_fin is None


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"_rtt_initialized": False},
        {"_rtt_variance": 4.0},  # three probe timeouts above the idle timeout
        {"_rtt_smoothed": 12.0, "_rtt_variance": 0.0},
        {"_rtt_variance": 0.0001},  # below the timer granularity
    ],
)
@pytest.mark.parametrize("remote", [None, 5.0, 100.0])
def test_the_idle_timeout_is_aioquics(change: dict[str, Any], remote: float | None) -> None:
    for machine in _pair():
        machine._remote_max_idle_timeout = remote
        for name, value in change.items():
            setattr(machine._loss, name, value)
        assert machine._idle_timeout() == AioquicConnection._idle_timeout(machine)
        assert machine._pto == machine._loss.get_probe_timeout()  # computed with it


def test_new_transport_parameters_renew_the_cached_idle_and_probe_timeouts() -> None:
    """The idle and probe timeouts are cached per RTT sample; the peer's transport
    parameters (its idle timeout, its ``max_ack_delay``) make them computed again, and
    the timer follows."""
    for machine in _pair():
        machine.idle_timeout()  # cached
        buf = Buffer(capacity=256)
        parameters = QuicTransportParameters(
            initial_source_connection_id=machine._remote_initial_source_connection_id,
            max_idle_timeout=5000,
            max_ack_delay=200,
        )
        if machine._is_client:  # what the client checks the server's parameters for
            parameters.original_destination_connection_id = (
                machine._original_destination_connection_id
            )
            parameters.retry_source_connection_id = machine._retry_source_connection_id
        push_quic_transport_parameters(buf, parameters)
        machine._parse_transport_parameters(buf.data)
        assert machine._remote_max_idle_timeout == 5.0 and machine._loss.max_ack_delay == 0.2
        assert machine.idle_timeout() == AioquicConnection._idle_timeout(machine)
        assert machine._pto == machine._loss.get_probe_timeout()


def test_a_write_takes_what_the_send_limit_leaves_room_for() -> None:
    """``LibP2PQuic.write(..., limit=)``: bytes written and not sent yet stay within the
    limit (send backpressure); what does not fit (and a FIN behind it) is not taken."""
    client, server = _pair()
    sid = client.get_next_available_stream_id()
    assert client.write(sid, b"a" * 100, limit=150) == 100
    assert client.write(sid, b"b" * 100, limit=150) == 50
    assert client.unsent_bytes(sid) == 150
    assert client.write(sid, b"c", end_stream=True, limit=150) == 0
    assert client._streams[sid].sender._buffer_fin is None
    _deliver(client, server, now=1.0)
    assert client.unsent_bytes(sid) == 0
    assert client.write(sid, b"d" * 200, end_stream=True, limit=150) == 150
    assert client._streams[sid].sender._buffer_fin is None  # cut: no FIN yet
    assert client.write(sid, b"e" * 10, end_stream=True) == 10  # no limit: all, FIN
    assert client.unsent_bytes(sid) == 160
    _deliver(client, server, now=1.1)
    assert _events(server)[sid] == (b"a" * 100 + b"b" * 50 + b"d" * 150 + b"e" * 10, True)


def test_reading_a_quarter_window_raises_the_stream_window_at_once() -> None:
    """``consumed`` raises a stream's window (what ``stream_credit_due`` would) as soon as
    a quarter of a window was read, so the lean builder finds the update due from the
    stream's fields; a lost update is due again; less than a quarter changes nothing."""
    window = 16 * 1024
    client, server = _pair(stream_window=window)
    sid = client.get_next_available_stream_id()
    client.write(sid, bytes(window // 2))
    for step in range(20):  # bounded: a few paced packets at a time
        _deliver(client, server, now=1.0 + step * 0.01)
    stream = server._streams[sid]
    assert stream.max_stream_data_local == window  # arrived, not read yet
    assert _events(server)[sid][0] == bytes(window // 2)  # read (consumed)
    raised = stream.max_stream_data_local  # read, when a quarter was passed, + window
    assert window + window // 4 <= raised <= window + window // 2
    assert stream.max_stream_data_local_sent == window  # not sent yet: due
    assert server.stream_credit_due(stream)  # aioquic's path agrees, and changes nothing
    assert stream.max_stream_data_local == raised
    server.ack_with_next_packet(1.3)
    (datagram,) = server.datagrams_to_send(now=1.3)
    assert (0x11, sid, raised) in _frames(client, datagram[0])[1]
    assert stream.max_stream_data_local_sent == raised
    below = raised - window - server._consumed[sid] + window // 4 - 1  # to just below
    assert below >= 0 and not server.consumed(sid, below)  # a quarter: nothing changes
    assert stream.max_stream_data_local == raised
    stream.max_stream_data_local_sent = 0  # aioquic's handler, on the update's loss
    (datagram,) = server.datagrams_to_send(now=1.4)
    assert (0x11, sid, raised) in _frames(client, datagram[0])[1]


@pytest.mark.parametrize("with_ack", [False, True])
def test_a_due_ack_rides_along_when_asked(with_ack: bool) -> None:
    """``datagrams_to_send(now, with_ack=True)`` is ``ack_with_next_packet`` first: an
    answer written at once carries the ACK of the request; without it the ACK waits
    for aioquic's ACK delay."""
    client, server = _pair()
    sid = client.get_next_available_stream_id()
    client.write(sid, b"ask", end_stream=True)
    _deliver(client, server, now=1.0)
    _events(server)
    server.write(sid, b"answer", end_stream=True)
    (datagram,) = server.datagrams_to_send(1.0, with_ack)
    kinds = [f[0] for f in _frames(client, datagram[0])[1]]
    assert (0x02 in kinds) is with_ack and 0x08 in kinds


def test_each_connection_limit_due_is_announced() -> None:
    """``connection_limits_due`` lists every limit due, MAX_DATA first, then
    MAX_STREAMS for bidirectional and unidirectional streams (aioquic's batching rule:
    once the peer has fewer left to open than the update grants), and none when none
    is due."""
    _, server = _pair(max_streams=4)
    bidi, uni = server._local_max_streams_bidi, server._local_max_streams_uni
    max_data = server._local_max_data
    assert server.connection_limits_due() is None
    bidi.used, bidi.value = bidi.sent, bidi.sent + 3  # all opened, three done with
    assert server.connection_limits_due() == [bidi]
    assert not server.consumed(1, server._connection_window // 4 - 1)  # not due yet
    assert server.connection_limits_due() == [bidi]
    assert server.consumed(1, server._connection_window - server._connection_window // 4 + 1)
    assert server.connection_limits_due() == [max_data, bidi]
    assert max_data.value == max_data.sent + server._connection_window
    uni.sent = uni.used = 2
    uni.value = 5
    assert server.connection_limits_due() == [max_data, bidi, uni]
    bidi.sent = bidi.value
    assert server.connection_limits_due() == [max_data, uni]
    max_data.sent = max_data.value
    assert server.connection_limits_due() == [uni]


def _varints(*values: int) -> bytes:
    """``values`` as aioquic's ``Buffer.push_uint_var`` writes them (its builder's way)."""
    buf = Buffer(capacity=8 * len(values))
    for value in values:
        buf.push_uint_var(value)
    return buf.data


_VARINT_BOUNDS = [0, 63, 64, 16383, 16384, (1 << 30) - 1, 1 << 30, (1 << 62) - 1]


@pytest.mark.parametrize("value", _VARINT_BOUNDS)
def test_a_stream_frame_header_is_packed_as_buffer_writes_it(value: int) -> None:
    """The lean builder packs a STREAM frame's header in one struct call: the bytes of
    aioquic's builder (each varint in its shortest form), for ids and offsets at the
    bounds of each varint size, with and without an offset."""
    for sid, offset in ((value, 0), (value, 5), (8, value), (value, value)):
        kind = 0x0A | (4 if offset else 0)
        fields = (sid, offset) if offset else (sid,)
        for length in (0, 1, 0x3FFF):
            expected = bytes((kind,)) + _varints(*fields) + (0x4000 | length).to_bytes(2)
            assert quic_send._stream_head(kind, sid, offset, length) == expected
            assert quic_send._stream_head(kind | 1, sid, offset, length)[1:] == expected[1:]


@pytest.mark.parametrize("largest", _VARINT_BOUNDS)
@pytest.mark.parametrize("waited", [0.0, 0.0001, 0.02, 2000.0])  # ACK delay sizes 1-8 B
def test_a_one_range_ack_is_packed_as_aioquic_writes_it(largest: int, waited: float) -> None:
    """The one-range ACK frame, packed in one struct call: aioquic's ``push_ack_frame``
    bytes, for the largest acknowledged, the delay and the first range at the bounds of
    each varint size; the delivery handler and the cleared deadline as before."""
    for first in {0, largest // 2, largest, 63, 64, 16383, 16384}:
        if first > largest:
            continue
        now = 5000.0
        space = SimpleNamespace(
            ack_queue=RangeSet([range(largest - first, largest + 1)]),
            largest_received_time=now - waited,
            largest_received_packet=largest,
            ack_at=now,
        )
        quic = SimpleNamespace(_local_ack_delay_exponent=3)
        frames: list[bytes | bytearray] = []
        handlers: list[tuple[Any, Any]] = []
        assert quic_send._write_ack(quic, frames, space, 1200, now, handlers) == 1
        delay = int((now - space.largest_received_time) * 1_000_000) >> 3  # aioquic's
        expected = Buffer(capacity=64)
        expected.push_uint8(0x02)
        push_ack_frame(expected, space.ack_queue, delay, 63)
        assert frames == [expected.data]
        assert handlers == [(ack_delivered, (space, largest))] and space.ack_at is None


def test_lean_and_aioquic_builders_send_the_same_bytes_past_one_byte_fields() -> None:
    """Sequential requests past 16 streams (2-byte stream ids), answers past 64 bytes
    (2-byte offsets of a FIN sent alone) and packet numbers past 64 (2-byte ACK fields):
    both builders send datagrams of the same sizes holding the same frames."""

    def exchange(lean: bool) -> list[tuple[int, list[Frame]]]:
        client, server = _pair(max_streams=64)
        client.lean_send = server.lean_send = lean
        seen = []
        now = 1.0
        for i in range(24):
            sid = client.get_next_available_stream_id()
            client.write(sid, bytes(40 + 10 * i))
            for sender, receiver in ((client, server), (server, client)):
                now += 0.001
                sender.ack_with_next_packet(now)
                for data, _ in sender.datagrams_to_send(now=now):
                    frames = _frames(receiver, data)[1]
                    seen.append((len(data), frames))
                    receiver.receive_datagram(data, ADDR, now=now)
                for got_sid, (data, ended) in _events(receiver).items():
                    if receiver is server and not ended:
                        server.write(got_sid, data)
                        server.write(got_sid, b"", end_stream=True)
            client.write(sid, b"", end_stream=True)
        return seen

    lean, plain = exchange(True), exchange(False)
    assert lean == plain
    stream_frames = [f for _, frames in lean for f in _stream_frames(frames)]
    assert max(f[1] for f in stream_frames) >= 64 and max(f[2] for f in stream_frames) >= 64


def test_streams_a_full_packet_leaves_go_in_the_next_packets_of_one_build(
    lean_calls: list[bool],
) -> None:
    """Three streams ready, the first one's data more than a packet holds: the streams
    behind it that found the packet full are left for the next packets of the same
    build, so one ``datagrams_to_send`` sends them all (none is dropped from the build
    and left waiting for the next flush)."""
    client, server = _pair()
    lean_calls.clear()
    first = client.get_next_available_stream_id()
    big = bytes(range(256)) * (2 * client._max_datagram_size // 256 + 1)
    client.write(first, big, end_stream=True)
    second = client.get_next_available_stream_id()
    client.write(second, b"second", end_stream=True)
    third = client.get_next_available_stream_id()
    client.write(third, b"third", end_stream=True)
    datagrams = client.datagrams_to_send(now=1.0)
    assert len(datagrams) >= 3 and lean_calls == [True]
    assert not any(client.sends_pending(sid) for sid in (first, second, third))
    for data, _ in datagrams:
        server.receive_datagram(data, ADDR, now=1.0)
    assert _events(server) == {
        first: (big, True),
        second: (b"second", True),
        third: (b"third", True),
    }
