"""Arrays in world units over blockwise's Rust stores: ``ZarrArray`` (zarr v2, v3, sharded
v3) and, in builds with the ``hdf5`` feature, ``Hdf5Array``; both are ``Array``\\ s.

Reads return numpy arrays; ``read_roi`` returns ``(data, roi)``, the data with the world ROI
it covers. See ``python/README.md``.
"""

from blockwise._native import Array, OmeAxis, OmeLevel, OmeZarr, ZarrArray

__all__ = ["Array", "OmeAxis", "OmeLevel", "OmeZarr", "ZarrArray"]

try:  # built with the `hdf5` feature only
    from blockwise._native import Hdf5Array
except ImportError:  # pragma: no cover - depends on the build
    pass
else:
    __all__.append("Hdf5Array")
