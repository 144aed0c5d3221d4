"""Golden snapshots of a Kepler orbit: ``physics_snapshot`` with tolerances chosen per metric.

The orbit (GM = 1, semi-major axis 1, period 2π) is integrated with a fixed-step kick-drift-kick
leapfrog in plain numpy, started at pericentre. Everything is elementwise ``+ - * /`` and
``sqrt``, which IEEE 754 rounds exactly, and there are no reductions whose summation order could
vary, so the numbers are the same on every platform and the tolerances below are about what a
*code change* may move, not about machine noise.

The goldens live in ``__snapshots__/test_snapshots_example.physics`` (readable JSON) with the
sampled trajectory in ``__snapshots__/test_snapshots_example.arrays/`` (a binary .npy, one per
eccentricity, summarised in the JSON file). Regenerate them with
``pytest examples/test_snapshots_example.py --snapshot-update``; values that are still within
tolerance are not rewritten.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

STEPS_PER_ORBIT = 400
ORBITS = 5
SAMPLE_EVERY = 5  # keep every 5th position: 400 samples, too many to inline in the JSON


def kepler_orbit(eccentricity: float) -> dict[str, object]:
    """Integrate one Kepler orbit with leapfrog and return the metrics we keep goldens of."""
    dt = 2.0 * math.pi / STEPS_PER_ORBIT
    steps = STEPS_PER_ORBIT * ORBITS
    # Pericentre of an orbit with a = 1: r = 1 - e, speed sqrt((1 + e) / (1 - e)).
    q = np.array([1.0 - eccentricity, 0.0])
    v = np.array([0.0, math.sqrt((1.0 + eccentricity) / (1.0 - eccentricity))])

    def acceleration(q: np.ndarray) -> np.ndarray:
        r2 = q[0] * q[0] + q[1] * q[1]
        return -q / (r2 * np.sqrt(r2))

    def energy(q: np.ndarray, v: np.ndarray) -> float:
        return float(0.5 * (v[0] * v[0] + v[1] * v[1]) - 1.0 / np.sqrt(q[0] * q[0] + q[1] * q[1]))

    def angular_momentum(q: np.ndarray, v: np.ndarray) -> float:
        return float(q[0] * v[1] - q[1] * v[0])

    e0, l0 = energy(q, v), angular_momentum(q, v)
    samples = np.empty((steps // SAMPLE_EVERY, 2))
    a = acceleration(q)
    worst_energy_error = 0.0
    for step in range(steps):
        v = v + 0.5 * dt * a
        q = q + dt * v
        a = acceleration(q)
        v = v + 0.5 * dt * a
        worst_energy_error = max(worst_energy_error, abs(energy(q, v) - e0) / abs(e0))
        if (step + 1) % SAMPLE_EVERY == 0:
            samples[step // SAMPLE_EVERY] = q
    return {
        "energy": e0,
        "energy_drift": (energy(q, v) - e0) / abs(e0),
        "max_energy_error": worst_energy_error,
        "angular_momentum_drift": (angular_momentum(q, v) - l0) / abs(l0),
        "final_state": np.concatenate([q, v]),
        "trajectory": samples,
        "steps": steps,
    }


@pytest.mark.parametrize("eccentricity", [0.0, 0.5])
def test_kepler_orbit_metrics(eccentricity, physics_snapshot):
    metrics = kepler_orbit(eccentricity)
    assert metrics == physics_snapshot(
        # The state after 2000 steps: a change in the scheme moves it by O(dt^2) ~ 2e-4,
        # far above these bounds; a harmless refactoring (reordered additions) moves it by a
        # few ulps per step, accumulated: ~1e-12 relative.
        rtol=1e-10,
        atol=1e-12,
        tolerances={
            # Drifts are differences of nearly equal numbers: a relative tolerance on them is
            # meaningless (round-off changes their leading digits); bound them absolutely.
            "energy_drift": {"rtol": 0.0, "atol": 1e-12},
            "angular_momentum_drift": {"rtol": 0.0, "atol": 1e-13},
            # The energy band of leapfrog is O(dt^2): a looser, relative bound suffices.
            "max_energy_error": {"rtol": 1e-6},
            # Positions are O(1): an absolute bound reads naturally (1e-9 of the orbit size).
            "trajectory": {"rtol": 0.0, "atol": 1e-9},
        },
    )


def test_leapfrog_conserves_angular_momentum_to_round_off():
    # Not a golden: an invariant. Goldens guard the numbers; invariants say why they are right.
    metrics = kepler_orbit(0.5)
    assert abs(metrics["angular_momentum_drift"]) < 1e-12
