"""Multiaddr: self-describing network addresses (``/ip4/127.0.0.1/tcp/4001/p2p/12D3Koo...``).

A :class:`Multiaddr` is an immutable value holding both forms, text and binary (a
sequence of uvarint protocol code + value, with a uvarint length prefix for
variable-size values).  Parsing validates every value and builds both forms once; a
bounded cache makes re-parsing a known address a dictionary lookup.  Protocol codes
come from multiformats/multiaddr ``protocols.csv``.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, final

from ._wire import multibase
from ._wire.varint import decode_uvarint, encode_uvarint
from .errors import InvalidArgumentError, InvalidMultiaddrError, ProtocolError
from .identity import PeerId

__all__ = [
    "MAX_MULTIADDR_BYTES",
    "MAX_MULTIADDR_TEXT_CHARS",
    "PROTOCOL_CODES",
    "Multiaddr",
    "TcpHead",
]

MAX_MULTIADDR_BYTES: Final = 4096
"""The one size limit of a multiaddr, in bytes of its binary form, whichever form it is
parsed from (and whatever ``encapsulate`` builds): longer binary input is rejected
unparsed, text whose binary form would be longer is rejected while it is parsed."""
_MAX_TEXT_CHARS_PER_BYTE: Final = 8
"""Upper bound of text characters per binary byte: ``/webrtc-direct`` is 14 characters
for a 2-byte code, the widest of all (``tests/test_multiaddr.py`` checks)."""
_MAX_VALUE_TEXT_CHARS: Final = 2 * MAX_MULTIADDR_BYTES + 1
"""Longest value text that can fit: base16 (``f`` + 2 digits per byte) is the widest."""
MAX_MULTIADDR_TEXT_CHARS: Final = _MAX_TEXT_CHARS_PER_BYTE * MAX_MULTIADDR_BYTES
"""Text longer than this is rejected unparsed: derived from :data:`MAX_MULTIADDR_BYTES`
so that it cannot encode to a binary form within that limit (a cheap early refusal,
never a second, different limit)."""
PARSE_CACHE_ENTRIES: Final = 4096
"""How many parsed text and binary forms are remembered (each)."""

_VAR: Final = -1  # size marker: length-prefixed value


class _Proto:
    """One protocol: code, name, value size in bytes (0 none, -1 variable) and codecs."""

    __slots__ = ("code", "code_bytes", "name", "size", "to_bytes", "to_text")

    def __init__(
        self,
        code: int,
        name: str,
        size: int,
        to_bytes: Callable[[str], bytes] | None = None,
        to_text: Callable[[bytes], str] | None = None,
    ) -> None:
        self.code = code
        self.code_bytes = encode_uvarint(code)
        self.name = name
        self.size = size
        self.to_bytes = to_bytes
        self.to_text = to_text


def _ip4_bytes(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def _ip4_text(raw: bytes) -> str:
    return str(ipaddress.IPv4Address(raw))


def _ip6_bytes(text: str) -> bytes:
    if "%" in text:
        raise ValueError("a zone belongs in /ip6zone, not in /ip6")
    return ipaddress.IPv6Address(text).packed


def _ip6_text(raw: bytes) -> str:
    return str(ipaddress.IPv6Address(raw))


def _port_bytes(text: str) -> bytes:
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        raise ValueError("port must be a decimal number 0-65535")
    port = int(text)
    if port > 0xFFFF:
        raise ValueError(f"port {port} out of range 0-65535")
    return port.to_bytes(2, "big")


def _port_text(raw: bytes) -> str:
    return str(int.from_bytes(raw, "big"))


_U64_MAX: Final = (1 << 64) - 1


def _memory_bytes(text: str) -> bytes:
    # protocols.csv lists /memory as variable-size, but rust-libp2p, go-multiaddr and the
    # other deployed codecs write a fixed 8-byte big-endian u64; we follow the wire.
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise ValueError("memory port must be a decimal number 0-18446744073709551615")
    port = int(text)
    if port > _U64_MAX:
        raise ValueError(f"memory port {port} out of range 0-{_U64_MAX}")
    return port.to_bytes(8, "big")


def _memory_text(raw: bytes) -> str:
    return str(int.from_bytes(raw, "big"))


def _name_bytes(text: str) -> bytes:
    if not text:
        raise ValueError("empty value")
    return text.encode()


def _name_text(raw: bytes) -> str:
    if not raw:
        raise ValueError("empty value")
    text = raw.decode()  # UnicodeDecodeError is a ValueError
    if "/" in text:
        raise ValueError("value contains '/'")
    return text


def _cidr_bytes(text: str) -> bytes:
    if not (text.isascii() and text.isdigit()) or len(text) > 3 or int(text) > 255:
        raise ValueError("CIDR mask must be a decimal number 0-255")
    return bytes((int(text),))


def _cidr_text(raw: bytes) -> str:
    return str(raw[0])


def _p2p_text(raw: bytes) -> str:
    return str(PeerId.from_bytes(raw))


def _check_multihash(raw: bytes) -> None:
    try:
        got = decode_uvarint(raw, 0)
        if got is None:
            raise ValueError("truncated multihash code")
        got = decode_uvarint(raw, got[1])
    except ProtocolError as exc:
        raise ValueError(f"multihash: {exc}") from None
    if got is None:
        raise ValueError("truncated multihash length")
    length, pos = got
    if pos + length != len(raw):
        raise ValueError("multihash length does not match its digest")


def _certhash_bytes(text: str) -> bytes:
    raw = multibase.decode(text)
    _check_multihash(raw)
    return raw


def _certhash_text(raw: bytes) -> str:
    _check_multihash(raw)
    return multibase.encode("u", raw)


_PROTOCOLS: Final = (
    _Proto(4, "ip4", 4, _ip4_bytes, _ip4_text),
    _Proto(6, "tcp", 2, _port_bytes, _port_text),
    _Proto(273, "udp", 2, _port_bytes, _port_text),
    _Proto(33, "dccp", 2, _port_bytes, _port_text),
    _Proto(132, "sctp", 2, _port_bytes, _port_text),
    _Proto(41, "ip6", 16, _ip6_bytes, _ip6_text),
    _Proto(42, "ip6zone", _VAR, _name_bytes, _name_text),
    _Proto(43, "ipcidr", 1, _cidr_bytes, _cidr_text),
    _Proto(53, "dns", _VAR, _name_bytes, _name_text),
    _Proto(54, "dns4", _VAR, _name_bytes, _name_text),
    _Proto(55, "dns6", _VAR, _name_bytes, _name_text),
    _Proto(56, "dnsaddr", _VAR, _name_bytes, _name_text),
    _Proto(421, "p2p", _VAR, None, _p2p_text),
    _Proto(448, "tls", 0),
    _Proto(449, "sni", _VAR, _name_bytes, _name_text),
    _Proto(454, "noise", 0),
    _Proto(460, "quic", 0),
    _Proto(461, "quic-v1", 0),
    _Proto(465, "webtransport", 0),
    _Proto(466, "certhash", _VAR, _certhash_bytes, _certhash_text),
    _Proto(480, "http", 0),
    _Proto(443, "https", 0),
    _Proto(477, "ws", 0),
    _Proto(478, "wss", 0),
    _Proto(280, "webrtc-direct", 0),
    _Proto(281, "webrtc", 0),
    _Proto(290, "p2p-circuit", 0),
    _Proto(777, "memory", 8, _memory_bytes, _memory_text),
)
_BY_NAME: Final[dict[str, _Proto]] = {p.name: p for p in _PROTOCOLS}
_BY_NAME["ipfs"] = _BY_NAME["p2p"]  # input alias; always printed as /p2p
_BY_CODE: Final[dict[int, _Proto]] = {p.code: p for p in _PROTOCOLS}
_P2P: Final = _BY_NAME["p2p"]
_IP4: Final = _BY_NAME["ip4"]
_IP6: Final = _BY_NAME["ip6"]
_TCP: Final = _BY_NAME["tcp"]
_CIRCUIT: Final = _BY_NAME["p2p-circuit"]

PROTOCOL_CODES: Final[dict[str, int]] = {name: p.code for name, p in _BY_NAME.items()}
"""Protocol name → multicodec code, for every protocol this module can parse."""

_Component = tuple[_Proto, str | None, bytes]
"""(protocol, canonical text value or None, the component's full binary encoding)."""


def _short(text: str | bytes) -> str:
    shown = repr(text)
    return shown if len(shown) <= 100 else shown[:97] + "..."


def _too_long(form: str) -> InvalidMultiaddrError:
    return InvalidMultiaddrError(f"{form} longer than {MAX_MULTIADDR_BYTES} bytes")


def _parse_text(text: str) -> tuple[_Component, ...]:
    if not text:
        raise InvalidMultiaddrError("empty multiaddr")
    if len(text) > MAX_MULTIADDR_TEXT_CHARS:
        raise InvalidMultiaddrError(
            f"multiaddr longer than {MAX_MULTIADDR_TEXT_CHARS} characters"
            f" (its binary form would be longer than {MAX_MULTIADDR_BYTES} bytes)"
        )
    if text[0] != "/":
        raise InvalidMultiaddrError(f"multiaddr {_short(text)} must start with '/'")
    parts = text.split("/")
    end = len(parts)
    if end > 2 and parts[-1] == "":
        end -= 1  # tolerate one trailing slash
    comps: list[_Component] = []
    size = 0  # of the binary form so far
    i = 1
    if end == 2 and parts[1] == "":
        return ()  # "/" is the empty multiaddr
    while i < end:
        name = parts[i]
        proto = _BY_NAME.get(name)
        if proto is None:
            what = "an empty protocol name ('//')" if not name else f"unknown protocol {name!r}"
            raise InvalidMultiaddrError(f"multiaddr {_short(text)}: {what} at component {i}")
        i += 1
        if proto.size == 0:
            size += len(proto.code_bytes)
            if size > MAX_MULTIADDR_BYTES:
                raise _too_long(f"multiaddr {_short(text)} in binary form is")
            comps.append((proto, None, proto.code_bytes))
            continue
        if i >= end:
            raise InvalidMultiaddrError(f"multiaddr {_short(text)}: /{name} needs a value")
        value = parts[i]
        i += 1
        if len(value) > _MAX_VALUE_TEXT_CHARS:  # before decoding it (base58 is quadratic)
            raise _too_long(f"multiaddr {_short(text)}: /{name} value in binary form is")
        try:
            if proto is _P2P:
                pid = PeerId.from_string(value)
                raw, canonical = pid.to_bytes(), str(pid)
            else:
                assert proto.to_bytes is not None and proto.to_text is not None
                raw = proto.to_bytes(value)
                canonical = proto.to_text(raw)
        except (ValueError, InvalidArgumentError) as exc:
            raise InvalidMultiaddrError(
                f"multiaddr {_short(text)}: invalid /{name} value {value!r}: {exc}"
            ) from None
        if proto.size == _VAR:
            raw = proto.code_bytes + encode_uvarint(len(raw)) + raw
        else:
            raw = proto.code_bytes + raw
        size += len(raw)
        if size > MAX_MULTIADDR_BYTES:
            raise _too_long(f"multiaddr {_short(text)} in binary form is")
        comps.append((proto, canonical, raw))
    return tuple(comps)


def _parse_bytes(data: bytes) -> tuple[_Component, ...]:
    n = len(data)
    if n > MAX_MULTIADDR_BYTES:
        raise _too_long("binary multiaddr")
    comps: list[_Component] = []
    pos = 0
    try:
        while pos < n:
            start = pos
            got = decode_uvarint(data, pos)
            if got is None:
                raise InvalidMultiaddrError(f"binary multiaddr: truncated protocol code at {pos}")
            code, pos = got
            proto = _BY_CODE.get(code)
            if proto is None:
                raise InvalidMultiaddrError(
                    f"binary multiaddr: unknown protocol code {code} at byte {start}"
                )
            size = proto.size
            if size == 0:
                comps.append((proto, None, proto.code_bytes))
                continue
            if size == _VAR:
                got = decode_uvarint(data, pos)
                if got is None:
                    raise InvalidMultiaddrError(
                        f"binary multiaddr: truncated /{proto.name} length at byte {pos}"
                    )
                size, pos = got
            if pos + size > n:
                raise InvalidMultiaddrError(
                    f"binary multiaddr: /{proto.name} value at byte {pos} needs {size} bytes, "
                    f"only {n - pos} remain"
                )
            value = data[pos : pos + size]
            pos += size
            assert proto.to_text is not None
            try:
                text = proto.to_text(value)
            except (ValueError, InvalidArgumentError) as exc:
                raise InvalidMultiaddrError(
                    f"binary multiaddr: invalid /{proto.name} value at byte {pos - size}: {exc}"
                ) from None
            comps.append((proto, text, data[start:pos]))
    except ProtocolError as exc:  # overlong or non-minimal varint
        raise InvalidMultiaddrError(f"binary multiaddr: {exc}") from None
    return tuple(comps)


@functools.lru_cache(maxsize=PARSE_CACHE_ENTRIES)
def _from_text_cached(text: str) -> Multiaddr:
    return Multiaddr._make(_parse_text(text))


@functools.lru_cache(maxsize=PARSE_CACHE_ENTRIES)
def _from_bytes_cached(data: bytes) -> Multiaddr:
    return Multiaddr._make(_parse_bytes(data))


_UNSET: Any = object()


_TCP_HOSTS: Final = frozenset({"ip4", "ip6", "dns", "dns4", "dns6"})


@dataclass(frozen=True, slots=True)
class TcpHead:
    """``/<host protocol>/<host>/tcp/<port>`` at the start of an address, and what follows
    it (the transports' shapes differ only in ``rest``: nothing, ``/ws``, ``/tls/ws``...)."""

    host_protocol: str
    """``ip4``, ``ip6``, ``dns``, ``dns4`` or ``dns6``."""
    host: str
    port: int
    rest: tuple[tuple[str, str | None], ...]
    """The components after the port, as :meth:`Multiaddr.components` gives them."""

    @property
    def rest_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.rest)


@final
class Multiaddr:
    """An immutable multiaddr; equal (and hashed) by its binary form.

    ``Multiaddr("/ip4/1.2.3.4/tcp/1")``, ``Multiaddr(b"...")`` or another Multiaddr.
    The text form is canonical: ``/ipfs`` becomes ``/p2p``, IPv6 is compressed, peer
    ids are base58btc, certhashes are base64url.
    """

    __slots__ = ("_bytes", "_comps", "_peer_id", "_str")

    _bytes: bytes
    _comps: tuple[_Component, ...]
    _str: str
    _peer_id: Any

    def __new__(cls, value: str | bytes | bytearray | memoryview | Multiaddr) -> Multiaddr:
        if isinstance(value, str):
            return _from_text_cached(value)
        if isinstance(value, Multiaddr):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return _from_bytes_cached(bytes(value))
        raise InvalidMultiaddrError(f"cannot make a multiaddr from {type(value).__name__}")

    @classmethod
    def _make(cls, comps: tuple[_Component, ...]) -> Multiaddr:
        raw = b"".join(c[2] for c in comps)
        if len(raw) > MAX_MULTIADDR_BYTES:  # encapsulate, with_peer_id
            raise _too_long(f"multiaddr of {len(comps)} components is")
        self = object.__new__(cls)
        osa = object.__setattr__
        osa(self, "_comps", comps)
        osa(self, "_bytes", raw)
        text = "".join(f"/{p.name}" if v is None else f"/{p.name}/{v}" for p, v, _ in comps)
        osa(self, "_str", text or "/")
        osa(self, "_peer_id", _UNSET)
        return self

    @classmethod
    def from_string(cls, text: str) -> Multiaddr:
        if not isinstance(text, str):
            raise InvalidMultiaddrError(f"multiaddr text must be str, not {type(text).__name__}")
        return _from_text_cached(text)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Multiaddr:
        return _from_bytes_cached(bytes(data))

    def to_bytes(self) -> bytes:
        return self._bytes

    def __str__(self) -> str:
        return self._str

    def __repr__(self) -> str:
        return f"Multiaddr({self._str!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Multiaddr, (self._bytes,))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Multiaddr is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is Multiaddr:
            return self._bytes == other._bytes
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._bytes)

    def components(self) -> tuple[tuple[str, str | None], ...]:
        """``(protocol name, text value)`` pairs; the value is None for valueless protocols."""
        return tuple((p.name, v) for p, v, _ in self._comps)

    def protocol_names(self) -> tuple[str, ...]:
        return tuple(p.name for p, _, _ in self._comps)

    def value_for(self, name: str) -> str | None:
        """The value of the first ``name`` component (None if absent or valueless)."""
        proto = _lookup(name)
        for p, v, _ in self._comps:
            if p is proto:
                return v
        return None

    def has_protocol(self, name: str) -> bool:
        proto = _lookup(name)
        return any(p is proto for p, _, _ in self._comps)

    def encapsulate(self, other: Multiaddr | str) -> Multiaddr:
        """This address with ``other`` appended (``/ip4/…/tcp/1`` + ``/ws``).

        Raises :class:`InvalidMultiaddrError` if the result would be longer than
        :data:`MAX_MULTIADDR_BYTES`, the limit every parsed address obeys."""
        inner = Multiaddr(other)
        if not inner._comps:
            return self
        if not self._comps:
            return inner
        return Multiaddr._make(self._comps + inner._comps)

    def __truediv__(self, other: Multiaddr | str) -> Multiaddr:
        return self.encapsulate(other)

    def decapsulate(self, name_or_addr: Multiaddr | str) -> Multiaddr:
        """Strip from the last occurrence of a protocol name (``"p2p"``) or of an address
        (``"/tcp/1"``, which must match whole components); unchanged if it is absent."""
        comps = self._comps
        if isinstance(name_or_addr, str) and not name_or_addr.startswith("/"):
            proto = _lookup(name_or_addr)
            for i in range(len(comps) - 1, -1, -1):
                if comps[i][0] is proto:
                    return Multiaddr._make(comps[:i])
            return self
        needle = tuple(c[2] for c in Multiaddr(name_or_addr)._comps)
        k = len(needle)
        if k == 0:
            return self
        raws = tuple(c[2] for c in comps)
        for i in range(len(comps) - k, -1, -1):
            if raws[i : i + k] == needle:
                return Multiaddr._make(comps[:i])
        return self

    @property
    def ip_address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The address of a leading ``/ip4`` or ``/ip6`` component (None for any other)."""
        if not self._comps:
            return None
        proto, _, raw = self._comps[0]
        if proto is _IP4:
            return ipaddress.IPv4Address(raw[-4:])
        if proto is _IP6:
            return ipaddress.IPv6Address(raw[-16:])
        return None

    def tcp_head(self) -> TcpHead | None:
        """The leading ``/<ip4|ip6|dns|dns4|dns6>/<host>/tcp/<port>``, or None."""
        comps = self._comps
        if len(comps) < 2 or comps[0][0].name not in _TCP_HOSTS or comps[1][0] is not _TCP:
            return None
        host, port = comps[0][1], comps[1][1]
        assert host is not None and port is not None
        rest = tuple((p.name, v) for p, v, _ in comps[2:])
        return TcpHead(comps[0][0].name, host, int(port), rest)

    @property
    def is_circuit(self) -> bool:
        """True for a relayed address (one with a ``/p2p-circuit`` component)."""
        return any(p is _CIRCUIT for p, _, _ in self._comps)

    @property
    def ends_with_peer_id(self) -> bool:
        """True if the last component is ``/p2p/<id>`` (``…/p2p-circuit`` does not)."""
        return bool(self._comps) and self._comps[-1][0] is _P2P

    @property
    def peer_id(self) -> PeerId | None:
        """The peer id of the last ``/p2p`` component, if any."""
        pid = self._peer_id
        if pid is _UNSET:
            pid = None
            for p, _, raw in reversed(self._comps):
                if p is _P2P:
                    got = decode_uvarint(raw, len(_P2P.code_bytes))
                    assert got is not None
                    pid = PeerId.from_bytes(raw[got[1] :])
                    break
            object.__setattr__(self, "_peer_id", pid)
        return pid  # type: ignore[no-any-return]

    def with_peer_id(self, peer_id: PeerId | str) -> Multiaddr:
        """Append ``/p2p/<peer_id>`` unless the address already ends with it.

        Raises :class:`InvalidMultiaddrError` if it ends with a different peer id.
        """
        pid = peer_id if isinstance(peer_id, PeerId) else PeerId.from_string(peer_id)
        comps = self._comps
        if comps and comps[-1][0] is _P2P:
            current = self.peer_id
            if current == pid:
                return self
            raise InvalidMultiaddrError(f"{self} already ends with another peer id than {pid}")
        raw = pid.to_bytes()
        comp: _Component = (_P2P, str(pid), _P2P.code_bytes + encode_uvarint(len(raw)) + raw)
        return Multiaddr._make((*comps, comp))

    def without_peer_id(self) -> Multiaddr:
        """This address without a trailing ``/p2p/<id>`` (unchanged if there is none)."""
        comps = self._comps
        if comps and comps[-1][0] is _P2P:
            return Multiaddr._make(comps[:-1])
        return self


def _lookup(name: str) -> _Proto:
    proto = _BY_NAME.get(name)
    if proto is None:
        raise InvalidMultiaddrError(f"unknown multiaddr protocol {name!r}")
    return proto
