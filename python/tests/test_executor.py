"""blockwise.exec.Executor on threads and worker processes."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from blockwise.exec import Executor, ItemError, ItemTimeoutError


@pytest.fixture(scope="module")
def procs(tmp_path_factory):
    logs = tmp_path_factory.mktemp("exec-logs")
    with Executor.processes(2, log_dir=logs) as ex:
        yield ex


@pytest.fixture(params=["threads", "processes"])
def ex(request, procs):
    if request.param == "threads":
        with Executor.threads(3) as t:
            yield t
    else:
        yield procs


def square(x):
    return x * x


def inverse(x):
    return 100 // (x - 5)


@pytest.mark.timeout(60)
def test_map_keeps_input_order(ex):
    assert ex.map(square, range(50)) == [x * x for x in range(50)]
    assert ex.map(square, []) == []


@pytest.mark.timeout(60)
def test_as_completed_yields_index_result_pairs(ex):
    out = list(ex.as_completed(square, range(20)))
    assert sorted(out) == [(i, i * i) for i in range(20)]


@pytest.mark.timeout(60)
def test_bounded_map_over_an_infinite_generator(ex):
    out = list(itertools.islice(ex.bounded_map(square, itertools.count(), window=4), 30))
    assert out == [x * x for x in range(30)]


@pytest.mark.timeout(60)
def test_bounded_map_pulls_items_only_as_results_are_consumed(ex):
    window = 4
    pulled = 0

    def items():
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield i

    ahead = []
    gen = ex.bounded_map(square, items(), window=window)
    for consumed, r in enumerate(itertools.islice(gen, 200), start=1):
        assert r == (consumed - 1) ** 2
        ahead.append(pulled - consumed)
    gen.close()
    # window in flight + at most window finished behind a slow one + the one being delivered.
    assert max(ahead) <= 2 * window + 2, max(ahead)


@pytest.mark.timeout(60)
def test_an_exception_raises_item_error_with_the_traceback(ex):
    with pytest.raises(ItemError) as info:
        ex.map(inverse, range(10))
    e = info.value
    assert e.index == 5
    assert "item 5 failed" in str(e)
    assert "Traceback (most recent call last)" in e.message
    assert "in inverse" in e.message and "ZeroDivisionError" in e.message
    # The executor goes on after a failed map.
    assert ex.map(square, [3]) == [9]


@pytest.mark.timeout(60)
def test_results_before_the_failure_are_delivered(ex):
    gen = ex.bounded_map(inverse, range(10), window=2)
    assert [next(gen) for _ in range(5)] == [100 // (x - 5) for x in range(5)]
    with pytest.raises(ItemError):
        next(gen)
    with pytest.raises(StopIteration):
        next(gen)


@pytest.mark.timeout(60)
def test_as_completed_raises_at_the_failed_item(ex):
    with pytest.raises(ItemError) as info:
        list(ex.as_completed(inverse, range(10)))
    assert info.value.index == 5


@pytest.mark.timeout(60)
def test_an_exception_of_the_input_reaches_the_caller(ex):
    def items():
        yield 1
        yield 2
        raise LookupError("input broke")

    gen = ex.bounded_map(square, items())
    assert next(gen) == 1 and next(gen) == 4
    with pytest.raises(LookupError, match="input broke"):
        next(gen)


def test_threads_pass_objects_without_pickling():
    lock = threading.Lock()  # not picklable
    with Executor.threads(2) as ex:
        out = ex.map(lambda x: x, [lock, lock])
        assert out[0] is lock and out[1] is lock
        with pytest.raises(ItemError) as info:
            ex.map(inverse, [5])
        assert isinstance(info.value.__cause__, ZeroDivisionError)


@pytest.mark.timeout(60)
def test_a_closure_runs_on_processes(procs):
    offset = 1000
    table = {i: str(i) for i in range(5)}
    assert procs.map(lambda x: (x + offset, table[x]), range(5)) == [(i + 1000, str(i)) for i in range(5)]


@pytest.mark.timeout(60)
def test_items_run_in_worker_processes(procs):
    pids = set(procs.map(lambda _: os.getpid(), range(20)))
    assert os.getpid() not in pids


@pytest.mark.timeout(120)
def test_a_dying_worker_is_replaced_and_its_item_retried(tmp_path):
    flags = tmp_path / "flags"
    flags.mkdir()

    def fragile(x):
        if x == 3:
            try:
                (flags / "3").open("x").close()
            except FileExistsError:
                return x * 10
            os._exit(1)  # the first attempt kills its worker
        if x == 6:
            os._exit(1)  # every attempt
        return x * 10

    with Executor.processes(2, log_dir=tmp_path / "logs", max_worker_restarts=10) as ex:
        assert ex.map(fragile, range(6)) == [x * 10 for x in range(6)]
        assert (flags / "3").exists()
        # An item that kills every worker fails after 3 attempts (the Rust executor's rule).
        with pytest.raises(ItemError) as info:
            ex.map(fragile, [6])
        assert "lost while running this item" in info.value.message
        assert "tried 3 times" in info.value.message
        assert ex.map(fragile, [7]) == [70]


@pytest.mark.timeout(60)
def test_ctrl_c_stops_a_process_executor_and_its_workers(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, threading
            from pathlib import Path
            from blockwise.exec import Executor

            d = Path({str(tmp_path)!r})

            def item(x):
                (d / f"worker-{{os.getpid()}}").write_text("")
                threading.Event().wait(120)

            if __name__ == "__main__":
                # As in a terminal, even when the tests run where SIGINT is ignored (a
                # background job of a shell without job control passes that on).
                signal.signal(signal.SIGINT, signal.default_int_handler)
                with Executor.processes(2, log_dir=d / "logs") as ex:
                    try:
                        ex.map(item, range(4))
                    except KeyboardInterrupt:
                        print("interrupted", flush=True)
                        raise
            """
        )
    )
    p = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: any(tmp_path.glob("worker-*")), p)
        p.send_signal(2)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert "interrupted" in out, err
    assert "KeyboardInterrupt" in err
    for f in tmp_path.glob("worker-*"):
        pid = int(f.name.split("-")[1])
        _wait_gone(pid)


def _wait_for(cond, proc, timeout=30.0):
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        threading.Event().wait(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while _alive(pid):
        assert time.monotonic() < deadline, f"worker {pid} still running"
        threading.Event().wait(0.05)


@pytest.mark.timeout(60)
def test_ctrl_c_stops_a_thread_executor(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import itertools, signal, time
            from pathlib import Path
            from blockwise.exec import Executor

            d = Path({str(tmp_path)!r})

            def item(x):
                (d / "started").write_text("")
                time.sleep(0.05)  # threads cannot be killed: short items, an endless input
                return x

            if __name__ == "__main__":
                # As in a terminal, even when the tests run where SIGINT is ignored (a
                # background job of a shell without job control passes that on).
                signal.signal(signal.SIGINT, signal.default_int_handler)
                with Executor.threads(2) as ex:
                    try:
                        for _ in ex.bounded_map(item, itertools.count()):
                            pass
                    except KeyboardInterrupt:
                        print("interrupted", flush=True)
                        raise
            """
        )
    )
    p = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (tmp_path / "started").exists(), p)
        p.send_signal(2)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert "interrupted" in out, err
    assert "KeyboardInterrupt" in err and p.returncode != 0


@pytest.mark.timeout(60)
def test_other_threads_run_while_a_map_waits():
    # A threads-executor item waits for an event another Python thread sets: that thread must
    # get the GIL while the caller waits for results.
    ev = threading.Event()
    setter = threading.Thread(target=ev.set)
    with Executor.threads(1) as ex:
        gen = ex.bounded_map(lambda _: ev.wait(30), [0])
        setter.start()
        assert next(gen) is True
    setter.join(10)


def test_shutdown_stops_a_map_in_progress():
    ex = Executor.threads(1)
    gen = ex.bounded_map(square, itertools.count())
    assert next(gen) == 0
    ex.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        list(gen)
    with pytest.raises(RuntimeError, match="shut down"):
        ex.map(square, [1])


def test_bad_arguments():
    with Executor.threads(1) as ex:
        with pytest.raises(TypeError, match="callable"):
            ex.map(42, [1])
        with pytest.raises(ValueError, match="window"):
            ex.bounded_map(square, [1], window=0)
    with pytest.raises(ValueError):
        Executor.threads(0)


# --- time limits and idle workers --------------------------------------------------------------


def _hang_on_two(gate, x):
    """Item 2 waits for `gate` (at most 60 s: far past any limit of these tests)."""
    if x == 2:
        gate.wait(60)
    return x * 10


@pytest.mark.timeout(120)
def test_threads_an_item_past_the_timeout_raises_item_timeout_error_at_its_place():
    gate = threading.Event()
    try:
        with Executor.threads(2, timeout=0.2) as ex:
            assert ex.timeout == 0.2
            out = []
            with pytest.raises(ItemTimeoutError) as info:
                for r in ex.bounded_map(lambda x: _hang_on_two(gate, x), range(6)):
                    out.append(r)
            assert out == [0, 10]  # results before it are delivered
            e = info.value
            assert isinstance(e, ItemError) and (e.index, e.timeout) == (2, 0.2)
            assert str(e) == "item 2 failed: timed out after 0.2 s"
            with pytest.raises(ItemTimeoutError, match="item 2"):
                dict(ex.as_completed(lambda x: _hang_on_two(gate, x), range(4)))
            # A map without a limit (overriding the executor's) waits for its slow item.
            gate.set()
            assert ex.map(lambda x: _hang_on_two(gate, x), range(4), timeout=None) == [0, 10, 20, 30]
        gate.clear()
        # A map's own limit on an executor without one.
        with Executor.threads(2) as ex:
            assert ex.timeout is None
            with pytest.raises(ItemTimeoutError) as info:
                ex.map(lambda x: _hang_on_two(gate, x), range(4), timeout=0.2)
            assert info.value.index == 2
    finally:
        gate.set()  # the abandoned threads finish


@pytest.mark.timeout(120)
def test_processes_an_item_past_the_timeout_fails_and_its_worker_is_replaced(tmp_path):
    with Executor.processes(2, log_dir=tmp_path / "logs", timeout=1.0) as ex:
        hang = lambda x: threading.Event().wait(60) if x == 1 else os.getpid()  # noqa: E731
        with pytest.raises(ItemTimeoutError) as info:
            ex.map(hang, range(4))
        assert (info.value.index, info.value.timeout) == (1, 1.0)
        assert "timed out after 1 s" in str(info.value)
        # The executor goes on (the hung worker was killed and replaced).
        assert len(ex.map(lambda x: x + 1, range(4))) == 4
        results = dict(ex.as_completed(lambda x: x * 2, range(3), timeout=30))
        assert results == {0: 0, 1: 2, 2: 4}


def _exit_within(pid: int, timeout: float) -> bool:
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


@pytest.mark.timeout(120)
def test_processes_an_idle_worker_leaves_and_a_new_one_comes_for_new_items(tmp_path):
    with Executor.processes(1, log_dir=tmp_path / "logs", idle_timeout=0.5) as ex:
        [first] = ex.map(lambda _: os.getpid(), [0])
        assert _exit_within(first, 30.0), f"the idle worker {first} never left"
        [second] = ex.map(lambda _: os.getpid(), [0])
        assert second != first


def test_bad_time_limits(tmp_path):
    for bad in (0, -1, float("inf")):
        with pytest.raises(ValueError, match="must be a positive duration"):
            Executor.threads(1, timeout=bad)
    with pytest.raises(TypeError, match="seconds"):
        Executor.threads(1, timeout="1s")
    with pytest.raises(ValueError, match="idle_timeout must be 0 s or more, got -1"):
        Executor.processes(1, idle_timeout=-1, log_dir=tmp_path)
    with pytest.raises(TypeError, match="idle_timeout"):
        Executor.processes(1, idle_timeout="soon", log_dir=tmp_path)
    with Executor.threads(1) as ex:
        with pytest.raises(ValueError, match="timeout must be a positive duration"):
            ex.map(square, [1], timeout=-2)
    from datetime import timedelta

    with Executor.threads(1, timeout=timedelta(seconds=3)) as ex:
        assert ex.timeout == 3.0


@pytest.mark.timeout(120)
def test_processes_a_budget_gives_each_worker_its_own_gpu(tmp_path):
    with Executor.processes(4, log_dir=tmp_path / "logs", requires={"gpu": 1}, resources={"gpu": 2}) as ex:
        seen = ex.map(lambda _: (os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")), range(40))
    by_pid = dict(seen)
    assert all(cuda in ("0", "1") for cuda in by_pid.values()), by_pid
    assert len(set(seen)) == len(by_pid)  # a worker keeps its GPU
    # A requirement the budget cannot meet is refused when the executor starts.
    with pytest.raises(ValueError, match='needs 2 units of resource "gpu"'):
        Executor.processes(1, log_dir=tmp_path / "logs", requires={"gpu": 2}, resources={"gpu": 1})
