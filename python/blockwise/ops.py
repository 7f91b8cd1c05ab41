"""Ready-made operations on blockwise arrays, run by the Rust engine.

``connected_components`` labels the connected components of a thresholded zarr volume block
by block (three blockwise tasks and a merge step; see the Rust crate's
``blockwise::ops::ConnectedComponents``); ``pyramid`` builds a resolution pyramid of a zarr
array, one chained task per level (``blockwise::ops::Pyramid``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Literal

from blockwise import _native
from blockwise._native import ComponentsResult, ConfigError, RunSummary, ZarrArray

__all__ = ["ComponentsResult", "connected_components", "pyramid"]

_METHODS = ("mean", "mode", "max", "min", "first_non_zero")


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


def pyramid(
    source: ZarrArray,
    output: str | os.PathLike[str],
    *,
    levels: int | Literal["until_one_chunk"] = 4,
    factor: int | Sequence[int] = 2,
    method: Literal["mean", "mode", "max", "min", "first_non_zero"] = "mean",
    block_shape: Sequence[int] | None = None,
    num_workers: int = 1,
    run_dir: str | os.PathLike[str] | None = None,
    fresh: bool = False,
    name: str = "pyramid",
    progress: bool | Literal["auto"] = "auto",
) -> RunSummary:
    """Builds a resolution pyramid of ``source`` in the zarr group ``output``.

    Level ``s0`` is a copy of ``source`` (its chunks copied as stored bytes), level ``sk`` is
    level ``s(k-1)`` reduced by ``factor`` (one number, or one per axis such as ``(1, 2, 2)``)
    with ``method``: ``"mean"`` (integers: rounded half to even, as ``np.round(w.mean())``),
    ``"mode"`` (ties: the smallest value), ``"max"``, ``"min"``, ``"first_non_zero"`` (C
    order). An axis of ``n`` voxels becomes ``n // f``. ``levels`` counts ``s0``; or
    ``"until_one_chunk"``. One task per level (``<name>-s<k>``), on at most ``num_workers`` worker
    threads in all; a level's blocks start as soon as the blocks they read are written.
    ``block_shape`` is in voxels, a multiple of the chunk shape (default: one chunk).
    ``run_dir`` makes the run resumable.

    Returns the run's ``RunSummary``; failed blocks are not exceptions: check
    ``is_success()``.
    """
    if method not in _METHODS:
        raise ConfigError(f"method {method!r}: use one of {', '.join(_METHODS)}")
    if progress not in (True, False, "auto"):
        raise ConfigError(f"progress {progress!r}: use True, False or 'auto'")
    if levels == "until_one_chunk":
        n_levels = None
    elif isinstance(levels, int) and not isinstance(levels, bool):
        n_levels = levels
    else:
        raise ConfigError(f"levels {levels!r}: a number of levels or 'until_one_chunk'")
    factors = (factor,) if isinstance(factor, int) else tuple(factor)
    return _native._pyramid(
        source,
        os.fspath(output),
        levels=n_levels,
        factor=factors,
        method=method,
        block_shape=None if block_shape is None else tuple(block_shape),
        num_workers=num_workers,
        name=name,
        run_dir=None if run_dir is None else os.fspath(run_dir),
        fresh=fresh,
        progress=None if progress == "auto" else progress,
    )
