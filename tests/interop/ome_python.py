"""The Python side of the OME-Zarr interop test (tests/it/ome.rs): ome-zarr-py, iohub and
funlib.persistence, whichever are installed (NGFF 0.4 needs ome-zarr < 0.12 with zarr 2, where
iohub and funlib.persistence live; NGFF 0.5 needs ome-zarr >= 0.12 with zarr 3).

    ome_python.py read IMAGE     -> JSON: per library, the image's levels (path, shape, scale,
                                    translation, sum of the voxels) or {"error": ...}
    ome_python.py write IMAGE V  -> writes a 3-level zyx uint8 image with ome-zarr-py in NGFF V
                                    (0.4 or 0.5) and prints the same JSON for it ("ome-zarr")
    ome_python.py write-scaled IMAGE V
                                 -> the same, with ome-zarr-py's own downsampling (its Scaler
                                    or scale_factors: 3 levels, coarser levels placed by their
                                    voxel centres)
"""
import json
import sys
import traceback
from pathlib import Path

import numpy as np


def ome_zarr_levels(image):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    node = list(Reader(parse_url(image))())[0]
    meta = node.metadata
    paths = [d["path"] for d in meta_multiscales(image)["datasets"]]
    out = []
    for k, data in enumerate(node.data):
        ct = meta["coordinateTransformations"][k]
        scale = next(t["scale"] for t in ct if t["type"] == "scale")
        translation = next((t["translation"] for t in ct if t["type"] == "translation"), None)
        out.append({"path": paths[k], "shape": list(data.shape), "scale": scale,
                    "translation": translation or [0.0] * len(scale),
                    "sum": int(np.asarray(data).astype(np.int64).sum())})
    return out


def meta_multiscales(image):
    import zarr

    attrs = zarr.open_group(image, mode="r").attrs.asdict()
    return (attrs.get("ome") or attrs)["multiscales"][0]


def iohub_levels(image):
    from iohub.ngff import open_ome_zarr

    z = open_ome_zarr(image, mode="r")
    out = []
    for d in z.metadata.multiscales[0].datasets:
        a = z[d.path]
        out.append({"path": d.path, "shape": list(a.shape),
                    "scale": list(z.get_effective_scale(d.path)),
                    "translation": list(z.get_effective_translation(d.path)),
                    "sum": int(np.asarray(a[...]).astype(np.int64).sum())})
    return out


def funlib_levels(image):
    from funlib.persistence import open_ome_ds

    out = []
    for d in meta_multiscales(image)["datasets"]:
        a = open_ome_ds(Path(image), name=d["path"])
        out.append({"path": d["path"], "shape": list(a.shape), "scale": list(a.voxel_size),
                    "translation": list(a.offset), "axis_names": list(a.axis_names),
                    "units": list(a.units), "sum": int(np.asarray(a[a.roi]).astype(np.int64).sum())})
    return out


LIBRARIES = {"ome-zarr": ("ome_zarr", ome_zarr_levels), "iohub": ("iohub", iohub_levels),
             "funlib.persistence": ("funlib.persistence", funlib_levels)}


def read(image):
    import importlib.util

    result = {}
    for name, (module, levels) in LIBRARIES.items():
        if importlib.util.find_spec(module.split(".")[0]) is None or (
                module == "funlib.persistence" and importlib.util.find_spec(module) is None):
            continue
        try:
            result[name] = {"levels": levels(image)}
        except Exception:
            result[name] = {"error": traceback.format_exc()}
    return result


def write(image, version):
    import zarr
    from ome_zarr.writer import write_multiscale

    if version == "0.4":
        from ome_zarr.format import FormatV04 as Format
        from ome_zarr.io import parse_url

        root = zarr.group(store=parse_url(image, mode="w").store)
    else:
        from ome_zarr.format import FormatV05 as Format
        root = zarr.open_group(image, mode="w", zarr_format=3)
    base = (np.arange(20 * 24 * 28, dtype=np.int64).reshape(20, 24, 28) % 251).astype(np.uint8)
    levels = [base, base[::2, ::2, ::2].copy(), base[::4, ::4, ::4].copy()]
    transforms = [[{"type": "scale", "scale": [4.0 * 2**k, 2.0 * 2**k, 2.0 * 2**k]},
                   {"type": "translation", "translation": [8.0, 0.0, 2.0]}] for k in range(3)]
    axes = [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]
    write_multiscale(levels, group=root, axes=axes, coordinate_transformations=transforms,
                     fmt=Format(), storage_options={"chunks": (8, 8, 8)})
    return {"ome-zarr": {"levels": ome_zarr_levels(image)}}


def write_scaled(image, version):
    import inspect

    import zarr
    from ome_zarr.writer import write_image

    if version == "0.4":
        from ome_zarr.format import FormatV04 as Format
        from ome_zarr.io import parse_url

        root = zarr.group(store=parse_url(image, mode="w").store)
    else:
        from ome_zarr.format import FormatV05 as Format
        root = zarr.open_group(image, mode="w", zarr_format=3)
    data = (np.arange(16 * 24 * 32, dtype=np.int64).reshape(16, 24, 32) % 251).astype(np.uint8)
    kwargs = dict(group=root, axes="zyx", fmt=Format(), storage_options={"chunks": (8, 8, 8)})
    if "scale_factors" in inspect.signature(write_image).parameters:
        kwargs["scale_factors"] = [2, 4]  # ome-zarr >= 0.12
    else:
        from ome_zarr.scale import Scaler

        kwargs["scaler"] = Scaler(max_layer=2)
    write_image(data, **kwargs)
    return {"ome-zarr": {"levels": ome_zarr_levels(image)}}


def main():
    if sys.argv[1] == "read":
        print(json.dumps(read(sys.argv[2])))
    elif sys.argv[1] == "write":
        print(json.dumps(write(sys.argv[2], sys.argv[3])))
    elif sys.argv[1] == "write-scaled":
        print(json.dumps(write_scaled(sys.argv[2], sys.argv[3])))
    else:
        sys.exit(f"unknown command {sys.argv[1]!r}")


if __name__ == "__main__":
    main()
