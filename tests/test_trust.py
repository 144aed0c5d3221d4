"""A cached value is what a fresh run computes: faithful keys, isolated consumers, entries that
heal, and every recomputation explained. Run through pytester, as users see it."""

from __future__ import annotations

import re
import textwrap
from collections import Counter
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from physpipe_testing import CallLog

COMMON = """
from typing import Any

import numpy as np
import pytest
from physlog import log
from pytest_physpipe import StageConfig, stage


class AnyConfig(StageConfig):
    model_config = {"arbitrary_types_allowed": True}
    value: Any = None
"""


def project(pytester: pytest.Pytester, body: str, **files: str) -> None:
    pytester.makepyfile(test_project=COMMON + textwrap.dedent(body), **files)


# -- keys faithful to types -----------------------------------------------------------------------


def test_look_alike_configs_are_computed_apart(pytester: pytest.Pytester, calls: CallLog) -> None:
    project(
        pytester,
        """
        LOOK_ALIKES = [{1: "v"}, {"1": "v"}, (1, 2), [1, 2], 1, 1.0, True]

        @stage(params=[AnyConfig(value=v) for v in LOOK_ALIKES], ids=[repr(v) for v in LOOK_ALIKES])
        def echo(config: AnyConfig):
            log(f"echo {config.value!r}")
            return repr(config.value)

        def test_each_gets_its_own(echo, request):
            assert echo == request.node.callspec.id
        """,
    )
    pytester.runpytest().assert_outcomes(passed=7)
    assert len(calls.take()) == 7
    pytester.runpytest().assert_outcomes(passed=7)
    assert calls.take() == Counter()


@pytest.mark.parametrize(
    ("value", "reason"), [("object()", "Unable to serialize"), ("b'\\xff'", "UTF-8|utf-8")]
)
def test_unencodable_config_field_is_a_clear_collection_error(
    pytester: pytest.Pytester, calls: CallLog, value: str, reason: str
) -> None:
    project(
        pytester,
        f"""
        @stage(config=AnyConfig(value={value}))
        def odd(config: AnyConfig):
            return 1

        def test_odd(odd):
            pass
        """,
    )
    result = pytester.runpytest()
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines(["*stage 'odd'*config field 'value' cannot be encoded*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert re.search(reason, result.stderr.str())
