"""No-op blocks in daisy's worker processes: the counterpart of
`blockwise bench noop --runner processes --dims 1` (one task, read = write, no conflicts).

usage: daisy_noop.py BLOCKS WORKERS   (prints one JSON line with the keys of `bench noop --json`)
"""
import json
import sys
import time
from importlib.metadata import version

import daisy
from funlib.geometry import Roi


def noop(block):
    pass


def main():
    blocks, workers = int(sys.argv[1]), int(sys.argv[2])
    task = daisy.Task(
        "noop",
        total_roi=Roi((0,), (blocks,)),
        read_roi=Roi((0,), (1,)),
        write_roi=Roi((0,), (1,)),
        process_function=noop,
        read_write_conflict=False,
        num_workers=workers,
    )
    # daisy 2.0 can leave out its progress bar and summary, as the blockwise runs do.
    quiet = {"progress": False, "summary": False} if int(version("daisy").split(".")[0]) >= 2 else {}
    start = time.perf_counter()
    ok = daisy.run_blockwise([task], **quiet)
    wall = time.perf_counter() - start
    print(json.dumps({
        "scenario": "noop",
        "runner": "daisy-" + version("daisy") + "-processes",
        "workers": workers,
        "blocks": blocks,
        "completed": blocks if ok else None,
        "wall_s": wall,
        "blocks_per_s": blocks / wall,
    }))


if __name__ == "__main__":
    main()
