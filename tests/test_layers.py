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


# The network package's pure parts: rules, permissions, addresses, codecs, channels.  They
# import only the value layers and each other (no connection driver, transport, service or
# node), and only the event channel uses asyncio, so each can be read and tested alone.
NETWORK_PURE = {"firewall", "permissions", "address_book", "codecs", "event_channel"}
NETWORK_PURE_MAY_IMPORT = {"errors", "_wire", "identity", "multiaddr", "events"}


@pytest.mark.parametrize("name", sorted(NETWORK_PURE))
def test_pure_network_modules_stay_pure(name: str) -> None:
    tree = ast.parse((PACKAGE / "network" / f"{name}.py").read_text())
    for node in ast.walk(tree):  # every import, TYPE_CHECKING and function-local included
        if isinstance(node, ast.Import):
            tops = [alias.name.split(".")[0] for alias in node.names]
            assert "aiop2p" not in tops, f"network.{name}: use relative imports"
            if name != "event_channel":
                assert "asyncio" not in tops, f"network.{name} imports asyncio"
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1:  # a sibling in network/
                siblings = [module] if module else [alias.name for alias in node.names]
                for sibling in siblings:
                    assert sibling in NETWORK_PURE, f"network.{name} imports network.{sibling}"
            elif node.level == 2:
                top = module.split(".")[0]
                assert top in NETWORK_PURE_MAY_IMPORT, f"network.{name} imports aiop2p.{module}"
            else:
                assert node.level == 0 and module.split(".")[0] != "aiop2p", module
                if name != "event_channel":
                    assert module.split(".")[0] != "asyncio", f"network.{name} imports asyncio"
