"""Circuit addresses: ``<relay-addr>/p2p/<relay>/p2p-circuit[/p2p/<target>]``."""

from __future__ import annotations

from ...errors import InvalidMultiaddrError
from ...identity import PeerId
from ...multiaddr import Multiaddr

__all__ = ["circuit_addr", "has_transport", "split_circuit"]


def circuit_addr(relay_addr: Multiaddr | None, relay: PeerId, target: PeerId | None) -> Multiaddr:
    """``<relay-addr>/p2p/<relay>/p2p-circuit[/p2p/<target>]``, the seed's relayed address."""
    suffix = f"/p2p/{relay}/p2p-circuit"
    if relay_addr is None:
        base = Multiaddr(suffix)
    elif str(relay_addr).endswith(suffix):
        base = relay_addr
    else:
        base = relay_addr.with_peer_id(relay) / "/p2p-circuit"
    return base if target is None else base.with_peer_id(target)


def split_circuit(addr: Multiaddr) -> tuple[Multiaddr, PeerId, PeerId | None]:
    """(``<relay-addr>/p2p/<relay>``, relay, target) of a circuit address."""
    names = addr.protocol_names()
    if not addr.is_circuit:
        raise InvalidMultiaddrError(f"not a circuit address: {addr}")
    relay_part = addr.decapsulate("p2p-circuit")
    relay = relay_part.peer_id
    if relay is None or not relay_part.ends_with_peer_id:
        raise InvalidMultiaddrError(f"{addr}: /p2p-circuit must follow /p2p/<relay>")
    tail = names[len(relay_part.protocol_names()) + 1 :]
    if tail not in ((), ("p2p",)):
        raise InvalidMultiaddrError(f"{addr}: only /p2p/<target> may follow /p2p-circuit")
    return relay_part, relay, addr.peer_id if tail else None


def has_transport(addr: Multiaddr) -> bool:
    return any(name != "p2p" for name in addr.protocol_names())
