"""Benchmark: the cost of the harness's primitives against a running target, printed as figures.

    .venv/bin/python bench/primitives.py [--target=linux] [--runtime=auto] [-n 300]

- agent round trip: one trivial call (hello) through the control channel;
- send-and-wait: the peer sends a SYN and reads the SYN-ACK on its persistent socket;
- conns: the state of one connection (as the cases ask it: both ports), and of a tuple with none;
- target start: container (or namespace) + agent + lab, until the first call is answered.
"""
import argparse
import statistics
import time

from harness.cleanup import REGISTRY
from harness.segments import Seg
from harness.session import Session


def figures(samples):
    ms = sorted(s * 1000 for s in samples)
    return f"median {statistics.median(ms):.3f} ms  p90 {ms[int(0.9 * (len(ms) - 1))]:.3f} ms"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="linux")
    ap.add_argument("--runtime", default="auto")
    ap.add_argument("-n", type=int, default=300)
    args = ap.parse_args()
    REGISTRY.install()
    session = Session(args.target, args.runtime)
    try:
        session.ensure()  # builds the image if needed: not part of the start figure below
        session.close()
        t0 = time.monotonic()
        session.ensure()
        start = time.monotonic() - t0
        peer, target = session.new_case()
        rtt = []
        for _ in range(args.n):
            t = time.perf_counter()
            target.call("hello")
            rtt.append(time.perf_counter() - t)
        port = session.target_ports.next()
        target.listen(port, backlog=128)
        sw = []
        for _ in range(args.n):
            conn = peer.connection(port)
            t = time.perf_counter()
            conn.syn()
            conn.expect(Seg("SA"))
            sw.append(time.perf_counter() - t)
            conn.rst(seq=conn.snd_nxt)
        conn = peer.connect(port)  # one connection held open, as a case asks about its own
        one, none = [], []
        for _ in range(args.n):
            t = time.perf_counter()
            target.conn_state(port, conn.sport)
            one.append(time.perf_counter() - t)
            t = time.perf_counter()
            target.conn_state(port, conn.sport + 1)
            none.append(time.perf_counter() - t)
        print(f"target {args.target} on {session.runtime}: start (instance + agent + lab) {start * 1000:.0f} ms")
        print(f"agent round trip (hello), {args.n} calls: {figures(rtt)}")
        print(f"peer send-and-wait (SYN → SYN-ACK), {args.n} times: {figures(sw)}")
        print(f"conns, one connection ({target.conn_state(port, conn.sport)}): {figures(one)}")
        print(f"conns, a tuple without one: {figures(none)}")
    finally:
        session.close()


if __name__ == "__main__":
    main()
