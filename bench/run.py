"""Benchmark: per-case harness overhead and the whole run's wall time, printed as figures.

    .venv/bin/python bench/run.py [--target=linux] [--workers=N] [--repeat=3]

Overhead of a case = its wall time (setup + call + teardown) minus the waits it asked for
(expect_silence windows, lab.peer.wait); it still contains the stack's own reaction times
(delayed ACKs, retransmission timers), so a second figure also leaves out the time the peer spent
blocked waiting for the target's segments. Slow cases (real protocol timers) are left out. The first
run also pays for the target's start; each repeat is a fresh pytest process, as a user runs it.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_run(target: str, workers: int, results: str, *extra: str) -> tuple[float, list[dict]]:
    cmd = [sys.executable, "-m", "pytest", "cases/", f"--target={target}", "-m", "not slow", "-q",
           "-p", "no:cacheprovider", f"--results={results}", *extra]
    if workers > 1:
        cmd += ["-n", str(workers)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    path = os.path.join(results, "results.json")
    if not os.path.exists(path):
        sys.exit(f"benchmark run produced no results:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, json.load(open(path))["results"]


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="linux")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    walls, overheads, own, counts = [], [], [], {}
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as results:
            wall, records = one_run(args.target, args.workers, results)
        walls.append(wall)
        for r in records:
            d = r["durations"]
            overheads.append((d["wall"] - d.get("waited", 0.0)) * 1000)
            # Silence windows are spent blocked too: count them once.
            own.append((d["wall"] - max(d.get("waited", 0.0), d.get("blocked", 0.0))) * 1000)
            counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    print(f"target {args.target}, {args.workers} worker(s), {args.repeat} runs, "
          f"{len(overheads) // args.repeat} cases per run (slow cases excluded)")
    print(f"verdicts over all runs: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}")
    print(f"per-case harness overhead (ms): median {statistics.median(overheads):.1f}  "
          f"p90 {pct(overheads, 90):.1f}  max {max(overheads):.1f}")
    print(f"  of which the harness's own time, not blocked on the target's segments (ms): "
          f"median {statistics.median(own):.1f}  p90 {pct(own, 90):.1f}")
    print(f"whole run wall time (s): {', '.join(f'{w:.2f}' for w in walls)}  "
          f"(median {statistics.median(walls):.2f}; includes interpreter start, collection, target start)")


if __name__ == "__main__":
    main()
