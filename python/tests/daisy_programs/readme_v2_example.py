"""daisy 2.0's README "Quick example", as written there; only the import differs."""

import blockwise.daisy as daisy


def process(block):
    # do work on block.read_roi, write to block.write_roi
    print(f"processing {block.block_id}: {block.write_roi}")


if __name__ == "__main__":
    task = daisy.Task(
        task_id="example",
        total_roi=daisy.Roi((0,), (1000,)),
        read_roi=daisy.Roi((0,), (10,)),
        write_roi=daisy.Roi((0,), (10,)),
        process_function=process,
        read_write_conflict=False,
        max_workers=4,
    )
    daisy.run_blockwise([task])
