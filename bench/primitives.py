"""Benchmark: the cost of the harness's primitives against a running target, printed as figures.

    .venv/bin/python bench/primitives.py [--target=linux] [--runtime=auto] [-n 300]

- target start: container (or namespace) + agent + lab + the stack check, from a built image,
  until the first call is answered; the median of a few starts;
- agent round trip: one trivial call (hello) through the control channel;
- send-and-wait: the peer sends a SYN and reads the SYN-ACK on its persistent socket;
- conns: the state of one connection (as the cases ask it: both ports), and of a tuple with none;
- reset: what every case's teardown asks (close what the case left open).
"""
import argparse
import statistics
import time

from harness.cleanup import REGISTRY
from harness.segments import Seg
from harness.session import Session


def figures(samples) -> str:
    ms = sorted(s * 1000 for s in samples)
    return f"median {statistics.median(ms):.3f} ms  p90 {ms[int(0.9 * (len(ms) - 1))]:.3f} ms"


def measure(target_name: str, runtime: str = "auto", n: int = 300, starts: int = 5) -> dict:
    """Samples in seconds, by primitive (and `runtime`, where the target ran)."""
    REGISTRY.install()
    session = Session(target_name, runtime)
    out = {"runtime": session.runtime, "start": [], "hello": [], "send_and_wait": [], "conns_one": [],
           "conns_none": [], "reset": []}
    try:
        session.ensure()  # builds the image if needed: not part of the start figure
        for _ in range(starts):
            session.close()
            t0 = time.perf_counter()
            session.ensure()
            out["start"].append(time.perf_counter() - t0)
        peer, target = session.new_case()
        for _ in range(n):
            t = time.perf_counter()
            target.call("hello")
            out["hello"].append(time.perf_counter() - t)
        listener = None
        for i in range(n):
            # A fresh listener every 64 SYNs: reset connections nobody accepted may stay in an
            # accept queue (slirp's host-side listener is a Linux socket), which a full one refuses.
            if i % 64 == 0:
                if listener is not None:
                    target.close(listener)
                port = session.target_ports.next()
                listener = target.listen(port, backlog=128)
            conn = peer.connection(port)
            t = time.perf_counter()
            conn.syn()
            conn.expect(Seg("SA"))
            out["send_and_wait"].append(time.perf_counter() - t)
            conn.rst(seq=conn.snd_nxt)
        conn = peer.connect(port)  # one connection held open, as a case asks about its own
        out["state"] = None
        for _ in range(n if "conns" in session.spec.capabilities else 0):  # gVisor lists none
            t = time.perf_counter()
            target.conn_state(port, conn.sport)
            out["conns_one"].append(time.perf_counter() - t)
            t = time.perf_counter()
            target.conn_state(port, conn.sport + 1)
            out["conns_none"].append(time.perf_counter() - t)
        if out["conns_one"]:
            out["state"] = target.conn_state(port, conn.sport)
        target.close(listener)
        for _ in range(min(n, 100)):
            target.listen(session.target_ports.next())  # a case that left a listener open
            t = time.perf_counter()
            target.reset()
            out["reset"].append(time.perf_counter() - t)
    finally:
        session.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="linux")
    ap.add_argument("--runtime", default="auto")
    ap.add_argument("-n", type=int, default=300)
    args = ap.parse_args()
    m = measure(args.target, args.runtime, args.n)
    print(f"target {args.target} on {m['runtime']}: start (instance + agent + lab + stack check), "
          f"{len(m['start'])} starts: {figures(m['start'])}")
    print(f"agent round trip (hello), {args.n} calls: {figures(m['hello'])}")
    print(f"peer send-and-wait (SYN → SYN-ACK), {args.n} times: {figures(m['send_and_wait'])}")
    if m["conns_one"]:
        print(f"conns, one connection ({m['state']}): {figures(m['conns_one'])}")
        print(f"conns, a tuple without one: {figures(m['conns_none'])}")
    else:
        print("conns: the target lists no connections")
    print(f"reset (a case's teardown, one listener left open): {figures(m['reset'])}")


if __name__ == "__main__":
    main()
