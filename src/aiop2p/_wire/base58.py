"""base58btc (the Bitcoin alphabet), the canonical text form of peer ids.

Big-integer arithmetic keeps the work in C: one ``int.from_bytes`` and a divmod per
output digit, instead of the quadratic byte-array algorithm.
"""

from __future__ import annotations

from ..errors import InvalidArgumentError

__all__ = ["ALPHABET", "b58decode", "b58encode"]

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_DIGITS = {ch: i for i, ch in enumerate(ALPHABET)}
# 58**10 < 2**64: peel ten digits per big-int division, then finish with small ints.
_CHUNK = 58**10


def b58encode(data: bytes | bytearray | memoryview) -> str:
    """Encode bytes; each leading zero byte becomes a leading ``1``."""
    raw = bytes(data)
    stripped = raw.lstrip(b"\0")
    zeros = len(raw) - len(stripped)
    n = int.from_bytes(stripped, "big")
    out: list[str] = []
    alphabet = ALPHABET
    while n >= _CHUNK:
        n, chunk = divmod(n, _CHUNK)
        for _ in range(10):
            chunk, r = divmod(chunk, 58)
            out.append(alphabet[r])
    while n:
        n, r = divmod(n, 58)
        out.append(alphabet[r])
    out.reverse()
    return "1" * zeros + "".join(out)


def b58decode(text: str) -> bytes:
    """Decode base58btc text; raise :class:`InvalidArgumentError` on a foreign character."""
    digits = _DIGITS
    n = 0
    try:
        for ch in text:
            n = n * 58 + digits[ch]
    except KeyError as exc:
        raise InvalidArgumentError(f"invalid base58btc character {exc.args[0]!r}") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body
