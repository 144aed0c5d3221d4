"""Merging on update: a rewritten golden keeps the text of every value still within tolerance.

When ``--snapshot-update`` rewrites a failing golden, only the leaves that failed take the new
node; every other leaf keeps its golden node as it was, so the diff of the golden file shows
exactly the values that moved beyond their tolerance. Arrays are merged element by element
(:class:`ArrayMerge`): a failing array keeps the golden value of every element within
tolerance, so an inline array's diff shows only the elements that moved, and a sidecar is
rewritten with only those elements changed (its summary keeps every statistic that stayed
within the array's tolerance). A change of shape, dtype or fields replaces the array whole.
Tables merge per column (and the index), masked arrays their data and mask separately.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np

from pytest_physpipe.elementwise import failing_mask, same_dtype
from pytest_physpipe.snapshot.encoding import (
    Decoder,
    Encoder,
    GoldenFileError,
    SidecarLoader,
    escape_key,
    hashable,
    tag_of,
    unescape_key,
)
from pytest_physpipe.tolerance import Tolerance, child_path, index_path

__all__ = ["ArrayMerge", "merge_values", "sidecars_in"]

#: ``(path, golden array node, result array node) -> the node to store``.
LeafMerge = Callable[[str, Mapping[str, object], Mapping[str, object]], object]


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


def merge_values(
    golden: object,
    actual: object,
    path: str,
    failed: frozenset[str],
    merge_array: LeafMerge | None = None,
) -> object:
    """``actual``'s node, except that leaves not in ``failed`` keep ``golden``'s node.

    A failing array whose golden is an array too goes to ``merge_array`` (element by element).
    """
    if isinstance(golden, dict) and isinstance(actual, dict):
        merged = _merge_tagged(golden, actual, path, failed, merge_array)
        if merged is not None:
            return merged
    g, a = _children(golden), _children(actual)
    if g is not None and a is not None and g[0] == a[0]:
        children: dict[object, object] = {}
        for key, child in a[1].items():
            if a[0] == "sequence" and isinstance(key, int):
                sub = index_path(path, key)
            else:
                sub = child_path(path, key)
            children[key] = (
                merge_values(g[1][key], child, sub, failed, merge_array) if key in g[1] else child
            )
        return _rebuild(actual, children)
    if g is None and a is None:
        if not any(_under(f, path) for f in failed):
            return golden  # compared and within tolerance: keep the bytes on disk
        if (
            merge_array is not None
            and isinstance(golden, dict)
            and isinstance(actual, dict)
            and tag_of(golden) == tag_of(actual) == "$array"
        ):
            return merge_array(path, golden, actual)
    return actual


def _merge_tagged(
    golden: dict[str, object],
    actual: dict[str, object],
    path: str,
    failed: frozenset[str],
    merge_array: LeafMerge | None,
) -> object | None:
    """Masked arrays (data and mask) and tables of one kind; None for any other pair."""
    tag = tag_of(golden)
    if tag != tag_of(actual):
        return None
    if tag == "$masked":
        return {
            "$masked": merge_values(
                golden[tag], actual[tag], child_path(path, "data"), failed, merge_array
            ),
            "mask": merge_values(
                golden["mask"], actual["mask"], child_path(path, "mask"), failed, merge_array
            ),
        }
    if tag == "$frame" and golden[tag] == actual[tag]:
        return _merge_frame(golden, actual, path, failed, merge_array)
    return None


def _merge_frame(
    golden: dict[str, object],
    actual: dict[str, object],
    path: str,
    failed: frozenset[str],
    merge_array: LeafMerge | None,
) -> object:
    """A table: the index and each column by label, like a mapping of arrays."""
    decoder = Decoder()
    old_columns = golden["columns"]
    assert isinstance(old_columns, list)
    by_label = {hashable(decoder.decode(label)): node for label, node in old_columns}
    columns = []
    new_columns = actual["columns"]
    assert isinstance(new_columns, list)
    for label, node in new_columns:
        key = hashable(decoder.decode(label))
        merged = (
            merge_values(by_label[key], node, child_path(path, key), failed, merge_array)
            if key in by_label
            else node
        )
        columns.append([label, merged])
    return {
        "$frame": actual["$frame"],
        "index": merge_values(
            golden["index"], actual["index"], child_path(path, "index"), failed, merge_array
        ),
        "columns": columns,
    }


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


class ArrayMerge:
    """Merges a failing array element by element: elements within tolerance keep the golden.

    ``tolerances`` maps each failing path to the tolerance it failed (None: compared exactly),
    as :class:`~pytest_physpipe.tolerance.Mismatch` records it. Sidecars of merged arrays are
    collected in :attr:`sidecars`, to be written with the entry.
    """

    def __init__(
        self,
        tolerances: Mapping[str, Tolerance | None],
        load_golden: SidecarLoader,
        result_sidecars: Mapping[str, np.ndarray],
    ) -> None:
        self.tolerances = tolerances
        self.golden_decoder = Decoder(load_golden)
        self.result_decoder = Decoder(lambda name, dtype, shape: result_sidecars[name])
        self.sidecars: dict[str, np.ndarray] = {}

    def __call__(
        self, path: str, golden: Mapping[str, object], actual: Mapping[str, object]
    ) -> object:
        try:
            old = self.golden_decoder.decode_array(golden)
            new = self.result_decoder.decode_array(actual)
        except (GoldenFileError, KeyError, TypeError, ValueError):
            return actual
        merged = self._merge(path, old, new)
        if merged is None:
            return actual
        # Where the result's array went (inline or a sidecar), the merged one goes too.
        encoder = Encoder(inline_max=merged.size if "data" in actual else -1)
        node = encoder.encode_array(merged, path)
        assert isinstance(node, dict)
        self.sidecars.update(encoder.sidecars)
        return self._keep_summary(path, golden, node)

    def _merge(self, path: str, old: np.ndarray, new: np.ndarray) -> np.ndarray | None:
        if old.shape != new.shape:
            return None
        if old.dtype.names is None and new.dtype.names is None:
            if not same_dtype(old.dtype, new.dtype) or path not in self.tolerances:
                return None
            return self._merge_plain(old, new, self.tolerances[path])
        if old.dtype.names != new.dtype.names:
            return None
        merged = np.array(new, copy=True)
        for name in new.dtype.names or ():
            sub = child_path(path, name)
            if not same_dtype(old.dtype[name], new.dtype[name]):
                return None
            if sub in self.tolerances:
                merged[name] = self._merge_plain(old[name], new[name], self.tolerances[sub])
            elif not any(_under(f, sub) for f in self.tolerances):
                merged[name] = old[name]
        return merged

    @staticmethod
    def _merge_plain(old: np.ndarray, new: np.ndarray, tol: Tolerance | None) -> np.ndarray:
        spec = None if tol is None else (tol.rtol, tol.atol, tol.equal_nan)
        moved = failing_mask(old, new, spec)
        merged = np.where(moved, new, old)
        if merged.dtype.kind not in "US":  # strings keep the wider of the two widths
            merged = merged.astype(new.dtype.newbyteorder("="), copy=False)
        return merged

    def _keep_summary(
        self, path: str, golden: Mapping[str, object], node: dict[str, object]
    ) -> dict[str, object]:
        """A sidecar's statistics that stayed within the array's tolerance keep their text."""
        tol = self.tolerances.get(path)
        for key in ("min", "max", "mean", "norm"):
            old, new = golden.get(key), node.get(key)
            if old == new or key not in node:
                continue
            if (
                tol is not None
                and isinstance(old, (int, float))
                and isinstance(new, (int, float))
                and not isinstance(old, bool)
                and abs(new - old) <= tol.atol + tol.rtol * abs(old)
            ):
                node[key] = old
        return node
