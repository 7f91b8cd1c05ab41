import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from blockwise import Coordinate, Roi

_RoiLike = Roi | Any  # a Roi, a funlib Roi or an (offset, shape) pair
_Path = str | os.PathLike[str]
_DType = npt.DTypeLike
_Compression = Literal["none", "zstd", "gzip", "blosc-zstd", "blosc-lz4"] | None

class Array:
    """An array in world units: the base class of ``ZarrArray`` and ``Hdf5Array``."""

    @property
    def roi(self) -> Roi: ...
    @property
    def voxel_size(self) -> Coordinate: ...
    @property
    def offset(self) -> Coordinate: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def dims(self) -> int: ...
    @property
    def axis_names(self) -> list[str]: ...
    @property
    def units(self) -> list[str]: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def chunk_shape(self) -> tuple[int, ...]: ...
    @property
    def path(self) -> Path: ...
    @property
    def dataset(self) -> str: ...
    @property
    def writable(self) -> bool: ...
    @property
    def array_id(self) -> str | None: ...
    def read(self, roi: _RoiLike) -> np.ndarray: ...
    def read_with_fill(self, roi: _RoiLike, fill: int | float) -> np.ndarray: ...
    def read_padded(
        self, roi: _RoiLike, pad: Literal["reflect", "nearest", "constant"] = "reflect", value: int | float | None = None
    ) -> np.ndarray: ...
    def read_roi(
        self, roi: _RoiLike, pad: Literal["reflect", "nearest", "constant"] | None = None, value: int | float | None = None
    ) -> tuple[np.ndarray, Roi]: ...
    def write(self, roi: _RoiLike, data: np.ndarray) -> None: ...
    def __getitem__(self, roi: _RoiLike) -> np.ndarray: ...
    def __setitem__(self, roi: _RoiLike, data: np.ndarray) -> None: ...

class ZarrArray(Array):
    @staticmethod
    def open(path: _Path, mode: Literal["r", "r+", "a", "w"] = "r", *, dataset: str | None = None) -> ZarrArray: ...
    @staticmethod
    def open_ome(path: _Path, level: int = 0, mode: Literal["r", "r+", "a", "w"] = "r") -> ZarrArray: ...
    @staticmethod
    def open_cached(path: _Path, cache_bytes: int = ..., *, dataset: str | None = None) -> ZarrArray: ...
    @staticmethod
    def create(
        path: _Path,
        roi: _RoiLike,
        voxel_size: tuple[int, ...] | Coordinate,
        dtype: _DType,
        chunk_shape: tuple[int, ...] | list[int],
        *,
        dataset: str | None = None,
        axis_names: list[str] | None = None,
        units: list[str] | None = None,
        fill_value: float = 0.0,
        compression: _Compression = "blosc-zstd",
        compression_level: int | None = None,
        zarr_format: Literal[2, 3] = 3,
        shard_shape: tuple[int, ...] | list[int] | None = None,
        overwrite: bool = False,
    ) -> ZarrArray: ...
    @staticmethod
    def prepare(
        path: _Path,
        roi: _RoiLike,
        voxel_size: tuple[int, ...] | Coordinate,
        dtype: _DType,
        chunk_shape: tuple[int, ...] | list[int],
        *,
        dataset: str | None = None,
        axis_names: list[str] | None = None,
        units: list[str] | None = None,
        fill_value: float = 0.0,
        compression: _Compression = "blosc-zstd",
        compression_level: int | None = None,
        zarr_format: Literal[2, 3] = 3,
        shard_shape: tuple[int, ...] | list[int] | None = None,
        overwrite: bool = False,
    ) -> ZarrArray: ...
    @staticmethod
    def create_like(path: _Path, other: ZarrArray, *, dataset: str | None = None, overwrite: bool = False) -> ZarrArray: ...

class OmeAxis:
    """One axis of an OME-Zarr image: its name, type and unit."""

    def __init__(self, name: str, type: str | None = None, unit: str | None = None) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str | None: ...
    @property
    def unit(self) -> str | None: ...

class OmeLevel:
    """One resolution level of an OME-Zarr image."""

    @property
    def path(self) -> str: ...
    @property
    def voxel_size(self) -> Coordinate: ...
    @property
    def offset(self) -> Coordinate: ...

_AxisLike = OmeAxis | tuple[str] | tuple[str, str | None] | tuple[str, str | None, str | None]

class OmeZarr:
    """An OME-Zarr multiscale image (NGFF 0.4 or 0.5); ``image[k]`` opens level ``k``."""

    @staticmethod
    def open(path: _Path) -> OmeZarr: ...
    @staticmethod
    def create(
        path: _Path,
        axes: Sequence[_AxisLike],
        levels: Sequence[tuple[str, _RoiLike, tuple[int, ...] | Coordinate]],
        dtype: _DType,
        chunk_shape: tuple[int, ...] | list[int],
        *,
        name: str | None = None,
        fill_value: float = 0.0,
        compression: _Compression = "blosc-zstd",
        compression_level: int | None = None,
        zarr_format: Literal[2, 3] = 3,
        shard_shape: tuple[int, ...] | list[int] | None = None,
        overwrite: bool = False,
    ) -> OmeZarr: ...
    @property
    def path(self) -> Path: ...
    @property
    def version(self) -> Literal["0.4", "0.5"]: ...
    @property
    def pixel_centres(self) -> bool: ...
    @property
    def name(self) -> str | None: ...
    @property
    def axes(self) -> list[OmeAxis]: ...
    @property
    def levels(self) -> list[OmeLevel]: ...
    def level(self, k: int, mode: Literal["r", "r+", "a", "w"] = "r") -> ZarrArray: ...
    def space_roi(self, k: int) -> Roi: ...
    def expand_roi(self, k: int, roi: _RoiLike) -> Roi: ...
    def labels(self) -> list[str]: ...
    def label(self, name: str) -> OmeZarr: ...
    def __len__(self) -> int: ...
    def __getitem__(self, k: int) -> ZarrArray: ...
    def __iter__(self) -> Iterator[ZarrArray]: ...

class Hdf5Array(Array):
    """Only in builds with the ``hdf5`` feature."""

    @staticmethod
    def open(path: _Path, mode: Literal["r", "r+", "a", "w"] = "r", *, dataset: str | None = None) -> Hdf5Array: ...
    @staticmethod
    def create(
        path: _Path,
        roi: _RoiLike,
        voxel_size: tuple[int, ...] | Coordinate,
        dtype: _DType,
        chunk_shape: tuple[int, ...] | list[int],
        *,
        dataset: str | None = None,
        axis_names: list[str] | None = None,
        units: list[str] | None = None,
        fill_value: float = 0.0,
        compression: Literal["none", "gzip"] | None = "gzip",
        compression_level: int | None = None,
        overwrite: bool = False,
    ) -> Hdf5Array: ...
    @staticmethod
    def prepare(
        path: _Path,
        roi: _RoiLike,
        voxel_size: tuple[int, ...] | Coordinate,
        dtype: _DType,
        chunk_shape: tuple[int, ...] | list[int],
        *,
        dataset: str | None = None,
        axis_names: list[str] | None = None,
        units: list[str] | None = None,
        fill_value: float = 0.0,
        compression: Literal["none", "gzip"] | None = "gzip",
        compression_level: int | None = None,
        overwrite: bool = False,
    ) -> Hdf5Array: ...
    def flush(self) -> None: ...
