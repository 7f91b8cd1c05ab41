"""Masks (``Task(mask=...)``): blocks where the mask is zero are neither checked nor processed,
are counted in ``TaskState.masked``, and are never recorded as done in a run directory; on
both runners."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import blockwise
from blockwise import OmeZarr, Roi, Task, ZarrArray, run_blockwise

RUNNERS = ["threads", "processes"]

TOTAL = Roi((0, 0), (80, 80))  # 8 x 8 blocks of 10 x 10
BLOCK = Roi((0, 0), (10, 10))


def recorder(d: Path):
    """A process function that leaves one file per call, named by the block's write ROI (so
    it works on worker processes too)."""
    d.mkdir(exist_ok=True)

    def process(block):
        o = block.write_roi.offset
        (d / f"{o[0]}_{o[1]}-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}").write_text("")

    return process


def offsets(d: Path) -> list[tuple[int, int]]:
    """The write ROI offsets of the recorded calls, sorted (repeated if a block ran twice)."""
    if not d.exists():
        return []
    return sorted(tuple(int(x) for x in p.name.split("-")[0].split("_")) for p in d.iterdir())


def pids(d: Path) -> set[int]:
    """The processes the recorded calls ran in."""
    return {int(p.name.split("-")[1]) for p in d.iterdir()}


def make_mask(tmp_path, voxel_size, on, name="mask"):
    """A uint8 mask over TOTAL at `voxel_size`, 1 at the voxels `on` (voxel indices)."""
    m = ZarrArray.create(tmp_path / "masks.zarr" / name, TOTAL, voxel_size, "uint8", (4, 4), overwrite=True)
    values = np.zeros(m.shape, dtype=np.uint8)
    for idx in on:
        values[idx] = 1
    m[m.roi] = values
    return m


def run(task, runner, tmp_path, **kw):
    kw.setdefault("progress", False)
    if runner == "processes":
        kw.setdefault("log_dir", tmp_path / "logs")
    return run_blockwise(task, runner=runner, **kw)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("runner", RUNNERS)
def test_only_the_blocks_under_the_mask_run(runner, tmp_path):
    mask = make_mask(tmp_path, (10, 10), [(0, 0), (3, 5), (7, 7)])
    checked = tmp_path / "checked"
    rec = recorder(checked)

    def check(block):
        rec(block)
        return False

    t = Task("t", TOTAL, BLOCK, BLOCK, process=recorder(tmp_path / "ran"), check=check, num_workers=2, mask=mask)
    assert t.mask is mask
    s = run(t, runner, tmp_path)
    assert s.is_success()
    want = [(0, 0), (30, 50), (70, 70)]
    assert offsets(tmp_path / "ran") == want
    # A check runs where the scheduler does: in this process.
    assert offsets(checked) == want
    assert pids(checked) == {os.getpid()}
    if runner == "processes":
        assert os.getpid() not in pids(tmp_path / "ran")
    st = s.task("t")
    assert (st.total, st.completed, st.skipped, st.masked, st.failed) == (64, 64, 61, 61, 0)
    assert s.masked == 61 and s.skipped == 61
    assert "masked=61" in repr(st)


@pytest.mark.timeout(120)
def test_a_coarser_mask_opens_every_block_under_its_voxel(tmp_path):
    # 2 x 2 voxels of 40: the voxel (1, 0) covers the 16 blocks of world [40, 80) x [0, 40).
    mask = make_mask(tmp_path, (40, 40), [(1, 0)])
    t = Task("t", TOTAL, BLOCK, BLOCK, process=recorder(tmp_path / "ran"), num_workers=2, mask=mask)
    s = run(t, "threads", tmp_path)
    assert offsets(tmp_path / "ran") == [(y, x) for y in range(40, 80, 10) for x in range(0, 40, 10)]
    assert s.task("t").masked == 48


@pytest.mark.timeout(120)
@pytest.mark.parametrize("runner", RUNNERS)
def test_a_rerun_reports_the_masked_blocks_again_and_runs_only_newly_opened_ones(runner, tmp_path):
    rd = tmp_path / "run"
    mask = make_mask(tmp_path, (20, 20), [(0, 0)])  # 4 blocks
    task = lambda rec, m: Task("t", TOTAL, BLOCK, BLOCK, process=recorder(rec), num_workers=2, mask=m)  # noqa: E731

    s = run(task(tmp_path / "r1", mask), runner, tmp_path, run_dir=rd)
    assert len(offsets(tmp_path / "r1")) == 4
    assert (s.task("t").completed, s.task("t").masked) == (64, 60)

    s = run(task(tmp_path / "r2", mask), runner, tmp_path, run_dir=rd)
    assert offsets(tmp_path / "r2") == []
    st = s.task("t")
    assert (st.completed, st.skipped, st.masked) == (64, 64, 60)

    # The mask opens one more voxel: exactly its 4 blocks run.
    mask = make_mask(tmp_path, (20, 20), [(0, 0), (3, 3)])
    s = run(task(tmp_path / "r3", mask), runner, tmp_path, run_dir=rd)
    assert offsets(tmp_path / "r3") == [(60, 60), (60, 70), (70, 60), (70, 70)]
    assert s.task("t").masked == 56


@pytest.mark.timeout(120)
@pytest.mark.parametrize("runner", RUNNERS)
def test_an_ome_zarr_level_is_a_mask(runner, tmp_path):
    """The coarsest level of an OME-Zarr image as the mask: its world metadata comes from the
    image (the arrays have no funlib attributes), also in the worker processes that rebuild
    the task."""
    path = tmp_path / "img.zarr"
    img = OmeZarr.create(
        path,
        [("y", "space", "nanometer"), ("x", "space", "nanometer")],
        [("s0", TOTAL, (2, 2)), ("s1", TOTAL, (40, 40))],
        "uint8",
        (2, 2),
    )
    s1 = img.level(1, mode="r+")
    s1[Roi((0, 40), (40, 40))] = np.ones((1, 1), dtype=np.uint8)
    t = Task("t", TOTAL, BLOCK, BLOCK, process=recorder(tmp_path / "ran"), num_workers=2, mask=img[1])
    s = run(t, runner, tmp_path)
    assert s.is_success(), s
    assert offsets(tmp_path / "ran") == [(y, x) for y in range(0, 40, 10) for x in range(40, 80, 10)]
    assert s.task("t").masked == 48


@pytest.mark.timeout(60)
def test_masks_that_do_not_fit_the_task_are_refused(tmp_path):
    m1 = ZarrArray.create(tmp_path / "m.zarr" / "1d", Roi((0,), (80,)), (10,), "uint8", (8,))
    with pytest.raises(blockwise.ConfigError, match="mask"):
        Task("t", TOTAL, BLOCK, BLOCK, process=lambda b: None, mask=m1)
    far = ZarrArray.create(tmp_path / "m.zarr" / "far", Roi((800, 800), (80, 80)), (10, 10), "uint8", (8, 8))
    with pytest.raises(blockwise.ConfigError, match="mask"):
        Task("t", TOTAL, BLOCK, BLOCK, process=lambda b: None, mask=far)
    with pytest.raises(TypeError, match="mask: expected a ZarrArray, got ndarray"):
        Task("t", TOTAL, BLOCK, BLOCK, process=lambda b: None, mask=np.ones((8, 8)))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("runner", RUNNERS)
def test_a_threshold_runs_the_blocks_above_it(runner, tmp_path):
    m = ZarrArray.create(tmp_path / "m.zarr" / "p", TOTAL, (10, 10), "float32", (4, 4))
    values = np.full(m.shape, 0.2, dtype=np.float32)
    values[2, 3] = 0.9
    values[5, 1] = 0.5  # not above
    m[m.roi] = values
    t = Task("t", TOTAL, BLOCK, BLOCK, process=recorder(tmp_path / "ran"), mask=m, mask_threshold=0.5)
    assert t.mask_threshold == 0.5
    s = run(t, runner, tmp_path)
    assert offsets(tmp_path / "ran") == [(20, 30)]
    assert s.task("t").masked == 63
    # Without a threshold every block has a non-zero voxel.
    s = run(Task("u", TOTAL, BLOCK, BLOCK, process=lambda b: None, mask=m), runner, tmp_path)
    assert s.task("u").masked == 0
    with pytest.raises(blockwise.ConfigError, match="mask_threshold needs a mask"):
        Task("v", TOTAL, BLOCK, BLOCK, process=lambda b: None, mask_threshold=0.5)


@pytest.mark.timeout(120)
def test_the_run_directory_records_the_threshold(tmp_path):
    """Another threshold over the same mask is another mask in the run directory's record
    (tasks/<task>/mask.json), and only the blocks it opens run."""
    import json

    rd = tmp_path / "run"
    m = ZarrArray.create(tmp_path / "m.zarr" / "p", TOTAL, (10, 10), "float32", (4, 4))
    values = np.zeros(m.shape, dtype=np.float32)
    values[0, 0], values[7, 7] = 0.9, 0.6
    m[m.roi] = values
    for t, ran in [(0.8, [(0, 0)]), (0.5, [(70, 70)])]:
        rec = tmp_path / f"ran-{t}"
        task = Task("t", TOTAL, BLOCK, BLOCK, process=recorder(rec), mask=m, mask_threshold=t)
        s = run(task, "threads", tmp_path, run_dir=rd)
        assert s.is_success(), s
        assert offsets(rec) == ran
        record = json.loads((rd / "tasks" / "t" / "mask.json").read_text())
        assert record["predicate"] == f"above {t}"
        assert len(record["chunks_sha256"]) == 64
