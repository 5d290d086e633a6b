"""The import direction of docs/design.md, enforced: each layer imports only those above it.

Imports under ``if TYPE_CHECKING:`` are exempt (they cost nothing at run time and
exist only for annotations).  Sans-IO modules must not touch asyncio, sockets,
clocks or randomness.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "aiop2p"

# Layer of each top-level module or package, lower numbers first.
LAYERS: dict[str, int] = {
    "errors": 0,
    "_version": 0,
    "_wire": 1,
    "identity": 2,
    "multiaddr": 3,
    "protocols": 4,
    "config": 5,
    "events": 5,
    "transports": 5,
    "_aio": 6,
    "services": 7,
    "node": 8,
    "network": 9,
    "cli": 10,
    "__init__": 11,
}
SANS_IO_FORBIDDEN = {"asyncio", "socket", "time", "random", "selectors", "threading", "os"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return ".".join(rel.parts)


def _runtime_imports(tree: ast.Module, module: str) -> list[str]:
    """Absolute names imported outside ``if TYPE_CHECKING`` blocks."""
    found: list[str] = []
    package_parts = module.split(".")[:-1] if not module.endswith("__init__") else module.split(".")

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for orelse in child.orelse:
                    visit(orelse)
                continue
            if isinstance(child, ast.Import):
                found.extend(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package_parts[: len(package_parts) - (child.level - 1)]
                    name = ".".join(["aiop2p", *base, *([child.module] if child.module else [])])
                    if child.module is None:
                        found.extend(
                            f"{name}.{a.name}".replace("aiop2p..", "aiop2p.") for a in child.names
                        )
                    else:
                        found.append(name)
                else:
                    found.append(child.module or "")
            visit(child)

    visit(tree)
    return found


def _layer_of(name: str) -> int | None:
    parts = name.split(".")
    if parts[0] != "aiop2p" or len(parts) < 2:
        return None
    return LAYERS[parts[1]]


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_imports_follow_layers(path: Path) -> None:
    module = _module_name(path)
    top = module.split(".")[0]
    own_layer = LAYERS[top]
    tree = ast.parse(path.read_text())
    for name in _runtime_imports(tree, module):
        layer = _layer_of(name)
        if layer is None:
            if top == "protocols":
                assert name.split(".")[0] not in SANS_IO_FORBIDDEN, (
                    f"sans-IO module {module} imports {name}"
                )
            continue
        target_top = name.split(".")[1]
        if target_top == top:
            continue
        assert layer < own_layer or (top == "__init__"), (
            f"{module} (layer {top}) imports {name} (layer {target_top}), which is not above it"
        )


def test_every_module_has_a_layer() -> None:
    for path in MODULES:
        assert _module_name(path).split(".")[0] in LAYERS, path
