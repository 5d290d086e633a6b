"""Two sans-IO machines talking to each other in memory (h11's ``ConnectionPair`` idea).

Every machine under ``protocols/`` takes the peer's bytes with ``receive_data``, queues
its own in ``data_to_send()`` and hands out ``events_received()``.  These helpers move
bytes between two of them, so a test states the conversation, not the plumbing.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

__all__ = ["Machine", "feed", "run", "send", "settle", "transfer", "x25519"]

E = TypeVar("E")


class Machine(Protocol[E]):
    def data_to_send(self) -> bytes: ...

    def receive_data(self, data: bytes) -> None: ...

    def events_received(self) -> list[E]: ...


def _done(machine: Machine[E]) -> bool:
    """A machine that ended takes no more input (Yamux sessions have no ``done``)."""
    return bool(getattr(machine, "done", False))


def _give(machine: Machine[E], data: bytes, split: bool) -> None:
    if split:  # stop once done: what follows belongs to the next layer
        for i in range(len(data)):
            if _done(machine):
                return
            machine.receive_data(data[i : i + 1])
    else:
        machine.receive_data(data)


def feed(machine: Machine[E], data: bytes, *, split: bool = False) -> list[E]:
    """Give ``data`` to ``machine`` (one byte at a time with ``split``); return its events."""
    _give(machine, data, split)
    return machine.events_received()


def send(src: Machine[E], dst: Machine[E], *, split: bool = False) -> bytes:
    """Move what ``src`` queued into ``dst``, unless ``dst`` is done; return the bytes."""
    data = src.data_to_send()
    if data and not _done(dst):
        _give(dst, data, split)
    return data


def transfer(src: Machine[E], dst: Machine[E], *, split: bool = False) -> list[E]:
    """:func:`send`, then ``dst``'s events."""
    send(src, dst, split=split)
    return dst.events_received()


def settle(a: Machine[E], b: Machine[E], *, rounds: int = 16) -> None:
    """Move bytes both ways until neither side sends; the events stay in the machines."""
    for _ in range(rounds):
        if not send(a, b) + send(b, a):
            return
    raise AssertionError(f"the machines still talk after {rounds} rounds")


def run(a: Machine[E], b: Machine[E]) -> tuple[list[E], list[E]]:
    """:func:`settle`, then the events of ``a`` and of ``b``."""
    settle(a, b)
    return a.events_received(), b.events_received()


def x25519(byte: int) -> X25519PrivateKey:
    """A fixed X25519 key (Noise static and ephemeral keys in deterministic tests)."""
    return X25519PrivateKey.from_private_bytes(bytes([byte]) * 32)
