"""The worker process of a process run: ``python -m blockwise._worker <tasks file>``.

It restores the driver's ``sys.path``, ``sys.argv`` and working directory, imports the driver's main script
as ``__mp_main__`` (its ``if __name__ == "__main__":`` block does not run), loads the run's
tasks from the file the driver wrote, and serves its task's blocks through the engine (or calls
the task's worker function, which runs its own ``Client`` loop). It exits with 0 when the
scheduler has no more blocks for it, and 1 with the error on stderr (the worker's log, which
the scheduler reports) if it cannot serve.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import pickle
import sys
import traceback
from pathlib import Path


def _import_main(path: str) -> None:
    # An explicit loader: the main script may lack a .py suffix (e.g. bin/pytest).
    loader = importlib.machinery.SourceFileLoader("__mp_main__", path)
    spec = importlib.util.spec_from_file_location("__mp_main__", path, loader=loader)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the driver's main script {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["__mp_main__"] = module
    sys.modules["__main__"] = module
    spec.loader.exec_module(module)


def _find(tasks, task_id):
    stack = list(tasks)
    while stack:
        t = stack.pop()
        if t.task_id == task_id:
            return t
        stack.extend(t.upstream)
    return None


def load_handoff(path: str | os.PathLike[str]) -> object:
    """Reads what the driver wrote with ``_run._write_handoff``: checks the file and its
    folder are private, restores the driver's ``sys.path``, ``sys.argv`` and working
    directory, imports its main script as ``__mp_main__``, and unpickles the object."""
    from blockwise._run import check_private

    path = Path(path)
    check_private(path.parent, directory=True)
    check_private(path, directory=False)
    with open(path, "rb") as f:
        header = pickle.load(f)
        payload = pickle.load(f)
    if header.get("version") != 1:
        raise ValueError(f"blockwise worker: {path} has an unknown format")
    sys.path[:] = header["sys_path"]
    sys.argv[:] = header.get("argv", sys.argv)
    os.chdir(header["cwd"])
    if header.get("main"):
        _import_main(header["main"])
    return pickle.loads(payload)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m blockwise._worker <tasks file>", file=sys.stderr)
        return 2
    tasks = load_handoff(argv[1])

    from blockwise import _native

    ctx = _native.WorkerContext.from_env()
    if ctx is None:
        print("blockwise worker: not started by a process runner (no BLOCKWISE_CONTEXT)", file=sys.stderr)
        return 1
    task = _find(tasks, ctx.task_id)
    if task is not None and task.worker_function is not None:
        task.worker_function()
        return 0
    _native.serve_worker(tasks)
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv)
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)
