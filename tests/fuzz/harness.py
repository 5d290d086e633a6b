"""Seeded fuzzing of every wire parser: hostile bytes in, documented outcomes out.

Each :class:`Target` wraps one parser the way its driver uses it (a sans-IO machine fed
in random chunks, then EOF; a codec called on a whole message) and says what a
documented outcome is: returning normally, raising a :class:`~aiop2p.errors.P2PError`,
or a machine's documented events, its terminal failure event carrying a ``P2PError``.
Anything else is a crash: another exception type, an event of a type the machine does
not document, a failure event carrying a foreign exception.  A hang is an input that
takes longer than ``hang_seconds`` (the standalone script arms a timer; the pytest slice
relies on pytest-timeout).

Inputs are random bytes or mutations of valid messages (bit flips, byte edits,
truncations, splices, length-field edits, insertions, deletions, duplications), drawn
from one ``random.Random(seed)`` per target: the same seed and count give the same
inputs.  Every key, nonce and message used as a seed is fixed, so that holds across runs.

``run_fuzz.py`` beside this file is the long pass; ``test_fuzz_slice.py`` runs the same
targets with a few hundred inputs each in the default suite.
"""

from __future__ import annotations

import random
import signal
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from aiop2p._wire import base58, multibase
from aiop2p._wire.framing import take_uvarint_frame
from aiop2p._wire.protobuf import decode_fields, encode_bytes_field, encode_varint_field
from aiop2p._wire.varint import decode_uvarint, encode_uvarint
from aiop2p.errors import P2PError
from aiop2p.identity import KeyPair, KeyType, PeerId, PublicKey
from aiop2p.multiaddr import Multiaddr
from aiop2p.network.codecs import JsonCodec
from aiop2p.protocols import (
    dcutr,
    envelope,
    kad,
    mdns,
    multistream,
    noise,
    peer_record,
    relay_v2,
    yamux,
)
from aiop2p.protocols.identify import IdentifyMessage
from aiop2p.protocols.role import Role

__all__ = ["ERROR", "OK", "Stats", "Target", "build_targets", "format_table", "run_target"]

OK = "ok"
"""The input was accepted (or politely ignored)."""
ERROR = "error"
"""The input was refused the documented way: a P2PError raised or a failure event."""

MAX_INPUT_BYTES = 70_000
"""Mutations never grow an input beyond this (a Noise frame is at most 65,537 bytes)."""


class Crash(Exception):
    """An undocumented outcome that is not an exception of its own (a foreign event)."""


class Hang(BaseException):  # a BaseException: `except Exception` cannot eat it
    """Raised by the timer of :func:`run_target` when one input takes too long."""


@dataclass
class Target:
    """One parser: ``run(data, rng)`` returns :data:`OK` or :data:`ERROR`, or raises."""

    name: str
    seeds: Sequence[bytes]
    run: Callable[[bytes, random.Random], str]
    max_random_size: int = 300


@dataclass
class Stats:
    name: str
    inputs: int = 0
    ok: int = 0
    errors: int = 0
    crashes: int = 0
    hangs: int = 0
    seconds: float = 0.0
    examples: list[tuple[bytes, str]] = field(default_factory=list)
    """The first crashing inputs with their traceback (at most ``max_examples``)."""


# -- mutations ---------------------------------------------------------------------------

_INTERESTING_BYTES = (0x00, 0x01, 0x02, 0x0A, 0x2F, 0x7F, 0x80, 0x81, 0xFE, 0xFF)
_INTERESTING_NUMBERS = (
    0, 1, 2, 7, 8, 31, 32, 33, 127, 128, 255, 256, 1023, 1024, 4096, 0x7FFF, 0xFFFF,
    0x10000, 0x10001, 2**24, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
)  # fmt: skip


def _leb128(value: int) -> bytes:
    """Unsigned LEB128 without the 63-bit bound (hostile peers send overlong ones too)."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _number(rng: random.Random, size: int) -> int:
    choice = rng.random()
    if choice < 0.6:
        return rng.choice(_INTERESTING_NUMBERS)
    if choice < 0.8:
        return max(0, size + rng.randint(-3, 3))
    return rng.getrandbits(rng.choice((8, 16, 32, 64)))


def _mutate_once(data: bytearray, rng: random.Random, seeds: Sequence[bytes]) -> bytearray:
    n = len(data)
    op = rng.randrange(11)
    pos = rng.randrange(n + 1)
    if op == 0 and n:  # bit flip
        data[pos % n] ^= 1 << rng.randrange(8)
    elif op == 1 and n:  # interesting or random byte
        byte = rng.choice(_INTERESTING_BYTES) if rng.random() < 0.5 else rng.randrange(256)
        data[pos % n] = byte
    elif op == 2:  # truncate the end
        del data[pos:]
    elif op == 3:  # truncate the start
        del data[:pos]
    elif op == 4:  # splice with another seed (or itself)
        other = rng.choice(seeds) if seeds else bytes(data)
        data = data[:pos] + other[rng.randrange(len(other) + 1) :]
    elif op == 5:  # varint length field edit: overwrite 1-3 bytes with a hostile uvarint
        data[pos : pos + rng.randint(1, 3)] = _leb128(_number(rng, n))
    elif op == 6:  # fixed-width big-endian length edit (Noise: 2 bytes, Yamux: 4 bytes)
        width = rng.choice((2, 4))
        value = _number(rng, n) & ((1 << (8 * width)) - 1)
        data[pos : pos + width] = value.to_bytes(width, "big")
    elif op == 7:  # insert random bytes
        data[pos:pos] = rng.randbytes(rng.randint(1, 16))
    elif op == 8:  # delete a range
        del data[pos : pos + rng.randint(1, 16)]
    elif op == 9 and n:  # duplicate a slice a few times
        start = rng.randrange(n)
        chunk = data[start : start + rng.randint(1, 64)]
        data[pos:pos] = chunk * rng.randint(1, 32)
    else:  # an overlong or non-minimal varint
        data[pos:pos] = b"\x80" * rng.randint(1, 12) + b"\x00"
    return data


def mutate(rng: random.Random, seeds: Sequence[bytes], max_random_size: int) -> bytes:
    """One fuzz input: random bytes (15 %), a seed as is (2 %), or a mutated seed."""
    choice = rng.random()
    if choice < 0.15 or not seeds:
        size = rng.randint(0, 16) if rng.random() < 0.5 else rng.randint(0, max_random_size)
        return rng.randbytes(size)
    data = bytearray(rng.choice(seeds))
    if choice < 0.17:
        return bytes(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        data = _mutate_once(data, rng, seeds)
        if len(data) > MAX_INPUT_BYTES:
            del data[MAX_INPUT_BYTES:]
    return bytes(data)


def chunks(data: bytes, rng: random.Random) -> Iterator[bytes]:
    """``data`` split the way a socket might deliver it: whole, byte by byte, or at random."""
    choice = rng.random()
    if choice < 0.4 or len(data) <= 1:
        yield data
        return
    if choice < 0.5 and len(data) <= 300:
        for i in range(len(data)):
            yield data[i : i + 1]
        return
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 8))))
    start = 0
    for cut in [*cuts, len(data)]:
        yield data[start:cut]
        start = cut


# -- running -------------------------------------------------------------------------------


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang()


def run_target(
    target: Target,
    count: int,
    seed: int,
    *,
    hang_seconds: float | None = None,
    max_examples: int = 5,
) -> Stats:
    """Feed ``count`` inputs to ``target``; count each outcome."""
    rng = random.Random(f"{seed}:{target.name}")
    stats = Stats(target.name)
    previous: Any = None
    if hang_seconds is not None:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
    started = time.perf_counter()
    try:
        for _ in range(count):
            data = mutate(rng, target.seeds, target.max_random_size)
            run_rng = random.Random(rng.getrandbits(64))
            stats.inputs += 1
            try:
                if hang_seconds is not None:
                    signal.setitimer(signal.ITIMER_REAL, hang_seconds)
                try:
                    outcome = target.run(data, run_rng)
                finally:
                    if hang_seconds is not None:
                        signal.setitimer(signal.ITIMER_REAL, 0)
            except P2PError:
                stats.errors += 1
            except Hang:
                stats.hangs += 1
                _keep(stats, data, f"hang: more than {hang_seconds} s", max_examples)
            except Exception:
                stats.crashes += 1
                _keep(stats, data, traceback.format_exc(), max_examples)
            else:
                if outcome == OK:
                    stats.ok += 1
                else:
                    stats.errors += 1
    finally:
        if hang_seconds is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    stats.seconds = time.perf_counter() - started
    return stats


def _keep(stats: Stats, data: bytes, why: str, max_examples: int) -> None:
    if len(stats.examples) < max_examples:
        stats.examples.append((data, why))


def format_table(all_stats: Sequence[Stats]) -> str:
    header = ("parser", "inputs", "ok", "documented-error", "crashes", "hangs", "seconds")
    rows = [
        (s.name, s.inputs, s.ok, s.errors, s.crashes, s.hangs, f"{s.seconds:.1f}")
        for s in all_stats
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in
                 enumerate(zip(row, widths, strict=True))]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- checking a machine's events -----------------------------------------------------------


def _check(events: Sequence[object], allowed: tuple[type, ...], failures: tuple[type, ...]) -> str:
    """:data:`ERROR` if a failure event is among ``events``; a foreign event is a crash."""
    outcome = OK
    for event in events:
        if not isinstance(event, allowed):
            raise Crash(f"undocumented event {event!r}")
        error = getattr(event, "error", None)
        if error is not None and not isinstance(error, P2PError):
            raise Crash(f"event {event!r} carries a foreign exception")
        if isinstance(event, failures) or error is not None:
            outcome = ERROR
    return outcome


def _worst(a: str, b: str) -> str:
    return ERROR if ERROR in (a, b) else OK


def _drive(
    machine: Any,
    data: bytes,
    rng: random.Random,
    allowed: tuple[type, ...],
    failures: tuple[type, ...],
    on_event: Callable[[object], None] | None = None,
    feed: Callable[[bytes], None] | None = None,
) -> str:
    """Feed ``data`` in chunks as a driver does (stop when done), then EOF."""
    feed = feed or machine.receive_data
    outcome = OK
    for piece in chunks(data, rng):
        if machine.done:
            break
        feed(piece)
        machine.data_to_send()
        events = machine.events_received()
        outcome = _worst(outcome, _check(events, allowed, failures))
        if on_event is not None:
            for event in events:
                on_event(event)
    if not machine.done:
        machine.receive_eof()
        outcome = _worst(outcome, _check(machine.events_received(), allowed, failures))
    machine.data_to_send()
    return outcome


def _each(data: bytes, *parsers: Callable[[bytes], object]) -> str:
    """Run every parser on ``data`` (a P2PError is a documented refusal): :data:`OK` if
    at least one accepted it."""
    outcome = ERROR
    for parse in parsers:
        try:
            parse(data)
        except P2PError:
            continue
        outcome = OK
    return outcome


def _text(data: bytes) -> str:
    """Bytes as text the way Python hands over argv and file names (lone surrogates kept)."""
    return data.decode("utf-8", "surrogateescape")


# -- fixed identities and keys (seeds must not change between runs) -------------------------

_ALICE = KeyPair.from_ed25519_seed(bytes(range(1, 33)))
_BOB = KeyPair.from_ed25519_seed(bytes(range(33, 65)))
_RELAY = KeyPair.from_ed25519_seed(bytes(range(65, 97)))


def _x25519(byte: int) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes([byte]) * 32)


_ALICE_STATIC, _ALICE_EPHEMERAL = _x25519(2), _x25519(3)
_BOB_STATIC, _BOB_EPHEMERAL = _x25519(5), _x25519(6)

# A 2048-bit RSA public key (DER SubjectPublicKeyInfo), fixed so seeds are reproducible.
_RSA_DER = bytes.fromhex(
    "30820122300d06092a864886f70d01010105000382010f003082010a0282010100beadeb79e1e9d3eff1"
    "48c60035465d5c8eee6fd20443af75770a56dde6bc3a48e047253af1e5321ded850c6c649bd120552535"
    "67d04aa1218d8d28b052546a1a2b4920d25f590b631391aa6cb9e003d3343d05acb42d1c25fa785bf9a7"
    "347a6b4e9ade3201861ecfd34624af89c8af95e10a0d7f164b62c2b1107116c1fd8d7ff176a99585e031"
    "feca3a80f39ca75d20e9980a4cddb51a89d3a562d44dfb9d80704098a0e57ea144f2130cd91ce5388896"
    "bbd8e4d8cecec19121a0da22d2075f898a98cbd57e9afa3cc6e834b268d813b0faaa054044ef877626d5"
    "1486f958d6140938b37edfbfad0279325aa269faa12e767b1a977dee5db0a160cf2d7fa61d0203010001"
)


def _public_keys() -> list[bytes]:
    """``PublicKey`` protobufs of every libp2p key type."""
    keys = [_ALICE.public_key.to_protobuf()]
    k1 = ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256K1()).public_key()
    keys.append(PublicKey.from_cryptography(k1).to_protobuf())
    p256 = ec.derive_private_key(0xFEDCBA0987654321, ec.SECP256R1()).public_key()
    keys.append(PublicKey.from_cryptography(p256).to_protobuf())
    keys.append(encode_varint_field(1, KeyType.RSA) + encode_bytes_field(2, _RSA_DER))
    return keys


# -- targets ---------------------------------------------------------------------------------


def _varint_target() -> Target:
    def run(data: bytes, rng: random.Random) -> str:
        pos = rng.randrange(len(data) + 1)
        outcome = OK
        for start in (0, pos):
            try:
                got = decode_uvarint(data, start)
            except P2PError:
                outcome = ERROR
                continue
            if got is not None and not (0 <= got[0] < 2**63 and start < got[1] <= len(data)):
                raise Crash(f"decode_uvarint({data!r}, {start}) returned {got}")
        return outcome

    seeds = [encode_uvarint(n) for n in (0, 1, 127, 128, 300, 2**32, 2**63 - 1)]
    return Target("varint", seeds, run, max_random_size=16)


def _framing_target() -> Target:
    def run(data: bytes, rng: random.Random) -> str:
        buffer = bytearray()
        limit = rng.choice((16, 1024, 65536))
        for piece in chunks(data, rng):
            buffer += piece
            while (frame := take_uvarint_frame(buffer, limit, "frame")) is not None:
                if len(frame) > limit:
                    raise Crash(f"frame of {len(frame)} bytes above the limit {limit}")
        return OK

    seeds = [
        encode_uvarint(len(p)) + p for p in (b"", b"x", b"hello" * 3, bytes(200), bytes(1000))
    ] + [encode_uvarint(3) + b"abc" + encode_uvarint(2) + b"de"]
    return Target("varint-framing", seeds, run)


def _protobuf_target() -> Target:
    def run(data: bytes, rng: random.Random) -> str:
        for number, value in decode_fields(data):
            if number < 1 or not isinstance(value, int | bytes):
                raise Crash(f"field {number} = {value!r}")
        return OK

    seeds = [
        encode_varint_field(1, 150) + encode_bytes_field(2, b"testing"),
        encode_bytes_field(15, bytes(40)) + b"\x0d\x01\x02\x03\x04" + b"\x09" + bytes(8),
        _ALICE.public_key.to_protobuf(),
    ]
    return Target("protobuf", seeds, run)


class _FastNegotiator:
    """multistream as ``_aio/stream.py`` drives it, seen as a machine: the fast path
    (:func:`match_proposal` for a listener offering ``offered``, :class:`Proposal` for a
    dialer proposing ``proposal``) and the full machine it falls back to; ``fast=False``
    is the full machine alone.  ``log`` collects the bytes sent and the events."""

    def __init__(
        self, *, fast: bool, offered: tuple[str, ...] = (), proposal: str | None = None
    ) -> None:
        self._offered = offered
        self._proposal = None if proposal is None else multistream.single_proposal(proposal, 1024)
        self._machine: multistream.MultistreamDialer | multistream.MultistreamListener | None = None
        self._selected = False
        self._out = b""
        self._events: list[object] = []
        self.log: list[object] = []
        if not fast:
            self._build()

    def _build(self) -> multistream.MultistreamDialer | multistream.MultistreamListener:
        if self._machine is None:
            if self._proposal is not None:
                self._machine = self._proposal.dialer()
            else:
                self._machine = multistream.MultistreamListener(self._offered)
        return self._machine

    @property
    def done(self) -> bool:
        return self._selected or (self._machine is not None and self._machine.done)

    def receive_data(self, data: bytes) -> None:
        if self._machine is None and self._proposal is not None:
            leftover = self._proposal.match_echo(data)
            if leftover is not None:
                self._select(self._proposal.protocol, leftover)
                return
            after_header = self._proposal.match_header(data)
            if after_header is not None:
                self._proposal = after_header
                return
        elif self._machine is None:
            match = multistream.match_proposal(data, self._offered, 1024)
            if match is not None:
                self._out += data[: match[1]]
                self._select(match[0], data[match[1] :])
                return
        self._build().receive_data(data)

    def _select(self, protocol: str, leftover: bytes) -> None:
        self._selected = True
        self._events.append(multistream.ProtocolSelected(protocol, leftover))

    def receive_eof(self) -> None:
        if not self._selected:
            self._build().receive_eof()

    def data_to_send(self) -> bytes:
        out, self._out = self._out, b""
        if self._machine is not None:
            out += self._machine.data_to_send()
        if out:
            self.log.append(out)
        return out

    def events_received(self) -> list[object]:
        events, self._events = self._events, []
        if self._machine is not None:
            events += self._machine.events_received()
        for event in events:
            error = getattr(event, "error", None)
            self.log.append(event if error is None else (type(error), str(error)))
        return events


def _differential(
    make: Callable[[bool], _FastNegotiator],
    data: bytes,
    rng: random.Random,
    allowed: tuple[type, ...],
    failures: tuple[type, ...],
) -> str:
    """Drive the fast path and the full machine on the same chunks: any difference in the
    bytes sent or the events is a crash."""
    full_rng = random.Random()
    full_rng.setstate(rng.getstate())
    fast = make(True)
    outcome = _drive(fast, data, rng, allowed, failures)
    full = make(False)
    _drive(full, data, full_rng, allowed, failures)
    if fast.log != full.log:
        raise Crash(f"the fast path differs from the machine: {fast.log!r} != {full.log!r}")
    return outcome


def _multistream_targets() -> list[Target]:
    ms = multistream
    events = (ms.ProtocolSelected, ms.ProtocolsListed, ms.NegotiationFailed)
    failures = (ms.NegotiationFailed,)
    header = ms.encode_message(ms.MULTISTREAM_PROTOCOL_ID)
    ping = ms.encode_message("/ipfs/ping/1.0.0")

    def listener(data: bytes, rng: random.Random) -> str:
        machine = ms.MultistreamListener(("/ipfs/ping/1.0.0", "/p2p/1.0.0"), max_attempts=8)
        return _drive(machine, data, rng, events, failures)

    def dialer(data: bytes, rng: random.Random) -> str:
        protocols = ["/p2p/1.0.0", "/ipfs/ping/1.0.0"]
        if rng.random() < 0.3:
            machine = ms.MultistreamDialer(["/ipfs/ping/1.0.0"], optimistic=True)
        elif rng.random() < 0.3:
            machine = ms.MultistreamDialer([])
            machine.list_protocols()
        else:
            machine = ms.MultistreamDialer(protocols)
        return _drive(machine, data, rng, events, failures)

    ls_answer = ms.encode_message("ls")
    listener_seeds = [
        header + ping + bytes(32),
        header + ms.encode_message("/unknown/1") + ping,
        header + ls_answer + ping,
        header + ms.encode_message("na") + ping,
    ]
    listing = b"".join(ms.encode_message(p) for p in ("/a/1", "/ipfs/ping/1.0.0"))
    dialer_seeds = [
        header + ping + bytes(32),
        header + ms.encode_message("na") + ping,
        header + encode_uvarint(len(listing) + 1) + listing + b"\n",
    ]
    offered = ("/ipfs/ping/1.0.0", "/p2p/1.0.0")

    def fast_listener(data: bytes, rng: random.Random) -> str:
        def make(fast: bool) -> _FastNegotiator:
            return _FastNegotiator(offered=offered, fast=fast)

        return _differential(make, data, rng, events, failures)

    def fast_dialer(data: bytes, rng: random.Random) -> str:
        def make(fast: bool) -> _FastNegotiator:
            return _FastNegotiator(proposal="/ipfs/ping/1.0.0", fast=fast)

        return _differential(make, data, rng, events, failures)

    return [
        Target("multistream-listener", listener_seeds, listener),
        Target("multistream-dialer", dialer_seeds, dialer),
        Target("multistream-fast-listener", listener_seeds, fast_listener),
        Target("multistream-fast-dialer", dialer_seeds, fast_dialer),
    ]


def _noise_handshake(
    initiator_identity: KeyPair = _ALICE, responder_payload: bytes | None = None
) -> tuple[noise.NoiseHandshake, noise.NoiseHandshake]:
    initiator = noise.NoiseHandshake(
        role=Role.INITIATOR,
        identity=initiator_identity,
        static_key=_ALICE_STATIC,
        ephemeral_key=_ALICE_EPHEMERAL,
        expected_peer=_BOB.peer_id,
    )
    responder = noise.NoiseHandshake(
        role=Role.RESPONDER, identity=_BOB, static_key=_BOB_STATIC, ephemeral_key=_BOB_EPHEMERAL
    )
    if responder_payload is not None:
        responder._payload = responder_payload
    return initiator, responder


def _noise_transcript() -> tuple[bytes, bytes, bytes]:
    """Messages 1, 2 and 3 (with their length prefixes) of a handshake with fixed keys."""
    initiator, responder = _noise_handshake()
    message1 = initiator.data_to_send()
    responder.receive_data(message1)
    message2 = responder.data_to_send()
    initiator.receive_data(message2)
    message3 = initiator.data_to_send()
    responder.receive_data(message3)
    completed = [e for e in responder.events_received() if isinstance(e, noise.HandshakeCompleted)]
    assert completed and completed[0].remote_peer == _ALICE.peer_id
    return message1, message2, message3


def _noise_targets() -> list[Target]:
    events = (noise.HandshakeCompleted, noise.HandshakeFailed)
    failures = (noise.HandshakeFailed,)
    message1, message2, message3 = _noise_transcript()

    def responder(data: bytes, rng: random.Random) -> str:
        _, machine = _noise_handshake()
        return _drive(machine, data, rng, events, failures)

    def initiator(data: bytes, rng: random.Random) -> str:
        machine, _ = _noise_handshake()
        machine.data_to_send()
        return _drive(machine, data, rng, events, failures)

    def payload(data: bytes, rng: random.Random) -> str:
        """``data`` as the responder's identity payload, through a real handshake."""
        dialer, listener = _noise_handshake(
            responder_payload=data[: noise.MAX_PLAINTEXT_SIZE - 200]
        )
        listener.receive_data(dialer.data_to_send())
        return _drive(dialer, listener.data_to_send(), rng, events, failures)

    good_payload = noise.encode_handshake_payload(
        _BOB.public_key.to_protobuf(), _BOB.sign(noise.SIGNATURE_PREFIX + _public(_BOB_STATIC))
    )
    extensions = encode_bytes_field(4, encode_bytes_field(2, b"/yamux/1.0.0"))
    payload_seeds = [good_payload, good_payload + extensions]
    payload_seeds += [
        noise.encode_handshake_payload(key, bytes(64)) for key in _public_keys()
    ]  # fmt: skip
    return [
        Target("noise-responder", [message1 + message3, message1], responder),
        Target("noise-initiator", [message2, message2 + b"\x00\x05hello"], initiator),
        Target("noise-payload", payload_seeds, payload),
    ]


def _public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _noise_transport_target() -> Target:
    send_key, receive_key, handshake_hash = bytes(range(32)), bytes(range(32, 64)), bytes(32)

    def run(data: bytes, rng: random.Random) -> str:
        receiver = noise.NoiseTransport(receive_key, send_key, handshake_hash=handshake_hash)
        for piece in chunks(data, rng):
            plaintexts = receiver.decrypt(piece)  # DecryptionError: documented, terminal
            if not all(isinstance(p, bytes) for p in plaintexts):
                raise Crash(f"decrypt returned {plaintexts!r}")
        if receiver.buffered_size > noise.MAX_NOISE_FRAME_SIZE + 2:
            raise Crash(f"{receiver.buffered_size} bytes buffered")
        return OK

    sender = noise.NoiseTransport(send_key, receive_key, handshake_hash=handshake_hash)
    seeds = [
        sender.encrypt(b"hello"),
        sender.encrypt(b"") + sender.encrypt(bytes(100)),
        sender.encrypt(bytes(3000)),
    ]
    return Target("noise-transport", seeds, run)


def _yamux_target() -> Target:
    y = yamux
    events = (
        y.StreamOpened,
        y.StreamDataReceived,
        y.StreamEnded,
        y.StreamReset,
        y.StreamWindowUpdated,
        y.PongReceived,
        y.GoAwayReceived,
        y.SessionTerminated,
    )
    config = y.YamuxConfig(max_streams=16, max_ack_backlog=8)

    def run(data: bytes, rng: random.Random) -> str:
        session = y.YamuxSession(role=rng.choice(list(Role)), config=config)
        if rng.random() < 0.3:
            stream = session.open_stream()
            session.send_data(stream, b"ping")
        if rng.random() < 0.2:
            session.ping(7)

        def on_event(event: object) -> None:
            if (
                isinstance(event, y.StreamDataReceived)
                and rng.random() < 0.8
                and event.stream_id in session.stream_ids
            ):
                session.acknowledge_received_data(event.stream_id, len(event.data))

        outcome = OK
        for piece in chunks(data, rng):
            if session.is_terminated:
                break
            session.receive_data(piece)
            session.data_to_send()
            received = session.events_received()
            outcome = _worst(outcome, _check(received, events, (y.SessionTerminated,)))
            for event in received:
                on_event(event)
        if not session.is_terminated:  # the end of a connection: not a refusal
            session.receive_eof()
            _check(session.events_received(), events, ())
        return outcome

    h = y.encode_frame_header
    syn = h(y.TYPE_WINDOW_UPDATE, y.FLAG_SYN, 1, 0) + h(y.TYPE_DATA, 0, 1, 5) + b"hello"
    seeds = [
        syn,
        syn + h(y.TYPE_DATA, y.FLAG_FIN, 1, 0) + h(y.TYPE_WINDOW_UPDATE, 0, 1, 1 << 20),
        h(y.TYPE_DATA, y.FLAG_SYN, 2, 3) + b"abc" + h(y.TYPE_WINDOW_UPDATE, y.FLAG_RST, 2, 0),
        h(y.TYPE_PING, y.FLAG_SYN, 0, 42) + h(y.TYPE_PING, y.FLAG_ACK, 0, 7),
        h(y.TYPE_GO_AWAY, 0, 0, y.GoAwayCode.NORMAL),
        syn + h(y.TYPE_WINDOW_UPDATE, y.FLAG_ACK, 2, 0) + h(y.TYPE_DATA, 0, 1, 300_000),
    ]
    return Target("yamux", seeds, run)


def _identify_target() -> Target:
    def run(data: bytes, rng: random.Random) -> str:
        message = IdentifyMessage.decode(data)
        outcome = OK
        if message.public_key is not None:
            outcome = _each(message.public_key, PublicKey.from_protobuf)
        for raw in (*message.listen_addrs, message.observed_addr or b""):
            outcome = _worst(outcome, _each(raw, Multiaddr.from_bytes))
        return outcome

    message = IdentifyMessage(
        protocol_version="ipfs/0.1.0",
        agent_version="aiop2p/fuzz",
        public_key=_ALICE.public_key.to_protobuf(),
        listen_addrs=(Multiaddr("/ip4/127.0.0.1/tcp/4001").to_bytes(),),
        observed_addr=Multiaddr("/ip6/::1/tcp/1/ws").to_bytes(),
        protocols=("/ipfs/ping/1.0.0", "/p2p/1.0.0"),
        signed_peer_record=bytes(50),
    )
    return Target("identify", [message.encode(), IdentifyMessage().encode()], run)


def _kad_target() -> Target:
    def run(data: bytes, rng: random.Random) -> str:
        kad.KadMessage.decode(data, _KAD_LIMITS)
        return OK

    peers = (
        kad.KadPeer(_ALICE.peer_id, (Multiaddr("/ip4/127.0.0.1/tcp/4001"),)),
        kad.KadPeer(_BOB.peer_id, (), kad.ConnectionType.CONNECTED),
    )
    answer = kad.KadMessage(kad.MessageType.FIND_NODE, _RELAY.peer_id.to_bytes(), None, peers)
    record = kad.KadMessage(
        kad.MessageType.GET_VALUE, b"/pk/x", kad.KadRecord(b"/pk/x", b"value", "now")
    )
    return Target("kad", [answer.encode(), record.encode(), b"\x08\x05"], run)


_KAD_LIMITS = kad.KadLimits(max_message_bytes=4096, max_peers_per_message=8, max_addrs_per_peer=8)


def _relay_targets() -> list[Target]:
    r = relay_v2
    events = (
        r.ReservationAccepted,
        r.ReservationRefused,
        r.CircuitEstablished,
        r.CircuitRefused,
        r.ReserveRequested,
        r.ConnectRequested,
        r.StopAccepted,
        r.StopRefused,
        r.IncomingCircuit,
        r.RelayFailed,
    )
    failures = (r.RelayFailed,)
    relay_addr = Multiaddr("/ip4/127.0.0.1/tcp/4001").with_peer_id(_RELAY.peer_id)
    limit = r.Limit(duration=120, data=1 << 17)
    voucher = r.make_voucher(_RELAY, _ALICE.peer_id, 2_000_000_000)

    def hop_server(data: bytes, rng: random.Random) -> str:
        machine = r.HopServer(_ALICE.peer_id, max_early_data_bytes=1024)

        def answer(event: object) -> None:
            if isinstance(event, r.ReserveRequested):
                if rng.random() < 0.5:
                    machine.accept_reservation(2_000_000_000, [relay_addr], limit, voucher)
                else:
                    machine.refuse(r.Status.RESERVATION_REFUSED)
            elif isinstance(event, r.ConnectRequested) and rng.random() < 0.5:
                machine.accept_connect(limit)

        return _drive(machine, data, rng, events, failures, on_event=answer)

    def stop_server(data: bytes, rng: random.Random) -> str:
        machine = r.StopServer(max_early_data_bytes=1024)

        def answer(event: object) -> None:
            if isinstance(event, r.IncomingCircuit) and rng.random() < 0.5:
                machine.accept()

        return _drive(machine, data, rng, events, failures, on_event=answer)

    def hop_client(data: bytes, rng: random.Random) -> str:
        machine = r.HopClient()
        if rng.random() < 0.5:
            machine.reserve()
        else:
            machine.connect(_BOB.peer_id)
        machine.data_to_send()
        outcome = _drive(machine, data, rng, events, failures)
        for event in machine.events_received():  # none left; _drive checked them all
            raise Crash(f"event {event!r} after the end")
        return outcome

    def stop_client(data: bytes, rng: random.Random) -> str:
        machine = r.StopClient()
        machine.connect(_ALICE.peer_id, limit)
        machine.data_to_send()
        return _drive(machine, data, rng, events, failures)

    def messages(data: bytes, rng: random.Random) -> str:
        return _each(
            data,
            r.HopMessage.decode,
            r.StopMessage.decode,
            r.Peer.decode,
            r.Limit.decode,
            r.Reservation.decode,
        )

    peer = r.Peer(_BOB.peer_id, (Multiaddr("/ip4/1.2.3.4/tcp/5").to_bytes(),))
    reservation = r.Reservation(2_000_000_000, (relay_addr.to_bytes(),), voucher)
    hop_reserve = r.HopMessage(r.HopType.RESERVE)
    hop_connect = r.HopMessage(r.HopType.CONNECT, peer=peer)
    hop_ok = r.HopMessage(
        r.HopType.STATUS, reservation=reservation, limit=limit, status=r.Status.OK
    )
    stop_connect = r.StopMessage(r.StopType.CONNECT, peer=peer, limit=limit)
    stop_ok = r.StopMessage(r.StopType.STATUS, status=r.Status.OK)
    frame = r.encode_frame
    return [
        Target("relay-hop-server", [frame(hop_reserve), frame(hop_connect) + b"early"], hop_server),
        Target("relay-stop-server", [frame(stop_connect) + b"early"], stop_server),
        Target("relay-hop-client", [frame(hop_ok), frame(hop_ok) + b"circuit"], hop_client),
        Target("relay-stop-client", [frame(stop_ok) + b"data"], stop_client),
        Target(
            "relay-messages",
            [m.encode() for m in (hop_reserve, hop_connect, hop_ok, stop_connect, stop_ok)],
            messages,
        ),
    ]


def _dcutr_targets() -> list[Target]:
    d = dcutr
    events = (d.DialScheduled, d.DialNow, d.DcutrFailed)
    failures = (d.DcutrFailed,)
    ours = [Multiaddr("/ip4/1.2.3.4/tcp/4001"), Multiaddr("/ip6/2001:db8::1/tcp/4001")]
    theirs = (Multiaddr("/ip4/5.6.7.8/tcp/4002").to_bytes(),)
    connect = d.encode_frame(d.HolePunch(d.HolePunchType.CONNECT, theirs))
    sync = d.encode_frame(d.HolePunch(d.HolePunchType.SYNC))

    def responder(data: bytes, rng: random.Random) -> str:
        return _drive(d.DcutrResponder(ours), data, rng, events, failures)

    def initiator(data: bytes, rng: random.Random) -> str:
        machine = d.DcutrInitiator(ours)
        machine.start(0.0)
        machine.data_to_send()
        now = [0.0]

        def feed(piece: bytes) -> None:
            now[0] += 0.01
            machine.receive_data(piece, now[0])

        def on_event(event: object) -> None:
            if isinstance(event, d.DialScheduled):
                machine.handle_timer(event.at)
                if _check(machine.events_received(), events, failures) == ERROR:
                    raise Crash("the timer failed the attempt")

        return _drive(machine, data, rng, events, failures, on_event=on_event, feed=feed)

    def messages(data: bytes, rng: random.Random) -> str:
        return _each(data, d.HolePunch.decode)

    return [
        Target("dcutr-responder", [connect + sync, connect], responder),
        Target("dcutr-initiator", [connect, connect + sync], initiator),
        Target("dcutr-messages", [connect[1:], sync[1:]], messages),
    ]


def _envelope_target() -> Target:
    record_domain, record_type = "libp2p-peer-record", b"\x03\x01"
    record = envelope.seal(_ALICE, record_domain, record_type, b"\x0a\x02hi").encode()
    voucher = relay_v2.make_voucher(_RELAY, _ALICE.peer_id, 2_000_000_000)
    addrs = (Multiaddr("/ip4/192.0.2.1/tcp/4001"), Multiaddr("/dns4/example.com/tcp/443/wss"))
    signed = peer_record.seal_peer_record(
        _ALICE, peer_record.PeerRecord(_ALICE.peer_id, 1_700_000_000_000_000_000, addrs)
    )

    def run(data: bytes, rng: random.Random) -> str:
        return _each(
            data,
            envelope.SignedEnvelope.decode,
            lambda raw: envelope.open(raw, record_domain, record_type),
            lambda raw: relay_v2.verify_voucher(raw, _RELAY.peer_id, _ALICE.peer_id, now=1.0),
            peer_record.open_peer_record,
            peer_record.PeerRecord.decode,
        )

    return Target("signed-envelope", [record, voucher, signed], run)


def _mdns_target() -> Target:
    addrs = [
        Multiaddr("/ip4/192.0.2.1/tcp/4001").with_peer_id(_ALICE.peer_id),
        Multiaddr("/ip6/2001:db8::1/udp/4001/quic-v1").with_peer_id(_ALICE.peer_id),
    ]
    name = mdns.peer_name_from_random(bytes(range(40)))
    seeds = [mdns.build_query(), mdns.build_meta_response(120)]
    seeds += mdns.build_responses(name, addrs, 120)
    kinds = (mdns.MdnsQuery, mdns.MdnsResponse)

    def run(data: bytes, rng: random.Random) -> str:
        packet = mdns.parse_packet(data)  # documented: never raises, None for garbage
        if packet is None:
            return ERROR
        if not isinstance(packet, kinds):
            raise Crash(f"parse_packet returned {packet!r}")
        return OK

    return Target("mdns", seeds, run, max_random_size=600)


def _multiaddr_targets() -> list[Target]:
    texts = [
        "/ip4/127.0.0.1/tcp/4001",
        f"/ip6/::1/tcp/443/wss/p2p/{_RELAY.peer_id}/p2p-circuit/p2p/{_ALICE.peer_id}",
        "/dns4/example.com/tcp/80/http",
        "/ip6zone/eth0/ip6/fe80::1/udp/1/quic-v1/webtransport/certhash/"
        "uEiDDq4_xNyDorZBH3TlGazyJdOWSwvo4PUo5YHFMrvDE8g",
        "/memory/1234/ipcidr/24/sni/example.com/dnsaddr/x.io/noise/tls",
    ]

    def binary(data: bytes, rng: random.Random) -> str:
        addr = Multiaddr.from_bytes(data)
        try:  # both parsers agree: what one accepts, the other accepts too
            again = Multiaddr.from_string(str(addr))
        except P2PError as exc:
            raise Crash(f"binary form accepted, its text refused: {exc}") from exc
        if again != addr:
            raise Crash(f"{addr} does not round-trip through its text")
        return OK

    def text(data: bytes, rng: random.Random) -> str:
        addr = Multiaddr.from_string(_text(data))
        try:
            again = Multiaddr.from_bytes(addr.to_bytes())
        except P2PError as exc:
            raise Crash(f"text accepted, its binary form refused: {exc}") from exc
        if again != addr:
            raise Crash(f"{addr} does not round-trip through its bytes")
        return OK

    texts.append("/dns/" + "a" * 4000 + "/memory/0" * 8)  # near the size limit
    binaries = [Multiaddr(t).to_bytes() for t in texts]
    widest = "/webrtc-direct" * 2000  # 4,000 bytes, the widest text per byte
    texts.append(widest)
    binaries.append(bytes.fromhex("9802") * 2000)
    return [
        Target("multiaddr-binary", binaries, binary),
        Target("multiaddr-text", [t.encode() for t in texts], text),
    ]


def _identity_targets() -> list[Target]:
    keys = _public_keys()
    peer_ids = [PeerId.from_public_key(PublicKey.from_protobuf(k)) for k in keys]

    def peer_id_bytes(data: bytes, rng: random.Random) -> str:
        return _each(data, PeerId.from_bytes)

    def peer_id_text(data: bytes, rng: random.Random) -> str:
        return _each(data, lambda raw: PeerId.from_string(_text(raw)))

    def public_key(data: bytes, rng: random.Random) -> str:
        outcome = _each(data, PublicKey.from_protobuf)
        if outcome == OK:
            key = PublicKey.from_protobuf(data)
            key.verify(b"message", bytes(64))  # False for a wrong signature, never raises
            PeerId.from_public_key(key)
        return outcome

    def private_key(data: bytes, rng: random.Random) -> str:
        return _each(data, KeyPair.from_protobuf)

    def text_codecs(data: bytes, rng: random.Random) -> str:
        text = _text(data)
        return _each(data, lambda _: multibase.decode(text), lambda _: base58.b58decode(text))

    id_texts = [str(p).encode() for p in peer_ids] + [p.to_cid_string().encode() for p in peer_ids]
    return [
        Target("peer-id-bytes", [p.to_bytes() for p in peer_ids], peer_id_bytes),
        Target("peer-id-text", id_texts, peer_id_text),
        Target("public-key", keys, public_key, max_random_size=600),
        Target("private-key", [_ALICE.to_protobuf()], private_key),
        Target(
            "multibase-base58", [*id_texts, b"uEiDDq4_xNyDorZBH3", b"f0012", b"bafy"], text_codecs
        ),
    ]


def _json_target() -> Target:
    codec = JsonCodec()

    def run(data: bytes, rng: random.Random) -> str:
        codec.decode(data)  # CodecError (a P2PError) is the documented refusal
        return OK

    seeds = [
        b'{"op":"echo","n":[1,2.5,-3e10,true,false,null],"s":"h\\u00e9\\"llo"}',
        b"[[[[[[[[1]]]]]]]]",
        b"[" * 120 + b'{"a":' * 8 + b"1" + b"}" * 8 + b"]" * 120,  # near max_depth
        b'"\\ud83d\\ude00"',
        '{"k": ["\u00e9", {"x": []}]}'.encode("utf-16"),
    ]
    return Target("json-codec", seeds, run)


def build_targets() -> list[Target]:
    """Every wire parser, in protocol-stack order."""
    return [
        _varint_target(),
        _framing_target(),
        _protobuf_target(),
        *_multistream_targets(),
        *_noise_targets(),
        _noise_transport_target(),
        _yamux_target(),
        _identify_target(),
        _kad_target(),
        *_relay_targets(),
        *_dcutr_targets(),
        _envelope_target(),
        _mdns_target(),
        *_multiaddr_targets(),
        *_identity_targets(),
        _json_target(),
    ]
