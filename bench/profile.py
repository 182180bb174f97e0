"""Where synfin's own time goes: cProfile of one run, the top functions printed.

    .venv/bin/python bench/profile.py [--target=linux] [--cases=cases/] [--top=25] [--sort=tottime]

One pytest process (no workers, so the whole run is in one profile), slow cases left out. The
profile is kept as bench/profile.prof for a closer look (python -m pstats, snakeviz ...).
"""
import argparse
import os
import pstats
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="linux")
    ap.add_argument("--cases", default="cases/")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--sort", default="tottime", choices=("tottime", "cumulative"))
    args = ap.parse_args()
    out = os.path.join(ROOT, "bench", "profile.prof")
    with open(os.devnull, "w") as quiet:
        subprocess.run([sys.executable, "-m", "cProfile", "-o", out, "-m", "pytest", args.cases,
                        f"--target={args.target}", "-m", "not slow", "-q", "-p", "no:cacheprovider",
                        "--results=/tmp/synfin-profile-results"], cwd=ROOT, stdout=quiet, stderr=quiet)
    stats = pstats.Stats(out)
    print(f"total {stats.total_tt:.2f} s of CPU in the pytest process; top {args.top} by {args.sort}:")
    stats.sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
