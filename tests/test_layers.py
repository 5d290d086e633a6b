"""The import direction of docs/design.md, enforced: each layer imports only those above it.

Every import counts, those under ``if TYPE_CHECKING:`` and inside functions included:
an annotation pointing the wrong way is still a dependency a reader has to follow.
No module may import itself back through others (no import cycles).  Sans-IO modules
must not touch asyncio, sockets, clocks or randomness.
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
    "__main__": 11,  # python -m aiop2p: the CLI
}
SANS_IO_FORBIDDEN = {"asyncio", "socket", "time", "random", "selectors", "threading", "os"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return ".".join(rel.parts)


def _imports(tree: ast.Module, module: str) -> list[str]:
    """Absolute names of everything ``module`` imports, wherever the import statement is."""
    found: list[str] = []
    package_parts = module.split(".")[:-1]  # a package's __init__ sits in the package
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - (node.level - 1)]
                name = ".".join(["aiop2p", *base, *([node.module] if node.module else [])])
                # ``from . import x`` and ``from .pkg import mod`` may name modules.
                found.extend(f"{name}.{alias.name}" for alias in node.names)
            else:
                found.extend(f"{node.module}.{alias.name}" for alias in node.names)
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
    for name in _imports(tree, module):
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


def _module_of(name: str, modules: set[str]) -> str | None:
    """The package module ``name`` (a module or a name inside one) belongs to."""
    while name not in modules:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name


def _import_graph() -> dict[str, set[str]]:
    names = {_module_name(p): p for p in MODULES}
    dotted = {
        "aiop2p." + m.removesuffix(".__init__") if m != "__init__" else "aiop2p": m for m in names
    }
    graph: dict[str, set[str]] = {m: set() for m in dotted}
    for full, module in dotted.items():
        for name in _imports(ast.parse(names[module].read_text()), module):
            target = _module_of(name, set(dotted))
            if target is not None and target != full:
                graph[full].add(target)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles() -> None:
    # ``_aio.stream`` declares what a stream sees of its connection (``StreamOwner``)
    # instead of naming ``_aio.connection``, which creates streams.
    assert import_cycles(_import_graph()) == []


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
