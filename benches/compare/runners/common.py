"""Shared pieces of the side-by-side runners: the workload, zarr I/O and checksums.

The workload (identical to `blockwise bench zarr`): for every 64^3 block of a 3D uint8 volume,
read the block plus `context` voxels on each side (zeros outside the volume), compute the 3x3x3
box mean `(sum of 27 voxels + 13) // 27`, and write the central block to an output array with the
input's chunks and codec.
"""
import hashlib
import json
import sys
import time

import numpy as np


def __getattr__(name):
    # zarr-python is imported on first use (`common.zarr`, `open_input`, ...), not at import:
    # it takes ~0.8 s, and blockwise's worker processes import this module for the filter
    # alone (their I/O is blockwise's own).
    if name == "zarr":
        import zarr

        return zarr
    raise AttributeError(name)


def box_mean(padded):
    """3x3x3 box mean of a uint8 region, cropped by one voxel per side."""
    a = padded.astype(np.int32)
    nz, ny, nx = a.shape
    s = np.zeros((nz - 2, ny - 2, nx - 2), dtype=np.int32)
    for dz in range(3):
        for dy in range(3):
            for dx in range(3):
                s += a[dz:dz + nz - 2, dy:dy + ny - 2, dx:dx + nx - 2]
    return ((s + 13) // 27).astype(np.uint8)


def box_mean_separable(padded):
    """The same box mean as `box_mean` (bit for bit), as three separable 3-tap sums in uint16
    (27 * 255 fits): 6 array additions instead of 26."""
    a = padded.astype(np.uint16)
    a = a[:-2] + a[1:-1] + a[2:]
    a = a[:, :-2] + a[:, 1:-1] + a[:, 2:]
    a = a[:, :, :-2] + a[:, :, 1:-1] + a[:, :, 2:]
    a += 13
    a //= 27
    return a.astype(np.uint8)


#: The filters the runners can use (`box_mean` is what compare.py's figures were measured with).
FILTERS = {"naive": box_mean, "separable": box_mean_separable}


def read_padded(arr, begin, end):
    """arr[begin:end] with zeros outside the array (begin/end are voxel index tuples)."""
    shape = tuple(e - b for b, e in zip(begin, end))
    out = np.zeros(shape, dtype=arr.dtype)
    lo = tuple(max(b, 0) for b in begin)
    hi = tuple(min(e, n) for e, n in zip(end, arr.shape))
    if all(l < h for l, h in zip(lo, hi)):
        src = tuple(slice(l, h) for l, h in zip(lo, hi))
        dst = tuple(slice(l - b, h - b) for l, h, b in zip(lo, hi, begin))
        out[dst] = arr[src]
    return out


def core_of(data, context):
    """The write region plus one voxel per side, from a read region with `context` voxels."""
    c = context
    return data[c - 1:data.shape[0] - c + 1, c - 1:data.shape[1] - c + 1, c - 1:data.shape[2] - c + 1]


def process_block(inp, out, write_begin, write_end, context, mean=box_mean):
    """The workload for one block given by voxel indices of its write region."""
    rb = tuple(b - context for b in write_begin)
    re_ = tuple(e + context for e in write_end)
    data = read_padded(inp, rb, re_)
    out[tuple(slice(b, e) for b, e in zip(write_begin, write_end))] = mean(core_of(data, context))


def open_input(path, dataset):
    import zarr

    return zarr.open_array(store=path, path=dataset, mode="r")


def create_output_like(inp, path, dataset):
    """An output array with the input's shape, chunks, dtype and codecs."""
    import zarr

    root = zarr.open_group(store=path, mode="a", zarr_format=inp.metadata.zarr_format)
    return root.create_array(name=dataset, shape=inp.shape, chunks=inp.chunks, dtype=inp.dtype,
                             fill_value=0, compressors=inp.compressors, overwrite=True)


def sha256_of(arr):
    return hashlib.sha256(np.ascontiguousarray(arr[...]).tobytes()).hexdigest()


def report(impl, workers, wall, nbytes, out):
    print(json.dumps({"impl": impl, "workers": workers, "wall_s": wall,
                      "mb_per_s": nbytes / 1e6 / wall, "output_sha256": sha256_of(out)}))
    sys.stdout.flush()


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.start
