"""blockwise.ops.connected_components against scipy.ndimage.label."""

from __future__ import annotations

import numpy as np
import pytest

import blockwise
from blockwise import Roi, ZarrArray
from blockwise.ops import connected_components


def same_partition(ours, theirs):
    """One-to-one mapping of labels; background identical."""
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours == 0, theirs == 0)
    fg = theirs != 0
    pairs = set(zip(ours[fg].tolist(), theirs[fg].tolist()))
    assert len(pairs) == len(np.unique(ours[fg])) == len(np.unique(theirs[fg]))


def volume(tmp_path, shape=(20, 18, 16), voxel_size=(2, 1, 1), seed=1):
    rng = np.random.default_rng(seed)
    data = rng.random(shape).astype(np.float32)
    roi = Roi((0, 0, 0), tuple(s * v for s, v in zip(shape, voxel_size)))
    raw = ZarrArray.create(tmp_path / "cc.zarr" / "raw", roi, voxel_size, "float32", (8, 8, 8))
    raw.write(roi, data)
    labels = ZarrArray.create(tmp_path / "cc.zarr" / "labels", roi, voxel_size, "uint64", (8, 8, 8))
    return raw, labels, data


@pytest.mark.timeout(120)
@pytest.mark.parametrize("connectivity,rank", [("faces", 1), ("edges", 2), ("vertices", 3)])
def test_matches_scipy(tmp_path, connectivity, rank):
    ndimage = pytest.importorskip("scipy.ndimage")
    raw, labels, data = volume(tmp_path)
    result = connected_components(raw, labels, threshold=0.6, connectivity=connectivity, num_workers=2, progress=False)
    assert result.is_success() and result
    assert result.relabel is not None and result.relabel.is_success()
    assert result.pairs > 0 and result.merged > 0
    expected, n = ndimage.label(data > 0.6, structure=ndimage.generate_binary_structure(3, rank))
    ours = labels.read(labels.roi)
    same_partition(ours, expected)
    assert len(np.unique(ours)) - 1 == n


@pytest.mark.timeout(180)
def test_processes_and_resume(tmp_path):
    ndimage = pytest.importorskip("scipy.ndimage")
    raw, labels, data = volume(tmp_path, shape=(16, 16, 16), voxel_size=(1, 1, 1), seed=2)
    kwargs = dict(threshold=0.5, block_shape=(8, 16, 8), connectivity=1, progress=False, run_dir=tmp_path / "run")
    result = connected_components(raw, labels, runner="processes", num_workers=2, log_dir=tmp_path / "logs", **kwargs)
    assert result.is_success(), str(result.label)
    assert any((tmp_path / "logs").rglob("worker_*"))  # worker processes ran
    expected, _ = ndimage.label(data > 0.5)
    same_partition(labels.read(labels.roi), expected)
    again = connected_components(raw, labels, **kwargs)
    assert again.is_success() and again.label.skipped == again.label.completed > 0
    same_partition(labels.read(labels.roi), expected)


def test_default_foreground_and_2d(tmp_path):
    ndimage = pytest.importorskip("scipy.ndimage")
    roi = Roi((0, 0), (12, 12))
    data = np.zeros((12, 12), np.uint8)
    data[1, 1:11] = data[10, 1:11] = data[1:11, 1] = data[1:11, 10] = 3  # a ring across blocks
    data[5, 5] = 1
    raw = ZarrArray.create(tmp_path / "r.zarr" / "raw", roi, (1, 1), "uint8", (4, 4))
    raw.write(roi, data)
    out = ZarrArray.create(tmp_path / "r.zarr" / "out", roi, (1, 1), "uint64", (4, 4))
    assert connected_components(raw, out, progress=False)
    got = out.read(roi)
    same_partition(got, ndimage.label(data > 0)[0])
    assert len(np.unique(got)) == 3


def test_bad_arguments(tmp_path):
    roi = Roi((0, 0), (8, 8))
    raw = ZarrArray.create(tmp_path / "b.zarr" / "raw", roi, (1, 1), "uint8", (4, 4))
    wrong = ZarrArray.create(tmp_path / "b.zarr" / "wrong", roi, (1, 1), "uint32", (4, 4))
    with pytest.raises(blockwise.ConfigError, match="labels need uint64"):
        connected_components(raw, wrong, progress=False)
    out = ZarrArray.create(tmp_path / "b.zarr" / "out", roi, (1, 1), "uint64", (4, 4))
    with pytest.raises(blockwise.ConfigError, match="unknown connectivity"):
        connected_components(raw, out, connectivity="diagonal")
    with pytest.raises(blockwise.ConfigError, match="runner"):
        connected_components(raw, out, runner="gpu")
    with pytest.raises(TypeError, match="expected a ZarrArray"):
        connected_components(np.zeros((8, 8)), out)
