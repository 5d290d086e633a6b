"""The multibase encodings a libp2p peer id or certhash may arrive in.

Supported prefixes: ``z`` base58btc, ``b``/``B`` base32 (lower/upper, unpadded),
``c``/``C`` base32 padded, ``f``/``F`` base16, ``m``/``M`` base64 (unpadded/padded),
``u``/``U`` base64url (unpadded/padded).  Decoding is strict: a wrong-case letter, a
padding character in an unpadded base or a character outside the alphabet is an error,
so that one value has one spelling per base.
"""

from __future__ import annotations

import base64
import binascii

from ..errors import InvalidArgumentError
from .base58 import b58decode, b58encode

__all__ = ["PREFIXES", "decode", "encode"]

PREFIXES = frozenset("zbBcCfFmMuU")
"""The multibase prefix characters :func:`decode` accepts."""


def _pad(text: str, block: int) -> str:
    return text + "=" * (-len(text) % block)


def encode(prefix: str, data: bytes) -> str:
    """Encode ``data`` in the multibase named by its prefix character."""
    if prefix == "z":
        return "z" + b58encode(data)
    if prefix in "bB":
        out = base64.b32encode(data).decode("ascii").rstrip("=")
        return prefix + (out.lower() if prefix == "b" else out)
    if prefix in "cC":
        out = base64.b32encode(data).decode("ascii")
        return prefix + (out.lower() if prefix == "c" else out)
    if prefix in "fF":
        out = data.hex()
        return prefix + (out if prefix == "f" else out.upper())
    if prefix == "m":
        return "m" + base64.b64encode(data).decode("ascii").rstrip("=")
    if prefix == "M":
        return "M" + base64.b64encode(data).decode("ascii")
    if prefix == "u":
        return "u" + base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
    if prefix == "U":
        return "U" + base64.urlsafe_b64encode(data).decode("ascii")
    raise InvalidArgumentError(f"unsupported multibase prefix {prefix!r}")


def decode(text: str) -> bytes:
    """Decode multibase text; raise :class:`InvalidArgumentError` if it is not valid."""
    if not text:
        raise InvalidArgumentError("empty multibase string")
    prefix, body = text[0], text[1:]
    if not body.isascii():
        raise InvalidArgumentError("multibase string has non-ASCII characters")
    try:
        if prefix == "z":
            return b58decode(body)
        if prefix in "bBcC":
            padded = prefix in "cC"
            if (prefix in "bc" and body != body.lower()) or (
                prefix in "BC" and body != body.upper()
            ):
                raise InvalidArgumentError("base32 letter of the wrong case")
            if not padded:
                if "=" in body:
                    raise InvalidArgumentError("padding in unpadded base32")
                body = _pad(body, 8)
            return base64.b32decode(body.upper())
        if prefix in "fF":
            if (prefix == "f" and body != body.lower()) or (prefix == "F" and body != body.upper()):
                raise InvalidArgumentError("base16 letter of the wrong case")
            return binascii.unhexlify(body)
        if prefix in "mMuU":
            url = prefix in "uU"
            if prefix in "mu":
                if "=" in body:
                    raise InvalidArgumentError("padding in unpadded base64")
                body = _pad(body, 4)
            if url:
                if "+" in body or "/" in body:
                    raise InvalidArgumentError("base64 character in base64url text")
                return base64.b64decode(body, altchars=b"-_", validate=True)
            return base64.b64decode(body, validate=True)
    except binascii.Error as exc:
        raise InvalidArgumentError(f"invalid multibase {prefix!r} text: {exc}") from None
    raise InvalidArgumentError(f"unsupported multibase prefix {prefix!r}")
