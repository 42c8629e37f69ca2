"""The layers and their directions, read from the source: who may import whom, no cycles.

Imports under `if TYPE_CHECKING:` are left out: they never run, so they make no layer depend
on another at run time and cannot close an import cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.support.consumer_helpers import ROOT

PACKAGES = ("shared", "db", "producer", "consumers", "dashboard", "scripts", "bench", "tests")

# What each package may import (besides itself and third-party packages).
ALLOWED: dict[str, frozenset[str]] = {
    "shared": frozenset(),
    "db": frozenset({"shared"}),
    "consumers": frozenset({"shared"}),
    "producer": frozenset({"shared", "db"}),
    "dashboard": frozenset({"shared", "scripts"}),
    "scripts": frozenset({"shared", "db", "producer", "consumers", "dashboard"}),
    "bench": frozenset({"shared", "db", "producer", "consumers", "scripts", "tests"}),
    "tests": frozenset(PACKAGES),
}
MAX_LINES = 400


def _modules(package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every module imported when `module` runs (top level or inside functions)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)
        stack.extend(ast.iter_child_nodes(node))


def _top_level_imports(tree: ast.Module, module: str, is_package: bool) -> Iterator[str]:
    """Imports run when the module is first imported (not those inside functions)."""
    for node in tree.body:
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield from _runtime_imports(node, module, is_package)


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    known = {name: path for package in PACKAGES for name, path in _modules(package)}
    every: dict[str, set[str]] = {}
    top: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_package = path.name == "__init__.py"
        every[name] = {m for m in _runtime_imports(tree, name, is_package) if m in known}
        top[name] = {m for m in _top_level_imports(tree, name, is_package) if m in known}
    return every, top


def test_each_package_imports_only_the_layers_below_it() -> None:
    every, _ = _graph()
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in every.items()
        for target in targets
        if (src := module.split(".")[0]) != (dst := target.split(".")[0])
        and dst not in ALLOWED[src]
    )
    assert wrong == []


def test_the_checker_sees_a_forbidden_import() -> None:
    """The walk finds imports in functions and skips TYPE_CHECKING blocks (else the test above
    could pass by seeing nothing)."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from producer import app\n"
        "def f():\n    from consumers import runner\n    return runner\n"
    )
    found = set(_runtime_imports(tree, "shared.x", False))
    assert "consumers.runner" in found
    assert "producer.app" not in found


def test_no_import_cycle_between_modules() -> None:
    """Module-level imports form no cycle (a cycle makes import order matter)."""
    _, top = _graph()
    assert top, "no modules found"
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(top.get(node, ())):
            # A package importing its own submodule, or a submodule its package, is how
            # packages re-export; only cycles between distinct modules count.
            if target.startswith(node + ".") or node.startswith(target + "."):
                continue
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for module in sorted(top):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_no_module_outside_the_tests_is_over_400_lines() -> None:
    long = sorted(
        f"{path.relative_to(ROOT)}: {lines}"
        for package in PACKAGES
        if package != "tests"
        for _, path in _modules(package)
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    )
    assert long == []
