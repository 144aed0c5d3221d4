"""Which ``params=`` entry a config is, and the ids of stage instances.

Pure functions of declarations, memoized per stage: finding a config among ten thousand
``params=`` entries is a dictionary lookup, not a scan.
"""

from __future__ import annotations

from typing import Any

from pytest_physpipe import keys
from pytest_physpipe.models import StageConfig
from pytest_physpipe.stage import StageSpec, default_ids

__all__ = ["UNKNOWN_INDEX", "format_value", "index_of", "own_id", "param_position", "swept_fields"]

#: "Not known yet" for a params= index (``None`` means: none of the params).
UNKNOWN_INDEX: Any = object()

_PARAM_TABLES: dict[int, tuple[StageSpec, _ParamTable]] = {}


def index_of(spec: StageSpec, config: StageConfig | None) -> int | None:
    """Which entry of ``params=`` ``config`` is (``None``: none of them)."""
    if spec.params is None or config is None:
        return None
    return _table(spec, spec.params).index(config)


def param_position(spec: StageSpec, param: object) -> int | None:
    """:func:`index_of` for ``param`` if it is an entry of ``params=`` itself (what pytest
    hands a stage fixture), else ``None``: an identity lookup, no comparison."""
    cached = _PARAM_TABLES.get(id(spec))
    if cached is not None and cached[0] is spec:  # _table(), without its call (a plan's hot path)
        return cached[1].by_id.get(id(param))
    if spec.params is None:
        return None
    return _table(spec, spec.params).by_id.get(id(param))


def _table(spec: StageSpec, params: tuple[StageConfig, ...]) -> _ParamTable:
    # One table per spec: comparing against every param would be quadratic in sweep size.
    cached = _PARAM_TABLES.get(id(spec))
    if cached is None or cached[0] is not spec:
        cached = _PARAM_TABLES[id(spec)] = (spec, _ParamTable(params))
    return cached[1]


class _ParamTable:
    """The first ``params=`` entry equal to a config (configs are equal when their
    provenance is: :meth:`StageConfig.__eq__`).

    Found by identity first (pytest hands a fixture the entry itself, and ``params`` keeps
    every entry alive, so no other live object has one's id), then by hash; configs with an
    unhashable field (a list) are compared by their encoding.
    """

    def __init__(self, params: tuple[StageConfig, ...]) -> None:
        self._params = params
        self._by_value: dict[StageConfig, int] | None = {}
        self._by_encoding: dict[bytes, int] | None = None
        #: id of each entry -> the position of the first entry equal to it.
        self.by_id: dict[int, int] = {}
        try:
            for position, param in enumerate(params):
                self.by_id[id(param)] = self._by_value.setdefault(param, position)
        except TypeError:
            self._by_value = None
            encodings = self._encodings()
            self.by_id = {id(param): encodings[_encoded(param)] for param in params}

    def _encodings(self) -> dict[bytes, int]:
        if self._by_encoding is None:
            self._by_encoding = {}
            for position, param in enumerate(self._params):
                self._by_encoding.setdefault(_encoded(param), position)
        return self._by_encoding

    def index(self, config: StageConfig) -> int | None:
        found = self.by_id.get(id(config))
        if found is not None:
            return found
        if self._by_value is not None:
            try:
                return self._by_value.get(config)
            except TypeError:
                pass
        return self._encodings().get(_encoded(config))


def _encoded(config: StageConfig) -> bytes:
    return keys.canonical(keys.config_identity(config))


def own_id(
    spec: StageSpec, config: StageConfig | None, param_index: Any = UNKNOWN_INDEX
) -> str | None:
    if config is None:
        return None
    index = index_of(spec, config) if param_index is UNKNOWN_INDEX else param_index
    if index is not None and spec.ids is not None:
        return spec.ids[index]
    if config == spec.default_config:
        return None
    return default_ids([config], spec.default_config)[0]


def format_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def swept_fields(spec: StageSpec) -> dict[str, list[str]]:
    """The config fields whose value differs across ``params=``, with their values."""
    if spec.params is None or len(spec.params) < 2:
        return {}
    dumps = [p.model_dump() for p in spec.params]
    swept: dict[str, list[str]] = {}
    for name in dumps[0]:
        values: list[str] = []
        for dump in dumps:
            text = format_value(dump.get(name))
            if text not in values:
                values.append(text)
        if len(values) > 1:
            swept[name] = values
    return swept
