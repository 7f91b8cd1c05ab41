"""Runs the workload with the blockwise Python package: a numpy process function, blockwise's
own zarr arrays (`blockwise.ZarrArray`, the Rust store) for reading and writing, and either
runner.

usage: blockwise_run.py INPUT DATASET OUTPUT WORKERS CONTEXT (threads|processes) [FILTER]
(FILTER: naive or separable (default), see common.FILTERS)

The task is the one `blockwise bench zarr` builds: write ROI = one input chunk, read ROI = the
write ROI grown by CONTEXT, total ROI = the volume grown by CONTEXT, fit "shrink", no
read-write conflicts. Each worker opens the arrays once (`process_per_worker`), so nothing but
the function travels to worker processes; reads outside the volume are zero-filled here (the
read is clipped to the array's ROI and padded with numpy), as `read_with_fill(roi, 0)` does in
the Rust workload.

The ZarrArray calls (`open`, `create_like`, `read`, `write`, `roi`) are written against the
interface announced for the Python package; `_arrays` below is the one place to adjust if the
merged signatures differ.
"""
import os
import sys

import numpy as np

import blockwise
import common

#: How the output array was made (reported in the JSON line).
CREATED_WITH = None


def _open(store, dataset):
    """`blockwise.ZarrArray.open` of the array `dataset` in `store`."""
    za = blockwise.ZarrArray
    try:
        return za.open(store, dataset)
    except TypeError:
        return za.open(os.path.join(store, dataset))


def _arrays(inp_path, dataset, out_path):
    """Opens the input and creates the output (the input's shape, chunks, dtype and codecs)."""
    global CREATED_WITH
    if not hasattr(blockwise, "ZarrArray"):
        sys.exit("blockwise_run: this blockwise package has no ZarrArray (the arrays API is not merged yet)")
    inp = _open(inp_path, dataset)
    za = blockwise.ZarrArray
    if hasattr(za, "create_like"):
        for call in (lambda: za.create_like(out_path, dataset, inp, overwrite=True),
                     lambda: za.create_like(os.path.join(out_path, dataset), inp, overwrite=True)):
            try:
                out = call()
                CREATED_WITH = "blockwise.ZarrArray.create_like"
                return inp, out
            except TypeError:
                pass
    # Fallback: make it with zarr-python (not timed either way), then open it with blockwise.
    common.create_output_like(common.open_input(inp_path, dataset), out_path, dataset)
    CREATED_WITH = "zarr-python"
    return inp, _open(out_path, dataset)


def _bounds(arr, shape):
    roi = getattr(arr, "roi", None)
    return roi if isinstance(roi, blockwise.Roi) else blockwise.Roi((0,) * len(shape), shape)


def make_process(inp_path, dataset, out_path, context, mean):
    """`process_per_worker`: opens the arrays in the worker, returns the block function."""

    def per_worker(ctx):
        inp = _open(inp_path, dataset)
        out = _open(out_path, dataset)
        shape = tuple(common.open_input(inp_path, dataset).shape)
        bounds = _bounds(inp, shape)

        def process(block):
            r = block.read_roi
            data = np.zeros(tuple(r.shape), dtype=np.uint8)
            inner = r.intersect(bounds)
            if not inner.empty:
                dst = tuple(slice(b - o, e - o) for b, e, o in zip(inner.begin, inner.end, r.begin))
                data[dst] = inp.read(inner)
            out.write(block.write_roi, mean(common.core_of(data, context)))

        return process

    return per_worker


def main():
    inp_path, dataset, out_path, workers, context, runner = sys.argv[1:7]
    workers, context = int(workers), int(context)
    mean = common.FILTERS[sys.argv[7] if len(sys.argv) > 7 else "separable"]
    zinp = common.open_input(inp_path, dataset)
    shape, chunk = tuple(zinp.shape), tuple(zinp.chunks)
    _, out = _arrays(inp_path, dataset, out_path)
    write = blockwise.Roi((0,) * 3, chunk)
    kwargs = dict(
        process_per_worker=make_process(inp_path, dataset, out_path, context, mean),
        fit="shrink",
        read_write_conflict=False,
        num_workers=workers,
    )
    try:
        task = blockwise.Task("box_mean", blockwise.Roi((-context,) * 3, tuple(n + 2 * context for n in shape)),
                              write.grow(context, context), write, writes=[out], **kwargs)
    except TypeError:  # writes= does not take this array type (yet)
        task = blockwise.Task("box_mean", blockwise.Roi((-context,) * 3, tuple(n + 2 * context for n in shape)),
                              write.grow(context, context), write, **kwargs)
    with common.Timer() as t:
        summary = blockwise.run_blockwise(task, runner=runner, progress=False, print_summary=False,
                                          log_dir=os.path.join(os.path.dirname(os.path.abspath(out_path)), "blockwise_logs"))
    if not summary.is_success():
        for f in summary.failures("box_mean")[:3]:
            print(f, file=sys.stderr)
        sys.exit(f"blockwise ({runner}): the run failed: {summary}")
    common.report(f"blockwise python ({runner})", workers, t.wall, int(zinp.nbytes),
                  common.open_input(out_path, dataset))


if __name__ == "__main__":
    main()
