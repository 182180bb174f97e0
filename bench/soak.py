"""Soak: cases/ run again and again against each target; every case whose outcome changed.

    .venv/bin/python bench/soak.py --target=pytcp [--runs=20] [--load] [--results=DIR] [PYTEST ARGS]
    .venv/bin/python bench/soak.py --target=all --runs=3 -m "not slow" -n 0

Each run is a fresh `.venv/bin/pytest cases/ --target=<t> --results=DIR/<t>/run-K` with the extra
pytest arguments (its output in DIR/<t>/run-K.log). The outcome of a case is its verdict, the step
that decided it and the choices it recorded; a case whose outcome is not the same in every run is
reported with each outcome, its message and the runs that showed it. `--load` keeps every core but
one busy with busy-loop processes of its own for the whole soak (stopped by pid at the end, on
Ctrl-C too; they die with the soak even if it is killed). A benchmark prints: the exit code is 2
when a run left no readable results.json (4 for a usage error), never because of what the runs
found.
"""
import argparse
import ctypes
import json
import os
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from harness.report.errors import BadInput  # noqa: E402
from harness.report.load import load  # noqa: E402
from harness.targets import parse_list  # noqa: E402

PR_SET_PDEATHSIG = 1


# -- the comparison ------------------------------------------------------------------------
def outcome(record: dict) -> tuple:
    """What must not change from run to run: verdict, deciding step, choices."""
    return record["verdict"], record.get("step"), json.dumps(record.get("choices") or {}, sort_keys=True)


def changes(docs: list[dict | None]) -> dict:
    """(case, target) -> {outcome: [run numbers, from 1]} for every pair whose outcome differs
    between the readable documents (None: a run that could not be read, left out); a pair missing
    from some readable run has the outcome None there."""
    seen: dict = {}
    readable = [(n, doc) for n, doc in enumerate(docs, 1) if doc is not None]
    for n, doc in readable:
        for r in doc["results"]:
            seen.setdefault((r["case"], r["target"]), {}).setdefault(outcome(r), []).append(n)
    out = {}
    for pair, by in seen.items():
        missing = [n for n, _ in readable if not any(n in runs for runs in by.values())]
        if missing:
            by[None] = missing
        if len(by) > 1:
            out[pair] = by
    return out


def messages(docs: list[dict | None], pair: tuple, runs: list[int]) -> list[str]:
    """What `pair` showed in `runs`, each distinct text once: the deviation's first line (its
    signature), else the message's first line, else the notes (a PASS or INFO has no message)."""
    lines = []
    for n in runs:
        for r in docs[n - 1]["results"]:
            if (r["case"], r["target"]) == pair:
                text = (r.get("signature") or (r.get("message") or "").strip().split("\n", 1)[0]
                        or (f"notes: {json.dumps(r['notes'], sort_keys=True)}" if r.get("notes") else ""))
                if text and text not in lines:
                    lines.append(text if len(text) <= 300 else text[:297] + "...")
    return lines


def spans(runs: list[int]) -> str:
    """1,2,3,5 -> "1-3, 5"."""
    out, start = [], None
    for i, n in enumerate(runs):
        if start is None:
            start = n
        if i + 1 == len(runs) or runs[i + 1] != n + 1:
            out.append(str(start) if start == n else f"{start}-{n}")
            start = None
    return ", ".join(out)


# -- the load ------------------------------------------------------------------------------
def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Load:
    """`count` busy-loop processes for as long as the block runs."""

    def __init__(self, count: int):
        self.count = count
        self.procs: list[subprocess.Popen] = []

    def __enter__(self):
        for _ in range(self.count):
            self.procs.append(subprocess.Popen(
                [sys.executable, "-c", "while True: pass"], preexec_fn=_die_with_parent,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
        for p in self.procs:
            p.wait()


# -- the runs ------------------------------------------------------------------------------
def _interruptible() -> None:
    # A shell starts a background job with SIGINT ignored, and exec keeps it so: pytest must see it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def one_run(target: str, where: str, extra: list[str]) -> tuple[float, int, dict | None, str]:
    """(wall seconds, pytest's exit code, the results document or None, why it could not be read)."""
    cmd = [os.path.join(ROOT, ".venv", "bin", "pytest"), "cases/", f"--target={target}", f"--results={where}",
           "-p", "no:cacheprovider", *extra]
    path = os.path.join(where, "results.json")
    if os.path.exists(path):
        os.remove(path)  # a stale file must not pass for this run's
    t0 = time.monotonic()
    with open(where + ".log", "w") as log:
        # A group of its own: Ctrl-C reaches the soak alone, which hands pytest one SIGINT and
        # waits for it to clean up its labs (a second SIGINT could cut that cleanup short).
        proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                process_group=0, preexec_fn=_interruptible)
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            proc.wait()
            raise
    wall = time.monotonic() - t0
    try:
        return wall, code, load(path), ""
    except BadInput as exc:
        return wall, code, None, str(exc)


def soak(target: str, runs: int, directory: str, extra: list[str]) -> bool:
    """`runs` runs of one target, then its figures and changes; False if a run could not be read."""
    docs, walls, codes = [], [], []
    os.makedirs(os.path.join(directory, target), exist_ok=True)
    for k in range(1, runs + 1):
        where = os.path.join(directory, target, f"run-{k}")
        wall, code, doc, why = one_run(target, where, extra)
        docs.append(doc)
        walls.append(wall)
        codes.append(code)
        print(f"  {target} run {k}/{runs}: {wall:.1f} s, exit {code}"
              + (f", {len(doc['results'])} cases" if doc else f", NO RESULTS: {why} (its output: {where}.log)"), flush=True)
    read = [d for d in docs if d is not None]
    found = changes(docs)
    exits = ", ".join(f"{c}×{codes.count(c)}" for c in sorted(set(codes)))
    cases = sorted({len(d["results"]) for d in read})
    print(f"{target}: {runs} runs, wall per run median {statistics.median(walls):.1f} s "
          f"(min {min(walls):.1f}, max {max(walls):.1f}), {'/'.join(map(str, cases)) or 'no'} cases per run, "
          f"exit codes {exits}; unreadable runs {runs - len(read)}; cases whose outcome changed: {len(found)}")
    for (case, _), by in sorted(found.items()):
        print(f"  {case}")
        for result, in_runs in sorted(by.items(), key=lambda kv: -len(kv[1])):
            if result is None:
                print(f"    absent: runs {spans(in_runs)}")
                continue
            verdict, step, choices = result
            print(f"    {verdict}" + (f" at step {step!r}" if step else "")
                  + (f", choices {choices}" if choices != "{}" else "") + f": runs {spans(in_runs)} ({len(in_runs)}×)")
            for line in messages(docs, (case, target), in_runs)[:3]:
                print(f"        {line}")
    return len(read) == runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="other arguments are passed to pytest (after -- if they clash)")
    ap.add_argument("--target", action="append", required=True,
                    help="a target, several (comma-separated or repeated) or all (every known target)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--load", action="store_true", help="keep every core but one busy meanwhile")
    ap.add_argument("--results", default=os.path.join(ROOT, "results", "soak"),
                    help="where the runs keep their results (DIR/<target>/run-K)")
    args, extra = ap.parse_known_args()
    if extra[:1] == ["--"]:
        extra = extra[1:]
    try:
        targets = parse_list(",".join(args.target))
        if args.runs < 1:
            raise ValueError(f"--runs={args.runs}: at least one run")
    except ValueError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 4  # a usage error, as pytest's own
    busy = max(1, (os.cpu_count() or 2) - 1) if args.load else 0
    print(f"soak: {', '.join(targets)}; {args.runs} runs each of pytest cases/ {' '.join(extra)}; "
          f"load: {busy} busy-loop process(es); results under {args.results}", flush=True)
    # SIGTERM ends the soak as Ctrl-C does, so the load is stopped on the way out (SIGINT too when
    # a shell started the soak in the background with SIGINT ignored).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ok = True
    t0 = time.monotonic()
    try:
        with Load(busy):
            for target in targets:
                ok = soak(target, args.runs, args.results, extra) and ok
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        return 130
    print(f"soak: {time.monotonic() - t0:.0f} s in all")
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
