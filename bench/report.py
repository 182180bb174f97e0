"""Benchmark: build the HTML report of a synthetic 150 cases x 7 targets run (1,050 cells) and
time how long Chromium takes to open its index.html, printed as figures.

    .venv/bin/python bench/report.py [--cases=150] [--targets=7] [--keep=DIR]

"open" = parse, style and lay out the whole page, measured inside the page (performance.now()
after a forced layout, in a copy of index.html); "chromium" = the wall time of a headless
screenshot of the page minus that of an empty page (the browser's own start-up left out).
"""
import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from harness.report import validate, write_site  # noqa: E402

AREAS = ("handshake", "close", "reset", "time_wait", "options", "retransmission")
VERDICTS = ["PASS"] * 14 + ["INFO"] * 3 + ["EXPECTED", "WARN", "FAIL", "UNSUPPORTED"]
PROBE = """<script>document.body.offsetHeight;
document.documentElement.dataset.openMs = performance.now().toFixed(1);</script>"""


def exchange(rng: random.Random) -> dict:
    segments, t, seq = [], 0.0, {"peer": 0, "target": 0}
    for i in range(rng.randint(3, 24)):
        frm = ("peer", "target")[i % 2]
        other = "target" if frm == "peer" else "peer"
        t += rng.choice((0.0004, 0.001, 0.2, 1.5))
        flags = "SYN" if i == 0 else "SYN,ACK" if i == 1 else rng.choice(("ACK", "PSH,ACK", "FIN,ACK"))
        length = 100 if flags == "PSH,ACK" else 0
        segments.append({"t": round(t, 6), "from": frm, "peer_port": 40000, "target_port": 8080, "flags": flags,
                         "seq": seq[frm], "ack": None if i == 0 else seq[other] + 1, "len": length, "win": 64240,
                         "options": [["mss", 1460], ["sackOK"], ["wscale", 7]] if "SYN" in flags else []})
        seq[frm] += length + (1 if "SYN" in flags or "FIN" in flags else 0)
    return {"segments": segments, "peer_ip": "10.0.0.1", "target_ip": "10.0.0.2", "failure": None,
            "calls": [{"op": "listen", "args": {"port": 8080}, "result": "ok", "t_call": 0.0, "t": 0.0}]}


def synthetic(n_cases: int, n_targets: int, seed: int = 1) -> dict:
    rng = random.Random(seed)
    targets = [f"stack{i}" for i in range(n_targets)]
    records = []
    for i in range(n_cases):
        area = AREAS[i % len(AREAS)]
        case = f"cases/{area}/test_area_{i // 10}.py::test_case_number_{i}_checks_something"
        for target in targets:
            verdict = rng.choice(VERDICTS)
            records.append({
                "case": case, "nodeid": f"{case}[{target}]", "target": target, "area": area,
                "title": f"§3.{i % 10}: a sentence of the RFC, checked by case {i}",
                "doc": f"§3.{i % 10}: a sentence of the RFC, checked by case {i}.",
                "requirement": f"R9293-3.{i % 12}", "level": "MUST", "requirement_text": "what the requirement says",
                "case_requirement": f"R9293-3.{i % 12}", "case_level": "MUST", "verdict": verdict, "step": None,
                "message": "" if verdict in ("PASS", "INFO") else "expected ACK seq=1 ack=2; received RST,ACK",
                "signature": None, "expectations": [], "expectation_met": verdict != "FAIL",
                "choices": {"time_wait": f"{rng.choice((60, 120, 240))} s"} if verdict == "INFO" else {},
                "notes": {}, "settings": {}, "steps": [], "checks": [], "durations": {"call": 0.1, "wall": 0.2},
                "evidence": None, "rerun": f"pytest '{case}' --target={target}", "exchange": exchange(rng)})
    return validate({"schema": "synfin-results/1", "synfin": {"version": "0.1.0", "commit": None},
                     "started": "2025-01-01T00:00:00+00:00",
                     "targets": {t: {"name": t, "stack": t, "version": "1.0", "runtime": "docker"} for t in targets},
                     "results": records})


def chromium(*args: str) -> float:
    browser = shutil.which("chromium") or sys.exit("chromium is not installed")
    t0 = time.monotonic()
    subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1200", *args],
                   capture_output=True, check=True, timeout=120)
    return time.monotonic() - t0


def open_ms(page: str) -> float:
    """Milliseconds from navigation to the end of the laid-out page, measured inside it."""
    browser = shutil.which("chromium") or sys.exit("chromium is not installed")
    dom = subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1200",
                          "--dump-dom", "file://" + page], capture_output=True, text=True, check=True).stdout
    return float(dom.split('data-open-ms="')[1].split('"')[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=150)
    ap.add_argument("--targets", type=int, default=7)
    ap.add_argument("--keep", help="write the site here and keep it")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="synfin-bench-report-")
    try:
        doc = synthetic(args.cases, args.targets)
        site = args.keep or os.path.join(work, "site")
        t0 = time.monotonic()
        write_site(doc, site)
        build = time.monotonic() - t0
        index = os.path.join(site, "index.html")
        probe = os.path.join(site, "probe.html")
        with open(index, encoding="utf-8") as f, open(probe, "w", encoding="utf-8") as g:
            g.write(f.read().replace("</body>", PROBE + "</body>"))
        opened = sorted(open_ms(probe) for _ in range(5))
        os.remove(probe)
        empty = os.path.join(work, "empty.html")
        with open(empty, "w") as f:
            f.write("<!doctype html><title>empty</title>")
        shot = os.path.join(work, "shot.png")
        bare = min(chromium(f"--screenshot={shot}", "file://" + empty) for _ in range(3))
        full = min(chromium(f"--screenshot={shot}", "file://" + index) for _ in range(3))
        cells = args.cases * args.targets
        print(f"cells                     {cells} ({args.cases} cases x {args.targets} targets)")
        size = os.path.getsize(index) // 1024
        print(f"build (write_site)        {build:.2f} s  ({args.cases} case pages, index {size} KiB)")
        print(f"open index.html           {opened[0]:.0f} ms best, {opened[2]:.0f} ms median of 5"
              "  (navigation + parse + style + layout, in the page)")
        print(f"chromium screenshot       {full - bare:.2f} s  over an empty page ({full:.2f} s vs {bare:.2f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
