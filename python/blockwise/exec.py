"""``blockwise.exec``: map a Python function over items on threads or worker processes.

The executor is the Rust crate's ``blockwise::exec::Executor``: ordering, the bounded window,
retries of items whose worker died, worker restarts and cancellation all happen there.

    from blockwise.exec import Executor

    with Executor.processes(4) as ex:
        squares = ex.map(lambda x: x * x, range(10))
"""

from __future__ import annotations

import base64
import itertools
import os
import pickle
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from blockwise import _native
from blockwise._native import BlockwiseError, ConfigError, Launcher
from blockwise._run import _pickler, _write_handoff

__all__ = ["Executor", "ItemError", "ItemTimeoutError"]

T = TypeVar("T")
R = TypeVar("R")

_counter = itertools.count(1)


class ItemError(BlockwiseError):
    """An item's function raised (or its worker process kept dying).

    ``index`` is the item's position in the input (from 0); ``message`` is the original
    traceback text (from the worker process on processes). On threads the original exception
    is also the ``__cause__``.
    """

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"item {index} failed: {message}")
        self.index = index
        self.message = message


class ItemTimeoutError(ItemError):
    """An item ran longer than its time limit (``timeout=`` of the executor or of the map).

    ``timeout`` is the limit in seconds. On processes the worker running the item was killed
    and replaced; on threads the item's thread was abandoned (it runs on until the function
    returns; its result is dropped) and a fresh thread took its place.
    """

    def __init__(self, index: int, timeout: float) -> None:
        super().__init__(index, f"timed out after {timeout:g} s")
        self.timeout = timeout


class _Default:
    """The executor's own time limit (the default of a map's ``timeout=``)."""

    def __repr__(self) -> str:
        return "<the executor's timeout>"


_EXECUTOR_TIMEOUT: Any = _Default()


def _seconds(value: float | timedelta | None, what: str) -> float | None:
    """A time limit in seconds (None: no limit); ``ConfigError`` unless positive."""
    if value is None:
        return None
    secs = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(secs, bool) or not isinstance(secs, (int, float)):
        raise TypeError(f"{what}: expected seconds (a number), a datetime.timedelta or None, got {type(value).__name__}")
    if not (secs > 0 and secs != float("inf")):
        raise ConfigError(f"{what} must be a positive duration, got {secs} s")
    return float(secs)


def _dumps(obj: object, what: str) -> str:
    dumper, how = _pickler()
    try:
        data = dumper.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        hint = "" if how == "cloudpickle" else " (install cloudpickle to send closures and lambdas)"
        raise ConfigError(f"{what} cannot be sent to worker processes: {type(e).__name__}: {e}{hint}") from e
    return base64.b64encode(data).decode("ascii")


def _loads(text: str) -> Any:
    return pickle.loads(base64.b64decode(text))


def _shutdown(native: Any, handoff: Path | None) -> None:
    native.shutdown()
    if handoff is not None:
        try:
            handoff.unlink()
        except FileNotFoundError:
            pass


class Executor:
    """Runs a function over items: ``Executor.threads(n)`` or ``Executor.processes(n)``.

    Use it as a context manager (``with Executor.threads(4) as ex:``), or call
    :meth:`shutdown`; it is also shut down when garbage-collected or at exit.

    Errors: an item whose function raises makes :meth:`map` and :meth:`bounded_map` raise
    :class:`ItemError` at that item's place in the output; results before it are delivered,
    items already running finish (their results are dropped) and no further item starts.

    Time limits: with ``timeout=`` (seconds or a ``timedelta``; of the executor, or of one map,
    which overrides it; ``None`` is no limit), an item running longer fails with
    :class:`ItemTimeoutError` (an :class:`ItemError`), raised like any item error. The clock
    starts when the item starts running, not when it is queued.
    """

    def __init__(self, native: Any, handoff: Path | None = None, timeout: float | None = None) -> None:
        self._native = native
        self._handoff = handoff
        self._timeout = timeout
        self._finalizer = weakref.finalize(self, _shutdown, native, handoff)

    @classmethod
    def threads(cls, n: int, *, timeout: float | timedelta | None = None) -> Executor:
        """``n`` worker threads in this process. Items and results are passed as they are (no
        pickling); each call takes the GIL, so this suits functions that release it (numpy,
        I/O, ``time.sleep``).

        ``timeout``: each item's time limit (default none). Python cannot stop a thread: an
        item past its limit fails with :class:`ItemTimeoutError` at once, its thread is
        abandoned (it runs on until the function returns, its result dropped) and a fresh
        thread keeps the pool at ``n``. Items that can hang for ever belong on processes."""
        if n < 1:
            raise ConfigError(f"an executor needs at least 1 thread, got {n}")
        limit = _seconds(timeout, "timeout")
        return cls(_native._Executor.threads(n), timeout=limit)

    @classmethod
    def processes(
        cls,
        n: int,
        *,
        launcher: Launcher | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        max_worker_restarts: int | None = None,
        timeout: float | timedelta | None = None,
        idle_timeout: float | timedelta | None = None,
        requires: Mapping[str, int] | None = None,
        resources: Mapping[str, int] | None = None,
        devices: Mapping[str, Sequence[str | int]] | None = None,
    ) -> Executor:
        """``n`` worker processes (``python -m blockwise._exec_worker``) on this machine, or
        cluster jobs with ``launcher=Slurm(...)`` etc. Functions, items and results are pickled
        (functions with cloudpickle when installed, so closures and lambdas work); workers start
        with this interpreter's ``sys.path`` and working directory and import the main script
        as ``__mp_main__`` (keep driver code under ``if __name__ == "__main__":``). Logs go to
        ``<log_dir>/executor-<name>/worker_<id>.out/.err`` (default ``./blockwise_logs``).

        A worker that dies while running an item is replaced and the item retried on another
        (3 attempts in all, then the item fails with ItemError); workers failing before
        finishing any item are replaced ``max_worker_restarts`` times in a row (default 3),
        after which every waiting item fails.

        ``timeout``: each item's time limit (default none); the worker running an item past
        it is killed and replaced, and the item fails with :class:`ItemTimeoutError` (it is not
        retried). ``idle_timeout``: a worker that has had no item to run for this long (default
        60 s; 0: at once) leaves and its job ends; workers start again when items are submitted.

        ``requires={"gpu": 1}`` with ``resources={"gpu": 2}`` (and ``devices=``, as
        ``run_blockwise``): the pool's budget; it runs as many of the ``n`` workers as the
        budget fits, each with its own GPU ids in ``CUDA_VISIBLE_DEVICES``. A requirement the
        budget cannot meet raises ``ConfigError`` here.

        In a worker process of a blockwise run (a block function making an executor), the
        executor runs on ``n`` threads instead, as the Rust executor does."""
        if n < 1:
            raise ConfigError(f"an executor needs at least 1 worker, got {n}")
        limit = _seconds(timeout, "timeout")
        if idle_timeout is not None and not isinstance(idle_timeout, (int, float, timedelta)):
            raise TypeError(f"idle_timeout: expected seconds (a number), a datetime.timedelta or None, got {type(idle_timeout).__name__}")
        name = f"python-{os.getpid()}-{next(_counter)}"
        logs = Path(log_dir if log_dir is not None else "blockwise_logs")
        handoff = _write_handoff({"name": name}, logs, "the executor")
        try:
            native = _native._Executor.processes(
                n,
                name,
                (sys.executable, ["-m", "blockwise._exec_worker", str(handoff.resolve())]),
                launcher=launcher,
                log_dir=os.fspath(logs),
                max_worker_restarts=max_worker_restarts,
                idle_timeout=idle_timeout,
                requires=requires,
                resources=resources,
                devices=devices,
            )
        except BaseException:
            handoff.unlink(missing_ok=True)
            raise
        return cls(native, handoff, timeout=limit)

    @property
    def slots(self) -> int:
        """How many items run at once: the default window."""
        return self._native.slots

    @property
    def timeout(self) -> float | None:
        """Each item's time limit in seconds (None: no limit); a map's ``timeout=`` overrides
        it."""
        return self._timeout

    def _start(
        self, fn: Callable[[Any], Any], iterable: Iterable[Any], window: int | None, ordered: bool, timeout: Any
    ) -> Any:
        if not callable(fn):
            raise TypeError(f"the executor's function must be callable, got {type(fn).__name__}")
        if window is not None and window < 1:
            raise ConfigError(f"window must be at least 1, got {window}")
        limit = self._timeout if timeout is _EXECUTOR_TIMEOUT else _seconds(timeout, "timeout")
        if not self._native.is_processes:
            return self._native._map(fn, iter(iterable), window, ordered, limit)
        key = f"blockwise-python-fn-{next(_counter)}"
        self._native._scatter(key, _dumps(fn, "the function"))
        items = (_dumps(x, "an item") for x in iterable)
        return self._native._map(key, items, window, ordered, limit)

    def _results(self, it: Any, indexed: bool) -> Iterator[Any]:
        decode = self._native.is_processes
        try:
            for index, ok, value in it:
                if not ok:
                    message, cause, timed_out = value
                    if timed_out is not None:
                        raise ItemTimeoutError(index, timed_out)
                    raise ItemError(index, message) from cause
                v = _loads(value) if decode else value
                yield (index, v) if indexed else v
        finally:
            it.close()

    def map(self, fn: Callable[[T], R], iterable: Iterable[T], *, timeout: float | timedelta | None = _EXECUTOR_TIMEOUT) -> list[R]:
        """``[fn(x) for x in iterable]``, run on the executor, in input order. ``timeout``:
        each item's time limit for this map (default: the executor's; None: no limit)."""
        return list(self.bounded_map(fn, iterable, timeout=timeout))

    def bounded_map(
        self,
        fn: Callable[[T], R],
        iterable: Iterable[T],
        *,
        window: int | None = None,
        timeout: float | timedelta | None = _EXECUTOR_TIMEOUT,
    ) -> Iterator[R]:
        """A generator of ``fn(x)`` for each ``x`` of ``iterable`` (of any length, infinite
        included), in input order, with at most ``window`` items in flight (default
        :attr:`slots`). Memory stays constant: items are pulled from the input only as results
        are consumed; at most about ``2 × window`` items are pulled ahead of the results taken
        (``window`` in flight, up to ``window`` finished ones waiting behind a slow item).
        Closing the generator (or dropping it) lets the items in flight finish and starts no
        more. ``timeout``: as for :meth:`map`."""
        return self._results(self._start(fn, iterable, window, True, timeout), indexed=False)

    def as_completed(
        self, fn: Callable[[T], R], iterable: Iterable[T], *, timeout: float | timedelta | None = _EXECUTOR_TIMEOUT
    ) -> Iterator[tuple[int, R]]:
        """A generator of ``(index, fn(x))`` pairs in the order the items finish, ``index``
        being the item's position in the input; :attr:`slots` items in flight. An item that
        raises ends the generator with :class:`ItemError` when its turn comes (items in flight
        finish, no further item starts). ``timeout``: as for :meth:`map`."""
        return self._results(self._start(fn, iterable, None, False, timeout), indexed=True)

    def shutdown(self) -> None:
        """Lets submitted items finish, then stops the threads or worker processes."""
        self._finalizer()

    def cancel(self) -> None:
        """Stops a process executor now: waiting and running items fail and every worker job
        is cancelled (threads cannot be interrupted: running items finish)."""
        self._native._cancel("cancelled")

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.cancel()
        self.shutdown()
