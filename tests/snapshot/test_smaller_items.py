"""The smaller promises of docs/snapshots.md: tolerance keys written as they are, complete
failure reports, the provenance line first, and golden files that merge in git."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pytest_physpipe.tolerance import Tolerance, ToleranceRules, compare

DOCS = Path(__file__).resolve().parents[2] / "docs" / "snapshots.md"


@pytest.fixture(autouse=True)
def _fresh_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.delenv("PHYSPIPE_DIR", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    # pytest never truncates explanations on CI; these tests are about the local default.
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *args)


@pytest.mark.parametrize(
    "pattern",
    ["P [bar]", '["P [bar]"]', "* [bar]", "fields.T (K)", 'fields["T (K)"]', "rec.x [m]"],
)
def test_tolerance_keys_with_spaces_and_brackets_match_as_written(pattern: str) -> None:
    rec = np.zeros(3, dtype=[("x [m]", "f8")])
    golden = {"P [bar]": 1.0, "fields": {"T (K)": 300.0}, "rec": rec}
    moved = {"P [bar]": 1.001, "fields": {"T (K)": 300.3}, "rec": rec.copy()}
    moved["rec"]["x [m]"] = 1e-3
    strict = Tolerance(rtol=1e-9, atol=0.0)
    failing = compare(golden, moved, strict).failed_paths
    assert failing == {'["P [bar]"]', 'fields["T (K)"]', 'rec["x [m]"]'}
    loose = {"rtol": 1e-2, "atol": 1e-2}
    result = compare(golden, moved, ToleranceRules.build(strict, {pattern: loose}))
    assert len(result.failed_paths) == 2  # the one the pattern names passes
    assert not result.unmatched_patterns


MANY = """
import os

def test_many(physics_snapshot):
    scale = float(os.environ.get("SCALE", "1"))
    assert {f"v{i:02d}": i * scale for i in range(1, 31)} == physics_snapshot
"""


def test_the_full_report_needs_both_truncation_limits_and_provenance_comes_first(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_many=MANY)
    run(pytester, "--snapshot-update").assert_outcomes(passed=1)
    monkeypatch.setenv("SCALE", "2")

    # pytest's default limits: the report is cut, but what changed is its first line.
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*records no physpipe stages and the platform is unchanged*"])
    result.stdout.fnmatch_lines(["*truncated*"])
    result.stdout.no_fnmatch_line("*To accept the new values*")

    # Only the line limit lifted: the character limit still cuts the report.
    pytester.makeini("[pytest]\ntruncation_limit_lines = 0\n")
    result = run(pytester)
    result.stdout.no_fnmatch_line("*To accept the new values*")

    # Both, as the docs say: the whole report.
    pytester.makeini("[pytest]\ntruncation_limit_lines = 0\ntruncation_limit_chars = 0\n")
    result = run(pytester)
    result.stdout.fnmatch_lines(
        [
            "*records no physpipe stages and the platform is unchanged*",
            "*30 of 30 values outside tolerance*",
            "*... and 10 more*",
            "*To accept the new values, run `pytest --snapshot-update`*",
        ]
    )
    text = DOCS.read_text()
    assert "truncation_limit_lines = 0\ntruncation_limit_chars = 0" in text


BRANCHED = """
def test_alpha(physics_snapshot):
    assert {"x": 1.0} == physics_snapshot
@BETA@

def helper_one():
    return 1


def helper_two():
    return 2

@PSI@
def test_omega(physics_snapshot):
    assert {"x": 4.0} == physics_snapshot
"""
BETA = '\ndef test_beta(physics_snapshot):\n    assert {"x": 2.0} == physics_snapshot\n'
PSI = 'def test_psi(physics_snapshot):\n    assert {"x": 3.0} == physics_snapshot\n\n'


def branched(beta: str, psi: str) -> str:
    return BRANCHED.replace("@BETA@", beta).replace("@PSI@", psi)


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


def test_two_branches_adding_tests_to_one_module_merge_cleanly(pytester: pytest.Pytester) -> None:
    root = pytester.path
    module = root / "test_orbit.py"
    module.write_text(branched("", ""))
    run(pytester, "--snapshot-update").assert_outcomes(passed=2)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "base")

    _git(root, "checkout", "-qb", "beta")
    module.write_text(branched(BETA, ""))
    run(pytester, "--snapshot-update").assert_outcomes(passed=3)
    _git(root, "commit", "-qam", "beta")

    _git(root, "checkout", "-q", "main")
    module.write_text(branched("", PSI))
    run(pytester, "--snapshot-update").assert_outcomes(passed=3)
    _git(root, "commit", "-qam", "psi")

    # Entries are sorted by name, one leaf per line: the two additions do not touch.
    _git(root, "merge", "-q", "--no-edit", "beta")
    result = run(pytester)
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*4 snapshots passed.*"])
