"""Ready-made operations on blockwise arrays, run by the Rust engine.

``connected_components`` labels the connected components of a thresholded zarr volume block
by block (three blockwise tasks and a merge step; see the Rust crate's
``blockwise::ops::ConnectedComponents``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Literal

from blockwise import _native
from blockwise._native import ComponentsResult, ConfigError, ZarrArray

__all__ = ["ComponentsResult", "connected_components"]


def connected_components(
    input: ZarrArray,
    output: ZarrArray,
    *,
    threshold: float | None = None,
    block_shape: Sequence[int] | None = None,
    connectivity: Literal["faces", "edges", "vertices", 1, 2, 3] = "faces",
    num_workers: int = 1,
    run_dir: str | os.PathLike[str] | None = None,
    fresh: bool = False,
    runner: Literal["threads", "processes"] = "threads",
    name: str = "cc",
    work_dir: str | os.PathLike[str] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    progress: bool | Literal["auto"] = "auto",
) -> ComponentsResult:
    """Labels the connected components of ``input``'s foreground into ``output``.

    * ``input``: a ``ZarrArray`` of any dtype; foreground is ``value > threshold`` (default:
      ``value > 0``).
    * ``output``: a ``uint64`` ``ZarrArray`` with ``input``'s ROI and voxel size. Every voxel
      of a component gets the component's id (ids are unique but not consecutive); background
      is 0. The partition is the one a whole-volume labelling (``scipy.ndimage.label`` with
      the same connectivity) gives.
    * ``block_shape``: world units, a multiple of the output's chunks (default: one chunk).
    * ``connectivity``: ``"faces"`` (6 neighbours in 3-D), ``"edges"`` (18) or ``"vertices"``
      (26); or scipy's rank 1, 2, 3.
    * ``runner``: ``"threads"`` or ``"processes"`` (``num_workers`` per task); ``run_dir``
      makes the runs resumable; ``work_dir`` holds the merge table (default: inside the
      output's directory).

    Returns a ``ComponentsResult`` (``is_success()``, the runs' summaries ``label`` and
    ``relabel``, the counts ``pairs`` and ``merged``). Failed blocks are not exceptions: check
    ``is_success()``.
    """
    if runner not in ("threads", "processes"):
        raise ConfigError(f"runner {runner!r}: use 'threads' or 'processes'")
    if progress not in (True, False, "auto"):
        raise ConfigError(f"progress {progress!r}: use True, False or 'auto'")
    processes = runner == "processes"
    return _native._connected_components(
        input,
        output,
        threshold=threshold,
        connectivity=connectivity,
        block_shape=None if block_shape is None else tuple(block_shape),
        num_workers=num_workers,
        name=name,
        work_dir=None if work_dir is None else os.fspath(work_dir),
        run_dir=None if run_dir is None else os.fspath(run_dir),
        fresh=fresh,
        progress=None if progress == "auto" else progress,
        worker_python=sys.executable if processes else None,
        log_dir=os.fspath(log_dir if log_dir is not None else "blockwise_logs") if processes else None,
    )
