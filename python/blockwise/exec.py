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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from blockwise import _native
from blockwise._native import BlockwiseError, ConfigError, Launcher
from blockwise._run import _pickler, _write_handoff

__all__ = ["Executor", "ItemError"]

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
    """

    def __init__(self, native: Any, handoff: Path | None = None) -> None:
        self._native = native
        self._handoff = handoff
        self._finalizer = weakref.finalize(self, _shutdown, native, handoff)

    @classmethod
    def threads(cls, n: int) -> Executor:
        """``n`` worker threads in this process. Items and results are passed as they are (no
        pickling); each call takes the GIL, so this suits functions that release it (numpy,
        I/O, ``time.sleep``)."""
        if n < 1:
            raise ConfigError(f"an executor needs at least 1 thread, got {n}")
        return cls(_native._Executor.threads(n))

    @classmethod
    def processes(
        cls,
        n: int,
        *,
        launcher: Launcher | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        max_worker_restarts: int | None = None,
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

        In a worker process of a blockwise run (a block function making an executor), the
        executor runs on ``n`` threads instead, as the Rust executor does."""
        if n < 1:
            raise ConfigError(f"an executor needs at least 1 worker, got {n}")
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
            )
        except BaseException:
            handoff.unlink(missing_ok=True)
            raise
        return cls(native, handoff)

    @property
    def slots(self) -> int:
        """How many items run at once: the default window."""
        return self._native.slots

    def _start(self, fn: Callable[[Any], Any], iterable: Iterable[Any], window: int | None, ordered: bool) -> Any:
        if not callable(fn):
            raise TypeError(f"the executor's function must be callable, got {type(fn).__name__}")
        if window is not None and window < 1:
            raise ConfigError(f"window must be at least 1, got {window}")
        if not self._native.is_processes:
            return self._native._map(fn, iter(iterable), window, ordered)
        key = f"blockwise-python-fn-{next(_counter)}"
        self._native._scatter(key, _dumps(fn, "the function"))
        items = (_dumps(x, "an item") for x in iterable)
        return self._native._map(key, items, window, ordered)

    def _results(self, it: Any, indexed: bool) -> Iterator[Any]:
        decode = self._native.is_processes
        try:
            for index, ok, value in it:
                if not ok:
                    message, cause = value
                    raise ItemError(index, message) from cause
                v = _loads(value) if decode else value
                yield (index, v) if indexed else v
        finally:
            it.close()

    def map(self, fn: Callable[[T], R], iterable: Iterable[T]) -> list[R]:
        """``[fn(x) for x in iterable]``, run on the executor, in input order."""
        return list(self.bounded_map(fn, iterable))

    def bounded_map(self, fn: Callable[[T], R], iterable: Iterable[T], *, window: int | None = None) -> Iterator[R]:
        """A generator of ``fn(x)`` for each ``x`` of ``iterable`` (of any length, infinite
        included), in input order, with at most ``window`` items in flight (default
        :attr:`slots`). Memory stays constant: items are pulled from the input only as results
        are consumed; at most about ``2 × window`` items are pulled ahead of the results taken
        (``window`` in flight, up to ``window`` finished ones waiting behind a slow item).
        Closing the generator (or dropping it) lets the items in flight finish and starts no
        more."""
        return self._results(self._start(fn, iterable, window, True), indexed=False)

    def as_completed(self, fn: Callable[[T], R], iterable: Iterable[T]) -> Iterator[tuple[int, R]]:
        """A generator of ``(index, fn(x))`` pairs in the order the items finish, ``index``
        being the item's position in the input; :attr:`slots` items in flight. An item that
        raises ends the generator with :class:`ItemError` when its turn comes (items in flight
        finish, no further item starts)."""
        return self._results(self._start(fn, iterable, None, False), indexed=True)

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
