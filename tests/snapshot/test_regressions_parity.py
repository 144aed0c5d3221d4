"""physics_snapshot's verdicts against pytest-regressions' on the same goldens and results.

One pytest session writes every case's golden with both tools (``--snapshot-update
--regen-all``); a second compares the new results, each case recording both verdicts. Each
case is then a test: physics_snapshot must agree with pytest-regressions, except where
``regression_cases.INTENDED`` says why it does not. Set ``PHYSPIPE_PARITY_TABLE=path`` to
write the table (case, pytest-regressions, physics_snapshot, verdict) as Markdown.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# pytest puts this folder on sys.path (rootdir-relative imports); mypy reads tests/ as the root.
from regression_cases import CASES, INTENDED  # type: ignore[import-not-found]

pytest.importorskip("pytest_regressions")

MODULE = """
import json
import os

import pytest

from cases import CASES, TOL

MODE = os.environ["PARITY_MODE"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_case(name, request, physics_snapshot):
    tool, golden, actual = CASES[name]
    value = golden() if MODE == "golden" else actual()
    fixture = request.getfixturevalue(tool + "_regression")
    try:
        if tool == "data":
            fixture.check(value)
        else:
            fixture.check(value, default_tolerance=TOL)
        theirs = "pass"
    except AssertionError:
        theirs = "fail"
    except Exception as exc:
        theirs = "error: " + type(exc).__name__
    try:
        ours = "pass" if value == physics_snapshot(**TOL) else "fail"
    except Exception as exc:
        ours = "error: " + type(exc).__name__
    with open(os.environ["PARITY_OUT"], "a") as handle:
        handle.write(json.dumps({"case": name, "theirs": theirs, "ours": ours}) + "\\n")
"""

LEAN = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark", "-q"]


def _session(root: Path, mode: str, *args: str) -> dict[str, dict[str, str]]:
    out = root / f"{mode}.jsonl"
    env = {
        **os.environ,
        "PARITY_MODE": mode,
        "PARITY_OUT": str(out),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PHYSPIPE_DIR", None)
    subprocess.run(
        [sys.executable, "-m", "pytest", *LEAN, *args],
        cwd=root,
        env=env,
        capture_output=True,
        check=False,
        timeout=600,
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return {row["case"]: row for row in rows}


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    root = tmp_path_factory.mktemp("parity")
    shutil.copy(Path(__file__).with_name("regression_cases.py"), root / "cases.py")
    (root / "test_parity.py").write_text(MODULE)
    (root / "pytest.ini").write_text("[pytest]\n")
    written = _session(root, "golden", "--snapshot-update", "--regen-all")
    assert set(written) == set(CASES), "the golden-writing session did not run every case"
    result = _session(root, "actual")
    table = os.environ.get("PHYSPIPE_PARITY_TABLE")
    if table:
        lines = ["| case | pytest-regressions | physics_snapshot | verdict |", "|---|---|---|---|"]
        for name in sorted(CASES):
            row = result[name]
            verdict = "same" if _agree(row) else f"intended: {INTENDED.get(name, '?')}"
            lines.append(f"| {name} | {row['theirs']} | {row['ours']} | {verdict} |")
        Path(table).write_text("\n".join(lines) + "\n")
    return result


def _agree(row: dict[str, str]) -> bool:
    # A tool that raises on a changed result rejects it, like a failure does.
    def ok(verdict: str) -> bool:
        return verdict == "pass"

    return ok(row["theirs"]) == ok(row["ours"]) and not row["ours"].startswith("error")


@pytest.mark.parametrize("name", sorted(CASES))
def test_verdict_matches_pytest_regressions(verdicts: dict[str, dict[str, str]], name: str) -> None:
    row = verdicts[name]
    assert not row["ours"].startswith("error"), row
    if name in INTENDED:
        assert not _agree(row), f"{name} now agrees with pytest-regressions: drop it from INTENDED"
    else:
        assert _agree(row), row
