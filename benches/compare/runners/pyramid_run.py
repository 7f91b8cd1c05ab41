"""A 4-level mean pyramid of a 3D uint8 zarr array written by ngff-zarr or ome-zarr-py, for
`benches/compare/pyramid.py`: prints one JSON line (wall seconds, peak RSS, the levels' paths).

ngff-zarr: `to_multiscales(method=DASK_BIN_SHRINK)` (the window mean in float64, integers
rounded half up) and `to_ngff_zarr`. ome-zarr: `write_image(method=LOCAL_MEAN)`
(skimage's `downscale_local_mean`, cast to uint8: truncated). Both on dask's threaded scheduler
with `--workers` threads, 64^3 chunks, and the input's codec (blosc zstd 5 with shuffle).
"""
import argparse
import json
import os
import resource
import shutil
import time

import dask
import dask.array as da
import zarr


def main():
    p = argparse.ArgumentParser()
    p.add_argument("impl", choices=["ngff-zarr", "ome-zarr"])
    p.add_argument("--input", required=True)
    p.add_argument("--dataset", default="raw")
    p.add_argument("--output", required=True)
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    if os.path.exists(a.output):
        shutil.rmtree(a.output)
    src = zarr.open_array(os.path.join(a.input, a.dataset), mode="r")
    chunks = src.chunks
    factors = [2**k for k in range(1, a.levels)]
    compressors = zarr.codecs.BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")
    dask.config.set(scheduler="threads", num_workers=a.workers)
    start = time.perf_counter()
    image = da.from_zarr(src)
    if a.impl == "ngff-zarr":
        import ngff_zarr as nz

        ngff = nz.to_ngff_image(image, dims=["z", "y", "x"])
        ms = nz.to_multiscales(ngff, scale_factors=factors, method=nz.Methods.DASK_BIN_SHRINK,
                               chunks=chunks[0])
        nz.to_ngff_zarr(a.output, ms, version="0.5", compressors=compressors)
    else:
        from ome_zarr.scale import Methods
        from ome_zarr.writer import write_image

        group = zarr.open_group(a.output, mode="w")
        # Dicts: plain numbers would downsample y and x only.
        scales = [{"z": f, "y": f, "x": f} for f in factors]
        write_image(image, group, scale_factors=scales, method=Methods.LOCAL_MEAN, axes="zyx",
                    storage_options={"chunks": chunks, "compressors": compressors})
    wall = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    group = zarr.open_group(a.output, mode="r")
    attrs = group.attrs.asdict()
    ms = (attrs.get("ome") or attrs)["multiscales"][0]
    paths = [d["path"] for d in ms["datasets"]]
    print(json.dumps({"impl": a.impl, "wall_s": wall, "peak_rss_mib": rss, "levels": paths}))


if __name__ == "__main__":
    main()
