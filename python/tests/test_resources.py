"""Resource budgets and devices (``Task(requires=)``, ``run_blockwise(resources=, devices=)``,
``WorkerContext.devices``), threads per worker, idle workers leaving (``idle_timeout``), on both
runners.

The workers record what they do and the checks replay the records, never timing. On threads,
an in-memory event log: a worker's start (its ``process_per_worker`` set-up, with its devices)
and its stop (its block function released when the worker ends); live workers are those started
and not stopped, a lower bound of what the runner holds (a worker starts after its units are
taken and stops before they are given back). In worker processes, every block writes a file
with a snapshot of the run's live worker processes taken from ``/proc`` (each with its
``CUDA_VISIBLE_DEVICES``). Every wait has a timeout.
"""

from __future__ import annotations

import json
import os
import select
import threading
import time
import weakref
from functools import partial
from pathlib import Path

import pytest

import blockwise as bw
from blockwise import ConfigError, Roi, Task, run_blockwise

RUNNERS = ["threads", "processes"]
#: How long any wait of these tests may take before it counts as a failure.
WAIT = 30.0


def task_1d(task_id, n, **kw):
    """A 1-d task of ``n`` independent blocks of size 1, no retries."""
    kw.setdefault("read_write_conflict", False)
    kw.setdefault("max_retries", 0)
    return Task(task_id, Roi((0,), (n,)), Roi((0,), (1,)), Roi((0,), (1,)), **kw)


def run(tasks, runner, tmp_path, **kw):
    kw.setdefault("progress", False)
    if runner == "processes":
        kw.setdefault("log_dir", tmp_path / "logs")
    return run_blockwise(tasks, runner=runner, **kw)


# --- the API -----------------------------------------------------------------------------------


def test_requires_and_threads_per_worker_are_task_properties_and_survive_pickling():
    import pickle

    t = task_1d("t", 4, process=print, requires={"gpu": 1, "cpu": 4, "mem_gb": 0}, threads_per_worker=3)
    assert t.requirements == {"cpu": 4, "gpu": 1, "mem_gb": 0}
    assert t.threads_per_worker == 3
    back = pickle.loads(pickle.dumps(t))
    assert (back.requirements, back.threads_per_worker) == (t.requirements, 3)
    plain = task_1d("p", 4, process=print)
    assert (plain.requirements, plain.threads_per_worker) == ({}, 1)


@pytest.mark.parametrize(
    ("requires", "error", "match"),
    [
        ({"gpu": -1}, ConfigError, r'resource "gpu" needs a whole number of units from 0, got -1'),
        ({"gpu": 1.5}, ConfigError, "got 1.5"),
        ({"gpu": True}, ConfigError, "got True"),
        ({"": 1}, ConfigError, "empty name"),
        ({1: 1}, TypeError, "resource names are str"),
        (3, TypeError, "expected a dict"),
    ],
)
def test_bad_requirements_are_refused_at_construction(requires, error, match):
    with pytest.raises(error, match=match):
        task_1d("t", 4, process=print, requires=requires)


def test_bad_threads_per_worker_and_budgets_are_refused(tmp_path):
    for n in (0, -2):
        with pytest.raises(ConfigError, match=f"threads_per_worker must be at least 1, got {n}"):
            task_1d("t", 4, process=print, threads_per_worker=n)
    t = task_1d("t", 4, process=print)
    for kw, error, match in [
        (dict(resources={"gpu": -2}), ConfigError, "whole number of units"),
        (dict(devices={"gpu": "03"}), ConfigError, "a list of device ids, got the string '03'"),
        (dict(devices={"gpu": ["0", "0"]}), ConfigError, 'device id "0" is given twice'),
        (dict(devices={"gpu": ["0,1"]}), ConfigError, "contains a comma"),
        (dict(devices={"gpu": [0.5]}), ConfigError, "device ids are str"),
        (dict(devices=["gpu"]), TypeError, "devices: expected a dict"),
        (dict(resources={"gpu": 3}, devices={"gpu": ["0", "1"]}), ConfigError, "3 units in Runner::resources but 2 device ids"),
        (dict(runner="processes", log_dir=tmp_path, idle_timeout=-1), ConfigError, "idle_timeout must be 0 s or more, got -1"),
    ]:
        with pytest.raises(error, match=match):
            run_blockwise(t, progress=False, **kw)


# --- budgets on threads: an in-memory event log ------------------------------------------------


class EventLog:
    """What the workers of a threads run did: ``(what, task, worker, devices)``."""

    def __init__(self):
        self.events: list[tuple[str, str, int, tuple[str, ...]]] = []
        self.lock = threading.Lock()

    def push(self, what, ctx):
        with self.lock:
            self.events.append((what, ctx.task_id, ctx.worker_id, tuple(ctx.devices)))

    def logged(self, hook=None):
        """A ``process_per_worker`` that logs the worker's start, and its stop when the runner
        releases its block function (the worker ends)."""

        def init(ctx):
            self.push("start", ctx)

            def process(block):
                if hook is not None:
                    hook(ctx, block)

            weakref.finalize(process, self.push, "stop", ctx)
            return process

        return init

    def replay(self):
        """The live workers after every event: ``[{(task, worker): devices}]``."""
        live: dict[tuple[str, int], tuple[str, ...]] = {}
        out = []
        for what, task, worker, devices in self.events:
            if what == "start":
                assert (task, worker) not in live, f"worker {task}/{worker} started twice"
                live[(task, worker)] = devices
            else:
                assert live.pop((task, worker), None) == devices, f"{task}/{worker} stopped unstarted"
            out.append(dict(live))
        assert not live, f"workers never stopped: {live}"
        return out


@pytest.mark.timeout(120)
def test_threads_two_tasks_sharing_two_cpus_never_have_more_than_two_live_workers():
    log = EventLog()
    a = task_1d("a", 30, process_per_worker=log.logged(), num_workers=2, requires={"cpu": 1})
    b = task_1d("b", 30, process_per_worker=log.logged(), num_workers=2, requires={"cpu": 1})
    s = run_blockwise([a, b], progress=False, resources={"cpu": 2})
    assert s.is_success(), str(s)
    snapshots = log.replay()
    assert max(len(live) for live in snapshots) <= 2, snapshots
    assert {task for what, task, _, _ in log.events} == {"a", "b"}
    # The same tasks without a budget run all four workers at once (the check can fail).
    log.events.clear()
    gate = threading.Barrier(4, timeout=WAIT)
    first: set[tuple[str, int]] = set()

    def hold(ctx, block):  # each worker's first block waits until four workers run one
        key = (ctx.task_id, ctx.worker_id)
        if key not in first:
            first.add(key)
            gate.wait()

    a = task_1d("a", 30, process_per_worker=log.logged(hold), num_workers=2, requires={"cpu": 1})
    b = task_1d("b", 30, process_per_worker=log.logged(hold), num_workers=2, requires={"cpu": 1})
    s = run_blockwise([a, b], progress=False)
    assert s.is_success(), str(s)
    assert max(len(live) for live in log.replay()) == 4


@pytest.mark.timeout(120)
@pytest.mark.parametrize("devices", [None, ["2", "5"]])
def test_threads_gpu_workers_hold_distinct_devices(devices):
    log = EventLog()
    t = task_1d("predict", 40, process_per_worker=log.logged(), num_workers=4, requires={"gpu": 1, "cpu": 1})
    budget = dict(resources={"gpu": 2, "cpu": 8})
    if devices is not None:
        budget["devices"] = {"gpu": devices}
    s = run_blockwise(t, progress=False, **budget)
    assert s.is_success(), str(s)
    ids = set(devices or ["0", "1"])
    for live in log.replay():
        held = [d for devs in live.values() for d in devs]
        assert len(held) == len(set(held)), f"live workers share a device: {live}"
        assert len(live) <= 2
    starts = [devs for what, _, _, devs in log.events if what == "start"]
    assert starts and all(len(d) == 1 and d[0] in ids for d in starts), starts


@pytest.mark.timeout(120)
@pytest.mark.parametrize("runner", RUNNERS)
def test_without_a_budget_requirements_are_ignored_and_workers_have_no_devices(runner, tmp_path):
    out = tmp_path / "devices"
    out.mkdir()
    t = task_1d("t", 4, process_per_worker=partial(record_devices, str(out)), num_workers=2, requires={"gpu": 8})
    s = run(t, runner, tmp_path)
    assert s.is_success(), str(s)
    seen = [json.loads(p.read_text()) for p in out.iterdir()]
    assert seen and all(r["devices"] == [] and r["cuda"] is None for r in seen), seen


def record_devices(out, ctx):
    """A ``process_per_worker`` writing the worker's devices (and, in worker processes, its
    ``CUDA_VISIBLE_DEVICES`` and the context's devices) to ``out/<worker>``."""
    env = bw.WorkerContext.from_env()
    Path(out, str(ctx.worker_id)).write_text(
        json.dumps(
            {
                "devices": ctx.devices,
                "env_devices": None if env is None else env.devices,
                "cuda": os.environ.get("CUDA_VISIBLE_DEVICES") if env is not None else None,
                "pid": os.getpid(),
            }
        )
    )
    return lambda block: None


@pytest.mark.timeout(120)
@pytest.mark.parametrize("runner", RUNNERS)
def test_a_requirement_the_budget_cannot_meet_raises_before_any_block(runner, tmp_path):
    calls = tmp_path / "calls"
    calls.mkdir()
    ok = task_1d("ok", 4, process=partial(touch, str(calls)), requires={"gpu": 1})
    greedy = task_1d("greedy", 4, process=partial(touch, str(calls)), requires={"gpu": 4}, upstream=ok)
    with pytest.raises(ConfigError, match=r'task "greedy" needs 4 units of resource "gpu" per worker, but the run\'s budget has only 2'):
        run([greedy], runner, tmp_path, resources={"gpu": 2, "cpu": 4})
    typo = task_1d("typo", 4, process=partial(touch, str(calls)), requires={"gpus": 1})
    with pytest.raises(ConfigError, match=r'resource "gpus" per worker, which the run\'s budget does not have \(it has: cpu, gpu\)'):
        run([typo], runner, tmp_path, resources={"gpu": 2, "cpu": 4})
    assert list(calls.iterdir()) == []
    if runner == "processes":
        assert not (tmp_path / "logs" / "ok").exists() and not (tmp_path / "logs" / "greedy").exists()


def touch(directory, block):
    Path(directory, f"{block.task_id}-{block.block_id}").touch()


# --- budgets on worker processes: /proc snapshots ----------------------------------------------


def live_workers(marker: str) -> dict[int, str | None]:
    """The live worker processes whose command line contains ``marker`` (the run's log dir),
    with their ``CUDA_VISIBLE_DEVICES``: a snapshot from ``/proc``."""
    out: dict[int, str | None] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path("/proc", entry, "cmdline").read_bytes().decode(errors="replace")
            if "blockwise._worker" not in cmdline or marker not in cmdline:
                continue
            stat = Path("/proc", entry, "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
            env = Path("/proc", entry, "environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # exited while we looked
        cuda = None
        for var in env:
            if var.startswith(b"CUDA_VISIBLE_DEVICES="):
                cuda = var.split(b"=", 1)[1].decode()
        out[int(entry)] = cuda
    return out


def snapshot(out, marker, block):
    """A block that records the run's live workers as seen from its worker process."""
    ctx = bw.WorkerContext.from_env()
    record = {
        "task": block.task_id,
        "pid": os.getpid(),
        "devices": ctx.devices,
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "live": {str(pid): cuda for pid, cuda in live_workers(marker).items()},
    }
    Path(out, f"{block.task_id}-{block.block_id}").write_text(json.dumps(record))


def snapshots(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.iterdir())]


@pytest.mark.timeout(180)
def test_processes_two_tasks_sharing_two_cpus_never_have_more_than_two_live_workers(tmp_path):
    out = tmp_path / "seen"
    out.mkdir()
    logs = tmp_path / "logs"
    record = partial(snapshot, str(out), str(logs))
    a = task_1d("a", 12, process=record, num_workers=2, requires={"cpu": 1})
    b = task_1d("b", 12, process=record, num_workers=2, requires={"cpu": 1})
    s = run([a, b], "processes", tmp_path, resources={"cpu": 2})
    assert s.is_success(), str(s)
    seen = snapshots(out)
    assert len(seen) == 24
    for r in seen:
        assert str(r["pid"]) in r["live"], r  # the snapshot sees its own worker
        assert len(r["live"]) <= 2, r
    assert {r["task"] for r in seen} == {"a", "b"}


@pytest.mark.timeout(180)
def test_processes_gpu_workers_see_their_own_devices_in_cuda_visible_devices(tmp_path):
    out = tmp_path / "seen"
    out.mkdir()
    logs = tmp_path / "logs"
    t = task_1d("predict", 16, process=partial(snapshot, str(out), str(logs)), num_workers=4, requires={"gpu": 1})
    cpu = task_1d("cpu", 4, process=partial(snapshot, str(out), str(logs)), num_workers=1, requires={"cpu": 1})
    s = run([t, cpu], "processes", tmp_path, devices={"gpu": ["3", "7"]}, resources={"cpu": 1})
    assert s.is_success(), str(s)
    seen = snapshots(out)
    assert len(seen) == 20
    for r in seen:
        if r["task"] == "cpu":  # no GPU of its own: none at all
            assert r["cuda"] == "" and r["devices"] == [], r
            continue
        assert r["cuda"] in ("3", "7") and r["devices"] == [r["cuda"]], r
        assert r["live"][str(r["pid"])] == r["cuda"], r
        held = [c for c in r["live"].values() if c]
        assert len(held) <= 2 and len(held) == len(set(held)), f"live workers share a device: {r}"
    # process_per_worker gets the same devices in its context.
    per_worker = tmp_path / "per_worker"
    per_worker.mkdir()
    t = task_1d("init", 8, process_per_worker=partial(record_devices, str(per_worker)), num_workers=2, requires={"gpu": 1})
    s = run(t, "processes", tmp_path, resources={"gpu": 2})
    assert s.is_success(), str(s)
    for p in per_worker.iterdir():
        r = json.loads(p.read_text())
        assert r["devices"] == r["env_devices"] == [r["cuda"]] and r["cuda"] in ("0", "1"), r


# --- threads per worker ------------------------------------------------------------------------

_BARRIER = threading.Barrier(4, timeout=WAIT)


def four_at_once(out, block):
    """Waits (at most WAIT) until four blocks of this worker process are in flight."""
    start = time.monotonic_ns()
    _BARRIER.wait()  # BrokenBarrierError (the block fails) unless 4 blocks run at once
    Path(out, str(block.block_id)).write_text(
        json.dumps({"pid": os.getpid(), "thread": threading.get_ident(), "start": start, "end": time.monotonic_ns()})
    )


@pytest.mark.timeout(180)
def test_processes_threads_per_worker_runs_four_blocks_at_once_in_one_worker(tmp_path):
    out = tmp_path / "blocks"
    out.mkdir()
    t = task_1d("t", 12, process=partial(four_at_once, str(out)), threads_per_worker=4, num_workers=1)
    s = run(t, "processes", tmp_path)
    assert s.is_success(), "\n".join(f.message for f in s.failures("t")) or str(s)
    records = [json.loads(p.read_text()) for p in out.iterdir()]
    assert len(records) == 12
    assert len({r["pid"] for r in records}) == 1  # one worker process ran them all
    assert len({r["thread"] for r in records}) == 4
    # From the records: four blocks were in flight together.
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    assert peak == 4


def count_setups(out, ctx):
    Path(out, f"{os.getpid()}-{threading.get_ident()}").touch()
    return lambda block: None


@pytest.mark.timeout(180)
def test_processes_per_worker_setup_runs_once_per_thread(tmp_path):
    out = tmp_path / "setups"
    out.mkdir()
    t = task_1d("t", 6, process_per_worker=partial(count_setups, str(out)), threads_per_worker=3, num_workers=1)
    s = run(t, "processes", tmp_path)
    assert s.is_success(), str(s)
    names = [p.name.split("-") for p in out.iterdir()]
    assert len({pid for pid, _ in names}) == 1 and len(names) == 3, names


@pytest.mark.timeout(60)
def test_threads_runner_ignores_threads_per_worker():
    calls = []
    t = task_1d("t", 6, process=calls.append, threads_per_worker=4)
    assert run_blockwise(t, progress=False).is_success() and len(calls) == 6


# --- idle workers leave ------------------------------------------------------------------------


def wait_for_file(path: Path) -> str:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)
    return path.read_text()


def wait_for_exit(pid: int) -> bool:
    """Whether process ``pid`` exits within WAIT (a pidfd turns readable when it does)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], WAIT)
        return bool(readable)
    finally:
        os.close(fd)


def upstream_block(out, block):
    if block.block_id == 1:
        # The downstream worker that ran block 0 has nothing ready until this block is done:
        # with idle_timeout it leaves, and this block waits for that.
        pid = int(wait_for_file(Path(out, "b-0")))
        if not wait_for_exit(pid):
            raise RuntimeError(f"the idle worker {pid} of task b never left")
        Path(out, "gone").write_text(str(pid))


def downstream_block(out, block):
    Path(out, f"b-{block.block_id}.tmp").write_text(str(os.getpid()))
    os.replace(Path(out, f"b-{block.block_id}.tmp"), Path(out, f"b-{block.block_id}"))


@pytest.mark.timeout(180)
def test_processes_an_idle_worker_leaves_after_idle_timeout_and_workers_come_back(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    a = Task("a", Roi((0,), (2,)), Roi((0,), (1,)), Roi((0,), (1,)), process=partial(upstream_block, str(out)),
             read_write_conflict=False, max_retries=0)
    b = Task("b", Roi((0,), (2,)), Roi((0,), (1,)), Roi((0,), (1,)), process=partial(downstream_block, str(out)),
             read_write_conflict=False, max_retries=0, upstream=a)
    s = run([b], "processes", tmp_path, idle_timeout=0.5)
    assert s.is_success(), "\n".join(f.message for f in s.failures("a")) or str(s)
    first, second = int((out / "b-0").read_text()), int((out / "b-1").read_text())
    assert int((out / "gone").read_text()) == first
    assert second != first  # a new worker came for the block that became ready


# --- worker functions --------------------------------------------------------------------------


def client_loop(out):
    """A worker function: its own ``Client`` loop; records each block with the worker's devices."""
    ctx = bw.WorkerContext.from_env()
    with bw.Client() as client:
        while True:
            with client.acquire_block() as block:
                if block is None:
                    break
                Path(out, str(block.block_id)).write_text(
                    json.dumps({"devices": ctx.devices, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")})
                )


@pytest.mark.timeout(120)
def test_processes_a_worker_functions_client_loop_succeeds_and_sees_its_devices(tmp_path):
    out = tmp_path / "blocks"
    out.mkdir()
    t = task_1d("w", 6, worker_function=partial(client_loop, str(out)), num_workers=2, requires={"gpu": 1},
                threads_per_worker=2)
    s = run(t, "processes", tmp_path, resources={"gpu": 2})
    assert s.is_success(), [f.message for f in s.failures("w")]
    records = [json.loads(p.read_text()) for p in out.iterdir()]
    assert len(records) == 6
    assert all(r["cuda"] in ("0", "1") and r["devices"] == [r["cuda"]] for r in records), records
