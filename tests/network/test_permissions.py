"""Permission bit sets: single bits 0-31, and the documented restricted-rule pattern."""

from __future__ import annotations

import enum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiop2p.errors import InvalidArgumentError
from aiop2p.network.firewall import Rule
from aiop2p.network.permissions import (
    FirewallPermission,
    PermissionEnum,
    PermissionValue,
    VariantPermission,
    permission_bits,
)


class MessagePermission(PermissionEnum):
    PING = 0
    MESSAGE = 1
    OTHER = 2


class Auto(PermissionEnum):
    A = enum.auto()
    B = enum.auto()
    C = enum.auto()


# -- permission values -----------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(32))
def test_permission_value_new_is_power_of_two(index: int) -> None:
    value = PermissionValue.new(index)
    assert value is not None
    assert value == 2**index
    assert isinstance(value, int)
    assert value.index == index
    assert repr(value) == f"PermissionValue.new({index})"


@pytest.mark.parametrize("index", [32, 33, 255, -1])
def test_permission_value_new_out_of_range_is_none(index: int) -> None:
    assert PermissionValue.new(index) is None


@pytest.mark.parametrize("bad", [0, 3, 6, 2**32, -2])
def test_permission_value_must_be_a_single_u32_bit(bad: int) -> None:
    with pytest.raises(InvalidArgumentError):
        PermissionValue(bad)


def test_permission_value_equality_and_self_permission() -> None:
    assert PermissionValue.new(1) == 2
    assert PermissionValue(8) == PermissionValue.new(3)
    value = PermissionValue(4)
    assert value.permission() is value
    assert isinstance(value, VariantPermission)


def test_firewall_permission_none_and_all() -> None:
    assert FirewallPermission.none() == 0
    assert FirewallPermission.none().is_no_permissions()
    assert FirewallPermission.all() == 0xFFFF_FFFF
    assert not FirewallPermission.all().is_no_permissions()
    assert FirewallPermission() == FirewallPermission.none()
    for index in range(32):
        bit = PermissionValue.new(index)
        assert bit is not None
        assert FirewallPermission.all().permits(bit)
        assert not FirewallPermission.none().permits(bit)


def test_firewall_permission_add_remove_permits() -> None:
    p0, p1, p2 = (PermissionValue.new(i) for i in range(3))
    assert p0 is not None and p1 is not None and p2 is not None
    base = FirewallPermission.none()
    both = base.add_permissions([p0, p2])
    assert both == 0b101
    assert base == 0  # immutable: add returns a new value
    assert both.permits(p0) and both.permits(p2) and not both.permits(p1)
    assert both.remove_permissions([p0]) == 0b100
    assert both.remove_permissions([p0, p2]).is_no_permissions()
    assert FirewallPermission.all().remove_permissions([p1]) == 0xFFFF_FFFD
    assert both.indices() == [0, 2]
    assert both.values() == [1, 4]
    assert repr(both) == "FirewallPermission(0x00000005)"


def test_firewall_permission_from_int_and_comparison() -> None:
    perm = FirewallPermission(6)
    assert perm == 6
    assert perm < 7
    assert hash(perm) == hash(6)
    assert FirewallPermission.from_indices([1, 2]) == perm
    with pytest.raises(InvalidArgumentError):
        FirewallPermission(2**32)
    with pytest.raises(InvalidArgumentError):
        FirewallPermission(-1)
    with pytest.raises(InvalidArgumentError):
        FirewallPermission.from_indices([32])


def test_permits_uses_any_common_bit() -> None:
    assert FirewallPermission(0b110).permits(0b011)
    assert not FirewallPermission(0b100).permits(0b011)


@given(
    st.integers(0, 0xFFFF_FFFF),
    st.lists(st.integers(0, 31), max_size=8),
    st.lists(st.integers(0, 31), max_size=8),
)
def test_add_remove_match_set_semantics(start: int, add: list[int], remove: list[int]) -> None:
    add_values = [PermissionValue(1 << i) for i in add]
    remove_values = [PermissionValue(1 << i) for i in remove]
    result = FirewallPermission(start).add_permissions(add_values).remove_permissions(remove_values)
    expected = {i for i in range(32) if start >> i & 1} | set(add)
    expected -= set(remove)
    assert set(result.indices()) == expected
    for index in range(32):
        assert result.permits(PermissionValue(1 << index)) == (index in expected)


# -- enums, sums -------------------------------------------------------------------------------


def test_permission_enum_values_and_sums() -> None:
    assert [m.permission() for m in MessagePermission] == [1, 2, 4]
    assert [m.permission() for m in Auto] == [1, 2, 4]
    assert Auto.C.value == 2
    both = MessagePermission.PING | MessagePermission.OTHER
    assert isinstance(both, FirewallPermission)
    assert both == 0b101
    assert (both | MessagePermission.MESSAGE) == 0b111
    assert (1 | MessagePermission.MESSAGE) == 0b011
    assert MessagePermission.permissions() == 0b111
    assert MessagePermission.permissions(MessagePermission.MESSAGE) == 0b010
    assert FirewallPermission.of(MessagePermission.PING, PermissionValue(4), 8) == 0b1101
    assert FirewallPermission.none().add_permissions([MessagePermission.MESSAGE]) == 2
    assert isinstance(MessagePermission.PING, VariantPermission)
    # Members are not ints: index 0 must never be read as the empty bit set.
    assert not isinstance(MessagePermission.PING, int)


@pytest.mark.parametrize("bad", [32, -1, "x", True])
def test_permission_enum_rejects_bad_indices(bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        PermissionEnum("Bad", {"A": bad})  # type: ignore[call-arg,arg-type]  # functional API


def test_permission_bits_rejects_junk() -> None:
    with pytest.raises(InvalidArgumentError):
        permission_bits(object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        permission_bits(2**32)
    with pytest.raises(InvalidArgumentError):
        permission_bits(True)  # a bool is not a bit set


# -- the documented pattern ------------------------------------------------------------------------


def test_restricted_rule_allowing_only_ping() -> None:
    """The documented pattern: a Restricted rule over the enum's permissions."""

    def only_ping(rq: MessagePermission) -> bool:
        return (
            FirewallPermission.none()
            .add_permissions([MessagePermission.PING.permission()])
            .permits(rq.permission())
        )

    rule = Rule.restricted(only_ping)
    assert rule.restriction is not None
    assert rule.restriction(MessagePermission.PING)
    assert not rule.restriction(MessagePermission.MESSAGE)
    assert not rule.restriction(MessagePermission.OTHER)

    by_set = Rule.permissions([MessagePermission.PING])
    assert by_set.restriction is not None
    assert by_set.restriction(MessagePermission.PING)
    assert not by_set.restriction(MessagePermission.MESSAGE)
    assert not by_set.restriction(MessagePermission.OTHER)
