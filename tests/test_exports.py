"""The top-level package re-exports exactly what ``__all__`` lists, and all of it resolves."""

from __future__ import annotations

import importlib
import pkgutil
import re

import aiop2p
import aiop2p.errors
from aiop2p import P2PError


def test_all_names_resolve() -> None:
    for name in aiop2p.__all__:
        assert getattr(aiop2p, name) is not None, name


def test_all_is_sorted_and_unique() -> None:
    """Sorted, apart from the exceptions (appended: all of ``aiop2p.errors.__all__``)."""
    assert len(aiop2p.__all__) == len(set(aiop2p.__all__))
    errors = set(aiop2p.errors.__all__)
    names = [n for n in aiop2p.__all__ if n != "__version__" and n not in errors]
    assert names == sorted(names)
    assert aiop2p.__all__[-len(errors) :] == aiop2p.errors.__all__


def test_no_private_or_unlisted_public_names() -> None:
    public = {n for n in vars(aiop2p) if not n.startswith("_")}
    # Submodules are attributes of the package after import; they are not API.
    modules = {n for n in public if type(getattr(aiop2p, n)).__name__ == "module"}
    assert public - modules == set(aiop2p.__all__) - {"__version__"}


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
