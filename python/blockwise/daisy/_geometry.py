"""``daisy.Roi`` / ``daisy.Coordinate``: funlib.geometry's classes when it is installed (as in
daisy 1.x and 2.0), else blockwise's own, which behave the same and accept funlib's."""

from __future__ import annotations

try:  # pragma: no branch - depends on the environment
    from funlib.geometry import Coordinate, Roi

    FUNLIB = True
except ImportError:  # pragma: no cover - exercised only without funlib.geometry
    from blockwise._native import Coordinate, Roi

    FUNLIB = False


def to_roi(native) -> Roi:
    """A ``daisy.Roi`` from a blockwise ROI."""
    if not FUNLIB:
        return native
    return Roi(tuple(native.offset), tuple(native.shape))


__all__ = ["Coordinate", "FUNLIB", "Roi", "to_roi"]
