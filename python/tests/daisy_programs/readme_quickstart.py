"""daisy's README quick start (daisy 1.0-1.2.2), map then reduce.

Adapted only where the README's code no longer runs on any daisy: ``daisy.Array`` (removed in
daisy 1.0) is a small ROI-indexed wrapper of a zarr array, ``zarr.TempStore`` (zarr 2) is a
directory given as argv[1], and the reduce step's ``multiprocessing.Array`` (shared only by
fork) is a zarr array. The import is ``import blockwise.daisy as daisy``.
"""

import sys

import numpy as np
import zarr

import blockwise.daisy as daisy

out = sys.argv[1]


class Array:
    """What the README used ``daisy.Array`` for: a 1-D array indexed by ROI."""

    def __init__(self, data, roi, voxel_size):
        self.data = data
        self.roi = roi

    def _slices(self, roi):
        return tuple(slice(b - o, e - o) for b, e, o in zip(roi.begin, roi.end, self.roi.begin))

    def __getitem__(self, roi):
        return self

    def to_ndarray(self, roi=None):
        return np.asarray(self.data[self._slices(roi or self.roi)])

    def __setitem__(self, roi, value):
        self.data[self._slices(roi)] = value


class _View:
    def __init__(self, array, roi):
        self.array, self.roi = array, roi

    def to_ndarray(self):
        return self.array.to_ndarray(self.roi)


Array.__getitem__ = lambda self, roi: _View(self, roi)

shape = 409600
block_shape = 1024 * 16

# input array is wrapped in daisy.Array for easy of Roi indexing
a = Array(np.arange(shape, dtype=np.int64), roi=daisy.Roi((0,), shape), voxel_size=(1,))

# to parallelize across processes, we need persistent read/write arrays
# we'll use zarr here to do do that
b = zarr.open_array(f"{out}/b.zarr", mode="w", shape=(shape,), chunks=(block_shape,), dtype=np.int64)
# output array is wrapped in daisy.Array for easy of Roi indexing
b = Array(b, roi=daisy.Roi((0,), shape), voxel_size=(1,))


# same process function as previously, but with additional code
# to read and write data to persistent arrays
def process_fn_daisy(block):
    a_sub = a[block.read_roi].to_ndarray()
    b_sub = np.empty_like(a_sub)
    with np.nditer([a_sub, b_sub], op_flags=[["readonly"], ["readwrite"]]) as it:
        with it:
            for x, y in it:
                y[...] = x**2

    b[block.write_roi] = b_sub


total_roi = daisy.Roi((0,), shape)  # total ROI to map process over
block_roi = daisy.Roi((0,), (block_shape,))  # block ROI for parallel processing

# creating a Daisy task, note that we do not specify how each
# worker should read/write to input/output arrays
task = daisy.Task(
    total_roi=total_roi,
    read_roi=block_roi,
    write_roi=block_roi,
    process_function=process_fn_daisy,
    num_workers=2,
    task_id="square",
)

print("map:", daisy.run_blockwise([task]))

reduce_shape = shape / 16

c = zarr.open_array(f"{out}/c.zarr", mode="w", shape=(16,), chunks=(1,), dtype=np.int64)


def process_fn_sum_reduce(block):
    b_sub = b[block.write_roi].to_ndarray()
    s = np.sum(b_sub)
    # compute c idx based on block offset and shape
    idx = (block.write_roi.offset / block.write_roi.shape)[0]
    c[idx] = s


total_roi = daisy.Roi((0,), shape)  # total ROI to map process over
block_roi = daisy.Roi((0,), reduce_shape)  # block ROI for parallel processing

task1 = daisy.Task(
    total_roi=total_roi,
    read_roi=block_roi,
    write_roi=block_roi,
    process_function=process_fn_sum_reduce,
    num_workers=2,
    task_id="sum_reduce",
)

print("reduce:", daisy.run_blockwise([task1]))
print(c[:])
