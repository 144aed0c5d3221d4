"""A project's pytest configuration, read outside a pytest run (for ``Workflow``).

pytest itself reads it: :func:`load_project` calls ``pytest.main([path])`` with a plugin that
stops in ``pytest_cmdline_main``, after the configuration is complete and before anything is
collected. So the rootdir and the ini file (``pytest.ini``, ``pyproject.toml``, ``tox.ini``,
``setup.cfg``, in pytest's order of precedence), ``addopts``, ``PYTEST_ADDOPTS``, ``-o``
overrides, the installed plugins and the initial ``conftest.py`` files are exactly those of
``pytest <path>`` run from the current directory, and :func:`parse_settings` turns them into the
:class:`Settings` such a run has. Nothing is collected and no test runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_physpipe.errors import ConfigError, ProjectError
from pytest_physpipe.options import Settings, parse_settings

__all__ = ["Project", "load_project"]


@dataclass(frozen=True)
class Project:
    """What ``pytest <path>`` would know about physpipe, before collecting anything."""

    #: The directory the project was loaded from, as given (made absolute).
    path: Path
    #: pytest's rootdir for that directory (the ini file's folder, when there is one).
    rootdir: Path
    inifile: Path | None
    settings: Settings
    #: Which setting chose the store directory, for messages: ``ini physpipe_dir (…)``, …
    store_source: str
    #: The configuration pytest built: its hooks (codecs, stage middleware) and plugins.
    config: pytest.Config


class _Probe:
    """Reads the settings once pytest's configuration is complete, then ends the run."""

    def __init__(self) -> None:
        self.config: pytest.Config | None = None
        self.settings: Settings | None = None
        self.error: Exception | None = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_cmdline_main(self, config: pytest.Config) -> int:
        self.config = config
        try:
            config.getini("physpipe_dir")
        except ValueError:
            self.error = ProjectError(
                f"the physpipe plugin is not active in the pytest configuration of "
                f"{config.rootpath} (is it disabled with `-p no:physpipe` in addopts or "
                "PYTEST_ADDOPTS, or is pytest-physpipe installed in another environment?)."
            )
            return 0
        try:
            self.settings = parse_settings(config)
        except pytest.UsageError as exc:
            self.error = ConfigError(f"{exc} (in the pytest configuration of {config.rootpath})")
        return 0  # ends pytest.main here: nothing is collected


def load_project(
    path: str | os.PathLike[str], overrides: Mapping[str, object] | None = None
) -> Project:
    """The configuration ``pytest <path>`` would have, with ``overrides`` as ``-o NAME=VALUE``.

    ``overrides`` are ``physpipe_*`` ini settings; a list value is one item per line.
    """
    folder = Path(path).expanduser().absolute()
    if not folder.is_dir():
        raise ProjectError(
            f"Workflow(rootdir={os.fspath(path)!r}): {folder} is not a directory. Give the "
            "folder you would run pytest on (the one holding your tests or your pytest.ini)."
        )
    # Reading the configuration runs no test, so no assertion rewriting: it would only warn
    # (an error under filterwarnings=error) that the plugin, imported before pytest.main, cannot
    # be rewritten, as it does where the distribution's metadata lies beside the script.
    args = [str(folder), "--assert=plain"]
    for name, value in (overrides or {}).items():
        if not name.startswith("physpipe_"):
            raise ConfigError(
                f"Workflow(settings={{{name!r}: ...}}): only physpipe_* ini settings can be "
                "given here (see docs/options.md for the list)."
            )
        args += ["-o", f"{name}={_ini_text(value)}"]
    probe = _Probe()
    code = pytest.main(args, plugins=[probe])
    config = probe.config
    if probe.error is not None:
        raise probe.error
    if config is None or probe.settings is None:
        raise ProjectError(
            f"pytest could not read the configuration for {folder} (exit code {int(code)}; its "
            f"message is printed above). `pytest --collect-only {folder}` shows the same error."
        )
    for name in overrides or {}:
        try:
            config.getini(name)
        except ValueError:
            raise ConfigError(
                f"Workflow(settings={{{name!r}: ...}}): there is no ini setting {name!r}; see "
                "docs/options.md for the physpipe_* settings."
            ) from None
    _extend_sys_path(folder, config)
    return Project(
        path=folder,
        rootdir=Path(config.rootpath),
        inifile=None if config.inipath is None else Path(config.inipath),
        settings=probe.settings,
        store_source=_store_source(config),
        config=config,
    )


def _ini_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "\n".join(str(item) for item in value)
    return str(value)


def _extend_sys_path(folder: Path, config: pytest.Config) -> None:
    """Make the project's modules importable as in a test run: ini ``pythonpath`` entries, and
    the folder's base directory (the first one up without ``__init__.py``), as pytest's default
    ``prepend`` import mode puts it first on ``sys.path`` for the tests and conftests there."""
    base = folder
    while (base / "__init__.py").is_file() and base.parent != base:
        base = base.parent
    entries = [str(p) for p in config.getini("pythonpath")] + [str(base)]
    for entry in reversed(entries):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def _store_source(config: pytest.Config) -> str:
    if config.getoption("physpipe_dir"):
        return "--physpipe-dir (from addopts or PYTEST_ADDOPTS)"
    if os.environ.get("PHYSPIPE_DIR"):
        return "the environment variable PHYSPIPE_DIR"
    if config.getini("physpipe_dir"):
        return f"ini physpipe_dir in {config.inipath}"
    return f"the default, <rootdir>/.physpipe (rootdir {config.rootpath})"
