"""Pyramids (``blockwise.ops.pyramid``): every level of every method against a numpy
reference applied level after level, bit for bit; read back with zarr-python too."""

from __future__ import annotations

import numpy as np
import pytest

import blockwise
from blockwise import Roi, ZarrArray
from blockwise.ops import pyramid

METHODS = ["mean", "mode", "max", "min", "first_non_zero"]


def reduce(a: np.ndarray, factor: tuple[int, ...], method: str) -> np.ndarray:
    """One level of the reference: ``n // f`` per axis, windows in C order."""
    out_shape = tuple(n // f for n, f in zip(a.shape, factor))
    a = a[tuple(slice(0, o * f) for o, f in zip(out_shape, factor))]
    # (o0, f0, o1, f1, ...) -> (o0, o1, ..., f0 * f1 * ...) with the window in C order.
    split = a.reshape([x for o, f in zip(out_shape, factor) for x in (o, f)])
    d = len(factor)
    w = split.transpose([2 * i for i in range(d)] + [2 * i + 1 for i in range(d)])
    w = w.reshape(out_shape + (-1,))
    if method == "mean":
        if np.issubdtype(a.dtype, np.integer):
            # Exact: the sum as an integer, divided and rounded half to even.
            s = w.astype(np.int64).sum(axis=-1)
            n = w.shape[-1]
            q, r = np.divmod(s, n)
            up = (2 * r > n) | ((2 * r == n) & (q % 2 == 1))
            return (q + up).astype(a.dtype)
        return w.astype(np.float64).mean(axis=-1).astype(a.dtype)
    if method == "max":
        return w.max(axis=-1)
    if method == "min":
        return w.min(axis=-1)
    if method == "first_non_zero":
        nz = w != 0
        first = np.argmax(nz, axis=-1)
        v = np.take_along_axis(w, first[..., None], axis=-1)[..., 0]
        return np.where(nz.any(axis=-1), v, 0).astype(a.dtype)
    if method == "mode":
        # The most frequent value; ties to the smallest.
        s = np.sort(w, axis=-1)
        flat = s.reshape(-1, s.shape[-1])
        out = np.empty(flat.shape[0], dtype=a.dtype)
        for i, row in enumerate(flat):
            vals, counts = np.unique(row, return_counts=True)
            out[i] = vals[np.argmax(counts)]  # np.unique sorts: the first maximum is the smallest
        return out.reshape(out_shape)
    raise ValueError(method)


def volume(shape, dtype, seed=3):
    rng = np.random.default_rng(seed)
    # Few distinct values, zeros included: modes tie and means hit halves.
    return rng.choice(np.array([0, 0, 3, 4, 200, 255], dtype=dtype), size=shape)


@pytest.mark.parametrize("method", METHODS)
def test_every_level_matches_numpy(tmp_path, method):
    shape = (44, 38, 50)  # not multiples of the factor or the chunks
    roi = Roi((32, 16, 16), (shape[0] * 4, shape[1] * 2, shape[2] * 2))
    raw = ZarrArray.create(tmp_path / "in.zarr" / "raw", roi, (4, 2, 2), "uint8", (8, 8, 8))
    data = volume(shape, np.uint8)
    raw.write(roi, data)
    out = tmp_path / f"{method}.zarr"
    s = pyramid(raw, out, levels=4, method=method, num_workers=2, progress=False)
    assert s.is_success(), str(s)
    want = data
    vs = np.array((4, 2, 2))
    for k in range(4):
        if k:
            want = reduce(want, (2, 2, 2), method)
            vs = vs * 2
        level = ZarrArray.open(out / f"s{k}")
        assert level.voxel_size == tuple(vs)
        assert level.offset == (32, 16, 16)
        got = level.read(level.roi)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want, err_msg=f"{method} s{k}")


def test_anisotropic_u16_until_one_chunk_reads_in_zarr_python_and_resumes(tmp_path):
    zarr = pytest.importorskip("zarr")
    shape = (12, 70, 66)
    roi = Roi((0, 0, 0), shape)
    raw = ZarrArray.create(tmp_path / "in.zarr" / "raw", roi, (1, 1, 1), "uint16", (4, 16, 16))
    data = (np.arange(np.prod(shape)) * 7919 % 65521).astype(np.uint16).reshape(shape)
    raw.write(roi, data)
    out = tmp_path / "aniso.zarr"
    run = tmp_path / "run"
    s = pyramid(raw, out, levels="until_one_chunk", factor=(1, 2, 2), run_dir=run, progress=False)
    assert s.is_success(), str(s)
    want = data
    k = 0
    while (out / f"s{k}").exists():
        if k:
            want = reduce(want, (1, 2, 2), "mean")
        np.testing.assert_array_equal(zarr.open_array(out / f"s{k}", mode="r")[...], want)
        k += 1
    # 70 / 2^2 = 17 > 16 voxels: s3 (8 x 8) is the first level that fits one chunk.
    assert k == 4
    again = pyramid(raw, out, levels="until_one_chunk", factor=(1, 2, 2), run_dir=run, progress=False)
    assert again.is_success()
    assert sum(t.skipped for t in again.tasks.values()) == sum(t.total for t in again.tasks.values())


def test_bad_arguments_are_config_errors(tmp_path):
    roi = Roi((0, 0), (16, 16))
    raw = ZarrArray.create(tmp_path / "in.zarr" / "raw", roi, (1, 1), "uint8", (4, 4))
    with pytest.raises(blockwise.ConfigError, match="method 'median'"):
        pyramid(raw, tmp_path / "o.zarr", method="median")
    with pytest.raises(blockwise.ConfigError, match="factor"):
        pyramid(raw, tmp_path / "o.zarr", factor=(2, 0))
    with pytest.raises(blockwise.ConfigError, match="at least 1 level"):
        pyramid(raw, tmp_path / "o.zarr", levels=0)
    with pytest.raises(blockwise.ConfigError, match="would be empty"):
        pyramid(raw, tmp_path / "o.zarr", levels=6)
    with pytest.raises(blockwise.ConfigError, match="levels"):
        pyramid(raw, tmp_path / "o.zarr", levels="all")
