"""Worker functions (process functions without parameters) that run their own
``daisy.Client()`` loop, in the worker process itself and in a subprocess it starts (the
tutorial's "Distributing on the Cluster" pattern with ``tutorial_worker.py``). Each block
writes a file under argv[1]; the run's results go to argv[1]/workers.json."""

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import blockwise.daisy as daisy

out = Path(sys.argv[1])


def write_block(kind, block):
    (out / kind).mkdir(exist_ok=True)
    begin, end = block.write_roi.begin[0], block.write_roi.end[0]
    (out / kind / f"{block.block_id[1]}").write_text(f"{sum(x * x for x in range(begin, end))}\n")


def worker():
    client = daisy.Client()
    while True:
        with client.acquire_block() as block:
            if block is None:
                break
            write_block("in_process", block)


def start_subprocess_worker(script):
    subprocess.run([sys.executable, script, str(out)], check=True)


if __name__ == "__main__":
    results = {}
    task = daisy.Task(
        "in_process",
        total_roi=daisy.Roi((0,), (100,)),
        read_roi=daisy.Roi((0,), (10,)),
        write_roi=daisy.Roi((0,), (10,)),
        process_function=worker,
        read_write_conflict=False,
        num_workers=2,
    )
    results["in_process"] = daisy.run_blockwise([task])
    task = daisy.Task(
        "subprocess",
        total_roi=daisy.Roi((0,), (100,)),
        read_roi=daisy.Roi((0,), (20,)),
        write_roi=daisy.Roi((5,), (10,)),
        process_function=partial(start_subprocess_worker, str(Path(__file__).with_name("worker_script.py"))),
        max_workers=2,
    )
    states = daisy.Server().run_blockwise([task])
    results["subprocess"] = {k: [v.total_block_count, v.completed_count, v.failed_count] for k, v in states.items()}
    (out / "workers.json").write_text(json.dumps(results, sort_keys=True))
