"""The package's modules load through Python's own loader; everything else as pytest decides.

pytest would load every ``pytest_physpipe`` module through its assertion-rewriting loader, whose
bytecode reader costs a cached rerun ~0.1 s; the package finds its own submodules first. These
runs are subprocesses, so the plugin is loaded from its entry point as in a user's session.
pytest marks a plugin's package for rewriting from its distribution's file list; an editable
install's list names no package, so the runs here mark it as a wheel install would, through
``pytest.register_assert_rewrite`` in a ``-p`` plugin loaded before the entry points.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_the_plugin_modules_load_plainly_and_user_tests_are_still_rewritten(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        mark_as_wheel="import pytest\n\npytest.register_assert_rewrite('pytest_physpipe')\n"
    )
    pytester.makepyfile(
        """
        import importlib.machinery
        import sys

        def test_loaded_by_python():
            names = [n for n in sys.modules if n.startswith("pytest_physpipe.")]
            assert "pytest_physpipe.plugin" in names and "pytest_physpipe.run" in names
            loaders = {type(sys.modules[n].__spec__.loader) for n in names}
            assert loaders == {importlib.machinery.SourceFileLoader}, loaders

        def seven():
            return 7

        def test_rewritten():
            assert seven() == 8
        """,
    )
    result = pytester.runpytest_subprocess("-p", "mark_as_wheel", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    # The user's assertion is still rewritten: pytest explains the failing comparison.
    result.stdout.fnmatch_lines(["*assert 7 == 8", "*where 7 = seven()"])
