"""Runs the workload with dask's map_overlap, on the threaded scheduler or a LocalCluster.

usage: dask_run.py INPUT DATASET OUTPUT WORKERS CONTEXT (threads|local) [FILTER]
(FILTER: naive (default) or separable, see common.FILTERS)
"""
import sys

import dask
import dask.array as da
import numpy as np

import common


def mean_same_shape(block, mean=common.box_mean):
    out = np.zeros_like(block)
    out[1:-1, 1:-1, 1:-1] = mean(block)
    return out


def main():
    inp_path, dataset, out_path, workers, context, mode = sys.argv[1:7]
    workers, context = int(workers), int(context)
    mean = common.FILTERS[sys.argv[7] if len(sys.argv) > 7 else "naive"]
    inp = common.open_input(inp_path, dataset)
    out = common.create_output_like(inp, out_path, dataset)
    x = da.from_zarr(inp)
    y = x.map_overlap(mean_same_shape, mean=mean, depth=context, boundary=0, dtype=np.uint8)
    if mode == "local":
        from distributed import Client, LocalCluster
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster):
            with common.Timer() as t:
                da.store(y, out, lock=False)
    else:
        with dask.config.set(scheduler="threads", num_workers=workers):
            with common.Timer() as t:
                da.store(y, out, lock=False)
    common.report(f"dask map_overlap ({mode})", workers, t.wall, int(inp.nbytes), out)


if __name__ == "__main__":
    main()
