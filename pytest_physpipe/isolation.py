"""What each consumer receives: a value no other consumer can change.

A stage's value is loaded once per process and kept pristine; every consumer (a test, a
downstream stage) gets :func:`isolate` of it. Containers (dicts, lists, tuples, sets) are
copied, immutable leaves (numbers, strings, bytes, numpy scalars) and read-only numpy arrays
(backed by read-only memory, so they cannot be made writable again) are shared, and any other
object (a pickled model, a pydantic model) is deep-copied. An in-place edit of a received
value therefore reaches no other consumer and never the store.

Stages declared ``cache=False`` hold live objects (a solver, a connection): those are shared by
design and not copied.
"""

from __future__ import annotations

import copy
import marshal
import sys
from typing import Any

__all__ = ["isolate", "readonly_copy"]

_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, range, type(Ellipsis))


def isolate(value: Any, *, plain: bool = False) -> Any:
    """A copy of ``value`` that shares nothing mutable with it (read-only arrays excepted).

    ``plain``: the caller knows ``value`` holds only exact JSON types (dict, list, str, int,
    float, bool, None), as the json codec decodes them; then a ``marshal`` round trip copies
    it at C speed. (``marshal`` would turn numpy scalars and arrays into bytes, so it is never
    used on anything else.)
    """
    if plain:
        # Bytes we made a line above, never read from anywhere.
        return marshal.loads(marshal.dumps(value))  # noqa: S302
    return _isolate(value, sys.modules.get("numpy"), {})


def _isolate(value: Any, numpy: Any, memo: dict[int, Any]) -> Any:
    cls = type(value)
    if cls in _IMMUTABLE:
        return value
    if cls is dict:
        return {k: _isolate(v, numpy, memo) for k, v in value.items()}
    if cls is list:
        return [_isolate(v, numpy, memo) for v in value]
    if cls is tuple:
        return tuple([_isolate(v, numpy, memo) for v in value])
    if cls is set or cls is frozenset:
        return cls(_isolate(v, numpy, memo) for v in value)
    if numpy is not None:
        if isinstance(value, numpy.ndarray) and not value.dtype.hasobject:
            if value.flags.writeable:
                return value.copy()  # as a custom codec gave it: writable, but one's own
            base = value
            while isinstance(base, numpy.ndarray) and base.base is not None:
                base = base.base
            if not _writable_memory(base, numpy):
                return value  # read-only memory: nobody can write through it
            return readonly_copy(value)
        if isinstance(value, numpy.generic):
            return value
    # Anything else (a pickled object, a pydantic model): a full copy. Values come from the
    # store, so where deepcopy gives up (a custom __deepcopy__), a pickle round trip works.
    try:
        return copy.deepcopy(value, memo)
    except Exception:
        import pickle  # the rare fallback: plain values never get here

        return pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def _writable_memory(base: Any, numpy: Any) -> bool:
    if isinstance(base, numpy.ndarray):
        return bool(base.flags.writeable)
    try:
        return not memoryview(base).readonly
    except TypeError:
        return True  # unknown owner: assume it can be written


def readonly_copy(array: Any) -> Any:
    """A read-only copy of ``array`` over immutable bytes: its flag cannot be flipped back."""
    import numpy

    contiguous = numpy.ascontiguousarray(array)
    return numpy.frombuffer(contiguous.tobytes(), dtype=contiguous.dtype).reshape(contiguous.shape)
