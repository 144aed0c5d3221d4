"""CPU/GPU slots shared by processes, the budget, and pinning thread pools to a grant."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from physpipe_testing import Spawn, finish, wait_for

from pytest_physpipe import resources as resources_module
from pytest_physpipe.errors import LockTimeoutError, ResourceError
from pytest_physpipe.models import Resources
from pytest_physpipe.resources import Budget, Grant, SlotPool, detect_budget, pinned

PRELUDE = """
import os, sys, time
from pathlib import Path
from pytest_physpipe.models import Resources
from pytest_physpipe.resources import Budget, SlotPool

def wait_for(path, timeout=30.0):
    end = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > end:
            return False
        time.sleep(0.001)
    return True

def log(path, line):
    with open(path, "a") as handle:  # O_APPEND: one short write per line, never torn
        handle.write(line + "\\n")
"""


def max_concurrency(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    level = peak = 0
    for _, step in events:  # at equal times, ends (-1) sort before starts (+1)
        level += step
        peak = max(peak, level)
    return peak


# ---------------------------------------------------------------------------------------------
# Sharing slots between processes


STAGE = """
root, logfile, go, cpu, budget, rendezvous = sys.argv[1:7]
pool = SlotPool(Path(root), Budget(int(budget), ()))
wait_for(go)
with pool.hold(Resources(cpu=int(cpu)), stage="heat", timeout=60) as grant:
    start = time.monotonic()
    if rendezvous == "-":
        time.sleep(0.2)
        met = "-"
    else:
        # Wait (logic, not timing) until another stage holds slots at the same time as us.
        Path(rendezvous, f"in-{os.getpid()}").touch()
        end = time.monotonic() + 15
        while len(os.listdir(rendezvous)) < 2 and time.monotonic() < end:
            time.sleep(0.002)
        met = "met" if len(os.listdir(rendezvous)) >= 2 else "alone"
    log(logfile, f"{start} {time.monotonic()} {met} {','.join(map(str, grant.cpu_ids))}")
"""


def run_stages(
    spawn: Spawn, tmp_path: Path, *, count: int, cpu: int, budget: int, rendezvous: bool
) -> list[list[str]]:
    logfile, go, meet = tmp_path / "log", tmp_path / "go", tmp_path / "meet"
    meet.mkdir()
    slots = tmp_path / "slots" / "run-1"
    children = [
        spawn(STAGE, slots, logfile, go, cpu, budget, meet if rendezvous else "-")
        for _ in range(count)
    ]
    go.touch()
    for child in children:
        finish(child)
    return [line.split() for line in logfile.read_text().splitlines()]


def test_stages_using_the_whole_budget_never_overlap(spawn: Spawn, tmp_path: Path) -> None:
    lines = run_stages(spawn, tmp_path, count=3, cpu=2, budget=2, rendezvous=False)
    assert len(lines) == 3
    assert max_concurrency([(float(a), float(b)) for a, b, *_ in lines]) == 1
    assert all(ids == "0,1" for *_, ids in lines)


def test_single_cpu_stages_run_two_at_a_time_on_two_cpus(spawn: Spawn, tmp_path: Path) -> None:
    lines = run_stages(spawn, tmp_path, count=3, cpu=1, budget=2, rendezvous=True)
    assert len(lines) == 3
    # Every stage met another one inside its slots, so two ran at once ...
    assert [met for _, _, met, _ in lines] == ["met"] * 3
    # ... and never three.
    assert max_concurrency([(float(a), float(b)) for a, b, *_ in lines]) == 2


HOLD_ALL = """
root, held = sys.argv[1:3]
pool = SlotPool(Path(root), Budget(2, ("0",)))
with pool.hold(Resources(cpu=2, gpu=1), stage="heat"):
    Path(held).touch()
    time.sleep(120)
"""


def test_killed_holder_frees_its_slots(spawn: Spawn, tmp_path: Path) -> None:
    slots, held = tmp_path / "slots" / "run-1", tmp_path / "held"
    holder = spawn(HOLD_ALL, slots, held)
    wait_for(held)
    pool = SlotPool(slots, Budget(2, ("0",)))
    with pytest.raises(LockTimeoutError) as info:  # noqa: SIM117  # entering it is the test
        with pool.hold(Resources(cpu=1), stage="relax", timeout=0.3):
            pass
    assert "'relax'" in str(info.value)
    assert str(slots) in str(info.value)

    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    start = time.monotonic()
    with pool.hold(Resources(cpu=2, gpu=1), stage="relax", timeout=10) as grant:
        assert grant == Grant(cpus=2, cpu_ids=(0, 1), gpu_ids=("0",))
    print(f"slots: taken {time.monotonic() - start:.4f} s after their holder was killed")


# ---------------------------------------------------------------------------------------------
# In one process


def test_gpu_slots_hand_out_distinct_devices(tmp_path: Path) -> None:
    pool = SlotPool(tmp_path / "slots", Budget(4, ("GPU-aaa", "GPU-bbb")))
    one_gpu = Resources(cpu=1, gpu=1)
    with pool.hold(one_gpu, stage="a") as first, pool.hold(one_gpu, stage="b") as second:
        assert {first.gpu_ids, second.gpu_ids} == {("GPU-aaa",), ("GPU-bbb",)}
        assert first.cpu_ids != second.cpu_ids
        with pytest.raises(LockTimeoutError), pool.hold(one_gpu, stage="c", timeout=0.05):
            pass
    with pool.hold(Resources(cpu=4, gpu=2), stage="d", timeout=5) as grant:
        assert grant.gpu_ids == ("GPU-aaa", "GPU-bbb")
        assert grant.cpu_ids == (0, 1, 2, 3)


def test_all_or_nothing(tmp_path: Path) -> None:
    pool = SlotPool(tmp_path / "slots", Budget(2, ()))
    with pool.hold(Resources(cpu=1), stage="a"):
        with pytest.raises(LockTimeoutError), pool.hold(Resources(cpu=2), stage="b", timeout=0.5):
            pass
        # The waiter that timed out kept nothing: the other slot is free.
        with pool.hold(Resources(cpu=1), stage="c", timeout=0.5) as grant:
            assert grant.cpus == 1
    with pool.hold(Resources(cpu=2), stage="d", timeout=0.5) as grant:
        assert grant.cpu_ids == (0, 1)


def test_big_request_is_not_starved_by_small_ones(tmp_path: Path) -> None:
    pool = SlotPool(tmp_path / "slots", Budget(2, ()))
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            while not stop.is_set():
                with pool.hold(Resources(cpu=1), stage="small", timeout=30):
                    time.sleep(0.003)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        with pool.hold(Resources(cpu=2), stage="big", timeout=20) as grant:
            assert grant.cpu_ids == (0, 1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not errors


def test_check_names_stage_request_budget_and_remedies(tmp_path: Path) -> None:
    pool = SlotPool(tmp_path / "slots", Budget(4, ("0",)))
    pool.check(Resources(cpu=4, gpu=1), stage="heat")
    with pytest.raises(ResourceError) as info:
        pool.check(Resources(cpu=8), stage="heat")
    message = str(info.value)
    for part in (
        "'heat'",
        "8 CPU(s)",
        "4 CPU(s) and 1 GPU(s)",
        "--physpipe-cpus",
        "--physpipe-gpus",
        "Resources(",
        "slow=True",
        "--physpipe-backend slurm",
    ):
        assert part in message
    with pytest.raises(ResourceError, match="2 GPU"):
        pool.check(Resources(cpu=1, gpu=2), stage="heat")
    with pytest.raises(ResourceError, match="'heat'"), pool.hold(Resources(gpu=2), stage="heat"):
        pass


# ---------------------------------------------------------------------------------------------
# Pinning


PINNED_VARS = (*resources_module.THREAD_ENV_VARS, "CUDA_VISIBLE_DEVICES")


def test_pinned_sets_and_restores_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    with pinned(Grant(cpus=2, cpu_ids=(0, 1), gpu_ids=("1", "2"))):
        assert all(os.environ[name] == "2" for name in resources_module.THREAD_ENV_VARS)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1,2"
    assert os.environ["OMP_NUM_THREADS"] == "7"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2"
    assert "MKL_NUM_THREADS" not in os.environ

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with pinned(Grant(cpus=1, cpu_ids=(0,), gpu_ids=())):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # no GPU granted: none visible
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_pinned_restores_environment_when_the_stage_fails() -> None:
    before = {name: os.environ.get(name) for name in PINNED_VARS}
    with pytest.raises(ZeroDivisionError), pinned(Grant(cpus=3, cpu_ids=(0, 1, 2), gpu_ids=())):
        _ = 1 / 0
    assert {name: os.environ.get(name) for name in PINNED_VARS} == before


def test_pinned_limits_blas_thread_pool() -> None:
    pytest.importorskip("numpy")
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = blas_threads()
    if not before:
        pytest.skip("numpy loaded no BLAS library that threadpoolctl knows")
    with pinned(Grant(cpus=1, cpu_ids=(0,), gpu_ids=())):
        assert blas_threads() == [1] * len(before)
    assert blas_threads() == before


def test_pinned_finds_a_blas_loaded_after_an_earlier_grant() -> None:
    """The thread pools are searched once and again only when a library was loaded since: a
    BLAS that a stage imports after an earlier instance ran is capped on the next one."""
    pytest.importorskip("numpy")
    code = """
import json
from threadpoolctl import threadpool_info
from pytest_physpipe.resources import Grant, pinned
one = Grant(cpus=1, cpu_ids=(0,), gpu_ids=())
with pinned(one):
    pass
import numpy
blas = lambda: [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
before = blas()
with pinned(one):
    inside = blas()
with pinned(one):
    again = blas()
print(json.dumps([before, inside, again, blas()]))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    before, inside, again, after = json.loads(result.stdout)
    if not before:
        pytest.skip("numpy loaded no BLAS library that threadpoolctl knows")
    assert inside == again == [1] * len(before)
    assert after == before


# ---------------------------------------------------------------------------------------------
# The budget


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        ("0,2", ("0", "2")),
        ("", ()),
        ("-1", ()),
        (" 1 , 3 ", ("1", "3")),
        ("GPU-8d1a2f,MIG-1c2d", ("GPU-8d1a2f", "MIG-1c2d")),
        ("0,-1,2", ("0",)),  # CUDA stops reading at the first invalid entry
    ],
)
def test_detect_budget_reads_cuda_visible_devices(
    monkeypatch: pytest.MonkeyPatch, visible: str, expected: tuple[str, ...]
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    budget = detect_budget(cpus=3, gpus=None)
    assert budget == Budget(cpus=3, gpu_ids=expected)


def test_detect_budget_explicit_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    assert detect_budget(cpus=1, gpus=2).gpu_ids == ("4", "5")
    assert detect_budget(cpus=1, gpus=0).gpu_ids == ()
    with pytest.raises(ResourceError, match="--physpipe-gpus 4"):
        detect_budget(cpus=1, gpus=4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert detect_budget(cpus=1, gpus=2).gpu_ids == ("0", "1")


def test_detect_budget_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    detected = detect_budget(cpus=None, gpus=None).cpus
    assert 1 <= detected <= (os.cpu_count() or 1)
    with pytest.raises(ResourceError, match="--physpipe-cpus 0"):
        detect_budget(cpus=0, gpus=None)
    with pytest.raises(ResourceError, match="--physpipe-gpus -1"):
        detect_budget(cpus=1, gpus=-1)


def test_detect_budget_asks_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "GPU 0: NVIDIA H100 (UUID: GPU-aaa)"\n'
        'echo "  MIG 1g.10gb Device 0: (UUID: MIG-bbb)"\n'
        'echo "GPU 1: NVIDIA H100 (UUID: GPU-ccc)"\n'
    )
    fake.chmod(0o755)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_budget(cpus=1, gpus=None).gpu_ids == ("0", "1")

    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert detect_budget(cpus=1, gpus=None).gpu_ids == ()
    fake.unlink()
    assert detect_budget(cpus=1, gpus=None).gpu_ids == ()


def test_a_run_that_computes_nothing_never_detects_the_budget(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nvidia-smi takes a GPU machine a tenth of a second or more: a cached rerun skips it,
    # and a stored instance asking for a GPU is served on a machine that has none.
    bin_dir = pytester.mkdir("bin")
    calls = pytester.path / "nvidia-smi.calls"
    fake = bin_dir / "nvidia-smi"
    fake.write_text(f'#!/bin/sh\necho called >> "{calls}"\necho "GPU 0: Fake (UUID: GPU-a)"\n')
    fake.chmod(0o755)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    pytester.makepyfile(
        test_budget="""
        from pytest_physpipe import Resources, stage

        @stage
        def light():
            return 1

        @stage(resources=Resources(gpu=1))
        def on_gpu(light):
            return light + 1

        def test_both(light, on_gpu):
            assert (light, on_gpu) == (1, 2)
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert calls.read_text().splitlines() == ["called"]  # detected once, to compute

    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert calls.read_text().splitlines() == ["called"]

    fake.unlink()  # no GPU on this machine now: the stored instance is still served
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    result = pytester.runpytest("-p", "no:cacheprovider", "--physpipe-rebuild=on_gpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # to compute, it is an error at plan time
    result.stderr.fnmatch_lines(["*Stage 'on_gpu' asks for 1 CPU(s) and 1 GPU(s)*"])
