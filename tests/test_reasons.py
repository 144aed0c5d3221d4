"""Why an instance recomputes: a pure comparison of two key manifests."""

from __future__ import annotations

from typing import Any

from pytest_physpipe.reasons import explain

BASE: dict[str, Any] = {
    "stage": "heat",
    "qualname": "heat",
    "code": "c1",
    "code_parts": {"<stage>": "a", "physics.step": "b"},
    "version": 1,
    "config_class": "HeatConfig",
    "config": {"steps": 200, "mesh": "mesh.msh", "alpha": 1},
    "config_key": "k1",
    "inputs": {"mesh": "h1"},
    "upstream": {"grid": "u1"},
    "packages": {"numpy": "1.26.4"},
    "salt": "s1",
}

CHANGES: list[tuple[dict[str, Any], str]] = [
    ({}, "new"),
    ({"config": {**BASE["config"], "steps": 150}, "config_key": "k2"}, "config steps 200 → 150"),
    ({"config": {**BASE["config"], "alpha": 1.0}, "config_key": "k2"}, "config alpha 1 → 1.0"),
    ({"config_key": "k2"}, "config value types"),
    ({"code": "c2", "code_parts": {"<stage>": "z", "physics.step": "b"}}, "code of heat"),
    ({"code": "c2", "code_parts": {"<stage>": "a", "physics.step": "z"}}, "code of physics.step"),
    ({"upstream": {"grid": "u2"}}, "upstream grid"),
    ({"packages": {"numpy": "2.1.0"}}, "package numpy 1.26.4 → 2.1.0"),
    ({"version": 2}, "version 1 → 2"),
    ({"salt": "s2"}, "salt"),
    ({"inputs": {"mesh": "h2"}}, "input file mesh.msh"),
]


def test_each_kind_of_change_is_named() -> None:
    for change, reason in CHANGES:
        previous = None if not change else BASE
        assert explain({**BASE, **change}, previous) == reason, change
