"""Side by side: a 4-level mean pyramid of the same zarr volume by blockwise (`blockwise bench
pyramid`, and its limit `--codec-only`), ngff-zarr and ome-zarr-py; prints one Markdown table.

Run with a Python that has zarr>=3, numpy, dask, ngff-zarr and ome-zarr (see README.md here):

    python benches/compare/pyramid.py --input /tmp/sample.zarr --workers 2 [--repeat 3]

Each level of the others is compared with blockwise's: the share of equal voxels and the largest
difference (their means round differently: ngff-zarr half up, ome-zarr truncates; blockwise
rounds half to even).
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import zarr

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def best(cmd, repeat):
    runs = [run(cmd) for _ in range(repeat)]
    return min(runs, key=lambda r: r["wall_s"]), runs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--dataset", default="raw")
    p.add_argument("--workdir", default="/tmp/blockwise-pyramid-compare")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--blockwise", default=os.path.join(REPO, "target", "release", "blockwise"))
    a = p.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    common = ["--input", a.input, "--dataset", a.dataset, "--levels", str(a.levels),
              "--workers", str(a.workers)]
    bw_out = os.path.join(a.workdir, "blockwise.zarr")
    rows = []
    bw, _ = best([a.blockwise, "bench", "pyramid", *common, "--output", bw_out, "--json"], a.repeat)
    limit, _ = best([a.blockwise, "bench", "pyramid", *common, "--codec-only", "--output",
                     os.path.join(a.workdir, "limit.zarr"), "--json"], a.repeat)
    mine = [zarr.open_array(os.path.join(bw_out, f"s{k}"), mode="r")[...] for k in range(a.levels)]
    rows.append(("blockwise", bw["wall_s"], bw["peak_rss_mib"], "reference"))
    rows.append(("limit: read level 0 + encode levels 1.. (blockwise --codec-only)",
                 limit["wall_s"], limit["peak_rss_mib"], "-"))
    for impl in ("ngff-zarr", "ome-zarr"):
        out = os.path.join(a.workdir, f"{impl}.zarr")
        r, _ = best([sys.executable, os.path.join(HERE, "runners", "pyramid_run.py"), impl,
                     "--input", a.input, "--dataset", a.dataset, "--output", out,
                     "--levels", str(a.levels), "--workers", str(a.workers)], a.repeat)
        notes = []
        for k, path in enumerate(r["levels"]):
            theirs = zarr.open_array(os.path.join(out, path), mode="r")[...]
            if theirs.shape != mine[k].shape:
                notes.append(f"s{k}: shape {theirs.shape} vs {mine[k].shape}")
                continue
            diff = np.abs(theirs.astype(np.int16) - mine[k].astype(np.int16))
            notes.append(f"s{k}: {100 * np.mean(diff == 0):.1f}% equal, max diff {int(diff.max())}")
        rows.append((impl, r["wall_s"], r["peak_rss_mib"], "; ".join(notes)))
    size = np.prod(zarr.open_array(os.path.join(a.input, a.dataset), mode="r").shape)
    print(f"{a.levels}-level mean pyramid of {a.input} ({size / 1e6:.0f} MB uint8), "
          f"{a.workers} workers, best of {a.repeat}\n")
    print("| implementation | wall s | MB/s | blockwise is × faster | peak RSS MiB | levels vs blockwise |")
    print("|---|---|---|---|---|---|")
    for name, wall, rss, note in rows:
        print(f"| {name} | {wall:.2f} | {size / 1e6 / wall:.1f} | {wall / bw['wall_s']:.2f}× | "
              f"{rss:.0f} | {note} |")
    print(f"\nblockwise reaches {100 * limit['wall_s'] / bw['wall_s']:.0f}% of the limit.")


if __name__ == "__main__":
    main()
