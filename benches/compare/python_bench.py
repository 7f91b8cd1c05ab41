#!/usr/bin/env python3
"""The blockwise Python package side by side with daisy 2.0 and dask, in one run.

Three parts (`--only noop,boxmean,gil`), each system in a fresh interpreter of its own venv,
the systems of a part taking turns for every repeat (so that the machine's noise spreads over
all of them):

* noop: BLOCKS no-op Python blocks on 2 workers: `run_blockwise(..., runner="processes")` and
  `runner="threads"` (runners/blockwise_noop.py) vs daisy 2.0's multiprocessing mode
  (runners/daisy_noop.py); blocks/s.
* boxmean: the `blockwise bench zarr` workload on a SIZE³ sample with a numpy process function:
  blockwise Python with its ZarrArray I/O (both runners, runners/blockwise_run.py), daisy 2.0 +
  zarr-python (runners/daisy_run.py), dask map_overlap on 2 threads + zarr-python
  (runners/dask_run.py), next to the Rust-native `blockwise bench zarr` run by the CLI; every
  output's sha256 (over its values in C order) must equal the CLI's.
* gil: a Python thread counting in a loop, alone and during a processes run of BLOCKS no-op
  blocks (runners/gil_probe.py); the ratio of its rates.

Every measurement is printed as a JSON line when it is made; Markdown tables (median, min–max
over the repeats) and the load (`uptime`) before and after follow. The exit status is 1 if a
measurement failed or an output's sha256 differs from the CLI's (speed is never checked).

    python3 benches/compare/python_bench.py --quick          # 10^4 blocks, 128³: a smoke test
    python3 benches/compare/python_bench.py --repeat 5       # 10^5 blocks, 512³: the README figures
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNNERS = HERE / "runners"
REPO = HERE.parent.parent


def uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


class Bench:
    def __init__(self, args):
        self.args = args
        self.results = []  # (part, system, dict)
        self.loads = []
        self.mismatches = []  # systems whose output differs from the CLI's

    def call(self, part, system, cmd, cwd=None):
        """Runs one measurement; records and prints its JSON line (or the error)."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(RUNNERS)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
        try:
            p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                               timeout=self.args.timeout, env=env, cwd=cwd)
            lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
            if p.returncode != 0 or not lines:
                tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or [f"exit {p.returncode}"]
                r = {"error": tail[0]}
            else:
                r = json.loads(lines[-1])
        except subprocess.TimeoutExpired:
            r = {"error": f"timed out after {self.args.timeout} s"}
        except OSError as e:
            r = {"error": f"cannot run {cmd[0]}: {e}"}
        r = {"part": part, "system": system, **r}
        print(json.dumps(r), flush=True)
        self.results.append(r)
        return r

    def of(self, part, system):
        return [r for r in self.results if r["part"] == part and r["system"] == system]

    def load(self, when):
        u = uptime()
        self.loads.append((when, u))
        print(json.dumps({"part": "load", "when": when, "uptime": u}), flush=True)


def spread(values, fmt):
    """'median (min–max)' of the values, or the single value."""
    if not values:
        return ""
    m = statistics.median(values)
    if len(values) == 1:
        return fmt.format(m)
    return f"{fmt.format(m)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def ok_values(rows, key):
    return [r[key] for r in rows if "error" not in r]


def errors(rows):
    return "; ".join(sorted({r["error"] for r in rows if "error" in r}))


# ---- noop ----------------------------------------------------------------------------------

def noop(b):
    a = b.args
    systems = [
        ("blockwise processes", [a.python, RUNNERS / "blockwise_noop.py", a.blocks, a.workers, "processes"]),
        ("blockwise threads", [a.python, RUNNERS / "blockwise_noop.py", a.blocks, a.workers, "threads"]),
        ("daisy 2.0 processes", [a.daisy2_python, RUNNERS / "daisy_noop.py", a.blocks, a.workers]),
    ]
    b.load("noop")
    for _ in range(a.repeat):
        for name, cmd in systems:
            b.call("noop", name, cmd, cwd=a.workdir)  # daisy writes daisy_logs/ into its cwd
    daisy = ok_values(b.of("noop", "daisy 2.0 processes"), "blocks_per_s")
    lines = [f"No-op Python blocks: {a.blocks:,} blocks, {a.workers} workers",
             "", "| system | runs | blocks/s | wall s | vs daisy 2.0 |", "|---|---|---|---|---|"]
    for name, _ in systems:
        rows = b.of("noop", name)
        rate = ok_values(rows, "blocks_per_s")
        vs = f"{statistics.median(rate) / statistics.median(daisy):.1f}×" if rate and daisy else ""
        err = errors(rows)
        lines.append(f"| {name} | {len(rate)} | {spread(rate, '{:,.0f}')} | "
                     f"{spread(ok_values(rows, 'wall_s'), '{:.2f}')} | {vs}{' error: ' + err if err else ''} |")
    return lines


# ---- boxmean -------------------------------------------------------------------------------

def boxmean(b):
    a = b.args
    w = Path(a.workdir)
    sample = w / f"sample-{a.size}.zarr"
    if not (sample / a.dataset).exists():
        subprocess.run([str(a.cli), "sample", "--output", str(sample), "--dataset", a.dataset,
                        "--size", str(a.size), "--chunk", "64", "--overwrite"],
                       check=True, timeout=a.timeout, capture_output=True)
    common = [sample, a.dataset]
    systems = [
        ("blockwise CLI (Rust)", lambda out: [a.cli, "bench", "zarr", "--input", sample, "--output", out,
                                              "--dataset", a.dataset, "--workers", a.workers,
                                              "--context", a.context, "--json"]),
        ("blockwise python threads", lambda out: [a.python, RUNNERS / "blockwise_run.py", *common, out,
                                                  a.workers, a.context, "threads", a.filter]),
        ("blockwise python processes", lambda out: [a.python, RUNNERS / "blockwise_run.py", *common, out,
                                                    a.workers, a.context, "processes", a.filter]),
        ("daisy 2.0 + zarr-python", lambda out: [a.daisy2_python, RUNNERS / "daisy_run.py", *common, out,
                                                 a.workers, a.context, "daisy 2.0", a.filter]),
        ("dask map_overlap threads + zarr-python", lambda out: [a.python, RUNNERS / "dask_run.py", *common, out,
                                                                a.workers, a.context, "threads", a.filter]),
    ]
    b.load("boxmean")
    for _ in range(a.repeat):
        for i, (name, cmd) in enumerate(systems):
            b.call("boxmean", name, cmd(w / f"boxmean-out-{i}.zarr"), cwd=a.workdir)
    cli = b.of("boxmean", systems[0][0])
    refs = {r["output_sha256"] for r in cli if "error" not in r}
    cli_rate = ok_values(cli, "mb_per_s")
    lines = [f"Box mean on {a.size}³ uint8 (64³ chunks, {a.context} voxels of context), {a.workers} workers, "
             f"numpy filter `{a.filter}`",
             "", "| system | runs | wall s | MB/s | CLI / this | sha256 = CLI's |", "|---|---|---|---|---|---|"]
    for name, _ in systems:
        rows = b.of("boxmean", name)
        rate = ok_values(rows, "mb_per_s")
        vs = f"{statistics.median(cli_rate) / statistics.median(rate):.1f}×" if rate and cli_rate else ""
        shas = {r["output_sha256"] for r in rows if "error" not in r}
        same = "✔" if shas and len(refs) == 1 and shas == refs else ("✗" if shas else "")
        if same == "✗":
            b.mismatches.append(name)
        err = errors(rows)
        lines.append(f"| {name} | {len(rate)} | {spread(ok_values(rows, 'wall_s'), '{:.2f}')} | "
                     f"{spread(rate, '{:.1f}')} | {vs} | {same}{' error: ' + err if err else ''} |")
    lines.append("")
    lines.append(f"CLI output sha256: {', '.join(sorted(refs)) or '?'}")
    return lines


# ---- gil -----------------------------------------------------------------------------------

def gil(b):
    a = b.args
    b.load("gil")
    for _ in range(a.repeat):
        b.call("gil", "gil probe", [a.python, RUNNERS / "gil_probe.py", a.blocks, a.workers, a.solo_s],
               cwd=a.workdir)
    rows = [r for r in b.of("gil", "gil probe")]
    good = [r for r in rows if "error" not in r]
    lines = [f"A counting Python thread during `run_blockwise(runner=\"processes\")`: {a.blocks:,} no-op "
             f"blocks, {a.workers} workers",
             "", "| runs | solo it/s | ratio | control ratio | pinned ratio | waits solo / run / pinned run |",
             "|---|---|---|---|---|---|"]
    waits = "; ".join("/".join(str(r.get(f"{k}_switches", [None])[0]) for k in ("solo", "during_run", "pinned_during_run"))
                      for r in good)
    err = errors(rows)
    lines.append(f"| {len(good)} | {spread(ok_values(rows, 'solo_per_s'), '{:,.0f}')} | "
                 f"{spread(ok_values(rows, 'ratio'), '{:.2f}')} | "
                 f"{spread(ok_values(rows, 'control_ratio'), '{:.2f}')} | "
                 f"{spread([r['pinned_ratio'] for r in good if 'pinned_ratio' in r], '{:.2f}')} | "
                 f"{waits}{' error: ' + err if err else ''} |")
    lines += ["", "ratio: the thread's rate during the run / alone; control: next to "
              f"{a.workers} busy-looping processes instead of the run; pinned: the thread alone on CPU 0, "
              "the run on the others; waits: the thread's voluntary context switches (GIL waits)."]
    return lines


PARTS = {"noop": noop, "boxmean": boxmean, "gil": gil}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10^4 blocks and a 128³ sample (smoke test)")
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
    ap.add_argument("--repeat", type=int, help="runs of every measurement (default 3, 1 with --quick)")
    ap.add_argument("--blocks", type=int, help="no-op blocks (default 10^5, 10^4 with --quick)")
    ap.add_argument("--size", type=int, help="edge of the box-mean sample (default 512, 128 with --quick)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--context", type=int, default=8)
    ap.add_argument("--dataset", default="raw")
    ap.add_argument("--filter", default="separable", choices=["separable", "naive"],
                    help="the numpy box mean of the Python systems (runners/common.py)")
    ap.add_argument("--python", default=str(HERE / ".venv-blockwise" / "bin" / "python"),
                    help="a Python with blockwise (release build), numpy, zarr 3, dask (setup.sh)")
    ap.add_argument("--daisy2-python", default=str(HERE / ".venv-daisy2" / "bin" / "python"),
                    help="a Python with daisy 2.0, numpy, zarr 3, funlib.geometry (setup.sh)")
    ap.add_argument("--cli", default=str(REPO / "target" / "release" / "blockwise"),
                    help="the blockwise binary (cargo build --release)")
    ap.add_argument("--workdir", default="/tmp/blockwise-python-bench")
    ap.add_argument("--solo-s", type=float, help="seconds the counting thread runs alone (default 2, 0.5 with --quick)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per measurement")
    args = ap.parse_args()
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.blocks = args.blocks or (10_000 if args.quick else 100_000)
    args.size = args.size or (128 if args.quick else 512)
    args.solo_s = args.solo_s or (0.5 if args.quick else 2.0)
    for what in ("python", "daisy2_python", "cli"):
        setattr(args, what, os.path.abspath(getattr(args, what)))  # not resolved: venv pythons are links
        if not Path(getattr(args, what)).exists():
            sys.exit(f"--{what.replace('_', '-')} {getattr(args, what)} does not exist (see setup.sh)")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    args.workdir = str(Path(args.workdir).resolve())

    b = Bench(args)
    tables = []
    for part in [p for p in args.only.split(",") if p]:
        if part not in PARTS:
            sys.exit(f"--only: unknown part {part!r} (use {', '.join(PARTS)})")
        tables.append(PARTS[part](b))
    b.load("end")
    print()
    for t in tables:
        print("\n".join(t))
        print()
    print("Load (uptime):")
    for when, u in b.loads:
        print(f"  before {when}: {u}" if when != "end" else f"  at the end: {u}")
    if b.mismatches:
        print(f"outputs differ from the CLI's: {', '.join(b.mismatches)}", file=sys.stderr)
    sys.exit(1 if b.mismatches or any("error" in r for r in b.results) else 0)


if __name__ == "__main__":
    main()
