"""The state × event matrix: one case per row of the oracle (harness/oracle.py).

Each cell brings a fresh connection into the row's state, sends the row's segment and checks the
answer against the answers the row allows. Silence is proven without a silence window: the probe
is followed by a SYN from another port, which must be answered; a stack processes segments in
order, so an answer to the probe would have come first.
"""
import pytest

from harness import oracle
from harness.markers import requirement
from harness.segments import Seg, seg_len, seq_add

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
        if answered is None:
            lab.choice("answer", "silence") if len(row.answers) > 1 else None
        else:
            conn.check(answered, *(s for _, s in replies) or (Seg("S", note="no segment at all"),),
                       why=f"{row.step}: {row.rfc}")
    else:
        got = conn.expect_next(*(s for _, s in replies), why=f"{row.step}: {row.rfc}")
        if len(row.answers) > 1:
            lab.choice("answer", next(r.name for r, s in replies if s.matches(got)))
        if row.after == "LISTEN":
            _listener_answers(lab, port, why=f"{row.step}: after the answer the listener is as it was")
    if row.after == "SYN-RECEIVED":
        conn.rst(seq=seq_add(conn.iss, 1))  # nothing lingers for the next cell
    lab.target.close(listener)
