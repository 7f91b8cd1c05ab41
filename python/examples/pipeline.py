"""The main Python example: a generated sample volume -> a 3x3x3 box mean with context ->
a threshold and a foreground count per block (block outputs), on worker processes, resumable;
then checked against the same computation on the whole volume in memory.

    python python/examples/pipeline.py [--workdir DIR] [--size N] [--workers W] [--runner R] [--fresh]

Run it twice: the second run finds every block done in its run directory and only recounts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import blockwise as bw
from blockwise import Roi, ZarrArray

BLOCK = 32  # voxels per block and chunk edge
THRESHOLD = 100.0


def sample(shape: tuple[int, ...]) -> np.ndarray:
    """A deterministic volume: smooth blobs plus noise, as uint8."""
    rng = np.random.default_rng(42)
    coarse = rng.integers(0, 256, [s // 8 + 1 for s in shape]).astype(np.float32)
    up = coarse.repeat(8, 0).repeat(8, 1).repeat(8, 2)[: shape[0], : shape[1], : shape[2]]
    return np.clip(up * 0.8 + rng.normal(0, 20, shape), 0, 255).astype(np.uint8)


def box_mean(padded: np.ndarray) -> np.ndarray:
    """The 3x3x3 mean of the interior of `padded` (one voxel of context on each side)."""
    d = padded.astype(np.float32)
    out = np.zeros([s - 2 for s in d.shape], np.float32)
    for z in range(3):
        for y in range(3):
            for x in range(3):
                out += d[z : z + out.shape[0], y : y + out.shape[1], x : x + out.shape[2]]
    return out / 27


def smooth_fn(raw_path: str, out_path: str):
    """The per-worker set-up of the smoothing task: opens the arrays once per worker."""

    def init(worker: bw.WorkerContext):
        raw = ZarrArray.open_cached(raw_path)
        out = ZarrArray.open(out_path, "r+")

        def smooth(block: bw.Block) -> None:
            out.write(block.write_roi, box_mean(raw.read_padded(block.read_roi, "reflect")))

        return smooth

    return init


def count_fn(smooth_path: str):
    def count(block: bw.Block) -> int:
        return int((ZarrArray.open(smooth_path).read(block.write_roi) > THRESHOLD).sum())

    return count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="blockwise-example-py")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--runner", choices=["processes", "threads"], default="processes")
    p.add_argument("--fresh", action="store_true")
    args = p.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    shape = (args.size,) * 3
    total = Roi((0, 0, 0), shape)

    raw_path = str(work / "data.zarr" / "raw")
    try:
        raw = ZarrArray.open(raw_path)
    except bw.StoreError:
        raw = ZarrArray.create(raw_path, total, (1, 1, 1), "uint8", (BLOCK,) * 3)
        raw.write(total, sample(shape))
    smooth_path = str(work / "data.zarr" / "smooth")
    smoothed = ZarrArray.prepare(smooth_path, total, (1, 1, 1), "float32", (BLOCK,) * 3)

    # Blocks write BLOCK³ chunks and read one voxel of context around them; the task's total
    # ROI is the volume grown by that context, so that the first write ROI starts at 0 (on
    # the chunk grid) and reads past the border are padded (reflect, as scipy's "reflect").
    write = Roi((0, 0, 0), (BLOCK,) * 3)
    smooth = bw.Task(
        "smooth", total.grow(1, 1), write.grow(1, 1), write,
        process_per_worker=smooth_fn(raw_path, smooth_path),
        read_write_conflict=False, num_workers=args.workers, writes=[smoothed],
    )
    count = bw.Task(
        "count", total, write, write, process=count_fn(smooth_path), outputs=True,
        read_write_conflict=False, num_workers=args.workers, upstream=smooth,
    )
    summary = bw.run_blockwise(
        [count], runner=args.runner, run_dir=work / "run", fresh=args.fresh,
        log_dir=work / "logs", progress="auto",
    )
    if not summary.is_success():
        raise SystemExit(f"the run failed:\n{summary}")
    foreground = sum(n for _, n in summary.outputs("count"))
    print(f"blocks: smooth {summary.task('smooth').completed} "
          f"(skipped {summary.task('smooth').skipped}), count {summary.task('count').completed}")
    print(f"foreground voxels (smoothed > {THRESHOLD:g}): {foreground} of {np.prod(shape)}")

    # The same on the whole volume in memory.
    whole = box_mean(np.pad(raw.read(total), 1, mode="symmetric"))
    assert np.array_equal(ZarrArray.open(smooth_path).read(total), whole), "smoothed volume differs"
    assert foreground == int((whole > THRESHOLD).sum()), "foreground count differs"
    print("checked against the whole-volume computation: identical")


if __name__ == "__main__":
    main()
