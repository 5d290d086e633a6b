"""The public surface: the top-level exports, the types of public signatures, the errors tree.

As websockets' ``tests/test_exports.py`` does, the top-level ``__all__`` is tied to the
public modules: it is exactly the union of their ``__all__``, with no name in two of them.
A module not listed here (``_aio``, ``_wire``, ``protocols``, ``transports``, ``services``,
``cli``, and the parts of :mod:`aiop2p.network`) is importable but not re-exported: its
names reach users only through the public modules that name them.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import pkgutil
import re
import typing
from types import ModuleType

import aiop2p
import aiop2p.config
import aiop2p.errors
import aiop2p.events
import aiop2p.identity
import aiop2p.multiaddr
import aiop2p.network
import aiop2p.node
from aiop2p import P2PError

PUBLIC_MODULES: tuple[ModuleType, ...] = (
    aiop2p.config,
    aiop2p.errors,
    aiop2p.events,
    aiop2p.identity,
    aiop2p.multiaddr,
    aiop2p.network,
    aiop2p.node,
)


def test_top_level_all_is_the_union_of_the_public_modules() -> None:
    combined = [name for module in PUBLIC_MODULES for name in module.__all__]
    assert len(combined) == len(set(combined)), "a name is exported by two public modules"
    assert set(aiop2p.__all__) == {*combined, "__version__"}
    assert len(aiop2p.__all__) == len(set(aiop2p.__all__))


def test_all_names_resolve_to_their_module_object() -> None:
    for module in PUBLIC_MODULES:
        for name in module.__all__:
            assert getattr(aiop2p, name) is getattr(module, name), name


def test_no_private_or_unlisted_public_names() -> None:
    public = {n for n in vars(aiop2p) if not n.startswith("_")}
    # Submodules are attributes of the package after import; they are not API.
    modules = {n for n in public if type(getattr(aiop2p, n)).__name__ == "module"}
    assert public - modules == set(aiop2p.__all__) - {"__version__"}


# -- every type in a public signature is exported ---------------------------------------

# Classes the library constructs and hands out: their __init__ is not for users.
_BUILT_BY_THE_LIBRARY = {
    "Connection",
    "Stream",
    "ApprovalRequest",
    "PeerRuleQuery",
    "InboundRequest",
    "RequestProtocol",
}
# Exported for annotating ``Node(transports=...)``; writing a transport (its methods'
# types) is not public API yet.
_OPAQUE = {"Transport"}
# Members the library reads or calls itself; their types are plumbing (a stream's sink
# is how StreamTransport runs a connection over it).
_INTERNAL_MEMBERS = {("RelayServerConfig", "limit"), ("Stream", "set_sink")}


def _aiop2p_classes(tp: object, out: set[type]) -> None:
    if isinstance(tp, type) and tp.__module__.startswith("aiop2p"):
        out.add(tp)
    for arg in typing.get_args(tp):
        _aiop2p_classes(arg, out)


def _hints(obj: object) -> dict[str, object]:
    """Annotations resolved against the defining module and the public names (names
    imported only under TYPE_CHECKING resolve through the latter)."""
    namespace = {name: getattr(aiop2p, name) for name in aiop2p.__all__}
    namespace.update(vars(importlib.import_module(obj.__module__)))
    return typing.get_type_hints(obj, globalns=namespace)


def _signature_types(name: str, obj: object) -> set[type]:
    found: set[type] = set()
    hints: list[object] = []
    if inspect.isfunction(obj):
        hints += _hints(obj).values()
    elif isinstance(obj, type) and name not in _OPAQUE:
        if dataclasses.is_dataclass(obj):
            hints += [h for k, h in _hints(obj).items() if not k.startswith("_")]
        if not issubclass(obj, (BaseException, enum.Enum)):
            for member, value in vars(obj).items():
                private = member.startswith("_") and member != "__init__"
                built = member == "__init__" and name in _BUILT_BY_THE_LIBRARY
                if private or built or (name, member) in _INTERNAL_MEMBERS:
                    continue
                if isinstance(value, property):
                    value = value.fget
                if isinstance(value, (classmethod, staticmethod)):
                    value = value.__func__
                if inspect.isfunction(value):
                    hints += _hints(value).values()
    for hint in hints:
        _aiop2p_classes(hint, found)
    return found


def test_every_type_in_a_public_signature_is_exported() -> None:
    exported = {id(getattr(aiop2p, name)) for name in aiop2p.__all__}
    missing: dict[str, set[str]] = {}
    for name in aiop2p.__all__:
        for cls in _signature_types(name, getattr(aiop2p, name)):
            if id(cls) not in exported:
                missing.setdefault(f"{cls.__module__}.{cls.__qualname__}", set()).add(name)
    assert missing == {}


# -- the errors tree (issue 8, item 12) ------------------------------------------------------


def _exception_classes() -> dict[type[BaseException], str]:
    """Every exception class defined anywhere in the package, with its module."""
    found: dict[type[BaseException], str] = {}
    for info in pkgutil.walk_packages(aiop2p.__path__, "aiop2p."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, BaseException)
                and obj.__module__.startswith("aiop2p")
            ):
                found[obj] = obj.__module__
    return found


def _drawn_names() -> set[str]:
    doc = aiop2p.errors.__doc__ or ""
    tree = doc.split("::", 1)[1].split("\n\n", 2)[1]
    return set(re.findall(r"^[─└├│ ]+([A-Z][A-Za-z0-9]+)\b", tree, re.MULTILINE))


def test_every_exception_is_a_p2p_error_in_the_errors_tree() -> None:
    classes = _exception_classes()
    assert aiop2p.errors.RequestTimeoutError in classes  # the walk works
    drawn = _drawn_names()
    for cls, module in classes.items():
        assert issubclass(cls, P2PError), f"{module}.{cls.__name__} is not a P2PError"
        if cls.__name__.startswith("_"):
            continue  # internal signals, never raised to users
        name = cls.__name__
        assert module == "aiop2p.errors", f"{name} is defined in {module}, not aiop2p.errors"
        assert getattr(aiop2p, name, None) is cls, f"{name} is not exported from aiop2p"
        assert name in aiop2p.__all__, name
        assert name in drawn, f"{name} is missing from the tree in aiop2p.errors' docstring"


def test_the_drawn_tree_matches_the_classes() -> None:
    """Every class drawn exists, under the parent the drawing shows."""
    doc = aiop2p.errors.__doc__ or ""
    tree = doc.split("::", 1)[1].split("\n\n", 2)[1]
    parents: list[tuple[int, type]] = []
    for line in tree.splitlines():
        match = re.match(r"^(\s*(?:[│ ]   )*)(?:[├└]── )?([A-Z][A-Za-z0-9]+)\b", line)
        if match is None:
            continue
        depth = len(match.group(1)) // 4 + (1 if "── " in line else 0)
        cls = getattr(aiop2p.errors, match.group(2))
        while parents and parents[-1][0] >= depth:
            parents.pop()
        if parents:
            assert issubclass(cls, parents[-1][1]), f"{cls.__name__} under {parents[-1][1]}"
        parents.append((depth, cls))
    assert {cls.__name__ for _, cls in parents} >= {"P2PError"}
