"""Challenge ACK throttling (RFC 5961 §7): a burst of in-window RSTs gets few challenge ACKs."""
import time

from harness.markers import requirement
from harness.segments import Seg, seq_add

BURST = 20
SPACING = 1000  # bytes between the RSTs' SEQs: all inside a 64 KiB window, none at RCV.NXT
IDLE = 2.0      # longer than the intervals stacks throttle over (Linux 0.5 s, PyTCP 1 s)


def burst(lab, conn, rcv_nxt):
    """BURST RSTs at RCV.NXT+1, +1001, ... (RFC 5961 §3.2 rule 3: each owes a challenge ACK), then
    data at RCV.NXT, which must be ACKed. Segments are processed in order, so every challenge ACK
    comes before the data's ACK. Returns (challenge ACKs, ms the burst took), or None when the
    connection was reset instead (the RFC 793 rule: no challenge ACKs to throttle)."""
    start = time.monotonic()
    for i in range(BURST):
        conn.rst(seq=seq_add(rcv_nxt, 1 + i * SPACING))
    took = (time.monotonic() - start) * 1000
    conn.send(b"follow-up")
    challenge = Seg("A", seq=conn.rcv_nxt, ack=rcv_nxt, length=0, note="challenge ACK <SEQ=SND.NXT><ACK=RCV.NXT>")
    acked = Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="ACK of the follow-up data")
    reset = Seg("R", seq=conn.rcv_nxt, tolerate="A", note="the follow-up answered from CLOSED: a RST reset")
    count = 0
    while True:
        got = conn.expect_next(challenge, acked, reset,
                               why="each in-window RST gets a challenge ACK or nothing; the data is ACKed")
        if reset.matches(got):
            return None
        if acked.matches(got):
            return count, took
        count += 1
        assert count <= BURST, f"more challenge ACKs ({count}) than in-window RSTs ({BURST})"


@requirement("RFC5961-7", "SHOULD")
def test_challenge_acks_to_a_burst_of_in_window_rsts_are_throttled(lab):
    """RFC 5961 §7: "In order to alleviate multiple RSTs/SYNs from triggering multiple challenge
    ACKs, an ACK throttling mechanism is suggested ... in any 5 second window, no more than 10
    challenge ACKs should be sent" and "An implementation SHOULD include an ACK throttling
    mechanism to be conservative." 20 in-window RSTs within a few ms get fewer than 20 challenge
    ACKs; after 2 s of quiet a second burst is challenged again (a rate, not a one-off budget).
    A stack that resets on an in-window RST (RFC 793) sends no challenge ACKs: nothing to throttle."""
    for name in ("net.ipv4.tcp_invalid_ratelimit", "net.ipv4.tcp_challenge_ack_limit"):
        lab.setting(name)
    conn, _, _ = lab.passive_open()
    first = burst(lab, conn, conn.snd_nxt)
    if first is None:
        lab.choice("in_window_rst", "resets the connection (RFC 793): no challenge ACKs")
    lab.need(first is not None, "the stack answers an in-window RST with a challenge ACK (RFC 5961 §3.2); "
             "it reset the connection instead, so there are no challenge ACKs to throttle")
    count, took = first
    lab.note("first_burst", f"{count} challenge ACK(s) for {BURST} in-window RSTs sent in {took:.1f} ms")
    # The choice is the count alone: how many ms a burst took varies run to run (it is a note).
    lab.choice("challenge_ack_rate", f"{count} per burst of {BURST} RSTs")
    assert count >= 1, f"none of {BURST} in-window RSTs got a challenge ACK (RFC 5961 §3.2 owes one)"
    assert count < BURST, (f"every one of {BURST} in-window RSTs sent within {took:.1f} ms got a challenge ACK: "
                           "no throttling")
    lab.peer.wait(IDLE)
    again = burst(lab, conn, conn.snd_nxt)
    assert again is not None, "the connection was reset by an in-window RST of the second burst"
    lab.note("after_idle", f"{again[0]} challenge ACK(s) for {BURST} in-window RSTs after {IDLE:g} s idle")
    lab.choice("challenge_ack_rate", f"{count} per burst of {BURST} RSTs; {again[0]} again after {IDLE:g} s idle")
    assert again[0] >= 1, f"after {IDLE:g} s idle no in-window RST got a challenge ACK: the limit does not refill"
