"""Benchmark: what `--evidence=all` (pcap, ladder, agent log and exchange of every case) costs.

    .venv/bin/python bench/evidence.py [--target=linux] [--repeat=5]

Runs the shipped cases (slow ones left out) alternately without and with `--evidence=all`, each a
fresh pytest process, and prints the whole run's wall time and the summed case wall time of both,
and the difference in per cent (the target is 20 % at most).
"""
import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import one_run  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="linux")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    runs = {"failures": [], "all": []}
    cases = {"failures": [], "all": []}
    with tempfile.TemporaryDirectory() as warm:  # the first run pays for the image and its start
        one_run(args.target, 1, warm)
    for _ in range(args.repeat):
        for mode in ("failures", "all"):
            with tempfile.TemporaryDirectory() as results:
                wall, records = one_run(args.target, 1, results, f"--evidence={mode}")
            runs[mode].append(wall)
            cases[mode].append(sum(r["durations"]["wall"] for r in records))
    print(f"target {args.target}, {args.repeat} runs of each mode, slow cases excluded")
    for mode in ("failures", "all"):
        print(f"--evidence={mode:<8}  run wall (s): median {statistics.median(runs[mode]):.2f}  "
              f"[{', '.join(f'{w:.2f}' for w in runs[mode])}]   "
              f"sum of case walls (s): median {statistics.median(cases[mode]):.2f}")
    run_cost = statistics.median(runs["all"]) / statistics.median(runs["failures"]) - 1
    case_cost = statistics.median(cases["all"]) / statistics.median(cases["failures"]) - 1
    print(f"cost of --evidence=all: {run_cost * 100:+.1f} % of the run, {case_cost * 100:+.1f} % of the cases' time")


if __name__ == "__main__":
    main()
