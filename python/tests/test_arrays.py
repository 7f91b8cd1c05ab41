"""Arrays: ZarrArray (and Hdf5Array when built with it) over blockwise's Rust stores."""

from __future__ import annotations

import functools
import pickle
import sys
import threading

import numpy as np
import pytest

import blockwise
from blockwise import Roi, StoreError, ZarrArray

DTYPES = ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64"]


def ramp(shape, dtype):
    return (np.arange(int(np.prod(shape))) % 97).astype(dtype).reshape(shape)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_every_dtype(tmp_path, dtype, zarr_format):
    roi = Roi((0, 0), (12, 10))
    a = ZarrArray.create(tmp_path / "d.zarr" / "a", roi, (1, 1), dtype, (5, 4), zarr_format=zarr_format)
    assert a.dtype == np.dtype(dtype)
    data = ramp((12, 10), dtype)
    a.write(roi, data)
    back = ZarrArray.open(tmp_path / "d.zarr" / "a").read(roi)
    assert back.dtype == np.dtype(dtype)
    assert back.flags.c_contiguous and back.flags.writeable
    np.testing.assert_array_equal(back, data)


def test_properties_and_world_units(tmp_path):
    # 10×8 voxels of (4, 2) world units starting at (8, -6).
    roi = Roi((8, -6), (40, 16))
    a = ZarrArray.create(
        tmp_path / "w.zarr" / "raw", roi, (4, 2), np.int16, (4, 4),
        axis_names=["y", "x"], units=["nm", "nm"], fill_value=-1,
    )
    assert a.roi == roi
    assert a.voxel_size == (4, 2)
    assert a.offset == (8, -6)
    assert a.shape == (10, 8)
    assert a.dims == 2
    assert a.axis_names == ["y", "x"]
    assert a.units == ["nm", "nm"]
    assert a.chunk_shape == (4, 4)
    assert a.path == tmp_path / "w.zarr"
    assert a.dataset == "raw"
    assert a.writable
    assert isinstance(a, blockwise.Array)
    assert len(a.array_id) == 32
    # never written: the fill value
    np.testing.assert_array_equal(a.read(roi), np.full((10, 8), -1, np.int16))
    data = ramp((10, 8), np.int16)
    a[roi] = data
    # a sub-ROI in world units: voxels (2..5, 1..4)
    sub = Roi((8 + 2 * 4, -6 + 1 * 2), (3 * 4, 3 * 2))
    np.testing.assert_array_equal(a.read(sub), data[2:5, 1:4])
    np.testing.assert_array_equal(a[sub], data[2:5, 1:4])
    got, got_roi = a.read_roi(sub)
    assert got_roi == sub
    np.testing.assert_array_equal(got, data[2:5, 1:4])
    # funlib-style and tuple ROIs work too
    np.testing.assert_array_equal(a.read(((16, -4), (12, 6))), data[2:5, 1:4])
    assert "ZarrArray" in repr(a)


def test_misaligned_and_outside_rois(tmp_path):
    a = ZarrArray.create(tmp_path / "m.zarr" / "a", Roi((0, 0), (40, 40)), (4, 4), "uint8", (5, 5))
    with pytest.raises(StoreError, match="not aligned to the voxel size"):
        a.read(Roi((2, 0), (8, 8)))
    with pytest.raises(StoreError, match="not aligned"):
        a.write(Roi((0, 0), (6, 8)), np.zeros((1, 2), np.uint8))
    with pytest.raises(StoreError, match="not inside the array's ROI"):
        a.read(Roi((36, 0), (8, 8)))
    with pytest.raises(StoreError, match="not inside"):
        a.write(Roi((-4, 0), (8, 8)), np.zeros((2, 2), np.uint8))
    with pytest.raises(StoreError, match="3 dims"):
        a.read(Roi((0, 0, 0), (4, 4, 4)))


def test_write_checks_dtype_and_shape(tmp_path):
    a = ZarrArray.create(tmp_path / "c.zarr" / "a", Roi((0, 0), (8, 8)), (1, 1), "uint16", (4, 4))
    with pytest.raises(ValueError, match=r"the data has dtype\('float32'\), the array dtype\('uint16'\)"):
        a.write(Roi((0, 0), (8, 8)), np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match=r"dtype\('>u2'\)"):
        a.write(Roi((0, 0), (8, 8)), np.zeros((8, 8), ">u2"))
    with pytest.raises(ValueError, match=r"shape \[8, 4\].*\[8, 8\] voxels"):
        a.write(Roi((0, 0), (8, 8)), np.zeros((8, 4), np.uint16))
    with pytest.raises(TypeError, match="numpy array"):
        a.write(Roi((0, 0), (8, 8)), [[0] * 8] * 8)


def test_non_contiguous_input(tmp_path):
    a = ZarrArray.create(tmp_path / "n.zarr" / "a", Roi((0, 0), (6, 4)), (1, 1), "int32", (3, 3))
    base = ramp((4, 6), np.int32)
    a.write(a.roi, base.T)  # Fortran order
    np.testing.assert_array_equal(a.read(a.roi), base.T)
    big = ramp((12, 8), np.int32)
    a.write(a.roi, big[::2, ::2])  # strided
    np.testing.assert_array_equal(a.read(a.roi), big[::2, ::2])


def test_read_with_fill_and_padding(tmp_path):
    a = ZarrArray.create(tmp_path / "p.zarr" / "a", Roi((0, 0), (40, 30)), (10, 10), "float32", (2, 2))
    data = ramp((4, 3), np.float32)
    a.write(a.roi, data)
    grown = Roi((-20, -10), (80, 60))  # 2 voxels before and after in y, 1 and 2 in x
    width = ((2, 2), (1, 2))
    np.testing.assert_array_equal(a.read_with_fill(grown, 7.5), np.pad(data, width, constant_values=7.5))
    np.testing.assert_array_equal(a.read_padded(grown), np.pad(data, width, mode="symmetric"))
    np.testing.assert_array_equal(a.read_padded(grown, "nearest"), np.pad(data, width, mode="edge"))
    np.testing.assert_array_equal(a.read_padded(grown, "constant", 3), np.pad(data, width, constant_values=3))
    # entirely outside
    np.testing.assert_array_equal(a.read_with_fill(Roi((100, 100), (20, 10)), 1), np.ones((2, 1), np.float32))
    with pytest.raises(ValueError, match="pad 'wrap'"):
        a.read_padded(grown, "wrap")
    u = ZarrArray.create(tmp_path / "p.zarr" / "u", Roi((0,), (4,)), (1,), "uint8", (2,))
    with pytest.raises(ValueError, match="padding value"):
        u.read_with_fill(Roi((-2,), (8,)), 300)


def test_modes_and_pickling(tmp_path):
    a = ZarrArray.create(tmp_path / "r.zarr", Roi((0,), (8,)), (1,), "uint8", (4,))
    assert a.dataset == ""
    a.write(a.roi, np.arange(8, dtype=np.uint8))
    ro = ZarrArray.open(tmp_path / "r.zarr")
    assert not ro.writable
    with pytest.raises(StoreError, match="read-only"):
        ro.write(ro.roi, np.zeros(8, np.uint8))
    rw = ZarrArray.open(tmp_path / "r.zarr", "r+")
    rw.write(Roi((0,), (4,)), np.full(4, 9, np.uint8))
    cached = ZarrArray.open_cached(tmp_path / "r.zarr", 1 << 20)
    np.testing.assert_array_equal(cached.read(cached.roi), [9, 9, 9, 9, 4, 5, 6, 7])
    with pytest.raises(StoreError, match="read-only"):
        cached.write(cached.roi, np.zeros(8, np.uint8))
    for x in (ro, rw, cached):
        y = pickle.loads(pickle.dumps(x))
        assert type(y) is ZarrArray and y.writable == x.writable and y.array_id == x.array_id
        np.testing.assert_array_equal(y.read(y.roi), x.read(x.roi))
    with pytest.raises(ValueError, match="mode"):
        ZarrArray.open(tmp_path / "r.zarr", "x")
    with pytest.raises(StoreError, match="no such zarr store"):
        ZarrArray.open(tmp_path / "missing.zarr" / "a")


def test_create_options_and_errors(tmp_path):
    roi = Roi((0, 0), (16, 16))
    for comp in [None, "none", "zstd", "gzip", "blosc-zstd", "blosc-lz4"]:
        a = ZarrArray.create(tmp_path / "o.zarr" / str(comp), roi, (1, 1), "uint8", (8, 8), compression=comp)
        a.write(roi, ramp((16, 16), np.uint8))
        np.testing.assert_array_equal(a.read(roi), ramp((16, 16), np.uint8))
    s = ZarrArray.create(tmp_path / "o.zarr" / "sharded", roi, (1, 1), "uint8", (4, 4), shard_shape=(8, 8))
    assert s.chunk_shape == (8, 8)  # the unit a writer rewrites
    with pytest.raises(StoreError, match="already exists"):
        ZarrArray.create(tmp_path / "o.zarr" / "sharded", roi, (1, 1), "uint8", (4, 4))
    with pytest.raises(ValueError, match="compression 'lzma'"):
        ZarrArray.create(tmp_path / "o.zarr" / "x", roi, (1, 1), "uint8", (4, 4), compression="lzma")
    with pytest.raises(ValueError, match="dtype complex64"):
        ZarrArray.create(tmp_path / "o.zarr" / "x", roi, (1, 1), "complex64", (4, 4))
    with pytest.raises(StoreError, match="not a non-negative multiple of the voxel size"):
        ZarrArray.create(tmp_path / "o.zarr" / "x", Roi((0, 0), (15, 16)), (2, 2), "uint8", (4, 4))
    with pytest.raises(StoreError, match="sharding needs zarr v3"):
        ZarrArray.create(tmp_path / "o.zarr" / "x", roi, (1, 1), "uint8", (4, 4), shard_shape=(8, 8), zarr_format=2)
    like = ZarrArray.create_like(tmp_path / "o.zarr" / "like", s)
    assert like.roi == s.roi and like.chunk_shape == s.chunk_shape and like.array_id != s.array_id


def test_prepare_opens_creates_and_lists_differences(tmp_path):
    roi = Roi((0, 0), (32, 32))
    first = ZarrArray.prepare(tmp_path / "q.zarr" / "out", roi, (2, 2), "uint8", (8, 8))
    again = ZarrArray.prepare(tmp_path / "q.zarr" / "out", roi, (2, 2), "uint8", (8, 8))
    assert first.array_id == again.array_id
    with pytest.raises(StoreError) as e:
        ZarrArray.prepare(tmp_path / "q.zarr" / "out", Roi((0, 0), (64, 32)), (2, 2), "uint16", (4, 4))
    msg = str(e.value)
    for part in ["ROI", "data type: the array has uint8, the spec uint16", "chunk shape: the array has [8, 8], the spec [4, 4]"]:
        assert part in msg, msg
    replaced = ZarrArray.prepare(tmp_path / "q.zarr" / "out", roi, (2, 2), "uint16", (8, 8), overwrite=True)
    assert replaced.array_id != first.array_id and replaced.dtype == np.uint16


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_python_reads_what_we_write(tmp_path, zarr_format):
    zarr = pytest.importorskip("zarr")
    roi = Roi((10, 20, 30), (20, 40, 60))
    a = ZarrArray.create(tmp_path / "i.zarr" / "g" / "raw", roi, (2, 4, 6), "uint16", (4, 4, 4), zarr_format=zarr_format)
    data = ramp(a.shape, np.uint16)
    a.write(roi, data)
    z = zarr.open(str(tmp_path / "i.zarr" / "g" / "raw"), mode="r")
    assert z.metadata.zarr_format == zarr_format
    np.testing.assert_array_equal(z[...], data)
    assert list(z.attrs["voxel_size"]) == [2, 4, 6]
    assert list(z.attrs["offset"]) == [10, 20, 30]
    # the groups up to the store's root are written too
    g = zarr.open_group(str(tmp_path / "i.zarr"), mode="r")
    np.testing.assert_array_equal(g["g/raw"][...], data)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_we_read_what_zarr_python_writes(tmp_path, zarr_format):
    zarr = pytest.importorskip("zarr")
    data = ramp((6, 10), np.float64)
    z = zarr.create_array(str(tmp_path / "z.zarr"), name="raw", shape=data.shape, chunks=(4, 4), dtype="float64", zarr_format=zarr_format)
    z[...] = data
    z.attrs.update({"voxel_size": [3, 5], "offset": [-3, 10], "axis_names": ["a", "b"], "units": ["um", "um"]})
    a = ZarrArray.open(tmp_path / "z.zarr" / "raw", "r+")
    assert a.voxel_size == (3, 5) and a.offset == (-3, 10) and a.axis_names == ["a", "b"]
    assert a.roi == Roi((-3, 10), (18, 50))
    assert a.array_id is None  # not made by blockwise
    np.testing.assert_array_equal(a.read(a.roi), data)
    a.write(Roi((0, 15), (6, 10)), np.full((2, 2), -1.0))
    expect = data.copy()
    expect[1:3, 1:3] = -1
    np.testing.assert_array_equal(zarr.open(str(tmp_path / "z.zarr" / "raw"), mode="r")[...], expect)
    # without funlib attributes: offset 0, voxel size 1
    plain = zarr.create_array(str(tmp_path / "z.zarr"), name="plain", shape=(3,), chunks=(2,), dtype="int8", zarr_format=zarr_format)
    plain[...] = [1, 2, 3]
    p = ZarrArray.open(tmp_path / "z.zarr", dataset="plain")
    assert p.roi == Roi((0,), (3,)) and p.read(p.roi).tolist() == [1, 2, 3]


def test_funlib_persistence_opens_what_we_write(tmp_path):
    fp = pytest.importorskip("funlib.persistence")
    roi = Roi((4, 8), (16, 24))
    a = ZarrArray.create(tmp_path / "f.zarr" / "raw", roi, (2, 4), "uint8", (4, 4), axis_names=["y", "x"], units=["nm", "nm"])
    data = ramp(a.shape, np.uint8)
    a.write(roi, data)
    ds = fp.open_ds(str(tmp_path / "f.zarr" / "raw"))
    assert tuple(ds.voxel_size) == (2, 4)
    assert tuple(ds.offset) == (4, 8)
    assert list(ds.axis_names) == ["y", "x"]
    np.testing.assert_array_equal(ds.to_ndarray(ds.roi), data)


def test_we_open_what_funlib_persistence_writes(tmp_path):
    fp = pytest.importorskip("funlib.persistence")
    ds = fp.prepare_ds(
        str(tmp_path / "f.zarr" / "raw"), shape=(6, 8), offset=(4, 8), voxel_size=(2, 4),
        axis_names=["y", "x"], units=["nm", "nm"], dtype=np.uint16, mode="w",
    )
    data = ramp((6, 8), np.uint16)
    ds[ds.roi] = data
    a = ZarrArray.open(tmp_path / "f.zarr" / "raw")
    assert a.voxel_size == (2, 4) and a.offset == (4, 8) and a.axis_names == ["y", "x"] and a.units == ["nm", "nm"]
    np.testing.assert_array_equal(a.read(a.roi), data)


@pytest.mark.timeout(120)
def test_the_gil_is_released_during_reads(tmp_path):
    """A Python thread makes progress while a read runs: with a huge switch interval, the
    thread runs only where the main thread releases the GIL."""
    shape = (256, 256, 128)  # 8 M voxels of uint8, uncompressed
    a = ZarrArray.create(tmp_path / "g.zarr" / "a", Roi((0, 0, 0), shape), (1, 1, 1), "uint8", (64, 64, 64), compression=None)
    a.write(a.roi, np.ones(shape, np.uint8))
    counter = [0]
    stop = threading.Event()

    def count():
        while not stop.wait(0.0001):  # blocks without the GIL; runs Python when it gets it
            counter[0] += 1

    old = sys.getswitchinterval()
    t = threading.Thread(target=count, daemon=True)
    t.start()
    sys.setswitchinterval(1000.0)  # the main thread keeps the GIL unless it releases it
    try:
        advanced = 0
        for _ in range(50):
            before = counter[0]
            a.read(a.roi)
            advanced = counter[0] - before
            if advanced:
                break
    finally:
        sys.setswitchinterval(old)
        stop.set()
        t.join(timeout=30)
    assert advanced > 0


# ---- tasks writing arrays ----

def _box_filter(raw, out, block):
    """A 3×3 box mean of the block's read ROI (reflect padding), written at its write ROI."""
    d = raw.read_padded(block.read_roi, "reflect").astype(np.float64)
    box = sum(d[i : i + d.shape[0] - 2, j : j + d.shape[1] - 2] for i in range(3) for j in range(3)) / 9.0
    out.write(block.write_roi, box)


def _box_reference(data):
    p = np.pad(data.astype(np.float64), 1, mode="symmetric")
    return sum(p[i : i + data.shape[0], j : j + data.shape[1]] for i in range(3) for j in range(3)) / 9.0


@pytest.mark.timeout(180)
@pytest.mark.parametrize("runner", ["threads", "processes"])
def test_box_filter_task(tmp_path, runner):
    roi = Roi((0, 0), (60, 40))  # 30×20 voxels of 2×2
    raw = ZarrArray.create(tmp_path / "b.zarr" / "raw", roi, (2, 2), "uint8", (10, 10))
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, raw.shape, dtype=np.uint8)
    raw.write(roi, data)
    out = ZarrArray.create(tmp_path / "b.zarr" / "box", roi, (2, 2), "float64", (10, 10))
    ctx = (2, 2)  # one voxel
    task = blockwise.Task(
        "box",
        total_roi=roi.grow(ctx, ctx),
        read_roi=Roi((0, 0), (24, 24)),
        write_roi=Roi((2, 2), (20, 20)),
        process=functools.partial(_box_filter, ZarrArray.open(raw.path / "raw"), out),
        fit="shrink",
        num_workers=2,
        writes=[out],
    )
    summary = blockwise.run_blockwise(task, runner=runner, progress=False, log_dir=tmp_path / "logs", import_main=False)
    assert summary.is_success(), str(summary)
    np.testing.assert_allclose(out.read(roi), _box_reference(data), rtol=0, atol=1e-12)


def _write_ones(out, block):
    out.write(block.write_roi, np.ones(tuple(s // v for s, v in zip(block.write_roi.shape, out.voxel_size)), np.uint8))


def test_recreated_output_fails_the_rerun_and_prepare_resumes(tmp_path):
    roi = Roi((0, 0), (16, 16))
    path = tmp_path / "j.zarr" / "out"

    def task(out):
        return blockwise.Task(
            "ones", roi, Roi((0, 0), (8, 8)), Roi((0, 0), (8, 8)),
            process=functools.partial(_write_ones, out), writes=[out],
        )

    out = ZarrArray.prepare(path, roi, (1, 1), "uint8", (8, 8))
    first = blockwise.run_blockwise(task(out), run_dir=tmp_path / "run", progress=False)
    assert first.is_success() and first.skipped == 0
    # prepare keeps the array: the rerun skips every block
    kept = ZarrArray.prepare(path, roi, (1, 1), "uint8", (8, 8))
    again = blockwise.run_blockwise(task(kept), run_dir=tmp_path / "run", progress=False)
    assert again.is_success() and again.skipped == 4
    # recreated: the run directory's done-markers are for another array
    new = ZarrArray.create(path, roi, (1, 1), "uint8", (8, 8), overwrite=True)
    with pytest.raises(blockwise.JournalError):
        blockwise.run_blockwise(task(new), run_dir=tmp_path / "run", progress=False)


def test_writes_checks_chunk_alignment(tmp_path):
    out = ZarrArray.create(tmp_path / "k.zarr" / "out", Roi((0,), (16,)), (1,), "uint8", (8,))
    with pytest.raises(blockwise.ConfigError, match="not a multiple of the chunk shape"):
        blockwise.Task("t", Roi((0,), (16,)), Roi((0,), (4,)), Roi((0,), (4,)), process=lambda b: None, writes=out)
    with pytest.raises(TypeError, match="writes= takes blockwise arrays"):
        blockwise.Task("t", Roi((0,), (16,)), Roi((0,), (8,)), Roi((0,), (8,)), process=lambda b: None, writes=[object()])


# ---- HDF5 (only in builds with the `hdf5` feature) ----

hdf5 = pytest.mark.skipif(not hasattr(blockwise._native, "Hdf5Array"), reason="built without the hdf5 feature")


@hdf5
@pytest.mark.parametrize("dtype", DTYPES)
def test_hdf5_round_trip(tmp_path, dtype):
    H = blockwise._native.Hdf5Array
    roi = Roi((4, 0), (24, 10))
    a = H.create(tmp_path / "d.h5" / "g" / "a", roi, (2, 1), dtype, (4, 4), axis_names=["y", "x"])
    data = ramp(a.shape, dtype)
    a.write(roi, data)
    a.flush()
    b = H.open(tmp_path / "d.h5", dataset="g/a")
    assert b.roi == roi and b.voxel_size == (2, 1) and b.dtype == np.dtype(dtype) and b.axis_names == ["y", "x"]
    np.testing.assert_array_equal(b.read(roi), data)
    np.testing.assert_array_equal(b.read_padded(Roi((0, 0), (32, 10)), "nearest"), np.pad(data, ((2, 2), (0, 0)), mode="edge"))
    assert pickle.loads(pickle.dumps(b)).read(roi).tolist() == data.tolist()
    with pytest.raises(StoreError, match="read-only"):
        b.write(roi, data)


@hdf5
def test_hdf5_prepare(tmp_path):
    H = blockwise._native.Hdf5Array
    roi = Roi((0,), (8,))
    a = H.prepare(tmp_path / "p.h5" / "a", roi, (1,), "uint8", (4,))
    assert H.prepare(tmp_path / "p.h5" / "a", roi, (1,), "uint8", (4,)).array_id == a.array_id
    with pytest.raises(StoreError, match="data type"):
        H.prepare(tmp_path / "p.h5" / "a", roi, (1,), "int8", (4,))


@hdf5
def test_hdf5_written_by_a_task(tmp_path):
    H = blockwise._native.Hdf5Array
    roi = Roi((0, 0), (16, 16))
    out = H.create(tmp_path / "t.h5" / "out", roi, (1, 1), "uint8", (8, 8))
    task = blockwise.Task(
        "ones", roi, Roi((0, 0), (8, 8)), Roi((0, 0), (8, 8)),
        process=functools.partial(_write_ones, out), writes=[out],
    )
    assert blockwise.run_blockwise(task, progress=False, run_dir=tmp_path / "run").is_success()
    np.testing.assert_array_equal(out.read(roi), np.ones((16, 16), np.uint8))
    with pytest.raises(blockwise.ConfigError, match="not a multiple of the chunk shape"):
        blockwise.Task("t", roi, Roi((0, 0), (4, 4)), Roi((0, 0), (4, 4)), process=lambda b: None, writes=out)
