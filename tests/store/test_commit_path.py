"""A commit writes what it sums: the sums a codec's writer computes from the bytes it writes
are the sums of the files on disk, ``meta.json`` says what ``json`` would have said, and the
lock and scratch bookkeeping of a miss stays readable."""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from physpipe_testing import json_leaves, json_values

from pytest_physpipe.errors import CodecError
from pytest_physpipe.records import StageRecord
from pytest_physpipe.store.codecs import CodecRegistry, JsonCodec, summing_encoder
from pytest_physpipe.store.entries import Store
from pytest_physpipe.store.fileio import EntryWriter, json_bytes
from pytest_physpipe.store.layout import StoreLayout
from pytest_physpipe.store.locks import KeyLock
from pytest_physpipe.store.scratch import scratch_dir

FAST = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

leaves = json_leaves()
arrays = hnp.arrays(
    hnp.scalar_dtypes(), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)
)
trees = st.recursive(
    leaves | arrays,
    lambda inner: (
        st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def same(a: Any, b: Any) -> bool:
    """Equality that tells NaN, -0.0 and int/float apart (JSON values)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def commit(store: Store, value: object, **kwargs: Any) -> tuple[str, dict[str, Any]]:
    key = uuid.uuid4().hex
    store.ensure()
    record = StageRecord(key=key, name="s", created_at="2024-01-01T00:00:00+00:00")
    store.commit(key, value=value, record=record, run_id="r", **kwargs)
    meta = json.loads((store.entry_dir(key) / "meta.json").read_bytes())
    return key, meta


def on_disk(store: Store, key: str) -> dict[str, Any]:
    """Every payload file's sums, read back from the entry (what commits did before)."""
    files = store._checksums(os.fspath(store.entry_dir(key)))
    files.pop("meta.json")
    return dict(sorted(files.items()))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store", fsync="none")


# -- the sums of the files a commit writes ------------------------------------------------------


@FAST
@given(value=json_values(12) | arrays | trees)
def test_sums_from_the_bytes_written_are_the_files_on_disk(store: Store, value: object) -> None:
    key, meta = commit(store, value)
    assert meta["codec"] in ("json", "npy", "tree")
    assert meta["files"] == on_disk(store, key)
    assert list(meta["files"]) == sorted(meta["files"])
    assert store.load(key, full_verify=True) is not None


def test_strided_and_fortran_arrays_are_summed_as_numpy_writes_them(store: Store) -> None:
    base = np.arange(60.0).reshape(3, 4, 5)
    for value in (base[::-1, :, ::2], np.asfortranarray(base), base.T, np.float32(1.5)):
        key, meta = commit(store, {"a": value} if np.ndim(value) == 0 else value)
        assert meta["files"] == on_disk(store, key)


def test_large_arrays_get_the_sampled_sum_of_their_file(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", fsync="none", verify_max=1 << 16)
    key, meta = commit(store, np.arange(1 << 15, dtype=np.float64))  # 256 KiB
    assert "sample" in meta["files"]["value.npy"]
    assert meta["files"] == on_disk(store, key)


def test_pickle_and_sparse_leaves(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHYSPIPE_SECRET", "s" * 32)
    store.codecs = CodecRegistry()
    key, meta = commit(store, {1, 2, 3})
    assert meta["codec"] == "pickle"
    assert meta["files"] == on_disk(store, key)
    # A sparse matrix inside a tree is a leaf stored by a codec that writes its own files:
    # those are read back to be summed, beside the tree's own.
    sp = pytest.importorskip("scipy.sparse")
    matrix = sp.random(20, 20, density=0.1, format="csr", random_state=1)
    key, meta = commit(store, {"m": matrix, "a": np.arange(3)})
    assert meta["codec"] == "tree"
    assert any(name.startswith("l") and "/" in name for name in meta["files"])
    assert meta["files"] == on_disk(store, key)
    loaded = store.load(key, full_verify=True)
    assert loaded is not None
    assert (loaded.value["m"] != matrix).nnz == 0


class TextCodec:
    """A plugin codec as the hook's docs show it: ``encode`` only."""

    name = "text"

    def accepts(self, value: object) -> bool:
        return isinstance(value, str)

    def encode(self, value: object, dest: Path) -> dict[str, Any]:
        (dest / "value.txt").write_text(str(value))
        (dest / "sub").mkdir()
        (dest / "sub" / "more.txt").write_text("more")
        return {}

    def decode(self, src: Path, meta: Any, *, mmap_min: int) -> object:
        return (src / "value.txt").read_text()


def test_a_codec_without_encode_into_is_read_back(store: Store) -> None:
    store.codecs.add(TextCodec())
    key, meta = commit(store, "hello", codec="text")
    assert set(meta["files"]) == {"value.txt", "sub/more.txt"}
    assert meta["files"] == on_disk(store, key)
    loaded = store.load(key, full_verify=True)
    assert loaded is not None
    assert loaded.value == "hello"


class UpperJson(JsonCodec):
    """A subclass overriding ``encode`` only: its ``encode`` must be the one called."""

    def encode(self, value: object, dest: Path) -> dict[str, Any]:
        (dest / "value.json").write_text(json.dumps(str(value).upper()))
        return {"upper": True}


class SummingText(TextCodec):
    """A plugin codec that writes through the store's writer."""

    def encode_into(self, value: object, writer: EntryWriter) -> dict[str, Any]:
        writer.write("value.txt", str(value).encode())
        return {"summed": True}


def test_which_encode_the_store_calls() -> None:
    assert summing_encoder(JsonCodec()) is not None
    assert summing_encoder(UpperJson()) is None
    assert summing_encoder(TextCodec()) is None
    assert summing_encoder(SummingText()) is not None
    shadowed = JsonCodec()
    shadowed.encode = lambda value, dest: {}  # type: ignore[method-assign]
    assert summing_encoder(shadowed) is None


def test_a_subclass_overriding_encode_keeps_its_encode(store: Store) -> None:
    store.codecs.add(UpperJson())
    key, meta = commit(store, "abc", codec="json")
    assert meta["codec_meta"] == {"upper": True}
    assert meta["files"] == on_disk(store, key)
    loaded = store.load(key)
    assert loaded is not None
    assert loaded.value == "ABC"


def test_a_plugin_codec_with_encode_into(store: Store) -> None:
    store.codecs.add(SummingText())
    key, meta = commit(store, "abc", codec="text")
    assert meta["codec_meta"] == {"summed": True}
    assert meta["files"] == on_disk(store, key)


def test_writer_sums_only_files_written_whole(tmp_path: Path) -> None:
    writer = EntryWriter(tmp_path)

    def fail_halfway() -> None:
        with writer.open("half.bin") as handle:
            handle.write(b"abc")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail_halfway()
    with writer.open("whole.bin") as handle:
        handle.write(b"ab")
        handle.write(np.arange(3, dtype=np.int64).tobytes())
    sub = writer.folder_writer("d")
    sub.write("x.json", b"[]")
    assert set(writer.sums) == {"whole.bin", "d/x.json"}
    assert writer.sums["whole.bin"][0] == (tmp_path / "whole.bin").stat().st_size == 26
    with pytest.raises(FileExistsError):
        writer.write("whole.bin", b"again")  # never replaces a file


def test_a_failed_encode_leaves_nothing(store: Store) -> None:
    class Failing(SummingText):
        def encode_into(self, value: object, writer: EntryWriter) -> dict[str, Any]:
            writer.write("value.txt", b"partial")
            raise CodecError("no")

    store.codecs.add(Failing())
    with pytest.raises(CodecError):
        commit(store, "abc", codec="text")
    assert not list((store.root / "tmp").glob("*.*.*.*"))
    assert not list((store.root / "entries").rglob("meta.json"))


class MetaText(TextCodec):
    """A plugin codec whose metadata is given by the test."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta

    def encode(self, value: object, dest: Path) -> dict[str, Any]:
        super().encode(value, dest)
        return self.meta


def test_codec_metadata_is_written_as_json_writes_it(store: Store) -> None:
    # A tuple is a list, as it always was; bytes or a set are no JSON, and the commit says
    # so (as `json` did) instead of storing them as text or a list the codec never wrote.
    store.codecs.add(MetaText({"shape": (2, 3)}))
    _, meta = commit(store, "abc", codec="text")
    assert meta["codec_meta"] == {"shape": [2, 3]}
    for bad in ({"blob": b"x"}, {"names": {"a"}}):
        store.codecs.add(MetaText(bad))
        with pytest.raises(TypeError):
            commit(store, "other", codec="text")
        assert not list((store.root / "tmp").glob("*.*.*.*"))


# -- meta.json and value.json ---------------------------------------------------------------------


@FAST
@given(json_values(12))
def test_json_bytes_says_what_json_says(value: object) -> None:
    assert same(json.loads(json_bytes(value)), json.loads(json.dumps(value)))


def test_json_bytes_falls_back_to_json() -> None:
    assert json.loads(json_bytes({"a": "\ud800"})) == {"a": "\ud800"}  # a lone surrogate
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        json_bytes(loop)


config_values = st.recursive(
    leaves | st.tuples(st.integers(), st.text(max_size=3)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
records = st.builds(
    StageRecord,
    key=st.just("a" * 32),
    name=st.text(min_size=1, max_size=6),
    config=st.dictionaries(st.text(max_size=5), config_values, max_size=4),
    metrics=st.dictionaries(st.text(max_size=4), st.floats(), max_size=3),
    duration_s=st.floats(min_value=0, allow_infinity=False, allow_nan=False),
    param_id=st.none() | st.text(max_size=6),
    manifest=st.dictionaries(st.text(max_size=4), config_values, max_size=3),
    created_at=st.text(max_size=8),
)


@FAST
@given(records)
def test_meta_record_is_what_model_dump_gives(store: Store, record: StageRecord) -> None:
    key = uuid.uuid4().hex
    record = record.model_copy(update={"key": key})
    store.ensure()
    store.commit(key, value={"v": 1}, record=record, run_id="r")
    written = json.loads((store.entry_dir(key) / "meta.json").read_bytes())["record"]
    # The fields as they are, as JSON: an infinity or NaN in a config or manifest is kept
    # (model_dump(mode="json") would make it null, and the record then misstate the config).
    expected = json.loads(json.dumps({**record.model_dump(), "codec": "json"}, allow_nan=True))
    assert same(written, expected)
    loaded = store.load(key)
    assert loaded is not None
    assert same(loaded.record.metrics, record.metrics)


def test_nan_metrics_survive_a_commit(store: Store) -> None:
    key = uuid.uuid4().hex
    store.ensure()
    record = StageRecord(key=key, name="s", metrics={"nan": math.nan, "inf": -math.inf})
    store.commit(key, value=[1.0], record=record, run_id="r")
    loaded = store.load(key)
    assert loaded is not None
    assert math.isnan(loaded.record.metrics["nan"])
    assert loaded.record.metrics["inf"] == -math.inf


# -- the lock file and the staging directory ------------------------------------------------------


def test_the_lock_file_names_its_holder_in_json(tmp_path: Path) -> None:
    path = tmp_path / "k.lock"
    long = KeyLock(path, mode="flock", describe='stage "quoted" ' + "é" * 50)
    with long:
        info = json.loads(path.read_text())
        assert info["describe"] == 'stage "quoted" ' + "é" * 50
        assert info["pid"] == os.getpid()
    with KeyLock(os.fspath(path), mode="flock", describe="short"):
        assert json.loads(path.read_text())["describe"] == "short"  # the longer one is gone


def test_scratch_dirs_are_new_owned_and_named_for_housekeeping(tmp_path: Path) -> None:
    layout = StoreLayout(tmp_path / "store")
    names = {scratch_dir(layout, "k") for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert os.stat(name).st_mode & 0o777 == 0o700
        owner = layout.scratch_owner(os.path.basename(name))
        assert owner is not None
        assert owner.pid == os.getpid()
    for name in names:
        os.rmdir(name)
    os.rmdir(layout.tmp)  # made again when it vanished
    assert os.path.isdir(scratch_dir(layout, "k"))


def test_stage_index_reads_back_what_a_flush_merged(store: Store) -> None:
    from pytest_physpipe.store.pending import LATEST, read_stage_index

    key, _meta = commit(store, {"v": 1})
    assert read_stage_index(store.layout, "s") == {}  # nothing merged yet
    record = StageRecord(key=key, name="s", param_id="p=1", manifest={"config": {"p": 1}})
    store.commit(uuid.uuid4().hex, value=1, record=record.model_copy(), run_id="r")
    store.flush()
    notes = read_stage_index(store.layout, "s")
    assert set(notes) == {"p=1", LATEST}
    assert notes["p=1"][1] == {"config": {"p": 1}}
    path = store.layout.stage_index_path("s")
    for garbage in (b"", b"[1, 2]", b'{"p": '):
        path.write_bytes(garbage)
        assert read_stage_index(store.layout, "s") == {}
