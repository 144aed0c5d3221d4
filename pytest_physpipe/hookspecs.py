"""Hook specifications: the extension points of pytest-physpipe (added in ``pytest_addhooks``).

Implement them in a ``conftest.py`` or a plugin, like any pytest hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_physpipe.context import StageContext
    from pytest_physpipe.records import StageRecord
    from pytest_physpipe.store.codecs import CodecRegistry

hookspec = pytest.hookspec


@hookspec
def pytest_physpipe_stage_start(record: StageRecord) -> None:
    """A stage instance is about to be computed (not called for hits).

    ``record`` has the key, name, config and upstream keys; ``status`` is ``"computed"``.

    .. code-block:: python

        # conftest.py
        def pytest_physpipe_stage_start(record):
            print(f"computing {record.name} ({record.key[:12]})")
    """


@hookspec
def pytest_physpipe_stage_end(record: StageRecord, outcome: str) -> None:
    """A stage instance finished computing; ``outcome`` is ``"computed"`` or ``"failed"``.

    ``record.duration_s`` and ``record.metrics`` are filled in; on failure ``record.error``
    holds the exception's type and message.

    .. code-block:: python

        # conftest.py
        def pytest_physpipe_stage_end(record, outcome):
            if outcome == "computed" and record.duration_s > 60:
                print(f"{record.name} took {record.duration_s:.0f} s")
    """


@hookspec(firstresult=True)
def pytest_physpipe_run_stage(
    record: StageRecord, ctx: StageContext, call: Callable[[], Any]
) -> Any:
    """Run one attempt of a stage: ``call()`` runs it and returns its value.

    The plugin's own implementation calls ``call()``. Wrap it as middleware (timeouts, tracing,
    profiling) with ``wrapper=True``:

    .. code-block:: python

        # conftest.py
        import time, pytest

        @pytest.hookimpl(wrapper=True)
        def pytest_physpipe_run_stage(record, ctx, call):
            started = time.perf_counter()
            value = yield
            ctx.metric("wall_s", time.perf_counter() - started)
            return value
    """


@hookspec
def pytest_physpipe_register_codecs(registry: CodecRegistry) -> None:
    """Add codecs for your own types: ``registry.add(codec)``.

    A codec has ``name``, ``accepts(value)``, ``encode(value, dest) -> dict`` and
    ``decode(src, meta, *, mmap_min)`` (see :class:`pytest_physpipe.Codec`). The store reads
    the files ``encode`` wrote back to checksum them; a codec that also has
    ``encode_into(value, writer) -> dict``, writing through ``writer.write(name, data)``,
    spares that read (see :class:`pytest_physpipe.Codec`).

    .. code-block:: python

        # conftest.py
        class TextCodec:
            name = "text"
            def accepts(self, value): return isinstance(value, str)
            def encode(self, value, dest):
                (dest / "value.txt").write_text(value)
                return {}
            def decode(self, src, meta, *, mmap_min):
                return (src / "value.txt").read_text()

        def pytest_physpipe_register_codecs(registry):
            registry.add(TextCodec())
    """


@hookspec
def pytest_physpipe_register_backends(backends: dict[str, Callable[..., Any]]) -> None:
    """Add batch backends: ``backends["mine"] = factory``, selected by ``--physpipe-backend``.

    A factory is called with no arguments (a class works) and returns an object with the
    :class:`pytest_physpipe.Backend` protocol (``name``, ``check``, ``submit``, ``status``,
    ``cancel``); it receives :class:`pytest_physpipe.JobRequest` objects.

    .. code-block:: python

        # conftest.py
        def pytest_physpipe_register_backends(backends):
            from mysite.lsf import LsfBackend
            backends["lsf"] = LsfBackend
    """


class Defaults:
    """The plugin's own implementations, registered in a pytest run and in a batch job alike."""

    @pytest.hookimpl(trylast=True)
    def pytest_physpipe_run_stage(
        self, record: StageRecord, ctx: StageContext, call: Callable[[], Any]
    ) -> Any:
        return call()
