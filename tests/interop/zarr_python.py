"""zarr-python side of the interop test (tests/it/interop.rs); needs `zarr>=3` and numpy.

    zarr_python.py read STORE DATASET   -> JSON: shape, sum, attributes of an array blockwise wrote
    zarr_python.py write STORE          -> writes arrays "v2" and "v3" with funlib.persistence
                                           attributes for blockwise to read; prints their sums
"""
import json
import sys

import numpy as np
import zarr


def main():
    mode = sys.argv[1]
    if mode == "read":
        a = zarr.open_array(store=sys.argv[2], path=sys.argv[3], mode="r")
        data = a[...]
        print(json.dumps({"shape": list(a.shape), "sum": int(data.astype(np.int64).sum()),
                          "first": int(data.flat[0]), "attributes": dict(a.attrs)}))
    elif mode == "write":
        root = zarr.open_group(store=sys.argv[2], mode="w")
        data = (np.arange(10 * 12 * 14, dtype=np.int64).reshape(10, 12, 14) % 251).astype(np.uint8)
        attrs = {"voxel_size": [2, 2, 2], "offset": [4, 0, -2], "axis_names": ["z", "y", "x"],
                 "units": ["nm", "nm", "nm"]}
        sums = {}
        for fmt in (2, 3):
            g = zarr.open_group(store=sys.argv[2], path=f"g{fmt}", mode="w", zarr_format=fmt)
            a = g.create_array(name="raw", shape=data.shape, chunks=(4, 5, 6), dtype="uint8",
                               fill_value=0)
            a[...] = data
            a.attrs.update(attrs)
            sums[f"g{fmt}/raw"] = int(data.astype(np.int64).sum())
        del root
        print(json.dumps(sums))
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
