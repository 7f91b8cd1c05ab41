"""OME-Zarr images (``blockwise.OmeZarr``, ``ZarrArray.open_ome``): pyramids written by the Rust
side, images created here and read back by zarr-python, images zarr-python wrote by hand, and
the errors for what is not there."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import zarr

import blockwise
from blockwise import OmeAxis, OmeZarr, Roi, StoreError, ZarrArray
from blockwise.ops import pyramid


def space_axes(unit="nanometer"):
    return [("z", "space", unit), ("y", "space", unit), ("x", "space", unit)]


@pytest.fixture
def pyr(tmp_path):
    """A 3-level OME-Zarr pyramid written by the Rust side (``blockwise.ops.pyramid``) from a
    32³ source of voxel size 4 at offset (64, 0, 32)."""
    src = ZarrArray.create(
        tmp_path / "src.zarr" / "raw",
        Roi((64, 0, 32), (128, 128, 128)),
        (4, 4, 4),
        "uint8",
        (8, 8, 8),
        axis_names=["z", "y", "x"],
        units=["nm", "nm", "nm"],
    )
    data = (np.arange(32**3) % 251).astype(np.uint8).reshape(32, 32, 32)
    src[src.roi] = data
    s = pyramid(src, tmp_path / "pyr.zarr", levels=3, progress=False)
    assert s.is_success()
    return tmp_path / "pyr.zarr", data


@pytest.mark.timeout(60)
def test_a_pyramid_opens_with_its_levels_axes_and_values(pyr):
    path, data = pyr
    img = OmeZarr.open(path)
    assert img.path == path
    assert img.version == "0.5"
    assert len(img) == 3
    assert [lv.path for lv in img.levels] == ["s0", "s1", "s2"]
    assert [tuple(lv.voxel_size) for lv in img.levels] == [(4, 4, 4), (8, 8, 8), (16, 16, 16)]
    assert [tuple(lv.offset) for lv in img.levels] == [(64, 0, 32)] * 3
    assert [(a.name, a.type, a.unit) for a in img.axes] == space_axes()
    assert img.axes[0] == OmeAxis("z", "space", "nanometer")

    s0 = img.level(0)
    assert isinstance(s0, ZarrArray)
    assert s0.path == path and s0.dataset == "s0"
    assert s0.axis_names == ["z", "y", "x"] and s0.units == ["nanometer"] * 3
    np.testing.assert_array_equal(s0[s0.roi], data)

    s2 = img[2]
    assert tuple(s2.voxel_size) == (16, 16, 16)
    assert s2.shape == (8, 8, 8)
    assert s2.roi == Roi((64, 0, 32), (128, 128, 128))
    assert not s2.writable
    assert img[-1].dataset == "s2"
    assert [a.dataset for a in img] == ["s0", "s1", "s2"]
    assert img.space_roi(1) == Roi((64, 0, 32), (128, 128, 128))
    assert img.labels() == []

    # ZarrArray.open_ome is the shorthand.
    s1 = ZarrArray.open_ome(path, 1)
    assert tuple(s1.voxel_size) == (8, 8, 8) and s1.dataset == "s1"
    np.testing.assert_array_equal(s1[s1.roi], img[1][s1.roi])
    assert ZarrArray.open_ome(path).dataset == "s0"


@pytest.mark.timeout(60)
def test_missing_levels_and_non_ome_paths_are_clear_errors(pyr, tmp_path):
    path, _ = pyr
    img = OmeZarr.open(path)
    with pytest.raises(StoreError, match="no level 3: the image has 3 levels"):
        img.level(3)
    with pytest.raises(StoreError, match="no level 7"):
        ZarrArray.open_ome(path, 7)
    with pytest.raises(IndexError, match="no level 3"):
        img[3]
    with pytest.raises(IndexError, match="no level -4"):
        img[-4]
    # A zarr group without OME metadata, a plain array, nothing at all.
    with pytest.raises(StoreError, match="no OME-Zarr metadata"):
        OmeZarr.open(tmp_path / "src.zarr")
    with pytest.raises(StoreError, match="src.zarr/raw"):
        ZarrArray.open_ome(tmp_path / "src.zarr" / "raw")
    with pytest.raises(StoreError, match="nothing.zarr"):
        OmeZarr.open(tmp_path / "nothing.zarr")
    with pytest.raises(StoreError, match='no label image "cells"'):
        img.label("cells")
    with pytest.raises(ValueError, match=r"mode 'w\+'"):
        img.level(0, mode="w+")


@pytest.mark.timeout(60)
def test_an_image_zarr_python_wrote_opens_with_its_scale_and_translation(tmp_path):
    """NGFF 0.5 metadata written by hand with zarr-python: the arrays carry no funlib
    attributes, so voxel size and offset can only come from the OME metadata."""
    path = tmp_path / "hand.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=3)
    values = np.arange(2 * 12 * 10, dtype=np.uint16).reshape(2, 12, 10)
    group.create_array("0", data=values, chunks=(1, 4, 5))
    group.create_array("1", data=values[:, ::2, ::2], chunks=(1, 4, 5))
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "name": "hand",
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space", "unit": "micrometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"},
                ],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [1, 3, 2]},
                            {"type": "translation", "translation": [0, 30, 20]},
                        ],
                    },
                    {
                        "path": "1",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [1, 6, 4]},
                            {"type": "translation", "translation": [0, 30, 20]},
                        ],
                    },
                ],
            }
        ],
    }
    img = OmeZarr.open(path)
    assert img.version == "0.5" and img.name == "hand"
    assert [(a.name, a.type, a.unit) for a in img.axes] == [
        ("c", "channel", None),
        ("y", "space", "micrometer"),
        ("x", "space", "micrometer"),
    ]
    assert [tuple(lv.voxel_size) for lv in img.levels] == [(1, 3, 2), (1, 6, 4)]
    s1 = img[1]
    assert s1.roi == Roi((0, 30, 20), (2, 36, 20))
    assert s1.axis_names == ["c", "y", "x"] and s1.units == ["", "micrometer", "micrometer"]
    np.testing.assert_array_equal(s1[s1.roi], values[:, ::2, ::2])
    # The ROI over space only, and a block of it with every channel.
    assert img.space_roi(0) == Roi((30, 20), (36, 20))
    block = img.expand_roi(0, Roi((36, 24), (6, 4)))
    assert block == Roi((0, 36, 24), (2, 6, 4))
    np.testing.assert_array_equal(img[0][block], values[:, 2:4, 2:4])
    # A plain open sees only the zarr array (no world metadata).
    assert tuple(ZarrArray.open(path / "1").voxel_size) == (1, 1, 1)
    # Pickled (to a worker process), an OME level reopens through its image.
    back = pickle.loads(pickle.dumps(s1))
    assert tuple(back.voxel_size) == (1, 6, 4) and back.roi == s1.roi
    assert pickle.loads(pickle.dumps(img)).levels[1].path == "1"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("zarr_format,version", [(3, "0.5"), (2, "0.4")])
def test_create_writes_ngff_that_zarr_python_reads(tmp_path, zarr_format, version):
    path = tmp_path / "new.zarr"
    roi = Roi((0, 40, 0), (3, 320, 320))
    img = OmeZarr.create(
        path,
        axes=[OmeAxis("c", "channel"), ("y", "space", "nanometer"), ("x", "space", "nanometer")],
        levels=[("s0", roi, (1, 4, 4)), ("s1", roi, (1, 8, 8))],
        dtype="uint8",
        chunk_shape=(1, 16, 16),
        name="created",
        zarr_format=zarr_format,
        compression="zstd",
    )
    assert img.version == version and img.name == "created"
    assert [tuple(lv.offset) for lv in img.levels] == [(0, 40, 0)] * 2
    s1 = img.level(1, mode="r+")
    assert s1.writable and s1.shape == (3, 40, 40)
    assert s1.axis_names == ["c", "y", "x"]
    values = np.arange(3 * 40 * 40, dtype=np.uint64).reshape(3, 40, 40).astype(np.uint8)
    s1[s1.roi] = values

    group = zarr.open_group(path, mode="r")
    np.testing.assert_array_equal(group["s1"][:], values)
    attrs = group.attrs.asdict()
    ms = (attrs["ome"] if zarr_format == 3 else attrs)["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    t1 = ms["datasets"][1]["coordinateTransformations"]
    assert {t["type"]: t[t["type"]] for t in t1} == {"scale": [1, 8, 8], "translation": [0, 40, 0]}
    json.dumps(attrs)  # plain JSON

    # Reopened, the same image.
    again = OmeZarr.open(path)
    assert [tuple(lv.voxel_size) for lv in again.levels] == [(1, 4, 4), (1, 8, 8)]
    np.testing.assert_array_equal(again[1][s1.roi], values)


@pytest.mark.timeout(60)
def test_create_refuses_what_is_not_ngff(tmp_path):
    roi = Roi((0, 0), (64, 64))
    with pytest.raises(blockwise.ConfigError, match="at least one level"):
        OmeZarr.create(tmp_path / "a.zarr", space_axes()[1:], [], "uint8", (8, 8))
    with pytest.raises(TypeError, match=r"\(name, type, unit\) tuples"):
        OmeZarr.create(tmp_path / "a.zarr", ["y", "x"], [("s0", roi, (1, 1))], "uint8", (8, 8))
    with pytest.raises(TypeError, match=r"\(path, roi, voxel_size\) tuples"):
        OmeZarr.create(tmp_path / "a.zarr", space_axes()[1:], [("s0", roi)], "uint8", (8, 8))
    with pytest.raises(StoreError, match="2 dimensions for 3 axes"):
        OmeZarr.create(tmp_path / "a.zarr", space_axes(), [("s0", roi, (1, 1))], "uint8", (8, 8))
    # One space axis is not an NGFF image.
    with pytest.raises(StoreError):
        OmeZarr.create(
            tmp_path / "b.zarr", [("c", "channel"), ("x", "space")], [("s0", roi, (1, 1))], "uint8", (8, 8)
        )


@pytest.mark.timeout(60)
def test_label_images(tmp_path):
    path = tmp_path / "img.zarr"
    roi = Roi((0, 0), (32, 32))
    OmeZarr.create(path, space_axes()[1:], [("s0", roi, (2, 2))], "uint8", (8, 8))
    labels = zarr.open_group(path / "labels", mode="w", zarr_format=3)
    labels.attrs["ome"] = {"version": "0.5", "labels": ["cells"]}
    OmeZarr.create(path / "labels" / "cells", space_axes()[1:], [("s0", roi, (2, 2))], "uint32", (8, 8))
    img = OmeZarr.open(path)
    assert img.labels() == ["cells"]
    cells = img.label("cells")
    assert isinstance(cells, OmeZarr)
    assert cells[0].dtype == np.uint32 and tuple(cells[0].voxel_size) == (2, 2)


@pytest.mark.timeout(60)
def test_a_pyramid_of_an_ome_level_keeps_the_image_world_metadata(tmp_path):
    """``ops.pyramid`` of a level opened through its image (arrays without funlib
    attributes): the new pyramid's voxel sizes and offsets continue the image's."""
    path = tmp_path / "hand.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=3)
    values = (np.arange(16 * 16) % 7).astype(np.uint8).reshape(16, 16)
    group.create_array("0", data=values, chunks=(4, 4))
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [{"name": "y", "type": "space", "unit": "nanometer"}, {"name": "x", "type": "space", "unit": "nanometer"}],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [5, 5]},
                            {"type": "translation", "translation": [20, 40]},
                        ],
                    }
                ],
            }
        ],
    }
    s = pyramid(ZarrArray.open_ome(path, 0), tmp_path / "out.zarr", levels=2, method="max", progress=False)
    assert s.is_success()
    out = OmeZarr.open(tmp_path / "out.zarr")
    assert [tuple(lv.voxel_size) for lv in out.levels] == [(5, 5), (10, 10)]
    assert [tuple(lv.offset) for lv in out.levels] == [(20, 40)] * 2
    np.testing.assert_array_equal(out[1][out[1].roi], values.reshape(8, 2, 8, 2).max(axis=(1, 3)))


def test_pyramids_placed_by_voxel_centres_line_up(tmp_path):
    """An NGFF 0.5 image whose coarser levels are translated by half their voxels' growth (as
    ngff-zarr writes them) opens with every level at level 0's offset."""
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "centres.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    datasets = []
    for k, t in enumerate([[16.0, 0.0], [17.0, 0.5], [19.0, 1.5]]):
        f = 2**k
        root.create_array(f"s{k}", shape=(32 // f, 32 // f), chunks=(8, 8), dtype="uint8")
        datasets.append({"path": f"s{k}", "coordinateTransformations": [
            {"type": "scale", "scale": [2.0 * f, 1.0 * f]},
            {"type": "translation", "translation": t}]})
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": datasets}]}
    image = blockwise.OmeZarr.open(str(path))
    assert image.pixel_centres
    assert [tuple(level.offset) for level in image.levels] == [(16, 0)] * 3
    assert image.level(2).roi == image.level(0).roi
