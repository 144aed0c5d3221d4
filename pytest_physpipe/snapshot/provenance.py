"""Provenance of a golden: what produced it, and what changed since, in words.

A golden entry records the physpipe stages its test used (key, code fingerprint, config,
version) and the platform (machine, numpy, Python, OS). Neither takes part in the comparison:
a new numpy or another machine never fails a test by itself. When a comparison fails,
:func:`explain_changes` says whether a stage's code or config changed, only the platform, or
nothing that is recorded.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_physpipe.snapshot.encoding import float_node

if TYPE_CHECKING:
    import pytest

__all__ = ["collect_provenance", "explain_changes", "platform_info"]


def _plain(value: object) -> object:
    """Provenance as plain JSON data, compared after the same normalisation on both sides."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return float_node(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def collect_provenance(item: pytest.Item | None) -> dict[str, object]:
    """The provenance of the stages ``item`` uses, as plain JSON data (empty without stages).

    A plain import (not through ``importlib``), so the import-graph test sees this edge.
    """
    if item is None:
        return {}
    from pytest_physpipe.session import stage_provenance

    stages = stage_provenance(item)
    plain = _plain(dict(stages))
    assert isinstance(plain, dict)
    return plain


def platform_info() -> dict[str, str]:
    """What, besides the code and config, can change floating-point results."""
    return {
        "machine": platform.machine(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "system": platform.system(),
    }


def _config_changes(old: object, new: object) -> str:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return f"{old!r} -> {new!r}"
    changes = [
        f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]
    shown = ", ".join(changes[:5])
    return shown + (f", and {len(changes) - 5} more" if len(changes) > 5 else "")


def explain_changes(golden: Mapping[str, Any], received: Mapping[str, Any]) -> list[str]:
    """Say whether the code, the config, or only the platform changed since the golden."""
    old_stages = golden.get("stages") or {}
    new_stages = received.get("stages") or {}
    changes: list[str] = []
    for name in sorted(set(old_stages) | set(new_stages)):
        if name not in old_stages:
            changes.append(f"stage {name!r} was not used when the golden was written")
            continue
        if name not in new_stages:
            changes.append(f"stage {name!r} is no longer used")
            continue
        old, new = old_stages[name], new_stages[name]
        parts = []
        if old.get("code") != new.get("code"):
            parts.append("its code changed")
        if old.get("config") != new.get("config"):
            parts.append(
                f"its config changed ({_config_changes(old.get('config'), new.get('config'))})"
            )
        if old.get("version") != new.get("version"):
            parts.append(f"its version changed ({old.get('version')} -> {new.get('version')})")
        if not parts and old.get("key") != new.get("key"):
            parts.append("its key changed (an upstream stage, a tracked package or the salt)")
        if parts:
            changes.append(f"stage {name!r}: " + ", ".join(parts))
    old_platform = golden.get("platform") or {}
    new_platform = received.get("platform") or {}
    platform_changes = [
        f"{key} {old_platform.get(key, '?')} -> {new_platform.get(key, '?')}"
        for key in sorted(set(old_platform) | set(new_platform))
        if old_platform.get(key) != new_platform.get(key)
    ]
    platform_text = ", ".join(platform_changes)
    if changes:
        line = "Since the golden was written: " + "; ".join(changes) + "."
        if platform_changes:
            line += f" The platform changed too ({platform_text})."
        return [line]
    stages_note = (
        "the code and config of its stages are unchanged"
        if old_stages or new_stages
        else "this test records no physpipe stages"
    )
    if platform_changes:
        return [
            f"Since the golden was written, {stages_note}; only the platform changed "
            f"({platform_text}). If the differences are floating-point noise from the new "
            "platform, widen the tolerance (rtol=, atol=, tolerances=) rather than regenerating."
        ]
    if old_stages or new_stages:
        return [
            "The stages' code, config and the platform are all as when the golden was written: "
            "the change comes from something provenance does not track (a helper outside the "
            "stage: add it to track=) or from nondeterminism."
        ]
    return [f"Since the golden was written, {stages_note} and the platform is unchanged."]
