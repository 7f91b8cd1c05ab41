"""Roi and Coordinate: funlib.geometry's semantics, and conversion both ways."""

import pickle

import pytest

import blockwise as bw
from blockwise import Coordinate, Roi

funlib = pytest.importorskip("funlib.geometry")


def test_coordinates_behave_like_funlib_tuples():
    c = Coordinate(1, 2, 3)
    assert c == Coordinate((1, 2, 3)) == (1, 2, 3) == funlib.Coordinate(1, 2, 3)
    assert hash(c) == hash((1, 2, 3))
    assert len(c) == c.dims == 3 and list(c) == [1, 2, 3] and c[-1] == 3
    assert c[1:] == (2, 3) and isinstance(c[1:], Coordinate)
    assert c + 1 == (2, 3, 4) and 1 + c == (2, 3, 4)
    assert c - (1, 1, 1) == (0, 1, 2) and (10, 10, 10) - c == (9, 8, 7)
    assert c * 2 == (2, 4, 6) and -c == (-1, -2, -3) and abs(-c) == c
    assert Coordinate(-7, 7) // 2 == (-4, 3)  # floor, like Python
    assert Coordinate(-7, 7) / 2 == (-3, 3)  # funlib: int(a / b), toward zero
    assert Coordinate(-7, 7) % 3 == (2, 1)
    assert Coordinate(4, 6).is_multiple_of((2, 3)) and not Coordinate(4, 6).is_multiple_of((3, 3))
    assert Coordinate(5, 6).round_division((2, 4)) == (2, 1)  # halves down
    assert Coordinate(5, 6).ceil_division((2, 4)) == (3, 2)
    assert repr(c) == "(1, 2, 3)" and repr(Coordinate(4)) == "(4,)"
    assert pickle.loads(pickle.dumps(c)) == c
    assert c.to_funlib() == funlib.Coordinate(1, 2, 3)


def test_coordinate_errors_name_the_problem():
    with pytest.raises(ValueError, match="different dimensions"):
        Coordinate(1, 2) + Coordinate(1, 2, 3)
    with pytest.raises(ZeroDivisionError):
        Coordinate(1, 2) // 0
    with pytest.raises(ValueError, match="unbounded"):
        Coordinate(1, None)
    with pytest.raises(ValueError, match="overflows"):
        Coordinate(2**62) * 4
    with pytest.raises(TypeError):
        Coordinate("abc")


def test_rois_follow_funlib():
    r = Roi((0, 10), (20, 30))
    f = funlib.Roi((0, 10), (20, 30))
    assert r == f and Roi(f) == r and r.to_funlib() == f
    assert r.begin == f.begin and r.end == f.end and r.shape == f.shape and r.center == f.center
    assert r.size == f.size == 600 and r.dims == 2 and not r.empty
    assert r.get_offset() == r.offset and r.get_shape() == r.shape and r.get_end() == r.end
    assert r.to_slices() == f.to_slices()
    assert repr(r) == repr(f) == "[0:20, 10:40] (20, 30)"
    assert repr(Roi((0,), (0,))) == "[empty ROI]"
    for other in [Roi((5, 5), (10, 10)), Roi((30, 50), (1, 1))]:
        o = other.to_funlib()
        assert r.intersects(other) == f.intersects(o)
        assert r.intersect(other).empty == f.intersect(o).empty
        if not r.intersect(other).empty:
            assert r.intersect(other) == f.intersect(o)
        assert r.union(other) == f.union(o)
        assert r.contains(other) == f.contains(o)
    assert r.contains((0, 10)) and not r.contains((20, 10))
    assert r.grow(1, 2) == f.grow(1, 2) and r.grow((1, 0), None) == f.grow((1, 0), (0, 0))
    assert r.shift((1, 1)) == f.shift(funlib.Coordinate(1, 1)) and r + (1, 1) == f + funlib.Coordinate(1, 1)
    assert r - (1, 1) == f - funlib.Coordinate(1, 1)
    assert r * 2 == f * 2 and r // 3 == f // 3
    for mode in ["grow", "shrink", "closest"]:
        assert Roi((1, 2), (7, 9)).snap_to_grid((4, 4), mode) == funlib.Roi((1, 2), (7, 9)).snap_to_grid((4, 4), mode)
    assert pickle.loads(pickle.dumps(r)) == r
    assert hash(r) == hash(Roi((0, 10), (20, 30)))
    assert r.squeeze(0) == Roi((10,), (30,))


def test_roi_errors_name_the_problem():
    with pytest.raises(ValueError, match="different dimensions"):
        Roi((0, 0), (1, 1, 1))
    assert Roi((0,), (-1,)).empty  # like funlib: a negative shape is an empty ROI
    with pytest.raises(ValueError, match="snap_to_grid mode"):
        Roi((0,), (4,)).snap_to_grid((2,), "sideways")
    with pytest.raises(ValueError, match="unbounded"):
        Roi(funlib.Roi((0, None), (4, None)))
    with pytest.raises(TypeError, match="Roi"):
        Roi("nope")


def test_tasks_accept_tuples_and_funlib_types():
    t = bw.Task(
        "t",
        funlib.Roi((0, 0), (100, 100)),
        ((0, 0), (12, 12)),
        Roi((1, 1), (10, 10)),
        process=lambda b: None,
    )
    assert t.total_roi == Roi((0, 0), (100, 100)) and t.write_roi == Roi((1, 1), (10, 10))
    assert t.num_blocks == 81
    b = t.block(0)
    assert b.read_roi == Roi((0, 0), (12, 12)) and b.write_roi == Roi((1, 1), (10, 10))
    assert b.read_roi.to_funlib() == funlib.Roi((0, 0), (12, 12))
