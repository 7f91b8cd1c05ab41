"""Runs the workload with the blockwise Python package: a numpy process function, blockwise's
own zarr arrays (`blockwise.ZarrArray`, the Rust store) for reading and writing, and either
runner.

usage: blockwise_run.py INPUT DATASET OUTPUT WORKERS CONTEXT (threads|processes) [FILTER]
(FILTER: naive or separable (default), see common.FILTERS)

The task is the one `blockwise bench zarr` builds: write ROI = one input chunk, read ROI = the
write ROI grown by CONTEXT, total ROI = the volume grown by CONTEXT, fit "shrink", no
read-write conflicts. The arrays are opened in the workers (`process_per_worker`), so nothing
but the function travels to worker processes; reads outside the volume are zeros
(`read_with_fill(roi, 0)`, as in the Rust workload).

The arrays are `blockwise.ZarrArray` (`python/blockwise/arrays.pyi`): `open_cached(path,
cache_bytes, *, dataset)` for the input, `create_like(path, other, *, dataset, overwrite)` and
`open(path, "r+", *, dataset)` for the output, `read_with_fill(roi, 0)` and
`write(roi, data)`. Like the CLI, the input is read through a cache of decoded chunks (one per
process, shared by its worker threads, of the CLI's size), so each chunk is decoded about once
although 27 blocks read it.
"""
import functools
import sys
import threading
from pathlib import Path

import blockwise
import common

#: The arrays this process opened, by (path, dataset, role): the threads runner's workers
#: share them.
_ARRAYS = {}
_LOCK = threading.Lock()


def _cache_bytes(shape, chunk):
    """The CLI's chunk cache: about three planes of chunks, between 64 MiB and 1 GiB."""
    plane = 1
    for s, c in zip(shape[1:], chunk[1:]):
        plane *= -(-s // c)
    voxels = 1
    for c in chunk:
        voxels *= c
    return min(max(3 * plane * voxels, 64 << 20), 1 << 30)


def _zarr_array():
    za = getattr(blockwise, "ZarrArray", None)
    if za is None:
        sys.exit("blockwise_run: this blockwise package has no ZarrArray (rebuild it from python/)")
    return za


def _open_input(path, dataset, cache_bytes):
    return _zarr_array().open_cached(path, cache_bytes, dataset=dataset)


def _open_output(path, dataset):
    return _zarr_array().open(path, "r+", dataset=dataset)


def _create_output(path, dataset, like):
    return _zarr_array().create_like(path, like, dataset=dataset, overwrite=True)


def _shared(key, make):
    with _LOCK:
        if key not in _ARRAYS:
            _ARRAYS[key] = make()
        return _ARRAYS[key]


def per_worker(inp_path, dataset, out_path, context, filter_name, cache_bytes, ctx):
    """`process_per_worker` (with the first six arguments bound): the arrays of this process
    (opened on first use), and the block function."""
    inp = _shared((inp_path, dataset, "in"), lambda: _open_input(inp_path, dataset, cache_bytes))
    out = _shared((out_path, dataset, "out"), lambda: _open_output(out_path, dataset))
    mean = common.FILTERS[filter_name]

    def process(block):
        data = inp.read_with_fill(block.read_roi, 0)
        out.write(block.write_roi, mean(common.core_of(data, context)))

    return process


def main():
    inp_path, dataset, out_path, workers, context, runner = sys.argv[1:7]
    workers, context = int(workers), int(context)
    filter_name = sys.argv[7] if len(sys.argv) > 7 else "separable"
    # Through the importable module, so that worker processes get the function by reference
    # (cloudpickle copies functions of `__main__` by value, with the lock they use).
    import blockwise_run
    zinp = common.open_input(inp_path, dataset)
    shape, chunk = tuple(zinp.shape), tuple(zinp.chunks)
    out = _create_output(out_path, dataset, _zarr_array().open(inp_path, dataset=dataset))
    write = blockwise.Roi((0,) * 3, chunk)
    kwargs = dict(
        process_per_worker=functools.partial(blockwise_run.per_worker, inp_path, dataset, out_path,
                                             context, filter_name, _cache_bytes(shape, chunk)),
        fit="shrink",
        read_write_conflict=False,
        num_workers=workers,
    )
    total = blockwise.Roi((-context,) * 3, tuple(n + 2 * context for n in shape))
    task = blockwise.Task("box_mean", total, write.grow(context, context), write, writes=[out], **kwargs)
    logs = Path(out_path).resolve().parent / "blockwise_logs"
    with common.Timer() as t:
        summary = blockwise.run_blockwise(task, runner=runner, progress=False, print_summary=False,
                                          log_dir=logs)
    if not summary.is_success():
        for f in summary.failures("box_mean")[:3]:
            print(f, file=sys.stderr)
        sys.exit(f"blockwise ({runner}): the run failed: {summary}")
    common.report(f"blockwise python ({runner})", workers, t.wall, int(zinp.nbytes),
                  common.open_input(out_path, dataset))


if __name__ == "__main__":
    main()
