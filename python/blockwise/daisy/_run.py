"""``daisy.run_blockwise``, ``Server``, ``SerialServer`` and ``JsonProgressObserver``: daisy's
ways to run tasks, on blockwise's runners."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import blockwise
from blockwise import _native
from blockwise._native import ConfigError

from blockwise.daisy import logging as daisy_logging
from blockwise.daisy._block import RunStates, TaskState, states
from blockwise.daisy._client import Context
from blockwise.daisy._task import Pipeline, Task, _SerialFn, resource_units, to_native, to_pipeline


class JsonProgressObserver:
    """daisy 2.0's line-delimited JSON observer: ``run_blockwise(..., progress=obs)`` writes one
    JSON object per task at the start of the run (``"event": "start"``), whenever counters
    changed (``"progress"``, at most every 0.1 s, and once when the last block is done) and at
    the end (``"finish"``), with the task's counters. ``path=`` writes a file, ``stream=`` a file-like object, neither
    stdout."""

    def __init__(self, path: str | os.PathLike[str] | None = None, stream: Any = None) -> None:
        if path is not None and stream is not None:
            raise ValueError("specify path OR stream, not both")
        if path is not None:
            self._sink = open(path, "w", buffering=1)  # noqa: SIM115 - closed in on_finish
            self._owns_sink = True
        else:
            self._sink = stream if stream is not None else sys.stdout
            self._owns_sink = False

    def _emit(self, event: str, task_states: dict[str, TaskState]) -> None:
        t = time.time()
        for task_id, s in task_states.items():
            line = {
                "t": t,
                "event": event,
                "task": task_id,
                "total": int(s.total_block_count),
                "ready": int(s.ready_count),
                "processing": int(s.processing_count),
                "completed": int(s.completed_count),
                "skipped": int(s.skipped_count),
                "failed": int(s.failed_count),
                "orphaned": int(s.orphaned_count),
                "restarts": 0,
                "failures": 0,
            }
            self._sink.write(json.dumps(line) + "\n")
        self._sink.flush()

    def on_start(self, task_states: dict[str, TaskState]) -> None:
        """Called once before the run."""
        self._emit("start", task_states)

    def on_progress(self, task_states: dict[str, TaskState]) -> None:
        """Called when counters changed (at most every 0.1 s)."""
        self._emit("progress", task_states)

    def on_finish(self, task_states: dict[str, TaskState]) -> None:
        """Called once after the run."""
        self._emit("finish", task_states)
        if self._owns_sink:
            self._sink.close()


def _run_dir(pipeline: Pipeline) -> Path | None:
    """daisy 2.0's done markers, as the run's directory."""
    paths = set()
    for t in pipeline.tasks:
        p = t.done_marker_path
        if p is True:
            raise ConfigError(f"task {t.task_id!r}: done_marker_path=True is not valid; use None, False or a path")
        if p is None:
            p = daisy_logging.get_done_marker_basedir()
        if p not in (None, False):
            paths.add(Path(p))
    if len(paths) > 1:
        raise ConfigError(
            "the tasks name different done_marker_paths "
            f"({', '.join(sorted(map(str, paths)))}); blockwise keeps one run directory per run: "
            "give them the same path"
        )
    return paths.pop() if paths else None


def _serial(pipeline: Pipeline) -> RunStates:
    for t in pipeline.tasks:
        if t.is_worker_function:
            raise ConfigError(
                f"task {t.task_id!r}: its process function takes no block (a worker function, "
                "which runs its own daisy.Client() loop in worker processes); the serial mode "
                "needs a function of one block: use multiprocessing=True"
            )
    natives = to_native(pipeline)
    fns = {t.task_id: _SerialFn(t.process_function) for t in pipeline.tasks}
    return states(_native._run_serial(natives, fns))


def _processes(
    pipeline: Pipeline, progress: Any, resources: dict[str, int] | None = None
) -> tuple[blockwise.RunSummary, dict[str, TaskState]]:
    for t in pipeline.tasks:
        if t.init_callback_fn is not None:
            t.init_callback_fn(Context(task_id=t.task_id, worker_id=0))
    natives = to_native(pipeline)
    observer = None if progress in (True, False, None) else progress
    if observer is not None and hasattr(observer, "on_start"):
        observer.on_start(states(blockwise.Scheduler(natives).task_states()))
    fresh = any(t._fresh for t in pipeline.tasks)
    on_progress = None
    if observer is not None and hasattr(observer, "on_progress"):
        def on_progress(task_states):
            observer.on_progress(states(task_states.items()))
    summary = blockwise.run_blockwise(
        natives,
        runner="processes",
        run_dir=_run_dir(pipeline),
        fresh=fresh,
        progress=bool(progress) if observer is None else False,
        log_dir=daisy_logging.log_dir(),
        import_main=False,
        on_progress=on_progress,
        resources=resources or None,
    )
    for t in pipeline.tasks:
        t._fresh = False
    result = states(summary.tasks.items())
    if observer is not None and hasattr(observer, "on_finish"):
        observer.on_finish(result)
    return summary, result


def run_blockwise(
    tasks: Pipeline | Task | Iterable[Task],
    multiprocessing: bool = True,
    progress: Any = True,
    resources: dict[str, int] | None = None,
    return_states: bool = False,
) -> bool | RunStates | dict[str, TaskState]:
    """Runs a ``Pipeline``, a ``Task`` or daisy 1.x's list of tasks (with their
    ``upstream_tasks``).

    ``multiprocessing=True``: on worker processes (``max_workers`` per task); returns True only
    if every block completed or was skipped (daisy 2.0). ``multiprocessing=False``: serially in
    this process, in the scheduler's order; a block's exception propagates at once, and the
    result is a ``RunStates``: daisy 1.x's ``{task_id: TaskState}`` that is true exactly when
    daisy 2.0's bool is. ``progress``: a bool, or an
    observer such as ``JsonProgressObserver``. ``return_states=True`` returns the states in
    both modes.

    ``resources={"gpu": 2, "cpu": 8}`` (daisy 2.0): the budget the live workers of all tasks
    share, each holding its task's ``requires``; a requirement the budget cannot meet raises
    ``blockwise.ConfigError`` before any block runs. Workers of a task that requires ``gpu``
    get their own device ids in ``CUDA_VISIBLE_DEVICES``. Without a budget requirements are
    ignored; the serial mode ignores both (as daisy 2.0's).
    """
    budget = resource_units(resources, "resources")
    pipeline = to_pipeline(tasks if isinstance(tasks, (Pipeline, Task)) else list(tasks))
    if not multiprocessing:
        return _serial(pipeline)
    summary, result = _processes(pipeline, progress, budget)
    return result if return_states else summary.is_success()


class Server:
    """daisy's server: ``Server().run_blockwise(tasks)`` runs on worker processes and returns
    ``{task_id: TaskState}``."""

    def __init__(self, stop_event: Any = None, host: str | None = None) -> None:
        self.stop_event = stop_event
        self.host = host
        self.last_summary: blockwise.RunSummary | None = None

    def run_blockwise(
        self, tasks: Pipeline | Task | Iterable[Task], resources: dict[str, int] | None = None, progress: Any = True
    ) -> dict[str, TaskState]:
        """Runs the tasks (and their upstream tasks) within the ``resources`` budget (as
        ``daisy.run_blockwise``); the run's summary is ``last_summary``."""
        budget = resource_units(resources, "resources")
        pipeline = to_pipeline(tasks if isinstance(tasks, (Pipeline, Task)) else list(tasks))
        self.last_summary, result = _processes(pipeline, progress, budget)
        return result


class SerialServer:
    """daisy 1.x's in-process server: ``SerialServer().run_blockwise(tasks)`` runs serially and
    returns ``{task_id: TaskState}``."""

    def run_blockwise(self, tasks: Pipeline | Task | Iterable[Task]) -> dict[str, TaskState]:
        """Runs the tasks serially (see ``run_blockwise(..., multiprocessing=False)``)."""
        return _serial(to_pipeline(tasks if isinstance(tasks, (Pipeline, Task)) else list(tasks)))


__all__ = ["JsonProgressObserver", "SerialServer", "Server", "run_blockwise"]
