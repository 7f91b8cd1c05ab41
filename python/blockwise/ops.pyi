import os
from collections.abc import Sequence
from typing import Literal

from blockwise import RunSummary
from blockwise.arrays import ZarrArray

class ComponentsResult:
    """What ``connected_components`` did."""

    def is_success(self) -> bool: ...
    def __bool__(self) -> bool: ...
    @property
    def label(self) -> RunSummary: ...
    @property
    def relabel(self) -> RunSummary | None: ...
    @property
    def pairs(self) -> int: ...
    @property
    def merged(self) -> int: ...

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
) -> ComponentsResult: ...

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
) -> RunSummary: ...
