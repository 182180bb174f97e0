"""The state × event matrix: one case per row of the oracle (harness/oracle.py).

Each cell brings a fresh connection into the row's state, sends the row's segment and checks the
answer against the answers the row allows. Silence is proven without a silence window: the probe
is followed by a SYN from another port, which must be answered; a stack processes segments in
order, so an answer to the probe would have come first.
"""
import pytest

from harness import oracle
from harness.markers import requirement
from harness.segments import Seg, describe, seg_len, seq_add, seq_diff

CELLS = [pytest.param(row, id=row.id, marks=requirement(row.requirement, row.level)) for row in oracle.TABLE]
NO_CONNECTION_ACK = 0x1234567  # in LISTEN no ACK value is acceptable


def _expected(reply: oracle.Reply, seg: dict) -> Seg:
    return Seg(reply.flags, seq=None if reply.seq is None else oracle.value(reply.seq, seg),
               ack=None if reply.ack is None else oracle.value(reply.ack, seg), note=reply.name)


def _listener_answers(lab, port: int, why: str):
    """A SYN from another port gets its SYN,ACK: the listener is as it was (and, in order, every
    answer to what came before has arrived)."""
    other = lab.peer.connection(port)
    other.syn()
    other.expect_next(Seg("SA", ack=seq_add(other.iss, 1), note="the listener still answers a SYN"), why=why)
    other.rst(seq=seq_add(other.iss, 1))


@pytest.mark.parametrize("row", CELLS)
def test_cell(lab, row):
    """One cell of the matrix: the row's segment in the row's state gets one of the answers the
    row allows (the RFC sentence is recorded with the verdict)."""
    lab.note("checks", row.rfc)
    if row.state == "LISTEN":
        _listen_cell(lab, row)
    else:
        _synchronized_cell(lab, row)


def _after(conn, state: str) -> Seg:
    """What the target owes the follow-up data segment (already sent) in `state`."""
    if state == "CLOSED":  # a RST shows the reset; its shape is checked in its own step (§3.10.7.1)
        return Seg("R", seq=conn.rcv_nxt, tolerate="A", note="the follow-up answered from CLOSED")
    # §3.10.7.4 seventh: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, the data accepted
    return Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note=f"the follow-up's data ACKed ({state})")


def _synchronized_cell(lab, row):
    """ESTABLISHED (more states follow): the probe at its window position, then data at SND.NXT
    that must be answered. The first segment back is either the probe's answer or, when the
    probe got none, the follow-up's; which one, and what follows it, says what the stack did."""
    conn, _, _ = lab.passive_open()
    flags, length = oracle.CLASSES[row.cls]
    rcv_nxt, rcv_wnd = conn.snd_nxt, conn.snd_wnd  # the target's RCV.NXT and advertised window
    seg = {"RCV.NXT": rcv_nxt, "RCV.WND": rcv_wnd, "SND.NXT": conn.rcv_nxt}
    probe_seq = oracle.value(oracle.POSITIONS[row.position], seg)
    offset = seq_diff(probe_seq, rcv_nxt)
    lab.note("probe", f"{row.cls} at {row.position} (RCV.NXT{offset:+d}, RCV.WND {rcv_wnd})")
    conn.send_segment(conn.segment(flags, seq=probe_seq, data=b"x" * length))
    seg.update({"SEG.SEQ": probe_seq, "SEG.ACK": conn.rcv_nxt, "SEG.LEN": length})
    follow = b"f" * 5
    # The follow-up goes at SND.NXT whatever the probe did (a RST consumes no sequence space).
    replies = [(r, _expected(r, seg)) for r in row.answers if r.flags is not None]
    quiet = [r for r in row.answers if r.flags is None]
    conn.send(follow)
    first = conn.expect_next(*(s for _, s in replies), *(_after(conn, r.after or row.after) for r in quiet),
                             why=row.rfc)
    answered = next((r for r, s in replies if s.matches(first)), None)
    if answered is not None:
        chosen = answered
        conn.expect_next(_after(conn, answered.after or row.after),
                         why=f"after the {answered.name} the connection is {answered.after or row.after}")
    else:
        chosen = next(r for r in quiet if _after(conn, r.after or row.after).matches(first))
    if len(row.answers) > 1:
        lab.choice("answer", chosen.name)
    if (chosen.after or row.after) == "CLOSED":
        last = conn.received[-1]
        with lab.step("answered from CLOSED", "R9293-3.10.7.1"):
            conn.check(last, Seg("R", seq=conn.rcv_nxt, note="from CLOSED: <SEQ=SEG.ACK><CTL=RST>, no ACK flag"))


def _listen_cell(lab, row):
    port = lab.port()
    listener = lab.target.listen(port)
    conn = lab.peer.connection(port)
    flags, length = oracle.CLASSES[row.cls]
    probe = conn.send_raw(flags, seq=conn.iss, ack=NO_CONNECTION_ACK if "A" in flags else 0, data=b"x" * length)
    seg = {"SEG.SEQ": probe.seq, "SEG.ACK": NO_CONNECTION_ACK, "SEG.LEN": seg_len(probe)}
    replies = [(r, _expected(r, seg)) for r in row.answers if r.flags is not None]
    if oracle.SILENCE in row.answers:
        _listener_answers(lab, port, why=f"{row.step}: the probe must leave the listener as it was")
        answered = conn.next_segment(within=0.0)
        if answered is not None and replies:
            conn.check(answered, *(s for _, s in replies), why=row.rfc)
        elif answered is not None:
            raise AssertionError(f"expected no answer (silence); received {describe(answered, conn.view, True)}\n"
                                 f"{row.rfc}")
        elif len(row.answers) > 1:
            lab.choice("answer", "silence")
    else:
        got = conn.expect_next(*(s for _, s in replies), why=row.rfc)
        if len(row.answers) > 1:
            lab.choice("answer", next(r.name for r, s in replies if s.matches(got)))
        if row.after == "LISTEN":
            _listener_answers(lab, port, why=f"{row.step}: after the answer the listener is as it was")
    if row.after == "SYN-RECEIVED":
        conn.rst(seq=seq_add(conn.iss, 1))  # nothing lingers for the next cell
    lab.target.close(listener)
