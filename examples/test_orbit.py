"""Regression checks of the Kepler orbit integrated with leapfrog (stages.py).

Leapfrog is symplectic: its energy error oscillates within a band of width O(dt^2) but does not
drift, however long it runs; and for a central force it conserves angular momentum exactly, so
only round-off remains. ``long_orbit`` is declared ``slow=True``: its tests carry the ``slow``
marker, and ``pytest -m "not slow"`` skips them (and never computes the stage).
"""

import numpy as np
import pytest


def test_energy_error_is_small(orbit):
    # 400 steps per orbit at eccentricity 0.6: the error peaks at pericentre, near 2e-3.
    assert orbit["energy_rel_dev"].max() < 5e-3


def test_angular_momentum_is_conserved_to_round_off(orbit):
    assert orbit["angmom_rel_dev"].max() < 1e-12


def test_energy_error_does_not_drift(long_orbit):
    # Thousands of orbits: the band of the last tenth is as wide as that of the first tenth.
    # A non-symplectic scheme (e.g. RK4) would show a secular growth here.
    dev = long_orbit["energy_rel_dev"]
    tenth = dev.size // 10
    assert dev.max() < 5e-3
    assert dev[-tenth:].max() <= 1.001 * dev[:tenth].max()


def test_angular_momentum_round_off_stays_bounded(long_orbit):
    assert long_orbit["angmom_rel_dev"].max() < 1e-11


def test_orbit_stays_bound(long_orbit):
    x, y, vx, vy = long_orbit["final_state"]
    energy = 0.5 * (vx * vx + vy * vy) - 1.0 / np.hypot(x, y)
    assert energy == pytest.approx(long_orbit["energy0"], rel=5e-3)
