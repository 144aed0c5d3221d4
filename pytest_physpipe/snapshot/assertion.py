"""The ``physics_snapshot`` fixture: a syrupy assertion that compares within tolerances.

``actual == physics_snapshot(rtol=..., atol=..., tolerances=..., equal_nan=..., name=...)``
hands the value, its tolerance rules and the provenance of the test's stages to
:class:`~pytest_physpipe.snapshot.extension.PhysicsSnapshotExtension`; defaults come from the
ini options ``physpipe_snapshot_rtol`` and ``physpipe_snapshot_atol``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from syrupy.assertion import SnapshotAssertion

from pytest_physpipe.errors import PhyspipeWarning
from pytest_physpipe.snapshot.encoding import INLINE_MAX_ELEMENTS
from pytest_physpipe.snapshot.extension import (
    WRITES_IMMEDIATELY,
    Measured,
    PhysicsSnapshotExtension,
)
from pytest_physpipe.snapshot.provenance import collect_provenance, platform_info
from pytest_physpipe.tolerance import Tolerance, ToleranceLike, ToleranceRules

if TYPE_CHECKING:
    from syrupy.extensions.base import AbstractSyrupyExtension
    from syrupy.types import (
        PropertyFilter,
        PropertyMatcher,
        SerializableData,
        SnapshotIndex,
    )

__all__ = ["PhysicsSnapshot", "make_physics_snapshot"]


@dataclass(eq=False, order=False, repr=False)
class PhysicsSnapshot(SnapshotAssertion):
    """The ``physics_snapshot`` fixture: a syrupy assertion that compares within tolerances.

    ``actual == physics_snapshot`` compares with the defaults (ini ``physpipe_snapshot_rtol``
    and ``physpipe_snapshot_atol``); ``actual == physics_snapshot(rtol=..., atol=...,
    tolerances={"energy": {"rtol": 1e-12}}, equal_nan=True, name="...")`` sets them for one
    assertion.
    """

    defaults: Tolerance = field(default_factory=Tolerance)
    inline_max: int = INLINE_MAX_ELEMENTS
    item: pytest.Item | None = None
    _rules: ToleranceRules | None = field(init=False, default=None)

    # numpy's comparison operators return NotImplemented for objects that set this, so that
    # `array == physics_snapshot` reaches our __eq__ instead of comparing element by element.
    __array_ufunc__ = None
    # pandas likewise defers to an operand of higher priority than its own (DataFrame: 4000),
    # so that `frame == physics_snapshot` compares the table rather than each element.
    __pandas_priority__ = 10_000
    # An assertion compares with side effects (it records a result), so it is not hashable;
    # syrupy's SnapshotAssertion is not either.
    __hash__ = None  # type: ignore[assignment]

    def __call__(
        self,
        *,
        rtol: float | None = None,
        atol: float | None = None,
        tolerances: Mapping[str, ToleranceLike] | None = None,
        equal_nan: bool | None = None,
        name: SnapshotIndex | None = None,
        diff: SnapshotIndex | None = None,
        diff_data: SerializableData | None = None,
        exclude: PropertyFilter | None = None,
        include: PropertyFilter | None = None,
        extension_class: type[AbstractSyrupyExtension] | None = None,
        matcher: PropertyMatcher | None = None,
    ) -> PhysicsSnapshot:
        default = Tolerance(
            rtol=self.defaults.rtol if rtol is None else rtol,
            atol=self.defaults.atol if atol is None else atol,
            equal_nan=self.defaults.equal_nan if equal_nan is None else equal_nan,
        )
        self._rules = ToleranceRules.build(default, tolerances)
        # Pass on only what was given: older syrupy releases take fewer keywords.
        given: dict[str, Any] = {
            "name": name,
            "diff": diff,
            "diff_data": diff_data,
            "exclude": exclude,
            "include": include,
            "extension_class": extension_class,
            "matcher": matcher,
        }
        super().__call__(**{key: value for key, value in given.items() if value is not None})
        return self

    def __eq__(self, other: object) -> bool:
        rules, self._rules = self._rules or ToleranceRules(self.defaults), None
        measured = Measured(
            value=other,
            rules=rules,
            stages=collect_provenance(self.item),
            platform=platform_info(),
            keep_for_write=self.update_snapshots or self.update_new_snapshots_only,
            inline_max=self.inline_max,
        )
        result = super().__eq__(measured)
        received = measured.received
        if rules.rules:
            try:
                unmatched = rules.unused_patterns(other)
            except TypeError:  # an unsupported value: the assertion has already said so
                unmatched = ()
            if unmatched:
                warnings.warn(
                    PhyspipeWarning(
                        "physics_snapshot: tolerances pattern(s) "
                        + ", ".join(map(repr, unmatched))
                        + " matched no value; paths look like 'energy', 'fields.E', "
                        "'orbits[0].x', and '*' matches within one name"
                    ),
                    stacklevel=2,
                )
        if received is not None and (not received.keep_for_write or WRITES_IMMEDIATELY):
            # Compared, and written if it had to be: release the arrays now, not at session end.
            received.release()
        return result

    def __repr__(self) -> str:
        return f"physics_snapshot({self.test_location.snapshot_name!r}, {self.defaults})"

    def with_defaults(
        self,
        *,
        exclude: PropertyFilter | None = None,
        include: PropertyFilter | None = None,
        matcher: PropertyMatcher | None = None,
        extension_class: type[AbstractSyrupyExtension] | None = None,
    ) -> PhysicsSnapshot:
        return PhysicsSnapshot(
            matcher=matcher or self.matcher,
            include=include or self.include,
            exclude=exclude or self.exclude,
            update_snapshots=self.update_snapshots,
            update_new_snapshots_only=self.update_new_snapshots_only,
            test_location=self.test_location,
            extension_class=extension_class or self.extension_class,
            session=self.session,
            defaults=self.defaults,
            inline_max=self.inline_max,
            item=self.item,
        )


def _ini_raw(config: pytest.Config, name: str) -> Any:
    """The ini value as written, or ``None`` when unset (or not registered: the plugin
    providing it is not loaded)."""
    try:
        raw = config.getini(name)
    except ValueError:
        return None
    return None if raw in (None, "", []) else raw


def _ini_bound(config: pytest.Config, name: str, fallback: float) -> float:
    raw = _ini_raw(config, name)
    if raw is None:
        return fallback
    try:
        return Tolerance(rtol=float(raw)).rtol
    except (TypeError, ValueError):
        raise pytest.UsageError(
            f"ini option {name} = {raw!r} is not a finite number >= 0 (e.g. 1e-9)"
        ) from None


def _ini_count(config: pytest.Config, name: str, fallback: int) -> int:
    raw = _ini_raw(config, name)
    if raw is None:
        return fallback
    try:
        count = int(str(raw))
    except ValueError:
        count = -1
    if count < 0:
        raise pytest.UsageError(
            f"ini option {name} = {raw!r} is not a whole number >= 0 (e.g. 64; 0 puts every "
            "array in a sidecar)"
        )
    return count


def make_physics_snapshot(
    snapshot: SnapshotAssertion, request: pytest.FixtureRequest
) -> PhysicsSnapshot:
    """Build the ``physics_snapshot`` fixture's value from syrupy's ``snapshot`` fixture."""
    config = request.config
    defaults = Tolerance(
        rtol=_ini_bound(config, "physpipe_snapshot_rtol", Tolerance.rtol),
        atol=_ini_bound(config, "physpipe_snapshot_atol", Tolerance.atol),
    )
    return PhysicsSnapshot(
        session=snapshot.session,
        extension_class=PhysicsSnapshotExtension,
        test_location=snapshot.test_location,
        update_snapshots=snapshot.update_snapshots,
        update_new_snapshots_only=snapshot.update_new_snapshots_only,
        defaults=defaults,
        inline_max=_ini_count(config, "physpipe_snapshot_inline_max", INLINE_MAX_ELEMENTS),
        item=request.node if isinstance(request.node, pytest.Item) else None,
    )
