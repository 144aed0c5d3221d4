"""The JSON a hit reads: ``meta.json`` to checked fields and a record in one pass, and
``value.json``, both by pydantic-core's parser.

pydantic-core's JSON parser reads ``meta.json`` straight into a typed shape: the payload sums
(``files``: each a size and an xxh3 digest) and the :class:`~pytest_physpipe.records.StageRecord`
validated as they are parsed, with no intermediate ``dict`` of the record. That is both
cheaper than ``json.loads`` followed by validating the record (a hit's largest cost after its
file reads) and a stricter check of what a hit trusts.

The standard library's ``json`` reads a few things that parser refuses (a lone surrogate
escaped in a string, nesting deeper than its limit). Whatever the one-pass read refuses is
read the way earlier versions did (``json.loads``, then the record validated), so every entry
that loaded before loads the same now, with the same errors: nothing valid turns corrupt.

``value.json`` goes through the same parser (:func:`parse_json`, the same fallback): between
two tests every cache is cold, and a second JSON parser per hit is code the CPU fetches anew.
"""

from __future__ import annotations

import functools
import json
from typing import Any, cast

from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic_core import from_json
from typing_extensions import NotRequired, TypedDict

from pytest_physpipe.errors import CorruptEntryError
from pytest_physpipe.records import StageRecord

__all__ = ["parse_json", "parse_meta", "parse_meta_fields"]


class _FileSum(TypedDict):
    """A payload file's sums: strict, so a size written as text is no size."""

    __pydantic_config__ = ConfigDict(extra="allow", strict=True)  # type: ignore[misc]

    size: int
    xxh3: str
    sample: NotRequired[str]


class _Meta(TypedDict):
    """The fields of ``meta.json`` a hit reads; any others (a newer writer's) are kept."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]

    key: str
    codec: str
    files: dict[str, _FileSum]
    codec_meta: NotRequired[dict[str, Any]]
    artifacts: NotRequired[dict[str, str]]
    run_id: NotRequired[str]
    record: StageRecord


@functools.cache
def _reader() -> TypeAdapter[_Meta]:
    # Built on the first hit (a couple of milliseconds), not when the store is imported.
    return TypeAdapter(_Meta)


def parse_meta(data: bytes, key: str) -> tuple[dict[str, Any], StageRecord]:
    """``meta.json``'s fields (``record`` taken out) and its validated record.

    Raises :class:`CorruptEntryError` when ``data`` is not JSON or belongs to another key;
    whatever else is wrong with it (a missing field, a record that does not validate) raises
    what reading it field by field raises, for the caller to report.
    """
    try:
        meta = cast("dict[str, Any]", _reader().validator.validate_json(data))
    except ValidationError:
        meta = parse_meta_fields(data, key)
    if meta["key"] != key:
        raise CorruptEntryError(f"entry {key}: meta.json belongs to another key")
    record = meta.pop("record")
    if not isinstance(record, StageRecord):
        record = StageRecord.model_validate(record)
    return meta, record


def parse_meta_fields(data: bytes, key: str) -> dict[str, Any]:
    """``meta.json`` as plain data, the record included, checked only to be this key's (what
    earlier versions did on a hit; ``physpipe`` commands read it so): :class:`CorruptEntryError`
    when it is not JSON or belongs to another key."""
    try:
        meta = json.loads(data)
    except (ValueError, RecursionError):  # nested deeper than the parser's stack
        raise CorruptEntryError(f"entry {key}: meta.json is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("key") != key:
        raise CorruptEntryError(f"entry {key}: meta.json belongs to another key")
    return meta


def parse_json(data: bytes) -> Any:
    """``json.loads(data)``: the same value, from pydantic-core's parser where it reads it."""
    try:
        return from_json(data)
    except ValueError:  # a lone surrogate, nesting past its limit, or not JSON at all
        return json.loads(data)
