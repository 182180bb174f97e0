"""Every speed and memory figure of one target, each beside its goal, in one command.

    .venv/bin/python bench/speed.py [--target=linux] [--repeat=3] [--no-matrix]
    .venv/bin/python bench/speed.py --target=all [--slow]     # every stack in one run, -n 2

For one target, fresh pytest processes as a user runs them (slow cases left out):
- `--repeat` runs of cases/ with -n 0: per-case harness overhead (wall minus the waits a case asks
  for), wall per hand-written case (cases/ outside cases/matrix/), pytest start to the first case,
  the last verdict to the process's exit, the first case's wait for its target, peak memory of
  the process and of the target's container (bench/timeline.py records them);
- one more with --evidence=all: every agent call's time, by operation;
- the primitives in-process (bench/primitives.py): target start from a built image, conns;
- the state × event matrix (cases/matrix/) with -n 0 and -n 2.
With --target=all: the wall time of every stack's whole suite in one run with -n 2.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from primitives import measure as measure_primitives  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
KERNEL_TARGETS = {"linux"}
START_GOAL = {"pytcp": 0.6}  # seconds; 0.25 for the others
MiB = 1 << 20


def run(args: list[str], workers: int = 0) -> dict:
    """One pytest process with bench/timeline.py: its results, timeline and wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        timeline = os.path.join(tmp, "timeline.json")
        cmd = [sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider", "-p", "timeline",
               f"--results={tmp}/results"] + ([f"-n{workers}"] if workers else [])
        env = dict(os.environ, SYNFIN_TIMELINE=timeline,
                   PYTHONPATH=os.pathsep.join(filter(None, [BENCH, os.environ.get("PYTHONPATH")])))
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        t1 = time.time()
        path = os.path.join(tmp, "results", "results.json")
        if not os.path.exists(path):
            sys.exit(f"benchmark run produced no results: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        marks = [json.load(open(os.path.join(tmp, f))) for f in os.listdir(tmp) if f.startswith("timeline.json")]
        return {"results": json.load(open(path))["results"], "marks": marks, "t0": t0, "t1": t1,
                "wall": t1 - t0, "exit": proc.returncode}


def median(values):
    return statistics.median(values) if values else float("nan")


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else float("nan")


class Table:
    def __init__(self):
        self.rows = []

    def add(self, what: str, value: str, goal: str = "", met: bool | None = None) -> None:
        self.rows.append((what, value, goal, {True: "met", False: "NOT MET", None: ""}[met]))

    def print(self) -> None:
        w = [max(len(r[i]) for r in self.rows) for i in range(3)]
        for what, value, goal, met in self.rows:
            print(f"  {what:<{w[0]}}  {value:>{w[1]}}  {goal:<{w[2]}}  {met}")


def one_target(target: str, repeat: int, matrix: bool) -> None:
    table = Table()
    overhead, wall, hand_wall, to_first, to_exit, first_wait, rss, container = [], [], [], [], [], [], [], []
    verdicts = []
    for _ in range(repeat):
        r = run(["cases/", f"--target={target}", "-m", "not slow"])
        m = r["marks"][0]
        walls = [x["durations"]["wall"] for x in r["results"]]
        for x in r["results"]:
            d = x["durations"]
            overhead.append((d["wall"] - d.get("waited", 0.0)) * 1000)
            wall.append(d["wall"] * 1000)
            if not x["case"].startswith("cases/matrix/"):
                hand_wall.append(d["wall"] * 1000)
        cases = m["cases"]
        to_first.append(cases[0]["start"] - r["t0"])
        to_exit.append(r["t1"] - max(c["verdict"] or c["end"] for c in cases))
        first_wait.append(cases[0]["end"] - cases[0]["start"] - median(walls))
        rss.append(m["max_rss"] / 1024)
        container += [v / MiB for v in m["containers"].values() if v]
        verdicts.append(sorted((x["case"], x["verdict"], x["step"], json.dumps(x["choices"], sort_keys=True))
                               for x in r["results"]))
    n = len(overhead) // repeat
    same = all(v == verdicts[0] for v in verdicts)
    print(f"target {target}: {repeat} runs of {n} cases (slow cases left out), -n 0; "
          f"verdicts the same in every run: {'yes' if same else 'NO'}")
    table.add("per-case harness overhead, median", f"{median(overhead):.1f} ms", "≤ 3 ms (linux)",
              median(overhead) <= 3 if target in KERNEL_TARGETS else None)
    table.add("per-case harness overhead, p90", f"{pct(overhead, 90):.1f} ms")
    table.add("wall per hand-written case, median", f"{median(hand_wall):.1f} ms", "≤ 8 ms (linux)",
              median(hand_wall) <= 8 if target in KERNEL_TARGETS else None)
    table.add("wall per case (matrix included), median", f"{median(wall):.1f} ms")
    table.add("pytest start → first case", f"{median(to_first):.3f} s", "≤ 0.3 s", median(to_first) <= 0.3)
    table.add("last verdict → process exit", f"{median(to_exit):.3f} s", "≤ 0.1 s", median(to_exit) <= 0.1)
    table.add("first case's wait for its target (beyond a case)", f"{median(first_wait):.3f} s")
    table.add("peak memory of the pytest process", f"{median(rss):.0f} MiB", "≤ 150 MiB", median(rss) <= 150)
    if container:
        table.add("peak memory of the target's container", f"{max(container):.0f} MiB", "≤ 50 MiB",
                  max(container) <= 50)

    r = run(["cases/", f"--target={target}", "-m", "not slow", "--evidence=all"])
    ops: dict[str, list[float]] = {}
    for x in r["results"]:
        for c in (x.get("exchange") or {}).get("calls", []):
            ops.setdefault(c["op"], []).append((c["t"] - c["t_call"]) * 1000)
    slow_ops = sorted(((median(v), op) for op, v in ops.items()), reverse=True)
    table.add("agent calls in a run", f"{sum(len(v) for v in ops.values())}")
    for med, op in slow_ops:
        table.add(f"  {op} ({len(ops[op])} calls), median / p90", f"{med:.2f} / {pct(ops[op], 90):.2f} ms",
                  "≤ 1 ms", med <= 1)

    p = measure_primitives(target, n=200)
    goal = START_GOAL.get(target, 0.25)
    table.add(f"target start from a built image ({p['runtime']}), median", f"{median(p['start']):.3f} s",
              f"≤ {goal} s", median(p["start"]) <= goal)
    table.add("agent round trip (hello), median", f"{median(p['hello']) * 1000:.3f} ms")
    table.add("peer SYN → SYN-ACK, median", f"{median(p['send_and_wait']) * 1000:.3f} ms")
    if p["conns_one"]:
        conns = median(p["conns_one"]) * 1000
        table.add("conns (one connection), median", f"{conns:.3f} ms", "≤ 0.5 ms (kernel)",
                  conns <= 0.5 if target in KERNEL_TARGETS else None)
    else:
        table.add("conns (one connection), median", "—", "no connection listing")
    table.add("reset (teardown, one socket left open), median", f"{median(p['reset']) * 1000:.3f} ms")

    if matrix:
        m0 = run(["cases/matrix/", f"--target={target}"])
        m2 = run(["cases/matrix/", f"--target={target}"], workers=2)
        table.add(f"state × event matrix ({len(m0['results'])} cells), -n 0", f"{m0['wall']:.1f} s", "≤ 60 s",
                  m0["wall"] <= 60)
        table.add("state × event matrix, -n 2", f"{m2['wall']:.1f} s")
        table.add("  speed-up of -n 2", f"{m0['wall'] / m2['wall']:.2f}×", "≥ 1.7×", m0["wall"] / m2["wall"] >= 1.7)
        rss2 = [mk["max_rss"] / 1024 for mk in m2["marks"] if "max_rss" in mk and mk.get("cases")]
        if rss2:
            table.add("peak memory of a -n 2 worker", f"{max(rss2):.0f} MiB", "≤ 150 MiB", max(rss2) <= 150)
    table.print()


def all_stacks(slow: bool) -> None:
    args = ["cases/", "--target=all"] + ([] if slow else ["-m", "not slow"])
    r = run(args, workers=2)
    by_target: dict[str, int] = {}
    for x in r["results"]:
        by_target[x["target"]] = by_target.get(x["target"], 0) + 1
    table = Table()
    what = "every stack's whole suite" + ("" if slow else " (slow cases left out)") + ", -n 2"
    table.add(what, f"{r['wall']:.0f} s", "≤ 300 s (seven stacks)", r["wall"] <= 300)
    for name, count in sorted(by_target.items()):
        mine = [x for x in r["results"] if x["target"] == name]
        table.add(f"  {name}: {count} cases, their own time", f"{sum(x['durations']['wall'] for x in mine):.0f} s")
    rss = [mk["max_rss"] / 1024 for mk in r["marks"] if mk.get("cases")]
    table.add("peak memory of a worker", f"{max(rss):.0f} MiB", "≤ 150 MiB", max(rss) <= 150)
    cont = {k: v / MiB for mk in r["marks"] for k, v in mk["containers"].items() if v}
    for name, peak in sorted(cont.items()):
        table.add(f"peak memory of the {name} container", f"{peak:.0f} MiB", "≤ 50 MiB", peak <= 50)
    print(f"targets {', '.join(sorted(by_target))}; exit code {r['exit']}")
    table.print()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="linux")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-matrix", action="store_true", help="leave out the matrix's two runs")
    ap.add_argument("--slow", action="store_true", help="with --target=all: the slow cases too")
    args = ap.parse_args()
    if args.target == "all":
        all_stacks(args.slow)
    else:
        one_target(args.target, args.repeat, not args.no_matrix)


if __name__ == "__main__":
    main()
