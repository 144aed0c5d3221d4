"""Source of project code, parsed once per file.

``inspect.getsource`` re-reads and re-tokenizes a file and scans ``sys.modules`` for every
object it is asked about; a project of a few hundred helpers would pay that hundreds of times.
Here each file is parsed once (again when its size, mtime or inode change), and definitions are
found by line number (functions) or qualified name (classes); anything else falls back to
``inspect``.
"""

from __future__ import annotations

import ast
import inspect
import os
import sys
import textwrap
import tokenize
import types
from typing import Any

__all__ = ["clear", "node_of", "parse", "source_file"]


def parse(source: str) -> ast.AST:
    """The syntax tree of ``source`` (dedented): its one statement, or the whole module."""
    tree = ast.parse(textwrap.dedent(source))
    return tree.body[0] if len(tree.body) == 1 else tree


class _SourceFile:
    """A parsed source file and its nodes by first line (a plain class: a dataclass compiles
    its methods at import, see ``pytest_physpipe.frozen``)."""

    __slots__ = ("by_line", "tree")

    def __init__(self, tree: ast.Module, by_line: dict[int, list[ast.AST]]) -> None:
        self.tree = tree
        self.by_line = by_line


_FILES: dict[str, tuple[tuple[int, int, int], _SourceFile | None]] = {}


def source_file(filename: str) -> _SourceFile | None:
    try:
        info = os.stat(filename)
    except OSError:
        return None
    stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
    memo = _FILES.get(filename)
    if memo is not None and memo[0] == stamp:
        return memo[1]
    parsed: _SourceFile | None
    try:
        with tokenize.open(filename) as handle:  # honours a coding cookie
            tree = ast.parse(handle.read())
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        parsed = None
    else:
        by_line: dict[int, list[ast.AST]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                for line in {node.lineno, *(d.lineno for d in node.decorator_list)}:
                    by_line.setdefault(line, []).append(node)
        parsed = _SourceFile(tree=tree, by_line=by_line)
    _FILES[filename] = (stamp, parsed)
    return parsed


def _function_node(code: types.CodeType) -> ast.AST | None:
    """The definition of ``code`` (not a lambda's: many can share a line)."""
    found = source_file(code.co_filename)
    if found is None or code.co_name == "<lambda>":
        return None
    for node in found.by_line.get(code.co_firstlineno, ()):
        if getattr(node, "name", None) == code.co_name and not isinstance(node, ast.ClassDef):
            return node
    return None


def _class_node(cls: type) -> ast.AST | None:
    module = sys.modules.get(cls.__module__)
    filename = getattr(module, "__file__", None)
    found = source_file(filename) if isinstance(filename, str) else None
    if found is None or "<locals>" in cls.__qualname__:
        return None
    scope: list[ast.stmt] = found.tree.body
    node: ast.AST | None = None
    for part in cls.__qualname__.split("."):
        matches = [
            n
            for n in scope
            if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and n.name == part
        ]
        if not matches:
            return None
        node = matches[-1]  # the last definition is the one the module holds
        scope = node.body
    return node if isinstance(node, ast.ClassDef) else None


def node_of(obj: Any) -> ast.AST | None:
    """The syntax tree of a function, code object or class, or ``None`` without source."""
    try:
        if isinstance(obj, types.CodeType):
            node = _function_node(obj)
        elif isinstance(obj, type):
            node = _class_node(obj)
        else:
            code = getattr(obj, "__code__", None)
            node = _function_node(code) if isinstance(code, types.CodeType) else None
        if node is not None:
            return node
        return parse(inspect.getsource(obj))
    except (OSError, TypeError, SyntaxError):
        return None


def clear() -> None:
    """Forget every parsed file."""
    _FILES.clear()
