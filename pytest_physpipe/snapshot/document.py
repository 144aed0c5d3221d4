"""The readable golden file: deterministic JSON, one leaf per line, full-precision floats.

``emit`` writes a node the same way every time (keys as given, floats by ``repr``, the shortest
text that reads back as the same double), so parsing a file and emitting it again is the
identity: regenerating unchanged goldens gives byte-identical files. ``parse_document`` refuses,
with what to do, a file that is not JSON (merge-conflict markers), has no snapshot table, or
has a format this version does not read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from pytest_physpipe.snapshot.encoding import GoldenFileError, special_text, tag_of

__all__ = ["FORMAT_VERSION", "emit", "parse_document", "render_document"]

#: Bump when the file layout changes incompatibly; readers refuse newer formats.
FORMAT_VERSION = 1
_ABOUT = "pytest-physpipe goldens; update with `pytest --snapshot-update`"
_LINE_WIDTH = 100


def _scalar_text(node: object) -> str:
    if isinstance(node, float):
        return repr(node) if math.isfinite(node) else json.dumps(special_text(node))
    return json.dumps(node, ensure_ascii=False)


def _is_scalar(node: object) -> bool:
    return not isinstance(node, (list, dict))


def _compact(node: object) -> bool:
    """Whether a node may go on one line: scalars, short rows, small tagged values."""
    if isinstance(node, list):
        return all(_compact(x) for x in node)
    if isinstance(node, dict):
        tag = tag_of(node)
        return tag in ("$float", "$complex", "$bytes") or (
            tag == "$tuple" and all(_is_scalar(x) for x in node[tag])
        )
    return True


def _one_line(node: object) -> str:
    if isinstance(node, list):
        return "[" + ", ".join(_one_line(x) for x in node) + "]"
    if isinstance(node, dict):
        return (
            "{"
            + ", ".join(
                f"{json.dumps(k, ensure_ascii=False)}: {_one_line(v)}" for k, v in node.items()
            )
            + "}"
        )
    return _scalar_text(node)


def emit(node: object, indent: int = 0, lead: int = 0) -> str:
    """Deterministic JSON: one leaf per line, short rows and small tagged values on one line.

    Floats are written with ``repr``, the shortest text that reads back as the same double,
    so parsing and re-emitting a file is the identity (regeneration is byte-identical).
    """
    if isinstance(node, (list, dict)) and node and _compact(node):
        one = _one_line(node)
        if 2 * indent + lead + len(one) <= _LINE_WIDTH:
            return one
    pad = "  " * (indent + 1)
    if isinstance(node, list):
        if not node:
            return "[]"
        items = ",\n".join(pad + emit(x, indent + 1) for x in node)
        return "[\n" + items + "\n" + "  " * indent + "]"
    if isinstance(node, dict):
        if not node:
            return "{}"
        keys = [json.dumps(str(k), ensure_ascii=False) + ": " for k in node]
        items = ",\n".join(
            f"{pad}{key}{emit(v, indent + 1, len(key))}"
            for key, v in zip(keys, node.values(), strict=True)
        )
        return "{\n" + items + "\n" + "  " * indent + "}"
    return _scalar_text(node)


def parse_document(text: str, location: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GoldenFileError(
            f"golden file {location} is not valid JSON ({exc}); if it has merge-conflict "
            "markers, resolve them (or delete the file and run `pytest --snapshot-update`)"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("snapshots"), dict):
        raise GoldenFileError(f"golden file {location} has no 'snapshots' table")
    version = doc.get("format")
    if version != FORMAT_VERSION:
        raise GoldenFileError(
            f"golden file {location} has format {version!r}; this pytest-physpipe reads format "
            f"{FORMAT_VERSION}: upgrade pytest-physpipe, or regenerate the file"
        )
    return doc


def render_document(entries: Mapping[str, object]) -> bytes:
    doc = {"about": _ABOUT, "format": FORMAT_VERSION, "snapshots": dict(entries)}
    return (emit(doc) + "\n").encode("utf-8")
