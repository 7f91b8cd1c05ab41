"""Does a processes-runner run leave the driver's other Python threads alone?

A thread counts in a pure-Python loop (it needs the GIL for every iteration). Its rate is
measured three ways, in this one process:

* `solo`: nothing else running, for `SOLO_S` seconds;
* `during_run`: while the main thread is inside `run_blockwise(..., runner="processes")` with
  `WORKERS` workers on `BLOCKS` no-op blocks (the run holds the GIL only to start and finish);
* `control`: while `WORKERS` plain busy-looping child processes run for as long as the run did
  (the same CPU competition without blockwise: on a machine with as many cores as workers, the
  counter loses CPU to them whatever the driver does).

usage: gil_probe.py BLOCKS WORKERS SOLO_S   (prints one JSON line)
"""
import json
import subprocess
import sys
import threading
import time

import blockwise_noop


class Counter(threading.Thread):
    """Counts in a loop until stopped; `rate()` is iterations per second while it ran."""

    def __init__(self):
        super().__init__(daemon=True)
        self.count = 0
        self.stop = threading.Event()
        self.started_at = self.stopped_at = None

    def run(self):
        n = 0
        stop = self.stop
        self.started_at = time.perf_counter()
        while not stop.is_set():
            for _ in range(1000):
                n += 1
        self.stopped_at = time.perf_counter()
        self.count = n

    def finish(self):
        self.stop.set()
        self.join(timeout=60)
        if self.is_alive():
            sys.exit("gil_probe: the counting thread did not stop")
        return self.count / (self.stopped_at - self.started_at)


def counted(during):
    """The counter's rate while `during()` runs in the main thread."""
    c = Counter()
    c.start()
    result = during()
    return c.finish(), result


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
    print(json.dumps({
        "scenario": "gil_probe",
        "workers": workers,
        "blocks": blocks,
        "completed": completed,
        "run_wall_s": wall,
        "solo_per_s": solo,
        "during_run_per_s": during,
        "control_per_s": control,
        "ratio": during / solo,
        "control_ratio": control / solo,
    }))


if __name__ == "__main__":
    main()
