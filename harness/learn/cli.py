"""synfin-learn: a stack's TCP learned as a Mealy machine, and two models compared.

    synfin-learn --target=linux --out models/ [--side=server|client] [--effort=standard]
    synfin-learn diff models/linux-server.json models/smoltcp-server.json [--out models/]
"""
import argparse
import json
import os
import sys
import time

from .. import targets
from ..cleanup import REGISTRY
from ..errors import HarnessError
from ..session import Session
from .learner import EFFORTS, learn, parse_effort


def say(message: str) -> None:
    print(f"synfin-learn: {message}", file=sys.stderr, flush=True)


def learn_main(argv) -> int:
    ap = argparse.ArgumentParser(prog="synfin-learn", description="Learn a stack's TCP as a Mealy machine.")
    ap.add_argument("--target", required=True, help=f"one of: {', '.join(sorted(targets.known()))}")
    ap.add_argument("--out", required=True, help="directory for TARGET-SIDE.json, .dot and .svg")
    ap.add_argument("--side", choices=("server", "client"), default="server")
    ap.add_argument("--effort", default="standard",
                    help=f"the equivalence oracle's effort: {', '.join(EFFORTS)}, or walks=N,length=L")
    ap.add_argument("--lanes", type=int, default=16, help="words run at once by the equivalence oracle")
    ap.add_argument("--seed", type=int, default=0, help="the oracle's random walks")
    ap.add_argument("--runtime", choices=("auto", "docker", "netns"), default="auto")
    ap.add_argument("--no-settings-check", action="store_true",
                    help="skip the replay with the stack's default settings")
    args = ap.parse_args(argv)
    try:
        effort = parse_effort(args.effort)
    except ValueError as exc:
        ap.error(str(exc))
    if args.target not in sorted(targets.known()):
        ap.error(f"unknown target {args.target!r}: one of {', '.join(sorted(targets.known()))}")
    if args.lanes < 1:
        ap.error("--lanes must be at least 1")
    REGISTRY.install()
    session = Session(args.target, args.runtime, notice=say)
    began = time.monotonic()
    try:
        session.ensure()
        say(f"learning the {args.side} side of {args.target} (effort {effort['name']}: "
            f"{effort['walks']} walks × {effort['length']} inputs per state, {args.lanes} lanes)")
        model = learn(session, args.side, effort, args.lanes, args.seed, not args.no_settings_check, progress=say)
    finally:
        session.close()
    paths = model.write(args.out)
    fig = model.learning
    forbidden = [c for c in model.conformance if c.get("verdict") == "forbidden"]
    print(f"{args.target} {args.side}: {len(model.states)} states, {len(model.transitions)} transitions; "
          f"{fig['queries']} queries, {fig['steps']} steps, {fig['wall_s']:.1f} s learning "
          f"({fig['ms_per_step']} ms per step), {time.monotonic() - began:.1f} s in all")
    for s in model.settings:
        print(f"  setting changed for learning: {s['name']} = {s['value']} (default {s['default']})")
    if model.settings_check is not None:
        dep = model.settings_check["dependent"]
        print(f"  with the default settings, {len(dep)} of the sampled transitions answer otherwise"
              + "".join(f"\n    {' '.join(d['word'])}: learned {d['learned'][-1]}, default {d['default'][-1]}"
                        for d in dep[:10]))
    if forbidden:
        groups: dict[tuple, list] = {}
        for c in forbidden:  # many model states may share one RFC state: one line per finding
            groups.setdefault((c["tcp_state"], c["input"], c["output"]), []).append(c)
        print(f"  {len(forbidden)} learned transitions the RFC forbids ({len(groups)} distinct):")
        for (tcp_state, letter, output), found in groups.items():
            c = found[0]
            states = ", ".join(f["state"] for f in found)
            print(f"    {tcp_state} --{letter} / {output}--> in {states}: {c['requirement']} allows "
                  f"{' or '.join(c['allowed'])}" + (f"; {c['why']}" if c.get("why") else ""))
    print("  wrote " + ", ".join(paths.values()))
    return 0


def diff_main(argv) -> int:
    from . import conformance, diff as model_diff
    from .replay import confirm

    ap = argparse.ArgumentParser(prog="synfin-learn diff",
                                 description="The shortest input sequences on which two models differ.")
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--out", help="directory for A-vs-B.json (default: beside A)")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--no-replay", action="store_true", help="do not confirm the differences live")
    ap.add_argument("--runtime", choices=("auto", "docker", "netns"), default="auto")
    args = ap.parse_args(argv)
    from .model import Model
    try:
        a, b = Model.load(args.a), Model.load(args.b)
    except (OSError, ValueError) as exc:
        ap.error(str(exc))
    differences = model_diff.distinguishing(a, b, args.limit)
    for d in differences:
        d.requirement = conformance.requirement_for(d.tcp_state_a or d.tcp_state_b, d.word[-1])
    if not args.no_replay and differences:
        REGISTRY.install()
        confirm(a, b, differences, args.runtime, notice=say)
    data = model_diff.to_json(args.a, args.b, a, b, differences)
    out_dir = args.out or os.path.dirname(os.path.abspath(args.a))
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{a.target}-{a.side}-vs-{b.target}-{b.side}.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    print(model_diff.render_text(data))
    print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["diff"]:
            return diff_main(argv[1:])
        return learn_main(argv)
    except HarnessError as exc:
        say(str(exc))
        return 2
    except KeyboardInterrupt:
        say("interrupted: the target and its lab were removed")
        return 130


if __name__ == "__main__":
    sys.exit(main())
