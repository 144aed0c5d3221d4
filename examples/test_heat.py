"""Regression checks of the 1-D heat equation pipeline (stages.py).

Every test below runs once per grid resolution of the ``heat_grid`` sweep (n = 32 ... 256);
the test ids read ``test_...[n=64]``. The stages they use are computed once per resolution and
then served from the store, here and in every later run, until their code or config changes.
"""

import math

import numpy as np
import pytest


def test_l2_norm_decays_monotonically(heat_diagnostics):
    # Diffusion with zero boundary values only ever loses energy.
    l2 = heat_diagnostics["l2"]
    assert np.all(np.diff(l2) < 0.0)
    assert l2[-1] < 0.5 * l2[0]


def test_sine_mode_follows_the_analytic_decay(heat_diagnostics):
    # u(x, t) = exp(-alpha k^2 t) sin(k x): within 0.2 % of the amplitude on every grid.
    assert abs(heat_diagnostics["amplitude_rel_error"]) < 2e-3
    assert heat_diagnostics["max_error"] < 2e-3 * heat_diagnostics["l2"][0]


def test_scheme_is_exactly_the_discrete_decay(heat_grid, heat, heat_diagnostics):
    # A sine mode is an eigenvector of the FTCS update, with growth factor g per step:
    # the numbers must match g**step to round-off, or the stencil is wrong.
    k = math.pi / heat_grid[-1]
    g = 1.0 - 4.0 * heat["r"] * math.sin(k * heat_diagnostics["dx"] / 2.0) ** 2
    steps = np.linspace(0, heat["steps"], heat["t"].size)
    np.testing.assert_allclose(heat_diagnostics["numeric_amplitude"], g**steps, rtol=1e-10)


def test_error_is_second_order_in_dx(heat_grid, heat, heat_diagnostics):
    # Truncation analysis of FTCS: the mode's relative amplitude error at time T is
    #   alpha T k^4 dx^2 (1/12 - r/2) + O(dx^4)
    # A first-order bug, or a wrong constant, misses this by far more than 5 %.
    k, dx, t_end = math.pi / heat_grid[-1], heat_diagnostics["dx"], heat["t"][-1]
    predicted = math.expm1(heat["alpha"] * t_end * k**4 * dx**2 * (1.0 / 12.0 - heat["r"] / 2.0))
    assert heat_diagnostics["amplitude_rel_error"] == pytest.approx(predicted, rel=0.05)


def test_observed_convergence_order_is_two(heat_convergence):
    # Halving dx divides the error by 4: log2(e(dx) / e(dx/2)) ~ 2.
    np.testing.assert_allclose(heat_convergence["orders"], 2.0, atol=0.02)


def test_provenance(physpipe, heat_diagnostics):
    # Every stage instance a test used has a record: its key, status and upstream keys.
    record = physpipe.record("heat_diagnostics")
    assert record.status in ("computed", "hit")
    assert record.upstream["heat"] == physpipe.key("heat")
    assert physpipe.record("heat").metrics["steps"] > 0
