"""``run_blockwise``: the runners, and handing Python functions to worker processes."""

from __future__ import annotations

import os
import pickle
import secrets
import stat
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Literal

from blockwise import _native
from blockwise._native import ConfigError, Launcher, RunSummary, Task, TaskState

#: The format of the file that hands a run's tasks to its worker processes.
SPEC_VERSION = 1


def _all_tasks(tasks: list[Task]) -> list[Task]:
    """The tasks and every upstream task reachable from them, each once."""
    seen: dict[str, Task] = {}
    stack = list(tasks)
    while stack:
        t = stack.pop()
        if t.task_id in seen:
            continue
        seen[t.task_id] = t
        stack.extend(t.upstream)
    return list(seen.values())


def _pickler():
    try:
        import cloudpickle
    except ImportError:
        return pickle, "pickle"
    return cloudpickle, "cloudpickle"


def _main_path() -> str | None:
    """The driver's main script, which workers import (as ``__mp_main__``, without running
    its ``if __name__ == "__main__":`` block) so that functions pickled by reference from it
    load there."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path and os.path.isfile(path) and getattr(main, "__spec__", None) is None:
        return os.path.abspath(path)
    return None


def check_private(path: Path, *, directory: bool) -> None:
    """Refuses a path that is a symlink, not ours, or open to others: the tasks file is
    unpickled by workers, so nobody else may replace it or the folder it is in."""
    st = os.lstat(path)
    kind = "folder" if directory else "file"
    if stat.S_ISLNK(st.st_mode) or (stat.S_ISDIR(st.st_mode) != directory):
        raise ConfigError(f"{path} is not a plain {kind}; refusing to use it for the run's tasks")
    if st.st_uid != os.getuid():
        raise ConfigError(f"{path} belongs to uid {st.st_uid}, not to this user; refusing to use it")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):o}); refusing to use it"
        )


def _private_folder(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    check_private(folder, directory=True)
    return folder


def _write_handoff(obj: object, log_dir: Path, what: str, import_main: bool = True) -> Path:
    """Writes ``obj`` (pickled, with cloudpickle when installed) for worker processes, with
    what they need to unpickle it (this interpreter's ``sys.path``, ``sys.argv``, working
    directory and main script), to a file only this user can read in a private folder of
    ``log_dir``; ``_worker.load_handoff`` reads it. ``what`` names the object in the error if
    it cannot be pickled."""
    dumper, how = _pickler()
    # Without cloudpickle, functions of the main script pickle by reference: workers need it.
    import_main = import_main or how != "cloudpickle"
    try:
        payload = dumper.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        hint = "" if how == "cloudpickle" else " (install cloudpickle to send closures, lambdas and functions defined in notebooks)"
        raise ConfigError(
            f"{what} cannot be sent to worker processes: {type(e).__name__}: {e}{hint}"
        ) from e
    header = {
        "version": SPEC_VERSION,
        "sys_path": list(sys.path),
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "main": _main_path() if import_main else None,
        "pickler": how,
    }
    folder = _private_folder(log_dir / ".blockwise-tasks")
    path = folder / f"{os.getpid()}-{secrets.token_hex(8)}.pickle"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        pickle.dump(header, f, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _write_spec(tasks: list[Task], log_dir: Path, import_main: bool = True) -> Path:
    """Writes the run's tasks, functions included, to a file only this user can read."""
    return _write_handoff(tasks, log_dir, "the tasks' functions", import_main)


def run_blockwise(
    tasks: Task | Iterable[Task],
    *,
    runner: Literal["threads", "processes"] = "threads",
    launcher: Launcher | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    fresh: bool = False,
    progress: bool | Literal["auto"] = "auto",
    log_dir: str | os.PathLike[str] | None = None,
    worker_lifetime: float | timedelta | None = None,
    max_worker_restarts: int | None = None,
    print_summary: bool | None = None,
    max_output_bytes: int | None = None,
    prefetch: int | None = None,
    import_main: bool = True,
    on_progress: Callable[[dict[str, TaskState]], None] | None = None,
    resources: Mapping[str, int] | None = None,
    devices: Mapping[str, Sequence[str | int]] | None = None,
    idle_timeout: float | timedelta | None = None,
) -> RunSummary:
    """Runs the tasks (and every upstream task reachable from them) and returns the summary.

    * ``runner="threads"``: blocks run on the engine's worker threads (``num_workers`` per
      task), each call taking the GIL; best when the function spends its time in code that
      releases it (numpy, zarr I/O, torch).
    * ``runner="processes"``: each worker is a fresh interpreter (``python -m
      blockwise._worker``) on this machine, or a cluster job with ``launcher=Slurm(...)``
      (``Lsf``, ``Pbs``, ``Sge``, ``CommandTemplate``; a launcher implies processes). The
      tasks' functions are pickled (with cloudpickle when installed) into a file readable
      only by you in ``log_dir`` (default ``./blockwise_logs``), which workers on other nodes
      read through the shared file system. Workers start with this interpreter's
      ``sys.path``, ``sys.argv`` and working directory, and import the main script as
      ``__mp_main__`` (like multiprocessing's spawn): keep the script's driver code under
      ``if __name__ == "__main__":``.
    * ``run_dir``: done-markers; a rerun skips what finished (``fresh=True`` starts over).
    * ``import_main=False``: workers do not import the main script (its functions are
      pickled by value with cloudpickle; without cloudpickle they are imported regardless).
    * ``on_progress``: called with ``{task_id: TaskState}`` about every 0.1 s while counters
      change, and once at the end, on the scheduler's thread (with the GIL; keep it short);
      an exception it raises is printed, not raised.
    * ``progress``: progress bars (``"auto"``: when stdout is a terminal); the execution
      summary is printed when they are shown, unless ``print_summary`` says otherwise.
    * ``resources={"gpu": 2, "cpu": 8}``: the run's resource budget, shared by the workers
      of all tasks: each worker holds its task's ``requires`` from its start to its exit, and
      the live workers never hold more than the budget (idle workers give their units up to
      tasks that have work). ``devices={"gpu": ["0", "3"]}`` names a resource's units (device
      ids, handed out lowest first; ``gpu`` has ``"0"``.. by default): each worker gets its
      own, in ``WorkerContext.devices`` and, in worker processes, ``CUDA_VISIBLE_DEVICES``. A
      requirement the budget can never meet raises ``ConfigError`` before any block runs;
      without a budget requirements are ignored.
    * ``idle_timeout`` (worker processes): a worker whose task has had no ready block for this
      long (default 60 s; 0: at once) leaves, and its job ends; workers start again when blocks become
      ready. A finished task's workers leave at once.

    The run happens with the GIL released: other Python threads go on. Ctrl-C stops the run
    (cancelling every worker job) and raises ``KeyboardInterrupt``. Failed blocks are not
    exceptions: check ``summary.is_success()``.
    """
    task_list = [tasks] if isinstance(tasks, Task) else list(tasks)
    if runner not in ("threads", "processes"):
        raise ConfigError(f"runner {runner!r}: use 'threads' or 'processes'")
    if progress not in (True, False, "auto"):
        raise ConfigError(f"progress {progress!r}: use True, False or 'auto'")
    processes = runner == "processes" or launcher is not None
    everything = _all_tasks(task_list)
    if not processes:
        for t in everything:
            if t.worker_function is not None:
                raise ConfigError(
                    f'task {t.task_id!r} has a worker_function, which runs only on worker processes: use runner="processes"'
                )
    common = dict(
        run_dir=None if run_dir is None else os.fspath(run_dir),
        fresh=fresh,
        progress=None if progress == "auto" else progress,
        print_summary=print_summary,
        max_worker_restarts=max_worker_restarts,
        max_output_bytes=max_output_bytes,
        prefetch=prefetch,
        on_progress=on_progress,
        resources=resources,
        devices=devices,
    )
    if not processes:
        return _native._run(task_list, **common)
    logs = Path(log_dir if log_dir is not None else "blockwise_logs")
    spec = _write_spec(everything, logs, import_main)
    try:
        return _native._run(
            task_list,
            processes=True,
            launcher=launcher,
            worker_command=(sys.executable, ["-m", "blockwise._worker", str(spec.resolve())]),
            log_dir=os.fspath(logs),
            worker_lifetime=worker_lifetime,
            idle_timeout=idle_timeout,
            **common,
        )
    finally:
        try:
            spec.unlink()
        except FileNotFoundError:
            pass
