"""The layout shows the pipeline: no import cycles, no pytest in the engine, layers in order.

Read from the source with ``ast``, so every import counts: at module level, inside
functions (deferred to keep start-up cheap) and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "pytest_pgsandbox"
NAME = PACKAGE.name

# The engine's stages, lowest first: a module may import its own layer and those below it.
LAYERS = [
    {"_engine.urls", "_engine.naming", "_engine.appenv", "_engine.stackroom"},
    {"_engine.clock"},
    {"_engine.servers"},
    {"_engine.templates"},
    {"_engine.isolation"},
    {"_engine.drivers"},
    {"_engine.helpers", "_engine.handle", "_engine.sandbox"},
]
# What the engine may import from the package's top: its vocabulary, not its pytest layer.
ENGINE_MAY_USE = {"errors", "settings", "_version"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> Iterator[str]:
    """Every module of the package (names relative to it) and every top package this file
    imports, wherever the import statement stands."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                inner = full.removeprefix(NAME + ".")
                yield full if inner in MODULES else node.module


def _ours(target: str) -> str | None:
    if target == NAME:
        return ""
    if target.startswith(NAME + "."):
        return target.removeprefix(NAME + ".")
    return None


GRAPH = {
    name: {o for t in _imports(path) if (o := _ours(t)) is not None and o != name}
    for name, path in MODULES.items()
}


def _cycles() -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)
    return found


def test_the_package_has_no_import_cycle() -> None:
    assert _cycles() == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    GRAPH["_engine.urls"].add("_engine.sandbox")
    try:
        assert any({"_engine.sandbox", "_engine.urls"} <= set(c) for c in _cycles())
    finally:
        GRAPH["_engine.urls"].discard("_engine.sandbox")


def _layer(module: str) -> int | None:
    for index, layer in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in layer):
            return index
    return None


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("_engine.")))
def test_engine_modules_import_neither_pytest_nor_a_higher_stage(module: str) -> None:
    imported = set(_imports(MODULES[module]))
    assert not {t for t in imported if t == "pytest" or t.startswith(("pytest.", "_pytest"))}
    own = _layer(module)
    assert own is not None, f"{module} belongs to no stage: add it to LAYERS"
    for target in GRAPH[module]:
        if target.startswith("_engine"):
            assert (_layer(target) or 0) <= own, f"{module} imports {target}, a later stage"
        else:
            assert target in ENGINE_MAY_USE, f"{module} imports {target}, above the engine"


def test_every_stage_says_what_it_does_and_what_it_may_import() -> None:
    for stage in ("servers", "templates", "isolation", "drivers", "clock"):
        doc = ast.get_docstring(
            ast.parse((PACKAGE / "_engine" / stage / "__init__.py").read_text())
        )
        assert doc
        assert "May import" in doc, stage
