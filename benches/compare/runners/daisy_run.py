"""Runs the workload with daisy (1.x, or 2.0 through its 1.x-compatible API) and zarr-python.

usage: daisy_run.py INPUT DATASET OUTPUT WORKERS CONTEXT LABEL [FILTER]
(FILTER: naive (default) or separable, see common.FILTERS)
"""
import sys

from importlib.metadata import version

import daisy
from funlib.geometry import Roi

import common

BLOCK = 64


def main():
    inp_path, dataset, out_path, workers, context, label = sys.argv[1:7]
    workers, context = int(workers), int(context)
    mean = common.FILTERS[sys.argv[7] if len(sys.argv) > 7 else "naive"]
    inp = common.open_input(inp_path, dataset)
    out = common.create_output_like(inp, out_path, dataset)
    shape = inp.shape

    def process(block):
        b = tuple(int(x) for x in block.write_roi.begin)
        e = tuple(min(int(x), n) for x, n in zip(block.write_roi.end, shape))
        i = common.open_input(inp_path, dataset)
        o = common.zarr.open_array(store=out_path, path=dataset, mode="r+")
        common.process_block(i, o, b, e, context, mean)

    total = Roi((-context,) * 3, tuple(n + 2 * context for n in shape))
    task = daisy.Task(
        "box_mean",
        total_roi=total,
        read_roi=Roi((-context,) * 3, (BLOCK + 2 * context,) * 3),
        write_roi=Roi((0,) * 3, (BLOCK,) * 3),
        process_function=process,
        read_write_conflict=False,
        fit="shrink",
        num_workers=workers,
    )
    # daisy 2.0 can leave out its progress bar and summary, as the blockwise runs do.
    quiet = {"progress": False, "summary": False} if int(version("daisy").split(".")[0]) >= 2 else {}
    with common.Timer() as t:
        ok = daisy.run_blockwise([task], **quiet)
    if ok is False:
        sys.exit(f"{label}: run_blockwise reported failure")
    common.report(label, workers, t.wall, int(inp.nbytes), out)


if __name__ == "__main__":
    main()
