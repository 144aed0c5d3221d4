"""Why an instance is missing: its key's parts against those of the latest entry of its stage.

Every entry keeps the manifest of its key's parts (see :class:`~pytest_physpipe.plan.StageInstance`
``.manifest``), and the store keeps the latest manifest per stage and param id. Comparing the
two needs no extra run: ``new``, ``config steps 200 → 150``, ``code of heat`` (or of the helper
``physics.step``), ``upstream grid``, ``package numpy 1.26.4 → 2.1.0``, ``version 1 → 2``,
``salt``, ``input file mesh.msh``. :func:`explain` is a pure function of two manifests;
:func:`why_missing` asks the store for the previous one (a pytest run's plan and a
``Workflow``'s ``status`` both say why through it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_physpipe.plan import StageInstance
    from pytest_physpipe.store.entries import Store

__all__ = ["explain", "why_missing"]

_WIDTH = 40


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _WIDTH else text[: _WIDTH - 1] + "…"


def _mapping(manifest: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = manifest.get(name)
    return dict(value) if isinstance(value, Mapping) else {}


def explain(current: Mapping[str, Any], previous: Mapping[str, Any] | None) -> str:
    """One line saying what differs between two manifests (``new`` without a previous one)."""
    if not previous:
        return "new"
    reasons: list[str] = []
    if current.get("stage") != previous.get("stage") or current.get("qualname") != previous.get(
        "qualname"
    ):
        reasons.append(f"function {previous.get('qualname')} → {current.get('qualname')}")
    if current.get("version") != previous.get("version"):
        reasons.append(f"version {previous.get('version')} → {current.get('version')}")
    reasons += _code(current, previous)
    reasons += _config(current, previous)
    inputs, before = _mapping(current, "inputs"), _mapping(previous, "inputs")
    config = _mapping(current, "config")
    for field in sorted(set(inputs) | set(before)):
        if inputs.get(field) != before.get(field):
            reasons.append(f"input file {config.get(field, field)}")
    packages, before = _mapping(current, "packages"), _mapping(previous, "packages")
    for name in sorted(set(packages) | set(before)):
        if packages.get(name) != before.get(name):
            old, new = before.get(name, "none"), packages.get(name, "none")
            reasons.append(f"package {name} {old} → {new}")
    if current.get("salt") != previous.get("salt"):
        reasons.append("salt")
    # Last: an upstream change is often the echo of one of the above (a salt, a package).
    upstream, before = _mapping(current, "upstream"), _mapping(previous, "upstream")
    for name in sorted(set(upstream) | set(before)):
        if upstream.get(name) != before.get(name):
            reasons.append(f"upstream {name}")
    return "; ".join(reasons) or "key schema"


def why_missing(instance: StageInstance, store: Store) -> str:
    """Why ``instance`` has no entry, against the latest entry of its stage and params."""
    latest = store.latest(instance.name, instance.param_id or "")
    if latest is None and instance.spec.params is None:
        # An override (--physpipe-set, indirect parametrization) gives another param id;
        # the stage's latest entry of any param is the one it replaces.
        latest = store.latest(instance.name, None)
    if latest is None:
        return "new"
    key, manifest = latest
    if key == instance.key:
        return "entry removed from the store"
    return explain(instance.manifest, manifest)


def _code(current: Mapping[str, Any], previous: Mapping[str, Any]) -> list[str]:
    if current.get("code") == previous.get("code"):
        return []
    parts, before = _mapping(current, "code_parts"), _mapping(previous, "code_parts")
    stage = str(current.get("stage", "?"))
    changed = []
    for name in sorted(set(parts) | set(before), key=lambda n: (n != "<stage>", n)):
        if parts.get(name) == before.get(name):
            continue
        label = stage if name == "<stage>" else name
        if name not in before:
            changed.append(f"code of {label} (now used)")
        elif name not in parts:
            changed.append(f"code of {label} (no longer used)")
        else:
            changed.append(f"code of {label}")
    return changed or [f"code of {stage}"]


def _config(current: Mapping[str, Any], previous: Mapping[str, Any]) -> list[str]:
    reasons = []
    if current.get("config_class") != previous.get("config_class"):
        reasons.append(
            f"config class {previous.get('config_class')} → {current.get('config_class')}"
        )
    config, before = _mapping(current, "config"), _mapping(previous, "config")
    for field in sorted(set(config) | set(before)):
        if field not in before:
            reasons.append(f"config {field} (new field)")
        elif field not in config:
            reasons.append(f"config {field} (removed)")
        elif config[field] != before[field] or type(config[field]) is not type(before[field]):
            reasons.append(f"config {field} {_show(before[field])} → {_show(config[field])}")
    if not reasons and current.get("config_key") != previous.get("config_key"):
        reasons.append("config value types")  # (1, 2) for [1, 2]: same JSON, other types
    return reasons
