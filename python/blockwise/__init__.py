"""blockwise: process huge n-dimensional volumes block by block, on a Rust engine.

The scheduler, retries, resumable run directories and the worker protocol are blockwise's Rust
crate; this package calls it. ``import blockwise.daisy as daisy`` runs daisy programs on it.
"""

from blockwise._native import (
    Block,
    BlockFailure,
    BlockStatus,
    BlockwiseError,
    CommandTemplate,
    ConfigError,
    Coordinate,
    JournalError,
    Launcher,
    Local,
    Lsf,
    Pbs,
    Roi,
    RunSummary,
    Scheduler,
    Sge,
    Slurm,
    StoreError,
    Task,
    TaskState,
    WorkerContext,
    WorkerStartupError,
    __version__,
    serve_worker,
)
from blockwise._client import Client
from blockwise._run import run_blockwise
from blockwise.arrays import Array, OmeAxis, OmeLevel, OmeZarr, ZarrArray

try:  # built with the `hdf5` feature only
    from blockwise.arrays import Hdf5Array
except ImportError:  # pragma: no cover - depends on the build
    pass

__all__ = [
    "Array",
    "Block",
    "BlockFailure",
    "BlockStatus",
    "BlockwiseError",
    "Client",
    "CommandTemplate",
    "ConfigError",
    "Coordinate",
    "JournalError",
    "Launcher",
    "Local",
    "Lsf",
    "OmeAxis",
    "OmeLevel",
    "OmeZarr",
    "Pbs",
    "Roi",
    "RunSummary",
    "Scheduler",
    "Sge",
    "Slurm",
    "StoreError",
    "Task",
    "TaskState",
    "WorkerContext",
    "WorkerStartupError",
    "ZarrArray",
    "__version__",
    "run_blockwise",
    "serve_worker",
]
