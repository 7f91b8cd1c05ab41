"""The native runner API (blockwise.run_blockwise, Task) on both runners."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import blockwise
from blockwise import ConfigError, Roi, Task, WorkerStartupError, run_blockwise

RUNNERS = ["threads", "processes"]
REPO = Path(__file__).resolve().parents[2]


def grid_task(task_id, process=None, *, n=4, num_workers=2, **kw):
    """A 1-d task of n blocks of 10."""
    if process is None and "process_per_worker" not in kw and "worker_function" not in kw:
        process = lambda b: None  # noqa: E731
    if process is not None:
        kw["process"] = process
    return Task(task_id, Roi((0,), (10 * n,)), Roi((0,), (10,)), Roi((0,), (10,)), num_workers=num_workers, **kw)


def run(tasks, runner, tmp_path, **kw):
    kw.setdefault("progress", False)
    if runner == "processes":
        kw.setdefault("log_dir", tmp_path / "logs")
    return run_blockwise(tasks, runner=runner, **kw)


def recorder(d: Path):
    d.mkdir(exist_ok=True)

    def process(block):
        (d / f"{block.block_id}-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}").write_text("")

    return process


def ids(d: Path) -> list[int]:
    return sorted(int(p.name.split("-")[0]) for p in d.iterdir())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("runner", RUNNERS)
def test_every_block_runs_exactly_once(runner, tmp_path):
    t = grid_task("t", recorder(tmp_path / "rec"), n=12)
    s = run(t, runner, tmp_path)
    assert s.is_success() and s.task("t").completed == 12
    got = ids(tmp_path / "rec")
    assert len(got) == 12 and len(set(got)) == 12


@pytest.mark.timeout(120)
@pytest.mark.parametrize("runner", RUNNERS)
def test_a_chain_runs_downstream_after_upstream(runner, tmp_path):
    rec = tmp_path / "rec"
    rec.mkdir()

    def mark(name):
        def process(block):
            (rec / f"{name}-{block.block_id}-{time.monotonic_ns()}").write_text("")

        return process

    a = grid_task("a", mark("a"), n=3)
    b = grid_task("b", mark("b"), n=3, upstream=a)
    s = run(b, runner, tmp_path)
    assert s.is_success()
    assert set(s.task_ids) == {"a", "b"}
    times = {}
    for p in rec.iterdir():
        name, bid, ns = p.name.split("-")
        times[(name, int(bid))] = int(ns)
    assert len(times) == 6
    for (name, bid), ns in times.items():
        if name == "b":
            assert ns > times[("a", bid)]


def failing(block):
    if block.block_id == 1:
        raise RuntimeError(f"bad block {block.block_id}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("runner", RUNNERS)
def test_an_exception_fails_its_block_with_the_traceback(runner, tmp_path):
    t = grid_task("t", failing, n=3, max_retries=0)
    s = run(t, runner, tmp_path, run_dir=tmp_path / "run")
    assert not s.is_success()
    assert s.task("t").failed == 1
    [f] = s.failures("t")
    assert f.block_id == 1 and f.kind == "error"
    assert "Traceback (most recent call last)" in f.message
    assert "in failing" in f.message and "RuntimeError: bad block 1" in f.message
    lines = [json.loads(x) for x in (tmp_path / "run" / "tasks" / "t" / "failures.jsonl").read_text().splitlines()]
    assert any("RuntimeError: bad block 1" in json.dumps(x) for x in lines), lines
    if runner == "processes":
        logs = list((tmp_path / "logs" / "t").glob("worker_*"))
        assert any("RuntimeError: bad block 1" in p.read_text() for p in logs), [p.name for p in logs]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("runner", RUNNERS)
def test_retries(runner, tmp_path):
    flags = tmp_path / "flags"
    flags.mkdir()

    def flaky(block):
        n = len(list(flags.glob(f"{block.block_id}-*")))
        (flags / f"{block.block_id}-{n}").write_text("")
        if n < 2:
            raise ValueError("not yet")

    s = run(grid_task("t", flaky, n=2, max_retries=2), runner, tmp_path)
    assert s.is_success(), s
    assert s.task("t").failed == 0 and len(list(flags.iterdir())) == 6  # 3 attempts of 2 blocks
    shutil.rmtree(flags)
    flags.mkdir()
    s = run(grid_task("v", flaky, n=2, max_retries=1), runner, tmp_path)
    assert not s.is_success() and s.task("v").failed == 2


def _segfault():
    import ctypes

    ctypes.string_at(0)  # reads address 0: SIGSEGV


def _sigkill():
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("death", ["exit", "segfault", "sigkill"])
def test_a_dying_worker_is_replaced_and_its_block_retried(tmp_path, death):
    marker = tmp_path / "died"

    def process(block):
        if block.block_id == 2:
            try:
                marker.open("x").close()
            except FileExistsError:
                return
            {"exit": lambda: os._exit(3), "segfault": _segfault, "sigkill": _sigkill}[death]()

    s = run(grid_task("t", process, n=4), "processes", tmp_path)
    assert s.is_success(), s
    assert marker.exists()
    assert s.task("t").completed == 4


def die(block):
    os._exit(3)


@pytest.mark.timeout(120)
def test_workers_dying_at_every_start_hit_the_restart_cap(tmp_path):
    def init(ctx):
        os._exit(3)

    t = grid_task("t", None, n=2, num_workers=1, process_per_worker=init)
    with pytest.raises(WorkerStartupError):
        run(t, "processes", tmp_path, max_worker_restarts=1)


@pytest.mark.timeout(120)
def test_a_timeout_kills_the_worker_of_a_late_block(tmp_path):
    marker = tmp_path / "hung"

    def process(block):
        if block.block_id == 1:
            try:
                marker.open("x").close()
            except FileExistsError:
                return
            threading.Event().wait(60)

    s = run(grid_task("t", process, n=3, timeout=1.0, max_retries=2), "processes", tmp_path)
    assert s.is_success(), s
    assert marker.exists()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("runner", RUNNERS)
def test_resume_skips_finished_blocks_and_fresh_reruns(runner, tmp_path):
    rec = tmp_path / "rec"
    rd = tmp_path / "run"
    s = run(grid_task("t", recorder(rec), n=5), runner, tmp_path, run_dir=rd)
    assert s.is_success() and len(ids(rec)) == 5
    s = run(grid_task("t", recorder(rec), n=5), runner, tmp_path, run_dir=rd)
    assert s.is_success() and len(ids(rec)) == 5  # called 0 times
    assert s.task("t").skipped == 5 and s.skipped == 5
    s = run(grid_task("t", recorder(rec), n=5), runner, tmp_path, run_dir=rd, fresh=True)
    assert s.is_success() and len(ids(rec)) == 10 and s.task("t").skipped == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("runner", RUNNERS)
def test_a_check_function_skips_blocks(runner, tmp_path):
    rec = tmp_path / "rec"
    t = grid_task("t", recorder(rec), n=4, check=lambda b: b.block_id % 2 == 0)
    s = run(t, runner, tmp_path)
    assert s.is_success() and s.task("t").skipped == 2
    assert ids(rec) == sorted(b for b in _block_ids(4) if b % 2 == 1)


def _block_ids(n):
    seen = []
    run_blockwise(grid_task("probe", lambda b: seen.append(b.block_id), n=n, num_workers=1), progress=False)
    return seen


@pytest.mark.timeout(120)
@pytest.mark.parametrize("runner", RUNNERS)
def test_process_per_worker_inits_once_per_worker(runner, tmp_path):
    inits = tmp_path / "inits"
    inits.mkdir()

    def init(ctx):
        (inits / f"{ctx.worker_id}-{os.getpid()}-{threading.get_ident()}").write_text("")
        return lambda block: None

    t = grid_task("t", None, n=8, num_workers=2, process_per_worker=init)
    s = run(t, runner, tmp_path)
    assert s.is_success()
    workers = [p.name.split("-")[0] for p in inits.iterdir()]
    assert 1 <= len(workers) <= 2 and len(set(workers)) == len(workers)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("runner", RUNNERS)
def test_outputs(runner, tmp_path):
    t = grid_task("t", lambda b: {"id": b.block_id, "list": [1, 2]}, n=3, outputs=True)
    s = run(t, runner, tmp_path)
    assert s.is_success()
    out = s.outputs("t")
    assert sorted(bid for bid, _ in out) == sorted(v["id"] for _, v in out)
    assert all(v["list"] == [1, 2] for _, v in out) and len(out) == 3
    t = grid_task("u", lambda b: object(), n=1, outputs=True, max_retries=0)
    s = run(t, runner, tmp_path)
    assert not s.is_success()
    assert "not JSON-serialisable" in s.failures("u")[0].message


def test_configuration_errors():
    with pytest.raises(ConfigError) as e:
        Task("t", Roi((0,), (10,)), Roi((0,), (4,)), Roi((0,), (5,)), process=lambda b: None)
    assert isinstance(e.value, ValueError) and "write" in str(e.value).lower()
    with pytest.raises(ConfigError, match="num_workers"):
        grid_task("t", num_workers=0)
    with pytest.raises(ConfigError, match="fit"):
        grid_task("t", fit="sideways")
    a, b = grid_task("dup"), grid_task("dup")
    with pytest.raises(ConfigError, match="dup"):
        run_blockwise([a, b], progress=False)
    wf = grid_task("w", None, worker_function=lambda: None)
    with pytest.raises(ConfigError, match="processes"):
        run_blockwise(wf, progress=False)


def test_funlib_geometry_is_accepted():
    fg = pytest.importorskip("funlib.geometry")
    t = Task("t", fg.Roi((0, 0), (20, 20)), fg.Roi((0, 0), (10, 10)), fg.Roi((0, 0), (10, 10)), process=lambda b: None)
    s = run_blockwise(t, progress=False)
    assert s.task("t").completed == 4


@pytest.mark.timeout(60)
def test_other_threads_run_during_a_threads_run():
    counter = [0]
    stop = threading.Event()

    def count():
        while not stop.is_set():
            counter[0] += 1
            time.sleep(0.001)

    seen = {}

    def process(block):
        time.sleep(0.01)
        seen[block.block_id] = counter[0]

    th = threading.Thread(target=count)
    th.start()
    try:
        start = counter[0]
        s = run_blockwise(grid_task("t", process, n=20, num_workers=1), progress=False)
    finally:
        stop.set()
        th.join(10)
    assert s.is_success()
    assert max(seen.values()) > start


SCRIPT = """
import os, signal, sys, threading, time
from pathlib import Path
import blockwise

d = Path({d!r})

def process(block):
    (d / f"worker-{{os.getpid()}}").write_text("")
    (d / "started").write_text("")
    if {runner!r} == "processes":
        threading.Event().wait(120)  # killed with its worker
    else:
        time.sleep(0.05)  # threads cannot be killed: the run stops after the running blocks

if __name__ == "__main__":
    # As in a terminal, even when the tests run where SIGINT is ignored (a background job of
    # a shell without job control passes that on).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    t = blockwise.Task("t", blockwise.Roi((0,), (100000,)), blockwise.Roi((0,), (10,)), blockwise.Roi((0,), (10,)), process=process, num_workers=2)
    try:
        blockwise.run_blockwise(t, runner={runner!r}, progress=False, log_dir=d / "logs")
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        os._exit(0)
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("runner", RUNNERS)
def test_ctrl_c_stops_a_run(runner, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(SCRIPT.format(d=str(tmp_path), runner=runner)))
    p = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (tmp_path / "started").exists(), p)
        p.send_signal(2)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert "interrupted" in out, err
    for f in tmp_path.glob("worker-*"):
        pid = int(f.name.split("-")[1])
        if pid != p.pid:
            _wait_gone(pid)


def _blockwise_bin() -> Path | None:
    env = os.environ.get("BLOCKWISE_BIN")
    for c in ([Path(env)] if env else []) + [REPO / "target" / "debug" / "blockwise"]:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    return None


@pytest.mark.timeout(60)
def test_the_status_command_reads_a_python_run(tmp_path):
    exe = _blockwise_bin()
    if exe is None:
        pytest.skip("no blockwise binary (set BLOCKWISE_BIN or cargo build --bin blockwise)")
    rd = tmp_path / "run"
    s = run_blockwise(grid_task("pytask", failing, n=3, max_retries=0), run_dir=rd, progress=False)
    assert not s.is_success()
    r = subprocess.run([str(exe), "status", str(rd)], capture_output=True, text=True, timeout=30)
    text = r.stdout + r.stderr
    assert "pytask" in text and "finished with failures" in text, text
    assert "RuntimeError: bad block 1" in text, text


def _wait_for(cond, proc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        threading.Event().wait(0.02)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _wait_gone(pid: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        assert time.monotonic() < deadline, f"worker {pid} still running"
        threading.Event().wait(0.05)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("runner", RUNNERS)
def test_on_progress_sees_the_counters_grow_to_the_end(runner, tmp_path):
    seen = []

    def on_progress(states):
        # Every counter: a call is made when any of them changed.
        seen.append({k: (s.completed, s.total, s.ready, s.processing, s.pending, s.failed,
                         s.skipped, s.orphaned, s.started)
                     for k, s in states.items()})

    a = grid_task("a", n=6)
    b = grid_task("b", n=6, upstream=a)
    s = run([b], runner, tmp_path, on_progress=on_progress)
    assert s.is_success()
    assert seen and {k: v[:2] for k, v in seen[-1].items()} == {"a": (6, 6), "b": (6, 6)}
    assert all(list(x) == ["a", "b"] for x in seen)
    for before, after in zip(seen, seen[1:]):
        assert before != after and all(before[k][0] <= after[k][0] for k in before)


def test_an_exception_in_on_progress_does_not_stop_the_run(tmp_path, capfd):
    def on_progress(states):
        raise RuntimeError("observer broke")

    s = run(grid_task("t", n=3), "threads", tmp_path, on_progress=on_progress)
    assert s.is_success()
    assert "observer broke" in capfd.readouterr().err
