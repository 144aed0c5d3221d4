"""The stages of the example physics suite: two small pipelines, declared with ``@stage``.

1. A 1-D heat equation, u_t = alpha * u_xx on [0, L] with u = 0 at both ends, solved with
   explicit finite differences (FTCS). Four stages form the chain

       heat_grid ──► heat_initial ──► heat ──► heat_diagnostics
            └──────────────┴────────────┴──────────┘ (diagnostics reads all three)

   and ``heat_grid`` is a sweep over the resolution, so everything downstream fans out with it;
   its finest grid is marked ``slow``. ``heat_convergence`` gathers ``heat_diagnostics`` of every
   grid (fan-in) and fits the observed order of accuracy.
   A sine mode is an exact eigenvector of the discrete Laplacian, so the exact answer of the
   *scheme* is known too; that makes the checks sharp (see test_heat.py).

2. A Kepler orbit (G*M = 1, semi-major axis 1, period 2*pi) integrated with the symplectic
   leapfrog (kick-drift-kick) scheme: ``kepler_initial ──► orbit`` for a short run, and
   ``long_orbit`` (``slow=True``) for thousands of orbits.

Everything a stage returns is stored under its provenance key in ``.physpipe/`` beside this
file; the second run of the suite loads it instead of computing it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_physpipe import StageConfig, StageContext, gather, stage, sweep

# -- 1-D heat equation --------------------------------------------------------------------------


class GridConfig(StageConfig):
    n: int = 64  # number of intervals; n + 1 grid points including both boundaries
    length: float = 1.0


class InitialConfig(StageConfig):
    mode: int = 1  # u0 = amplitude * sin(mode * pi * x / length)
    amplitude: float = 1.0


class HeatConfig(StageConfig):
    alpha: float = 1.0  # diffusivity
    courant: float = 0.25  # r = alpha * dt / dx**2; FTCS is stable for r <= 1/2
    t_end: float = 0.125  # about one e-folding time of the first mode (1 / pi**2)
    snapshots: int = 64  # how many times the solution is kept, besides t = 0
    # With these defaults dt = r dx^2 exactly on every grid with n a multiple of 16
    # (steps = n^2 / 2), so r is the same on all grids and the error constant too.


def ftcs(u0: np.ndarray, r: float, steps: int, snapshots: int) -> np.ndarray:
    """Advance ``u0`` by ``steps`` FTCS steps; returns ``snapshots + 1`` evenly spaced states."""
    if steps % snapshots:
        raise ValueError(f"steps={steps} is not a multiple of snapshots={snapshots}")
    u = np.array(u0, dtype=np.float64)  # a writable copy: stage inputs are read-only
    history = np.empty((snapshots + 1, u.size))
    history[0] = u
    for k in range(1, snapshots + 1):
        for _ in range(steps // snapshots):
            u[1:-1] += r * (u[2:] - 2.0 * u[1:-1] + u[:-2])
        history[k] = u
    return history


def time_step(dx: float, config: HeatConfig) -> tuple[float, int]:
    """The largest dt <= courant * dx**2 / alpha that ends exactly on ``t_end`` and whose step
    count is a multiple of ``snapshots``."""
    dt_max = config.courant * dx * dx / config.alpha
    steps = config.snapshots * math.ceil(config.t_end / (dt_max * config.snapshots))
    return config.t_end / steps, steps


# The finest grid is marked slow, for that instance only: `pytest -m "not slow"` skips it (and
# the convergence study, which needs it), and `--physpipe-backend slurm` sends it to the cluster.
@stage(
    params=sweep(
        GridConfig, n=[32, 64, 128, 256], marks=lambda c: [pytest.mark.slow] if c.n >= 256 else []
    )
)
def heat_grid(config: GridConfig) -> np.ndarray:
    """Grid points x_0 = 0, ..., x_n = length."""
    return np.linspace(0.0, config.length, config.n + 1)


@stage
def heat_initial(heat_grid: np.ndarray, config: InitialConfig) -> dict:
    k = config.mode * math.pi / float(heat_grid[-1])
    return {"u": config.amplitude * np.sin(k * heat_grid), "k": k, "amplitude": config.amplitude}


@stage(track=[ftcs, time_step])
def heat(heat_grid: np.ndarray, heat_initial: dict, config: HeatConfig, ctx: StageContext) -> dict:
    dx = float(heat_grid[1] - heat_grid[0])
    dt, steps = time_step(dx, config)
    r = config.alpha * dt / dx**2
    history = ftcs(heat_initial["u"], r, steps, config.snapshots)
    ctx.metric("steps", steps)
    ctx.log.info("FTCS: %d points, %d steps, r = %.3f", heat_grid.size, steps, r)
    return {
        "t": np.linspace(0.0, config.t_end, config.snapshots + 1),
        "u": history,
        "alpha": config.alpha,
        "r": r,
        "steps": steps,
    }


@stage
def heat_diagnostics(heat_grid: np.ndarray, heat_initial: dict, heat: dict) -> dict:
    """Norms and errors against the exact solution A * exp(-alpha k^2 t) * sin(k x)."""
    dx = float(heat_grid[1] - heat_grid[0])
    k, amplitude, t = heat_initial["k"], heat_initial["amplitude"], heat["t"]
    exact = amplitude * np.exp(-heat["alpha"] * k**2 * t)[:, None] * np.sin(k * heat_grid)
    l2 = np.sqrt(dx * np.sum(heat["u"] ** 2, axis=1))  # discrete L2 norm at every snapshot
    # The numerical amplitude of the mode, read off by projecting onto sin(k x).
    mode = np.sin(k * heat_grid)
    numeric_amplitude = heat["u"] @ mode / (mode @ mode)
    return {
        "dx": dx,
        "l2": l2,
        "max_error": float(np.max(np.abs(heat["u"][-1] - exact[-1]))),
        "amplitude_rel_error": float(numeric_amplitude[-1] / (exact[-1] @ mode / (mode @ mode)))
        - 1.0,
        "numeric_amplitude": numeric_amplitude,
    }


@stage
def heat_convergence(ctx: StageContext, runs=gather("heat_diagnostics")) -> dict:
    """Max error at t_end on successively refined grids: one ``heat_diagnostics`` per grid of the
    sweep, gathered. Adding a resolution to the sweep computes that grid and this, nothing else."""
    resolutions = [run.coords["n"] for run in runs]
    errors = [run.value["max_error"] for run in runs]
    # Successive grids of the sweep halve dx: log2(e(dx) / e(dx/2)) is the observed order.
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    ctx.metric("observed_order", float(orders[-1]))
    return {"resolutions": resolutions, "errors": errors, "orders": orders}


# -- Kepler orbit, leapfrog -----------------------------------------------------------------------


class KeplerConfig(StageConfig):
    eccentricity: float = 0.6


class LeapfrogConfig(StageConfig):
    orbits: int = 20
    steps_per_orbit: int = 400


def leapfrog(state: np.ndarray, config: LeapfrogConfig) -> dict:
    """Kick-drift-kick leapfrog for a unit-mass test particle around G*M = 1.

    Keeps, per orbit, the largest relative deviation of energy and angular momentum from their
    initial values. Plain floats on purpose: for a 4-number state they beat numpy by far.
    """
    x, y, vx, vy = (float(v) for v in state)
    dt = 2.0 * math.pi / config.steps_per_orbit
    r = math.hypot(x, y)
    e0 = 0.5 * (vx * vx + vy * vy) - 1.0 / r
    l0 = x * vy - y * vx
    ax, ay = -x / r**3, -y / r**3
    energy_dev = np.empty(config.orbits)
    angmom_dev = np.empty(config.orbits)
    for orbit in range(config.orbits):
        de = dl = 0.0
        for _ in range(config.steps_per_orbit):
            vx += 0.5 * dt * ax
            vy += 0.5 * dt * ay
            x += dt * vx
            y += dt * vy
            r2 = x * x + y * y
            r = math.sqrt(r2)
            ax, ay = -x / (r2 * r), -y / (r2 * r)
            vx += 0.5 * dt * ax
            vy += 0.5 * dt * ay
            de = max(de, abs(0.5 * (vx * vx + vy * vy) - 1.0 / r - e0))
            dl = max(dl, abs(x * vy - y * vx - l0))
        energy_dev[orbit] = de / abs(e0)
        angmom_dev[orbit] = dl / abs(l0)
    return {
        "energy_rel_dev": energy_dev,
        "angmom_rel_dev": angmom_dev,
        "final_state": np.array([x, y, vx, vy]),
        "energy0": e0,
    }


@stage
def kepler_initial(config: KeplerConfig) -> np.ndarray:
    """Start at pericentre (x, y, vx, vy): r = 1 - e, v = sqrt((1 + e) / (1 - e))."""
    e = config.eccentricity
    return np.array([1.0 - e, 0.0, 0.0, math.sqrt((1.0 + e) / (1.0 - e))])


@stage(track=[leapfrog])
def orbit(kepler_initial: np.ndarray, config: LeapfrogConfig) -> dict:
    return leapfrog(kepler_initial, config)


@stage(slow=True, config=LeapfrogConfig(orbits=8000), track=[leapfrog])
def long_orbit(kepler_initial: np.ndarray, config: LeapfrogConfig) -> dict:
    """The same integration over thousands of orbits: the test of long-term stability."""
    return leapfrog(kepler_initial, config)
