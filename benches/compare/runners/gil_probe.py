"""Does a processes-runner run leave the driver's other Python threads alone?

A thread counts in a pure-Python loop (it needs the GIL for every iteration). Its rate is
measured three ways, in this one process:

* `solo`: nothing else running, for `SOLO_S` seconds;
* `during_run`: while the main thread is inside `run_blockwise(..., runner="processes")` with
  `WORKERS` workers on `BLOCKS` no-op blocks (the run holds the GIL only to start and finish);
* `control`: while `WORKERS` plain busy-looping child processes run for as long as the run did
  (the same CPU competition without blockwise: on a machine with as many cores as workers, the
  counter loses CPU to them whatever the driver does);
* `pinned` (Linux, 2 or more CPUs): solo and during a run again, with the counting thread on
  CPU 0 and the run (the driver's engine threads and the worker processes, which inherit the
  main thread's affinity) on the other CPUs, so that only the GIL can slow the counter down.

For every phase it also reports (Linux) the counting thread's context switches: voluntary
ones are waits (for the GIL: the loop does nothing else that blocks), involuntary ones are
preemptions (other threads or processes wanting its CPU). A run that leaves the GIL alone
shows about as many voluntary switches as the solo phase, whatever the preemptions do to the
rate on a busy machine.

usage: gil_probe.py BLOCKS WORKERS SOLO_S   (prints one JSON line)
"""
import json
import os
import subprocess
import sys
import threading
import time

import blockwise_noop


def switches(tid):
    """(voluntary, involuntary) context switches of thread `tid` so far, or (None, None)."""
    try:
        with open(f"/proc/self/task/{tid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if "ctxt_switches" in line)
        return int(fields["voluntary_ctxt_switches"]), int(fields["nonvoluntary_ctxt_switches"])
    except (OSError, KeyError, ValueError):
        return None, None


class Counter(threading.Thread):
    """Counts in a loop until stopped; `rate()` is iterations per second while it ran."""

    def __init__(self, cpu=None):
        super().__init__(daemon=True)
        self.cpu = cpu
        self.count = 0
        self.stop = threading.Event()
        self.started_at = self.stopped_at = None
        self.voluntary = self.involuntary = None

    def run(self):
        if self.cpu is not None:
            os.sched_setaffinity(0, {self.cpu})  # this thread only
        n = 0
        stop = self.stop
        tid = threading.get_native_id()
        v0, i0 = switches(tid)
        self.started_at = time.perf_counter()
        while not stop.is_set():
            for _ in range(1000):
                n += 1
        self.stopped_at = time.perf_counter()
        v1, i1 = switches(tid)
        self.count = n
        self.voluntary = None if v0 is None else v1 - v0
        self.involuntary = None if i0 is None else i1 - i0

    def finish(self):
        self.stop.set()
        self.join(timeout=60)
        if self.is_alive():
            sys.exit("gil_probe: the counting thread did not stop")
        return {"per_s": self.count / (self.stopped_at - self.started_at),
                "voluntary_switches": self.voluntary, "involuntary_switches": self.involuntary}


def counted(during, pin=False):
    """The counter's rate while `during()` runs in the main thread; with `pin`, the counter
    runs on CPU 0 and the main thread (and what it starts) on the others."""
    c = Counter(cpu=0 if pin else None)
    before = os.sched_getaffinity(0) if pin else None
    if pin:
        os.sched_setaffinity(0, before - {0})
    try:
        c.start()
        result = during()
    finally:
        if pin:
            os.sched_setaffinity(0, before)
    return c.finish(), result


def can_pin():
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0) - {0}) >= 1 and 0 in os.sched_getaffinity(0)


def busy_children(workers, seconds):
    code = f"import time\nend = time.perf_counter() + {seconds}\nwhile time.perf_counter() < end: pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(workers)]
    for p in procs:
        p.wait(timeout=seconds + 60)


def main():
    blocks, workers, solo_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    solo, _ = counted(lambda: time.sleep(solo_s))
    during, (wall, completed) = counted(lambda: blockwise_noop.run(blocks, workers, "processes"))
    control, _ = counted(lambda: busy_children(workers, wall))
    out = {"scenario": "gil_probe", "workers": workers, "blocks": blocks, "completed": completed,
           "run_wall_s": wall}
    phases = {"solo": solo, "during_run": during, "control": control}
    if can_pin():
        phases["pinned_solo"], _ = counted(lambda: time.sleep(solo_s), pin=True)
        phases["pinned_during_run"], (out["pinned_run_wall_s"], _) = counted(
            lambda: blockwise_noop.run(blocks, workers, "processes"), pin=True)
    for name, r in phases.items():
        out[f"{name}_per_s"] = r["per_s"]
        out[f"{name}_switches"] = [r["voluntary_switches"], r["involuntary_switches"]]
    out["ratio"] = during["per_s"] / solo["per_s"]
    out["control_ratio"] = control["per_s"] / solo["per_s"]
    if "pinned_solo" in phases:
        out["pinned_ratio"] = phases["pinned_during_run"]["per_s"] / phases["pinned_solo"]["per_s"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
