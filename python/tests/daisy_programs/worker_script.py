"""The external worker of worker_program.py, in the style of daisy's tutorial_worker.py."""

import sys
from pathlib import Path

import blockwise.daisy as daisy

if __name__ == "__main__":
    out = Path(sys.argv[1])
    # set up the daisy client; it depends on environment variables to determine configuration
    client = daisy.Client()

    while True:
        # ask for a block from the scheduler
        with client.acquire_block() as block:
            # The scheduler will return None when there are no more blocks left
            if block is None:
                break
            (out / "subprocess").mkdir(exist_ok=True)
            begin, end = block.write_roi.begin[0], block.write_roi.end[0]
            (out / "subprocess" / f"{block.block_id[1]}").write_text(f"{sum(x * x for x in range(begin, end))}\n")
