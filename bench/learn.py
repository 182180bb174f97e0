"""Benchmark: learn every stack's model and print the figures, then diff two of them live.

    .venv/bin/python bench/learn.py [--targets=linux,smoltcp,pytcp,lwip] [--client=linux]
                                    [--effort=standard] [--out=bench-models] [--diff=linux:smoltcp]

One stack at a time (the figures are a single learner's, on this machine's cores): the models go
to --out as synfin-learn writes them, with the diff beside them, ready for
`synfin-report --models`.
"""
import argparse
import json
import os
import sys
import time

from harness.cleanup import REGISTRY
from harness.learn import conformance, diff as model_diff
from harness.learn.learner import learn, parse_effort
from harness.learn.model import Model
from harness.learn.replay import confirm
from harness.session import Session


def learn_one(target: str, side: str, effort: dict, lanes: int, out: str) -> dict:
    began = time.monotonic()
    session = Session(target, "auto", notice=lambda m: print(f"  {m}", file=sys.stderr))
    try:
        session.ensure()
        started = time.monotonic() - began
        model = learn(session, side, effort, lanes)
    finally:
        session.close()
    model.write(out)
    fig = model.learning
    return {"target": target, "side": side, "states": len(model.states), "transitions": len(model.transitions),
            "queries": fig["queries"], "steps": fig["steps"], "wall_s": fig["wall_s"], "start_s": round(started, 1),
            "ms_per_step": fig["ms_per_step"], "relearns": fig["relearns"],
            "settings": ", ".join(f"{s['name']}={s['value']}" for s in model.settings) or "none",
            "dependent": len(model.settings_check["dependent"]) if model.settings_check else 0,
            "forbidden": sum(c.get("verdict") == "forbidden" for c in model.conformance)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", default="linux,smoltcp,pytcp,lwip")
    ap.add_argument("--client", default="linux", help="targets whose client side is learned too")
    ap.add_argument("--effort", default="standard")
    ap.add_argument("--lanes", type=int, default=16)
    ap.add_argument("--out", default="bench-models")
    ap.add_argument("--diff", default="linux:smoltcp", help="A:B, server models diffed and replayed live")
    args = ap.parse_args()
    effort = parse_effort(args.effort)
    REGISTRY.install()
    jobs = [(t, "server") for t in args.targets.split(",") if t] + \
        [(t, "client") for t in args.client.split(",") if t]
    rows = []
    for target, side in jobs:
        print(f"learning {target} {side} ...", file=sys.stderr, flush=True)
        try:
            rows.append(learn_one(target, side, effort, args.lanes, args.out))
        except Exception as exc:  # one stack's failure is a figure too
            rows.append({"target": target, "side": side, "error": f"{type(exc).__name__}: {exc}"})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"\neffort {effort['name']}: {effort['walks']} walks × {effort['length']} inputs per state, "
          f"{args.lanes} lanes, {os.cpu_count()} cores")
    print(f"{'model':<18} {'states':>6} {'trans':>6} {'queries':>8} {'steps':>8} {'learn s':>8} {'ms/step':>8} "
          f"{'relearn':>7} {'dep.':>5} {'forb.':>5}  settings")
    for r in rows:
        name = f"{r['target']} {r['side']}"
        if "error" in r:
            print(f"{name:<18} {r['error']}")
            continue
        print(f"{name:<18} {r['states']:>6} {r['transitions']:>6} {r['queries']:>8} {r['steps']:>8} {r['wall_s']:>8.1f} "
              f"{r['ms_per_step']:>8.2f} {r['relearns']:>7} {r['dependent']:>5} {r['forbidden']:>5}  {r['settings']}")
    if args.diff:
        a_name, b_name = args.diff.split(":")
        paths = [os.path.join(args.out, f"{n}-server.json") for n in (a_name, b_name)]
        if all(os.path.exists(p) for p in paths):
            a, b = (Model.load(p) for p in paths)
            differences = model_diff.distinguishing(a, b)
            for d in differences:
                d.requirement = conformance.requirement_for(d.tcp_state_a or d.tcp_state_b, d.word[-1])
            began = time.monotonic()
            confirm(a, b, differences, notice=lambda m: print(f"  {m}", file=sys.stderr))
            data = model_diff.to_json(paths[0], paths[1], a, b, differences)
            with open(os.path.join(args.out, f"{a.target}-server-vs-{b.target}-server.json"), "w") as f:
                json.dump(data, f, indent=1)
            print(f"\n{model_diff.render_text(data)}\n(replayed live in {time.monotonic() - began:.1f} s)")


if __name__ == "__main__":
    main()
