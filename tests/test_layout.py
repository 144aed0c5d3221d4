"""The package's import graph: no cycle among its modules, and no import of the entry module.

Imports are read with ``ast`` from every module of ``pytest_physpipe``. An import counts where
it runs: at module level *and inside functions* (a lazy import still ties two modules together;
the plugin.py <-> xdist cycle this guards against was made of function-level imports). Imports
under ``if TYPE_CHECKING:`` do not count: they never run, and annotations may name any module.
A ``from package import name`` counts as an import of ``package.name`` when that is a module,
else of ``package`` itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pytest_physpipe

PACKAGE = Path(pytest_physpipe.__file__).parent
ENTRY = "pytest_physpipe.plugin"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except what sits under ``if TYPE_CHECKING:``."""
    found: list[ast.AST] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return found


def imports_of(name: str) -> set[str]:
    """The package modules ``name`` imports at run time."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                full = f"{source}.{alias.name}"
                targets.add(full if full in MODULES else source)
    return {t for t in targets if t in MODULES and t != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path (first == last), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    # Importing a package runs its __init__; an edge into a package's own __init__ from the
    # modules it re-exports lazily (module __getattr__) is not a cycle at import time, but we
    # keep the graph strict: every run-time import is an edge.
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_nothing_inside_the_package_imports_the_entry_module() -> None:
    importers = sorted(name for name, targets in GRAPH.items() if ENTRY in targets)
    assert importers == [], f"{ENTRY} is imported by {importers}"


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_reader_counts_lazy_imports_and_skips_type_checking(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from pytest_physpipe import plugin\n"
        "def f():\n"
        "    from pytest_physpipe.store import entries\n"
        "    import pytest_physpipe.keys\n"
    )
    nodes = _runtime_nodes(ast.parse(source))
    names = {
        n.module if isinstance(n, ast.ImportFrom) else n.names[0].name
        for n in nodes
        if isinstance(n, ast.Import | ast.ImportFrom)
    }
    assert names == {"typing", "pytest_physpipe.store", "pytest_physpipe.keys"}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_700_lines(name: str) -> None:
    lines = MODULES[name].read_text().count("\n")
    assert lines <= 700, f"{name} has {lines} lines"
