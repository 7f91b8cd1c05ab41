"""daisy 2.0's Pipeline (``+`` runs after, ``|`` side by side) in serial mode; writes the
processed blocks in order and whether the runs succeeded to argv[1]/pipeline.json."""

import json
import sys

import blockwise.daisy as daisy

order = []


def make(task_id, fail=()):
    def process(block):
        order.append([task_id, block.block_id[1]])
        if block.block_id[1] in fail:
            block.status = daisy.BlockStatus.FAILED

    return daisy.Task(
        task_id,
        total_roi=daisy.Roi((0,), (40,)),
        read_roi=daisy.Roi((0,), (10,)),
        write_roi=daisy.Roi((0,), (10,)),
        process_function=process,
        read_write_conflict=False,
        max_workers=2,
        max_retries=0,
    )


a, b, c, d = make("a"), make("b"), make("c", fail={2}), make("d")
pipeline = (a | b) + c + d
results = {
    "edges": sorted([u.task_id, v.task_id] for u, v in pipeline.edges),
    "ok": bool(daisy.run_blockwise(pipeline, multiprocessing=False, progress=False)),
    "order": order,
}
with open(f"{sys.argv[1]}/pipeline.json", "w") as f:
    json.dump(results, f, indent=1)
