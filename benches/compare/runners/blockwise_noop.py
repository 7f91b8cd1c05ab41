"""No-op Python blocks with the blockwise Python package: the counterpart of `daisy_noop.py`
(one 1D task, read = write, no conflicts, a Python function that does nothing).

usage: blockwise_noop.py BLOCKS WORKERS (processes|threads)
(prints one JSON line with the keys of `blockwise bench noop --json`)

Workers of the processes runner import this script as `__mp_main__`, so `noop` below reaches
them by reference; the driver code stays under `if __name__ == "__main__":`.
"""
import json
import sys
import tempfile
import time

import blockwise


def noop(block):
    pass


def run(blocks, workers, runner):
    """Runs `blocks` no-op blocks on `workers` workers; returns (wall seconds, completed)."""
    task = blockwise.Task(
        "noop",
        blockwise.Roi((0,), (blocks,)),
        blockwise.Roi((0,), (1,)),
        blockwise.Roi((0,), (1,)),
        process=noop,
        read_write_conflict=False,
        num_workers=workers,
    )
    with tempfile.TemporaryDirectory(prefix="bw-noop-") as logs:
        start = time.perf_counter()
        summary = blockwise.run_blockwise(
            [task], runner=runner, progress=False, print_summary=False, log_dir=logs
        )
        wall = time.perf_counter() - start
    if not summary.is_success():
        sys.exit(f"blockwise noop: the run failed: {summary}")
    return wall, summary.completed


def main():
    blocks, workers, runner = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    wall, completed = run(blocks, workers, runner)
    print(json.dumps({
        "scenario": "noop",
        "runner": f"blockwise-python-{runner}",
        "workers": workers,
        "blocks": blocks,
        "completed": completed,
        "wall_s": wall,
        "blocks_per_s": completed / wall,
    }))


if __name__ == "__main__":
    main()
