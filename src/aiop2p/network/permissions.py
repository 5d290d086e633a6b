"""Unix-permission style bit sets for writing firewall rules over request kinds.

Each kind of request (an enum member, typically) owns one bit of a 32-bit set; a rule
permits a request when the request's bit is in the rule's set::

    class Request(PermissionEnum):
        PING = 0            # bit 0 -> PermissionValue 1
        MESSAGE = 1         # bit 1 -> PermissionValue 2
        OTHER = enum.auto() # the next index (2) -> PermissionValue 4

    allowed = Request.PING | Request.MESSAGE          # FirewallPermission(0x3)
    allowed.permits(Request.PING.permission())        # True
    Rule.permissions(allowed)                         # a firewall rule (firewall.py)

Any object with a ``permission() -> PermissionValue`` method is a :class:`VariantPermission`
(``PermissionValue`` itself is one).  Types that are not enums should use
``PermissionValue.new(0)``, following the original crate.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, Final, Protocol, Self, runtime_checkable

from ..errors import InvalidArgumentError

__all__ = [
    "MAX_PERMISSION_INDEX",
    "FirewallPermission",
    "PermissionEnum",
    "PermissionValue",
    "VariantPermission",
    "permission_bits",
]

#: Permissions are bits of an unsigned 32-bit value: indices 0..31.
MAX_PERMISSION_INDEX: Final = 31
_U32_MASK: Final = 0xFFFF_FFFF


@runtime_checkable
class VariantPermission(Protocol):
    """Anything that names the single permission bit it needs (a request kind)."""

    def permission(self) -> PermissionValue: ...


class PermissionValue(int):
    """One permission bit: a power of two below ``2**32``; compares equal to that int."""

    __slots__ = ()

    def __new__(cls, value: int) -> Self:
        """Wrap ``value``, which must be a single bit (``2**i``, ``0 <= i <= 31``)."""
        value = int(value)
        if value <= 0 or value > _U32_MASK or value & (value - 1):
            raise InvalidArgumentError(
                f"a permission value is a single bit 2**i with 0 <= i <= 31, not {value}"
            )
        return super().__new__(cls, value)

    @classmethod
    def new(cls, index: int) -> PermissionValue | None:
        """``2**index`` for ``0 <= index <= 31``, else ``None`` (as the original crate)."""
        if 0 <= index <= MAX_PERMISSION_INDEX:
            return cls(1 << index)
        return None

    @property
    def index(self) -> int:
        """The bit position (``log2`` of the value)."""
        return self.bit_length() - 1

    def permission(self) -> PermissionValue:
        """A permission value is its own permission (so it is a :class:`VariantPermission`)."""
        return self

    def __repr__(self) -> str:
        return f"PermissionValue.new({self.index})"


def permission_bits(item: int | VariantPermission) -> int:
    """The bits an item stands for: an int as is (checked to fit 32 bits), else ``permission()``.

    Non-int objects are asked first through ``permission()`` so that enum members whose
    values are bit *indices* are never mistaken for bit sets.
    """
    if isinstance(item, int) and not isinstance(item, bool):
        value = int(item)
        if not 0 <= value <= _U32_MASK:
            raise InvalidArgumentError(f"a permission set fits 32 bits; {value} does not")
        return value
    method = getattr(item, "permission", None)
    if method is None or not callable(method):
        raise InvalidArgumentError(
            f"{item!r} is neither an int nor has a permission() method (VariantPermission)"
        )
    return int(method())


class FirewallPermission(int):
    """A set of permission bits (u32), immutable; compares equal to its int value.

    Every operation returns a new ``FirewallPermission``.  ``a | b`` unions with ints,
    permission values or :class:`VariantPermission` objects.
    """

    __slots__ = ()

    def __new__(cls, value: int = 0) -> Self:
        """Wrap an unsigned 32-bit int (default: the empty set)."""
        value = int(value)
        if not 0 <= value <= _U32_MASK:
            raise InvalidArgumentError(f"a permission set fits 32 bits; {value} does not")
        return super().__new__(cls, value)

    @classmethod
    def none(cls) -> FirewallPermission:
        """The empty set: permits nothing."""
        return cls(0)

    @classmethod
    def all(cls) -> FirewallPermission:
        """Every bit set (``0xFFFFFFFF``): permits every request kind."""
        return cls(_U32_MASK)

    @classmethod
    def of(cls, *items: int | VariantPermission) -> FirewallPermission:
        """The sum (union) of the items' permissions: ``FirewallPermission.of(Req.A, Req.B)``."""
        bits = 0
        for item in items:
            bits |= permission_bits(item)
        return cls(bits)

    @classmethod
    def from_indices(cls, indices: Iterable[int]) -> FirewallPermission:
        """The set with exactly these bit indices (each ``0..31``)."""
        bits = 0
        for index in indices:
            value = PermissionValue.new(index)
            if value is None:
                raise InvalidArgumentError(
                    f"permission index {index} outside 0..{MAX_PERMISSION_INDEX}"
                )
            bits |= value
        return cls(bits)

    def is_no_permissions(self) -> bool:
        """True for the empty set."""
        return self == 0

    def add_permissions(self, items: Iterable[int | VariantPermission]) -> FirewallPermission:
        """This set with the items' bits added."""
        bits = int(self)
        for item in items:
            bits |= permission_bits(item)
        return FirewallPermission(bits)

    def remove_permissions(self, items: Iterable[int | VariantPermission]) -> FirewallPermission:
        """This set with the items' bits removed."""
        bits = int(self)
        for item in items:
            bits &= ~permission_bits(item)
        return FirewallPermission(bits & _U32_MASK)

    def permits(self, item: int | VariantPermission) -> bool:
        """True if any of the item's bits is in this set (``set & bits != 0``)."""
        return (int(self) & permission_bits(item)) != 0

    def indices(self) -> list[int]:
        """The bit indices in this set, ascending."""
        bits = int(self)
        return [i for i in range(MAX_PERMISSION_INDEX + 1) if bits >> i & 1]

    def values(self) -> list[PermissionValue]:
        """The single-bit values in this set, ascending."""
        return [PermissionValue(1 << i) for i in self.indices()]

    def __or__(self, other: int | VariantPermission) -> FirewallPermission:
        return FirewallPermission(int(self) | permission_bits(other))

    __ror__ = __or__

    def __repr__(self) -> str:
        return f"FirewallPermission(0x{int(self):08x})"


class PermissionEnum(enum.Enum):
    """Base for enums of request kinds whose values are permission bit *indices* (0..31).

    ``Member.permission()`` is ``PermissionValue.new(value)``; ``enum.auto()`` numbers
    members 0, 1, 2, ...; ``A | B`` gives a :class:`FirewallPermission`;
    ``Kind.permissions()`` is the set of all members (or of those given).
    Members are deliberately *not* ints, so a member never passes for a bit set.
    """

    _value_: int

    @staticmethod
    def _generate_next_value_(name: str, start: int, count: int, last_values: list[Any]) -> int:
        return count

    def __init__(self, index: int) -> None:
        if not isinstance(index, int) or isinstance(index, bool):
            raise InvalidArgumentError(
                f"{type(self).__name__} values are permission indices (int), not {index!r}"
            )
        if not 0 <= index <= MAX_PERMISSION_INDEX:
            raise InvalidArgumentError(
                f"{type(self).__name__} value {index} outside 0..{MAX_PERMISSION_INDEX}"
            )

    def permission(self) -> PermissionValue:
        """The single bit ``2**value``."""
        return PermissionValue(1 << self._value_)

    def __or__(self, other: int | VariantPermission) -> FirewallPermission:
        return FirewallPermission((1 << self._value_) | permission_bits(other))

    __ror__ = __or__

    @classmethod
    def permissions(cls, *members: Self) -> FirewallPermission:
        """The set of the given members, or of every member of the enum when none is given."""
        chosen: Iterable[Self] = members if members else cls
        bits = 0
        for member in chosen:
            bits |= 1 << member._value_
        return FirewallPermission(bits)
