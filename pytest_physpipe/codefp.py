"""Code fingerprints: a hash of a function's normalized syntax tree.

Comments, docstrings, formatting and decorators do not count; every expression does. Helpers
and modules named in a stage's ``track=`` are fingerprinted the same way.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
import warnings
from collections.abc import Iterable
from typing import Any

import xxhash

from pytest_physpipe.errors import PhyspipeWarning

__all__ = ["fingerprint", "fingerprint_source"]

_CACHE: dict[int, tuple[object, str]] = {}


class _Normalizer(ast.NodeTransformer):
    """Drops what does not change behaviour: docstrings and decorators of the top definition."""

    def _strip_docstring(self, node: ast.AST) -> None:
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            # A body must not be empty; `pass` keeps `def f(): "doc"` and `def f(): pass` equal.
            body[:] = body[1:] or [ast.Pass()]

    def generic_visit(self, node: ast.AST) -> ast.AST:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
            self._strip_docstring(node)
        return super().generic_visit(node)


def fingerprint_source(source: str) -> str:
    """Fingerprint of Python source: the xxh3-128 of its normalized AST dump."""
    tree = ast.parse(textwrap.dedent(source))
    top = tree.body[0] if len(tree.body) == 1 else tree
    if isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        # Decorator arguments that affect results (version, config) are keyed separately;
        # the rest (resources, slow, retries, ...) must not invalidate the cache.
        top.decorator_list = []
    _Normalizer().visit(top)
    return xxhash.xxh3_128_hexdigest(_stable_dump(top).encode())


def _stable_dump(node: Any) -> str:
    """Like ``ast.dump``, but the same on every Python version.

    ``ast.dump`` changed its output for empty fields in 3.13, and new versions add fields
    (``type_params`` in 3.12); leaving out every empty field keeps keys valid across upgrades.
    """
    if isinstance(node, ast.AST):
        fields = []
        for name in node._fields:
            value = getattr(node, name, None)
            if value is None or value == []:
                continue
            fields.append(f"{name}={_stable_dump(value)}")
        return f"{type(node).__name__}({','.join(fields)})"
    if isinstance(node, list):
        return "[" + ",".join(_stable_dump(item) for item in node) + "]"
    return repr(node)


def _source_of(obj: Any) -> str | None:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return None


def _fingerprint_one(obj: Any) -> str:
    cached = _CACHE.get(id(obj))
    if cached is not None and cached[0] is obj:
        return cached[1]
    source = _source_of(obj)
    if source is not None:
        result = fingerprint_source(source)
    else:
        code = getattr(obj, "__code__", None)
        if not isinstance(code, types.CodeType):
            raise TypeError(
                f"cannot fingerprint {obj!r}: it has no source file and no code object; "
                "track only functions, classes and modules defined in .py files"
            )
        warnings.warn(
            f"no source for {getattr(obj, '__qualname__', obj)!r}; its bytecode is keyed "
            "instead, so the key changes with the Python version",
            PhyspipeWarning,
            stacklevel=3,
        )
        result = xxhash.xxh3_128_hexdigest(code.co_code + repr(code.co_consts).encode())
    _CACHE[id(obj)] = (obj, result)
    return result


def fingerprint(func: Any, track: Iterable[Any] = ()) -> str:
    """The code fingerprint of a stage function plus the functions/modules it tracks."""
    parts = [_fingerprint_one(func)]
    for extra in track:
        name = getattr(extra, "__qualname__", None) or getattr(extra, "__name__", repr(extra))
        parts.append(f"{getattr(extra, '__module__', '')}.{name}={_fingerprint_one(extra)}")
    if len(parts) == 1:
        return parts[0]
    return xxhash.xxh3_128_hexdigest("\n".join(parts).encode())
