"""Where worker logs go (daisy's ``daisy.logging``).

The base directory becomes the engine's ``log_dir`` for runs on worker processes; the engine
writes each worker's output there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_LOG_BASEDIR: Path | None = Path("./daisy_logs")


def set_log_basedir(path: str | os.PathLike[str] | None) -> None:
    """Sets the directory worker logs go to (default ``./daisy_logs``). ``None`` is daisy's
    "no redirection"; the engine still needs a directory for worker logs and uses
    ``./daisy_logs`` then."""
    global _LOG_BASEDIR
    _LOG_BASEDIR = None if path is None else Path(path)


def get_log_basedir() -> Path | None:
    """The directory set by :func:`set_log_basedir`."""
    return _LOG_BASEDIR


def log_dir() -> Path:
    """The ``log_dir`` a run uses."""
    return _LOG_BASEDIR if _LOG_BASEDIR is not None else Path("./daisy_logs")


def get_worker_log_basename(worker_id: int, task_id: str | None = None) -> Path | None:
    """daisy's ``<basedir>/<task_id>/worker_<id>`` (None without a base directory)."""
    if _LOG_BASEDIR is None:
        return None
    base = _LOG_BASEDIR / task_id if task_id is not None else _LOG_BASEDIR
    return base / f"worker_{worker_id}"


def redirect_stdouterr(basename: str | os.PathLike[str], mode: str = "w") -> None:
    """Redirects this process's stdout and stderr (file descriptors 1 and 2, so subprocesses
    inherit it) to ``<basename>.out`` and ``<basename>.err``."""
    base = Path(basename)
    base.parent.mkdir(parents=True, exist_ok=True)
    for fd, suffix, stream in ((1, ".out", sys.stdout), (2, ".err", sys.stderr)):
        stream.flush()
        f = open(base.with_name(base.name + suffix), mode)  # noqa: SIM115 - kept open by dup2
        os.dup2(f.fileno(), fd)
        f.close()


_DONE_MARKER_BASEDIR: Path | None = None


def set_done_marker_basedir(path: str | os.PathLike[str] | None) -> None:
    """daisy 2.0: where done markers go by default; here the run directory (``run_dir``) of
    every run that does not name one. ``None`` turns it off."""
    global _DONE_MARKER_BASEDIR
    _DONE_MARKER_BASEDIR = None if path is None else Path(path)


def get_done_marker_basedir() -> Path | None:
    """The directory set by :func:`set_done_marker_basedir`."""
    return _DONE_MARKER_BASEDIR


#: daisy 2.0's newer names for the done-marker directory.
set_tracking_basedir = set_done_marker_basedir
get_tracking_basedir = get_done_marker_basedir

__all__ = [
    "get_done_marker_basedir",
    "get_log_basedir",
    "get_tracking_basedir",
    "get_worker_log_basename",
    "redirect_stdouterr",
    "set_done_marker_basedir",
    "set_log_basedir",
    "set_tracking_basedir",
]
