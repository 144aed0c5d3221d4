"""Every documented import path and entry point works (docs/, README, the hook docstrings)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest

import pytest_physpipe

LAZY = ("Codec", "CodecRegistry", "Backend", "JobRequest", "JobInfo", "JobState", "Workflow")


@pytest.mark.parametrize("name", sorted(pytest_physpipe.__all__))
def test_every_public_name_imports(name: str) -> None:
    value = getattr(pytest_physpipe, name)
    assert value is not None
    namespace: dict[str, object] = {}
    exec(f"from pytest_physpipe import {name}", namespace)  # the way users write it
    assert namespace[name] is value


def test_the_extension_contracts_are_exported_lazily() -> None:
    assert set(LAZY) <= set(pytest_physpipe.__all__)
    from pytest_physpipe import Backend, Codec, CodecRegistry, JobInfo, JobRequest, JobState

    assert callable(CodecRegistry)
    assert hasattr(JobState, "COMPLETED")
    assert {c.__name__ for c in (Backend, Codec, JobInfo, JobRequest)} == {
        "Backend",
        "Codec",
        "JobInfo",
        "JobRequest",
    }
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        pytest_physpipe.Nope


def test_importing_the_package_does_not_import_the_machinery() -> None:
    code = (
        "import sys, pytest_physpipe\n"
        "heavy = [m for m in ('numpy', 'syrupy', 'pytest_physpipe.session',"
        " 'pytest_physpipe.store.entries', 'pytest_physpipe.workflow') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_loading_the_plugin_leaves_what_a_cached_rerun_does_without() -> None:
    # What pytest loads at startup: the plugin's own import path, before any hook runs. The
    # machinery a hit needs (session, store) comes at configure/collection; the cluster, the
    # goldens, xdist scheduling, pickle and the scientific libraries only when a run uses them.
    unwanted = (
        "numpy",
        "syrupy",
        "pickle",
        "threadpoolctl",
        "pytest_physpipe.cluster",
        "pytest_physpipe.snapshot",
        "pytest_physpipe.scheduling",
        "pytest_physpipe.session",
        "pytest_physpipe.execute",
        "pytest_physpipe.plan",
        "pytest_physpipe.run",
        "pytest_physpipe.report",
        "pytest_physpipe.store.entries",
        "pytest_physpipe.store.codecs",
        "pytest_physpipe.store.scientific",
        "pytest_physpipe.workflow",
    )
    code = (
        "import sys, pytest_physpipe.plugin\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {{'numpy', 'syrupy'}}"
        f" or any(m == u or m.startswith(u + '.') for u in {unwanted!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_tolerance_module() -> None:
    from pytest_physpipe.tolerance import Tolerance, ToleranceRules, compare

    assert compare(1.0, 1.0 + 1e-12, Tolerance(rtol=1e-9)).ok
    assert ToleranceRules is not None


@pytest.mark.parametrize("module", ["pytest_physpipe.worker", "pytest_physpipe"])
def test_module_entry_points_answer_help(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        ("pytest_physpipe.codecs", "pytest_physpipe.store.codecs", ("Codec", "CodecRegistry")),
        (
            "pytest_physpipe.backends",
            "pytest_physpipe.cluster.backends",
            ("Backend", "JobRequest", "JobInfo", "JobState"),
        ),
    ],
)
def test_deprecated_paths_still_import_with_a_warning(
    old: str, new: str, names: tuple[str, ...]
) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=old.replace(".", r"\.")):
        shim = importlib.import_module(old)
    moved = importlib.import_module(new)
    for name in names:
        assert getattr(shim, name) is getattr(moved, name)


def test_the_plugin_entry_point_is_registered() -> None:
    from importlib import metadata

    points = {ep.name: ep.value for ep in metadata.entry_points(group="pytest11")}
    assert points.get("physpipe") == "pytest_physpipe.plugin"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.import_module("pytest_physpipe.plugin")
