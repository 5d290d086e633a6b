"""The address book: where to dial each peer, and which relays to fall back on.

:class:`AddressInfo` is the seed's persisted address book, with its ordering and its two
observable quirks (``docs/compat.md``: "compat: a known relay keeps its address", "compat:
a specific relay goes first"), and "compat: removing one relay" (``remove_relay`` removes
only that relay).  It is plain data: no I/O, no clock.

Everything is bounded (:class:`AddressBookLimits`), with these eviction policies:

* peers — the least recently *updated* entry goes first (every mutator marks its peer
  as updated; reads do not); entries of registered relays are never evicted;
* addresses of one peer — the back of ``known`` (least likely to work) is dropped;
  ``add_addrs`` on a full list replaces the back-most address;
* relays — the oldest registration is dropped.

:class:`AddressBookStore` keeps one in a JSON file (the seed's serde shape) so that a restarted
peer remembers its peers.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AddressBookError, InvalidArgumentError
from ..identity import PeerId
from ..multiaddr import Multiaddr
from .codecs import CodecError, json_loads

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_ADDRESS_BOOK_FILE_BYTES",
    "AddressBookError",
    "AddressBookLimits",
    "AddressBookStore",
    "AddressInfo",
    "PeerAddress",
    "assemble_relayed_addr",
    "default_address_book_path",
]

MAX_ADDRESS_BOOK_FILE_BYTES = 64 * 1024 * 1024
"""Refuse to load address-book files larger than this (a corrupt or hostile file)."""


@dataclass(frozen=True, slots=True)
class AddressBookLimits:
    """Bounds of one :class:`AddressInfo` (counts)."""

    max_peers: int = 10_000
    max_addrs_per_peer: int = 64
    max_relays: int = 64

    def __post_init__(self) -> None:
        for name in ("max_peers", "max_addrs_per_peer", "max_relays"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(f"{name} must be an int >= 1, not {value!r}")


DEFAULT_LIMITS = AddressBookLimits()


@dataclass(slots=True)
class PeerAddress:
    """What we know about dialing one peer."""

    known: deque[Multiaddr] = field(default_factory=deque)
    """Addresses ordered by likelihood of reachability; the front is tried first."""
    use_relay_fallback: bool = True
    """Whether relayed addresses via the dialing relays are appended when dialing it."""

    def copy(self) -> PeerAddress:
        return PeerAddress(deque(self.known), self.use_relay_fallback)


def _p2p_circuit_suffix(relay: PeerId) -> Multiaddr:
    return Multiaddr(f"/p2p/{relay}/p2p-circuit")


def assemble_relayed_addr(target: PeerId, relay: PeerId, relay_addr: Multiaddr) -> Multiaddr:
    """``<relay_addr>/p2p/<relay>/p2p-circuit/p2p/<target>``.

    ``/p2p/<relay>/p2p-circuit`` is appended only if ``relay_addr`` does not already end
    with it (compared component by component).  A ``relay_addr`` ending with just
    ``/p2p/<relay>`` gets it twice, as in the seed.
    """
    suffix = _p2p_circuit_suffix(relay)
    comps = relay_addr.components()
    if comps[-2:] != suffix.components():
        relay_addr = relay_addr.encapsulate(suffix)
    return relay_addr.encapsulate(Multiaddr(f"/p2p/{target}"))


@dataclass(eq=False)
class AddressInfo:
    """Known addresses of peers plus the relays used as fallback (seed ``AddressInfo``).

    Equality compares ``peers`` (including address order) and ``relays``, not the limits.
    ``revision`` grows on every change of content (not on no-op calls, nor on the
    update-order bookkeeping), so an owner can tell cheaply whether to save.
    Mutating ``peers``/``relays`` directly bypasses the limits and ``revision``.
    """

    peers: dict[PeerId, PeerAddress] = field(default_factory=dict)
    relays: list[PeerId] = field(default_factory=list)
    limits: AddressBookLimits = field(default=DEFAULT_LIMITS, kw_only=True)
    revision: int = field(default=0, kw_only=True)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AddressInfo):
            return NotImplemented
        return self.peers == other.peers and self.relays == other.relays

    __hash__ = None  # type: ignore[assignment]

    # -- internal helpers ------------------------------------------------------------

    def _touch(self, peer: PeerId) -> PeerAddress:
        """The entry of ``peer`` (created with defaults), marked most recently updated.

        Only a creation counts as a change for ``revision``; callers count their own.
        """
        peers = self.peers
        entry = peers.pop(peer, None)
        if entry is None:
            self.revision += 1
            entry = PeerAddress()
            peers[peer] = entry
            if len(peers) > self.limits.max_peers:
                self._evict_peer(peer)
        else:
            peers[peer] = entry
        return entry

    def _evict_peer(self, keep: PeerId) -> None:
        """Drop the least recently updated entry that is neither ``keep`` nor a relay."""
        relays = set(self.relays)
        for candidate in self.peers:
            if candidate != keep and candidate not in relays:
                del self.peers[candidate]
                return

    def _trim(self, entry: PeerAddress) -> None:
        known = entry.known
        while len(known) > self.limits.max_addrs_per_peer:
            known.pop()

    # -- the seed's methods ----------------------------------------------------------

    def get_addrs(self, target: PeerId) -> list[Multiaddr]:
        """Known addresses, then one relayed address per dialing relay with a known address.

        Relayed addresses are added only if the peer's ``use_relay_fallback`` is on
        (the default for unknown peers).  No deduplication (the dialer dedups).
        """
        entry = self.peers.get(target)
        if entry is None:
            result: list[Multiaddr] = []
            fallback = True
        else:
            result = list(entry.known)
            fallback = entry.use_relay_fallback
        if fallback:
            for relay in self.relays:
                relay_addr = self.get_relay_addr(relay)
                if relay_addr is not None:
                    result.append(assemble_relayed_addr(target, relay, relay_addr))
        return result

    def add_addrs(self, peer: PeerId, addr: Multiaddr) -> None:
        """Append ``addr`` to the back of the peer's addresses unless already present."""
        entry = self._touch(peer)
        known = entry.known
        if addr in known:
            return
        self.revision += 1
        if len(known) >= self.limits.max_addrs_per_peer:
            known.pop()
        known.append(addr)

    def remove_address(self, peer: PeerId, addr: Multiaddr) -> None:
        """Remove every occurrence of ``addr``; the (possibly empty) entry stays."""
        if peer not in self.peers:
            return
        entry = self._touch(peer)
        if addr in entry.known:
            self.revision += 1
            entry.known = deque(a for a in entry.known if a != addr)

    def set_relay_fallback(self, peer: PeerId, use_relay_fallback: bool) -> None:
        entry = self._touch(peer)
        if entry.use_relay_fallback != use_relay_fallback:
            self.revision += 1
            entry.use_relay_fallback = use_relay_fallback

    def use_relay(self, target: PeerId, relay: PeerId, is_exclusive: bool) -> Multiaddr | None:
        """Put the address of ``target`` via ``relay`` first; None (no change) if unusable.

        ``relay`` must be a registered relay with a known address.  The relayed address
        is pushed to the front even if already present (compat: a specific relay goes
        first).  With
        ``is_exclusive`` the other relays are no longer used as fallback for ``target``.
        """
        relay_addr = self.get_relay_addr(relay)
        if relay_addr is None:
            return None
        relayed = assemble_relayed_addr(target, relay, relay_addr)
        entry = self._touch(target)
        self.revision += 1
        entry.known.appendleft(relayed)
        self._trim(entry)
        if is_exclusive:
            entry.use_relay_fallback = False
        return relayed

    def prioritize_addr(self, peer: PeerId, addr: Multiaddr) -> None:
        """Move (or add) ``addr`` to the front."""
        entry = self._touch(peer)
        known = entry.known
        if known and known[0] == addr:
            return
        self.revision += 1
        if addr in known:
            entry.known = known = deque(a for a in known if a != addr)
        known.appendleft(addr)
        self._trim(entry)

    def deprioritize_addr(self, peer: PeerId, addr: Multiaddr) -> None:
        """Move (or add) ``addr`` to the back."""
        entry = self._touch(peer)
        known = entry.known
        if known and known[-1] == addr:
            return
        self.revision += 1
        if addr in known:
            entry.known = known = deque(a for a in known if a != addr)
        if len(known) >= self.limits.max_addrs_per_peer:
            known.pop()
        known.append(addr)

    def get_relay_addr(self, peer: PeerId) -> Multiaddr | None:
        """The first known address of ``peer`` if it is a registered relay, else None."""
        if peer not in self.relays:
            return None
        entry = self.peers.get(peer)
        if entry is None or not entry.known:
            return None
        return entry.known[0]

    def add_relay(self, peer: PeerId, addr: Multiaddr | None = None) -> Multiaddr | None:
        """Register ``peer`` as a dialing relay (at the end); return its address if known.

        If it is already a relay, ``addr`` is ignored (compat: a known relay keeps its
        address) and its current
        address is returned.  A relay may be registered without any known address.
        """
        if peer in self.relays:
            return self.get_relay_addr(peer)
        if addr is not None:
            self.add_addrs(peer, addr)
        self.revision += 1
        self.relays.append(peer)
        if len(self.relays) > self.limits.max_relays:
            del self.relays[0]
        if addr is not None:
            return addr
        entry = self.peers.get(peer)
        return entry.known[0] if entry is not None and entry.known else None

    def remove_relay(self, peer: PeerId) -> bool:
        """Unregister ``peer`` as a relay; True if it was one (compat: removing one relay).

        Relayed addresses already stored for targets are left alone.
        """
        try:
            self.relays.remove(peer)
        except ValueError:
            return False
        self.revision += 1
        return True

    # -- copies and persistence ------------------------------------------------------

    def copy(self) -> AddressInfo:
        """A deep copy (what the seed's ``export_address_info`` returns)."""
        return AddressInfo(
            {peer: entry.copy() for peer, entry in self.peers.items()},
            list(self.relays),
            limits=self.limits,
            revision=self.revision,
        )

    def to_dict(self) -> dict[str, Any]:
        """The seed's serde shape; peers in least-recently-updated-first order."""
        return {
            "peers": {
                str(peer): {
                    "known": [str(a) for a in entry.known],
                    "use_relay_fallback": entry.use_relay_fallback,
                }
                for peer, entry in self.peers.items()
            },
            "relays": [str(r) for r in self.relays],
        }

    def to_json(self, *, indent: int | None = None) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, limits: AddressBookLimits = DEFAULT_LIMITS
    ) -> AddressInfo:
        """Parse the :meth:`to_dict` shape; raises :class:`AddressBookError` on bad input.

        Missing ``peers``/``relays``/``known`` mean empty, a missing
        ``use_relay_fallback`` means true, and unknown keys are ignored (forward
        compatibility).  Input beyond ``limits`` is cut by the usual eviction policies.
        """
        if not isinstance(data, Mapping):
            raise AddressBookError(f"address book must be an object, not {_kind(data)}")
        peers_data = data.get("peers", {})
        relays_data = data.get("relays", [])
        if not isinstance(peers_data, Mapping):
            raise AddressBookError(f"'peers' must be an object, not {_kind(peers_data)}")
        if not isinstance(relays_data, list):
            raise AddressBookError(f"'relays' must be an array, not {_kind(relays_data)}")
        info = cls(limits=limits)
        for key, value in peers_data.items():
            peer = _parse_peer(key, "peers key")
            where = f"peers[{key!r}]"
            if not isinstance(value, Mapping):
                raise AddressBookError(f"{where} must be an object, not {_kind(value)}")
            known_data = value.get("known", [])
            if not isinstance(known_data, list):
                raise AddressBookError(f"{where}.known must be an array, not {_kind(known_data)}")
            fallback = value.get("use_relay_fallback", True)
            if not isinstance(fallback, bool):
                raise AddressBookError(
                    f"{where}.use_relay_fallback must be true or false, not {fallback!r}"
                )
            known = _parse_addrs(known_data, f"{where}.known")
            if len(known) > limits.max_addrs_per_peer:
                del known[limits.max_addrs_per_peer :]
            entry = info._touch(peer)
            entry.known = deque(known)
            entry.use_relay_fallback = fallback
        for i, item in enumerate(relays_data):
            relay = _parse_peer(item, f"relays[{i}]")
            if relay not in info.relays:
                info.relays.append(relay)
        if len(info.relays) > limits.max_relays:
            del info.relays[: len(info.relays) - limits.max_relays]
        info.revision = 0
        return info

    @classmethod
    def from_json(
        cls, text: str | bytes, *, limits: AddressBookLimits = DEFAULT_LIMITS
    ) -> AddressInfo:
        """Parse :meth:`to_json` text; raises :class:`AddressBookError` on bad input."""
        try:
            data = json_loads(text)
        except CodecError as exc:
            raise AddressBookError(f"address book is not valid JSON: {exc}") from None
        return cls.from_dict(data, limits=limits)


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _parse_peer(text: object, where: str) -> PeerId:
    if not isinstance(text, str):
        raise AddressBookError(f"{where} must be a peer id string, not {_kind(text)}")
    try:
        return PeerId.from_string(text)
    except InvalidArgumentError as exc:
        raise AddressBookError(f"{where}: {exc}") from None


def _parse_addrs(items: Iterable[object], where: str) -> list[Multiaddr]:
    out: list[Multiaddr] = []
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise AddressBookError(f"{where}[{i}] must be a multiaddr string, not {_kind(text)}")
        try:
            out.append(Multiaddr.from_string(text))
        except InvalidArgumentError as exc:
            raise AddressBookError(f"{where}[{i}]: {exc}") from None
    return out


def default_address_book_path() -> Path:
    """``$XDG_DATA_HOME/aiop2p/address-book.json`` (``~/.local/share`` when unset or relative)."""
    base = os.environ.get("XDG_DATA_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "aiop2p" / "address-book.json"


class AddressBookStore:
    """An :class:`AddressInfo` kept in a JSON file (private: mode 0o600)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        limits: AddressBookLimits = DEFAULT_LIMITS,
    ) -> None:
        self.path = Path(path) if path is not None else default_address_book_path()
        self.limits = limits

    def __repr__(self) -> str:
        return f"AddressBookStore({str(self.path)!r})"

    def load(self) -> AddressInfo:
        """The stored address book; empty if the file does not exist.

        Raises :class:`AddressBookError` naming the file if its content is corrupt.
        """
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_ADDRESS_BOOK_FILE_BYTES + 1)
        except FileNotFoundError:
            return AddressInfo(limits=self.limits)
        if len(data) > MAX_ADDRESS_BOOK_FILE_BYTES:
            raise AddressBookError(f"{self.path}: larger than {MAX_ADDRESS_BOOK_FILE_BYTES} bytes")
        try:
            return AddressInfo.from_json(data, limits=self.limits)
        except AddressBookError as exc:
            raise AddressBookError(f"{self.path}: {exc}") from None

    def save(self, info: AddressInfo) -> None:
        """Write ``info`` atomically (temp file, fsync, rename); parent dirs are created."""
        data = info.to_json(indent=1).encode()
        path = self.path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (best effort: not every platform can open a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
