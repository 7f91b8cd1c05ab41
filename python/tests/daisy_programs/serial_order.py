"""Serial runs in daisy's documented style; writes the blocks each run processed, in order, and
the final counts to argv[1]/serial_order.json (compared between blockwise.daisy and daisy)."""

import json
import sys
from functools import partial

import blockwise.daisy as daisy
from blockwise.daisy import Roi

processed = []


def record(name, block):
    processed.append(
        [
            name,
            block.block_id[0],
            block.block_id[1],
            [list(block.read_roi.offset), list(block.read_roi.shape)],
            [list(block.write_roi.offset), list(block.write_roi.shape)],
        ]
    )


def process(name, block):
    record(name, block)


def process_failing(name, failing, block):
    record(name, block)
    if block.block_id[1] in failing:
        block.status = daisy.BlockStatus.FAILED


def skip_every_third(block):
    return block.block_id[1] % 3 == 0


def counts(states):
    return {
        k: [
            v.total_block_count,
            v.completed_count,
            v.skipped_count,
            v.failed_count,
            v.orphaned_count,
        ]
        for k, v in sorted(states.items())
    }


results = {}

# 1D with read/write conflicts, a check function and failing blocks.
task = daisy.Task(
    "conflict_1d",
    total_roi=Roi((0,), (100,)),
    read_roi=Roi((0,), (10,)),
    write_roi=Roi((1,), (8,)),
    process_function=partial(process_failing, "conflict_1d", {5, 4}),
    check_function=skip_every_third,
    max_retries=1,
)
results["conflict_1d"] = counts(daisy.SerialServer().run_blockwise([task]))

# 2D chained tasks (daisy's scheduler tests).
first = daisy.Task(
    "first",
    total_roi=Roi((0, 0), (6, 6)),
    read_roi=Roi((0, 0), (3, 3)),
    write_roi=Roi((1, 1), (1, 1)),
    process_function=partial(process, "chained"),
)
second = daisy.Task(
    "second",
    total_roi=Roi((1, 1), (4, 4)),
    read_roi=Roi((0, 0), (3, 3)),
    write_roi=Roi((1, 1), (1, 1)),
    process_function=partial(process, "chained"),
    upstream_tasks=[first],
)
results["chained"] = counts(daisy.SerialServer().run_blockwise([first, second]))

# The fits on a total ROI the blocks do not tile.
for fit in ("valid", "overhang", "shrink"):
    task = daisy.Task(
        f"fit_{fit}",
        total_roi=Roi((0, 0), (105, 105)),
        read_roi=Roi((-10, -10), (30, 30)),
        write_roi=Roi((0, 0), (10, 10)),
        process_function=partial(process, fit),
        fit=fit,
    )
    results[fit] = counts(daisy.SerialServer().run_blockwise([task]))

# A failure that orphans the blocks downstream of it, across tasks.
up = daisy.Task(
    "up",
    total_roi=Roi((0,), (100,)),
    read_roi=Roi((0,), (10,)),
    write_roi=Roi((1,), (8,)),
    process_function=partial(process_failing, "orphans", {3}),
    max_retries=0,
)
down = daisy.Task(
    "down",
    total_roi=Roi((0,), (100,)),
    read_roi=Roi((0,), (10,)),
    write_roi=Roi((1,), (8,)),
    process_function=partial(process, "orphans"),
    upstream_tasks=[up],
)
results["orphans"] = counts(daisy.SerialServer().run_blockwise([down]))

results["processed"] = processed
with open(f"{sys.argv[1]}/serial_order.json", "w") as f:
    json.dump(results, f, indent=1)
