"""The top-level package re-exports exactly what ``__all__`` lists, and all of it resolves."""

from __future__ import annotations

import aiop2p


def test_all_names_resolve() -> None:
    for name in aiop2p.__all__:
        assert getattr(aiop2p, name) is not None, name


def test_all_is_sorted_and_unique() -> None:
    names = [n for n in aiop2p.__all__ if n != "__version__"]
    assert names == sorted(set(names))


def test_no_private_or_unlisted_public_names() -> None:
    public = {n for n in vars(aiop2p) if not n.startswith("_")}
    # Submodules are attributes of the package after import; they are not API.
    modules = {n for n in public if type(getattr(aiop2p, n)).__name__ == "module"}
    assert public - modules == set(aiop2p.__all__) - {"__version__"}
