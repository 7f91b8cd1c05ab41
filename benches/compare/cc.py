#!/usr/bin/env python3
"""Connected components of a thresholded zarr volume with scipy and dask-image, for comparison
with `blockwise::ops::ConnectedComponents`.

For each tool, in a child process of its own: read the uint8 array, threshold it
(foreground = value > threshold), label it, and report one JSON line per tool on stdout:

    {"tool": "scipy", "seconds": ..., "read_seconds": ..., "label_seconds": ...,
     "peak_rss_mb": ..., "components": ..., "voxels": ..., "foreground": ...}

* `scipy`: `scipy.ndimage.label` on the whole volume in memory (the reference).
* `dask`: `dask_image.ndmeasure.label` on the volume in `--chunks`³ chunks (default 64), the
  labels written to a temporary zarr store (as blockwise writes its output); threaded
  scheduler.

`peak_rss_mb` is the child's `ru_maxrss` (`os.wait4`), so each tool's peak memory is its own.
`--connectivity` is scipy's `generate_binary_structure(3, c)`: 1 = faces (blockwise's
`Connectivity::Faces`), 2 = edges, 3 = vertices.

Environment (not installed system-wide; a venv of its own):

    python3 -m venv benches/compare/.venv-cc
    benches/compare/.venv-cc/bin/pip install numpy scipy dask dask-image zarr

Run:

    cargo run --release --bin blockwise -- sample --output /tmp/sample.zarr --size 256 --chunk 64
    benches/compare/.venv-cc/bin/python benches/compare/cc.py /tmp/sample.zarr --threshold 100
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time


def child(args):
    import numpy as np
    import scipy.ndimage as ndi
    import zarr

    structure = ndi.generate_binary_structure(3, args.connectivity)
    t0 = time.perf_counter()
    if args.child == "scipy":
        data = zarr.open(args.store, mode="r")[args.dataset][...]
        t1 = time.perf_counter()
        mask = data > args.threshold
        _, n = ndi.label(mask, structure=structure)
        t2 = time.perf_counter()
        voxels, foreground = int(mask.size), int(np.count_nonzero(mask))
    else:
        import dask
        import dask.array as da
        from dask_image.ndmeasure import label

        data = da.from_zarr(args.store, component=args.dataset).rechunk(args.chunks)
        t1 = time.perf_counter()
        mask = data > args.threshold
        labels, n = label(mask, structure=structure)
        with tempfile.TemporaryDirectory() as out:
            store = labels.to_zarr(os.path.join(out, "labels.zarr"), compute=False)
            n, foreground, _ = dask.compute(n, mask.sum(), store, scheduler="threads")
        t2 = time.perf_counter()
        voxels, foreground = int(mask.size), int(foreground)
    print(json.dumps({
        "tool": args.child,
        "seconds": round(t2 - t0, 3),
        "read_seconds": round(t1 - t0, 3),
        "label_seconds": round(t2 - t1, 3),
        "components": int(n),
        "voxels": voxels,
        "foreground": foreground,
    }))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("store", help="the zarr store (a directory)")
    p.add_argument("--dataset", default="raw", help="the uint8 array inside the store")
    p.add_argument("--threshold", type=float, default=100, help="foreground is value > this")
    p.add_argument("--connectivity", type=int, default=1, choices=[1, 2, 3])
    p.add_argument("--chunks", type=int, default=64, help="dask chunk edge (voxels)")
    p.add_argument("--only", default="scipy,dask", help="comma-separated: scipy, dask")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per tool")
    p.add_argument("--child", choices=["scipy", "dask"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    for tool in [t.strip() for t in args.only.split(",") if t.strip()]:
        if tool not in ("scipy", "dask"):
            sys.exit(f"unknown tool {tool!r} (expected scipy or dask)")
        cmd = [sys.executable, __file__, args.store, "--dataset", args.dataset,
               "--threshold", str(args.threshold), "--connectivity", str(args.connectivity),
               "--chunks", str(args.chunks), "--child", tool]
        # The child is reaped with os.wait4 (not Popen.wait), so its rusage is its own.
        with tempfile.TemporaryFile(mode="w+") as errf:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, text=True)
            timer = threading.Timer(args.timeout, proc.kill)
            timer.start()
            out = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
            timer.cancel()
            proc.returncode = os.waitstatus_to_exitcode(status)
            errf.seek(0)
            err = errf.read()
        if proc.returncode < 0:
            print(json.dumps({"tool": tool, "error": f"killed (signal {-proc.returncode}; "
                              f"timeout {args.timeout} s?)"}))
            continue
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            print(json.dumps({"tool": tool, "error": err.strip()[-2000:]}))
            continue
        result = json.loads(lines[-1])
        result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux: KiB
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
