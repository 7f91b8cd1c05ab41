#!/usr/bin/env python3
"""Side-by-side benchmark: the same box-mean workload with blockwise, daisy 1.x, daisy 2.0 and
dask, on the same zarr input; checks every output's sha256 and prints one Markdown table.

Setup (once): bash benches/compare/setup.sh
Run:
    cargo run --release -- sample --output /tmp/sample.zarr --size 512 --chunk 64
    cargo run --release -- bench zarr --input /tmp/sample.zarr --output /tmp/out.zarr --json > /tmp/bw.json
    python3 benches/compare/compare.py --input /tmp/sample.zarr --blockwise-json /tmp/bw.json
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = {
    "daisy1": (".venv-daisy1", ["daisy_run.py"], "daisy 1.x"),
    "daisy2": (".venv-daisy2", ["daisy_run.py"], "daisy 2.0"),
    "dask-threads": (".venv-dask", ["dask_run.py"], "threads"),
    "dask-local": (".venv-dask", ["dask_run.py"], "local"),
}


def run_impl(name, args, workdir):
    venv, script, extra = RUNS[name]
    python = HERE / venv / "bin" / "python"
    if not python.exists():
        return {"impl": name, "error": f"missing {python}: run setup.sh"}
    out = Path(workdir) / f"out-{name}.zarr"
    cmd = [str(python), str(HERE / "runners" / script[0]), args.input, args.dataset, str(out),
           str(args.workers), str(args.context), extra]
    env = dict(os.environ, PYTHONPATH=str(HERE / "runners"))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"impl": name, "error": f"timed out after {args.timeout} s"}
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"impl": name, "error": (p.stderr or p.stdout).strip().splitlines()[-1:] or ["failed"]}
    return json.loads(lines[-1])


def reference_sha(args):
    """The workload on the whole zero-padded volume, in one piece (numpy, in the dask venv)."""
    python = HERE / ".venv-dask" / "bin" / "python"
    code = (
        "import sys, hashlib, numpy as np, common\n"
        "a = common.open_input(sys.argv[1], sys.argv[2])[...]\n"
        "p = np.pad(a, 1)\n"
        "print(hashlib.sha256(common.box_mean(p).tobytes()).hexdigest())\n"
    )
    env = dict(os.environ, PYTHONPATH=str(HERE / "runners"))
    p = subprocess.run([str(python), "-c", code, args.input, args.dataset], capture_output=True,
                       text=True, timeout=args.timeout, env=env)
    return p.stdout.strip() if p.returncode == 0 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True)
    ap.add_argument("--dataset", default="raw")
    ap.add_argument("--workdir", default="/tmp/blockwise-compare")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--context", type=int, default=8)
    ap.add_argument("--blockwise-json", help="the JSON line of `blockwise bench zarr --json`")
    ap.add_argument("--only", default=",".join(RUNS), help="comma-separated subset of " + ",".join(RUNS))
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs")
    ap.add_argument("--timeout", type=int, default=1800)
    args = ap.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)

    rows = []
    if args.blockwise_json:
        bw = json.loads(Path(args.blockwise_json).read_text().strip().splitlines()[-1])
        rows.append({"impl": "blockwise", "workers": bw["workers"], "wall_s": bw["wall_s"],
                     "mb_per_s": bw["mb_per_s"], "output_sha256": bw["output_sha256"]})
    for name in [n for n in args.only.split(",") if n]:
        best = None
        for _ in range(args.repeat):
            r = run_impl(name, args, args.workdir)
            print(json.dumps(r), file=sys.stderr)
            if "error" in r:
                best = r
                break
            if best is None or r["wall_s"] < best["wall_s"]:
                best = r
        rows.append(best)

    ref = reference_sha(args)
    bw_rate = rows[0]["mb_per_s"] if rows and rows[0]["impl"] == "blockwise" else None
    print(f"| implementation | workers | wall s | MB/s | blockwise / this | checksum |")
    print(f"|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['impl']} | | | | | error: {r['error']} |")
            continue
        ratio = f"{bw_rate / r['mb_per_s']:.1f}×" if bw_rate else ""
        ok = "✔" if ref and r["output_sha256"] == ref else ("✗" if ref else "?")
        print(f"| {r['impl']} | {r['workers']} | {r['wall_s']:.2f} | {r['mb_per_s']:.1f} | {ratio} | {ok} |")
    print(f"\nreference sha256 (numpy, whole volume): {ref}")


if __name__ == "__main__":
    main()
