"""Every documented import path and entry point works (docs/, README, the hook docstrings)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

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


def test_a_hit_on_a_plain_value_does_without_pickle() -> None:
    # The session's modules, the codec registry and a consumer's copy of a plain value: what a
    # cached rerun of json entries runs. Pickle comes with the first pickled value only.
    code = (
        "import sys, pytest_physpipe.plugin, pytest_physpipe.session\n"
        "from pytest_physpipe.isolation import isolate\n"
        "from pytest_physpipe.store.codecs import CodecRegistry\n"
        "codec = CodecRegistry().choose({'a': [1.0]}, 'auto', stage='s')\n"
        "isolate({'a': [1.0, 'b'], 'c': (1, 2)})\n"
        "print(codec.name, 'pickle' in sys.modules)\n"
    )
    env = {**os.environ, "PHYSPIPE_SECRET": "k" * 32}  # never the user's secret file
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert done.stdout.split() == ["json", "False"]


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


def test_the_package_imports_its_names_on_first_use() -> None:
    # `import pytest_physpipe` alone (as `python -m pytest_physpipe` does) imports neither
    # pytest nor pydantic; each name comes on first use, and `stage` stays the decorator
    # whichever way the submodule of that name was imported first.
    code = (
        "import sys, pytest_physpipe\n"
        "print(sorted(m for m in ('pytest', 'pydantic') if m in sys.modules))\n"
        "import pytest_physpipe.stage\n"
        "from pytest_physpipe import stage, sweep\n"
        "print(stage.__module__, stage.__name__, callable(sweep))\n"
        "names = set(dir(pytest_physpipe))\n"
        "print(pytest_physpipe.stage is stage, set(pytest_physpipe.__all__) <= names)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:3] == [
        "[]",
        "pytest_physpipe.stage stage True",
        "True True",
    ]


def test_physpipe_ls_imports_neither_pytest_nor_pydantic(tmp_path: Path) -> None:
    from pytest_physpipe.records import StageRecord
    from pytest_physpipe.store.entries import Store

    store = Store(tmp_path / "store")
    store.ensure()
    key = "a" * 32
    store.commit(key, value={"x": 1}, record=StageRecord(key=key, name="grid"), run_id="r")
    store.flush()
    code = (
        "import sys\n"
        "from pytest_physpipe.store.cli import main\n"
        f"status = main(['--dir', {str(store.root)!r}, 'ls'])\n"
        "heavy = ('pytest', 'pydantic', 'numpy', 'pytest_physpipe.store.entries')\n"
        "print(status, sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "grid" in done.stdout
    assert done.stdout.splitlines()[-1] == "0 []"
