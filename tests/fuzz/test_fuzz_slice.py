"""A fast slice of the fuzz pass (issue 8 item 6): every wire parser, 300 seeded inputs.

The long pass (100,000 inputs per parser) is ``tests/fuzz/run_fuzz.py``, outside the
suite; its figures are in ``tests/fuzz/README.md``.  Same harness, same targets.
"""

from __future__ import annotations

import random

import pytest

from aiop2p.errors import RemoteProtocolError

from .harness import ERROR, OK, Crash, Stats, Target, build_targets, run_target

SEED = 8
"""Fixed, so a failure here reproduces with ``run_fuzz.py --seed 8 --count 300``."""
COUNT = 300

TARGETS = build_targets()


def report(stats: Stats) -> str:
    return "\n\n".join(f"input {data.hex()}\n{why}" for data, why in stats.examples)


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_parser_meets_its_error_contract(target: Target) -> None:
    stats = run_target(target, COUNT, SEED)
    assert stats.inputs == COUNT
    assert (stats.crashes, stats.hangs) == (0, 0), report(stats)
    assert stats.ok + stats.errors == COUNT
    # The seeds are valid messages: some inputs get through, so mutations probe deep.
    assert stats.ok > 0 and stats.errors > 0


def test_every_wire_parser_has_a_target() -> None:
    names = {t.name for t in TARGETS}
    for wanted in (
        "varint", "varint-framing", "protobuf", "multistream-listener", "multistream-dialer",
        "multistream-fast-listener", "multistream-fast-dialer",
        "noise-responder", "noise-initiator", "noise-payload", "noise-transport", "yamux",
        "identify", "kad", "relay-hop-server", "relay-stop-server", "relay-hop-client",
        "relay-stop-client", "relay-messages", "dcutr-responder", "dcutr-initiator",
        "dcutr-messages", "signed-envelope", "mdns", "multiaddr-binary", "multiaddr-text",
        "peer-id-bytes", "peer-id-text", "public-key", "private-key", "multibase-base58",
        "json-codec",
    ):  # fmt: skip
        assert wanted in names


def test_harness_counts_foreign_exceptions_and_events_as_crashes() -> None:
    def run(data: bytes, rng: random.Random) -> str:
        if len(data) % 3 == 0:
            raise ValueError("a foreign exception")
        if len(data) % 3 == 1:
            raise Crash("an undocumented event")
        if data[:1] == b"\x00":
            raise RemoteProtocolError("documented")
        return OK if rng.random() < 2 else ERROR

    stats = run_target(Target("self-test", [bytes(30), b"x" * 31], run), 200, SEED)
    assert stats.crashes > 0 and stats.errors > 0 and stats.ok > 0
    assert stats.crashes + stats.errors + stats.ok == 200
    assert len(stats.examples) == 5
    assert "ValueError: a foreign exception" in report(stats)


def test_same_seed_same_inputs() -> None:
    seen: list[list[bytes]] = [[], []]
    for i in range(2):

        def run(data: bytes, rng: random.Random, out: list[bytes] = seen[i]) -> str:
            out.append(data)
            return OK

        run_target(Target("replay", [b"abcdef"], run), 50, SEED)
    assert seen[0] == seen[1] and len(set(seen[0])) > 10
