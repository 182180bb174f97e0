"""Benchmark: the state × event matrix (cases/matrix/) per target: cells, verdicts, wall time.

    .venv/bin/python bench/matrix.py [--targets=linux,lwip,smoltcp,pytcp] [--workers=2]

Each target is a fresh pytest process (start-up included), as a user runs it; the target is 60 s
for the whole matrix on one stack on 2 cores. Also printed: the time the cells spent waiting on
purpose (silence windows, answers that never came) and the slowest cells.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import ROOT  # noqa: E402

import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", default="linux,lwip,smoltcp,pytcp")
    ap.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (0: one process)")
    args = ap.parse_args()
    for target in args.targets.split(","):
        with tempfile.TemporaryDirectory() as results:
            cmd = [sys.executable, "-m", "pytest", "cases/matrix/", f"--target={target}", "-q",
                   "-p", "no:cacheprovider", f"--results={results}", f"-n{args.workers}"]
            t0 = time.monotonic()
            subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            wall = time.monotonic() - t0
            path = os.path.join(results, "results.json")
            records = json.load(open(path))["results"] if os.path.exists(path) else []
        counts = {}
        for r in records:
            counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
        cases = sum(r["durations"]["wall"] for r in records)
        waited = sum(r["durations"].get("waited", 0.0) for r in records)
        print(f"{target:<8} {len(records)} cells  run {wall:5.1f} s with -n {args.workers}  (cells' own time "
              f"{cases:4.1f} s, {waited:4.1f} s of it waiting)  " + "  ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        slow = sorted(records, key=lambda r: -r["durations"]["wall"])[:3]
        print("         slowest: " + ", ".join(f"{r['case'].split('[')[-1].rstrip(']')} {r['durations']['wall']:.2f} s"
                                       for r in slow))


if __name__ == "__main__":
    main()
