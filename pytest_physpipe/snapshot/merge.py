"""Merging on update: a rewritten golden keeps the text of every leaf still within tolerance.

When ``--snapshot-update`` rewrites a failing golden, only the leaves that failed take the new
node; every other leaf keeps its golden node as it was, so the diff of the golden file shows
exactly the values that moved beyond their tolerance.
"""

from __future__ import annotations

from collections.abc import Iterator

from pytest_physpipe.snapshot.encoding import Decoder, escape_key, hashable, tag_of, unescape_key
from pytest_physpipe.tolerance import child_path, index_path

__all__ = ["merge_values", "sidecars_in"]


def _children(node: object) -> tuple[str, dict[object, object]] | None:
    """(family, {key: child}) for a container node, None for a leaf."""
    if isinstance(node, list):
        return "sequence", dict(enumerate(node))
    if not isinstance(node, dict):
        return None
    tag = tag_of(node)
    if tag is None:
        return "mapping", {unescape_key(k): v for k, v in node.items()}
    if tag == "$tuple":
        return "sequence", dict(enumerate(node[tag]))
    if tag == "$dict":
        decoder = Decoder()
        return "mapping", {hashable(decoder.decode(k)): v for k, v in node[tag]}
    if tag in ("$model", "$dataclass"):
        return _children(node["fields"])
    return None


def _rebuild(node: object, children: dict[object, object]) -> object:
    """``node`` (an actual-side container) with its children replaced."""
    if isinstance(node, list):
        return [children[i] for i in range(len(node))]
    assert isinstance(node, dict)
    tag = tag_of(node)
    if tag is None:
        return {escape_key(str(k)): children[k] for k in (unescape_key(k) for k in node)}
    if tag == "$tuple":
        return {"$tuple": [children[i] for i in range(len(node[tag]))]}
    if tag == "$dict":
        decoder = Decoder()
        return {"$dict": [[k, children[hashable(decoder.decode(k))]] for k, _ in node[tag]]}
    return {tag: node[tag], "fields": _rebuild(node["fields"], children)}


def merge_values(golden: object, actual: object, path: str, failed: frozenset[str]) -> object:
    """``actual``'s node, except that leaves not in ``failed`` keep ``golden``'s node."""
    g, a = _children(golden), _children(actual)
    if g is not None and a is not None and g[0] == a[0]:
        merged = {}
        for key, child in a[1].items():
            if a[0] == "sequence" and isinstance(key, int):
                sub = index_path(path, key)
            else:
                sub = child_path(path, key)
            merged[key] = merge_values(g[1][key], child, sub, failed) if key in g[1] else child
        return _rebuild(actual, merged)
    if g is None and a is None and not any(_under(f, path) for f in failed):
        return golden  # compared and within tolerance: keep the bytes on disk
    return actual


def _under(failed: str, path: str) -> bool:
    """Whether ``failed`` is ``path`` or inside it (a column of a table, a field, ...)."""
    return not path or failed == path or failed.startswith((path + ".", path + "["))


def sidecars_in(node: object) -> Iterator[str]:
    """The sidecar names a node refers to."""
    if isinstance(node, list):
        for item in node:
            yield from sidecars_in(item)
    elif isinstance(node, dict):
        if tag_of(node) == "$array" and "sidecar" in node:
            yield str(node["sidecar"])
            return
        for item in node.values():
            yield from sidecars_in(item)
