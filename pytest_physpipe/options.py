"""Command-line options and ini settings, parsed once into a frozen :class:`Settings`.

Every ``--physpipe-*`` option has an ini twin. Values are checked at parse time (bad input is a
``pytest.UsageError`` naming the option), and parsing is deterministic, because xdist workers
parse the same command line again.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from pytest_physpipe.frozen import FrozenValue
from pytest_physpipe.store.filesystem import LOCK_MODES
from pytest_physpipe.units import parse_size

#: Ini ``physpipe_pack_walltime``: a job array task runs several instances of a stage whose
#: declared walltime is at most half of this (docs/howto-cluster.md, packing).
DEFAULT_PACK_WALLTIME = "5:00"

__all__ = ["Settings", "add_options", "parse_settings"]

BACKENDS = ("local", "slurm", "pbs")
_SET = re.compile(r"^(?P<stage>[A-Za-z_]\w*)\.(?P<field>[A-Za-z_]\w*)=(?P<value>.*)$", re.DOTALL)


def _set_item(text: str) -> tuple[str, str, str]:
    match = _SET.match(text)
    if match is None:
        raise pytest.UsageError(
            f"--physpipe-set {text!r}: expected NAME.FIELD=VALUE, e.g. --physpipe-set grid.n=32"
        )
    return match["stage"], match["field"], match["value"]


def _count(option: str, minimum: int) -> type[int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise pytest.UsageError(f"{option} {text!r}: expected an integer >= {minimum}")
        return value

    return parse  # type: ignore[return-value]


def _backend(text: str) -> str:
    # Plugins may register more backends (checked once they are loaded, in the session).
    if not text.isidentifier():
        raise pytest.UsageError(
            f"--physpipe-backend {text!r}: choose one of {', '.join(BACKENDS)} (or a backend "
            "registered by a plugin through pytest_physpipe_register_backends)"
        )
    return text


def _writable_file(option: str, path: Path) -> None:
    """Refuse, before the run, an output file that could not be written after it."""
    if path.is_dir():
        raise pytest.UsageError(f"{option} {path}: is a directory; give a file name in it")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise pytest.UsageError(
            f"{option} {path}: cannot be written ({parent} is not a writable directory). "
            "Give a path in a writable directory; it is written when the run ends."
        )


def _graph_path(text: str) -> str:
    if not text.endswith((".dot", ".mmd")):
        raise pytest.UsageError(
            f"--physpipe-graph {text!r}: the file name must end in .dot (Graphviz) or .mmd "
            "(Mermaid)"
        )
    return text


def add_options(parser: pytest.Parser) -> None:
    """Register the option group and the ini settings."""
    group = parser.getgroup("physpipe", "simulation pipelines as cached fixtures (physpipe)")
    group.addoption(
        "--physpipe-dir", metavar="PATH", help="store location (default: <rootdir>/.physpipe)"
    )
    group.addoption(
        "--physpipe-plan",
        action="store_true",
        default=None,
        help="print the stage instances the selected tests need (key, status, resources, where "
        "they would run) and run nothing",
    )
    group.addoption(
        "--physpipe-verify",
        action="store_true",
        default=None,
        help="verify every payload a hit touches fully, whatever its size",
    )
    group.addoption(
        "--physpipe-graph",
        metavar="PATH",
        type=_graph_path,
        help="write the stage DAG (.dot or .mmd)",
    )
    group.addoption(
        "--physpipe-report",
        metavar="PATH",
        help="write a JSON report: one StageRecord per instance",
    )
    group.addoption(
        "--physpipe-rebuild",
        metavar="NAME",
        action="append",
        default=None,
        help="recompute these stages and overwrite their entries (repeatable; 'all' for every "
        "stage)",
    )
    group.addoption(
        "--physpipe-cached-only",
        action="store_true",
        default=None,
        help="never compute; skip tests that need a missing stage",
    )
    group.addoption(
        "--physpipe-no-cache",
        action="store_true",
        default=None,
        help="compute in memory; neither read nor write the store",
    )
    group.addoption(
        "--physpipe-set",
        metavar="NAME.FIELD=VALUE",
        action="append",
        type=_set_item,
        default=None,
        help="override a stage config field for this run (repeatable)",
    )
    group.addoption(
        "--physpipe-cpus",
        metavar="N",
        type=_count("--physpipe-cpus", 1),
        help="CPU budget (default: all cores)",
    )
    group.addoption(
        "--physpipe-gpus",
        metavar="N",
        type=_count("--physpipe-gpus", 0),
        help="GPU budget (default: CUDA_VISIBLE_DEVICES, or nvidia-smi -L, else 0)",
    )
    group.addoption(
        "--physpipe-backend",
        metavar="NAME",
        type=_backend,
        help="where slow stages run: local (default), slurm or pbs",
    )
    group.addoption(
        "--physpipe-dist",
        action="store_true",
        default=None,
        help="with -n N, schedule tests with the physpipe scheduler (takes the place of "
        "--dist load; xdist's --dist takes a fixed list of modes); see docs/xdist.md",
    )

    parser.addini("physpipe_dir", "store location (relative to the rootdir)", default="")
    parser.addini("physpipe_plan", "like --physpipe-plan", type="bool", default=False)
    parser.addini("physpipe_verify", "like --physpipe-verify", type="bool", default=False)
    parser.addini("physpipe_graph", "like --physpipe-graph", default="")
    parser.addini("physpipe_report", "like --physpipe-report", default="")
    parser.addini("physpipe_rebuild", "like --physpipe-rebuild", type="args", default=[])
    parser.addini("physpipe_cached_only", "like --physpipe-cached-only", type="bool", default=False)
    parser.addini("physpipe_no_cache", "like --physpipe-no-cache", type="bool", default=False)
    parser.addini(
        "physpipe_set",
        "like --physpipe-set, one NAME.FIELD=VALUE per line",
        type="linelist",
        default=[],
    )
    parser.addini("physpipe_cpus", "like --physpipe-cpus", default="")
    parser.addini("physpipe_gpus", "like --physpipe-gpus", default="")
    parser.addini("physpipe_backend", "like --physpipe-backend", default="local")
    parser.addini("physpipe_dist", "like --physpipe-dist", type="bool", default=False)
    parser.addini(
        "physpipe_track_packages",
        "packages whose versions are part of every key",
        type="args",
        default=[],
    )
    parser.addini("physpipe_salt", "a string mixed into every key", default="")
    parser.addini("physpipe_slurm_args", "extra sbatch arguments for every job", default="")
    parser.addini("physpipe_pbs_args", "extra qsub arguments for every job", default="")
    parser.addini(
        "physpipe_job_arrays",
        "submit the instances of one slow stage at one dependency level as a job array "
        "(true, the default) or as one job each (false)",
        type="bool",
        default=True,
    )
    parser.addini(
        "physpipe_pack_walltime",
        "pack several instances of a job array into one task while their declared walltimes "
        "add up to at most this (Slurm syntax; 0: one instance per task)",
        default=DEFAULT_PACK_WALLTIME,
    )
    parser.addini(
        "physpipe_submit_rate",
        "at most this many sbatch/qsub calls per second (0: no limit), for sites that cap it",
        default="0",
    )
    parser.addini(
        "physpipe_snapshot_rtol", "default relative tolerance of physics_snapshot", default="1e-9"
    )
    parser.addini(
        "physpipe_snapshot_atol", "default absolute tolerance of physics_snapshot", default="1e-12"
    )
    parser.addini(
        "physpipe_snapshot_inline_max",
        "arrays of up to this many elements are written inline in golden files",
        default="64",
    )
    parser.addini("physpipe_lock", "per-key lock: auto, flock or soft (for NFS)", default="auto")
    parser.addini(
        "physpipe_verify_max",
        "payloads up to this size are fully checksummed on every hit (default 64M)",
        default="64M",
    )


@dataclass(init=False, repr=False, eq=False)
class Settings(FrozenValue):
    """Everything the options decide, resolved once per process (immutable, equal by value)."""

    store_dir: Path
    #: ``--physpipe-plan``: print the plan (every instance, its key and status), run nothing.
    plan_only: bool
    verify: bool
    graph: Path | None
    report: Path | None
    rebuild: frozenset[str]
    cached_only: bool
    no_cache: bool
    overrides: tuple[tuple[str, str, str], ...]
    cpus: int | None
    gpus: int | None
    backend: str
    track_packages: tuple[str, ...]
    salt: str
    slurm_args: tuple[str, ...]
    pbs_args: tuple[str, ...]
    snapshot_rtol: float
    snapshot_atol: float
    lock: Literal["auto", "flock", "soft"]
    verify_max: int
    #: ``--physpipe-dist``: the physpipe xdist scheduler (see ``scheduling/``).
    dist: bool = False

    def __init__(  # noqa: PLR0917 (the dataclass's own signature, positions included)
        self,
        store_dir: Path,
        plan_only: bool,
        verify: bool,
        graph: Path | None,
        report: Path | None,
        rebuild: frozenset[str],
        cached_only: bool,
        no_cache: bool,
        overrides: tuple[tuple[str, str, str], ...],
        cpus: int | None,
        gpus: int | None,
        backend: str,
        track_packages: tuple[str, ...],
        salt: str,
        slurm_args: tuple[str, ...],
        pbs_args: tuple[str, ...],
        snapshot_rtol: float,
        snapshot_atol: float,
        lock: Literal["auto", "flock", "soft"],
        verify_max: int,
        dist: bool = False,
    ) -> None:
        # Written out rather than generated: see pytest_physpipe.frozen.
        self.__dict__.update(
            store_dir=store_dir,
            plan_only=plan_only,
            verify=verify,
            graph=graph,
            report=report,
            rebuild=rebuild,
            cached_only=cached_only,
            no_cache=no_cache,
            overrides=overrides,
            cpus=cpus,
            gpus=gpus,
            backend=backend,
            track_packages=track_packages,
            salt=salt,
            slurm_args=slurm_args,
            pbs_args=pbs_args,
            snapshot_rtol=snapshot_rtol,
            snapshot_atol=snapshot_atol,
            lock=lock,
            verify_max=verify_max,
            dist=dist,
        )


def _ini_int(config: pytest.Config, name: str, minimum: int) -> int | None:
    text = str(config.getini(name)).strip()
    if not text:
        return None
    return _count(name, minimum)(text)


def _ini_float(config: pytest.Config, name: str) -> float:
    text = str(config.getini(name)).strip()
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise pytest.UsageError(f"ini {name} = {text!r}: expected a non-negative number")
    return value


def _pick(option: object, ini: object) -> object:
    return ini if option is None else option


def parse_settings(config: pytest.Config) -> Settings:
    """Read options (command line first, then ``PHYSPIPE_DIR`` for the store, then ini)."""
    rootdir = Path(config.rootpath)
    opt = config.getoption
    raw_dir = opt("physpipe_dir") or os.environ.get("PHYSPIPE_DIR") or config.getini("physpipe_dir")
    store_dir = Path(str(raw_dir)).expanduser() if raw_dir else rootdir / ".physpipe"
    if not store_dir.is_absolute():
        # The command line and PHYSPIPE_DIR are relative to where pytest was started; the ini
        # value is relative to the rootdir, like every other path in an ini file.
        from_ini = not (opt("physpipe_dir") or os.environ.get("PHYSPIPE_DIR"))
        store_dir = (rootdir if from_ini else Path(config.invocation_params.dir)) / store_dir
    graph = opt("physpipe_graph") or config.getini("physpipe_graph") or None
    if graph:
        _graph_path(str(graph))
        _writable_file("--physpipe-graph", Path(str(graph)))
    report = opt("physpipe_report") or config.getini("physpipe_report") or None
    if report:
        _writable_file("--physpipe-report", Path(str(report)))
    rebuild = opt("physpipe_rebuild") or config.getini("physpipe_rebuild")
    overrides = opt("physpipe_set") or [_set_item(line) for line in config.getini("physpipe_set")]
    cpus = opt("physpipe_cpus")
    cpus = _ini_int(config, "physpipe_cpus", 1) if cpus is None else cpus
    gpus = opt("physpipe_gpus")
    gpus = _ini_int(config, "physpipe_gpus", 0) if gpus is None else gpus
    backend = opt("physpipe_backend") or _backend(str(config.getini("physpipe_backend")) or "local")
    lock = str(config.getini("physpipe_lock")).strip() or "auto"
    if lock not in LOCK_MODES:
        raise pytest.UsageError(f"ini physpipe_lock = {lock!r}: choose auto, flock or soft")
    try:
        verify_max = parse_size(str(config.getini("physpipe_verify_max")))
    except ValueError as exc:
        raise pytest.UsageError(f"ini physpipe_verify_max: {exc}") from None
    no_cache = bool(_pick(opt("physpipe_no_cache"), config.getini("physpipe_no_cache")))
    cached_only = bool(_pick(opt("physpipe_cached_only"), config.getini("physpipe_cached_only")))
    if no_cache and cached_only:
        raise pytest.UsageError(
            "--physpipe-no-cache and --physpipe-cached-only contradict each other: the first "
            "never reads the store, the second only reads it. Pick one."
        )
    return Settings(
        store_dir=store_dir,
        plan_only=bool(_pick(opt("physpipe_plan"), config.getini("physpipe_plan"))),
        verify=bool(_pick(opt("physpipe_verify"), config.getini("physpipe_verify"))),
        graph=Path(str(graph)) if graph else None,
        report=Path(str(report)) if report else None,
        rebuild=frozenset(str(n) for n in rebuild),
        cached_only=cached_only,
        no_cache=no_cache,
        overrides=tuple(overrides),
        cpus=cpus,
        gpus=gpus,
        backend=str(backend),
        track_packages=tuple(config.getini("physpipe_track_packages")),
        salt=str(config.getini("physpipe_salt")),
        slurm_args=tuple(shlex.split(str(config.getini("physpipe_slurm_args")))),
        pbs_args=tuple(shlex.split(str(config.getini("physpipe_pbs_args")))),
        snapshot_rtol=_ini_float(config, "physpipe_snapshot_rtol"),
        snapshot_atol=_ini_float(config, "physpipe_snapshot_atol"),
        lock=lock,  # type: ignore[arg-type]
        verify_max=verify_max,
        dist=bool(_pick(opt("physpipe_dist"), config.getini("physpipe_dist"))),
    )
