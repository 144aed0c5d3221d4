"""Provenance keys: a canonical encoding of a stage instance's declaration, hashed with xxh3.

Pure functions of declarations: no stage runs, no data is read (except the content of
:data:`~pytest_physpipe.models.InputFile` config fields, which is part of the declaration).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import xxhash

from pytest_physpipe.models import StageConfig, is_input_file

__all__ = [
    "KEY_PATTERN",
    "KEY_SCHEMA",
    "canonical",
    "config_json",
    "input_file_hashes",
    "package_versions",
    "seed_from_key",
    "stage_key",
]

#: Bump when the encoding below changes: every key changes with it.
KEY_SCHEMA = 1
#: What a key looks like; the store refuses anything else (no path can escape it).
KEY_PATTERN = re.compile(r"^[0-9a-f]{32}$")

_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def canonical(obj: Any) -> bytes:
    """One byte string per value: sorted keys, no whitespace, floats as shortest repr."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True
    ).encode()


def config_json(config: StageConfig | None) -> dict[str, Any]:
    """The config as JSON-safe data (``model_dump(mode="json")``); ``{}`` for no config.

    Sets come out of ``model_dump`` as lists in iteration order, which depends on
    ``PYTHONHASHSEED`` for strings: they are sorted here, or every process (each xdist worker,
    each batch job) would compute its own key for the same declaration.
    """
    if config is None:
        return {}
    data: dict[str, Any] = _sort_sets(config.model_dump(), config.model_dump(mode="json"))
    return data


def _sort_sets(python: Any, data: Any) -> Any:
    """``data`` (the JSON dump) with the lists that were sets in ``python`` sorted."""
    if isinstance(python, set | frozenset) and isinstance(data, list):
        return sorted(data, key=canonical)
    if isinstance(python, dict) and isinstance(data, dict) and len(python) == len(data):
        return {
            key: _sort_sets(value, item)
            for value, (key, item) in zip(python.values(), data.items(), strict=True)
        }
    if isinstance(python, list | tuple) and isinstance(data, list) and len(python) == len(data):
        return [_sort_sets(value, item) for value, item in zip(python, data, strict=True)]
    return data


def _file_hash(path: Path) -> str:
    stat = path.stat()
    memo_key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    cached = _FILE_HASHES.get(memo_key)
    if cached is None:
        digest = xxhash.xxh3_128()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        cached = _FILE_HASHES[memo_key] = digest.hexdigest()
    return cached


def input_file_hashes(config: StageConfig | None, *, base: Path | None = None) -> dict[str, str]:
    """xxh3 of the content of every ``InputFile`` field, by field name.

    Raises ``FileNotFoundError`` naming the field when a file is missing; relative paths are
    read from ``base`` (the rootdir) when given.
    """
    if config is None:
        return {}
    hashes: dict[str, str] = {}
    for field_name, info in type(config).model_fields.items():
        if not is_input_file(info.metadata):
            continue
        path = Path(getattr(config, field_name))
        if base is not None and not path.is_absolute():
            path = base / path
        if not path.is_file():
            raise FileNotFoundError(f"InputFile field {field_name!r}: no file at {path}")
        hashes[field_name] = _file_hash(path)
    return hashes


def package_versions(names: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Installed versions of the packages in ini ``physpipe_track_packages``."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not-installed"
    return versions


def stage_key(
    *,
    name: str,
    qualname: str,
    code: str,
    version: int | str | None,
    config_class: str | None,
    config: Mapping[str, Any],
    inputs: Mapping[str, str],
    upstream: Mapping[str, str],
    packages: Mapping[str, str],
    salt: str,
) -> str:
    """The provenance key (32 hex digits) of one stage instance."""
    document = {
        "schema": KEY_SCHEMA,
        "stage": name,
        "qualname": qualname,
        "code": code,
        "version": version,
        "config_class": config_class,
        "config": dict(config),
        "inputs": dict(inputs),
        "upstream": dict(upstream),
        "packages": dict(packages),
        "salt": salt,
    }
    return xxhash.xxh3_128_hexdigest(canonical(document))


def seed_from_key(key: str) -> int:
    """A 63-bit seed derived from a key: stable across processes and platforms."""
    return int(key[:16], 16) & ((1 << 63) - 1)
