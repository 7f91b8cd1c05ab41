"""daisy 2.0's resource budgets: ``Task(requires=...)`` and ``run_blockwise(resources=...)``.
Each scenario's outcome goes to argv[1]/resources.json: what ``requires`` reads back, whether a
run within a budget succeeds (and whether the blocks in flight stayed within it), and which
requirements raise before any block runs."""

import json
import os
import sys
from functools import partial
from pathlib import Path

import blockwise.daisy as daisy

out = Path(sys.argv[1])
flight = out / "flight"
calls = out / "calls"


def in_flight(block):
    """Records the most blocks of the run seen in flight at once (files in ``flight``)."""
    me = flight / f"{block.block_id[0]}-{block.block_id[1]}"
    me.touch()
    try:
        n = len(os.listdir(flight))
        (out / "peaks" / f"{block.block_id[0]}-{block.block_id[1]}").write_text(str(n))
    finally:
        me.unlink()


def touch(block):
    (calls / f"{block.block_id[0]}-{block.block_id[1]}").touch()


def task(task_id, fn, n=12, **kw):
    return daisy.Task(
        task_id,
        total_roi=daisy.Roi((0,), (n,)),
        read_roi=daisy.Roi((0,), (1,)),
        write_roi=daisy.Roi((0,), (1,)),
        process_function=fn,
        read_write_conflict=False,
        max_retries=0,
        **kw,
    )


def outcome(run):
    """``"ran"`` (with the result's truth) or ``"raised"``, and how many blocks ran."""
    before = len(list(calls.iterdir()))
    try:
        ok = bool(run())
        result = "ran" if ok else "ran, failed"
    except Exception as e:  # noqa: BLE001 - the kind differs: recorded, not compared
        result = "raised"
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
    return {"result": result, "blocks": len(list(calls.iterdir())) - before}


if __name__ == "__main__":
    for d in (flight, calls, out / "peaks"):
        d.mkdir()
    results = {}
    t = task("reads", touch, requires={"gpu": 1, "cpu": 0})
    results["requires"] = dict(t.requires)

    # Two tasks of one CPU per worker on a budget of 2: both finish, at most 2 blocks at once.
    a = task("a", in_flight, max_workers=2, requires={"cpu": 1})
    b = task("b", in_flight, max_workers=2, requires={"cpu": 1})
    results["shared"] = bool(daisy.run_blockwise(a | b, resources={"cpu": 2}, progress=False))
    peaks = [int(p.read_text()) for p in (out / "peaks").iterdir()]
    results["shared_blocks"] = len(peaks)
    results["shared_within_budget"] = max(peaks) <= 2

    # More units than the budget has, a resource the budget lacks: raised, no block ran.
    results["too_large"] = outcome(
        lambda: daisy.run_blockwise(task("big", touch, requires={"gpu": 4}), resources={"gpu": 2}, progress=False)
    )
    results["missing"] = outcome(
        lambda: daisy.run_blockwise(task("typo", touch, requires={"gpus": 1}), resources={"gpu": 2}, progress=False)
    )
    # Units of 0 (or less) mean nothing.
    results["zero_units"] = outcome(
        lambda: daisy.run_blockwise(task("zero", touch, requires={"gpu": 0, "cpu": -1}), resources={"cpu": 1}, progress=False)
    )
    # The serial mode ignores budgets.
    results["serial"] = outcome(
        lambda: daisy.run_blockwise(task("serial", touch, requires={"gpu": 1}), multiprocessing=False, resources={"gpu": 0})
    )
    # Requirements without a budget: where daisy 2.0 and blockwise differ.
    results["no_budget"] = outcome(
        lambda: daisy.run_blockwise(task("unbudgeted", touch, requires={"gpu": 1}), progress=False)
    )
    with open(out / "resources.json", "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
