"""Provenance keys: a canonical encoding of a stage instance's declaration, hashed with xxh3.

Pure functions of declarations: no stage runs, no data is read (except the content of
:data:`~pytest_physpipe.models.InputFile` config fields, which is part of the declaration).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xxhash

if TYPE_CHECKING:
    from pytest_physpipe.models import StageConfig

#: The marker :data:`pytest_physpipe.models.InputFile` puts in a field's metadata.
INPUT_FILE_TAG = "physpipe:InputFile"


def is_input_file(metadata: list[Any]) -> bool:
    """Whether a pydantic field's metadata marks it as an ``InputFile``."""
    return INPUT_FILE_TAG in metadata


__all__ = [
    "KEY_PATTERN",
    "KEY_SCHEMA",
    "KeyTemplate",
    "UnencodableField",
    "canonical",
    "config_encodings",
    "config_identity",
    "config_json",
    "has_input_files",
    "input_file_hashes",
    "package_versions",
    "python_dumps",
    "seed_from_key",
    "stage_key",
    "xxh3",
]

#: Bump when the encoding below changes: every key changes with it.
KEY_SCHEMA = 1
#: What a key looks like; the store refuses anything else (no path can escape it).
KEY_PATTERN = re.compile(r"\A[0-9a-f]{32}\Z")

_FILE_HASHES: dict[tuple[str, int, int], str] = {}


#: ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
#: allow_nan=True)``, with the encoder made once instead of once per call (it keeps no state
#: between calls).
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True
)
#: The same encoding through the C encoder that ``_CANONICAL.encode`` builds anew on every call
#: (half its cost for a small config), made once. Without the circular-reference check: that
#: check keeps the ids of the containers being encoded in a dict shared by every call (and by
#: threads); a circular value ends in RecursionError instead of ValueError. ``None`` where the C
#: accelerator is missing.
_MAKE_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
_C_CANONICAL: Any = (
    None
    if _MAKE_ENCODER is None
    else _MAKE_ENCODER(
        None, _CANONICAL.default, json.encoder.encode_basestring, None, ":", ",", True, False, True
    )
)


def canonical(obj: Any) -> bytes:
    """One byte string per value: sorted keys, no whitespace, floats as shortest repr."""
    if _C_CANONICAL is None:  # pragma: no cover - CPython has the encoder
        return _CANONICAL.encode(obj).encode()
    return "".join(_C_CANONICAL(obj, 0)).encode()


class UnencodableField(ValueError):
    """A config field whose value has no faithful encoding (an arbitrary object, bad bytes)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"field {field!r}: {reason}")
        self.field = field
        self.reason = reason


def _dumps(config: StageConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """``model_dump()`` and ``model_dump(mode="json")``, or :class:`UnencodableField`."""
    try:
        serializer = _plain_serializer(type(config))
        if serializer is not None:
            python: dict[str, Any] = serializer.to_python(config)
            data: dict[str, Any] = serializer.to_python(config, mode="json")
            return python, data
        return config.model_dump(), config.model_dump(mode="json")
    except Exception as exc:  # pydantic raises its own error types, and user serializers any
        for name in type(config).model_fields:
            try:
                config.model_dump(mode="json", include={name})
            except Exception as field_exc:
                raise UnencodableField(name, _first_line(field_exc)) from None
        raise UnencodableField("?", _first_line(exc)) from None


#: Per config class, the serializer ``model_dump`` hands its work to, where the class keeps
#: pydantic's ``model_dump`` (``None``: it overrides it, and keys go through the override).
_SERIALIZERS: dict[type[Any], Any] = {}


def _plain_serializer(cls: type[StageConfig]) -> Any:
    """``cls.__pydantic_serializer__`` if ``model_dump`` is pydantic's own, else ``None``.

    ``model_dump()`` is that serializer's ``to_python`` with every option at its default,
    behind a layer of keyword passing that costs twice the dump of a small config; a plan
    dumps every config of a sweep twice.
    """
    try:
        return _SERIALIZERS[cls]
    except KeyError:
        pass
    from pydantic import BaseModel
    from pydantic_core import SchemaSerializer

    serializer = cls.__pydantic_serializer__ if cls.model_dump is BaseModel.model_dump else None
    if not isinstance(serializer, SchemaSerializer):
        return None  # not built yet (a forward reference): model_dump builds it or says why
    _SERIALIZERS[cls] = serializer
    return serializer


def python_dumps(configs: Iterable[StageConfig]) -> list[dict[str, Any]]:
    """``[config.model_dump() for config in configs]``, each through its class's serializer
    where the class keeps pydantic's ``model_dump`` (as :func:`config_encodings` dumps)."""
    dumps: list[dict[str, Any]] = []
    for config in configs:
        cls = type(config)
        serializer = _SERIALIZERS.get(cls) or _plain_serializer(cls)
        dumps.append(config.model_dump() if serializer is None else serializer.to_python(config))
    return dumps


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def config_json(config: StageConfig | None) -> dict[str, Any]:
    """The config as JSON-safe data (``model_dump(mode="json")``); ``{}`` for no config.

    What records and reports show. Sets come out of ``model_dump`` as lists in iteration order,
    which depends on ``PYTHONHASHSEED`` for strings: they are sorted here, or every process
    (each xdist worker, each batch job) would compute its own key for the same declaration.
    Raises :class:`UnencodableField` naming the field that cannot be encoded.
    """
    if config is None:
        return {}
    python, data = _dumps(config)
    result: dict[str, Any] = _sort_sets(python, data)
    return result


#: Tag of the JSON objects that stand for what JSON alone would confuse (tuples, dicts with
#: keys that are not strings, sets, bytes).
_TYPED = "__physpipe_type__"


def config_identity(config: StageConfig | None) -> dict[str, Any]:
    """The config as keys see it: :func:`config_json`, faithful to types where JSON is not.

    ``(1, 2)`` and ``[1, 2]``, ``{1: x}`` and ``{"1": x}``, ``{True: x}`` and ``{1: x}`` give
    different encodings; ``1``, ``1.0`` and ``True`` already differ in JSON. Everything JSON
    holds exactly (str-keyed dicts, lists, str, int, float, bool, None) is encoded as in
    :func:`config_json`, so ordinary configs keep their keys. Other objects (paths, dates,
    enums) are encoded as pydantic's JSON mode writes them: their field's type says what they
    are.
    """
    if config is None:
        return {}
    return _identity(*_dumps(config))


def config_encodings(config: StageConfig | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config_json(config), config_identity(config))`` from one pair of dumps."""
    if config is None:
        return {}, {}
    serializer = _SERIALIZERS.get(type(config))
    if serializer is not None:  # what _dumps does first, without its calls (a plan's hot path)
        try:
            python: dict[str, Any] = serializer.to_python(config)
            data: dict[str, Any] = serializer.to_python(config, mode="json")
        except Exception:
            python, data = _dumps(config)  # raises, naming the field
    else:
        python, data = _dumps(config)
    for value in python.values():
        if type(value) not in _PLAIN:
            return _sort_sets(python, data), _identity(python, data)
    # Only numbers, strings, booleans and None: both encodings are the JSON dump itself.
    return data, data


#: Values JSON holds exactly, which both encodings leave as they are.
_SCALARS = (bool, int, float, str)
_PLAIN = frozenset({*_SCALARS, type(None)})


def _identity(python: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for (name, value), item in zip(python.items(), data.values(), strict=True):
        try:
            fields[name] = _typed(value, item)
        except UnencodableField as exc:
            raise UnencodableField(name, exc.reason) from None
    return fields


def _typed(python: Any, data: Any) -> Any:
    if python is None or type(python) in (bool, int, float, str):
        return data
    if type(python) is bytes:
        return {_TYPED: "bytes", "hex": python.hex()}
    if isinstance(python, set | frozenset):
        items = (
            [_typed(v, v) for v in python]
            if not isinstance(data, list)
            else [_typed(v, d) for v, d in zip(python, data, strict=True)]
        )
        return {_TYPED: "set", "items": sorted(items, key=canonical)}
    if isinstance(python, tuple) and isinstance(data, list) and len(python) == len(data):
        return {_TYPED: "tuple", "items": [_typed(v, d) for v, d in zip(python, data, strict=True)]}
    if type(python) is list and isinstance(data, list) and len(python) == len(data):
        return [_typed(v, d) for v, d in zip(python, data, strict=True)]
    if isinstance(python, dict) and isinstance(data, dict) and len(python) == len(data):
        if all(type(k) is str for k in python):
            return {k: _typed(v, data[k]) for k, v in python.items()}
        pairs = [
            [_typed_key(k), _typed(v, d)]
            for (k, v), d in zip(python.items(), data.values(), strict=True)
        ]
        return {_TYPED: "dict", "items": sorted(pairs, key=canonical)}
    return data


def _typed_key(key: Any) -> Any:
    if key is None or type(key) in (bool, int, float, str):
        return key
    if type(key) is bytes:
        return {_TYPED: "bytes", "hex": key.hex()}
    if isinstance(key, tuple):
        return {_TYPED: "tuple", "items": [_typed_key(k) for k in key]}
    if isinstance(key, frozenset):
        return {_TYPED: "set", "items": sorted((_typed_key(k) for k in key), key=canonical)}
    # An enum member, a date, a path as a dict key: its JSON text, tagged with its type.
    cls = type(key)
    return {_TYPED: f"{cls.__module__}.{cls.__qualname__}", "text": str(key)}


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
    for field_name in _input_fields(type(config)):
        path = Path(getattr(config, field_name))
        if base is not None and not path.is_absolute():
            path = base / path
        if not path.is_file():
            raise FileNotFoundError(f"InputFile field {field_name!r}: no file at {path}")
        hashes[field_name] = _file_hash(path)
    return hashes


def has_input_files(config_class: type[StageConfig]) -> bool:
    """Whether a config class has ``InputFile`` fields (whose content keys hash)."""
    return bool(_input_fields(config_class))


_INPUT_FIELDS: dict[type[StageConfig], tuple[str, ...]] = {}


def _input_fields(cls: type[StageConfig]) -> tuple[str, ...]:
    """The ``InputFile`` fields of a config class (looked up once per class)."""
    found = _INPUT_FIELDS.get(cls)
    if found is None:
        found = _INPUT_FIELDS[cls] = tuple(
            name for name, info in cls.model_fields.items() if is_input_file(info.metadata)
        )
    return found


def package_versions(names: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Installed versions of the packages in ini ``physpipe_track_packages``."""
    from importlib import metadata  # only a computed record asks

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


class KeyTemplate:
    """:func:`stage_key` with what is fixed per stage encoded once.

    ``KeyTemplate(**fixed).key(canonical(config), inputs, upstream)`` is
    ``stage_key(**fixed, config=config, inputs=inputs, upstream=upstream)``, byte for byte:
    canonical JSON is compositional (a sorted object is its members' encodings joined), so a
    sweep encodes each config once instead of once per use.
    """

    def __init__(
        self,
        *,
        name: str,
        qualname: str,
        code: str,
        version: int | str | None,
        config_class: str | None,
        packages: Mapping[str, str],
        salt: str,
    ) -> None:
        fixed = {
            "schema": KEY_SCHEMA,
            "stage": name,
            "qualname": qualname,
            "code": code,
            "version": version,
            "config_class": config_class,
            "packages": dict(packages),
            "salt": salt,
        }
        encoded = {member: canonical(value) for member, value in fixed.items()}
        # The document in sorted order, cut where a varying member's value goes: the fixed
        # text between them is encoded once here.
        self._order: list[str] = []
        self._texts: list[bytes] = []
        text = b"{"
        for member in sorted([*encoded, *_VARYING]):
            text += (b"," if text != b"{" else b"") + canonical(member) + b":"
            if member in _VARYING:
                self._texts.append(text)
                self._order.append(member)
                text = b""
            else:
                text += encoded[member]
        self._texts.append(text + b"}")
        # The varying members sort among themselves as listed in _VARYING: key() relies on it.
        assert self._order == list(_VARYING)
        texts = self._texts
        #: The document of an instance without inputs and upstream keys, cut where its config
        #: goes: what :meth:`plain_key` joins around the config.
        self._plain = (texts[0], texts[1] + b"{}" + texts[2] + b"{}" + texts[3])

    def key(
        self, config: bytes, inputs: Mapping[str, str] | None, upstream: Mapping[str, str]
    ) -> str:
        """The key for one instance; ``config`` is ``canonical(config_identity(...))``."""
        texts = self._texts
        return xxhash.xxh3_128_hexdigest(
            b"".join(
                (
                    texts[0],
                    config,
                    texts[1],
                    canonical(dict(inputs)) if inputs else b"{}",
                    texts[2],
                    canonical(dict(upstream)) if upstream else b"{}",
                    texts[3],
                )
            )
        )

    def plain_key(self, config: bytes) -> str:
        """``key(config, None, {})``: an instance without inputs or anything upstream (a
        sweep's usual instance), one concatenation instead of a join of seven parts."""
        head, tail = self._plain
        return xxhash.xxh3_128_hexdigest(head + config + tail)


#: The members of a key's document that vary between a stage's instances.
_VARYING = ("config", "inputs", "upstream")


def xxh3(data: bytes) -> str:
    """xxh3-128 of ``data`` as 32 hex digits."""
    return xxhash.xxh3_128_hexdigest(data)


def seed_from_key(key: str) -> int:
    """A 63-bit seed derived from a key: stable across processes and platforms."""
    return int(key[:16], 16) & ((1 << 63) - 1)
