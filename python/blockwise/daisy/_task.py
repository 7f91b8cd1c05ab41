"""``daisy.Task`` and ``daisy.Pipeline``: daisy's task description, turned into blockwise tasks
when a run (or a ``Scheduler``) starts."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import blockwise
from blockwise._native import BlockStatus, ConfigError

from blockwise.daisy._block import Block

# ---------------------------------------------------------------------------------------------
# DAISY 2.0 FAILURE BUDGET: the single place where the drop-in sets it.
# daisy 2.0 abandons a task once its workers died `max_worker_restarts` times in a row
# (`Task(max_worker_restarts=10)` is daisy 2.0's default). The drop-in passes it to the engine
# as `Task(max_consecutive_failures=N)`.
DAISY2_MAX_WORKER_RESTARTS = 10
# daisy 2.0's per-block timeout when `timeout=None` ("None means the 600s default").
DAISY2_DEFAULT_TIMEOUT = 600.0
# ---------------------------------------------------------------------------------------------


def resource_units(units: Any, what: str) -> dict[str, int]:
    """daisy 2.0's ``{resource: units}`` (``Task(requires=...)``, ``run_blockwise(resources=...)``)
    checked: str names, int units (daisy 2.0 extracts them as integers)."""
    if units is None:
        return {}
    if not isinstance(units, Mapping):
        raise TypeError(f"{what} must be a dict of resource names to units, got {type(units).__name__}")
    out: dict[str, int] = {}
    for name, n in units.items():
        if not isinstance(name, str):
            raise TypeError(f"{what}: resource names are str, got {name!r}")
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"{what}: the units of resource {name!r} must be an int, got {n!r}")
        out[name] = int(n)
    return out


class _Requires(dict):
    """``task.requires``: daisy 2.0's property (the ``{resource: units}`` one worker needs) that
    can also be called as daisy 1.x's method ``task.requires()`` (the upstream tasks)."""

    __slots__ = ("_upstream",)

    def __init__(self, units: dict[str, int], upstream: list[Task]) -> None:
        super().__init__(units)
        self._upstream = upstream

    def __call__(self) -> list[Task]:
        return list(self._upstream)


def _arity(fn: Callable[..., Any]) -> int:
    """daisy's classification: the positional parameters, without ``self``."""
    try:
        args = inspect.getfullargspec(fn).args
    except TypeError:
        return 1
    return len([a for a in args if a != "self"])


class _BlockFn:
    """Runs a daisy process function on an engine block (picklable when the function is)."""

    def __init__(self, fn: Callable[[Block], Any]) -> None:
        self.fn = fn

    def __call__(self, native) -> None:
        block = Block._wrap(native)
        block.status = BlockStatus.PROCESSING
        self.fn(block)
        if native.status == BlockStatus.FAILED:
            raise RuntimeError(f"the process function set block {block.block_id} to FAILED")


class _SerialFn:
    """The serial mode's call: the status the function sets is what the block gets."""

    def __init__(self, fn: Callable[[Block], Any]) -> None:
        self.fn = fn

    def __call__(self, native) -> None:
        self.fn(Block._wrap(native))


class _CheckFn:
    """Runs a daisy check function on an engine block."""

    def __init__(self, fn: Callable[[Block], Any]) -> None:
        self.fn = fn

    def __call__(self, native) -> bool:
        return bool(self.fn(Block._wrap(native)))


class Task:
    """A daisy task: blocks of ``write_roi`` (reading ``read_roi``) tiling ``total_roi``.

    daisy 1.x's parameters, plus daisy 2.0's ``max_workers`` (an alias of ``num_workers``),
    ``max_worker_restarts``, ``done_marker_path`` / ``tracking_path`` and ``requires``
    (``{resource: units}`` one worker holds from the run's ``resources`` budget; units of 0
    or less mean nothing, as in daisy 2.0). A ``process_function`` without parameters is a
    worker function: it runs in each worker process and drives its own ``daisy.Client()``
    loop.
    """

    def __init__(
        self,
        task_id: str,
        total_roi,
        read_roi,
        write_roi,
        process_function: Callable[..., Any],
        check_function: Callable[[Block], Any] | None = None,
        read_write_conflict: bool = True,
        num_workers: int | None = None,
        max_retries: int = 2,
        fit: str = "valid",
        timeout: float | None = None,
        upstream_tasks: Iterable[Task] | None = None,
        init_callback_fn: Callable[..., Any] | None = None,
        *,
        max_workers: int | None = None,
        max_worker_restarts: int = DAISY2_MAX_WORKER_RESTARTS,
        done_marker_path: str | os.PathLike[str] | bool | None = None,
        tracking_path: str | os.PathLike[str] | bool | None = None,
        requires: dict[str, int] | None = None,
    ) -> None:
        if not isinstance(task_id, str):
            raise TypeError(f"task_id must be a str, got {type(task_id).__name__}")
        if num_workers is not None and max_workers is not None and num_workers != max_workers:
            raise TypeError("pass either max_workers (daisy 2.0) or num_workers (daisy 1.x), not both")
        self._requires = resource_units(requires, f"task {task_id!r}: requires")
        if tracking_path is not None and done_marker_path is not None:
            raise TypeError("pass either tracking_path or done_marker_path, not both")
        if not callable(process_function):
            raise TypeError(f"task {task_id!r}: process_function must be callable")
        if isinstance(check_function, tuple):
            raise ConfigError(
                f"task {task_id!r}: check_function must be one callable (daisy 1.x documents a "
                "(pre_check, post_check) tuple but never ran it)"
            )
        self.task_id = task_id
        self.total_roi = total_roi
        self.read_roi = read_roi
        self.write_roi = write_roi
        self.process_function = process_function
        self.check_function = check_function
        self.read_write_conflict = read_write_conflict
        self.max_workers = self.num_workers = (
            max_workers if max_workers is not None else num_workers if num_workers is not None else 1
        )
        self.max_retries = max_retries
        self.max_worker_restarts = max_worker_restarts
        self.fit = fit
        self.timeout = timeout
        self.upstream_tasks = list(upstream_tasks or [])
        self.init_callback_fn = init_callback_fn
        self.done_marker_path = tracking_path if tracking_path is not None else done_marker_path
        self._fresh = False
        self.is_worker_function = _arity(process_function) == 0
        # Validates the geometry and the arguments now, as daisy does.
        self._native = self._build([])
        self.total_write_roi = self._native.total_write_roi

    def _build(self, upstream: list[blockwise.Task], budget: bool = True) -> blockwise.Task:
        kw: dict[str, Any] = dict(
            fit=self.fit,
            read_write_conflict=self.read_write_conflict,
            num_workers=self.max_workers,
            max_retries=self.max_retries,
            timeout=self.timeout if self.timeout is not None else DAISY2_DEFAULT_TIMEOUT,
            upstream=upstream,
        )
        if budget:
            # Runs abandon a task whose blocks keep failing; daisy's pure Scheduler never does.
            kw["max_consecutive_failures"] = self.max_worker_restarts
        # daisy 2.0 skips requirements of 0 units or less; the engine's units are from 0.
        needs = {name: n for name, n in self._requires.items() if n > 0}
        if needs:
            kw["requires"] = needs
        if self.check_function is not None:
            kw["check"] = _CheckFn(self.check_function)
        if self.is_worker_function:
            kw["worker_function"] = self.process_function
        else:
            kw["process"] = _BlockFn(self.process_function)
        return blockwise.Task(self.task_id, self.total_roi, self.read_roi, self.write_roi, **kw)

    @property
    def num_blocks(self) -> int:
        """The number of blocks."""
        return self._native.num_blocks

    @property
    def requires(self) -> _Requires:
        """daisy 2.0: ``{resource: units}`` one worker of the task needs (a dict). Calling it,
        ``task.requires()``, is daisy 1.x's method: the upstream tasks given."""
        return _Requires(dict(self._requires), list(self.upstream_tasks))

    def reset(self) -> None:
        """daisy 2.0: forget what finished; the next run of this task starts afresh."""
        self._fresh = True

    def __add__(self, other: Task | Pipeline) -> Pipeline:
        return Pipeline.from_task(self) + other

    def __or__(self, other: Task | Pipeline) -> Pipeline:
        return Pipeline.from_task(self) | other

    def __repr__(self) -> str:
        return f"daisy.Task({self.task_id!r}, {self.num_blocks} blocks)"


class Pipeline:
    """daisy 2.0's task graph: ``a + b`` runs ``b`` after ``a`` (every output of ``a`` is
    upstream of every source of ``b``), ``a | b`` runs them side by side."""

    def __init__(self, tasks: Iterable[Task] | None = None, edges: Iterable[tuple[Task, Task]] | None = None) -> None:
        self._tasks: list[Task] = []
        self._edges: list[tuple[Task, Task]] = []
        for t in tasks or ():
            self._add_task(t)
        for u, d in edges or ():
            self._add_task(u)
            self._add_task(d)
            self._add_edge(u, d)

    def _add_task(self, t: Task) -> None:
        if not isinstance(t, Task):
            raise TypeError(f"a Pipeline holds daisy Tasks, got {type(t).__name__}")
        if not any(x is t for x in self._tasks):
            for x in self._tasks:
                if x.task_id == t.task_id:
                    raise ConfigError(f"two different tasks with id {t.task_id!r} in one pipeline")
            self._tasks.append(t)

    def _add_edge(self, u: Task, d: Task) -> None:
        if not any(a is u and b is d for a, b in self._edges):
            self._edges.append((u, d))

    @staticmethod
    def from_task(task: Task) -> Pipeline:
        """The task and, transitively, its ``upstream_tasks`` (with their edges)."""
        p = Pipeline()
        stack = [task]
        while stack:
            t = stack.pop()
            if any(x is t for x in p._tasks):
                continue
            p._add_task(t)
            for u in t.upstream_tasks:
                stack.append(u)
        for t in list(p._tasks):
            for u in t.upstream_tasks:
                p._add_edge(u, t)
        return p

    @property
    def tasks(self) -> list[Task]:
        """The tasks, in the order they were added."""
        return list(self._tasks)

    @property
    def edges(self) -> list[tuple[Task, Task]]:
        """``(upstream, downstream)`` pairs."""
        return list(self._edges)

    @property
    def sources(self) -> list[Task]:
        """The tasks without upstream tasks."""
        return [t for t in self._tasks if not any(d is t for _, d in self._edges)]

    @property
    def outputs(self) -> list[Task]:
        """The tasks without downstream tasks."""
        return [t for t in self._tasks if not any(u is t for u, _ in self._edges)]

    def reset(self) -> None:
        """Forgets what finished: the next run of the pipeline starts afresh."""
        for t in self._tasks:
            t.reset()

    def run_blockwise(
        self,
        *,
        multiprocessing: bool = True,
        resources: dict[str, int] | None = None,
        progress: Any = True,
        **kwargs: Any,
    ) -> bool:
        """``daisy.run_blockwise(self, ...)``."""
        from blockwise.daisy._run import run_blockwise

        return run_blockwise(
            self, multiprocessing=multiprocessing, resources=resources, progress=progress, **kwargs
        )

    def _merged(self, other: Task | Pipeline) -> tuple[Pipeline, Pipeline]:
        o = Pipeline.from_task(other) if isinstance(other, Task) else other
        if not isinstance(o, Pipeline):
            return NotImplemented  # type: ignore[return-value]
        p = Pipeline(self._tasks, self._edges)
        for t in o._tasks:
            p._add_task(t)
        for u, d in o._edges:
            p._add_edge(u, d)
        return p, o

    def __add__(self, other: Task | Pipeline) -> Pipeline:
        p, o = self._merged(other)
        for u in self.outputs:
            for d in o.sources:
                p._add_edge(u, d)
        return p

    def __or__(self, other: Task | Pipeline) -> Pipeline:
        return self._merged(other)[0]

    def __radd__(self, other: Task) -> Pipeline:
        return Pipeline.from_task(other) + self

    def __ror__(self, other: Task) -> Pipeline:
        return Pipeline.from_task(other) | self

    def __repr__(self) -> str:
        return f"daisy.Pipeline(tasks={[t.task_id for t in self._tasks]}, edges={[(u.task_id, d.task_id) for u, d in self._edges]})"


def to_pipeline(x: Pipeline | Task | Iterable[Task]) -> Pipeline:
    """A Pipeline from a Pipeline, a Task or daisy 1.x's list of tasks."""
    if isinstance(x, Pipeline):
        return x
    if isinstance(x, Task):
        return Pipeline.from_task(x)
    if isinstance(x, (list, tuple)):
        p = Pipeline()
        for t in x:
            p = p | Pipeline.from_task(t)
        return p
    raise TypeError(f"expected a Pipeline, a Task or a list of Tasks, got {type(x).__name__}")


def to_native(p: Pipeline, budget: bool = True) -> list[blockwise.Task]:
    """The pipeline's tasks as engine tasks (upstream tasks first), wired by its edges; with
    ``budget``, with daisy 2.0's abandonment as the engine's failure budget."""
    built: dict[int, blockwise.Task] = {}
    order: list[blockwise.Task] = []
    remaining = list(p.tasks)
    while remaining:
        ready = [t for t in remaining if all(id(u) in built for u, d in p.edges if d is t)]
        if not ready:
            raise ConfigError(
                "the pipeline's tasks depend on each other in a cycle: "
                + ", ".join(t.task_id for t in remaining)
            )
        for t in ready:
            native = t._build([built[id(u)] for u, d in p.edges if d is t], budget)
            built[id(t)] = native
            order.append(native)
            remaining.remove(t)
    return order


__all__ = ["Pipeline", "Task"]
