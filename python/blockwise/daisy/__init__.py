"""daisy on blockwise: ``import blockwise.daisy as daisy`` runs daisy programs on blockwise's
Rust engine.

daisy 1.x's API with daisy 2.0's additions (``Pipeline``, ``max_workers``,
``done_marker_path``, ``JsonProgressObserver``); where the two differ this follows 2.0, and
where daisy is wrong blockwise's behaviour stands (see "Differences from daisy" in the
package's README). Scheduling, retries, done markers and the worker protocol are the engine's.
"""

from blockwise._native import BlockStatus

from blockwise.daisy import logging
from blockwise.daisy._block import Block, TaskState
from blockwise.daisy._client import Client, Context
from blockwise.daisy._geometry import Coordinate, Roi
from blockwise.daisy._run import JsonProgressObserver, SerialServer, Server, run_blockwise
from blockwise.daisy._scheduler import BlockwiseDependencyGraph, Scheduler
from blockwise.daisy._task import Pipeline, Task
from blockwise.daisy.logging import (
    get_done_marker_basedir,
    get_tracking_basedir,
    get_worker_log_basename,
    redirect_stdouterr,
    set_done_marker_basedir,
    set_tracking_basedir,
)

__all__ = [
    "Block",
    "BlockStatus",
    "BlockwiseDependencyGraph",
    "Client",
    "Context",
    "Coordinate",
    "JsonProgressObserver",
    "Pipeline",
    "Roi",
    "Scheduler",
    "SerialServer",
    "Server",
    "Task",
    "TaskState",
    "get_done_marker_basedir",
    "get_tracking_basedir",
    "get_worker_log_basename",
    "logging",
    "redirect_stdouterr",
    "run_blockwise",
    "set_done_marker_basedir",
    "set_tracking_basedir",
]
